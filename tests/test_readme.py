"""The README is true line by line where a test can tell: its lists of encoders, poolers and data kinds are the
package's tables, its examples of training files are read as the kinds they stand for, its Python example runs,
and every time it states says on what machine state it was measured."""

import re
import shlex

import pytest
from conftest import DOC_FILES, REPO_ROOT, doc_section
from transformers import AutoModel

from simcse.families import DECODER_NAMES, ENCODER_NAMES
from simcse.model import SimCSEModel
from simcse.poolers import POOLERS
from simcse.random_encoder import ARCHITECTURES, DECODER_ARCHITECTURES, build_random_encoder
from simcse.run_folder import METRICS_NAME, read_metrics
from simcse.train_data import DATA_KINDS, load_train_data
from simcse.unpad import UNPADDED_MODEL_TYPES

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
# The README and every page of docs/: the lists, tables and times below are checked wherever they are written.
DOCS = "\n".join(path.read_text(encoding="utf-8") for path in DOC_FILES)
section = doc_section


def encoder_lists(names=ENCODER_NAMES) -> list[list[str]]:
    """Every run of two or more of ``names`` in the README ("BERT, RoBERTa and XLM-R"), as written."""
    name = "|".join(re.escape(n) for n in sorted(names.values(), key=len, reverse=True))
    run = rf"(?<![\w-])(?:{name})(?![\w-])(?:(?:,\s+|\s+or\s+|\s+and\s+|,\s+and\s+|/)(?<![\w-])(?:{name})(?![\w-]))+"
    return [re.findall(rf"(?<![\w-])(?:{name})(?![\w-])", found) for found in re.findall(run, DOCS)]


def test_every_list_of_encoders_is_one_of_the_packages():
    """All the encoders, the unpadded ones, or the ones without a pooling layer (the head is the package's), each
    in the table's order: a new architecture cannot be left out of a sentence."""
    supported = list(ENCODER_NAMES.values())
    unpadded = [ENCODER_NAMES[model_type] for model_type in UNPADDED_MODEL_TYPES]
    no_pooler = [name for model_type, name in ENCODER_NAMES.items() if model_type not in UNPADDED_MODEL_TYPES]
    lists = encoder_lists()
    assert supported in lists and unpadded in lists and no_pooler in lists
    for listed in lists:
        assert listed in (supported, unpadded, no_pooler), listed
    assert set(ENCODER_NAMES) == set(ARCHITECTURES)  # the tests build every one


def test_every_list_of_decoders_is_the_packages():
    lists = encoder_lists(DECODER_NAMES)
    assert lists and all(listed == list(DECODER_NAMES.values()) for listed in lists), lists
    assert set(DECODER_NAMES) == set(DECODER_ARCHITECTURES)  # the tests build every one


def test_the_encoders_said_to_have_no_pooling_layer_have_none(tmp_path, korean_sentences):
    for model_type in ENCODER_NAMES:
        folder = build_random_encoder(tmp_path / model_type, korean_sentences, model_type=model_type, hidden_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)  # fmt: skip
        has_pooler = getattr(AutoModel.from_pretrained(folder), "pooler", None) is not None
        assert has_pooler == (model_type in UNPADDED_MODEL_TYPES), model_type


def test_the_embedding_table_has_a_row_for_every_pooler():
    rows = re.findall(r"^\| `([a-z_0-9]+)`[^|]* \|", section("Using a trained model"), re.M)
    assert list(dict.fromkeys(rows)) == list(POOLERS)


def own_data_examples() -> list[tuple[str, str, str]]:
    """(kind, file name, content) of each example in "Train on your own data"."""
    found = re.findall(r"^`([a-z_]+)`: [^`]*?(?:`[^`]*`[^`]*?)*?`([\w.]+)`:\n\n```text\n(.+?)```", section(
        "Training data, one file per kind"), re.M | re.S)  # fmt: skip
    return found


def test_train_on_your_own_data_shows_every_kind_with_a_file_read_as_that_kind(tmp_path):
    examples = own_data_examples()
    assert [kind for kind, _, _ in examples] == list(DATA_KINDS)
    for kind, name, content in examples:
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        data = load_train_data(path)
        examples_in_file = content.count("\n") - (kind in ("pairs", "triplets"))  # a header line
        assert data.kind == kind and len(data) == examples_in_file, (kind, len(data))


def test_the_python_example_trains_as_train_py(demo_settings, tmp_path):
    """The README's TrainConfig + train example, run on the demo's files instead of the Hub's model and KorNLI."""
    (code,) = re.findall(r"```python\n(.+?)```", section("Training from Python"), re.S)
    replacements = {
        '"klue/bert-base"': repr(str(demo_settings["model"])),
        '"data/kornli/kornli_triplets.tsv"': repr(str(demo_settings["train_data"])),
        '"korsts_dev"': repr(str(demo_settings["valid_data"])),
        '"outputs/sup-simcse-bert-base"': repr(str(tmp_path / "run")),
        "batch_size=256,": "batch_size=16, max_length=24, max_steps=2, eval_steps=1,",
    }
    for written, used in replacements.items():
        assert written in code, written
        code = code.replace(written, used)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    result, lines = scope["result"], read_metrics(tmp_path / "run" / METRICS_NAME)
    assert [line["step"] for line in lines] == [0, 1, 2] and result.steps == 2
    best = max(lines, key=lambda line: line["cosine_spearman"])
    assert result.best_step == best["step"] and result.best_score == pytest.approx(best["cosine_spearman"])
    assert scope["embeddings"].shape == (2, SimCSEModel(tmp_path / "run").config.hidden_size)


def test_every_stated_time_says_idle():
    """A measured time holds only on an idle machine: each sentence stating one says so."""
    prose = re.sub(r"```.*?```", "", DOCS, flags=re.S).replace("\n", " ")
    timed = [s for s in re.split(r"(?<=\.)\s", prose) if re.search(r"\d(?:[\d.,]*) ?(?:s|ms|min)\b", s)]
    assert timed
    for sentence in timed:
        assert "idle" in sentence, sentence


def test_the_eval_section_names_every_flag_of_eval_py():
    from simcse.eval_cli import build_parser

    flags = [a.option_strings[0] for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    text = section("evaluation/eval.py")
    assert [flag for flag in flags if f"`{flag}" not in text] == []


def test_the_readme_is_a_map_of_at_most_300_lines():
    assert len(README.splitlines()) <= 300


def test_the_first_screen_holds_a_cpu_quickstart_whose_commands_parse():
    """Within the first 40 lines, at most 15 lines of commands: e5-small on the user's own pairs, no --amp (CPU),
    every flag one that train.py and eval.py take."""
    from simcse.cli import parse_args
    from simcse.eval_cli import build_parser

    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", "\n".join(README.splitlines()[:40]), re.S).group(1)
    assert len(block.splitlines()) <= 15
    commands = [" ".join(c.split()) for c in block.replace("\\\n", " ").splitlines() if c.startswith("python ")]
    train_command, eval_command = commands
    config = parse_args(shlex.split(train_command)[2:])
    assert config.model == "intfloat/multilingual-e5-small" and config.pooler == "avg" and not config.amp
    assert config.prompt == "query: " and config.train_data == "pairs.tsv"
    build_parser().parse_args(shlex.split(eval_command)[2:])


def test_the_package_map_has_one_line_per_module():
    listed = re.findall(r"^\| `simcse/([a-z_0-9]+\.py)` \| [^|]+ \|$", section("The package"), re.M)
    assert sorted(listed) == sorted(path.name for path in (REPO_ROOT / "simcse").glob("*.py"))


def test_every_page_of_docs_is_linked_and_every_link_leads_somewhere():
    pages = sorted(path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "docs").glob("*.md"))
    assert pages and all(f"]({page})" in README for page in pages)
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), (path.name, target)


def test_the_task_table_in_docs_is_the_packages():
    from simcse.tasks import TASKS

    rows = re.findall(
        r"^\| `([a-z_]+)` \| .+? \| `([a-z_@0-9]+)` \| `([a-z_]+)` \|$", section("Evaluation tasks"), re.M
    )
    assert rows == [(task.name, task.selection_metric, task.report_key) for task in TASKS.values()]
