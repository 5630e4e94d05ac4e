import csv
import json
import logging

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from simcse.batching import SimCSECollator, SimCSEDataset
from simcse.data import KORSTS_HEADER, STS_DATASETS, DataFormatError, load_sts
from simcse.tokenized import TextSettings, tokenize_in_memory, tokenize_texts
from simcse.train_data import TrainData, load_train_data

KORSTS_HEAD = "\t".join(KORSTS_HEADER)


def write(tmp_path, name, content):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def korsts_row(score, sentence1, sentence2):
    return f"main-captions\tMSRvid\t2012test\t0001\t{score}\t{sentence1}\t{sentence2}"


# ---------------------------------------------------------------------------------------------------
# STS readers


def test_korsts_keeps_sentences_verbatim(tmp_path):
    rows = [
        korsts_row("5.000", '그가 말했다, "엄마, 저 왔어요.', "그는 '안녕'이라고 했다."),
        korsts_row("0.250", '"따옴표만 열린 문장', "쉼표, 그리고 마침표."),
        korsts_row("3", "  앞뒤 공백  ", "끝"),
    ]
    path = write(tmp_path, "sts.tsv", KORSTS_HEAD + "\n" + "\n".join(rows) + "\n")
    data = load_sts(path)
    assert data.sentences1 == ['그가 말했다, "엄마, 저 왔어요.', '"따옴표만 열린 문장', "  앞뒤 공백  "]
    assert data.sentences2 == ["그는 '안녕'이라고 했다.", "쉼표, 그리고 마침표.", "끝"]
    assert data.scores == [5.0, 0.25, 3.0]
    assert len(data) == 3


def test_crlf_and_bom_and_no_final_newline(tmp_path):
    text = "\ufeff" + KORSTS_HEAD + "\r\n" + korsts_row("1.5", "가", "나") + "\r\n" + korsts_row("2", "다", "라")
    data = load_sts(write(tmp_path, "sts.tsv", text))
    assert data.sentences1 == ["가", "다"] and data.sentences2 == ["나", "라"] and data.scores == [1.5, 2.0]


def test_plain_tsv_with_and_without_header(tmp_path):
    body = '첫 문장\t둘째 "문장"\t4.5\n셋째\t넷째\t0\n'
    with_header = load_sts(write(tmp_path, "a.tsv", "sentence1\tsentence2\tscore\n" + body))
    without_header = load_sts(write(tmp_path, "b.tsv", body))
    for data in (with_header, without_header):
        assert data.sentences1 == ["첫 문장", "셋째"]
        assert data.sentences2 == ['둘째 "문장"', "넷째"]
        assert data.scores == [4.5, 0.0]


def test_klue_sts_json(tmp_path):
    items = [
        {
            "guid": "a",
            "sentence1": "숙소 위치는 찾기 쉽다.",
            "sentence2": "숙소는 찾기 쉬운 곳에 있다.",
            "labels": {"label": 3.7, "real-label": 3.714, "binary-label": 1},
        },
        {"guid": "b", "sentence1": '"좋아요"라고 했다', "sentence2": "별로였다", "labels": {"label": 0}},
    ]
    path = write(tmp_path, "klue.json", json.dumps(items, ensure_ascii=False))
    data = load_sts(path)
    assert data.sentences1 == ["숙소 위치는 찾기 쉽다.", '"좋아요"라고 했다']
    assert data.sentences2 == ["숙소는 찾기 쉬운 곳에 있다.", "별로였다"]
    assert data.scores == [3.7, 0.0]


def test_names_resolve_under_data_dir(tmp_path):
    rows = korsts_row("2.5", "가", "나") + "\n" + korsts_row("4", "다", "라") + "\n"
    write(tmp_path, STS_DATASETS["korsts_test"].file, KORSTS_HEAD + "\n" + rows)
    write(
        tmp_path,
        STS_DATASETS["klue_sts_dev"].file,
        json.dumps([{"sentence1": s, "sentence2": "b", "labels": {"label": i}} for i, s in enumerate("ac")]),
    )
    assert load_sts("korsts_test", data_dir=tmp_path).scores == [2.5, 4.0]
    klue = load_sts("klue_sts_dev", data_dir=tmp_path)
    assert klue.sentences1 == ["a", "c"] and klue.name == "klue_sts_dev"


def test_missing_named_dataset_points_at_download_script(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sts-dev\.tsv.*download_korsts\.sh.*\$SIMCSE_KO_DATA_DIR"):
        load_sts("korsts_dev", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"klue-sts-v1\.1_dev\.json.*download_klue_sts\.sh"):
        load_sts("klue_sts_dev", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such.tsv"):
        load_sts(tmp_path / "no_such.tsv")


BAD_STS_FILES = [
    # (content, message expected, line)
    (KORSTS_HEAD + "\n" + korsts_row("1", "가", "나") + "\nmain\tx\t2012\t1\t2.0\t가\n", "expected 7", 3),
    (KORSTS_HEAD + "\n" + korsts_row("1", "가\t나", "다") + "\n", "tab inside a sentence", 2),
    (KORSTS_HEAD + "\n" + korsts_row("1", "가", "나") + "\n" + korsts_row("2", "", "나") + "\n", "empty sentence", 3),
    (KORSTS_HEAD + "\n" + korsts_row("1", "가", "   ") + "\n", "empty sentence in column 'sentence2'", 2),
    (KORSTS_HEAD + "\n" + korsts_row("high", "가", "나") + "\n", "not a number", 2),
    (KORSTS_HEAD + "\n" + korsts_row("5.5", "가", "나") + "\n", r"outside \[0, 5\]", 2),
    (KORSTS_HEAD + "\n" + korsts_row("-0.1", "가", "나") + "\n", r"outside \[0, 5\]", 2),
    (KORSTS_HEAD + "\n" + korsts_row("nan", "가", "나") + "\n", "is not a number", 2),
    ("가\t나\n", "unrecognised STS file", 1),
    ("가\t나\t높음\n", "unrecognised STS file", 1),
    ("sentence1\tsentence2\tscore\n가\t나\t1\n다\t라\n", "expected 3", 3),
]


@pytest.mark.parametrize("content, message, line", BAD_STS_FILES)
def test_bad_sts_rows_name_file_and_line(tmp_path, content, message, line):
    path = write(tmp_path, "bad.tsv", content)
    with pytest.raises(DataFormatError, match=message) as error:
        load_sts(path)
    assert str(error.value).startswith(f"{path}, line {line}:")


@pytest.mark.parametrize("content", [KORSTS_HEAD + "\n", "", "\n\n", "[]"])
def test_empty_sts_dataset_raises(tmp_path, content):
    path = write(tmp_path, "empty.json" if content == "[]" else "empty.tsv", content)
    with pytest.raises(DataFormatError, match="no sentence pairs") as error:
        load_sts(path)
    assert str(path) in str(error.value)


def test_undecodable_utf8_names_the_line(tmp_path):
    content = (KORSTS_HEAD + "\n" + korsts_row("1", "가", "나") + "\n").encode() + korsts_row("2", "다", "라").encode(
        "cp949"
    )
    path = write(tmp_path, "cp949.tsv", content)
    with pytest.raises(DataFormatError, match="not valid UTF-8") as error:
        load_sts(path)
    assert str(error.value).startswith(f"{path}, line 3:")


@pytest.mark.parametrize(
    "item, message",
    [
        ({"sentence1": "a", "sentence2": "b"}, "labels.label"),
        ({"sentence1": "a", "sentence2": "b", "labels": {"label": 7}}, r"outside \[0, 5\]"),
        ({"sentence1": "a", "sentence2": "b", "labels": {"label": "x"}}, "not a number"),
        ({"sentence1": "a", "sentence2": "b", "labels": {"label": None}}, "not a number"),
        ({"sentence1": "", "sentence2": "b", "labels": {"label": 1}}, "empty sentence"),
        ({"sentence1": 3, "sentence2": "b", "labels": {"label": 1}}, "sentence1"),
        (["a", "b", 1], "expected an object"),
    ],
)
def test_bad_klue_items_name_the_index(tmp_path, item, message):
    good = {"sentence1": "a", "sentence2": "b", "labels": {"label": 1}}
    path = write(tmp_path, "klue.json", json.dumps([good, good, item]))
    with pytest.raises(DataFormatError, match=message) as error:
        load_sts(path)
    assert str(error.value).startswith(f"{path}, JSON index 2:")


def test_invalid_json_names_the_line(tmp_path):
    path = write(tmp_path, "klue.json", '[\n{"sentence1": "a",\n "sentence2" "b"}\n]')
    with pytest.raises(DataFormatError, match="invalid JSON") as error:
        load_sts(path)
    assert str(error.value).startswith(f"{path}, line 3:")


def test_shared_korsts_dev_matches_csv_module(shared_data):
    path = shared_data / "korsts" / "sts-dev.tsv"
    data = load_sts(path)
    with open(path, encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    assert tuple(header) == KORSTS_HEADER
    assert len(data) == len(rows) == 1500
    assert data.sentences1 == [row[5] for row in rows]
    assert data.sentences2 == [row[6] for row in rows]
    assert data.scores == [float(row[4]) for row in rows]
    assert any('"' in s for s in data.sentences1 + data.sentences2)  # the quotes a default CSV reader trips on


def test_shared_korsts_train_and_named_lookup(shared_data):
    assert len(load_sts("korsts_train", data_dir=shared_data)) == 5749


# ---------------------------------------------------------------------------------------------------
# Training data


def test_txt_one_sentence_per_line_blank_lines_counted(tmp_path, caplog):
    path = write(tmp_path, "wiki.txt", '첫 문장, "따옴표".\n\n  \n둘째 문장\r\n셋째\n')
    with caplog.at_level(logging.WARNING, logger="simcse.data"):
        data = load_train_data(path)
    assert data.columns == [['첫 문장, "따옴표".', "둘째 문장", "셋째"]]
    assert data.num_sent == 2 and len(data) == 3
    assert "skipped 2 blank line(s)" in caplog.text and str(path) in caplog.text


def test_txt_with_a_tab_is_rejected(tmp_path):
    path = write(tmp_path, "wiki.txt", "하나\n둘\t셋\n")
    with pytest.raises(DataFormatError, match="tab inside a sentence") as error:
        load_train_data(path)
    assert str(error.value).startswith(f"{path}, line 2:")


def test_tsv_pairs_and_triplets(tmp_path):
    pairs = load_train_data(write(tmp_path, "pairs.tsv", 'sent0\tsent1\n가 "나"\t다, 라\n마\t바\n'))
    assert pairs.columns == [['가 "나"', "마"], ["다, 라", "바"]] and pairs.num_sent == 2
    triplets = load_train_data(write(tmp_path, "nli.tsv", "sent0\tsent1\thard_neg\n가\t나\t다\n"))
    assert triplets.columns == [["가"], ["나"], ["다"]] and triplets.num_sent == 3


@pytest.mark.parametrize(
    "content, message, line",
    [
        ("sentence1\tsentence2\n가\t나\n", "header", 1),
        ("sent0\tsent1\thard_neg\n가\t나\t다\n가\t나\n", "expected 3", 3),
        ("sent0\tsent1\n가\t나\t다\n", "tab inside a sentence", 2),
        ("sent0\tsent1\n가\t나\n가\t\n", "empty sentence in column 'sent1'", 3),
    ],
)
def test_bad_training_rows(tmp_path, content, message, line):
    path = write(tmp_path, "train.tsv", content)
    with pytest.raises(DataFormatError, match=message) as error:
        load_train_data(path)
    assert str(error.value).startswith(f"{path}, line {line}:")


@pytest.mark.parametrize("name, content", [("a.txt", "\n \n"), ("b.tsv", "sent0\tsent1\n"), ("c.tsv", "")])
def test_empty_training_data_raises(tmp_path, name, content):
    with pytest.raises(DataFormatError, match="no training examples"):
        load_train_data(write(tmp_path, name, content))


def test_missing_training_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        load_train_data(tmp_path / "nope.tsv")


# ---------------------------------------------------------------------------------------------------
# Tokenization and collation


def test_tokenized_once_truncated_and_equal_to_the_tokenizer(tiny_bert_dir, korean_sentences):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    long_sentence = " ".join(korean_sentences)
    data = TrainData([korean_sentences[:5], korean_sentences[5:9] + [long_sentence]], kind="pairs")
    dataset = SimCSEDataset(tokenize_in_memory(data, TextSettings(tokenizer, 12)))

    def refuse(*args, **kwargs):
        raise AssertionError("tokenizer called after the dataset was built")

    tokenizer.__class__ = type("Refusing", (tokenizer.__class__,), {"__call__": refuse})
    for index in range(len(dataset)):
        anchor, positive = dataset[index]
        expected = AutoTokenizer.from_pretrained(tiny_bert_dir)(
            [data.columns[0][index], data.columns[1][index]], truncation=True, max_length=12
        )["input_ids"]
        assert [anchor.tolist(), positive.tolist()] == expected
    assert len(dataset[4][1]) == 12 and dataset[4][1][-1] == tokenizer.sep_token_id


def test_unsupervised_example_is_the_sentence_twice(tiny_bert_dir, korean_sentences):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    dataset = SimCSEDataset(
        tokenize_in_memory(TrainData([korean_sentences[:3]], kind="sentences"), TextSettings(tokenizer, 64))
    )
    first, second = dataset[1]
    assert np.array_equal(first, second) and first.tolist() == tokenizer(korean_sentences[1])["input_ids"]


def test_tokenized_sentences_rejects_slow_tokenizer_and_tiny_max_length(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with pytest.raises(ValueError, match="max_length"):
        tokenize_texts(["가"], tokenizer, max_length=1)

    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="not a fast tokenizer"):
        tokenize_texts(["가"], Slow(), max_length=8)


def test_collator_pads_to_the_longest_of_the_batch():
    examples = [
        (np.array([2, 5, 3]), np.array([2, 6, 7, 8, 3]), np.array([2, 3])),
        (np.array([2, 9, 9, 3]), np.array([2, 3]), np.array([2, 4, 3])),
    ]
    batch = SimCSECollator(pad_token_id=1, use_token_type_ids=True)(examples)
    assert batch["input_ids"].shape == (2, 3, 5)
    for b, example in enumerate(examples):
        for s, ids in enumerate(example):
            row, mask = batch["input_ids"][b, s], batch["attention_mask"][b, s]
            assert row[: len(ids)].tolist() == ids.tolist()
            assert (row[len(ids) :] == 1).all()
            assert mask.tolist() == [1] * len(ids) + [0] * (5 - len(ids))
    assert batch["token_type_ids"].shape == (2, 3, 5) and not batch["token_type_ids"].any()
    assert batch["input_ids"].dtype == torch.long
    with pytest.raises(ValueError, match="example 1 has 2 sentences"):
        SimCSECollator(0, False)([examples[0], examples[1][:2]])


def test_collator_for_roberta_passes_no_token_type_ids(tiny_bert_dir, tiny_roberta_dir):
    bert = SimCSECollator.for_model(
        AutoTokenizer.from_pretrained(tiny_bert_dir), AutoConfig.from_pretrained(tiny_bert_dir)
    )
    roberta_tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    roberta = SimCSECollator.for_model(roberta_tokenizer, AutoConfig.from_pretrained(tiny_roberta_dir))
    example = [(np.array([0, 7, 2]), np.array([0, 2]))]
    assert "token_type_ids" in bert(example)
    roberta_batch = roberta(example)
    assert "token_type_ids" not in roberta_batch
    assert roberta_batch["input_ids"][0, 1].tolist() == [0, 2, roberta_tokenizer.pad_token_id]
    assert roberta_tokenizer.pad_token_id == 1


def test_a_scored_pairs_file_is_read_once_and_logged_once(tmp_path, caplog):
    """Training on an STS file: its blank line and its decomposed Hangul are reported once each, not once per
    reading (the kind is recognised from the lines the reader then parses)."""
    import unicodedata

    rows = "sentence1\tsentence2\tscore\n한 남자\t남자가\t4\n\n고양이\t강아지\t1\n"
    path = write(tmp_path, "scored.tsv", unicodedata.normalize("NFD", rows))
    with caplog.at_level(logging.WARNING, logger="simcse.data"):
        data = load_train_data(path)
    assert data.kind == "scored_pairs" and data.scores == [4.0, 1.0] and data.columns[0] == ["한 남자", "고양이"]
    assert caplog.text.count("skipped 1 blank line(s)") == 1
    assert caplog.text.count("4 sentence(s) normalised") == 1
