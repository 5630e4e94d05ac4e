"""Evaluate a sentence encoder on STS and retrieval sets: ``python evaluation/eval.py --help`` (the same as
``simcse-eval --help`` once the package is installed). The command lives in ``simcse/eval_cli.py``."""

from simcse.eval_cli import eval_command

if __name__ == "__main__":
    eval_command()
