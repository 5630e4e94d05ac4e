"""KorQuAD 1.0 as a retrieval set and training pairs: split by article (no paragraph on both sides), every question's
document is the paragraph holding its answer, the counts of the real dev file, the registered name korquad_dev."""

import json

import pytest
from conftest import EVAL_SCRIPT, REPO_ROOT, assert_one_line_error

from simcse.retrieval import load_retrieval_set
from simcse.train_data import load_train_data

BUILD = REPO_ROOT / "data" / "build_korquad.py"


def korquad_file(path, articles):
    """A KorQuAD 1.0 file: articles of (title, [(context, [(question, answer)])])."""
    data = [
        {
            "title": title,
            "paragraphs": [
                {
                    "context": context,
                    "qas": [
                        {"id": f"{title}-{p}-{q}", "question": question, "answers": [{"text": answer}]}
                        for q, (question, answer) in enumerate(qas)
                    ],
                }
                for p, (context, qas) in enumerate(paragraphs)
            ],
        }
        for title, paragraphs in articles
    ]
    path.write_text(json.dumps({"version": "KorQuAD_v1.0_dev", "data": data}, ensure_ascii=False), encoding="utf-8")
    return path


def check_split(source, beir_dir, pairs_file):
    """No paragraph on both sides, every question's document holds its answer, nothing lost."""
    raw = json.loads(source.read_text(encoding="utf-8"))["data"]
    answers = {qa["id"]: qa["answers"][0]["text"] for a in raw for p in a["paragraphs"] for qa in p["qas"]}
    data = load_retrieval_set(beir_dir)
    documents = dict(zip(data.corpus_ids, data.corpus_texts))
    for query, relevant in data.qrels.items():
        (document,) = relevant
        assert answers[query] in documents[document]
    pairs = load_train_data(pairs_file)
    held_out = {" ".join(text.split()) for text in documents.values()}
    trained = set(pairs.columns[1])
    assert not {p for p in trained if any(p in h for h in held_out)}
    assert len(data.query_ids) + len(pairs) == len(answers)
    return data, pairs


def test_a_split_by_article(run_here, tmp_path):
    articles = [
        (
            f"문서{a}",
            [
                (f"제{a}문서 {p}번째 문단에는\t답{a}{p}이 있다.\n둘째 줄.", [(f"{a}{p} 질문?", f"답{a}{p}")])
                for p in range(3)
            ],
        )
        for a in range(6)
    ]
    source = korquad_file(tmp_path / "korquad.json", articles)
    args = ["--input", source, "--beir_dir", tmp_path / "set", "--pairs", tmp_path / "pairs.tsv"]
    result = run_here(BUILD, *args, "--heldout_share", "0.5")
    assert result.returncode == 0, result.stderr
    data, pairs = check_split(source, tmp_path / "set", tmp_path / "pairs.tsv")
    assert len(data.query_ids) == len(pairs) == 9  # 3 articles of 3 questions each side


def test_a_dev_set_of_further_articles(run_here, tmp_path):
    """--dev_share: a third set of articles as a dev retrieval set (qrels/dev.tsv), sharing no article with the
    held-out set or the pairs; the three together hold every question once."""
    articles = [
        (f"문서{a}", [(f"제{a}문서 {p}번째 문단: 답{a}{p}.", [(f"{a}{p} 질문?", f"답{a}{p}")]) for p in range(2)])
        for a in range(10)
    ]
    source = korquad_file(tmp_path / "korquad.json", articles)
    args = ["--input", source, "--beir_dir", tmp_path / "test", "--pairs", tmp_path / "pairs.tsv"]
    result = run_here(BUILD, *args, "--heldout_share", "0.3", "--dev_share", "0.2", "--dev_dir", tmp_path / "dev")
    assert result.returncode == 0, result.stderr
    test, dev = load_retrieval_set(tmp_path / "test"), load_retrieval_set(tmp_path / "dev", split="dev")
    pairs = load_train_data(tmp_path / "pairs.tsv")
    assert (len(test.query_ids), len(dev.query_ids), len(pairs)) == (6, 4, 10)
    assert not {q[0] for q in dev.query_texts} & {q[0] for q in test.query_texts}  # q[0]: the article's number
    assert not {q[0] for q in pairs.columns[0]} & {q[0] for q in dev.query_texts + test.query_texts}
    for flags, words in (
        (["--dev_share", "0.2"], "--dev_share and --dev_dir go together"),
        (["--dev_share", "0.8", "--dev_dir", tmp_path / "d2"], "--dev_share must lie in [0, 1 - --heldout_share]"),
    ):
        refused = run_here(BUILD, *args, "--heldout_share", "0.3", *flags)
        assert_one_line_error(refused, words)


def test_a_file_that_is_not_korquad_is_one_error_line(run_here, tmp_path):
    source = tmp_path / "x.json"
    source.write_text('{"data": [{"title": "t"}]}', encoding="utf-8")
    result = run_here(BUILD, "--input", source, "--beir_dir", tmp_path / "set")
    assert result.returncode == 1 and "not a KorQuAD 1.0 file" in result.stderr


def test_the_real_dev_file_and_the_registered_name(shared_data, run_here, demo_bert, tmp_path):
    source = shared_data / "korquad" / "KorQuAD_v1.0_dev.json"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    data_dir = tmp_path / "data"
    result = run_here(BUILD, "--input", source, "--beir_dir", data_dir / "korquad" / "korquad_dev")
    assert result.returncode == 0 and "140 articles, 964 paragraphs, 5774 questions" in result.stdout
    data = load_retrieval_set("korquad_dev", data_dir=data_dir)
    assert len(data.corpus_ids) == 964 and len(data.query_ids) == 5774 and data.skipped_queries == 0
    split = run_here(
        BUILD,
        "--input",
        source,
        "--beir_dir",
        tmp_path / "half",
        "--pairs",
        tmp_path / "p.tsv",
        "--heldout_share",
        "0.5",
    )
    assert split.returncode == 0
    check_split(source, tmp_path / "half", tmp_path / "p.tsv")
    missing = run_here(EVAL_SCRIPT, "--model", demo_bert, "--test_data", "korquad_dev", "--data_dir", tmp_path)
    assert missing.returncode == 1 and "download_korquad.sh" in missing.stderr


def small_korquad(path):
    articles = [(f"문서{a}", [(f"제{a}문서의 문단: 답{a}.", [(f"{a} 질문?", f"답{a}")])]) for a in range(4)]
    return korquad_file(path, articles)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--pairs", "SOURCE", "--heldout_share", "0.5"], "--pairs"),
        (["--input", "SOURCE", "SOURCE", "--heldout_share", "0.5"], "names a file twice"),
        (["--beir_dir", "HERE", "--heldout_share", "0.5"], "holds an --input file"),
        (["--dev_dir", "SET", "--dev_share", "0.2", "--heldout_share", "0.5"], "are the same folder"),
    ],
)
def test_an_output_that_would_replace_an_input_or_another_output_is_refused(run_here, tmp_path, flags, words):
    source = small_korquad(tmp_path / "korquad.json")
    before = source.read_bytes()
    names = {"SOURCE": source, "HERE": tmp_path, "SET": tmp_path / "set"}
    result = run_here(BUILD, "--input", source, "--beir_dir", tmp_path / "set", *[names.get(f, f) for f in flags])
    assert_one_line_error(result, words)
    assert source.read_bytes() == before and not (tmp_path / "set").exists()


def test_a_full_disk_leaves_the_previous_set_whole_and_names_the_flag(run_here, tmp_path, small_disk):
    full_disk = small_disk(64)
    small = small_korquad(tmp_path / "small.json")
    target = full_disk / "set"
    assert run_here(BUILD, "--input", small, "--beir_dir", target).returncode == 0
    before = {path: path.read_bytes() for path in target.rglob("*") if path.is_file()}
    articles = [(f"문서{a}", [("긴 문단 " * 2000 + f"답{a}.", [(f"{a} 질문?", f"답{a}")])]) for a in range(8)]
    large = korquad_file(tmp_path / "large.json", articles)  # about 240 KiB of corpus: more than the disk holds
    result = run_here(BUILD, "--input", large, "--beir_dir", target)
    assert_one_line_error(result, "no space left", "--beir_dir")
    assert {path: path.read_bytes() for path in target.rglob("*") if path.is_file()} == before  # no partial file


def test_a_file_without_articles_is_refused(run_here, tmp_path):
    source = korquad_file(tmp_path / "empty.json", [])
    assert_one_line_error(
        run_here(BUILD, "--input", source, "--beir_dir", tmp_path / "set"), "no article with a question"
    )
    assert not (tmp_path / "set").exists()


def test_a_question_id_in_two_files_or_twice_in_one_is_refused(run_here, tmp_path):
    """A copy of a file under another name put its questions on both sides of the held-out split."""
    source = small_korquad(tmp_path / "korquad.json")
    copy = tmp_path / "copy.json"
    copy.write_bytes(source.read_bytes())
    result = run_here(BUILD, "--input", source, copy, "--beir_dir", tmp_path / "set", "--heldout_share", "0.5")
    assert_one_line_error(result, "copy.json", "question id '문서0-0-0' appears also in", "korquad.json")
    twice = korquad_file(tmp_path / "twice.json", [("문서", [("문단: 답.", [("질문?", "답")])])] * 2)
    result = run_here(BUILD, "--input", twice, "--beir_dir", tmp_path / "set")
    assert_one_line_error(result, "twice.json", "question id '문서-0-0' appears twice in it")
    assert not (tmp_path / "set").exists()


def test_a_heldout_share_out_of_range_is_blamed_on_itself(run_here, tmp_path):
    source = small_korquad(tmp_path / "korquad.json")
    result = run_here(BUILD, "--input", source, "--beir_dir", tmp_path / "set", "--heldout_share", "1.5")
    assert_one_line_error(result, "--heldout_share must lie in [0, 1], got 1.5")
    assert "--dev_share" not in result.stderr


def test_a_rebuild_beside_stale_qrels_of_another_split_says_so(run_here, tmp_path, caplog):
    """A folder built as a dev set and rebuilt as a test set kept qrels/dev.tsv of the old corpus, which a
    training run's --valid_data reads first."""
    source = small_korquad(tmp_path / "korquad.json")
    folder = tmp_path / "set"
    built = run_here(BUILD, "--input", source, "--heldout_share", "0.5", "--dev_share", "0.5", "--dev_dir", folder,
                     "--beir_dir", tmp_path / "test")  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert (folder / "qrels" / "dev.tsv").is_file()
    caplog.clear()
    assert run_here(BUILD, "--input", source, "--beir_dir", folder).returncode == 0
    assert f"{folder / 'qrels' / 'dev.tsv'}: left from an earlier build" in caplog.text
    assert (folder / "qrels" / "dev.tsv").is_file()  # said, not deleted
