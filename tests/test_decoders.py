"""Decoder embedders (Qwen3, Qwen2, Llama, Gemma-3, Mistral), each as a tiny random model with a byte-level BPE
trained here: the last-token pooler against a loop over unpadded texts, with right and left padding; the end-of-
sequence token the tokenizer appends; sentence-transformers encoding as the package; and the flags a decoder cannot
take refused in one line before training."""

import sys

import numpy as np
import pytest
import torch
from conftest import TINY_ENCODER, TRAIN_SCRIPT, assert_eval_py_scores_the_best_step, assert_one_line_error
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoModel, AutoTokenizer

from simcse.families import DECODER_NAMES, decoder_tokenizer
from simcse.model import SimCSEModel
from simcse.poolers import POOLERS
from simcse.random_encoder import DECODER_ARCHITECTURES, build_random_encoder

QWEN3_QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "


@pytest.fixture(scope="session")
def decoder_of(tmp_path_factory, demo_data):
    """``decoder_of(model_type)``: a tiny random decoder of that family with a tokenizer trained on the demo corpus."""
    built, corpus = {}, (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()

    def get(model_type: str):
        if model_type not in built:
            folder = tmp_path_factory.mktemp(f"decoder-{model_type}")
            built[model_type] = build_random_encoder(folder, corpus, model_type=model_type, **TINY_ENCODER)
        return built[model_type]

    return get


@pytest.fixture(params=list(DECODER_ARCHITECTURES))
def decoder_dir(request, decoder_of):
    return decoder_of(request.param)


def sentences_of(demo_data, count=10):
    return (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()[:count]


def test_every_decoder_family_is_built_by_the_tests():
    assert set(DECODER_ARCHITECTURES) == set(DECODER_NAMES)


def test_the_last_token_pooler_equals_a_loop_with_left_and_right_padding(decoder_dir, demo_data):
    """The state of each text's last token (its end-of-sequence token), computed text by text with no padding at
    all, equals the pooler's on a right-padded batch (the package's encode) and on a left-padded one."""
    model = SimCSEModel(decoder_dir, pooler="lasttoken", max_length=20)
    sentences = sentences_of(demo_data)
    encoder = AutoModel.from_pretrained(decoder_dir).eval()
    expected = []
    with torch.no_grad():
        for sentence in sentences:
            ids = model.tokenizer(sentence, truncation=True, max_length=20)["input_ids"]
            assert ids[-1] == model.tokenizer.eos_token_id  # appended, and kept by truncation
            states = encoder(input_ids=torch.tensor([ids])).last_hidden_state  # (1, L, H)
            expected.append(states[0, len(ids) - 1].numpy())
    expected = np.stack(expected)
    np.testing.assert_allclose(model.encode(sentences), expected, atol=1e-5, rtol=0)
    model.tokenizer.padding_side = "left"
    batch = model.tokenizer(sentences, padding=True, truncation=True, max_length=20, return_tensors="pt")
    assert (batch["attention_mask"][:, 0] == 0).any()  # some rows really are padded on the left
    with torch.no_grad():
        states = encoder(**batch).last_hidden_state  # (N, L, H)
    left = POOLERS["lasttoken"].padded(batch["attention_mask"], states, None).numpy()
    # Rotary positions shift with left padding; attention depends only on their differences: float noise apart.
    np.testing.assert_allclose(left, expected, atol=1e-4, rtol=0)


def test_sentence_transformers_encodes_a_decoder_as_the_package(decoder_dir, demo_data, tmp_path):
    """Saved with a Qwen3-style instruction as its query prompt: SentenceTransformer(folder) (its lasttoken pooling,
    the saved tokenizer appending the end-of-sequence token) gives the package's vectors, padded on either side."""
    sentences = sentences_of(demo_data)
    model = SimCSEModel(decoder_dir, pooler="lasttoken", max_length=128, query_prompt=QWEN3_QUERY_PROMPT)
    for side in ("right", "left"):
        model.tokenizer.padding_side = side
        model.save_pretrained(tmp_path / side)
        st_model = SentenceTransformer(str(tmp_path / side), device="cpu")
        np.testing.assert_allclose(st_model.encode(sentences), model.encode(sentences), atol=1e-5, rtol=0)
        np.testing.assert_allclose(
            st_model.encode_query(sentences[:4]), model.encode_query(sentences[:4]), atol=1e-5, rtol=0
        )
    reloaded = SimCSEModel(tmp_path / "left")
    assert reloaded.pooler == "lasttoken" and reloaded.query_prompt == QWEN3_QUERY_PROMPT


def test_a_tokenizer_that_appends_the_end_token_gets_no_second_one(decoder_of, tmp_path):
    tokenizer = decoder_tokenizer(AutoTokenizer.from_pretrained(decoder_of("llama")))
    once = tokenizer("서울의 날씨")["input_ids"]
    assert once[0] == tokenizer.bos_token_id and once[-1] == tokenizer.eos_token_id  # BOS kept, EOS added
    assert decoder_tokenizer(tokenizer)("서울의 날씨")["input_ids"] == once
    assert tokenizer.pad_token == tokenizer.eos_token  # Llama has no pad token: padded with EOS
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("서울의 날씨")["input_ids"] == once  # saved as it tokenizes


@pytest.mark.parametrize("lora", [False, True])
def test_train_py_trains_a_decoder_and_eval_py_scores_it_alike(decoder_of, demo_data, demo_train_flags, run_here,
                                                               tmp_path, recwarn, lora):  # fmt: skip
    output = tmp_path / "run"
    adapters = dict(lora_rank=4, gradient_checkpointing=True) if lora else {}
    flags = demo_train_flags(output, model=decoder_of("qwen3"), pooler="lasttoken", max_steps=2, **adapters)
    trained = run_here(TRAIN_SCRIPT, *flags)
    assert trained.returncode == 0, trained.stderr
    assert "(qwen3): padded forward pass, pooler lasttoken" in trained.stdout
    assert ("(LoRA rank 4)" in trained.stdout) == lora
    assert not [w for w in recwarn if "peft" in w.filename]  # no warning of peft's at each save
    assert_eval_py_scores_the_best_step(run_here, output, demo_data / "dev.tsv", tmp_path / "eval.json")


def refusal_flags(demo_train_flags, output, **changes):
    return demo_train_flags(output, max_steps=1, **changes)


def test_what_a_decoder_cannot_take_is_one_error_line(decoder_of, demo_bert, demo_train_flags, run_here, tmp_path):
    qwen = decoder_of("qwen3")
    gpt2 = tmp_path / "gpt2"
    AutoModel.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2)).save_pretrained(gpt2)
    cases = {
        "cls on a decoder": (dict(model=qwen), ["is a decoder (Qwen3): pooler cls", "use --pooler lasttoken"]),
        "an unsupported family": (dict(model=gpt2, pooler="lasttoken"), ["not a model family", "gpt2"]),
        "no such module": (
            dict(model=qwen, pooler="lasttoken", lora_rank=2, lora_target_modules="query"),
            ["--lora_target_modules query: no module", "q_proj"],
        ),
        "LoRA with a new head": (dict(model=demo_bert, lora_rank=2), ["--pooler cls trains SimCSE's new MLP head"]),
        "alpha without rank": (dict(model=qwen, pooler="lasttoken", lora_alpha=4), ["--lora_alpha", "--lora_rank"]),
        "bf16 weights on the CPU": (dict(model=demo_bert, model_dtype="bf16", device="cpu"), ["--model_dtype bf16"]),
    }
    for name, (changes, fragments) in cases.items():
        output = tmp_path / name.replace(" ", "-")
        result = run_here(TRAIN_SCRIPT, *refusal_flags(demo_train_flags, output, **changes))
        assert_one_line_error(result, *fragments)
        assert not (output / "train_args.json").exists(), name  # refused before training


def test_the_model_card_snippet_computes_a_decoder_s_embedding(decoder_of, tmp_path, monkeypatch):
    from test_hub import run_card_snippet

    import simcse.hub

    SimCSEModel(decoder_of("gemma3_text"), pooler="lasttoken", prompt="질문: ").save_pretrained(tmp_path)
    expected = torch.from_numpy(SimCSEModel(tmp_path).encode(list(simcse.hub.USAGE_SENTENCES)))
    torch.testing.assert_close(run_card_snippet(tmp_path, monkeypatch), expected, atol=1e-5, rtol=1e-5)


def test_lora_without_peft_is_one_error_line_naming_the_extra(decoder_of, demo_train_flags, run_here, monkeypatch,
                                                              tmp_path):  # fmt: skip
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft fails, as where it is not installed
    flags = refusal_flags(
        demo_train_flags, tmp_path / "run", model=decoder_of("qwen3"), pooler="lasttoken", lora_rank=2
    )
    assert_one_line_error(run_here(TRAIN_SCRIPT, *flags), "--lora_rank needs peft", 'pip install -e ".[lora]"')
    assert not (tmp_path / "run" / "train_args.json").exists()
