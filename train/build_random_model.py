"""Build a small encoder (BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2, ModernBERT) or decoder (Qwen3, Qwen2, Llama,
Gemma-3, Mistral: train it with --pooler lasttoken) with random weights and a tokenizer trained on a corpus
(WordPiece; byte-level BPE for the decoders).

For offline work (the demo, smoke runs): the folder written loads like any transformers checkpoint.

    python train/build_random_model.py --corpus outputs/demo/data/corpus.txt --output_path outputs/demo/init
"""

import argparse

from simcse.cli import refuse_empty_paths, run_main
from simcse.random_encoder import ARCHITECTURES, DECODER_ARCHITECTURES, build_random_encoder
from simcse.train_data import load_train_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help=".txt file, one sentence per line")
    parser.add_argument("--output_path", required=True, help="folder the model and tokenizer are written to")
    parser.add_argument(
        "--model_type",
        choices=(*ARCHITECTURES, *DECODER_ARCHITECTURES),
        default="bert",
        help="architecture (default: bert)",
    )
    parser.add_argument("--vocab_size", type=int, default=2000, help="vocabulary trained on --corpus")
    parser.add_argument("--hidden_size", type=int, default=128, help="width of the encoder")
    parser.add_argument("--num_hidden_layers", type=int, default=2, help="transformer layers")
    parser.add_argument("--num_attention_heads", type=int, default=4, help="heads per layer")
    parser.add_argument("--intermediate_size", type=int, default=512, help="width of the feed-forward block")
    parser.add_argument("--max_length", type=int, default=128, help="position embeddings")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    refuse_empty_paths(args, "corpus", "output_path")
    (sentences,) = load_train_data(args.corpus).columns
    folder = build_random_encoder(
        args.output_path,
        sentences,
        model_type=args.model_type,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size,
        max_length=args.max_length,
        seed=args.seed,
    )
    print(f"wrote a random {args.model_type} encoder and its tokenizer into {folder}")


if __name__ == "__main__":
    run_main(main)
