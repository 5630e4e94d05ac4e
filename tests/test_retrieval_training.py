"""Retrieval training: the query/pos/neg JSONL kind with K hard negatives (drawn with the seed, through the loss,
resumed exactly, GradCache), query and document prompts saved for sentence-transformers' encode_query and
encode_document, and a retrieval set as the dev set (selection by nDCG@10)."""

import json

import numpy as np
import pytest
import torch
from conftest import EVAL_SCRIPT, TRAIN_SCRIPT, assert_one_line_error
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from test_checkpoint import metrics_lines
from test_objectives import assert_resumes_exactly

import simcse.loss
from simcse.batching import QueryDocumentsDataset
from simcse.data import DataFormatError, STSData, load_sts
from simcse.hub import render_model_card
from simcse.model import SimCSEModel
from simcse.report import summarize
from simcse.retrieval import RETRIEVAL_KEYS
from simcse.tokenized import TextSettings, tokenize_in_memory
from simcse.train_data import DATA_KINDS, load_train_data
from simcse.trainer import train


def documents_dataset(data, tokenizer, lengths, prompts, num_negatives, seed):
    """Retrieval data held whole, as the training dataset over its ids in memory."""
    text = TextSettings(tokenizer, lengths[0], prompts[0], lengths[1], prompts[1])
    return QueryDocumentsDataset(tokenize_in_memory(data, text), num_negatives, seed)


def triplet_rows(demo_data):
    lines = (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t") for line in lines]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def query_file(demo_data, tmp_path):
    """The demo triplets as retrieval data: query = anchor, pos = [entailment], neg = its contradiction and two
    other examples' (3 negatives each)."""
    rows = triplet_rows(demo_data)
    examples = [
        {"query": a, "pos": [p], "neg": [n, rows[(i + 1) % len(rows)][2], rows[(i + 2) % len(rows)][2]]}
        for i, (a, p, n) in enumerate(rows)
    ]
    return write_jsonl(tmp_path / "train.jsonl", examples)


@pytest.fixture
def beir_dev(demo_data, tmp_path):
    """The demo dev pairs as a retrieval set: sentence1 the queries, sentence2 the corpus, pairs scored 3 or more
    relevant (qrels/dev.tsv)."""
    dev = load_sts(demo_data / "dev.tsv")
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    write_jsonl(folder / "corpus.jsonl", [{"_id": f"d{i}", "text": s} for i, s in enumerate(dev.sentences2)])
    write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": s} for i, s in enumerate(dev.sentences1)])
    qrels = [f"q{i}\td{i}\t1" for i, score in enumerate(dev.scores) if score >= 3]
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------------
# Drawing K negatives


def test_negatives_are_drawn_with_the_seed_and_afresh_each_epoch(demo_bert, query_file, tmp_path):
    data = load_train_data(query_file)
    tokenizer = SimCSEModel(demo_bert).tokenizer
    dataset = documents_dataset(data, tokenizer, (24, 32), ("", ""), 2, 7)
    documents = {tuple(tokenizer(text, truncation=True, max_length=32)["input_ids"]): text for text in data.texts()}
    first = [tuple(tuple(ids) for ids in dataset[i]) for i in range(len(dataset))]
    assert first == [tuple(tuple(ids) for ids in dataset[i]) for i in range(len(dataset))]  # the seed fixes them
    for i, (query, positive, *negatives) in enumerate(first):
        assert query == tuple(tokenizer(data.columns[0][i], truncation=True, max_length=24)["input_ids"])
        assert documents[positive] in data.positives[i]
        drawn = [documents[negative] for negative in negatives]
        assert len(set(drawn)) == 2 and set(drawn) <= set(data.negatives[i])  # 2 distinct of its own 3
    dataset.set_epoch(1)
    assert [tuple(tuple(ids) for ids in dataset[i]) for i in range(len(dataset))] != first


def test_a_query_with_fewer_negatives_is_counted_and_one_without_or_a_k_beyond_the_data_is_refused(
    demo_bert, tmp_path, caplog
):
    rows = [
        {"query": "질문 하나", "pos": ["답 하나"], "neg": ["오답"]},
        {"query": "질문 둘", "pos": ["답 둘"], "neg": []},
        {"query": "질문 셋", "pos": ["답 셋"], "neg": ["틀린 답 하나", "틀린 답 둘", "틀린 답 셋"]},
    ]
    tokenizer = SimCSEModel(demo_bert).tokenizer
    few = load_train_data(write_jsonl(tmp_path / "few.jsonl", rows[:1] * 2 + rows[2:]))
    documents_dataset(few, tokenizer, (16, 16), ("", ""), 3, 0)
    assert "2 queries hold fewer than 3 negatives; each takes all of its own" in caplog.text
    with pytest.raises(ValueError, match=r"--num_negatives 4 is more than any query of .*few.jsonl holds \(at most 3"):
        tokenize_in_memory(few, TextSettings(tokenizer, 16, "", 16, "")).summary.check_for_run(few.path, 4)
    none = load_train_data(write_jsonl(tmp_path / "none.jsonl", rows))
    with pytest.raises(DataFormatError, match=r"none.jsonl, line 2: no 'neg' documents \(1 such queries\)"):
        documents_dataset(none, tokenizer, (16, 16), ("", ""), 0, 0)  # built, then checked for the run
        tokenize_in_memory(none, TextSettings(tokenizer, 16, "", 16, "")).summary.check_for_run(none.path, 1)
    tokenize_in_memory(none, TextSettings(tokenizer, 16, "", 16, "")).summary.check_for_run(none.path, 0)  # K = 0
    documents_dataset(none, tokenizer, (16, 16), ("", ""), 0, 0)


def test_a_k_beyond_the_data_is_refused_before_training(query_file, demo_train_flags, run_here, tmp_path):
    """It used to pass every check and run out of memory after the step-0 evaluation and save."""
    output = tmp_path / "run"
    flags = demo_train_flags(output, train_data=query_file, num_negatives=100000)
    result = run_here(TRAIN_SCRIPT, *flags)
    assert_one_line_error(result, "--num_negatives 100000 is more than any query of", "train.jsonl holds (at most 3")
    assert not output.exists()


@pytest.mark.parametrize("held, num_negatives", [(2, 3), (2, 5), (3, 7), (4, 4), (5, 2)])
def test_a_query_with_fewer_negatives_uses_every_one_in_every_epoch(
    demo_bert, demo_data, tmp_path, held, num_negatives
):
    """FlagEmbedding's rule: none of a query's own negatives is left out of a step, and none repeats more than
    once beyond another (drawn with replacement, one of 2 negatives was left out in about a quarter of epochs)."""
    distinct = list(dict.fromkeys(negative for *_, negative in triplet_rows(demo_data)))
    own, enough = distinct[:held], distinct[-num_negatives:]  # a second query holds K (more is refused)
    rows = [{"query": "질문", "pos": ["답"], "neg": own}, {"query": "다른 질문", "pos": ["답"], "neg": enough}]
    data = load_train_data(write_jsonl(tmp_path / "q.jsonl", rows))
    tokenizer = SimCSEModel(demo_bert).tokenizer
    text_of = {tuple(tokenizer(t, truncation=True, max_length=16)["input_ids"]): t for t in own}
    dataset = documents_dataset(data, tokenizer, (16, 16), ("", ""), num_negatives, 3)
    orders = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        drawn = [text_of[tuple(ids)] for ids in dataset[0][2:]]
        counts = [drawn.count(text) for text in own]
        expected = sorted(num_negatives // held + (i < num_negatives % held) for i in range(held))
        assert sorted(counts) == expected and len(drawn) == num_negatives, (epoch, drawn)
        orders.add(tuple(drawn))
    assert len(orders) > 1  # still drawn afresh each epoch


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"query": "질문", "pos": []}', "'pos' is empty"),
        ('{"query": "질문", "pos": "답"}', "'pos' must be a list of strings"),
        ('{"query": "질문", "pos": ["답"], "neg": [1]}', "'neg' must be a list of strings"),
        ('{"pos": ["답"]}', "missing or non-string 'query'"),
        ('{"query": "질문", "pos": ["  "]}', "empty sentence in column 'pos'"),
        ('["질문"]', "expected a JSON object"),
        ('{"query": "질문", "pos": ["답"],', "not valid JSON"),
    ],
)
def test_bad_query_lines_name_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "좋은 질문", "pos": ["답"], "neg": ["오답"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=f"bad.jsonl, line 2: {problem}"):
        load_train_data(path)


# ---------------------------------------------------------------------------------------------------
# Training on it


def test_one_negative_per_query_trains_exactly_as_the_triplet_file(demo_config, demo_data, tmp_path):
    """The same examples as JSONL (one pos, one neg each) with --num_negatives 1 and as the triplet TSV: the same
    metrics at every evaluation and the same weights."""
    rows = triplet_rows(demo_data)
    jsonl = write_jsonl(tmp_path / "same.jsonl", [{"query": a, "pos": [p], "neg": [n]} for a, p, n in rows])
    runs = {}
    for name, data in (("triplets", demo_data / "train.tsv"), ("jsonl", jsonl)):
        extra = {"num_negatives": 1, "document_max_length": 24} if name == "jsonl" else {}
        runs[name] = tmp_path / name
        train(demo_config(runs[name], train_data=str(data), max_steps=4, hard_negative_weight=0.5, **extra))
    assert metrics_lines(runs["jsonl"]) == metrics_lines(runs["triplets"])
    expected, got = (load_file(runs[name] / "model.safetensors") for name in ("triplets", "jsonl"))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0)


def test_k_negatives_reach_the_loss_with_their_duplicates_masked(demo_config, query_file, tmp_path, monkeypatch):
    real_cosines, real_loss, seen = simcse.loss.candidate_cosines, simcse.loss.info_nce_of, []

    def recording_cosines(anchors, positives, hard_negatives=None, **kwargs):
        seen.append(tuple(hard_negatives.shape))
        return real_cosines(anchors, positives, hard_negatives, **kwargs)

    def recording_loss(candidates, **kwargs):
        seen[-1] = (seen[-1], tuple(kwargs["exclude"].shape))
        return real_loss(candidates, **kwargs)

    monkeypatch.setattr(simcse.loss, "candidate_cosines", recording_cosines)
    monkeypatch.setattr(simcse.loss, "info_nce_of", recording_loss)
    train(demo_config(tmp_path / "run", train_data=str(query_file), num_negatives=3, max_steps=2, batch_size=8))
    hidden = SimCSEModel(demo_config(tmp_path).model).config.hidden_size
    assert seen == [((8, 3, hidden), (8, 32))] * 2  # candidates: 8 positives + 3 x 8 negatives
    args = json.loads((tmp_path / "run" / "train_args.json").read_text())
    assert args["negatives_per_anchor"] == 7 + 24


def test_a_k_negative_run_resumes_exactly_across_an_epoch(demo_config, query_file, tmp_path):
    """120 queries in batches of 40: an epoch is 3 steps; a run cut at step 2 and resumed draws the negatives the
    uninterrupted run drew, into epoch 2 (dropout on)."""
    settings = dict(train_data=str(query_file), num_negatives=3, batch_size=40, epochs=2, max_steps=5, save_steps=2)
    assert_resumes_exactly(demo_config, tmp_path, **settings, dropout=0.1)


def test_grad_cache_gives_the_whole_batch_loss_with_k_negatives(demo_config, query_file, tmp_path):
    losses = []
    for chunk in (None, 2):
        output = tmp_path / f"chunk{chunk}"
        train(
            demo_config(
                output,
                train_data=str(query_file),
                num_negatives=3,
                max_steps=1,
                batch_size=8,
                dropout=0.0,
                grad_cache_chunk=chunk,
            )
        )
        losses.append(json.loads(metrics_lines(output)[1])["train_loss"])
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_num_negatives_on_data_without_negatives_is_refused(demo_data, demo_train_flags, run_here, tmp_path):
    output = tmp_path / "run"
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(output, num_negatives=2))
    assert_one_line_error(result, "--num_negatives reads the 'neg' lists", "triplets without scores: leave it out")
    assert not (output / "train_args.json").exists()


# ---------------------------------------------------------------------------------------------------
# Prompts and the retrieval dev set


def test_query_and_document_prompts_are_trained_saved_and_applied_by_sentence_transformers(
    demo_config, query_file, beir_dev, tmp_path
):
    output = tmp_path / "run"
    # Prompts of words the demo tokenizer knows (it maps Latin words such as "query" alike, to [UNK]).
    prompts = dict(query_prompt="남자: ", document_prompt="공원: ")
    train(demo_config(output, train_data=str(query_file), num_negatives=2, max_steps=2, batch_size=8, **prompts))
    saved = json.loads((output / "simcse_config.json").read_text())
    model = SimCSEModel(output)
    capped = min(512, model.max_positions)  # the default, capped at the tiny encoder's positions
    assert (saved["query_prompt"], saved["document_prompt"], saved["document_max_length"]) == (
        "남자: ",
        "공원: ",
        capped,
    )
    assert capped == 128 and model.document_max_length == 128
    sentences = [row["text"] for row in map(json.loads, (beir_dev / "queries.jsonl").read_text().splitlines()[:5])]
    st_model = SentenceTransformer(str(output), device="cpu")
    np.testing.assert_allclose(st_model.encode_query(sentences), model.encode_query(sentences), atol=1e-5)
    np.testing.assert_allclose(st_model.encode_document(sentences), model.encode_document(sentences), atol=1e-5)
    np.testing.assert_allclose(
        model.encode_query(sentences), model.encode(["남자: " + s for s in sentences], prompt=""), atol=1e-6
    )
    np.testing.assert_allclose(
        model.encode_document(sentences), model.encode(["공원: " + s for s in sentences], prompt=""), atol=1e-6
    )
    assert np.abs(model.encode_query(sentences) - model.encode_document(sentences)).max() > 1e-4
    # The training batches carried them too: the queries' ids start with the query prompt's.
    dataset = documents_dataset(load_train_data(query_file), model.tokenizer, (24, 512), ("남자: ", "공원: "), 2, 0)
    prompt_ids = model.tokenizer("남자: ", add_special_tokens=False)["input_ids"]
    assert list(dataset[0][0][1 : 1 + len(prompt_ids)]) == prompt_ids


def test_a_retrieval_dev_set_selects_by_ndcg_and_eval_py_agrees(
    demo_data, demo_train_flags, query_file, beir_dev, run_here, tmp_path
):
    output = tmp_path / "run"
    flags = demo_train_flags(output, train_data=query_file, valid_data=beir_dev, num_negatives=2, max_steps=4)
    trained = run_here(TRAIN_SCRIPT, *flags, "--query_prompt", "질문: ")
    assert trained.returncode == 0, trained.stderr
    lines = [json.loads(line) for line in metrics_lines(output)]
    assert all(line["selection_metric"] == "ndcg@10" and set(RETRIEVAL_KEYS) <= set(line) for line in lines)
    assert "dev nDCG@10" in trained.stdout
    best = max(lines, key=lambda line: line["ndcg@10"])
    with pytest.raises(ValueError, match="selected on a retrieval set"):
        summarize(output)  # its tables are of STS results
    report = output / "eval_results.json"
    evaluated = run_here(
        EVAL_SCRIPT, "--model", output, "--test_data", beir_dev, "--split", "dev", "--output_json", report
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "prompts '질문: ' / ''" in evaluated.stdout  # the saved query prompt, unasked
    got = json.loads(report.read_text())["retrieval"][str(beir_dev)]
    assert got["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-6)
    card = render_model_card(output, "user/ko-retrieval")
    assert "best by dev ndcg@10 on" in card and f"on {DATA_KINDS['query_documents'].card_name}" in card
    assert "## Retrieval: " in card and "model.encode_query(" in card


def test_a_document_length_beyond_the_positions_is_said_and_recorded_as_used(
    demo_train_flags, query_file, run_here, tmp_path, caplog
):
    """--document_max_length 100000 was capped at the positions without a word, and train_args.json and the card
    recorded 100000."""
    output = tmp_path / "run"
    flags = demo_train_flags(output, train_data=query_file, num_negatives=1, max_steps=1, document_max_length=100000)
    result = run_here(TRAIN_SCRIPT, *flags)
    assert result.returncode == 0, result.stderr
    positions = SimCSEModel(output).max_positions
    assert f"document_max_length 100000 capped at the {positions} positions" in caplog.text
    info = json.loads((output / "train_args.json").read_text())
    assert (info["args"]["document_max_length"], info["document_max_length_used"]) == (100000, positions)
    assert json.loads((output / "simcse_config.json").read_text())["document_max_length"] == positions
    card = render_model_card(output, "user/model")
    assert f"| `document_max_length` | `{positions}` (capped at the model's positions; given 100000) |" in card
    short = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "short", train_data=query_file, document_max_length=2))
    assert_one_line_error(short, "--document_max_length 2 leaves no room for text")
    assert not (tmp_path / "short" / "checkpoint-0").exists()


def test_a_dev_set_with_only_test_qrels_is_named_so_everywhere(
    demo_train_flags, query_file, beir_dev, run_here, tmp_path, caplog
):
    """Selecting on qrels/test.tsv used to read "dev" on every line, in train_args.json and on the card."""
    (beir_dev / "qrels" / "dev.tsv").rename(beir_dev / "qrels" / "test.tsv")
    output = tmp_path / "run"
    flags = demo_train_flags(output, train_data=query_file, valid_data=beir_dev, num_negatives=1, max_steps=2)
    result = run_here(TRAIN_SCRIPT, *flags)
    assert result.returncode == 0, result.stderr
    assert "no qrels/dev.tsv: the best checkpoint is selected on its qrels/test.tsv" in caplog.text
    assert "done: dev (qrels/test.tsv) nDCG@10" in result.stdout
    lines = [json.loads(line) for line in metrics_lines(output)]
    assert lines and all(line["dev_split"] == "test" for line in lines)
    assert json.loads((output / "train_args.json").read_text())["dev_split"] == "test"
    assert f"best by dev ndcg@10 on `{beir_dev.name}` (qrels/test.tsv)" in render_model_card(output, "user/model")
    (beir_dev / "qrels" / "test.tsv").rename(beir_dev / "qrels" / "dev.tsv")
    caplog.clear()
    result = run_here(TRAIN_SCRIPT, *flags, "--overwrite_output_path")
    assert result.returncode == 0, result.stderr
    assert "qrels/test.tsv" not in caplog.text + result.stdout and "done: dev nDCG@10" in result.stdout
    assert all(json.loads(line)["dev_split"] == "dev" for line in metrics_lines(output))


def test_the_unknown_token_share_counts_the_ids_a_store_holds_special_tokens_aside(demo_bert, demo_data):
    """The probe reads the stored ids (special tokens and truncation included): its share is the naive count over
    the tokens of the texts, the special tokens left out, whatever their number."""
    from transformers import AutoTokenizer

    from simcse.model_loading import unknown_token_share

    tokenizer = AutoTokenizer.from_pretrained(demo_bert)
    sentences = [row[0] for row in triplet_rows(demo_data)]
    probe = [" ".join(sentences[:3]) + " ☃☃", *sentences[:5], "☃"]
    tokens = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) for text in probe]
    expected = sum(row.count(tokenizer.unk_token_id) for row in tokens) / sum(map(len, tokens))
    with_specials = tokenizer(probe)["input_ids"]
    assert unknown_token_share(tokenizer, with_specials) == pytest.approx(expected, abs=1e-12) and expected > 0
    assert unknown_token_share(tokenizer, [np.asarray(row, dtype=np.int32) for row in with_specials]) == pytest.approx(
        expected, abs=1e-12
    )


@pytest.mark.parametrize(
    "prompts",
    [{}, {"prompt": "남자: "}, {"query_prompt": "남자: ", "document_prompt": "공원: "}],
    ids=["no-prompt", "symmetric-prompt", "role-prompts"],
)
def test_a_deployed_folder_retrieves_as_eval_py_measured(demo_data, demo_train_flags, query_file, run_here, tmp_path,
                                                         prompts):  # fmt: skip
    """SentenceTransformer(folder).encode_query / encode_document, as a user deploys the run, give eval.py's
    retrieval metrics, for every way of training prompts: a --prompt model lost 13 points of nDCG@10 (empty role
    prompts won over its default prompt; documents cut at max_length)."""
    from test_retrieval import sentence_transformers_metrics

    dev = load_sts(demo_data / "dev.tsv")
    others = dev.sentences2[1:] + dev.sentences2[:1]
    folder = tmp_path / "long-documents"  # documents of about 30 tokens, past --max_length 16
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "text": f"{a} {b} {a}"} for i, (a, b) in enumerate(zip(dev.sentences2, others))]
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": s} for i, s in enumerate(dev.sentences1)])
    qrels = "".join(f"q{i}\td{i}\t1\n" for i, score in enumerate(dev.scores) if score >= 3)
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    output = tmp_path / "run"
    # Mean pooling, trained a little: the tiny encoder's CLS cosines all lie within 1e-5 of each other, where float
    # noise alone swaps ranks; these spread to gaps of 1e-6 and more, against 2e-7 between the two encoders.
    settings = dict(train_data=query_file, valid_data=folder, num_negatives=1, max_length=16, max_steps=40)
    settings |= dict(eval_steps=40, pooler="avg") | prompts
    assert run_here(TRAIN_SCRIPT, *demo_train_flags(output, **settings)).returncode == 0
    report = tmp_path / "eval.json"
    evaluated = run_here(
        EVAL_SCRIPT, "--model", output, "--test_data", folder, "--split", "dev", "--output_json", report
    )
    assert evaluated.returncode == 0, evaluated.stderr
    measured = json.loads(report.read_text())["retrieval"][str(folder)]
    deployed = sentence_transformers_metrics(output, folder, split="dev")
    assert {key: measured[key] for key in deployed} == pytest.approx(deployed, abs=1e-4)


def seeded_rows(size: int, count: int, seed: int) -> list[int]:
    """The draw --valid_samples documents: ``count`` of ``size`` rows with Python's random.Random(seed), in order."""
    import random

    return sorted(random.Random(seed).sample(range(size), count))


def test_valid_samples_evaluates_the_drawn_pairs_or_queries(demo_config, demo_data, beir_dev, tmp_path, capsys):
    """--valid_samples N: the step-0 dev line of a quick run equals the starting model evaluated on a set written
    with only the drawn rows (mean pooling: the starting model is the pretrained one, no new head)."""
    from simcse.evaluate import evaluate_sts
    from simcse.retrieval import evaluate_retrieval, load_retrieval_set

    start = SimCSEModel(demo_config(tmp_path).model, pooler="avg")
    dev = load_sts(demo_data / "dev.tsv")
    rows = seeded_rows(len(dev), 12, seed=5)
    train(demo_config(tmp_path / "sts", pooler="avg", valid_samples=12, seed=5, max_steps=1))
    columns = ([column[i] for i in rows] for column in (dev.sentences1, dev.sentences2, dev.scores))
    expected = evaluate_sts(start, STSData(*columns))
    assert json.loads(metrics_lines(tmp_path / "sts")[0])["cosine_spearman"] == pytest.approx(
        expected["cosine_spearman"], abs=1e-6
    )
    assert "12 of its 40 drawn with seed 5" in capsys.readouterr().out
    whole = load_retrieval_set(beir_dev, "dev")
    rows = seeded_rows(len(whole.query_ids), 5, seed=5)
    kept = {whole.query_ids[i] for i in rows}
    cut = tmp_path / "five-queries"
    (cut / "qrels").mkdir(parents=True)
    (cut / "corpus.jsonl").write_bytes((beir_dev / "corpus.jsonl").read_bytes())
    queries = [json.loads(line) for line in (beir_dev / "queries.jsonl").read_text().splitlines()]
    write_jsonl(cut / "queries.jsonl", [query for query in queries if query["_id"] in kept])
    qrels = (beir_dev / "qrels" / "dev.tsv").read_text().splitlines()
    (cut / "qrels" / "dev.tsv").write_text("\n".join([qrels[0]] + [r for r in qrels[1:] if r.split("\t")[0] in kept]))
    expected = evaluate_retrieval(start, load_retrieval_set(cut, "dev"))
    settings = dict(pooler="avg", valid_data=str(beir_dev), valid_samples=5, seed=5, max_steps=1)
    train(demo_config(tmp_path / "retrieval", **settings))
    line = json.loads(metrics_lines(tmp_path / "retrieval")[0])
    assert {key: line[key] for key in RETRIEVAL_KEYS} == pytest.approx({k: expected[k] for k in RETRIEVAL_KEYS})
    card = render_model_card(tmp_path / "retrieval", "user/model")
    assert "(5 sampled with seed 5)" in card


def test_valid_samples_of_one_label_is_refused(demo_train_flags, run_here, tmp_path):
    labels = [1] * 30 + [0]
    seed = next(s for s in range(100) if all(labels[i] for i in seeded_rows(len(labels), 3, s)))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "sentence1\tsentence2\tlabel\n" + "".join(f"문장 {i}\t다른 문장\t{y}\n" for i, y in enumerate(labels))
    )
    flags = demo_train_flags(tmp_path / "run", valid_data=pairs, valid_samples=3, seed=seed)
    assert_one_line_error(run_here(TRAIN_SCRIPT, *flags), "the 3 pairs sampled hold one label only")
