"""Every script answers --help: the shell scripts print their header comment and exit 0 without running
anything, the Python scripts give every option a help text, and no usage example in a docstring loses its line
continuation."""

import argparse
import ast
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SCRIPT_FOLDERS = ("train", "data", "evaluation", "benchmarks")
SOURCED_ONLY = {"help.sh", "download.sh"}  # sourced by the others, never run
SHELL_SCRIPTS = sorted(p for d in SCRIPT_FOLDERS for p in (REPO_ROOT / d).glob("*.sh") if p.name not in SOURCED_ONLY)
PYTHON_SCRIPTS = sorted(p for d in SCRIPT_FOLDERS for p in (REPO_ROOT / d).glob("*.py") if p.name != "common.py")
USER_SCRIPTS = [p for p in PYTHON_SCRIPTS if p.parent.name != "benchmarks"]  # benchmarks import from their folder


def header_comment(script: Path) -> str:
    """The comment lines after the shebang, up to the first line of code, without their "# "."""
    lines = []
    for line in script.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_shell_scripts_answer_help_without_running_anything(script, flag, tmp_path):
    """Every command a script could run is replaced by one that leaves a mark: --help must run none of them."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for command in ("python", "python3", "torchrun", "curl", "pip"):
        (fake_bin / command).write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{command}\n")
        (fake_bin / command).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(["bash", str(script), "42", flag], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == header_comment(script) and len(result.stdout.splitlines()) >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # nothing ran, nothing was written


def test_download_scripts_refuse_arguments(tmp_path):
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "data" / "download_korsts.sh"), "data/korsts"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 2 and result.stderr.startswith("error: download_korsts.sh takes no arguments")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", USER_SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_python_scripts_give_every_option_a_help_text(script, run_here, monkeypatch):
    parsers = []

    def capture(parser, *args, **kwargs):
        parsers.append(parser)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    assert run_here(script).returncode == 0
    (parser,) = parsers
    assert parser.description, script
    undocumented = [action.dest for action in parser._actions if not action.help]
    assert not undocumented, f"{script.name}: options without help: {undocumented}"


@pytest.mark.parametrize("script", PYTHON_SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_usage_examples_keep_their_line_continuations(script):
    """A backslash at a line's end in a non-raw docstring joins the lines: --help would show one broken line."""
    source = script.read_text(encoding="utf-8")
    docstring = ast.parse(source).body[0]
    if not isinstance(docstring, ast.Expr) or not isinstance(docstring.value, ast.Constant):
        pytest.skip("no module docstring")
    written = ast.get_source_segment(source, docstring.value)
    assert written.count("\\\n") == docstring.value.value.count("\\\n"), f'{script.name}: make the docstring r"""'
