import re
import subprocess
import sys

from conftest import REPO_ROOT


def readme_test_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Tests", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = readme_test_command()
    assert command in ci_lines
    assert ci_lines.index("pip install --quiet torch==2.13.0") < ci_lines.index(
        "pip install --quiet -r requirements.txt -r requirements-dev.txt"
    ) < ci_lines.index(command)


def test_requirements_end_with_the_package_itself():
    lines = [l for l in (REPO_ROOT / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert lines[-1] == "-e ."
    for package in ("torch", "transformers", "numpy", "scipy", "scikit-learn", "pandas", "tqdm"):
        assert any(re.match(rf"{package}\b", line) for line in lines), package


def test_package_imports_from_anywhere(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import simcse, simcse.data, simcse.model, simcse.loss, simcse.evaluate; print(simcse.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == str(REPO_ROOT / "simcse" / "__init__.py")
