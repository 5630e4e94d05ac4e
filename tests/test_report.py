"""Multi-seed summaries and training curves."""

import json
import math
import statistics
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, assert_one_line_error, run_script

from simcse.evaluate import METRIC_KEYS
from simcse.report import BEST_DEV, curve, find_runs, format_summary_table, non_finite_points, plot_runs, summarize


def write_run(folder, scores, eval_results=None):
    """A metrics.jsonl whose evaluation i has cosine_spearman scores[i] (other metrics derived from it)."""
    folder.mkdir(parents=True)
    lines = []
    for step, score in enumerate(scores):
        line = {
            "step": step * 10,
            "epoch": step / 4,
            "train_loss": None if step == 0 else 1.0 / step,
            "learning_rate": 1e-5,
        }
        line |= {key: score + (0.001 * i if key != "cosine_spearman" else 0) for i, key in enumerate(METRIC_KEYS)}
        lines.append(json.dumps(line))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if eval_results is not None:
        (folder / "eval_results.json").write_text(json.dumps({"results": eval_results}))


def test_summary_is_mean_and_sample_std_of_each_seeds_best_step(tmp_path):
    write_run(tmp_path / "seed-1", [0.3, 0.7, 0.6])
    write_run(tmp_path / "seed-2", [0.3, 0.5, 0.8])
    write_run(tmp_path / "seed-3", [0.3, 0.65, 0.62])
    summary = summarize(tmp_path)
    assert summary["runs"] == ["seed-1", "seed-2", "seed-3"]
    cosine = summary["datasets"][BEST_DEV]["cosine_spearman"]
    assert cosine["values"] == [0.7, 0.8, 0.65]
    assert cosine["mean"] == pytest.approx(statistics.fmean([0.7, 0.8, 0.65]))
    assert cosine["std"] == pytest.approx(statistics.stdev([0.7, 0.8, 0.65]))
    # The other metrics come from the same (best) line of each run.
    assert summary["datasets"][BEST_DEV]["avg"]["values"] == pytest.approx([0.7 + 0.010, 0.8 + 0.010, 0.65 + 0.010])
    table = format_summary_table(summary)
    assert f"| {BEST_DEV} | " in table and f"{100 * cosine['mean']:.2f} ± {100 * cosine['std']:.2f}" in table


def test_summary_prefers_eval_results_and_keeps_common_datasets(tmp_path):
    test_metrics = {key: 0.5 for key in METRIC_KEYS}
    write_run(tmp_path / "seed-1", [0.3, 0.7], {"korsts_test": test_metrics, "klue_sts_dev": test_metrics})
    write_run(tmp_path / "seed-2", [0.3, 0.7], {"korsts_test": {k: 0.6 for k in METRIC_KEYS}})
    summary = summarize(tmp_path)
    assert list(summary["datasets"]) == ["korsts_test"]
    assert summary["datasets"]["korsts_test"]["dot_spearman"]["values"] == [0.5, 0.6]


def test_single_run_and_missing_runs(tmp_path):
    write_run(tmp_path / "run", [0.2, 0.4])
    assert list(find_runs(tmp_path / "run")) == ["run"]
    assert summarize(tmp_path / "run")["datasets"][BEST_DEV]["cosine_spearman"]["std"] == 0.0
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        find_runs(tmp_path / "empty")


def test_nan_points_are_found():
    lines = [
        {"step": 0, "train_loss": None, "cosine_spearman": 0.1},
        {"step": 10, "train_loss": math.nan, "cosine_spearman": 0.2},
        {"step": 20, "train_loss": 0.5, "cosine_spearman": math.inf},
    ]
    assert non_finite_points(lines) == ["step 10: train_loss is nan", "step 20: cosine_spearman is inf"]


def test_summarize_script_writes_json(tmp_path, run_here):
    write_run(tmp_path / "seed-1", [0.3, 0.7])
    write_run(tmp_path / "seed-2", [0.3, 0.9])
    result = run_here(REPO_ROOT / "evaluation" / "summarize.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "80.00 ± 14.14" in result.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["datasets"][BEST_DEV]["cosine_spearman"]["mean"] == 0.8


def test_plot_writes_a_png_and_reports_nan(tmp_path, run_here):
    write_run(tmp_path / "seed-1", [0.3, 0.5, 0.7, 0.75])
    write_run(tmp_path / "seed-2", [0.3, 0.6, 0.65, 0.7])
    with (tmp_path / "seed-2" / "metrics.jsonl").open("a") as file:
        file.write(json.dumps({"step": 40, "train_loss": math.nan, "cosine_spearman": math.nan}) + "\n")
    result = run_here(REPO_ROOT / "evaluation" / "plot_metrics.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: run seed-2: step 40: train_loss is nan" in result.stdout
    assert "warning: run seed-2: step 40: cosine_spearman is nan" in result.stdout
    assert "seed-1: " not in result.stdout
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.parametrize("script, flag, name", [("plot_metrics.py", "--output_png", "curves.png"),
                                                  ("summarize.py", "--json", "summary.json")])  # fmt: skip
def test_a_full_disk_names_the_flag_and_leaves_no_empty_file(tmp_path, run_here, small_disk, script, flag, name):
    """They named train.py's --output_path and left a 0-byte file."""
    write_run(tmp_path / "seed-1", [0.3, 0.7])
    write_run(tmp_path / "seed-2", [0.3, 0.9])
    disk = small_disk(4)
    (disk / "filler").write_bytes(b"x" * 4096)  # nothing left
    result = run_here(REPO_ROOT / "evaluation" / script, tmp_path, flag, disk / name)
    assert_one_line_error(result, "no space left", f"choose another {flag}")
    assert sorted(path.name for path in disk.iterdir()) == ["filler"]


def test_plot_names_a_metrics_line_without_a_step(tmp_path, run_here):
    write_run(tmp_path / "run", [0.3, 0.5])
    with (tmp_path / "run" / "metrics.jsonl").open("a") as file:
        file.write(json.dumps({"train_loss": 0.4, "cosine_spearman": 0.6}) + "\n")
    result = run_here(REPO_ROOT / "evaluation" / "plot_metrics.py", tmp_path / "run")
    assert_one_line_error(result, "metrics.jsonl, line 3: no 'step'")


def test_a_nan_in_the_middle_of_a_run_is_a_gap_not_a_bridge(tmp_path, monkeypatch):
    matplotlib_axes = pytest.importorskip("matplotlib.axes")
    lines = [
        {"step": 0, "train_loss": None, "cosine_spearman": 0.3},
        {"step": 10, "train_loss": 0.9, "cosine_spearman": 0.5},
        {"step": 20, "train_loss": math.nan, "cosine_spearman": math.inf},
        {"step": 30, "train_loss": 0.7, "cosine_spearman": 0.6},
    ]
    steps, losses = curve(lines, "train_loss")
    assert steps == [10, 20, 30] and losses[0] == 0.9 and math.isnan(losses[1]) and losses[2] == 0.7
    assert math.isnan(curve(lines, "cosine_spearman")[1][2])

    drawn = []
    original_plot = matplotlib_axes.Axes.plot

    def recording_plot(axis, *args, **kwargs):
        drawn.append(args)
        return original_plot(axis, *args, **kwargs)

    monkeypatch.setattr(matplotlib_axes.Axes, "plot", recording_plot)
    plot_runs({"run": lines}, tmp_path / "curves.png")
    lines_drawn = [(list(x), list(y)) for x, y, *_ in drawn if len(x) > 1]
    # Both curves keep step 20, as NaN: matplotlib breaks the line there instead of joining 10 to 30.
    assert len(lines_drawn) == 2
    for x, y in lines_drawn:
        assert 20 in x and math.isnan(y[x.index(20)])
        assert all(math.isfinite(value) for step, value in zip(x, y) if step != 20)
    markers = [(list(x), a) for x, y, *a in drawn if a == ["rx"]]
    assert markers == [([20], ["rx"]), ([20], ["rx"])]


def test_the_plot_names_the_selection_metric_stars_the_best_step_and_names_each_datasets_loss(tmp_path, monkeypatch):
    """It titled every run "cosine Spearman or nDCG@10", marked no best step and drew a mixture's loss as one."""
    matplotlib_axes = pytest.importorskip("matplotlib.axes")
    by_file = lambda a, b: {"/data/kornli_triplets.tsv": a, "/data/sts-train.tsv": b}  # noqa: E731
    lines = [
        {"step": 0, "train_loss": None, "ndcg@10": 0.30, "selection_metric": "ndcg@10"},
        {"step": 10, "train_loss": 0.9, "train_loss_by_dataset": by_file(1.0, 0.8), "ndcg@10": 0.52},
        {"step": 20, "train_loss": 0.7, "train_loss_by_dataset": by_file(0.8, 0.6), "ndcg@10": 0.50},
        {"step": 30, "train_loss": 0.6, "train_loss_by_dataset": by_file(0.7, None), "ndcg@10": 0.52},
    ]
    drawn, titles = [], []
    original_plot, original_set = matplotlib_axes.Axes.plot, matplotlib_axes.Axes.set

    def recording_plot(axis, *args, **kwargs):
        drawn.append((args, kwargs.get("label")))
        return original_plot(axis, *args, **kwargs)

    def recording_set(axis, **kwargs):
        titles.append(kwargs.get("title"))
        return original_set(axis, **kwargs)

    monkeypatch.setattr(matplotlib_axes.Axes, "plot", recording_plot)
    monkeypatch.setattr(matplotlib_axes.Axes, "set", recording_set)
    plot_runs({"run": lines}, tmp_path / "curves.png")
    curves = {label: (list(args[0]), list(args[1])) for args, label in drawn if label}
    assert curves["run: kornli_triplets.tsv"] == ([10, 20, 30], [1.0, 0.8, 0.7])
    assert curves["run: sts-train.tsv"] == ([10, 20], [0.8, 0.6])
    assert curves["run"] == ([0, 10, 20, 30], [0.30, 0.52, 0.50, 0.52])
    stars = [args[:2] for args, _ in drawn if "*" in args]
    assert stars == [([10], [0.52])]  # the first of the highest: the step the run kept
    assert any("dev ndcg@10" in (title or "") for title in titles)


def test_plot_without_matplotlib_says_what_to_install(tmp_path):
    write_run(tmp_path / "run", [0.3, 0.5])
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('no matplotlib here')\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluation" / "plot_metrics.py"), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(blocker), "PATH": ""},
    )
    assert result.returncode == 1 and "pip install matplotlib" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_run_seeds_script(tmp_path, demo_data, demo_bert):
    data = demo_data
    output = tmp_path / "seeds"
    result = run_script(
        REPO_ROOT / "train" / "run_seeds.sh",
        "3",
        "4",
        "--",
        "--model",
        demo_bert,
        "--train_data",
        data / "train.tsv",
        "--valid_data",
        data / "dev.tsv",
        f"--output_path={output}",
        "--batch_size",
        8,
        "--max_steps",
        2,
        "--max_length",
        24,
        env={"EVAL_DATA": str(data / "test.tsv")},
    )
    for seed in (3, 4):
        args = json.loads((output / f"seed-{seed}" / "train_args.json").read_text())["args"]
        assert args["seed"] == seed and args["output_path"] == str(output / f"seed-{seed}")
    summary = json.loads((output / "summary.json").read_text())
    assert summary["runs"] == ["seed-3", "seed-4"] and list(summary["datasets"]) == [str(data / "test.tsv")]
    assert "± " in result.stdout

    bad = run_script(REPO_ROOT / "train" / "run_seeds.sh", "3", "--", "--train_data", "x.tsv", check=False)
    assert bad.returncode == 2 and "--output_path is required" in bad.stderr
