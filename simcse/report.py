"""Reports over runs: mean and standard deviation over seeds, and training curves."""

from __future__ import annotations

import io
import math
import os
import statistics
from pathlib import Path

from simcse.evaluate import METRIC_KEYS, SELECTION_METRIC, TABLE_COLUMNS
from simcse.run_folder import EVAL_RESULTS_NAME, METRICS_NAME, best_line, read_metrics, write_together
from simcse.tasks import read_eval_report, task_selecting_by

BEST_DEV = "dev (best step)"


def find_runs(output: str | os.PathLike) -> dict[str, Path]:
    """Run folders under ``output``: itself when it holds a metrics.jsonl, else its sub-folders that do."""
    output = Path(output)
    if (output / METRICS_NAME).is_file():
        return {output.name: output}
    runs = {path.parent.name: path.parent for path in sorted(output.glob(f"*/{METRICS_NAME}"))}
    if not runs:
        raise FileNotFoundError(f"{output}: no {METRICS_NAME} in it or in its sub-folders")
    return runs


def run_results(folder: Path) -> dict[str, dict[str, float]]:
    """A run's results per dataset: eval.py's eval_results.json when there is one, else the dev metrics of
    the best step in metrics.jsonl."""
    report = read_eval_report(folder / EVAL_RESULTS_NAME)
    if report is not None:
        return report["results"]
    selected_by = {line.get("selection_metric", SELECTION_METRIC) for line in read_metrics(folder / METRICS_NAME)}
    if selected_by - {SELECTION_METRIC}:
        raise ValueError(
            f"{folder / METRICS_NAME}: the run was selected on a "
            f"{' or '.join(sorted(task_selecting_by(metric).name for metric in selected_by))} set "
            f"({', '.join(sorted(selected_by))}), and summaries are of STS results: run eval.py --output_json "
            f"{folder / EVAL_RESULTS_NAME} on STS sets"
        )
    lines = read_metrics(folder / METRICS_NAME, required=(SELECTION_METRIC, *METRIC_KEYS))
    best = best_line(lines, SELECTION_METRIC)
    if best is None:
        raise ValueError(f"{folder / METRICS_NAME}: no evaluation with a finite {SELECTION_METRIC}")
    return {BEST_DEV: {key: best[key] for key in METRIC_KEYS}}


def summarize(output: str | os.PathLike) -> dict:
    """Mean, sample standard deviation and the values over the runs (seeds) under ``output``, per dataset
    and metric. Datasets missing from some run are left out."""
    runs = find_runs(output)
    results = {name: run_results(folder) for name, folder in runs.items()}
    datasets = [name for name in next(iter(results.values())) if all(name in r for r in results.values())]
    if not datasets:
        held = "; ".join(f"{run}: {', '.join(r) or 'none'}" for run, r in results.items())
        raise ValueError(f"{output}: the runs share no dataset to summarize ({held}); evaluate each on the same sets")
    summary = {"runs": list(runs), "datasets": {}}
    for dataset in datasets:
        summary["datasets"][dataset] = {}
        for key in METRIC_KEYS:
            values = [results[run][dataset][key] for run in runs]
            summary["datasets"][dataset][key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
    return summary


def format_summary_table(summary: dict) -> str:
    """The README's table, one row per dataset, each cell mean ± std (x100) over the runs."""
    header = "| Dataset | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |"
    lines = [
        f"{len(summary['runs'])} runs: {', '.join(summary['runs'])}",
        "",
        header,
        "|:---|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for dataset, metrics in summary["datasets"].items():
        cells = [f"{100 * metrics[key]['mean']:.2f} ± {100 * metrics[key]['std']:.2f}" for _, key in TABLE_COLUMNS]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def non_finite_points(lines: list[dict], keys: tuple[str, ...] = ("train_loss", SELECTION_METRIC)) -> list[str]:
    """'step S: key' for every NaN or infinite value among ``keys`` (a missing train_loss, as at step 0, is fine)."""
    return [
        f"step {line['step']}: {key} is {line[key]}"
        for line in lines
        for key in keys
        if isinstance(line.get(key), float) and not math.isfinite(line[key])
    ]


def curve(lines: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of ``key`` where it was recorded, every non-finite value as NaN: matplotlib leaves a
    gap at a NaN, where an infinity would be drawn as a line off the chart."""
    points = [(line["step"], line[key]) for line in lines if line.get(key) is not None]
    return [step for step, _ in points], [value if math.isfinite(value) else math.nan for _, value in points]


def loss_curves(lines: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """The training loss against steps, or with several datasets each one's, named by its file."""
    datasets = next((line["train_loss_by_dataset"] for line in lines if "train_loss_by_dataset" in line), None)
    if not datasets:
        return {"": curve(lines, "train_loss")}
    rows = [{"step": line["step"], **line.get("train_loss_by_dataset", {})} for line in lines]
    return {os.path.basename(label): curve(rows, label) for label in datasets}


def _draw(axis, steps: list[int], values: list[float], label: str) -> None:
    """One curve; a NaN stays a gap in it, marked with a red x at the bottom of the chart."""
    axis.plot(steps, values, marker="o", markersize=3, label=label)
    broken = [step for step, value in zip(steps, values) if math.isnan(value)]
    if broken:
        axis.plot(broken, [0.0] * len(broken), "rx", markersize=9, transform=axis.get_xaxis_transform())


def plot_runs(runs: dict[str, list[dict]], path: str | os.PathLike, flag: str = "--output_png") -> None:
    """Training loss (each dataset's, by file, for a mixture) and the dev score each run selects its checkpoint by
    against steps, one line per run, the best step starred, into a PNG written whole or not at all (a full disk
    names ``flag``). A NaN or infinity stays a gap in its line (never bridged by a straight segment)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4))
    metrics = set()
    for name, lines in runs.items():
        for dataset, (steps, values) in loss_curves(lines).items():
            if steps:
                _draw(loss_axis, steps, values, f"{name}: {dataset}" if dataset else name)
        metrics.add(metric := lines[0].get("selection_metric", SELECTION_METRIC) if lines else SELECTION_METRIC)
        steps, values = curve(lines, metric)
        if steps:
            _draw(score_axis, steps, values, name)
        if best := best_line(lines, metric):
            score_axis.plot([best["step"]], [best[metric]], "*", markersize=14, color="gold", markeredgecolor="black")
    shown = " / ".join(sorted(metrics))
    loss_axis.set(title="training loss (mean since the previous evaluation)", xlabel="step", ylabel="loss")
    score_axis.set(title=f"dev {shown}, which selects the checkpoint (star: the best)", xlabel="step", ylabel=shown)
    for axis in (loss_axis, score_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    plt.close(figure)
    write_together({Path(path): png.getvalue()}, flag)
