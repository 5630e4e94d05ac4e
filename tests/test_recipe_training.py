"""The retrieval recipe of issue 32 in training: a teacher's pos_scores / neg_scores read and drawn with their
documents, data/score_with_teacher.py (cross-encoder and bi-encoder, resumable), the guards' masked share in
metrics.jsonl and the progress bar, Matryoshka sizes saved and evaluated, GradCache and resume exact, and every bad
input refused in one line before training."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import EVAL_SCRIPT, REPO_ROOT, TRAIN_SCRIPT, assert_one_line_error
from safetensors.torch import load_file
from test_checkpoint import metrics_lines
from test_objectives import assert_resumes_exactly
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

import simcse.run_inputs
import simcse.teacher
from simcse.batching import QueryDocumentsDataset
from simcse.data import DataFormatError
from simcse.model import SimCSEModel
from simcse.token_store import StoreSettings, tokenized_train_data
from simcse.tokenized import TextSettings, tokenize_in_memory
from simcse.train_data import DATA_KINDS, load_train_data
from simcse.trainer import Trainer, train

SCORE_SCRIPT = REPO_ROOT / "data" / "score_with_teacher.py"


def teacher_score(text: str) -> float:
    """A made-up teacher: a number of the text alone, so that a drawn document's score can be checked."""
    return len(text) / 10 + (sum(map(ord, text)) % 97) / 100


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def retrieval_rows(demo_data, scored=True):
    lines = (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t") for line in lines]
    examples = []
    for i, (anchor, positive, negative) in enumerate(rows):
        row = {"query": anchor, "pos": [positive], "neg": [negative, rows[(i + 1) % len(rows)][2], rows[i - 1][1]]}
        if scored:
            row |= {key: [teacher_score(text) for text in row[key[:3]]] for key in ("pos_scores", "neg_scores")}
        examples.append(row)
    return examples


@pytest.fixture
def scored_file(demo_data, tmp_path):
    return write_jsonl(tmp_path / "scored.jsonl", retrieval_rows(demo_data))


def recipe_config(demo_config, demo_data, output, **changes):
    settings = dict(train_data=str(scored_file_of(demo_data, output.parent)), num_negatives=2, batch_size=8,
                    max_steps=4, valid_data=str(demo_data / "test.tsv"))  # fmt: skip
    return demo_config(output, **settings | changes)


def scored_file_of(demo_data, folder):
    path = folder / "scored.jsonl"
    return path if path.exists() else write_jsonl(path, retrieval_rows(demo_data))


# ---------------------------------------------------------------------------------------------------
# The teacher's scores in the data


@pytest.mark.parametrize("stored", [False, True])
def test_the_teacher_s_scores_follow_the_documents_drawn(demo_bert, scored_file, tmp_path, stored):
    tokenizer = SimCSEModel(demo_bert).tokenizer
    text = TextSettings(tokenizer, 24, "", 32, "")
    if stored:
        store = StoreSettings.from_flag(str(tmp_path / "store"), 60)
        data = tokenized_train_data(scored_file, DATA_KINDS["query_documents"], text, store)
    else:
        data = tokenize_in_memory(load_train_data(scored_file), text)
    plain, taught = (QueryDocumentsDataset(data, 2, 5, teacher) for teacher in (False, True))
    text_of = {}
    for document in load_train_data(scored_file).texts():
        text_of[tuple(tokenizer(document, truncation=True, max_length=32)["input_ids"])] = document
    for epoch in (0, 1):
        plain.set_epoch(epoch), taught.set_epoch(epoch)
        for i in range(len(plain)):
            ids, scores = taught[i]
            assert [list(x) for x in ids] == [list(x) for x in plain[i]]  # the same draws
            expected = [teacher_score(text_of[tuple(document)]) for document in ids[1:]]
            assert scores.tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda row: row | {"pos_scores": [1.0, 2.0]}, "'pos_scores' must hold one score per 'pos' document (1)"),
        (lambda row: row | {"neg_scores": row["neg_scores"][:1]}, "'neg_scores' must hold one score"),
        (lambda row: row | {"neg_scores": ["0.5", 1, 2]}, "'neg_scores' holds '0.5', not a finite number"),
        (lambda row: row | {"pos_scores": "high"}, "'pos_scores' must hold one score"),
        (lambda row: {k: v for k, v in row.items() if k != "neg_scores"}, "'pos_scores' without 'neg_scores'"),
    ],
)
def test_a_bad_score_list_is_refused_naming_its_line(demo_data, tmp_path, change, fragment):
    rows = retrieval_rows(demo_data)
    rows[1] = change(rows[1])
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataFormatError, match="line 2") as raised:
        load_train_data(path)
    assert fragment in str(raised.value)


def test_a_nan_score_is_refused(demo_data, tmp_path):
    rows = retrieval_rows(demo_data)
    lines = [json.dumps(row) for row in rows]
    lines[2] = json.dumps(rows[2] | {"pos_scores": [0.0]}).replace("[0.0]", "[NaN]")  # JSON readers take NaN
    path = tmp_path / "nan.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="line 3.*not a finite number"):
        load_train_data(path)


# ---------------------------------------------------------------------------------------------------
# Refusals before training


def test_scores_missing_on_some_lines_are_refused_with_distillation(demo_config, demo_data, tmp_path):
    rows = retrieval_rows(demo_data)
    rows[4] = {key: rows[4][key] for key in ("query", "pos", "neg")}
    write_jsonl(tmp_path / "scored.jsonl", rows)
    with pytest.raises(DataFormatError, match=r"line 5: no 'pos_scores' / 'neg_scores' \(1 of 120 queries"):
        train(recipe_config(demo_config, demo_data, tmp_path / "run", distill_weight=1.0))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    train(recipe_config(demo_config, demo_data, tmp_path / "plain", max_steps=1))  # without distillation: fine


def test_distillation_without_scores_is_one_error_line(demo_train_flags, demo_data, run_here, tmp_path):
    triplets = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "a", distill_weight=0.5, max_steps=1))
    assert_one_line_error(triplets, "--distill_weight reads the teacher's pos_scores / neg_scores", "holds none")
    unscored = write_jsonl(tmp_path / "plain.jsonl", retrieval_rows(demo_data, scored=False))
    flags = demo_train_flags(tmp_path / "b", train_data=unscored, distill_weight=0.5, num_negatives=1, max_steps=1)
    assert_one_line_error(run_here(TRAIN_SCRIPT, *flags), "plain.jsonl, line 1: no 'pos_scores'", "score_with_teacher")


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(matryoshka_dims="0"), "--matryoshka_dims must be at least 1"),
        (dict(matryoshka_dims="33"), "--matryoshka_dims 33 is above the 32 dimensions"),
        (dict(matryoshka_dims="32", matryoshka_weights="1 2"), "--matryoshka_weights has 2 values for 1 sizes"),
        (dict(objective="distill"), "give --distill_weight above 0"),
        (dict(guide_margin=0.1), "--guide_margin is GIST's margin: it needs --guide_model"),
        (dict(objective="cosent", train_data="DEV", false_negative_margin=0.1), "--false_negative_margin does nothing"),
        (dict(distill_weight=-1), "--distill_weight must be non-negative"),
    ],
)
def test_bad_recipe_flags_are_one_line_before_the_model_loads(
    demo_train_flags, demo_data, run_here, tmp_path, monkeypatch, changes, fragment
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the flags were refused")

    monkeypatch.setattr(simcse.run_inputs, "SimCSEModel", no_model)
    changes = {key: str(demo_data / "dev.tsv") if value == "DEV" else value for key, value in changes.items()}
    flags = [part for flag in demo_train_flags(tmp_path / "run", max_steps=1, **changes) for part in flag.split(" ")]
    assert_one_line_error(run_here(TRAIN_SCRIPT, *flags), fragment)


def test_a_guide_with_another_tokenizer_is_refused(demo_config, demo_roberta, tmp_path):
    with pytest.raises(ValueError, match="its tokenizer .* differs from the model's"):
        train(demo_config(tmp_path / "run", guide_model=str(demo_roberta), max_steps=1))


# ---------------------------------------------------------------------------------------------------
# Training with the recipe


def test_a_guarded_run_logs_the_share_it_masked(demo_config, demo_data, tmp_path):
    """A margin of -2 masks every candidate but the positive (a cosine exceeds the positive's minus 2): share 1,
    loss 0. A margin of 2 masks nothing beyond the repeats."""
    config = recipe_config(demo_config, demo_data, tmp_path / "all", false_negative_margin=-2.0, eval_steps=2)
    trainer = Trainer(config)
    try:
        trainer.fit()
        assert trainer.shown_losses(torch.tensor(0.0))["masked"] == "100.0%"
    finally:
        trainer.close()
    lines = [json.loads(line) for line in metrics_lines(tmp_path / "all")[1:]]
    assert [line["masked_share"] for line in lines] == [1.0, 1.0]
    assert all(line["train_loss"] == 0.0 for line in lines)
    train(recipe_config(demo_config, demo_data, tmp_path / "none", false_negative_margin=2.0, eval_steps=2))
    shares = [json.loads(line)["masked_share"] for line in metrics_lines(tmp_path / "none")[1:]]
    assert all(0 <= share < 0.05 for share in shares)
    train(recipe_config(demo_config, demo_data, tmp_path / "off", eval_steps=2))
    assert all("masked_share" not in json.loads(line) for line in metrics_lines(tmp_path / "off"))


WHOLE_RECIPE = dict(distill_weight=0.5, teacher_temperature=0.5, false_negative_margin=0.05,
                    matryoshka_dims="32 16", matryoshka_weights="1 0.5")  # fmt: skip


def whole_recipe(demo_bert):
    changes = {key: value for key, value in WHOLE_RECIPE.items() if not key.startswith("matryoshka")}
    return changes | dict(matryoshka_dims=[32, 16], matryoshka_weights=[1.0, 0.5], guide_model=str(demo_bert))


def test_the_whole_recipe_with_grad_cache_equals_the_whole_batch(demo_config, demo_data, demo_bert, tmp_path):
    recipe = whole_recipe(demo_bert) | dict(dropout=0.0, max_steps=2, eval_steps=2)
    train(recipe_config(demo_config, demo_data, tmp_path / "whole", **recipe))
    train(recipe_config(demo_config, demo_data, tmp_path / "chunked", **recipe, grad_cache_chunk=2))
    (whole,), (chunked,) = (
        [json.loads(line) for line in metrics_lines(tmp_path / run)[1:]] for run in ("whole", "chunked")
    )
    assert chunked["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-6)
    assert chunked["masked_share"] == pytest.approx(whole["masked_share"], abs=1e-7)
    expected, got = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "chunked"))
    for name in expected:  # Adam after two steps: the gradients themselves are compared in test_distributed
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("objective", ["simcse", "distill"])
def test_the_whole_recipe_resumes_exactly(demo_config, demo_data, demo_bert, tmp_path, objective):
    scored = scored_file_of(demo_data, tmp_path)
    recipe = whole_recipe(demo_bert) if objective == "simcse" else dict(distill_weight=1.0)
    settings = dict(objective=objective, train_data=str(scored), num_negatives=2)
    settings["valid_data"] = str(demo_data / "test.tsv")
    assert_resumes_exactly(
        demo_config, tmp_path, **settings | recipe, batch_size=8, max_steps=4, save_steps=2, dropout=0.1
    )


def test_matryoshka_sizes_are_saved_reported_and_evaluated(demo_config, demo_data, run_here, tmp_path):
    output = tmp_path / "run"
    train(demo_config(output, max_steps=4, eval_steps=2, matryoshka_dims=[32, 16, 8]))
    assert json.loads((output / "simcse_config.json").read_text())["matryoshka_dims"] == [32, 16, 8]
    lines = [json.loads(line) for line in metrics_lines(output)]
    assert all(list(line["cosine_spearman_by_dim"]) == ["16", "8"] for line in lines if "step" in line)
    best = max((line for line in lines), key=lambda line: line["cosine_spearman"])
    report = tmp_path / "at16.json"
    result = run_here(EVAL_SCRIPT, "--model", output, "--test_data", demo_data / "dev.tsv", "--truncate_dim", 16,
                      "--output_json", report)  # fmt: skip
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(report.read_text())
    assert evaluated["truncate_dim"] == 16
    (metrics,) = evaluated["results"].values()
    assert metrics["cosine_spearman"] == pytest.approx(best["cosine_spearman_by_dim"]["16"], abs=1e-9)
    too_large = run_here(EVAL_SCRIPT, "--model", output, "--test_data", demo_data / "dev.tsv", "--truncate_dim", 64)
    assert_one_line_error(too_large, "truncate_dim 64 must lie between 1 and the model's 32 dimensions")


# ---------------------------------------------------------------------------------------------------
# data/score_with_teacher.py


@pytest.fixture(scope="module")
def cross_encoder(demo_bert, tmp_path_factory):
    """A random cross-encoder (one logit per pair) with the demo tokenizer."""
    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(demo_bert)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)  # fmt: skip
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_cross_encoder_scores_every_pair_as_a_loop_does(cross_encoder, demo_data, run_here, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", retrieval_rows(demo_data, scored=False)[:10])
    before = source.read_bytes()
    result = run_here(SCORE_SCRIPT, "--teacher", cross_encoder, "--input", source, "--output", tmp_path / "out.jsonl",
                      "--batch_size", 2)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scored 10 queries with the cross-encoder" in result.stdout
    assert source.read_bytes() == before
    tokenizer = AutoTokenizer.from_pretrained(cross_encoder)
    model = BertForSequenceClassification.from_pretrained(cross_encoder).eval()
    for line, row in zip((tmp_path / "out.jsonl").read_text().splitlines(), retrieval_rows(demo_data, False)):
        scored = json.loads(line)
        assert {k: scored[k] for k in ("query", "pos", "neg")} == row
        for key in ("pos", "neg"):
            with torch.no_grad():
                expected = [model(**tokenizer(row["query"], doc, return_tensors="pt")).logits[0, 0].item()
                            for doc in row[key]]  # fmt: skip
            assert scored[f"{key}_scores"] == pytest.approx(expected, abs=1e-5)
    load_train_data(tmp_path / "out.jsonl")  # what train.py reads


def test_scoring_goes_on_where_it_stopped(cross_encoder, demo_data, run_here, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", retrieval_rows(demo_data, scored=False)[:40])
    whole = tmp_path / "whole.jsonl"
    assert run_here(SCORE_SCRIPT, "--teacher", cross_encoder, "--input", source, "--output", whole).returncode == 0
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:17]) + lines[17][:30], encoding="utf-8")  # killed in the middle of a line
    again = run_here(SCORE_SCRIPT, "--teacher", cross_encoder, "--input", source, "--output", cut)
    assert again.returncode == 0, again.stderr
    assert "scored 23 queries" in again.stdout and "17 scored before kept" in again.stdout
    assert cut.read_bytes() == whole.read_bytes()
    other = write_jsonl(tmp_path / "other.jsonl", retrieval_rows(demo_data, scored=False)[5:9])
    foreign = run_here(SCORE_SCRIPT, "--teacher", cross_encoder, "--input", other, "--output", cut)
    assert_one_line_error(foreign, "holds another file's scores")
    same = run_here(SCORE_SCRIPT, "--teacher", cross_encoder, "--input", source, "--output", source)
    assert_one_line_error(same, "is the --input")


@pytest.mark.parametrize("cache", [100_000, 2])
def test_a_bi_encoder_teacher_scores_by_cosine(demo_bert, demo_data, run_here, tmp_path, monkeypatch, cache):
    """The cosines of query and document; the documents' vectors are kept for later queries, the oldest dropped
    past DOCUMENT_CACHE (2: dropped after each query)."""
    monkeypatch.setattr(simcse.teacher, "DOCUMENT_CACHE", cache)
    source = write_jsonl(tmp_path / "in.jsonl", retrieval_rows(demo_data, scored=False)[:5])
    result = run_here(SCORE_SCRIPT, "--teacher", demo_bert, "--input", source, "--output", tmp_path / "out.jsonl")
    assert result.returncode == 0 and "bi-encoder" in result.stdout, result.stderr
    model = SimCSEModel(demo_bert)
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        scored = json.loads(line)
        query = model.encode_query([scored["query"]])[0].astype(np.float64)
        for key in ("pos", "neg"):
            documents = model.encode_document(scored[key]).astype(np.float64)
            expected = [float(d @ query) / math.sqrt(float(d @ d) * float(query @ query)) for d in documents]
            assert scored[f"{key}_scores"] == pytest.approx(expected, abs=1e-6)


def test_distillation_in_a_mixture_acts_on_the_retrieval_batches_only(demo_config, demo_data, tmp_path):
    """Triplets and scored retrieval data in turn: the triplets' first step is the run's without distillation, the
    retrieval data's first step adds the KL."""
    scored = scored_file_of(demo_data, tmp_path)
    settings = dict(train_data=[str(demo_data / "train.tsv"), str(scored)], num_negatives=2, batch_size=8, max_steps=2,
                    eval_steps=1, dropout=0.0)  # fmt: skip
    train(demo_config(tmp_path / "plain", **settings))
    train(demo_config(tmp_path / "distilled", **settings, distill_weight=0.5))
    plain, distilled = (
        [json.loads(line)["train_loss_by_dataset"] for line in metrics_lines(tmp_path / run)[1:]]
        for run in ("plain", "distilled")
    )
    triplets, retrieval = settings["train_data"]
    assert distilled[0][triplets] == plain[0][triplets] and distilled[0][retrieval] is None
    assert distilled[1][retrieval] > plain[1][retrieval]  # the KL is positive: the teacher is not the student
