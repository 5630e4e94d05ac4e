"""Bad input, as a new user meets it: one row per case, run through the scripts' entry points, each expected to end
with exit code 1 (2 for argparse) and one ``error:`` line naming what to fix, never a traceback."""

import gzip
import shutil
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EVAL_SCRIPT, REPO_ROOT, TINY_ENCODER, assert_one_line_error
from safetensors.torch import save_file
from transformers import AlbertConfig, AlbertModel, DistilBertConfig, DistilBertModel, GPT2Config, GPT2Model

from simcse.random_encoder import build_random_encoder
from simcse.trainer import train

TRAIN_SCRIPT = REPO_ROOT / "train" / "train.py"
NLI_SCRIPT = REPO_ROOT / "data" / "build_nli_triplets.py"

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street.",
    "Children are playing football in the park.",
    "She reads a book in the quiet library every evening.",
    "The train leaves the station at nine o'clock.",
    "Two people are talking about the weather outside.",
] * 20


@dataclass
class Case:
    id: str
    script: Path
    args: Callable  # Context -> list of command-line arguments
    fragments: tuple[str, ...]
    code: int = 1


class Context:
    """What a case builds its command line from: the demo run's flags, files written for the case, damaged
    copies of a finished run and of the demo model."""

    def __init__(self, tmp: Path, resources, demo_train_flags, demo_data):
        self.tmp, self.resources, self.flags, self.data = tmp, resources, demo_train_flags, demo_data

    def train(self, output: Path | None = None, **changes) -> list[str]:
        return self.flags(output or self.tmp / "out", **changes)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    def run_copy(self) -> Path:
        """A copy of a finished run (max_steps 4, checkpoints at steps 2 and 4)."""
        copy = self.tmp / "run"
        shutil.copytree(self.resources.run, copy)
        return copy

    def model_copy(self) -> Path:
        copy = self.tmp / "model"
        shutil.copytree(self.resources.bert, copy)
        return copy

    def dev(self, rows: list[tuple[str, str, float]]) -> Path:
        return self.write(
            "dev_case.tsv", "sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows)
        )


def beir_folder(c: Context, corpus_name: str, split: str = "test") -> Path:
    """A one-query retrieval set whose corpus file is named ``corpus_name`` (gzipped when it ends in .gz)."""
    folder = c.tmp / "beir"
    (folder / "qrels").mkdir(parents=True)
    corpus = '{"_id": "d1", "text": "문서 하나"}\n{"_id": "d2", "text": "문서 둘"}\n'.encode()
    (folder / corpus_name).write_bytes(gzip.compress(corpus) if corpus_name.endswith(".gz") else corpus)
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "질문"}\n', encoding="utf-8")
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def truncate(path: Path, keep: int = 100) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def damaged_model(c: Context, damage: Callable[[Path], object]) -> Path:
    folder = c.model_copy()
    damage(folder)
    return folder


def resumed(c: Context, damage: Callable[[Path], object] = lambda run: None, **changes) -> list[str]:
    run = c.run_copy()
    damage(run)
    return c.train(run, max_steps=4, save_steps=2, resume_from_checkpoint="latest", **changes)


def edit_in_place(path: Path) -> None:
    """The same number of rows, one sentence changed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("\t", " 바뀜\t", 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def train_file_copy(c: Context) -> Path:
    return Path(shutil.copy(c.data / "train.tsv", c.tmp / "train_copy.tsv"))


def resumed_after_editing_the_data(c: Context) -> list[str]:
    train_copy = train_file_copy(c)
    output = c.tmp / "edited"
    train(c.resources.config(output, train_data=str(train_copy), max_steps=2, save_steps=2))
    edit_in_place(train_copy)
    return c.train(output, train_data=train_copy, max_steps=2, save_steps=2, resume_from_checkpoint="latest")


def data_case(id: str, name: str, content: str | bytes, *fragments: str) -> Case:
    """A training file written for the case."""
    return Case(id, TRAIN_SCRIPT, lambda c: c.train(train_data=c.write(name, content)), fragments)


def nested_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


CASES = [
    # values that train nothing
    Case("temp-inf", TRAIN_SCRIPT, lambda c: c.train(temp="inf"), ("--temp must lie in",)),
    Case("temp-tiny", TRAIN_SCRIPT, lambda c: c.train(temp="1e-30"), ("--temp must lie in",)),
    Case("hard-negative-weight-nan", TRAIN_SCRIPT, lambda c: c.train(hard_negative_weight="nan"), ("finite",)),
    Case("learning-rate-inf", TRAIN_SCRIPT, lambda c: c.train(learning_rate="inf"), ("--learning_rate",)),
    Case("weight-decay-inf", TRAIN_SCRIPT, lambda c: c.train(weight_decay="inf"), ("--weight_decay",)),
    Case("batch-of-one", TRAIN_SCRIPT, lambda c: c.train(batch_size=1), ("--batch_size 1",)),
    Case(
        "bad-pooler",
        TRAIN_SCRIPT,
        lambda c: c.train(pooler="no such pooler!"),
        ("invalid choice: 'no such pooler!'",),
        code=2,
    ),
    Case("push-to-invalid-repo-id", TRAIN_SCRIPT, lambda c: c.train(push_to_hub="me/bad name"), ("repo id",)),
    Case("device-tpu", TRAIN_SCRIPT, lambda c: c.train(device="tpu"), ("--device tpu", "not a device")),
    Case(
        "max-length-beyond-positions",
        TRAIN_SCRIPT,
        lambda c: c.train(max_length=100_000),
        ("exceeds the 128 positions",),
    ),
    # the output folder
    Case("folder-holds-a-run", TRAIN_SCRIPT, lambda c: c.train(c.run_copy()), ("holds an earlier run",)),
    Case(
        "overwrite-a-folder-that-is-no-run",
        TRAIN_SCRIPT,
        lambda c: c.train(c.write("notes.txt", "x").parent, overwrite_output_path=True),
        ("not a run folder of this package",),
    ),
    Case(
        "resume-without-checkpoint",
        TRAIN_SCRIPT,
        lambda c: c.train(resume_from_checkpoint="latest"),
        ("no checkpoint-",),
    ),
    Case(
        "resume-from-a-non-checkpoint",
        TRAIN_SCRIPT,
        lambda c: c.train(resume_from_checkpoint=c.write("notes.txt", "x").parent / "outputs"),
        ("not a training checkpoint",),
    ),
    # training data
    Case(
        "train-file-missing",
        TRAIN_SCRIPT,
        lambda c: c.train(train_data=c.tmp / "none.tsv"),
        ("none.tsv", "no such file"),
    ),
    data_case(
        "row-with-missing-column",
        "t.tsv",
        "sent0\tsent1\thard_neg\n가\t나\t다\n가\t나\n",
        "t.tsv, line 3",
        "expected 3",
    ),
    data_case("empty-sentence", "t.tsv", "sent0\tsent1\n가\t나\n \t나\n", "line 3", "empty sentence"),
    data_case("zero-width-sentence", "t.tsv", "sent0\tsent1\n가\t나\n\u200b\u200d\t나\n", "line 3", "invisible"),
    data_case("control-character-line", "t.txt", "가나다\n\x07\x1b\n라마바\n", "t.txt, line 2", "invisible"),
    data_case("hangul-filler-line", "t.txt", "가나다\n\u3164\u3164\n라마바\n", "line 2", "invisible"),
    data_case("corpus-of-one-sentence-repeated", "t.txt", "같은 문장이다.\n" * 50, "every sentence is the same"),
    data_case(
        "corpus-that-tokenizes-to-one-sentence",
        "t.txt",
        "학생이 교실에서 수영을 하고 있다.\n학생이  교실에서 수영을 하고 있다.\n 학생이 교실에서 수영을 하고 있다. \n",
        "every sentence has the same token ids",
    ),
    data_case("one-example", "t.txt", "하나뿐인 문장\n", "1 training example"),
    data_case(
        "cr-only-line-endings", "cr.tsv", "sent0\tsent1\r" + "가나다\t라마바\r" * 2000, "cr.tsv, line 1", "characters)"
    ),
    data_case("not-utf8", "cp949.tsv", "sent0\tsent1\n가\t나\n".encode("cp949"), "cp949.tsv, line 2", "UTF-8"),
    data_case("tab-in-txt", "t.txt", "가\t나\n", "line 1", "a tab inside a sentence"),
    # the objective and its data
    Case(
        "scored-pairs-for-simcse",
        TRAIN_SCRIPT,
        lambda c: c.train(train_data=c.data / "dev.tsv"),
        ("dev.tsv, line 1", "train on it with --objective cosent"),
    ),
    Case(
        "triplets-for-cosent",
        TRAIN_SCRIPT,
        lambda c: c.train(objective="cosent"),
        ("train.tsv, line 1", "triplets without scores"),
    ),
    Case(
        "pairs-for-cosent",
        TRAIN_SCRIPT,
        lambda c: c.train(objective="cosent", train_data=c.data / "pairs.tsv"),
        ("pairs without scores",),
    ),
    Case(
        "cosent-scores-all-equal",
        TRAIN_SCRIPT,
        lambda c: c.train(objective="cosent", train_data=c.dev([("가", "나", 2.0), ("다", "라", 2.0)])),
        ("every gold score", "is 2"),
    ),
    Case(
        "cosent-dataset-not-downloaded",
        TRAIN_SCRIPT,
        lambda c: c.train(objective="cosent", train_data="korsts_train", data_dir=c.tmp),
        ("sts-train.tsv", "download_korsts.sh"),
    ),
    Case(
        "unknown-objective",
        TRAIN_SCRIPT,
        lambda c: c.train(objective="no such objective!"),
        ("invalid choice: 'no such objective!'",),
        code=2,
    ),
    # dev data
    Case(
        "dev-of-one-pair", TRAIN_SCRIPT, lambda c: c.train(valid_data=c.dev([("가", "나", 3.0)])), ("1 sentence pair",)
    ),
    Case(
        "dev-with-constant-scores",
        TRAIN_SCRIPT,
        lambda c: c.train(valid_data=c.dev([("가", "나", 3.0), ("다", "라", 3.0), ("마", "바", 3.0)])),
        ("dev_case.tsv", "every gold score", "is 3"),
    ),
    Case(
        "dev-score-out-of-range",
        TRAIN_SCRIPT,
        lambda c: c.train(valid_data=c.dev([("가", "나", 3.0), ("다", "라", 7.0)])),
        ("dev_case.tsv, line 3", "outside [0, 5]"),
    ),
    Case(
        "named-dev-set-not-downloaded",
        TRAIN_SCRIPT,
        lambda c: c.train(valid_data="korsts_dev", data_dir=c.tmp),
        ("sts-dev.tsv", "download_korsts.sh"),
    ),
    # the model and its tokenizer
    Case(
        "mistyped-relative-path",
        TRAIN_SCRIPT,
        lambda c: c.train(model="./no-such-model"),
        ("no-such-model: no such folder",),
    ),
    Case("mistyped-absolute-path", TRAIN_SCRIPT, lambda c: c.train(model=c.tmp / "a" / "b"), ("no such folder",)),
    Case("not-a-repo-id", TRAIN_SCRIPT, lambda c: c.train(model="bad name!!"), ("not a Hub repo id",)),
    Case("hub-unreachable", TRAIN_SCRIPT, lambda c: c.train(model="klue/bert-base"), ("klue/bert-base",)),
    Case("model-is-a-file", TRAIN_SCRIPT, lambda c: c.train(model=c.write("m.bin", "x")), ("not a model folder",)),
    Case("no-tokenizer-files", TRAIN_SCRIPT, lambda c: c.train(model=c.resources.no_tokenizer), ("only 5 tokens",)),
    Case(
        "tokenizer-larger-than-the-vocabulary",
        TRAIN_SCRIPT,
        lambda c: c.train(model=c.resources.bert, tokenizer=c.resources.larger_vocab),
        ("but the model embeds only",),
    ),
    Case(
        "tokenizer-of-another-language",
        TRAIN_SCRIPT,
        lambda c: c.train(model=c.resources.english),
        ("train.tsv", "sentences spread over the file", "[UNK]"),
    ),
    Case(
        "albert",
        TRAIN_SCRIPT,
        lambda c: c.train(model=c.resources.albert),
        ("not a model family this package supports: albert",),
    ),
    Case(
        "distilbert",
        TRAIN_SCRIPT,
        lambda c: c.train(model=c.resources.distilbert),
        ("not a model family this package supports: distilbert",),
    ),
    Case(
        "gpt2",
        TRAIN_SCRIPT,
        lambda c: c.train(model=c.resources.gpt2),
        ("not a model family this package supports: gpt2",),
    ),
    Case(
        "config-json-not-json",
        TRAIN_SCRIPT,
        lambda c: c.train(model=damaged_model(c, lambda m: (m / "config.json").write_text("{oops"))),
        ("config.json: not valid JSON",),
    ),
    Case(
        "config-json-nested-too-deeply",
        TRAIN_SCRIPT,
        lambda c: c.train(model=damaged_model(c, lambda m: (m / "config.json").write_text(nested_json()))),
        ("config.json: nested too deeply",),
    ),
    Case(
        "truncated-weights",
        TRAIN_SCRIPT,
        lambda c: c.train(model=damaged_model(c, lambda m: truncate(m / "model.safetensors"))),
        ("model.safetensors: truncated",),
    ),
    # resuming
    Case(
        "damaged-latest-checkpoint",
        TRAIN_SCRIPT,
        lambda c: resumed(c, lambda run: truncate(run / "checkpoint-4" / "model.safetensors")),
        ("checkpoint-4/model.safetensors: truncated", "--resume_from_checkpoint", "checkpoint-2"),
    ),
    Case(
        "damaged-training-state",
        TRAIN_SCRIPT,
        lambda c: resumed(c, lambda run: truncate(run / "checkpoint-4" / "training_state.pt")),
        ("training_state.pt: truncated", "checkpoint-2"),
    ),
    Case(
        "damaged-trainer-state",
        TRAIN_SCRIPT,
        lambda c: resumed(c, lambda run: (run / "checkpoint-4" / "trainer_state.json").write_text('{"step": 4,')),
        ("trainer_state.json: not valid JSON",),
    ),
    Case(
        "damaged-best-model",
        TRAIN_SCRIPT,
        lambda c: resumed(c, lambda run: truncate(run / "model.safetensors")),
        ("best model", "model.safetensors: truncated"),
    ),
    Case(
        "damaged-metrics",
        TRAIN_SCRIPT,
        lambda c: resumed(c, lambda run: (run / "metrics.jsonl").write_text('{"step": 0}\n{"step": 2,\n')),
        ("metrics.jsonl, line 2: not valid JSON",),
    ),
    Case("resume-without-unpad", TRAIN_SCRIPT, lambda c: resumed(c, unpad=False), ("--unpad True -> False",)),
    Case("resume-on-edited-data", TRAIN_SCRIPT, resumed_after_editing_the_data, ("--train_data", "changed since")),
    # evaluation
    Case("eval-device-tpu", EVAL_SCRIPT, lambda c: ["--model", c.resources.bert, "--device", "tpu"], ("--device tpu",)),
    Case(
        "eval-no-such-model-folder",
        EVAL_SCRIPT,
        lambda c: ["--model", c.tmp / "outputs" / "typo", "--test_data", c.data / "dev.tsv"],
        ("typo: no such folder",),
    ),
    Case(
        "eval-max-length-beyond-positions",
        EVAL_SCRIPT,
        lambda c: ["--model", c.resources.bert, "--test_data", c.data / "dev.tsv", "--max_length", 5000],
        ("exceeds the 128 positions",),
    ),
    Case(
        "eval-set-of-one-pair",
        EVAL_SCRIPT,
        lambda c: ["--model", c.resources.bert, "--test_data", c.dev([("가", "나", 1.0)])],
        ("dev_case", "1 sentence pair"),
    ),
    Case(
        "eval-truncated-weights",
        EVAL_SCRIPT,
        lambda c: [
            "--model",
            damaged_model(c, lambda m: truncate(m / "model.safetensors", 5)),
            "--test_data",
            c.data / "dev.tsv",
        ],
        ("model.safetensors: truncated",),
    ),
    Case(
        "eval-simcse-config-not-json",
        EVAL_SCRIPT,
        lambda c: [
            "--model",
            damaged_model(c, lambda m: (m / "simcse_config.json").write_text("[")),
            "--test_data",
            c.data / "dev.tsv",
        ],
        ("simcse_config.json: not valid JSON",),
    ),
    Case(
        "eval-beir-folder-with-corpus-json",
        EVAL_SCRIPT,
        lambda c: ["--model", c.resources.bert, "--test_data", beir_folder(c, "corpus.json")],
        ("a folder that is no evaluation set", "BEIR layout (corpus.jsonl", "it holds corpus.json, qrels"),
    ),
    Case(
        "eval-beir-folder-with-corpus-gz",
        EVAL_SCRIPT,
        lambda c: ["--model", c.resources.bert, "--test_data", beir_folder(c, "corpus.jsonl.gz")],
        ("a folder that is no evaluation set", "it holds corpus.jsonl.gz"),
    ),
    Case(
        "eval-dev-set-with-the-default-split",
        EVAL_SCRIPT,
        lambda c: ["--model", c.resources.bert, "--test_data", beir_folder(c, "corpus.jsonl", split="dev")],
        ("qrels/test.tsv: no such file", "it has qrels/dev.tsv: pass --split dev"),
    ),
    Case(
        "train-jsonl-named-json",
        TRAIN_SCRIPT,
        lambda c: c.train(train_data=c.write("pairs.json", '{"query": "질문", "pos": ["답"]}\n' * 2)),
        ("pairs.json, line 2: invalid JSON: Extra data", "name the file .jsonl"),
    ),
    Case(
        "train-sentences-not-named-txt",
        TRAIN_SCRIPT,
        lambda c: c.train(train_data=c.write("wiki.dat", "문장 하나\n문장 둘\n")),
        ("wiki.dat, line 1: header", "a file of one sentence per line must be named .txt"),
    ),
    # data scripts
    Case(
        "nli-input-missing",
        NLI_SCRIPT,
        lambda c: ["--input", c.tmp / "snli.tsv"],
        ("no such file", "download_kornli.sh"),
    ),
]


def test_the_table_covers_the_issue():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def resources(tmp_path_factory, demo_data, demo_bert, demo_config, tiny_bert_dir):
    """Folders the cases read: a finished run, the demo model, and models that are wrong in one way each."""
    root = tmp_path_factory.mktemp("bad-input")
    run = root / "run"
    train(demo_config(run, max_steps=4, save_steps=2))
    no_tokenizer = root / "no-tokenizer"
    shutil.copytree(demo_bert, no_tokenizer)
    for path in no_tokenizer.glob("*"):
        if "token" in path.name or path.name == "vocab.txt":
            path.unlink()
    others = {}
    for name, config, model_class in (
        ("albert", AlbertConfig(embedding_size=16, **TINY_ENCODER), AlbertModel),
        ("distilbert", DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64), DistilBertModel),
        ("gpt2", GPT2Config(n_embd=32, n_layer=1, n_head=2), GPT2Model),
    ):
        folder = root / name
        model_class(config).save_pretrained(folder)
        others[name] = folder
    return types.SimpleNamespace(
        run=run,
        bert=demo_bert,
        config=demo_config,
        no_tokenizer=no_tokenizer,
        larger_vocab=tiny_bert_dir,  # 400 tokens, the demo model 297
        english=build_random_encoder(root / "english", ENGLISH, vocab_size=300, **TINY_ENCODER),
        **others,
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_ends_in_one_line(case, resources, demo_train_flags, demo_data, run_here, tmp_path):
    context = Context(tmp_path, resources, demo_train_flags, demo_data)
    result = run_here(case.script, *case.args(context))
    if case.code == 2:  # argparse's own usage error
        assert result.returncode == 2 and case.fragments[0] in result.stderr
    else:
        assert result.returncode == case.code
        assert_one_line_error(result, *case.fragments)


def test_the_table_s_damage_is_real(resources, tmp_path):
    """The damaged files the table uses do fail to load without the checks (so the checks are what answers)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    damaged = truncate(Path(shutil.copy(resources.bert / "model.safetensors", tmp_path / "w.safetensors")))
    with pytest.raises(SafetensorError):
        load_file(damaged)
    save_file({}, tmp_path / "empty.safetensors")  # an empty but whole file passes
    from simcse.checkpoint import folder_problem

    assert folder_problem(tmp_path).startswith(f"{damaged}: truncated")
    damaged.unlink()
    assert folder_problem(tmp_path) is None
