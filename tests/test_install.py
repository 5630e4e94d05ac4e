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

    for command, usage in (
        ("simcse-train", "--train_data"),
        ("simcse-eval", "--test_data"),
        ("simcse-prepare", "--train_data"),
    ):
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


@pytest.mark.slow
def test_a_hub_model_without_a_network_is_one_line_or_the_cached_copy(tmp_path, demo_data, demo_bert):
    """huggingface_hub retried for over a minute (15 lines) before a message that never suggested a local folder.
    The Hub here is a closed local port; the cache a folder of this test's."""
    cache = tmp_path / "cache"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env |= {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(cache)}
    command = [sys.executable, str(REPO_ROOT / "evaluation" / "eval.py"), "--test_data", str(demo_data / "dev.tsv")]
    missing = subprocess.run([*command, "--model", "someone/tiny-bert"], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and "Retrying" not in missing.stderr
    (error,) = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert "someone/tiny-bert: the Hub cannot be reached" in error and "not in the cache" in error
    assert "pass a local folder" in error and "HF_HUB_OFFLINE=1" in error
    # The same model in the cache, as huggingface_hub lays it out: loaded from there, offline, with a warning.
    snapshot = cache / "models--someone--tiny-bert" / "snapshots" / "0123456789abcdef"
    shutil.copytree(demo_bert, snapshot)
    (cache / "models--someone--tiny-bert" / "refs").mkdir()
    (cache / "models--someone--tiny-bert" / "refs" / "main").write_text("0123456789abcdef")
    cached = subprocess.run([*command, "--model", "someone/tiny-bert", "--output_json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert cached.returncode == 0, cached.stderr
    assert "working offline from the cached copy" in cached.stderr and "Retrying" not in cached.stderr
    (measured,) = json.loads((tmp_path / "r.json").read_text())["results"].values()
    expected = evaluate_sts(SimCSEModel(demo_bert), load_sts(demo_data / "dev.tsv"))
    assert measured["cosine_spearman"] == pytest.approx(expected["cosine_spearman"], abs=1e-6)
