"""Progress where stderr is a log (a file or a pipe, as under a job scheduler): a plain line every 5% of the work,
never tqdm's redrawn bar, which is one endless line of carriage returns there (eval.py and mining printed nothing
at all for minutes)."""

import re

import pytest
from conftest import TRAIN_SCRIPT

from simcse.model import SimCSEModel
from simcse.progress import LINE_EVERY, LineProgress, progress_bar


@pytest.mark.parametrize("total, step", [(400, 4), (37, 1), (1000, 7)])
def test_a_log_gets_a_line_every_few_percent_and_at_the_end(capsys, total, step):
    with progress_bar(total=total, desc="work", unit="item") as bar:  # pytest's stderr is no terminal
        assert isinstance(bar, LineProgress)
        for _ in range(0, total, step):
            bar.update(min(step, total - bar.n))
    err = capsys.readouterr().err
    assert "\r" not in err
    done = [int(re.search(r"\| *(\d+)/", line).group(1)) for line in err.splitlines() if line.startswith("work")]
    # Naively: the first count at or past each multiple of the 5% step, and the end.
    every = max(1, int(LINE_EVERY * total))
    counts = list(range(0, total, step)) + [total]
    expected = sorted({next(c for c in counts if c >= mark) for mark in range(0, total + 1, every)} | {total})
    assert sorted(set(done)) == expected and done == sorted(done)


def test_encode_reports_its_progress_to_a_log(tiny_bert_dir, capsys):
    model = SimCSEModel(tiny_bert_dir)
    model.encode(["한 남자가 기타를 친다."] * 600, batch_size=8, description="probe")  # shown from 512 sentences
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("probe")]
    assert len(lines) >= 1 / LINE_EVERY and "600/600" in lines[-1]


def test_a_training_run_logged_to_a_file_has_no_redrawn_bar(demo_train_flags, run_here, tmp_path):
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "run", eval_steps=4))  # 8 steps
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr + result.stdout
    status = [line for line in result.stderr.splitlines() if line.startswith("training:")]
    assert "8/8" in status[-1] and len(status) >= 8  # every step: 5% of 8 steps is less than one
    assert result.stdout.count("step 4 (epoch") == 1  # the dev evaluations' lines, between them
