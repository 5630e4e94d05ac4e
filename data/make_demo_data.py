"""Write the offline demo's Korean data: templated sentences whose similarity is known by construction.

Each sentence describes a scene (who, does what, where), written with one of several synonyms per part
and one of two word orders, e.g. "한 남자가 공원에서 기타를 치고 있다." and "공원 안에서 남성이 기타를
연주하고 있다." describe the same scene. The gold similarity of two sentences is 5 x (0.25 [same who]
+ 0.5 [same action] + 0.25 [same place]). Training triplets are NLI-like: an anchor, the same scene
reworded (entailment), and the same person and place doing something else (contradiction).

    python data/make_demo_data.py --output_dir outputs/demo/data

writes train.tsv (sent0, sent1, hard_neg), pairs.tsv (sent0, sent1), corpus.txt (one sentence per
line), dev.tsv and test.tsv (sentence1, sentence2, score).
"""

import argparse
import random
from pathlib import Path

from simcse.cli import refuse_empty_paths, run_main

# Each inner list names one concept in several ways.
AGENTS = [
    ["남자", "남성", "한 남자", "어떤 남자"],
    ["여자", "여성", "한 여자", "어떤 여성"],
    ["아이", "어린이", "꼬마", "어린아이"],
    ["노인", "할아버지", "어르신", "나이 든 남자"],
    ["학생", "대학생", "한 학생", "학생 한 명"],
    ["개", "강아지", "작은 개", "개 한 마리"],
    ["요리사", "주방장", "셰프", "한 요리사"],
    ["경찰", "경찰관", "순경", "한 경찰관"],
]
ACTIONS = [
    ["달리고 있다", "뛰고 있다", "달음박질하고 있다"],
    ["기타를 치고 있다", "기타를 연주하고 있다"],
    ["책을 읽고 있다", "독서를 하고 있다", "책을 보고 있다"],
    ["요리를 하고 있다", "음식을 만들고 있다", "밥을 짓고 있다"],
    ["노래를 부르고 있다", "노래하고 있다"],
    ["잠을 자고 있다", "자고 있다", "낮잠을 자고 있다"],
    ["밥을 먹고 있다", "식사를 하고 있다", "음식을 먹고 있다"],
    ["춤을 추고 있다", "춤추고 있다"],
    ["수영을 하고 있다", "헤엄치고 있다"],
    ["전화를 하고 있다", "통화하고 있다", "전화 통화를 하고 있다"],
    ["웃고 있다", "미소 짓고 있다"],
    ["울고 있다", "눈물을 흘리고 있다"],
]
PLACES = [
    ["공원에서", "공원 안에서"],
    ["부엌에서", "주방에서"],
    ["학교에서", "교실에서"],
    ["바닷가에서", "해변에서"],
    ["길에서", "거리에서", "도로 위에서"],
    ["집에서", "집 안에서"],
    ["도서관에서", "도서관 안에서"],
    ["산에서", "산속에서"],
]
WEIGHTS = (0.25, 0.5, 0.25)  # who, action, place


def subject(noun: str) -> str:
    """The noun with its subject particle: 이 after a final consonant, 가 after a vowel."""
    has_final_consonant = (ord(noun[-1]) - 0xAC00) % 28 != 0
    return noun + ("이" if has_final_consonant else "가")


def sentence(scene: tuple[int, int, int], rng: random.Random) -> str:
    who, action, place = (rng.choice(options[i]) for options, i in zip((AGENTS, ACTIONS, PLACES), scene))
    if rng.random() < 0.5:
        return f"{subject(who)} {place} {action}."
    return f"{place} {subject(who)} {action}."


def random_scene(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(len(AGENTS)), rng.randrange(len(ACTIONS)), rng.randrange(len(PLACES))


def similarity(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return 5 * sum(weight for weight, x, y in zip(WEIGHTS, a, b) if x == y)


def sts_pairs(count: int, rng: random.Random) -> list[tuple[str, str, float]]:
    """Pairs spread over every similarity level: the second scene keeps a random subset of the first's parts."""
    pairs = []
    for _ in range(count):
        first, other = random_scene(rng), random_scene(rng)
        keep = [rng.random() < 0.5 for _ in range(3)]
        second = tuple(f if k else o for f, o, k in zip(first, other, keep))
        pairs.append((sentence(first, rng), sentence(second, rng), similarity(first, second)))
    return pairs


def triplets(count: int, rng: random.Random) -> list[tuple[str, str, str]]:
    rows = []
    for _ in range(count):
        scene = random_scene(rng)
        action = rng.choice([a for a in range(len(ACTIONS)) if a != scene[1]])
        contradiction = (scene[0], action, scene[2])
        rows.append((sentence(scene, rng), sentence(scene, rng), sentence(contradiction, rng)))
    return rows


def write_tsv(path: Path, header: tuple[str, ...], rows) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="folder the demo files are written to")
    parser.add_argument("--num_train", type=int, default=4000, help="training triplets")
    parser.add_argument("--num_eval", type=int, default=500, help="pairs in each of dev and test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the templates drawn")
    args = parser.parse_args()
    refuse_empty_paths(args, "output_dir")

    rng = random.Random(args.seed)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train = triplets(args.num_train, rng)
    write_tsv(output / "train.tsv", ("sent0", "sent1", "hard_neg"), train)
    write_tsv(output / "pairs.tsv", ("sent0", "sent1"), [row[:2] for row in train])
    (output / "corpus.txt").write_text("\n".join(row[0] for row in train) + "\n", encoding="utf-8")
    for split in ("dev", "test"):
        write_tsv(output / f"{split}.tsv", ("sentence1", "sentence2", "score"), sts_pairs(args.num_eval, rng))
    print(f"wrote {len(train)} triplets and {args.num_eval} dev/test pairs each into {output}")


if __name__ == "__main__":
    run_main(main)
