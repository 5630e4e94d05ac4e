"""Two CPU processes (gloo), spawned by the tests: the gathered loss and its gradients equal one process on
the concatenated global batch; GradCache under DDP too; and a torchrun run of train.py."""

import gc
import json
import os
import subprocess

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import KOREAN_SENTENCES, REPO_ROOT, assert_one_line_error, run_script
from torch.nn.parallel import DistributedDataParallel

from simcse import distributed
from simcse.grad_cache import chunked_backward
from simcse.model import SimCSEModel
from simcse.objectives import OBJECTIVES, LossInputs, LossSettings, matryoshka
from simcse.train_data import DATA_KINDS

WORLD = 2
GLOBAL_BATCH = 8


def global_batch(model, num_sent):
    """(8, num_sent, 32) token ids: examples 0 and 5 share their positive's text (a duplicate across processes)."""
    columns = [list(KOREAN_SENTENCES[i * GLOBAL_BATCH : (i + 1) * GLOBAL_BATCH]) for i in range(num_sent)]
    columns[1][5] = columns[1][0]
    flat = [sentence for example in zip(*columns) for sentence in example]
    encoded = model.tokenizer(
        flat, padding="max_length", max_length=32, truncation=True, return_tensors="pt", return_token_type_ids=False
    )
    return {key: value.view(GLOBAL_BATCH, num_sent, 32) for key, value in encoded.items()}


# Gold scores of the global batch's pairs, for CoSENT: ties included.
GLOBAL_SCORES = torch.tensor([4.5, 0.5, 3.0, 3.0, 1.0, 5.0, 2.0, 0.0])


# The settings the objectives read: a hard-negative weight that the interleaving mistake below makes count.
SETTINGS = LossSettings(hard_negative_weight=0.7)
# The retrieval recipe's terms on top (issue 32): a teacher's KL, both false-negative guards, two Matryoshka sizes.
RECIPE = LossSettings(
    hard_negative_weight=0.7,
    distill_weight=0.5,
    teacher_temperature=0.5,
    false_negative_margin=0.05,
    guide_margin=0.02,
    matryoshka_dims=(32, 16),
    matryoshka_weights=(1.0, 0.5),
)
# Every objective, with every example width its data kinds give (K = 3 negatives for queries with documents), and
# whether the recipe's terms are on (the distillation objective always has them: it is the teacher's KL).
CASES = sorted(
    {
        (name, DATA_KINDS[kind].num_texts(3), name == "distill")
        for name, objective in OBJECTIVES.items()
        for kind in objective.data_kinds
    }
    | {("simcse", 5, True)}
)


def loss_of(objective, embeddings, input_ids, gather, scores=None, recipe=None):
    """The trainer's loss: the objective's own function (at each Matryoshka size), masks included; ``recipe``: the
    teacher's scores and the guide's embeddings of the batch, with the ``RECIPE`` settings."""
    inputs = LossInputs(embeddings, input_ids, scores, **(recipe or {}))
    return matryoshka(OBJECTIVES[objective].loss, inputs, RECIPE if recipe else SETTINGS, gather).loss


def recipe_inputs(model_dir, batch, rows=slice(None)):
    """The teacher's scores (made up, the same on every process) and a frozen guide's embeddings of ``batch``."""
    teacher = torch.randn(GLOBAL_BATCH, batch["input_ids"].shape[1] - 1, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(7)
    guide = SimCSEModel(model_dir, dropout=0.0).eval()
    with torch.no_grad():
        for parameter in guide.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
        return {"teacher_scores": teacher[rows], "guide_embeddings": guide(**batch)}


def interleaved_gather_loss(embeddings):
    """The mistake a popular library once shipped: positives and hard negatives gathered as one block per
    process, so the candidate columns run [p0, n0, p1, n1] and an anchor of process 1 is trained toward
    the hard negatives of process 0."""
    local = embeddings.shape[0]
    block = torch.cat([embeddings[:, 1], embeddings[:, 2]])  # (2B, H)
    gathered, _ = distributed.gather(block)  # (W*2B, H)
    anchors = torch.nn.functional.normalize(embeddings[:, 0], dim=-1)  # (B, H)
    logits = anchors @ torch.nn.functional.normalize(gathered, dim=-1).T / 0.05  # (B, W*2B)
    labels = torch.arange(local) + dist.get_rank() * local  # (B,)
    logits[torch.arange(local), labels + WORLD * local] += 0.7
    return torch.nn.functional.cross_entropy(logits, labels)


def worker(rank, model_dir, init_file, out_dir, num_sent, dropout, chunk, objective, recipe):
    os.environ["HF_HUB_OFFLINE"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    reference = SimCSEModel(model_dir, dropout=dropout).train()
    torch.manual_seed(0)
    model = SimCSEModel(model_dir, dropout=dropout).train()
    ddp = DistributedDataParallel(model)
    batch = global_batch(model, num_sent)
    rows = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
    local = {key: value[rows] for key, value in batch.items()}
    scored = "scored_pairs" in OBJECTIVES[objective].data_kinds
    scores, local_scores = (GLOBAL_SCORES, GLOBAL_SCORES[rows]) if scored else (None, None)
    whole_recipe, local_recipe = (
        (recipe_inputs(model_dir, batch), recipe_inputs(model_dir, local, rows)) if recipe else (None, None)
    )
    report = {}

    if chunk is None:
        # One process, the whole batch: the quantity the distributed run must reproduce.
        embeddings = reference(**batch)
        expected_loss = loss_of(objective, embeddings, batch["input_ids"], lambda r: (r, 0), scores, whole_recipe)
        expected_loss.backward()
        local_loss = loss_of(
            objective, ddp(**local), local["input_ids"], distributed.gather, local_scores, local_recipe
        )
        local_loss.backward()
        mean_loss = distributed.mean_over_processes(local_loss.detach())
        report["loss_difference"] = abs(mean_loss.item() - expected_loss.item())
        if num_sent == 3 and OBJECTIVES[objective].in_batch_negatives:
            with torch.no_grad():
                report["interleaved_difference"] = abs(
                    distributed.mean_over_processes(interleaved_gather_loss(model(**local))).item()
                    - expected_loss.item()
                )
    else:
        # Dropout on: the reference embeds this process's slice chunk by chunk with the graph (the masks
        # GradCache replays), gathers, and averages gradients as DDP does.
        rng = torch.get_rng_state()
        chunks = [dict(zip(local, values)) for values in zip(*(v.split(chunk) for v in local.values()))]
        embeddings = torch.cat([reference(**c) for c in chunks])
        loss_of(objective, embeddings, local["input_ids"], distributed.gather, local_scores, local_recipe).backward()
        for parameter in reference.parameters():
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= WORLD
        torch.set_rng_state(rng)
        chunked_backward(
            lambda c: ddp(**c),
            local,
            lambda e: loss_of(objective, e, local["input_ids"], distributed.gather, local_scores, local_recipe),
            chunk,
            no_sync=ddp.no_sync,
        )
    differences = {
        name: (parameter.grad - dict(reference.named_parameters())[name].grad).abs().max().item()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }
    report["max_gradient_difference"] = max(differences.values())
    report["parameters_with_gradients"] = len(differences)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    # Free DDP's reducer while the process group lives: freeing it after can deadlock gloo's teardown.
    dist.barrier()
    ddp = model = None
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def run_workers(tmp_path, model_dir, num_sent, dropout=0.0, chunk=None, objective="simcse", recipe=False):
    arguments = (model_dir, tmp_path / "init", tmp_path, num_sent, dropout, chunk, objective, recipe)
    mp.spawn(worker, args=arguments, nprocs=WORLD, join=True)
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


@pytest.mark.parametrize("objective, num_sent, recipe", CASES)
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path, tiny_bert_dir, objective, num_sent, recipe):
    """Every objective over two processes: the same loss and gradients as one process on the global batch (CoSENT
    ranks all 8 pairs; InfoNCE's anchors see every process's candidates; the guards mask alike)."""
    for report in run_workers(tmp_path, tiny_bert_dir, num_sent, objective=objective, recipe=recipe):
        assert report["loss_difference"] <= 1e-5
        assert report["max_gradient_difference"] <= 1e-5
        assert report["parameters_with_gradients"] == len(list(SimCSEModel(tiny_bert_dir).parameters()))
        if "interleaved_difference" in report:  # the interleaving mistake is caught by this comparison
            assert report["interleaved_difference"] > 1e-3


# GradCache under DDP in the fast suite on the widest case (K = 3 negatives, the recipe on); the others run with
# the slow tests.
GRAD_CACHE_CASES = [
    case if case == ("simcse", 5, True) else pytest.param(*case, marks=pytest.mark.slow) for case in CASES
]


@pytest.mark.parametrize("objective, num_sent, recipe", GRAD_CACHE_CASES)
def test_grad_cache_under_ddp_matches_the_full_batch(tmp_path, tiny_bert_dir, objective, num_sent, recipe):
    """Every objective with GradCache under DDP (dropout on): each process embeds its slice in chunks."""
    arguments = dict(dropout=0.1, chunk=2, objective=objective, recipe=recipe)
    for report in run_workers(tmp_path, tiny_bert_dir, num_sent, **arguments):
        assert report["max_gradient_difference"] <= 1e-5


@pytest.mark.slow
def test_torchrun_train_then_eval(tmp_path, demo_data):
    model = tmp_path / "bert"
    run_script(
        REPO_ROOT / "train" / "build_random_model.py",
        "--corpus",
        demo_data / "corpus.txt",
        "--output_path",
        model,
        "--hidden_size",
        32,
        "--num_attention_heads",
        2,
        "--intermediate_size",
        64,
    )
    output = tmp_path / "run"
    result = run_script(
        REPO_ROOT / "train" / "run_train_ddp.sh",
        "--train_data",
        demo_data / "train.tsv",
        "--valid_data",
        demo_data / "dev.tsv",
        "--batch_size",
        16,
        "--max_length",
        24,
        "--max_steps",
        4,
        "--eval_steps",
        2,
        "--grad_cache_chunk",
        4,
        "--save_steps",
        2,
        env={"MODEL": str(model), "NPROC": "2", "OUTPUT": str(output)},
    )
    info = json.loads((output / "train_args.json").read_text())
    assert info["world_size"] == 2 and info["per_process_batch"] == 8 and info["grad_cache_chunk"] == 4
    assert info["negatives_per_anchor"] == 16 - 1 + 16
    assert [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()] == [0, 2, 4]
    assert result.stdout.count("done: ") == 1  # only the first process reports
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    evaluated = run_script(
        REPO_ROOT / "evaluation" / "eval.py", "--model", output, "--test_data", demo_data / "test.tsv"
    )
    assert "Cosine Spearman" in evaluated.stdout


@pytest.mark.slow
def test_a_failed_torchrun_process_ends_in_its_own_error_line(tmp_path, demo_data, demo_bert):
    """torchrun printed its launcher's ChildFailedError traceback after the package's one error line. A bad flag
    every process finds is said once (the first process); a real crash (SIMCSE_DEBUG=1 raises) keeps its own
    traceback, and the launcher's line names each process's exit code."""
    flags = ["--train_data", demo_data / "train.tsv", "--valid_data", demo_data / "dev.tsv", "--batch_size", 16]
    env = {"MODEL": str(demo_bert), "NPROC": "2", "OUTPUT": str(tmp_path / "run")}
    bad = run_script(REPO_ROOT / "train" / "run_train_ddp.sh", *flags, "--temp", 0, env=env, check=False)
    assert_one_line_error(bad, "--temp must lie in")
    assert "ChildFailedError" not in bad.stderr
    assert "torchrun: " in bad.stderr and "rank 0: exit code 1; rank 1: exit code 1" in bad.stderr
    debug = env | {"SIMCSE_DEBUG": "1"}
    crash = run_script(REPO_ROOT / "train" / "run_train_ddp.sh", *flags, "--temp", 0, env=debug, check=False)
    assert crash.returncode == 1 and "Traceback" in crash.stderr and "ConfigError" in crash.stderr  # not hidden
    assert "torchrun: " in crash.stderr and "ChildFailedError" not in crash.stderr


@pytest.mark.slow
def test_two_processes_train_a_mixture_as_one_process(tmp_path, demo_data):
    """A two-dataset mixture (InfoNCE on triplets, cosine_mse on scored pairs, round robin) under torchrun with two
    processes logs the losses and dev scores of the same run in one process (dropout off: only the order of
    floating-point sums differs)."""
    import sys

    model = tmp_path / "bert"
    run_script(
        REPO_ROOT / "train" / "build_random_model.py",
        *("--corpus", demo_data / "corpus.txt", "--output_path", model, "--hidden_size", 32),
        *("--num_attention_heads", 2, "--intermediate_size", 64),
    )
    flags = [
        *("--model", model, "--train_data", demo_data / "train.tsv", demo_data / "dev.tsv"),
        *("--objective", "simcse", "cosine_mse", "--batch_size", 16, 8, "--valid_data", demo_data / "test.tsv"),
        *("--max_length", 24, "--max_steps", 6, "--eval_steps", 3, "--dropout", 0.0, "--learning_rate", 1e-3),
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    # One thread in every process: a math library that picks its thread count by the machine's load would sum in
    # another order when the machine is busy.
    run_script(REPO_ROOT / "train" / "train.py", *flags, "--output_path", one, env={"OMP_NUM_THREADS": "1"})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launched = subprocess.run(
        [*torchrun, str(REPO_ROOT / "train" / "train.py"), *map(str, flags), "--output_path", str(two)],
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "SIMCSE_KO_TOKEN_STORE": str(tmp_path / "store"),
        },
    )
    # Each file tokenized once, by the first process, into one store both processes map.
    for name in ("train.tsv", "dev.tsv"):
        assert launched.stdout.count(f"token store of {demo_data / name}: ") == 1, launched.stdout
        assert len(list((tmp_path / "store").glob(f"{name}-*/meta.json"))) == 1
    lines = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two)]
    assert [line["step"] for line in lines[1]] == [line["step"] for line in lines[0]] == [0, 3, 6]
    # Continuous quantities only: a rank correlation over 40 pairs jumps by ~1e-3 when float noise swaps two ranks.
    # Adam moves a weight whose gradient is float noise by up to the learning rate either way (lr * g / (|g| + eps)),
    # so the two runs' weights may differ by ~1e-3 in such coordinates: the dev Pearson of this near-random model
    # moved by 2.8e-4 in one CI run (the demo tokenizer, trained afresh each session, differs between sessions).
    for expected, got in zip(*lines):
        for key, tolerance in (("train_loss", 1e-4), ("cosine_pearson", 1e-3)):
            if expected[key] is not None:
                assert got[key] == pytest.approx(expected[key], abs=tolerance), (expected["step"], key)
        if "train_loss_by_dataset" in expected:
            assert got["train_loss_by_dataset"] == pytest.approx(expected["train_loss_by_dataset"], abs=1e-4)
    assert json.loads((two / "train_args.json").read_text())["per_process_batch"] == [8, 4]
