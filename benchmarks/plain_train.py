"""Supervised SimCSE in plain PyTorch + transformers, written to be as fast as plain PyTorch gets on a CPU: the
baseline of benchmarks/train_throughput.py. It imports nothing of this package.

Every sentence is tokenized once, up front; a step pads the batch's 3B sentences (anchors, positives, hard
negatives) to their longest and runs them through the model in one forward, with transformers' default (SDPA)
attention; the embedding is the CLS vector through the model's pooler (dense + tanh), as ``--pooler cls``; InfoNCE
at temperature 0.05, fused AdamW (weight decay 0.01 except on biases and LayerNorm), clipping at 1.0, fp32.

As a whole process (what a researcher's own script does): read the triplets, tokenize them, train ``--steps``
steps, score the dev set once (cosine Spearman) and save the model.

    python benchmarks/plain_train.py --model MODEL --train_data TRIPLETS.tsv --valid_data DEV.tsv --steps 12 \\
        --output_path OUT
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModel, AutoTokenizer

TEMPERATURE = 0.05


class PlainSimCSE:
    """The model, its optimizer and the pre-tokenized triplets; ``step(indices)`` takes one optimizer step."""

    name = "plain PyTorch"

    def __init__(self, path: str, columns: list[list[str]], max_length: int):
        self.model = AutoModel.from_pretrained(path, attn_implementation="sdpa").train()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.max_length = max_length
        self.columns = [
            [torch.tensor(ids) for ids in self.tokenizer(column, truncation=True, max_length=max_length)["input_ids"]]
            for column in columns
        ]  # per column, per sentence: (length,)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=5e-5, fused=True)

    def step(self, indices: list[int]) -> torch.Tensor:
        """One step on the triplets at ``indices``; returns the batch's attention mask (3B, L)."""
        sequences = [column[i] for column in self.columns for i in indices]
        input_ids = pad_sequence(sequences, batch_first=True, padding_value=self.tokenizer.pad_token_id)  # (3B, L)
        lengths = torch.tensor([len(s) for s in sequences])  # (3B,)
        attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()  # (3B, L)
        embeddings = self.model(input_ids=input_ids, attention_mask=attention_mask).pooler_output  # (3B, H)
        anchors, positives, negatives = F.normalize(embeddings, dim=-1).chunk(3)  # each (B, H)
        logits = anchors @ torch.cat([positives, negatives]).T / TEMPERATURE  # (B, 2B)
        loss = F.cross_entropy(logits, torch.arange(len(indices)))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return attention_mask

    @torch.no_grad()
    def dev_spearman(self, sentences1: list[str], sentences2: list[str], scores: list[float]) -> float:
        """Cosine Spearman of the dev pairs, in batches of 32 sentences (this CPU's best batch for encoding)."""
        self.model.eval()
        vectors = []
        for sentences in (sentences1, sentences2):
            for start in range(0, len(sentences), 32):
                batch = self.tokenizer(
                    sentences[start : start + 32],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                vectors.append(self.model(**batch).pooler_output)
        vectors = F.normalize(torch.cat(vectors), dim=-1)  # (2N, H)
        first, second = vectors.chunk(2)
        self.model.train()
        return float(spearmanr((first * second).sum(-1).numpy(), np.asarray(scores)).statistic)


def read_tsv(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train_data", required=True, help="TSV with header sent0, sent1, hard_neg")
    parser.add_argument("--valid_data", required=True, help="TSV with header sentence1, sentence2, score")
    parser.add_argument("--output_path", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    rows = read_tsv(args.train_data)
    columns = [[row[key] for row in rows] for key in ("sent0", "sent1", "hard_neg")]
    trainer = PlainSimCSE(args.model, columns, args.max_length)
    order = torch.randperm(len(rows)).tolist()
    for step in range(args.steps):
        trainer.step(order[step * args.batch_size : (step + 1) * args.batch_size])
    dev = read_tsv(args.valid_data)
    score = trainer.dev_spearman(
        [row["sentence1"] for row in dev], [row["sentence2"] for row in dev], [float(row["score"]) for row in dev]
    )
    trainer.model.save_pretrained(args.output_path)
    trainer.tokenizer.save_pretrained(args.output_path)
    print(f"{args.steps} steps; dev cosine Spearman {score:.4f}; {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
