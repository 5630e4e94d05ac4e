"""Mean ± standard deviation over the seeds of a multi-seed run (train/run_seeds.sh).

    python evaluation/summarize.py outputs/sup-simcse-bert-base-seeds

Reads each OUTPUT/seed-N/: its eval_results.json (eval.py) when present, else the dev metrics of its best
step in metrics.jsonl. Prints the README's table with mean ± std (sample standard deviation, x100) per cell
and writes every number to OUTPUT/summary.json.
"""

import argparse
from pathlib import Path

from simcse.cli import refuse_empty_paths, run_main
from simcse.report import format_summary_table, summarize
from simcse.run_folder import SUMMARY_NAME, json_text, write_together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="folder holding one sub-folder per seed")
    parser.add_argument("--json", default=None, help=f"where to write the summary (default: OUTPUT/{SUMMARY_NAME})")
    args = parser.parse_args()
    refuse_empty_paths(args, "output", "json")
    summary = summarize(args.output)
    print(format_summary_table(summary))
    path = Path(args.json or Path(args.output) / SUMMARY_NAME)
    write_together({path: json_text(summary)}, "--json")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    run_main(main)
