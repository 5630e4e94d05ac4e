"""The package's shape rules: small modules, short functions, no import cycle, and the trainer and train.py kept
thin. A change that breaks one fixes the structure in the same change."""

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "simcse"
MODULE_LINES, FUNCTION_LINES, TRAINER_INIT_LINES, TRAIN_SCRIPT_CODE_LINES = 450, 60, 40, 40
MODULES = sorted(PACKAGE.glob("*.py"))


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def module_imports(path: Path) -> set[str]:
    """The simcse modules a module imports when it is imported (not those imported inside a function)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "simcse":
            names = [f"simcse.{alias.name}" for alias in node.names] if node.module == "simcse" else [node.module]
            found |= {name for name in names if (PACKAGE / f"{name.split('.')[1]}.py").is_file()}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("simcse.")}
    return found


@pytest.mark.parametrize("path", MODULES, ids=[path.name for path in MODULES])
def test_modules_and_functions_stay_small(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MODULE_LINES
    for function in functions(path):
        assert function.end_lineno - function.lineno + 1 <= FUNCTION_LINES, function.name


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports that comes back to where it started, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            if cycle := visit(imported, path + [module]):
                return cycle
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module, []))), None)


def test_no_import_cycle():
    graph = {f"simcse.{path.stem}": module_imports(path) for path in MODULES if path.stem != "__init__"}
    assert graph["simcse.trainer"] >= {"simcse.objectives", "simcse.run_setup"}  # the graph is read
    assert find_cycle(graph) is None


def test_the_cycle_check_finds_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from simcse.data import TrainData\nimport simcse.batching\n")
    assert module_imports(tmp_path / "a.py") == {"simcse.data", "simcse.batching"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_trainer_and_train_py_stay_thin():
    trainer = next(
        node
        for node in functions(PACKAGE / "trainer.py")
        if node.name == "__init__" and node.args.args[1].arg == "config"
    )
    assert trainer.end_lineno - trainer.lineno + 1 < TRAINER_INIT_LINES
    script = (REPO_ROOT / "train" / "train.py").read_text(encoding="utf-8")
    body = ast.parse(script).body
    docstring_lines = body[0].end_lineno if isinstance(body[0], ast.Expr) else 0
    code = [line for line in script.splitlines()[docstring_lines:] if line.strip() and not line.strip().startswith("#")]
    assert len(code) < TRAIN_SCRIPT_CODE_LINES


def test_the_settings_reach_few_modules_and_no_module_reads_a_trainer():
    """Functions below the trainer take records (what they use), not the whole TrainConfig or the Trainer."""
    mentioning = [path.name for path in MODULES if "TrainConfig" in path.read_text(encoding="utf-8")]
    assert len(mentioning) <= 6, mentioning
    assert [path.name for path in MODULES if re.search(r"\bTrainer\b", path.read_text(encoding="utf-8"))] == [
        "trainer.py"
    ]
    assert "simcse.run_setup" not in module_imports(PACKAGE / "loop_state.py")
