"""A plain ``pip install .`` (no checkout beside the package): the console commands work, and dataset names
never resolve inside site-packages."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from simcse.data import load_sts
from simcse.evaluate import evaluate_sts
from simcse.model import SimCSEModel


@pytest.mark.slow
def test_a_plain_install_gives_commands_that_read_data_from_the_current_folder(tmp_path, demo_data, demo_bert):
    source, site = tmp_path / "source", tmp_path / "site"  # built from a copy: setuptools writes build/ beside it
    shutil.copytree(REPO_ROOT / "simcse", source / "simcse", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*install, "--target", str(site), str(source)], check=True, capture_output=True)
    work = tmp_path / "work"
    (work / "data" / "korsts").mkdir(parents=True)
    shutil.copy(demo_data / "dev.tsv", work / "data" / "korsts" / "sts-dev.tsv")
    env = {key: value for key, value in os.environ.items() if key != "SIMCSE_KO_DATA_DIR"}
    env |= {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}

    def run(*command, **extra_env):
        return subprocess.run(command, cwd=work, capture_output=True, text=True, env=env | extra_env)

    where = run(sys.executable, "-c", "import simcse.registry as r; print(r.__file__); print(r.default_data_dir())")
    module, data_dir = where.stdout.split()
    assert module.startswith(str(site)) and data_dir == "data"  # the installed copy, and ./data

    for command, usage in (("simcse-train", "--train_data"), ("simcse-eval", "--test_data")):
        result = run(str(site / "bin" / command), "--help")
        assert result.returncode == 0 and f"usage: {command}" in result.stdout and usage in result.stdout

    result = run(str(site / "bin" / "simcse-eval"), "--model", str(demo_bert), "--test_data", "korsts_dev",
                 "--output_json", "results.json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (measured,) = json.loads((work / "results.json").read_text())["results"].values()
    expected = evaluate_sts(SimCSEModel(demo_bert), load_sts(demo_data / "dev.tsv"))
    assert measured["cosine_spearman"] == pytest.approx(expected["cosine_spearman"], abs=1e-6)

    elsewhere = run(str(site / "bin" / "simcse-eval"), "--model", str(demo_bert), "--test_data", "korsts_dev",
                    SIMCSE_KO_DATA_DIR=str(tmp_path / "other"))  # fmt: skip
    assert elsewhere.returncode == 1 and str(tmp_path / "other" / "korsts" / "sts-dev.tsv") in elsewhere.stderr
    # The download scripts are not installed: the line says they come with a checkout, and where data is looked for.
    assert "come with a source checkout" in elsewhere.stderr and "$SIMCSE_KO_DATA_DIR" in elsewhere.stderr
    assert "run `bash data/download_korsts.sh`" not in elsewhere.stderr
