import re
import subprocess
import sys

import tomllib
from conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
IMPORT_NAMES = {"scikit-learn": "sklearn"}


def readme_test_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Tests", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def requirement_names(lines: list[str]) -> list[str]:
    return [re.match(r"[A-Za-z0-9_.-]+", line).group(0) for line in lines]


def test_ci_runs_the_readme_test_command_then_the_slow_tests_and_the_linter():
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = readme_test_command()
    assert command in ci_lines
    torch = ci_lines.index("pip install --quiet torch==2.13.0")
    requirements = ci_lines.index("pip install --quiet -r requirements.txt -r requirements-dev.txt")
    assert torch < requirements < ci_lines.index(command)
    assert f"{command} -m slow" in ci_lines
    assert "ruff check ." in ci_lines and "ruff format --check ." in ci_lines


def test_requirements_are_the_package_dependencies_then_the_package_itself():
    lines = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert lines[-1] == "-e ."
    assert requirement_names(lines[:-1]) == requirement_names(PYPROJECT["project"]["dependencies"])


def test_every_dependency_is_imported_by_the_package():
    """A dependency nothing imports is weight every user installs for nothing."""
    source = "\n".join(path.read_text(encoding="utf-8") for path in (REPO_ROOT / "simcse").glob("*.py"))
    for name in requirement_names(PYPROJECT["project"]["dependencies"]):
        module = IMPORT_NAMES.get(name, name)
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), name


def test_package_imports_from_anywhere(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import simcse, simcse.data, simcse.model, simcse.loss, simcse.evaluate; print(simcse.__file__)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(REPO_ROOT / "simcse" / "__init__.py")


def test_every_console_command_names_a_function_of_the_package():
    import importlib

    commands = PYPROJECT["project"]["scripts"]
    assert set(commands) == {"simcse-train", "simcse-eval", "simcse-prepare"}
    for target in commands.values():
        module, function = target.split(":")
        assert module.startswith("simcse.") and callable(getattr(importlib.import_module(module), function))
