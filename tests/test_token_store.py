"""The token store: ids equal to the tokenizer's for every kind, its key (what rebuilds it and what does not), a
build that dies, the processes that wait for it, Parquet and datasets inputs, and training through it equal to
training in memory."""

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, assert_one_line_error
from safetensors.torch import load_file
from transformers import AutoTokenizer

from simcse import token_store, tokenized
from simcse.token_store import StoreSettings, tokenized_train_data
from simcse.tokenized import TextSettings
from simcse.train_data import load_train_data, train_data_kind

TRAIN_SCRIPT = REPO_ROOT / "train" / "train.py"
PREPARE_SCRIPT = REPO_ROOT / "data" / "prepare.py"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def retrieval_rows(demo_data: Path) -> list[dict]:
    """The demo triplets as queries whose negatives are shared with other queries (each document held by up to
    three queries), and one query with two positives."""
    rows = [line.split("\t") for line in (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    examples = [
        {"query": a, "pos": [p], "neg": [n, rows[(i + 1) % len(rows)][2], rows[(i + 2) % len(rows)][2]]}
        for i, (a, p, n) in enumerate(rows)
    ]
    examples[0]["pos"].append(rows[5][1])
    return examples


@pytest.fixture
def tokenizer(demo_bert):
    return AutoTokenizer.from_pretrained(demo_bert)


def read(path: Path, text: TextSettings, root: Path | None, **settings):
    return tokenized_train_data(path, train_data_kind(path), text, StoreSettings(root, **settings))


def ids_of(tokenizer, text: str, length: int, prompt: str = "") -> list[int]:
    return tokenizer(prompt + text, truncation=True, max_length=length)["input_ids"]


@pytest.fixture
def builds(monkeypatch):
    """How many times a store was built (tokenized), as a list of the files."""
    built = []
    real = token_store.build_tokenized

    def counting(rows, path, *args):
        built.append(Path(path).name)
        return real(rows, path, *args)

    monkeypatch.setattr(token_store, "build_tokenized", counting)
    return built


# ---------------------------------------------------------------------------------------------------
# What a store holds


@pytest.mark.parametrize("name", ["train.tsv", "pairs.tsv", "corpus.txt", "dev.tsv"])
def test_each_kind_is_stored_as_the_tokenizer_makes_it_and_in_memory_alike(name, demo_data, tokenizer, tmp_path):
    path = demo_data / name
    text = TextSettings(tokenizer, 12, "문장: ")
    stored, in_memory = read(path, text, tmp_path / "store"), read(path, text, None)
    data = load_train_data(path)
    assert stored.store.startswith(str(tmp_path / "store")) and in_memory.store == "memory"
    assert len(stored) == len(data) and stored.kind == data.kind
    for column, sentences in zip(stored.columns, data.columns, strict=True):
        assert [column[i].tolist() for i in range(len(column))] == [
            ids_of(tokenizer, s, 12, "문장: ") for s in sentences
        ]
    for got, expected in zip(stored.columns, in_memory.columns):
        assert np.array_equal(got.values, expected.values) and np.array_equal(got.offsets, expected.offsets)
    if data.scores is not None:
        assert stored.scores.tolist() == data.scores == in_memory.scores.tolist()
    assert isinstance(stored.columns[0].values, np.memmap)  # mapped, not read into memory


def test_retrieval_documents_are_stored_once_and_each_query_keeps_its_own(demo_data, tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", retrieval_rows(demo_data))
    data = load_train_data(path)
    text = TextSettings(tokenizer, 10, "질문: ", 20, "문서: ")
    stored = read(path, text, tmp_path / "store")
    distinct = list(dict.fromkeys(t for texts in data.positives + data.negatives for t in texts))
    assert len(stored.documents) == len(distinct) < sum(map(len, data.positives + data.negatives))
    text_of = {tuple(ids_of(tokenizer, t, 20, "문서: ")): t for t in distinct}
    assert len(text_of) == len(distinct)  # the ids tell the documents apart
    for i in range(len(data)):
        assert stored.columns[0][i].tolist() == ids_of(tokenizer, data.columns[0][i], 10, "질문: ")
        for rows, texts in ((stored.positives[i], data.positives[i]), (stored.negatives[i], data.negatives[i])):
            assert [text_of[tuple(stored.documents[row].tolist())] for row in rows] == texts  # in order
    summary = stored.summary
    assert (summary.rows, summary.most_negatives, summary.without_negatives) == (len(data), 3, 0)


def test_the_flag_the_variable_and_the_cache_folder_choose_the_store_and_memory_means_none(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMCSE_KO_TOKEN_STORE", "memory")
    assert StoreSettings.from_flag(None, 1.0).root is None
    assert StoreSettings.from_flag(str(tmp_path), 1.0).root == tmp_path  # the flag before the variable
    monkeypatch.setenv("SIMCSE_KO_TOKEN_STORE", str(tmp_path / "shared"))
    assert StoreSettings.from_flag(None, 1.0).root == tmp_path / "shared"
    assert StoreSettings.from_flag("memory", 1.0).root is None
    monkeypatch.delenv("SIMCSE_KO_TOKEN_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert StoreSettings.from_flag(None, 1.0).root == tmp_path / "cache" / "simcse-ko" / "token-store"


# ---------------------------------------------------------------------------------------------------
# The key: what rebuilds a store, and what does not


def test_a_store_is_reused_until_the_tokenizer_a_length_a_prompt_or_the_file_changes(
    demo_data, demo_bert, tiny_bert_dir, tmp_path, builds, monkeypatch
):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, retrieval_rows(demo_data))
    root = tmp_path / "store"
    tokenizer = AutoTokenizer.from_pretrained(demo_bert)
    text = TextSettings(tokenizer, 16, "", 32, "")
    first = read(path, text, root)
    assert builds == ["train.jsonl"]
    again = read(path, TextSettings(AutoTokenizer.from_pretrained(demo_bert), 16, "", 32, ""), root)
    assert builds == ["train.jsonl"] and again.store == first.store  # a fresh load of the same tokenizer: reused

    changes = [
        TextSettings(AutoTokenizer.from_pretrained(tiny_bert_dir), 16, "", 32, ""),
        TextSettings(tokenizer, 17, "", 32, ""),
        TextSettings(tokenizer, 16, "", 33, ""),
        TextSettings(tokenizer, 16, "질문: ", 32, ""),
        TextSettings(tokenizer, 16, "", 32, "문서: "),
    ]
    folders = {first.store}
    for number, changed in enumerate(changes, start=2):
        folders.add(read(path, changed, root).store)
        assert len(builds) == number
    assert len(folders) == 1 + len(changes)

    # Touched, same bytes: hashed once, not rebuilt; then trusted by size and mtime, never hashed again.
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    read(path, text, root)
    assert len(builds) == 1 + len(changes)
    monkeypatch.setattr(token_store, "file_fingerprint", lambda _: pytest.fail("an unchanged file was hashed"))
    read(path, text, root)
    monkeypatch.undo()
    monkeypatch.setattr(token_store, "build_tokenized", builds_counter(builds))

    # Changed bytes: rebuilt in the same folder, with the new contents.
    rows = retrieval_rows(demo_data)
    rows[0]["query"] = "완전히 새로운 질문이다"
    write_jsonl(path, rows)
    changed = read(path, text, root)
    assert len(builds) == 2 + len(changes) and changed.store == first.store
    assert changed.columns[0][0].tolist() == ids_of(tokenizer, "완전히 새로운 질문이다", 16)
    assert changed.fingerprint != first.fingerprint


def builds_counter(builds: list):
    def counting(rows, path, *args):
        builds.append(Path(path).name)
        return tokenized.build_tokenized(rows, path, *args)

    return counting


# ---------------------------------------------------------------------------------------------------
# A build that dies, and the processes that wait


def test_an_interrupted_build_leaves_nothing_a_later_run_trusts(demo_data, tokenizer, tmp_path, monkeypatch):
    path, root = demo_data / "train.tsv", tmp_path / "store"
    text = TextSettings(tokenizer, 16)
    real, calls = tokenized.encode_chunk, []

    def dying(*args):
        calls.append(1)
        if len(calls) == 2:  # the first column written, the second not
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(tokenized, "encode_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        read(path, text, root)
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()

    # A builder killed outright (kill -9) leaves its partial folder; the next build removes it.
    expected = read(path, text, None)
    folder_name = next(p.name for p in _built(path, text, tmp_path / "probe").iterdir() if p.is_dir())
    stale = root / f"{folder_name}.partial-999999"
    stale.mkdir(parents=True)
    (stale / "column0.values").write_bytes(b"\x00" * 8)
    stored = read(path, text, root)
    assert not stale.exists() and (root / folder_name / "meta.json").is_file()
    assert np.array_equal(stored.columns[1].values, expected.columns[1].values)


def _built(path: Path, text: TextSettings, root: Path) -> Path:
    read(path, text, root)
    return root


def test_the_other_processes_wait_for_the_first_and_say_for_what(demo_data, tokenizer, tmp_path, monkeypatch, capsys):
    path, root = demo_data / "pairs.tsv", tmp_path / "store"
    text = TextSettings(tokenizer, 16)
    monkeypatch.setattr(token_store, "WAIT_SAY_EVERY", 0.2)
    with pytest.raises(
        TimeoutError, match=r"rank 1: waiting for rank 0 to tokenize .*pairs.tsv into .*--token_store_timeout 0.5"
    ):
        read(path, text, root, timeout=0.5, builds=False, rank=1)
    assert "rank 1: waiting for rank 0 to tokenize" in capsys.readouterr().out

    builder = threading.Timer(1.0, lambda: read(path, text, root))
    builder.start()
    waited = read(path, text, root, timeout=30, builds=False, rank=1)
    builder.join()
    assert np.array_equal(waited.columns[0].values, read(path, text, None).columns[0].values)


def test_a_damaged_store_is_built_again_and_an_unusable_folder_is_one_line(
    demo_data, demo_train_flags, tokenizer, tmp_path, run_here, small_disk, korean_sentences
):
    path, root = demo_data / "train.tsv", tmp_path / "store"
    text = TextSettings(tokenizer, 16)
    stored = read(path, text, root)
    values = Path(stored.store) / "column2.values"
    values.write_bytes(values.read_bytes()[:-4])  # cut short, as a full disk or a stray edit leaves it
    again = read(path, text, root)
    assert np.array_equal(again.columns[2].values, read(path, text, None).columns[2].values)

    locked = tmp_path / "read-only"
    locked.mkdir(mode=0o500)
    unusable = locked if not os.access(locked, os.W_OK) else demo_data / "dev.tsv"  # root writes anywhere: a file
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "run", max_steps=1), "--token_store", unusable)
    assert_one_line_error(result, f"{unusable}: cannot hold token stores", "--token_store")

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{s} {i}" for i in range(3000) for s in korean_sentences[:10]) + "\n")
    full = small_disk(256)
    flags = demo_train_flags(tmp_path / "full-run", max_steps=1, train_data=corpus)
    result = run_here(TRAIN_SCRIPT, *flags, "--token_store", full)
    assert_one_line_error(result, f"no space left on the disk of {full} for a token store", "--token_store")
    assert list(full.iterdir()) == [] or all(p.name.endswith(".lock") for p in full.iterdir())


# ---------------------------------------------------------------------------------------------------
# Parquet files and datasets folders


def test_parquet_and_a_datasets_folder_read_as_the_jsonl_and_the_tsv(demo_data, tokenizer, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = retrieval_rows(demo_data)
    jsonl = write_jsonl(tmp_path / "q.jsonl", rows)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "q.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "q_folder"))
    text = TextSettings(tokenizer, 16, "", 24, "")
    expected = read(jsonl, text, tmp_path / "store")
    for table in (tmp_path / "q.parquet", tmp_path / "q_folder"):
        got = read(table, text, tmp_path / "store")
        assert got.kind == "query_documents" and got.store != expected.store
        for name in ("columns", "documents", "positives", "negatives"):
            pairs = zip(getattr(got, name), getattr(expected, name)) if name == "columns" else [
                (getattr(got, name), getattr(expected, name))]  # fmt: skip
            for a, b in pairs:
                assert np.array_equal(a.values, b.values) and np.array_equal(a.offsets, b.offsets)

    triplets = load_train_data(demo_data / "train.tsv")
    table = {name: column for name, column in zip(("sent0", "sent1", "hard_neg"), triplets.columns)}
    datasets.Dataset.from_dict(table).to_parquet(str(tmp_path / "t.parquet"))
    got, expected = read(tmp_path / "t.parquet", text, None), read(demo_data / "train.tsv", text, None)
    assert got.kind == "triplets"
    assert all(np.array_equal(a.values, b.values) for a, b in zip(got.columns, expected.columns, strict=True))


def test_bad_tables_are_one_line_naming_the_file_and_row(demo_data, demo_train_flags, run_here, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = retrieval_rows(demo_data)[:4]
    rows[2]["query"] = None
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "null.parquet"))
    datasets.Dataset.from_dict({"question": ["가"], "answer": ["나"]}).to_parquet(str(tmp_path / "other.parquet"))
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2])})
    splits.save_to_disk(str(tmp_path / "splits"))
    (tmp_path / "fake.parquet").write_text("not parquet\n")
    cases = [
        ("null.parquet", "null.parquet, row 3: missing or non-string 'query'"),
        ("other.parquet", "columns answer, question are no training data; name them as one of"),
        ("splits", "a DatasetDict of splits train: give one split's folder"),
        ("fake.parquet", "fake.parquet: not a Parquet file"),
    ]
    for name, message in cases:
        result = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / f"run-{name}", train_data=tmp_path / name))
        assert_one_line_error(result, message)


# ---------------------------------------------------------------------------------------------------
# Training through the store


def test_training_through_the_store_equals_training_in_memory(demo_data, demo_train_flags, run_here, tmp_path):
    """Same metrics.jsonl and bit-identical weights, on triplets and on retrieval data (documents drawn each epoch)
    in one mixture."""
    queries = write_jsonl(tmp_path / "q.jsonl", retrieval_rows(demo_data))
    runs = {}
    for store in ("memory", str(tmp_path / "store")):
        output = tmp_path / f"run-{len(runs)}"
        flags = demo_train_flags(output, max_steps=6, eval_steps=3, num_negatives=2, batch_size=16)
        flags += ["--train_data", demo_data / "train.tsv", queries, "--token_store", store]
        result = run_here(TRAIN_SCRIPT, *flags)
        assert result.returncode == 0, result.stderr
        runs[store] = output
    memory, stored = runs.values()
    assert (memory / "metrics.jsonl").read_text() == (stored / "metrics.jsonl").read_text()
    assert (memory / "model.safetensors").read_bytes() == (stored / "model.safetensors").read_bytes()
    assert len(load_file(memory / "model.safetensors")) > 0  # a model was saved, not two empty files


def test_prepare_builds_what_training_then_maps_without_tokenizing(
    demo_data, demo_train_flags, run_here, tmp_path, monkeypatch
):
    queries = write_jsonl(tmp_path / "q.jsonl", retrieval_rows(demo_data))
    flags = demo_train_flags(tmp_path / "run", max_steps=2, num_negatives=2, batch_size=16, train_data=queries)
    flags += ["--token_store", tmp_path / "store", "--document_max_length", 40, "--prompt", "문장: "]
    prepared = run_here(PREPARE_SCRIPT, *flags)
    assert prepared.returncode == 0, prepared.stderr
    assert f"{queries}: {len(retrieval_rows(demo_data))} examples of query_documents in {tmp_path / 'store'}" in (
        prepared.stdout
    )
    monkeypatch.setattr(token_store, "build_tokenized", lambda *_: pytest.fail("training tokenized again"))
    trained = run_here(TRAIN_SCRIPT, *flags)
    assert trained.returncode == 0, trained.stderr
    memory = run_here(PREPARE_SCRIPT, *flags, "--token_store", "memory")
    assert_one_line_error(memory, "--token_store memory keeps nothing")


@pytest.mark.slow
def test_a_build_killed_outright_is_not_trusted_and_is_built_again(demo_bert, korean_sentences, tmp_path):
    """kill -9 in the middle of a build: its partial folder is left, no store; the next run builds it whole."""
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "corpus.txt"
    lines = [f"{sentence} {i}" for i in range(30_000) for sentence in korean_sentences[:10]]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    root = tmp_path / "store"
    build = (
        "import sys; from pathlib import Path; from transformers import AutoTokenizer;"
        "from simcse.token_store import StoreSettings, tokenized_train_data; from simcse.tokenized import TextSettings;"
        "from simcse.train_data import train_data_kind; p = Path(sys.argv[1]);"
        "tokenized_train_data(p, train_data_kind(p), TextSettings(AutoTokenizer.from_pretrained(sys.argv[2]), 16),"
        "StoreSettings(Path(sys.argv[3])))"
    )
    builder = subprocess.Popen([sys.executable, "-c", build, str(corpus), str(demo_bert), str(root)])
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in root.glob("*.partial-*/column0.values")):
        assert builder.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.05)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    assert list(root.glob("*.partial-*")) and not list(root.glob("*/meta.json"))

    text = TextSettings(AutoTokenizer.from_pretrained(demo_bert), 16)
    stored = read(corpus, text, root)
    assert not list(root.glob("*.partial-*")) and len(list(root.glob("*/meta.json"))) == 1
    expected = read(corpus, text, None)
    assert len(stored) == len(lines) == len(expected)
    assert np.array_equal(stored.columns[0].values, expected.columns[0].values)
