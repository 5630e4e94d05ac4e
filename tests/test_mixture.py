"""Several training datasets in one run, each with its objective and batch size: validation, one dataset per batch
in round-robin or proportional order, the same dataset on every torchrun process, exact resume across a dataset
switch, and each dataset's training loss."""

import dataclasses
import json
import re

import pytest
import torch
from conftest import TRAIN_SCRIPT, assert_one_line_error
from test_checkpoint import metrics_lines
from test_objectives import assert_resumes_exactly

import simcse.objectives
from simcse.batching import EpochBatchSampler
from simcse.cli import parse_args
from simcse.config import ConfigError, Part, TrainConfig
from simcse.hub import render_model_card
from simcse.loader import MixtureBatchSampler
from simcse.trainer import train


def mixture(demo_data, **changes):
    """The demo's triplets (InfoNCE, batch 16) and its dev file's 40 scored pairs (CoSENT, batch 8)."""
    settings = dict(
        train_data=[str(demo_data / "train.tsv"), str(demo_data / "dev.tsv")],
        objective=["simcse", "cosent"],
        batch_size=[16, 8],
        valid_data=str(demo_data / "test.tsv"),
    )
    return settings | changes


# ---------------------------------------------------------------------------------------------------
# The settings


def test_one_value_applies_to_every_dataset_and_one_dataset_is_configured_as_before():
    config = parse_args(["--train_data", "a.tsv", "b.tsv", "--batch_size", "32"])
    assert config.parts() == [Part("a.tsv", "simcse", 32, "a.tsv"), Part("b.tsv", "simcse", 32, "b.tsv")]
    assert parse_args(["--train_data", "a.tsv"]) == TrainConfig(train_data="a.tsv")  # scalars, not lists of one


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--objective", "simcse", "cosent", "cosent"], "--objective has 3 values for 2 --train_data file(s)"),
        (["--batch_size", "8", "8", "8"], "--batch_size has 3 values for 2 --train_data file(s)"),
        (["--objective", "simcse", "nope"], "--objective 'nope': choose one of"),
        (["--batch_size", "16", "1"], "--batch_size 1: each anchor needs in-batch negatives"),
        (["--objective", "cosent", "cosine_mse", "--hard_negative_weight", "1"], "--objective cosent has no hard neg"),
        (["--objective", "cosent", "cosent", "--no-mask_duplicate_negatives"], "has no in-batch negatives"),
    ],
)
def test_bad_mixtures_are_one_line_before_anything_loads(flags, words, demo_data, run_here, tmp_path):
    files = [str(demo_data / "train.tsv"), str(demo_data / "dev.tsv")]
    result = run_here(TRAIN_SCRIPT, "--train_data", *files, *flags, "--output_path", tmp_path / "run")
    assert result.returncode != 0
    if "choose one of" not in words:  # argparse's own message for a bad choice
        assert_one_line_error(result, words)
    else:
        assert "invalid choice: 'nope'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_file_that_does_not_fit_its_objective_names_it(demo_config, demo_data, tmp_path):
    with pytest.raises(ValueError, match=r"dev.tsv, line 1: an STS file of scored pairs: train on it with --objective"):
        train(demo_config(tmp_path / "run", **mixture(demo_data, objective=["simcse", "simcse"])))


def test_grad_cache_must_divide_every_datasets_batch():
    config = TrainConfig(train_data=["a.tsv", "b.tsv"], objective=["simcse", "cosent"], batch_size=[16, 6])
    config.grad_cache_chunk = 4
    with pytest.raises(ConfigError, match="--grad_cache_chunk 4 does not divide the per-process batch 6"):
        config.validate()


# ---------------------------------------------------------------------------------------------------
# The order of the batches


def samplers(world_size=1, rank=0):
    return [EpochBatchSampler(50, 10, 7, rank, world_size), EpochBatchSampler(24, 8, 7, rank, world_size)]


def test_round_robin_takes_each_dataset_in_turn_until_the_smallest_runs_out():
    mixed = MixtureBatchSampler(samplers(), "round_robin", seed=7)
    batches = list(mixed)
    assert [batch[0][0] for batch in batches] == [0, 1, 0, 1, 0, 1] and len(mixed) == 6
    for part, sampler in enumerate(samplers()):
        own = [[index for _, index in batch] for batch in batches if batch[0][0] == part]
        assert own == list(sampler)[:3]  # each dataset's own batches, in its own order
        assert all({p for p, _ in batch} == {part} for batch in batches if batch[0][0] == part)  # one per batch


def test_proportional_takes_every_batch_once_in_an_order_drawn_with_the_seed():
    batches = list(MixtureBatchSampler(samplers(), "proportional", seed=7))
    parts = [batch[0][0] for batch in batches]
    assert sorted(parts) == [0] * 5 + [1] * 3 and parts != sorted(parts)
    for part, sampler in enumerate(samplers()):
        assert [[i for _, i in batch] for batch in batches if batch[0][0] == part] == list(sampler)
    again = MixtureBatchSampler(samplers(), "proportional", seed=7)
    assert list(again) == batches
    again.set_epoch(1)
    assert [batch[0][0] for batch in again] != parts  # another epoch, another order


@pytest.mark.parametrize("kind", ["round_robin", "proportional"])
def test_every_process_takes_the_same_dataset_and_its_slice(kind):
    """Two processes: at each step both take the same dataset, and their slices are the one process's batch."""
    single = list(MixtureBatchSampler(samplers(), kind, seed=7))
    shards = [list(MixtureBatchSampler(samplers(2, rank), kind, seed=7)) for rank in range(2)]
    for whole, first, second in zip(single, *shards, strict=True):
        assert {p for p, _ in first} == {p for p, _ in second} == {p for p, _ in whole}
        assert first + second == whole


def test_a_resumed_epoch_starts_at_its_batch():
    whole = list(MixtureBatchSampler(samplers(), "proportional", seed=7))
    resumed = MixtureBatchSampler(samplers(), "proportional", seed=7)
    resumed.set_epoch(0, start_batch=3)
    assert list(resumed) == whole[3:] and len(resumed) == 5


# ---------------------------------------------------------------------------------------------------
# Training on a mixture


def test_each_dataset_trains_with_its_objective_and_logs_its_loss(demo_config, demo_data, tmp_path, monkeypatch):
    seen = []
    for key in ("simcse", "cosent"):
        objective = simcse.objectives.OBJECTIVES[key]

        def recording(inputs, *args, real=objective.loss, key=key):
            output = real(inputs, *args)
            seen.append((key, inputs.embeddings.shape[0], output.loss.item()))
            return output

        monkeypatch.setitem(simcse.objectives.OBJECTIVES, key, dataclasses.replace(objective, loss=recording))
    output = tmp_path / "run"
    train(demo_config(output, **mixture(demo_data), max_steps=6, eval_steps=3))
    assert [(name, size) for name, size, _ in seen] == [("simcse", 16), ("cosent", 8)] * 3
    lines = [json.loads(line) for line in metrics_lines(output)]
    for line, window in zip(lines[1:], (seen[:3], seen[3:])):
        by_dataset = line["train_loss_by_dataset"]
        triplets = [loss for name, _, loss in window if name == "simcse"]
        pairs = [loss for name, _, loss in window if name == "cosent"]
        assert by_dataset[str(demo_data / "train.tsv")] == pytest.approx(sum(triplets) / len(triplets), rel=1e-6)
        assert by_dataset[str(demo_data / "dev.tsv")] == pytest.approx(sum(pairs) / len(pairs), rel=1e-6)
        assert line["train_loss"] == pytest.approx(sum(loss for _, _, loss in window) / 3, rel=1e-6)
    info = json.loads((output / "train_args.json").read_text())
    assert info["num_train_examples"] == [120, 40] and info["per_process_batch"] == [16, 8]
    assert info["data_kind"] == ["triplets", "scored_pairs"] and info["args"]["objective"] == ["simcse", "cosent"]
    card = render_model_card(output, "user/mix")
    assert "['simcse', 'cosent']" in card and "round_robin" in card


@pytest.mark.parametrize(
    "flags",
    [
        ["--hard_negative_weight", "1"],
        ["--no-mask_duplicate_negatives"],
        ["--hard_negative_weight", "0.5", "--no-mask_duplicate_negatives"],
    ],
)
def test_triplet_flags_act_on_the_triplets_of_a_mixture_with_scored_pairs(flags, demo_data):
    """They were refused for any mixture holding a scored-pairs dataset (the joint recipe's), though they act on
    the triplets: InfoNCE reads them, CoSENT's loss is the same with or without them."""
    config = parse_args(["--train_data", str(demo_data / "train.tsv"), str(demo_data / "dev.tsv"),
                         "--objective", "simcse", "cosent", *flags])  # fmt: skip
    plain = parse_args(["--train_data", "t.tsv"]).loss_settings()
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(6, 3, 8, generator=generator)
    token_ids = torch.arange(18).reshape(6, 3, 1)
    scored = simcse.objectives.LossInputs(embeddings[:, :2], token_ids[:, :2], torch.rand(6, generator=generator))
    repeated = token_ids.clone()
    repeated[1, 1] = repeated[0, 1]  # two anchors share a positive's text: masking applies
    triplets = simcse.objectives.LossInputs(embeddings, repeated, None)
    cosent = simcse.objectives.OBJECTIVES["cosent"].loss
    assert cosent(scored, config.loss_settings(), False).loss == cosent(scored, plain, False).loss
    infonce = simcse.objectives.OBJECTIVES["simcse"].loss
    assert infonce(triplets, config.loss_settings(), False).loss != infonce(triplets, plain, False).loss


def test_the_same_file_twice_logs_each_place_in_the_mixture(demo_config, demo_data, tmp_path, monkeypatch):
    """Keyed by file name, the two losses collapsed into one key of train_loss_by_dataset."""
    seen = []
    objective = simcse.objectives.OBJECTIVES["simcse"]

    def recording(inputs, *args):
        output = objective.loss(inputs, *args)
        seen.append((inputs.embeddings.shape[0], output.loss.item()))
        return output

    monkeypatch.setitem(simcse.objectives.OBJECTIVES, "simcse", dataclasses.replace(objective, loss=recording))
    triplets = str(demo_data / "train.tsv")
    output = tmp_path / "run"
    train(demo_config(output, train_data=[triplets, triplets], batch_size=[16, 8], max_steps=4, eval_steps=4))
    by_dataset = json.loads(metrics_lines(output)[1])["train_loss_by_dataset"]
    assert list(by_dataset) == [f"{triplets} #1", f"{triplets} #2"]
    for label, size in zip(by_dataset, (16, 8)):
        losses = [loss for rows, loss in seen if rows == size]
        assert by_dataset[label] == pytest.approx(sum(losses) / len(losses), rel=1e-6)


@pytest.mark.parametrize("kind", ["round_robin", "proportional"])
def test_a_mixture_resumes_exactly_across_a_dataset_switch(demo_config, demo_data, tmp_path, kind):
    """Cut after step 2 and resumed (round robin: the next batch is the other dataset's): the same metrics and
    weights as the run never interrupted (dropout on)."""
    settings = mixture(demo_data, mixture=kind, max_steps=4, save_steps=2, eval_steps=2, dropout=0.1)
    assert_resumes_exactly(demo_config, tmp_path, **settings)


def test_the_progress_bar_names_each_datasets_loss_by_its_file(demo_data, demo_train_flags, run_here, tmp_path):
    """It showed loss_1, loss_2."""
    files = [demo_data / "train.tsv", demo_data / "dev.tsv"]
    both = ["--train_data", *files, "--objective", "simcse", "cosent", "--batch_size", 16, 8]  # the last flag wins
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "run", max_steps=10, eval_steps=10), *both)
    assert result.returncode == 0, result.stderr
    last = [line for line in result.stderr.splitlines() if line.startswith("training:")][-1]
    assert re.search(r"loss train\.tsv=\d+\.\d{4}, loss dev\.tsv=\d+\.\d{4}", last), last
