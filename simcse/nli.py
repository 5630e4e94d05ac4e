"""KorNLI (or any NLI TSV) -> supervised SimCSE triplets (anchor, entailment, contradiction as hard negative)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simcse.text_files import DataFormatError, drop_blank_lines, is_blank, quoted, read_lines, split_row
from simcse.train_data import TrainData

NLI_HEADER = ("sentence1", "sentence2", "gold_label")
NLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass
class TripletReport:
    """What ``nli_triplets`` read and why rows went unused."""

    rows: int = 0
    premises: int = 0
    triplets: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, rows: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + rows

    def __str__(self) -> str:
        lines = [f"rows read: {self.rows}", f"premises seen: {self.premises}", f"triplets written: {self.triplets}"]
        lines += [f"skipped, {reason}: {count}" for reason, count in sorted(self.skipped.items())]
        return "\n".join(lines)


def nli_triplets(paths: Sequence[str | os.PathLike]) -> tuple[TrainData, TripletReport]:
    """Supervised SimCSE triplets from NLI TSVs (header sentence1, sentence2, gold_label; KorNLI format).

    One triplet per premise that has both an entailment and a contradiction hypothesis: (premise,
    its first entailment, its first contradiction), premises in order of first appearance, sentences
    verbatim. Every row not used is counted by reason in the report.
    """
    report = TripletReport()
    hypotheses: dict[str, dict[str, str]] = {}  # premise -> label -> first hypothesis
    for path in map(Path, paths):
        lines = list(drop_blank_lines(path, read_lines(path)))
        if not lines or tuple(lines[0][1].split("\t")) != NLI_HEADER:
            raise DataFormatError(path, "line 1", "expected the header sentence1\tsentence2\tgold_label")
        for number, line in lines[1:]:
            premise, hypothesis, label = split_row(path, number, line, 3, ", ".join(NLI_HEADER))
            report.rows += 1
            if label not in NLI_LABELS:
                report.skip(f"gold_label {quoted(label)} (not an NLI label)")
            elif is_blank(premise) or is_blank(hypothesis):
                report.skip("empty or invisible sentence")
            elif label == "neutral":
                report.skip("neutral (not used)")
            else:
                by_label = hypotheses.setdefault(premise, {})
                if label in by_label:
                    report.skip(f"another {label} of a premise (the first is used)")
                else:
                    by_label[label] = hypothesis
    report.premises = len(hypotheses)
    columns: list[list[str]] = [[], [], []]
    for premise, by_label in hypotheses.items():
        if "entailment" in by_label and "contradiction" in by_label:
            for column, sentence in zip(columns, (premise, by_label["entailment"], by_label["contradiction"])):
                column.append(sentence)
        else:
            missing = "entailment" if "entailment" not in by_label else "contradiction"
            report.skip(f"premise without {missing} (its rows)", rows=len(by_label))
    report.triplets = len(columns[0])
    return TrainData(columns, ", ".join(map(str, paths)), kind="triplets"), report
