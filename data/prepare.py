"""Build the token stores of training files ahead of training: ``python data/prepare.py --model M --train_data F
[train.py's flags]`` (the same as ``simcse-prepare`` once the package is installed). The command lives in
``simcse/cli.py``; the store in ``simcse/token_store.py``."""

from simcse.cli import prepare_command

if __name__ == "__main__":
    prepare_command()
