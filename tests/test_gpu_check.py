"""benchmarks/gpu_check.sh, the parts that need no GPU: its arguments, and the results file it writes (a smoke run
on the CPU, and a run whose GPU parts fail on a machine without one)."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.sh"
PARTS = ("machine", "cuda_tests", "gpu_step", "grad_cache_memory")


def gpu_check(*args) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)


def test_help_names_every_flag():
    result = gpu_check("--help")
    assert result.returncode == 0
    for flag in ("--out DIR", "--device cuda|cpu", "--smoke"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "2"], "unknown argument '--gpus'"),
        (["--device", "tpu"], "--device takes cuda or cpu"),
        (["--out"], "--out needs a folder"),
        (["--out", ""], "--out needs a folder"),
    ],
)
def test_bad_arguments_stop_before_anything_runs(args, message, tmp_path):
    result = gpu_check(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "usage:" in result.stderr
    assert result.stdout == ""


def read_results(folder):
    text = (folder / "gpu_check.md").read_text()
    summary = text.split("## Summary", 1)[1]
    status = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary.splitlines()[4:] if line}
    return text, status


@pytest.mark.slow
def test_a_smoke_run_writes_every_part_into_one_results_file(tmp_path):
    out = tmp_path / "nested" / "gpu-check"
    result = gpu_check("--smoke", "--device", "cpu", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"results: {out / 'gpu_check.md'}" in result.stdout
    text, status = read_results(out)
    assert status == dict.fromkeys(PARTS, "ok")
    assert sorted(p.name for p in out.iterdir()) == sorted(["gpu_check.md", *(f"{p}.log" for p in PARTS)])
    assert f"| torch {torch.__version__} |" in text
    assert "| unpadded, varlen attention |" in text and "unpadded, varlen attention / padded:" in text
    assert "| 8 | 4 |" in text  # the GradCache row of the memory table
    assert "skipped" in text if not torch.cuda.is_available() else "passed" in text


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failures of the GPU parts on a machine without one")
def test_failing_parts_are_recorded_and_the_others_still_run(tmp_path):
    result = gpu_check("--smoke", "--device", "cuda", "--out", tmp_path)
    assert result.returncode == 1
    text, status = read_results(tmp_path)
    assert status == {"machine": "ok", "cuda_tests": "ok", "gpu_step": "FAILED", "grad_cache_memory": "FAILED"}
    # A failed part's section ends with its log's last lines: the error that stopped it.
    section = text.split("## gpu_step (FAILED, exit 1", 1)[1].split("## ", 1)[0]
    assert "Error" in section and "Traceback" in section
