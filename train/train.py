"""Train a SimCSE sentence encoder: ``python train/train.py --help`` (the same as ``simcse-train --help`` once the
package is installed). The command lives in ``simcse/cli.py``; the loop in ``simcse/trainer.py``."""

from simcse.cli import train_command

if __name__ == "__main__":
    train_command()
