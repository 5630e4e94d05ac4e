"""Shared fixtures: tiny random encoders with a WordPiece tokenizer trained here, the demo data and a demo
training run's settings, the scripts run as a user runs them, and the shared Korean data."""

import os

# Nothing in the tests may reach the Hugging Face Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Token stores of the tests' training files go to a folder of this session, never the user's cache.
_TOKEN_STORE = __import__("tempfile").TemporaryDirectory(prefix="simcse-token-store-")
os.environ["SIMCSE_KO_TOKEN_STORE"] = _TOKEN_STORE.name

import json  # noqa: E402
import math  # noqa: E402
import runpy  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from simcse.config import TrainConfig  # noqa: E402
from simcse.random_encoder import build_random_encoder  # noqa: E402
from simcse.run_folder import METRICS_NAME  # noqa: E402
from simcse.train_data import load_train_data  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SIMCSE_KO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TRAIN_SCRIPT = REPO_ROOT / "train" / "train.py"
EVAL_SCRIPT = REPO_ROOT / "evaluation" / "eval.py"

# Written for these tests: everyday scenes, quotes and commas included, to train a tokenizer on.
KOREAN_SENTENCES = [
    "한 남자가 기타를 치고 있다.",
    "남자가 악기를 연주하고 있다.",
    "여자가 공원에서 달리고 있다.",
    "한 여성이 아침마다 조깅을 한다.",
    "아이들이 운동장에서 축구를 한다.",
    "어린이들이 공을 차며 놀고 있다.",
    "고양이가 소파 위에서 잠을 잔다.",
    "강아지가 마당에서 뛰어다닌다.",
    "요리사가 부엌에서 국수를 만들고 있다.",
    "한 남자가 양파를 썰고 있다.",
    "비행기가 활주로에서 이륙하고 있다.",
    "기차가 터널을 지나가고 있다.",
    "학생들이 도서관에서 책을 읽는다.",
    "선생님이 칠판에 글씨를 쓴다.",
    '그는 "내일 보자"라고 말했다.',
    '그녀는 "정말요?"라고 물었다.',
    "사과, 배, 포도를 샀다.",
    "오늘은 날씨가 맑고, 바람이 분다.",
    "서울에는 비가 많이 내렸다.",
    "부산 바다는 여름에 붐빈다.",
    "회의는 오후 세 시에 시작한다.",
    "그 영화는 생각보다 재미있었다.",
    "나는 커피보다 차를 좋아한다.",
    "할머니께서 김치를 담그셨다.",
    "버스가 정류장에 도착했다.",
    "남자가 자전거를 고치고 있다.",
    "여자가 피아노를 치고 있다.",
    "두 사람이 길에서 이야기를 나눈다.",
    "경찰이 교통을 정리하고 있다.",
    "새 한 마리가 나뭇가지에 앉아 있다.",
    "아기가 엄마 품에서 웃고 있다.",
    "농부가 밭에서 감자를 캔다.",
    "시장에는 사람들이 많았다.",
    "그는 한마디도 하지 않았다.",
    "축구 경기는 무승부로 끝났다.",
    "작가는 새 소설을 발표했다.",
    "'가나다' 순서로 정렬하세요.",
    "가격은 3,000원입니다.",
    "우리는 주말에 산에 올랐다.",
    "눈이 와서 길이 미끄럽다.",
]

# The shape of every random test encoder. Three layers, so that the poolers over inner layers differ:
# avg_first_last averages layers 1 and 3, avg_top2 layers 2 and 3 (with two layers both would be 1 and 2).
TINY_ENCODER = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)


# What running the tests may add to the checkout: caches. Anything else (a run folder, a lock) is a bug.
CACHES = (".venv/", ".pytest_cache/", ".ruff_cache/", "__pycache__/", ".egg-info/")


# The README and the reference pages under docs/: what the tests hold against the code.
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def doc_section(title: str) -> str:
    """The text under ``## title`` in the README or a page of docs/ (the one section of that title), up to the
    next section."""
    found = [text.split(f"\n## {title}\n", 1)[1] for text in (path.read_text(encoding="utf-8") for path in DOC_FILES)
             if f"\n## {title}\n" in text]  # fmt: skip
    assert len(found) == 1, f"{len(found)} sections titled {title!r} in the README and docs/"
    return found[0].split("\n## ", 1)[0]


def checkout_changes() -> set[str]:
    """The checkout's changed, untracked and ignored entries (caches aside), as ``git status`` lists them; empty
    outside a git checkout."""
    command = ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    lines = result.stdout.splitlines() if result.returncode == 0 else []
    return {line for line in lines if not any(cache in line for cache in CACHES)}


def pytest_sessionstart(session):
    session.config.checkout_before = checkout_changes()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves the checkout as it found it: a test that writes into it fails the run."""
    written = checkout_changes() - session.config.checkout_before
    if written:
        print(f"\nerror: the tests wrote into the checkout: {', '.join(sorted(written))}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def run_script(*args, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a repo script (python file or bash script) as a user would, from a neutral directory, offline.

    No time limit: a busy machine makes it slow, never wrong.
    """
    command = ["bash", *args] if str(args[0]).endswith(".sh") else [sys.executable, *args]
    result = subprocess.run(
        [str(a) for a in command],
        cwd=REPO_ROOT.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed run that says what went wrong in one ``error:`` line, with no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], (fragment, error_lines[0])


def assert_eval_py_scores_the_best_step(run_here, output: Path, dev_file: Path, report: Path) -> None:
    """A two-step run in ``output`` logged finite losses at steps 0 and 2, and eval.py scores its saved model on
    ``dev_file`` as the run's best evaluation did."""
    lines = [json.loads(line) for line in (output / METRICS_NAME).read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 2] and all(math.isfinite(line["train_loss"] or 0) for line in lines)
    evaluated = run_here(EVAL_SCRIPT, "--model", output, "--test_data", dev_file, "--output_json", report)
    assert evaluated.returncode == 0, evaluated.stderr
    best = max(lines, key=lambda line: line["cosine_spearman"])
    dev_score = json.loads(report.read_text())["results"][str(dev_file)]["cosine_spearman"]
    assert dev_score == pytest.approx(best["cosine_spearman"], abs=1e-5)


@pytest.fixture
def run_here(monkeypatch, capsys):
    """``run_here(script, *args)``: a repo Python script run in this process as ``__main__``, the way train.py
    and eval.py run for a user but without the seconds a fresh interpreter spends importing torch. Returns its
    exit code and output as a CompletedProcess."""

    def run(script, *args) -> subprocess.CompletedProcess:
        argv = [str(script), *map(str, args)]
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()
        try:
            runpy.run_path(str(script), run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err)

    return run


@pytest.fixture(scope="session")
def korean_sentences() -> list[str]:
    return list(KOREAN_SENTENCES)


def _tiny_encoder(tmp_path_factory, model_type: str) -> Path:
    return build_random_encoder(
        tmp_path_factory.mktemp(f"tiny-{model_type}"),
        KOREAN_SENTENCES * 3,
        model_type=model_type,
        vocab_size=400,
        **TINY_ENCODER,
    )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return _tiny_encoder(tmp_path_factory, "bert")


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return _tiny_encoder(tmp_path_factory, "roberta")


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory) -> Path:
    return _tiny_encoder(tmp_path_factory, "xlm-roberta")


@pytest.fixture(params=["bert", "roberta", "xlm-roberta"])
def tiny_model_dir(request, tiny_bert_dir, tiny_roberta_dir, tiny_xlmr_dir) -> Path:
    """The encoders with a pooling layer and the unpadded forward pass."""
    return {"bert": tiny_bert_dir, "roberta": tiny_roberta_dir, "xlm-roberta": tiny_xlmr_dir}[request.param]


# ---------------------------------------------------------------------------------------------------
# The demo data (data/make_demo_data.py) and a short training run on it


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """train.tsv (120 triplets), pairs.tsv, corpus.txt (+ corpus_with_blanks.txt), dev.tsv and test.tsv."""
    root = tmp_path_factory.mktemp("demo-data")
    run_script(REPO_ROOT / "data" / "make_demo_data.py", "--output_dir", root, "--num_train", 120, "--num_eval", 40)
    corpus = (root / "corpus.txt").read_text(encoding="utf-8")
    (root / "corpus_with_blanks.txt").write_text(corpus.replace("\n", "\n\n", 5), encoding="utf-8")
    return root


def _demo_encoder(tmp_path_factory, demo_data: Path, model_type: str) -> Path:
    corpus = (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()
    return build_random_encoder(
        tmp_path_factory.mktemp(f"demo-{model_type}"), corpus, model_type=model_type, **TINY_ENCODER
    )


@pytest.fixture(scope="session")
def demo_encoder_of(tmp_path_factory, demo_data):
    """``demo_encoder_of(model_type)``: a random encoder of that architecture (``ARCHITECTURES``) with a tokenizer
    trained on the demo corpus, built once per session."""
    built = {}

    def get(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = _demo_encoder(tmp_path_factory, demo_data, model_type)
        return built[model_type]

    return get


@pytest.fixture(scope="session")
def demo_bert(demo_encoder_of) -> Path:
    return demo_encoder_of("bert")


@pytest.fixture(scope="session")
def demo_roberta(demo_encoder_of) -> Path:
    return demo_encoder_of("roberta")


@pytest.fixture(scope="session")
def demo_settings(demo_data, demo_bert) -> dict:
    """A few-second supervised run on the demo data; tests add and override settings."""
    return dict(
        model=str(demo_bert),
        train_data=str(demo_data / "train.tsv"),
        valid_data=str(demo_data / "dev.tsv"),
        batch_size=16,
        max_length=24,
        learning_rate=1e-3,
        eval_steps=2,
    )


@pytest.fixture(scope="session")
def demo_config(demo_settings):
    """``demo_config(output, **changes)``: the demo run as a TrainConfig, for training in this process."""

    def make(output: Path, **changes) -> TrainConfig:
        return TrainConfig(**demo_settings | {"output_path": str(output)} | changes)

    return make


@pytest.fixture(scope="session")
def demo_train_flags(demo_settings):
    """``demo_train_flags(output, **changes)``: the same run as train.py's command line."""

    def make(output: Path, **changes) -> list[str]:
        flags = []
        for name, value in (demo_settings | {"output_path": str(output)} | changes).items():
            if isinstance(value, bool):  # switches: --amp, --no-unpad
                flags.append(f"--{name}" if value else f"--no-{name}")
            else:
                flags += [f"--{name}", str(value)]
        return flags

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Korean data not found at {SHARED_DATA} (set SIMCSE_KO_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kib)``: a folder on a real tmpfs of that size, to fill (root only; skipped where it cannot
    be mounted), unmounted afterwards."""
    mounted = []

    def mount(kib: int) -> Path:
        folder = tmp_path / f"small-disk-{len(mounted)}"
        folder.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)]
        if subprocess.run(command, capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def kind_files(demo_data, tmp_path) -> dict[str, Path]:
    """A demo file of every kind of training data (the retrieval kind written from the triplets)."""
    files = {load_train_data(path).kind: path for path in sorted(demo_data.glob("*.t*"))}
    rows = [line.split("\t") for line in (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    queries = tmp_path / "queries.jsonl"
    teacher = {"pos_scores": [1.0], "neg_scores": [0.0]}  # a teacher's scores, for --distill_weight
    queries.write_text("".join(json.dumps({"query": a, "pos": [p], "neg": [n]} | teacher, ensure_ascii=False) + "\n"
                               for a, p, n in rows), encoding="utf-8")  # fmt: skip
    return files | {"query_documents": queries}
