"""Model card and Hub push; the network calls are replaced, the Hub being unreachable here."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, assert_one_line_error, kind_files, run_script
from huggingface_hub.utils import filter_repo_objects

import simcse.hub
from simcse.evaluate import METRIC_KEYS
from simcse.model import SimCSEModel
from simcse.objectives import OBJECTIVES
from simcse.poolers import POOLERS
from simcse.run_folder import written_by_a_run
from simcse.tasks import write_eval_report
from simcse.train_data import DATA_KINDS
from simcse.trainer import train

SECRET = "hf_thisIsNotARealTokenButMustNeverBeWritten"


@pytest.fixture
def checkpoint_folder(tiny_bert_dir, tmp_path):
    model = SimCSEModel(tiny_bert_dir, max_length=48)
    model.save_pretrained(tmp_path)
    args = {
        "model": "klue/bert-base",
        "train_data": "data/kornli/kornli_triplets.tsv",
        "batch_size": 256,
        "learning_rate": 5e-5,
        "temp": 0.05,
        "pooler": "cls",
        "max_length": 48,
        "epochs": 1,
    }
    (tmp_path / "train_args.json").write_text(json.dumps({"args": args}))
    results = {
        "korsts_dev": {key: 0.8 + i / 1000 for i, key in enumerate(METRIC_KEYS)},
        "korsts_test": {key: 0.7 + i / 1000 for i, key in enumerate(METRIC_KEYS)},
        "klue_sts_dev": {key: 0.6 + i / 1000 for i, key in enumerate(METRIC_KEYS)},
    }
    write_eval_report(tmp_path / "eval_results.json", "outputs/x", model, {"sts": results})
    # What must stay local: a training checkpoint (nested files too), a save cut short by a crash, the lock.
    for unpublished in (
        "checkpoint-100/training_state.pt",
        "checkpoint-100/2_Dense/model.safetensors",
        ".staging-model/model.safetensors",
        ".lock",
    ):
        (tmp_path / unpublished).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / unpublished).write_bytes(b"state")
    return tmp_path


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_card_metadata_parses_and_holds_the_eval_results(checkpoint_folder):
    card = simcse.hub.render_model_card(checkpoint_folder, "me/sup-simcse-bert-base")
    meta = front_matter(card)
    assert meta["language"] == "ko" and meta["pipeline_tag"] == "sentence-similarity"
    assert meta["library_name"] == "sentence-transformers" and "transformers" in meta["tags"]
    assert meta["base_model"] == "klue/bert-base"
    assert "kakaobrain/kor_nli" in meta["datasets"] and "klue/klue" in meta["datasets"]
    report = json.loads((checkpoint_folder / "eval_results.json").read_text())["results"]
    found = {}
    (entry,) = meta["model-index"]
    assert entry["name"] == "me/sup-simcse-bert-base"
    for result in entry["results"]:
        dataset = (result["dataset"]["name"], result["dataset"]["split"])
        for metric in result["metrics"]:
            found[dataset + (metric["type"],)] = metric["value"]
    splits = {
        "korsts_dev": ("KorSTS", "validation"),
        "korsts_test": ("KorSTS", "test"),
        "klue_sts_dev": ("KLUE-STS", "validation"),
    }
    expected = {splits[name] + (key,): value for name, metrics in report.items() for key, value in metrics.items()}
    assert found == expected


def test_card_body_has_recipe_results_and_usage(checkpoint_folder):
    card = simcse.hub.render_model_card(checkpoint_folder, "me/model")
    assert "| `learning_rate` | `5e-05` |" in card and "| `batch_size` | `256` |" in card
    assert "| me/model | " in card and f"{100 * (0.7 + 10 / 1000):.2f}" in card  # KorSTS test avg, x100
    assert "outputs.pooler_output" in card and 'SentenceTransformer("me/model")' in card


def test_card_usage_follows_the_pooler(tiny_bert_dir, tmp_path):
    SimCSEModel(tiny_bert_dir, pooler="cls", mlp_only_train=True).save_pretrained(tmp_path)
    card = simcse.hub.render_model_card(tmp_path, "me/unsup")
    assert "last_hidden_state[:, 0]" in card and "pooler_output" not in card.split("## Usage")[1]
    assert "model-index" not in card  # no eval_results.json: no results claimed


@pytest.fixture
def fake_hub(monkeypatch):
    calls = {}

    def create_repo(repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(**kwargs):
        calls["upload_folder"] = kwargs
        # The files upload_folder would send: its own filter, applied to the folder's relative paths.
        folder = kwargs["folder_path"]
        files = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*")) if path.is_file()]
        calls["uploaded"] = list(
            filter_repo_objects(
                files, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=kwargs.get("ignore_patterns")
            )
        )

    monkeypatch.setattr(simcse.hub, "create_repo", create_repo)
    monkeypatch.setattr(simcse.hub, "upload_folder", upload_folder)
    monkeypatch.setattr(simcse.hub, "whoami", lambda token: {"name": "me"})
    monkeypatch.setattr(simcse.hub.hub_constants, "HF_HUB_OFFLINE", False)  # the tests run with the Hub offline
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return calls


def assert_token_written_nowhere(folder, *texts):
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for text in texts:
        assert SECRET not in text


def test_push_sends_the_folder_repo_and_privacy(checkpoint_folder, fake_hub, capsys):
    url = simcse.hub.push_checkpoint(checkpoint_folder, "me/model", private=True)
    assert url == "https://huggingface.co/me/model"
    assert fake_hub["create_repo"]["repo_id"] == "me/model" and fake_hub["create_repo"]["private"] is True
    upload = fake_hub["upload_folder"]
    assert upload["repo_id"] == "me/model" and upload["folder_path"] == checkpoint_folder
    uploaded = fake_hub["uploaded"]
    assert not [path for path in uploaded if path.startswith(("checkpoint-", ".staging-", ".lock"))]
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "simcse_config.json",
        "modules.json",
        "2_Dense/model.safetensors",
        "eval_results.json",
        "train_args.json",
    } <= set(uploaded)
    assert "token" not in upload and "token" not in fake_hub["create_repo"]
    assert (checkpoint_folder / "README.md").read_text().startswith("---\n")
    assert_token_written_nowhere(checkpoint_folder, *capsys.readouterr())


def test_push_refuses_a_folder_without_a_checkpoint(tmp_path, fake_hub):
    with pytest.raises(FileNotFoundError, match="config.json"):
        simcse.hub.push_checkpoint(tmp_path, "me/model")
    assert not fake_hub


def test_push_to_hub_script(checkpoint_folder, fake_hub, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", str(checkpoint_folder), "me/public-model"])
    runpy.run_path(str(REPO_ROOT / "evaluation" / "push_to_hub.py"), run_name="__main__")
    assert fake_hub["create_repo"]["private"] is False
    assert fake_hub["upload_folder"]["folder_path"] == checkpoint_folder
    assert_token_written_nowhere(checkpoint_folder, *capsys.readouterr())


def test_train_pushes_the_best_checkpoint(demo_config, demo_data, demo_bert, tmp_path, fake_hub, capsys):
    from simcse.trainer import train

    output = tmp_path / "run"
    result = train(demo_config(output, max_steps=2, push_to_hub="me/run", hub_private=True))
    assert fake_hub["create_repo"]["private"] is True and fake_hub["upload_folder"]["folder_path"] == output
    report = json.loads((output / "eval_results.json").read_text())
    assert report["results"][str(demo_data / "dev.tsv")]["cosine_spearman"] == result.best_score
    card = (output / "README.md").read_text()
    assert "base_model" not in front_matter(card) and f"| `model` | `{demo_bert.name}` |" in card  # a local folder
    assert str(demo_bert.parent) not in card  # no path of this machine in a published card
    assert_token_written_nowhere(output, *capsys.readouterr())


def run_card_snippet(folder, monkeypatch) -> torch.Tensor:
    """The card's transformers snippet, run with the folder as the repo (hf_hub_download answers from it)."""
    import huggingface_hub

    card = simcse.hub.render_model_card(folder, str(folder))
    snippet = card.split("## Usage")[1].split("```python")[1].split("```")[0]
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: str(Path(repo) / name))
    namespace = {}
    exec(snippet, namespace)
    return namespace["embeddings"]


@pytest.mark.parametrize("pooler", POOLERS)
@pytest.mark.parametrize("model_type", ["bert", "electra"])  # the head inside the encoder, and beside it
def test_the_card_snippet_computes_encodes_embedding(pooler, model_type, demo_encoder_of, tmp_path, monkeypatch):
    torch.manual_seed(0)
    SimCSEModel(demo_encoder_of(model_type), pooler=pooler, fresh_head=True, prompt="질문: ").save_pretrained(tmp_path)
    model = SimCSEModel(tmp_path)
    expected = torch.from_numpy(model.encode(list(simcse.hub.USAGE_SENTENCES)))
    torch.testing.assert_close(run_card_snippet(tmp_path, monkeypatch), expected, atol=1e-5, rtol=1e-5)


def test_push_to_hub_script_offline_is_one_line(checkpoint_folder):
    """With the Hub offline (as in these tests) the script says so in one line, before anything is written."""
    before = sorted(path.name for path in checkpoint_folder.iterdir())
    result = run_script(REPO_ROOT / "evaluation" / "push_to_hub.py", checkpoint_folder, "me/model", check=False,
                        env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert_one_line_error(result, "HF_HUB_OFFLINE is set")
    assert sorted(path.name for path in checkpoint_folder.iterdir()) == before
    # No network (a closed port as the Hub) with a token: it was an unexpected ConnectError.
    unreachable = {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_" + "x" * 34, "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = run_script(REPO_ROOT / "evaluation" / "push_to_hub.py", checkpoint_folder, "me/model", check=False,
                        env=unreachable)  # fmt: skip
    assert_one_line_error(result, "pushing to me/model: the Hub cannot be reached or refuses the token")
    assert sorted(path.name for path in checkpoint_folder.iterdir()) == before


@pytest.mark.parametrize(
    "objective, kind", [(name, kind) for name, objective in OBJECTIVES.items() for kind in objective.data_kinds]
)
def test_every_save_writes_a_card_with_the_runs_results_and_no_path_of_this_machine(
    objective, kind, demo_config, demo_data, tmp_path
):
    """There was no card until a push, and the pushed one held the absolute paths of the model and the data."""
    data = kind_files(demo_data, tmp_path)[kind]
    output = tmp_path / "run"
    distill = {"distill_weight": 1.0} if objective == "distill" else {}
    result = train(demo_config(output, objective=objective, train_data=str(data), batch_size=8, max_steps=2, **distill))
    card = (output / "README.md").read_text(encoding="utf-8")
    assert written_by_a_run(output / "README.md") and "# run" in card  # named after its folder, until pushed
    assert f"trained with {OBJECTIVES[objective].card_name} on {DATA_KINDS[kind].card_name}" in card
    assert str(tmp_path) not in card and "/tmp" not in card  # the model, the data, the dev set: base names
    best = next(line for line in result.history if line["step"] == result.best_step)
    assert "**dev (dev.tsv)**" in card and f"{100 * best['cosine_spearman']:.2f}" in card  # metrics.jsonl's best


def test_a_users_readme_is_kept_and_a_second_stage_card_holds_the_first_stages_recipe(demo_config, demo_data, tmp_path):
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    train(demo_config(stage1, max_steps=4, save_steps=2, temp=0.07))
    assert written_by_a_run(stage1 / "README.md")
    (stage1 / "README.md").write_text("# my notes\n", encoding="utf-8")
    simcse.hub.write_run_card(stage1, "me/stage1")  # what each save of the best model does
    train(
        demo_config(stage1, max_steps=4, save_steps=2, temp=0.07, resume_from_checkpoint=str(stage1 / "checkpoint-2"))
    )
    assert (stage1 / "README.md").read_text(encoding="utf-8") == "# my notes\n"  # not the package's: kept
    scored = str(demo_data / "dev.tsv")
    train(demo_config(stage2, model=str(stage1), objective="cosent", train_data=scored, batch_size=8, max_steps=2))
    card = (stage2 / "README.md").read_text(encoding="utf-8")
    assert "trained with CoSENT on scored sentence pairs from `stage1`" in card
    first = card.index("## Stage 1: `stage1`")
    assert "| `temp` | `0.07` |" in card[first:] and "| `objective` | `simcse` |" in card[first:]
    assert str(tmp_path) not in card
