"""The evaluation-task table: every task recognised, evaluated and reported from its entry; pair classification
checked against sentence-transformers' BinaryClassificationEvaluator and a brute-force threshold search."""

import json

import numpy as np
import pytest
from conftest import EVAL_SCRIPT, KOREAN_SENTENCES, assert_one_line_error, run_script
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import BinaryClassificationEvaluator
from sklearn.metrics import average_precision_score

import simcse.hub
from simcse.data import DataFormatError
from simcse.model import SimCSEModel
from simcse.objectives import OBJECTIVES
from simcse.pair_classification import best_threshold_metrics, load
from simcse.tasks import TASKS, load_set, task_of, write_eval_report
from simcse.train_data import DATA_KINDS
from simcse.trainer import train

# ---------------------------------------------------------------------------------------------------
# The metrics


def brute_force(scores, labels) -> dict[str, float]:
    """Every threshold between distinct scores tried in a loop (and "nothing is 1"): the best accuracy, and the
    best F1 with its precision and recall."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    distinct = sorted(set(scores.tolist()), reverse=True)
    cuts = [distinct[0] + 1.0] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + [distinct[-1]]
    best_accuracy, best_f1 = 0.0, (0.0, 0.0, 0.0)
    for cut in cuts:
        predicted = scores >= cut
        best_accuracy = max(best_accuracy, float(np.mean(predicted == (labels == 1))))
        true_positives = int(np.sum(predicted & (labels == 1)))
        if true_positives:
            precision, recall = true_positives / predicted.sum(), true_positives / (labels == 1).sum()
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1[0]:
                best_f1 = (f1, precision, recall)
    return {
        "cosine_accuracy": best_accuracy,
        "cosine_f1": best_f1[0],
        "cosine_precision": best_f1[1],
        "cosine_recall": best_f1[2],
    }


@pytest.mark.parametrize("ties", [False, True])
def test_threshold_metrics_equal_sentence_transformers_and_a_brute_force_search(ties):
    rng = np.random.default_rng(3)
    scores = rng.uniform(-1, 1, 200)
    if ties:
        scores = np.round(scores, 1)  # many pairs share a cosine: a cut never splits them
    labels = (scores + rng.normal(0, 0.5, 200) > 0).astype(int)
    got = best_threshold_metrics(scores, labels)
    accuracy, accuracy_threshold = BinaryClassificationEvaluator.find_best_acc_and_threshold(scores, labels, True)
    f1, precision, recall, f1_threshold = BinaryClassificationEvaluator.find_best_f1_and_threshold(scores, labels, True)
    expected = {
        "cosine_accuracy": accuracy,
        "cosine_accuracy_threshold": accuracy_threshold,
        "cosine_f1": f1,
        "cosine_f1_threshold": f1_threshold,
        "cosine_precision": precision,
        "cosine_recall": recall,
        "cosine_ap": average_precision_score(labels, scores),
    }
    assert {key: got[key] for key in expected} == pytest.approx(expected, abs=1e-12)
    assert {key: got[key] for key in brute_force(scores, labels)} == pytest.approx(brute_force(scores, labels))
    predicted = scores >= got["cosine_f1_threshold"]
    assert np.sum(predicted & (labels == 1)) / np.sum(predicted) == pytest.approx(got["cosine_precision"])


def test_a_threshold_never_splits_tied_pairs():
    # Two pairs tie at 0.5, one of each label: only "both" or "neither" can be called 1.
    got = best_threshold_metrics([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert got["cosine_accuracy"] == pytest.approx(0.75)  # splitting the tie would claim 1.0
    assert got["cosine_accuracy_threshold"] == pytest.approx(0.7)


# ---------------------------------------------------------------------------------------------------
# Reading sets


def write_pairs(path, rows, header=("sentence1", "sentence2", "label")):
    path.write_text("\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n", encoding="utf-8")
    return path


def labelled_rows(count: int = 24) -> list[tuple[str, str, int]]:
    """Pairs of the test sentences: a sentence with itself plus a suffix (1), with another sentence (0)."""
    sentences = KOREAN_SENTENCES[:count]
    return [
        (sentence, sentence + " 정말로." if i % 2 == 0 else sentences[(i + 5) % count], int(i % 2 == 0))
        for i, sentence in enumerate(sentences)
    ]


def test_kornli_labels_are_mapped_and_neutral_pairs_dropped(tmp_path):
    rows = [("가", "나", "entailment"), ("다", "라", "neutral"), ("마", "바", "contradiction"), ("사", "아", "neutral")]
    path = write_pairs(tmp_path / "nli.tsv", rows, ("sentence1", "sentence2", "gold_label"))
    data = load(path)
    assert (data.sentences1, data.labels, data.dropped) == (["가", "마"], [1, 0], 2)
    assert task_of(path).name == "pair_classification"


@pytest.mark.parametrize(
    "rows, words",
    [
        ([("가", "나", "1"), ("다", "라", "maybe")], ("line 3", "label 'maybe'")),
        ([("가", "나", "1"), ("다", "라", "1")], ("not both labels",)),
        ([("가", "나", "1"), ("다", "라")], ("line 3",)),
        ([("가", " ", "1"), ("다", "라", "0")], ("line 2", "empty sentence")),
    ],
)
def test_bad_pair_sets_are_refused_naming_the_line(tmp_path, rows, words):
    path = write_pairs(tmp_path / "bad.tsv", rows)
    with pytest.raises(DataFormatError) as error:
        load(path)
    assert str(path) in str(error.value) and all(word in str(error.value) for word in words)


def test_every_task_recognises_its_own_sets(demo_data, tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "가"}\n{"_id": "d2", "text": "나"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "가"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    sets = {"sts": demo_data / "dev.tsv", "retrieval": beir, "pair_classification": write_pairs(tmp_path / "p.tsv", [])}
    assert set(sets) == set(TASKS)
    assert {name: task_of(path).name for name, path in sets.items()} == {name: name for name in sets}


def test_real_xnli_dev_as_pair_classification(shared_data):
    path = shared_data / "kornli" / "xnli.dev.ko.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    labels = [line.split("\t")[2] for line in lines if line.strip()]
    data = load_set(path).data
    assert len(data) == labels.count("entailment") + labels.count("contradiction")
    assert data.dropped == labels.count("neutral") and sum(data.labels) == labels.count("entailment")


# ---------------------------------------------------------------------------------------------------
# Evaluating a model


def independent_metrics(model, rows) -> dict[str, float]:
    """What eval.py must report for ``rows``: each sentence encoded alone, cosines by numpy, sentence-transformers'
    threshold searches and sklearn's AP."""
    first = np.stack([model.encode([a])[0] for a, _, _ in rows]).astype(np.float64)
    second = np.stack([model.encode([b])[0] for _, b, _ in rows]).astype(np.float64)
    cosines = (first * second).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
    labels = np.array([label for _, _, label in rows])
    accuracy, _ = BinaryClassificationEvaluator.find_best_acc_and_threshold(cosines, labels, True)
    f1, _, _, _ = BinaryClassificationEvaluator.find_best_f1_and_threshold(cosines, labels, True)
    return {"cosine_accuracy": accuracy, "cosine_f1": f1, "cosine_ap": average_precision_score(labels, cosines)}


def test_pair_classification_equals_binary_classification_evaluator(demo_bert, tmp_path):
    model = SimCSEModel(demo_bert, pooler="avg")  # cosines far apart: no ties that float32 and float64 see apart
    model.save_pretrained(tmp_path / "model")
    path = write_pairs(tmp_path / "pairs.tsv", labelled_rows())
    got = load_set(path).evaluate(model)
    data = load(path)
    evaluator = BinaryClassificationEvaluator(
        data.sentences1, data.sentences2, data.labels, name="", similarity_fn_names=["cosine"]
    )
    theirs = evaluator.compute_metrics(SentenceTransformer(str(tmp_path / "model"), device="cpu"))["cosine"]
    assert set(got) == set(TASKS["pair_classification"].metric_keys)
    assert {key: got[f"cosine_{key}"] for key in theirs} == pytest.approx(theirs, abs=1e-4)


def test_eval_py_reports_every_task_in_one_run(demo_bert, demo_data, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.tsv", labelled_rows())
    output = tmp_path / "results.json"
    result = run_script(EVAL_SCRIPT, "--model", demo_bert, "--test_data", pairs, demo_data / "dev.tsv",
                        "--output_json", output)  # fmt: skip
    assert "| Model | Accuracy | F1 |" in result.stdout and "| Model | AVG |" in result.stdout
    report = json.loads(output.read_text())
    expected = independent_metrics(SimCSEModel(demo_bert), labelled_rows())
    got = report["pair_classification"][str(pairs)]
    assert {key: got[key] for key in expected} == pytest.approx(expected, abs=1e-5)
    assert str(demo_data / "dev.tsv") in report["results"]


def test_eval_py_names_the_line_of_a_bad_label(demo_bert, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.tsv", [("가", "나", "1"), ("다", "라", "yes")])
    result = run_script(EVAL_SCRIPT, "--model", demo_bert, "--test_data", pairs, check=False)
    assert_one_line_error(result, str(pairs), "line 3", "label 'yes'")


def test_a_pair_classification_dev_set_selects_by_average_precision(demo_config, demo_bert, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.tsv", labelled_rows())
    output = tmp_path / "run"
    result = train(demo_config(output, valid_data=str(pairs), max_steps=4, eval_steps=2))
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    keys = set(TASKS["pair_classification"].metric_keys)
    assert all(line["selection_metric"] == "cosine_ap" and keys <= set(line) for line in lines)
    assert result.best_score == max(line["cosine_ap"] for line in lines)
    best = next(line for line in lines if line["step"] == result.best_step)
    expected = independent_metrics(SimCSEModel(output), labelled_rows())["cosine_ap"]
    assert best["cosine_ap"] == pytest.approx(expected, abs=1e-6)
    assert "dev cosine accuracy" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# The model card


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_card_names_each_objective_and_its_data(objective, tiny_bert_dir, tmp_path):
    SimCSEModel(tiny_bert_dir).save_pretrained(tmp_path)
    kind = OBJECTIVES[objective].data_kinds[0]
    args = {"model": "klue/bert-base", "train_data": "my.data", "objective": objective, "valid_data": "korsts_dev"}
    (tmp_path / "train_args.json").write_text(json.dumps({"args": args, "data_kind": kind}))
    card = simcse.hub.render_model_card(tmp_path, "me/model")
    assert f"trained with {OBJECTIVES[objective].card_name} on {DATA_KINDS[kind].card_name}" in card
    wrong = {other.card_name for name, other in OBJECTIVES.items() if name != objective}
    assert not any(f"trained with {name} " in card for name in wrong)


def test_the_card_holds_every_tasks_results(tiny_bert_dir, tmp_path):
    model = SimCSEModel(tiny_bert_dir)
    model.save_pretrained(tmp_path)
    results = {
        task.name: {f"set_{task.name}": {key: 0.5 + i / 100 for i, key in enumerate(task.metric_keys)}}
        for task in TASKS.values()
    }
    write_eval_report(tmp_path / "eval_results.json", "me/model", model, results)
    card = simcse.hub.render_model_card(tmp_path, "me/model")
    meta = card.split("---\n", 2)[1]
    for task in TASKS.values():
        assert f"set_{task.name}" in card.split("---\n", 2)[2]  # its section
        assert f"type: {task.card_task[0]}" in meta  # its model-index entry
        assert all(f"type: {key}" in meta for key in task.metric_keys)


def test_a_report_with_a_bad_section_or_a_run_of_an_unknown_metric_is_one_error(tmp_path):
    from simcse.tasks import read_eval_report, task_selecting_by

    path = tmp_path / "eval_results.json"
    path.write_text(json.dumps({"results": {}, "retrieval": []}))
    with pytest.raises(ValueError, match="'retrieval' is not an object"):
        read_eval_report(path)
    with pytest.raises(ValueError, match="'bleu' is none of the evaluation tasks'"):
        task_selecting_by("bleu")
