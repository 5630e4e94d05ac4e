"""End-to-end runs of the scripts users call, on tiny models and the demo data.

Runs in a fresh process (as a user runs them) are marked slow; errors are checked in this process too, where
they cost no interpreter start."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import EVAL_SCRIPT, REPO_ROOT, TRAIN_SCRIPT, assert_one_line_error, run_script
from transformers import AutoModel, AutoTokenizer

from simcse.config import DEFAULT_MAX_LENGTH
from simcse.data import load_sts
from simcse.evaluate import sts_metrics
from simcse.run_folder import CURVES_NAME, EVAL_RESULTS_NAME, METRICS_NAME, SIMCSE_CONFIG_NAME, TRAIN_ARGS_NAME
from simcse.train_data import load_train_data


def train_run(demo_train_flags, tmp_path, train_data, *extra, **changes):
    """train.py on the demo data in a fresh process: 4 steps, evaluating every 2."""
    output = tmp_path / "run"
    result = run_script(TRAIN_SCRIPT, *demo_train_flags(output, train_data=train_data, max_steps=4, **changes), *extra)
    lines = [json.loads(line) for line in (output / METRICS_NAME).read_text().splitlines()]
    return output, lines, result


def embeddings_with_plain_transformers(folder, sentences, output):
    """Sentence vectors from AutoModel/AutoTokenizer alone, as a user of the checkpoint would compute them."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch)
    if output == "pooler_output":
        return outputs.pooler_output.numpy()
    return outputs.last_hidden_state[:, 0].numpy()


@pytest.mark.slow
def test_supervised_triplets_end_to_end(demo_data, demo_train_flags, tmp_path):
    output, lines, result = train_run(demo_train_flags, tmp_path, demo_data / "train.tsv", hard_negative_weight=0.5)
    assert [line["step"] for line in lines] == [0, 2, 4]
    assert lines[0]["train_loss"] is None and all(np.isfinite(line["train_loss"]) for line in lines[1:])
    for line in lines:
        assert {"epoch", "learning_rate", "cosine_spearman", "avg", "dot_pearson"} <= set(line)
    info = json.loads((output / TRAIN_ARGS_NAME).read_text())
    assert info["args"]["hard_negative_weight"] == 0.5 and info["args"]["batch_size"] == 16
    assert {"torch", "transformers", "python"} <= set(info["versions"]) and info["device"]["type"] == "cpu"
    assert json.loads((output / SIMCSE_CONFIG_NAME).read_text())["pooler"] == "cls"
    assert (output / "model.safetensors").is_file()
    # The head is in the checkpoint's pooler: plain AutoModel's pooler_output reproduces the logged score.
    best = max(lines, key=lambda line: line["cosine_spearman"])  # the first of the highest: the step kept
    kept = f"best {best['cosine_spearman']:.4f} at step {best['step']}" if best["step"] else "no step improved on it"
    assert f"before training, {kept}" in result.stdout and "mean training loss" in result.stdout
    dev = load_sts(demo_data / "dev.tsv")
    vectors = embeddings_with_plain_transformers(output, dev.sentences1 + dev.sentences2, "pooler_output")
    metrics = sts_metrics(vectors[: len(dev)], vectors[len(dev) :], dev.scores)
    assert metrics["cosine_spearman"] == pytest.approx(best["cosine_spearman"], abs=1e-4)

    # eval.py on the best checkpoint reproduces it too, prints the table and writes every metric.
    result = run_script(
        EVAL_SCRIPT, "--model", output, "--test_data", demo_data / "dev.tsv", "--output_json", tmp_path / "e.json"
    )
    report = json.loads((tmp_path / "e.json").read_text())
    (name,) = report["results"]
    assert report["results"][name]["cosine_spearman"] == pytest.approx(best["cosine_spearman"], abs=1e-4)
    assert report["pooler"] == "cls" and report["max_length"] == 24
    assert "| Model | AVG | Cosine Pearson | Cosine Spearman |" in result.stdout
    assert f"{100 * best['cosine_spearman']:.2f}" in result.stdout


@pytest.mark.slow
def test_unsupervised_txt_end_to_end(demo_data, demo_train_flags, tmp_path):
    output, lines, result = train_run(
        demo_train_flags, tmp_path, demo_data / "corpus_with_blanks.txt", mlp_only_train=True
    )
    assert "skipped 5 blank line(s)" in result.stderr
    saved = json.loads((output / SIMCSE_CONFIG_NAME).read_text())
    assert saved["pooler"] == "cls" and saved["mlp_only_train"] is True
    # mlp_only_train: the embedding is the CLS vector before the head.
    best = max(lines, key=lambda line: line["cosine_spearman"])
    dev = load_sts(demo_data / "dev.tsv")
    vectors = embeddings_with_plain_transformers(output, dev.sentences1 + dev.sentences2, "cls")
    metrics = sts_metrics(vectors[: len(dev)], vectors[len(dev) :], dev.scores)
    assert metrics["cosine_spearman"] == pytest.approx(best["cosine_spearman"], abs=1e-4)
    result = run_script(EVAL_SCRIPT, "--model", output, "--test_data", demo_data / "dev.tsv")
    assert "pooler cls (mlp_only_train)" in result.stdout


def test_pairs_with_roberta_and_epoch_evaluation(demo_data, demo_roberta, demo_train_flags, run_here, tmp_path):
    pairs = demo_data / "pairs.tsv"
    output = tmp_path / "run"
    flags = demo_train_flags(
        output, model=demo_roberta, train_data=pairs, max_steps=100, batch_size=128, eval_strategy="epoch", pooler="avg"
    )
    assert run_here(TRAIN_SCRIPT, *flags).returncode == 0
    lines = [json.loads(line) for line in (output / METRICS_NAME).read_text().splitlines()]
    steps_per_epoch = -(-len(load_train_data(pairs)) // 128)
    assert [line["step"] for line in lines] == [0, steps_per_epoch]
    assert lines[-1]["epoch"] == 1.0
    assert json.loads((output / SIMCSE_CONFIG_NAME).read_text())["pooler"] == "avg"
    assert AutoModel.from_pretrained(output).config.model_type == "roberta"


@pytest.mark.slow
def test_demo_script_learns(tmp_path):
    """The README's first command: the dev score must rise far above its value before training."""
    result = run_script(REPO_ROOT / "train" / "run_demo.sh", env={"DEMO_DIR": str(tmp_path)})
    lines = [json.loads(line) for line in (tmp_path / "model" / METRICS_NAME).read_text().splitlines()]
    before, best = lines[0]["cosine_spearman"], max(line["cosine_spearman"] for line in lines)
    assert best > before + 0.3, (before, best)
    report = json.loads((tmp_path / "model" / EVAL_RESULTS_NAME).read_text())
    assert report["results"][str(tmp_path / "data" / "dev.tsv")]["cosine_spearman"] == pytest.approx(best, abs=1e-4)
    assert "Cosine Spearman" in result.stdout
    check_the_readmes_demo_output(result.stdout, tmp_path / "model")


def check_the_readmes_demo_output(stdout: str, model_folder) -> None:
    """The demo output the README quotes is what the demo prints (numbers to 2e-3: the demo is deterministic on
    a machine, and CPUs differ in the last digits of float sums), and docs/demo_curves.png is what
    plot_metrics.py draws of the run."""
    import matplotlib.image

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("## Demo", 1)[1]
    quoted = re.search(r"```\n(step 0 .+?)\n```", readme, re.S).group(1).splitlines()
    printed = stdout.splitlines()
    number = r"-?\d+\.\d+"
    for line in (line for line in quoted if line != "..."):
        line = line.removesuffix("; ...")  # the README cuts the summary line short
        (match,) = [out for out in printed if out.startswith(line.split(":")[0] + ":")]
        assert re.sub(number, "#", match).startswith(re.sub(number, "#", line)), (line, match)
        expected, got = (list(map(float, re.findall(number, text))) for text in (line, match))
        assert got[: len(expected)] == pytest.approx(expected, abs=2e-3), (line, match)
    run_script(REPO_ROOT / "evaluation" / "plot_metrics.py", model_folder)
    drawn = matplotlib.image.imread(model_folder / CURVES_NAME)
    shown = matplotlib.image.imread(REPO_ROOT / "docs" / "demo_curves.png")
    assert drawn.shape == shown.shape and abs(drawn - shown).mean() < 0.01


# ---------------------------------------------------------------------------------------------------
# Flags, help and errors: one line, non-zero exit, no traceback


def test_help_and_flag_errors_answer_without_importing_torch():
    """--help shows every default, and a bad flag or value is refused, before torch is imported."""
    probe = (
        "import runpy, sys\n"
        "sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n    print('exit', exit.code)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )

    def probe_run(script, *args):
        command = [sys.executable, "-c", probe, str(script), *args]
        env = {**os.environ, "COLUMNS": "250"}  # one help line per flag
        return subprocess.run(command, capture_output=True, text=True, env=env)

    help_text = probe_run(TRAIN_SCRIPT, "--help").stdout
    assert "exit 0" in help_text and "torch imported: False" in help_text
    assert "(default: klue/bert-base)" in help_text and "(default: same as --model)" in help_text
    assert "--eval_steps EVAL_STEPS" in help_text and "--eval_step " not in help_text  # the old name: hidden
    for args in (
        ["--train_data", "x.tsv", "--pooler", "no such pooler!"],
        ["--train_data", "x.tsv", "--batch_size", "1"],
    ):
        refused = probe_run(TRAIN_SCRIPT, *args)
        assert "torch imported: False" in refused.stdout and "exit 0" not in refused.stdout, refused
    eval_help = probe_run(EVAL_SCRIPT, "--help").stdout
    assert "torch imported: False" in eval_help and "auto (CUDA if available" in eval_help


def test_train_errors(demo_data, demo_bert, run_here, tmp_path):
    common = ["--model", demo_bert, "--valid_data", demo_data / "dev.tsv", "--output_path", tmp_path / "out"]
    # One in a fresh process, as a user meets it; the others in this process, through the same entry point.
    missing = run_script(TRAIN_SCRIPT, *common, "--train_data", tmp_path / "missing.tsv", check=False)
    assert_one_line_error(missing, "missing.tsv", "no such file")

    bad = tmp_path / "bad.tsv"
    bad.write_text("sent0\tsent1\thard_neg\n가\t나\t다\n가\t나\n", encoding="utf-8")
    bad_rows = run_here(TRAIN_SCRIPT, *common, "--train_data", bad)
    assert_one_line_error(bad_rows, str(bad), "line 3", "expected 3")

    one = run_here(TRAIN_SCRIPT, *common, "--train_data", demo_data / "train.tsv", "--batch_size", 1)
    assert_one_line_error(one, "--batch_size 1")

    no_model = run_here(
        TRAIN_SCRIPT, *common[2:], "--model", tmp_path / "no-model", "--train_data", demo_data / "train.tsv"
    )
    assert_one_line_error(no_model, "no-model")

    no_dev = run_here(
        TRAIN_SCRIPT,
        *common[:2],
        "--train_data",
        demo_data / "train.tsv",
        "--valid_data",
        "korsts_dev",
        "--data_dir",
        tmp_path,
        "--output_path",
        tmp_path / "no-dev",
    )
    assert_one_line_error(no_dev, "sts-dev.tsv", "download_korsts.sh")
    assert not (tmp_path / "no-dev").exists()  # refused before writing anything: no folder left behind

    bad_flag = run_here(TRAIN_SCRIPT, *common, "--train_data", bad, "--pooler", "no such pooler!")
    assert bad_flag.returncode == 2 and "invalid choice: 'no such pooler!'" in bad_flag.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_eval_errors(demo_bert, run_here, tmp_path):
    missing = run_here(EVAL_SCRIPT, "--model", demo_bert, "--test_data", "klue_sts_dev", "--data_dir", tmp_path)
    assert_one_line_error(missing, "klue-sts-v1.1_dev.json", "download_klue_sts.sh")


def test_eval_defaults_to_the_checkpoints_max_length_and_keeps_the_old_flag_name(
    demo_data, demo_bert, run_here, tmp_path
):
    """eval.py reads the training max length from the checkpoint, else DEFAULT_MAX_LENGTH; --output_path, the
    JSON flag's old name, still works."""
    from simcse.model import SimCSEModel

    SimCSEModel(demo_bert, max_length=12).save_pretrained(tmp_path / "trained")
    for folder, expected in ((tmp_path / "trained", 12), (demo_bert, DEFAULT_MAX_LENGTH)):
        result = run_here(
            EVAL_SCRIPT, "--model", folder, "--test_data", demo_data / "dev.tsv", "--output_path", tmp_path / "e.json"
        )
        assert result.returncode == 0, result.stderr
        assert f"max_length {expected}" in result.stdout
        assert json.loads((tmp_path / "e.json").read_text())["max_length"] == expected


# ---------------------------------------------------------------------------------------------------
# Data scripts


def test_build_nli_triplets_on_xnli_dev(shared_data, tmp_path):
    source = shared_data / "kornli" / "xnli.dev.ko.tsv"
    output = tmp_path / "triplets.tsv"
    result = run_script(REPO_ROOT / "data" / "build_nli_triplets.py", "--input", source, "--output", output)
    assert "triplets written: 830" in result.stdout and "premises seen: 830" in result.stdout
    triplets = load_train_data(output)
    assert len(triplets) == 830 and triplets.num_sent == 3
    with open(source, encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    by_label = {(premise, label): hypothesis for premise, hypothesis, label in reversed(rows)}  # first wins
    for premise, entailment, contradiction in zip(*triplets.columns):
        assert by_label[(premise, "entailment")] == entailment
        assert by_label[(premise, "contradiction")] == contradiction
    assert any('"' in premise for premise in triplets.columns[0])


def test_build_nli_triplets_counts_skipped_rows(tmp_path):
    source = tmp_path / "nli.tsv"
    source.write_text(
        "sentence1\tsentence2\tgold_label\n"
        "전제 하나\t함의\tentailment\n전제 하나\t모순\tcontradiction\n전제 하나\t중립\tneutral\n"
        "전제 둘\t함의만\tentailment\n전제 셋\t라벨 없음\t-\n",
        encoding="utf-8",
    )
    result = run_script(REPO_ROOT / "data" / "build_nli_triplets.py", "--input", source, "--output", tmp_path / "t.tsv")
    assert "triplets written: 1" in result.stdout
    assert "neutral (not used): 1" in result.stdout
    assert "premise without contradiction (its rows): 1" in result.stdout
    assert "gold_label '-' (not an NLI label): 1" in result.stdout
    assert load_train_data(tmp_path / "t.tsv").columns == [["전제 하나"], ["함의"], ["모순"]]


@pytest.fixture
def fake_korsts_source(tmp_path):
    """A local folder laid out like the KorNLUDatasets repository, served through file:// URLs."""
    source = tmp_path / "source"
    (source / "KorSTS").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (source / "KorSTS" / f"sts-{split}.tsv").write_text(
            "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\n"
            f"main\tx\t2012\t0001\t3.5\t{split} 문장\t다른 문장\n"
            f"main\tx\t2012\t0002\t1.0\t{split} 둘째 문장\t또 다른 문장\n",
            encoding="utf-8",
        )
    return source


def test_download_writes_where_load_sts_looks(fake_korsts_source, tmp_path):
    data_dir = tmp_path / "data"
    env = {"KORNLU_URL": fake_korsts_source.as_uri(), "DATA_DIR": str(data_dir)}
    run_script(REPO_ROOT / "data" / "download_korsts.sh", env=env)
    for name in ("korsts_train", "korsts_dev", "korsts_test"):
        assert load_sts(name, data_dir=data_dir).scores == [3.5, 1.0]


def test_download_fails_loudly(fake_korsts_source, tmp_path):
    data_dir = tmp_path / "data"
    (fake_korsts_source / "KorSTS" / "sts-dev.tsv").write_text("")
    empty = run_script(
        REPO_ROOT / "data" / "download_korsts.sh",
        check=False,
        env={"KORNLU_URL": fake_korsts_source.as_uri(), "DATA_DIR": str(data_dir)},
    )
    assert empty.returncode != 0 and "empty download" in empty.stderr
    assert not (data_dir / "korsts" / "sts-dev.tsv").exists()
    assert not list(data_dir.rglob("*.part"))

    missing = run_script(
        REPO_ROOT / "data" / "download_klue_sts.sh",
        check=False,
        env={"KLUE_URL": (tmp_path / "nowhere").as_uri(), "DATA_DIR": str(data_dir)},
    )
    assert missing.returncode != 0 and "download failed" in missing.stderr
    assert not (data_dir / "klue_sts").exists()  # no empty folder left behind
    nowhere = tmp_path / "fresh" / "data"
    failed = run_script(
        REPO_ROOT / "data" / "download_klue_sts.sh",
        check=False,
        env={"KLUE_URL": (tmp_path / "nowhere").as_uri(), "DATA_DIR": str(nowhere)},
    )
    assert failed.returncode != 0 and not (tmp_path / "fresh").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, train_file", [("run_train_supervised.sh", "train.tsv"), ("run_train_unsupervised.sh", "corpus.txt")]
)
def test_run_scripts_pass_the_recipe_and_extra_flags(demo_data, demo_bert, tmp_path, script, train_file):
    output = tmp_path / "run"
    result = run_script(
        REPO_ROOT / "train" / script,
        "--train_data",
        demo_data / train_file,
        "--valid_data",
        demo_data / "dev.tsv",
        "--output_path",
        output,
        "--max_steps",
        2,
        "--batch_size",
        8,
        env={"MODEL": str(demo_bert)},
    )
    args = json.loads((output / TRAIN_ARGS_NAME).read_text())["args"]
    assert args["model"] == str(demo_bert) and args["batch_size"] == 8 and args["eval_steps"] in (125, 250)
    assert (args["learning_rate"], args["temp"], args["max_length"], args["dropout"], args["amp"]) == (
        5e-5,
        0.05,
        64,
        0.1,
        True,
    )
    assert args["mlp_only_train"] is (script == "run_train_unsupervised.sh")
    assert "--amp is ignored on the CPU" in result.stderr

    evaluated = run_script(
        REPO_ROOT / "evaluation" / "run_eval.sh", "--test_data", demo_data / "test.tsv", env={"MODEL": str(output)}
    )
    assert (output / EVAL_RESULTS_NAME).is_file() and "Cosine Spearman" in evaluated.stdout


@pytest.mark.slow
def test_multitask_script_trains_stage_2_from_stage_1_s_best(demo_data, demo_bert, tmp_path):
    output = tmp_path / "multitask"
    env = {
        "MODE": "sequential",
        "MODEL": str(demo_bert),
        "OUTPUT": str(output),
        "TRIPLETS": str(demo_data / "train.tsv"),
        "SCORED": str(demo_data / "dev.tsv"),
        "EVAL_DATA": str(demo_data / "test.tsv"),
    }
    flags = ["--valid_data", demo_data / "test.tsv", "--max_steps", 3, "--batch_size", 8, "--learning_rate", 1e-3]
    result = run_script(REPO_ROOT / "train" / "run_train_multitask.sh", *flags, env=env)
    assert "stage 1" in result.stdout and "stage 2" in result.stdout
    stage1, stage2 = output / "stage1", output / "stage2"
    args = json.loads((stage2 / TRAIN_ARGS_NAME).read_text())["args"]
    assert (args["model"], args["objective"], args["train_data"]) == (str(stage1), "cosent", str(demo_data / "dev.tsv"))
    assert (args["epochs"], args["warmup_ratio"], args["pooler"]) == (4, 0.1, "cls")
    # Stage 2 starts from stage 1's best model, trained head included: its first evaluation is that model's.
    first = [json.loads(line) for line in (stage2 / METRICS_NAME).read_text().splitlines()][0]
    best = max(
        (json.loads(line) for line in (stage1 / METRICS_NAME).read_text().splitlines()),
        key=lambda line: line["cosine_spearman"],
    )
    assert first["step"] == 0 and first["cosine_spearman"] == pytest.approx(best["cosine_spearman"], abs=1e-6)
    report = json.loads((stage2 / "eval_results.json").read_text())
    assert str(demo_data / "test.tsv") in report["results"]


def test_the_joint_multitask_recipe_is_one_mixture_run(tmp_path):
    """MODE=joint, the default, with a stand-in for python that records its arguments: one train.py run over the
    triplets and the scored pairs (InfoNCE batch 64, cosine_mse batch 8, round robin, mean pooling), then eval.py
    on it."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    (bin_dir / "python").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "MODE"}  # the default
    env |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TRIPLETS": "t.tsv"}
    script = REPO_ROOT / "train" / "run_train_multitask.sh"
    subprocess.run(["bash", script, "--output_path", str(tmp_path / "X"), "--seed", "7"], env=env, check=True)
    joint, evaluation = log.read_text().splitlines()
    assert "--train_data t.tsv korsts_train --objective simcse cosine_mse --batch_size 64 8" in joint
    assert "--mixture round_robin --pooler avg --epochs 5" in joint and joint.endswith("--seed 7")
    assert f"--output_path {tmp_path}/X/joint" in joint and f"--model {tmp_path}/X/joint" in evaluation
    bad = subprocess.run(["bash", script], env=env | {"MODE": "both"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "MODE must be joint or sequential" in bad.stderr


@pytest.mark.slow
def test_the_joint_multitask_recipe_trains(demo_data, demo_bert, tmp_path):
    output = tmp_path / "multitask"
    env = {
        "MODE": "joint",
        "MODEL": str(demo_bert),
        "OUTPUT": str(output),
        "TRIPLETS": str(demo_data / "train.tsv"),
        "SCORED": str(demo_data / "dev.tsv"),
        "EVAL_DATA": str(demo_data / "test.tsv"),
    }
    flags = ["--valid_data", demo_data / "test.tsv", "--max_steps", 4, "--learning_rate", 1e-3]
    run_script(REPO_ROOT / "train" / "run_train_multitask.sh", *flags, env=env)
    info = json.loads((output / "joint" / TRAIN_ARGS_NAME).read_text())
    assert info["args"]["objective"] == ["simcse", "cosine_mse"] and info["num_train_examples"] == [120, 40]
    lines = [json.loads(line) for line in (output / "joint" / METRICS_NAME).read_text().splitlines()]
    assert set(lines[-1]["train_loss_by_dataset"]) == {str(demo_data / "train.tsv"), str(demo_data / "dev.tsv")}
    assert str(demo_data / "test.tsv") in json.loads((output / "joint" / "eval_results.json").read_text())["results"]


def test_eval_names_each_set_before_its_encoding_and_prints_its_table_after(
    demo_data, demo_bert, run_here, monkeypatch
):
    """eval.py is never silent for the minutes a large set takes: the set's line is out before it is encoded, its
    table after, and encode's bar is labelled with the set."""
    import simcse.evaluate

    printed_before, real = [], simcse.evaluate.evaluate_sts

    def recording(model, data, **kwargs):
        printed_before.append((kwargs["description"], sys.stdout.getvalue()))  # capsys's buffer so far
        return real(model, data, **kwargs)

    monkeypatch.setattr(simcse.evaluate, "evaluate_sts", recording)
    dev = demo_data / "dev.tsv"
    result = run_here(EVAL_SCRIPT, "--model", demo_bert, "--test_data", dev)
    assert result.returncode == 0, result.stderr
    ((description, so_far),) = printed_before
    header = f"{dev} ({len(load_sts(dev))} pairs)"
    assert description == str(dev) and header in so_far and "| Model | AVG |" not in so_far
    assert result.stdout.index(header) < result.stdout.index("| Model | AVG |")
