"""Shared fixtures: tiny random encoders with a WordPiece tokenizer trained here, and the shared data."""

import os

# Nothing in the tests may reach the Hugging Face Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from simcse.random_encoder import build_random_encoder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SIMCSE_KO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

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
    "그는 \"내일 보자\"라고 말했다.",
    "그녀는 \"정말요?\"라고 물었다.",
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


@pytest.fixture(scope="session")
def korean_sentences() -> list[str]:
    return list(KOREAN_SENTENCES)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_random_encoder(tmp_path_factory.mktemp("tiny-bert"), KOREAN_SENTENCES * 3, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return build_random_encoder(
        tmp_path_factory.mktemp("tiny-roberta"), KOREAN_SENTENCES * 3, model_type="roberta", vocab_size=400
    )


@pytest.fixture(params=["bert", "roberta"])
def tiny_model_dir(request, tiny_bert_dir, tiny_roberta_dir) -> Path:
    return {"bert": tiny_bert_dir, "roberta": tiny_roberta_dir}[request.param]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Korean data not found at {SHARED_DATA} (set SIMCSE_KO_SHARED_DATA to its folder)")
    return SHARED_DATA
