"""Training curves from metrics.jsonl: the training loss (each dataset's, named by its file, for a mixture) and the
dev score the run selects its checkpoint by (cosine Spearman, nDCG@10, ...; the best step starred) against steps.

    python evaluation/plot_metrics.py outputs/demo/model                   # one run
    python evaluation/plot_metrics.py outputs/sup-simcse-bert-base-seeds   # every seed-N/ in it

Writes OUTPUT/curves.png (or --output_png). Needs matplotlib (pip install matplotlib). A NaN or infinity is
reported here and shown as a gap marked with a red x, never drawn over.
"""

import argparse
from pathlib import Path

from simcse.cli import refuse_empty_paths, run_main
from simcse.report import find_runs, non_finite_points, plot_runs
from simcse.run_folder import CURVES_NAME, METRICS_NAME, read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="a run folder, or a folder of run folders")
    parser.add_argument("--output_png", default=None, help=f"default: OUTPUT/{CURVES_NAME}")
    args = parser.parse_args()
    refuse_empty_paths(args, "output", "output_png")
    runs = {name: read_metrics(folder / METRICS_NAME, ("step",)) for name, folder in find_runs(args.output).items()}
    for name, lines in runs.items():
        for problem in non_finite_points(lines):
            print(f"warning: run {name}: {problem}")
    path = Path(args.output_png or Path(args.output) / CURVES_NAME)
    plot_runs(runs, path)
    print(f"wrote {path} ({len(runs)} run(s))")


if __name__ == "__main__":
    run_main(main)
