"""TrainConfig is the one declaration of every setting: the parser, the README's flag table, the resume check
and the model card's recipe all follow it."""

import argparse
import dataclasses
import re

import pytest
from conftest import doc_section

from simcse.cli import build_parser, parse_args
from simcse.config import (
    CARD_SETTINGS,
    RESUME_MUST_MATCH,
    TrainConfig,
    upgrade_saved_settings,
)
from simcse.objectives import OBJECTIVES
from simcse.poolers import POOLERS
from simcse.run_setup import check_resumable

FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}


def readme_flag_table() -> dict[str, str]:
    """flag -> default cell of the README's train.py table, backticks removed."""
    section = doc_section("train/train.py")
    rows = re.findall(r"^\| `(--[a-z_]+)` \| ([^|]*) \|", section, re.M)
    assert rows, "no flag table under ## train/train.py (docs/training.md)"
    return {flag: cell.replace("`", "").strip() for flag, cell in rows}


def parser_flags() -> dict[str, object]:
    """Each flag --help shows -> its default, as the generated parser holds them (old names are hidden)."""
    parser = build_parser()
    return {
        action.option_strings[0]: action.default
        for action in parser._actions
        if action.option_strings and action.dest != "help" and action.help != argparse.SUPPRESS
    }


def test_readme_flag_table_lists_exactly_the_generated_flags():
    assert list(readme_flag_table()) == list(parser_flags())
    # An option's line is indented by two spaces; the usage and the help texts wrap onto deeper lines.
    shown = dict.fromkeys(re.findall(r"^ {2}(--[a-z_]+)", build_parser().format_help(), re.M))
    assert list(readme_flag_table()) == [flag for flag in shown if flag != "--help"]


def readme_meaning(flag: str) -> str:
    section = doc_section("train/train.py")
    return re.search(rf"^\| `{flag}` \| [^|]* \| ([^\n]*) \|$", section, re.M).group(1)


@pytest.mark.parametrize("flag, table", [("--pooler", POOLERS), ("--objective", OBJECTIVES)])
def test_readme_choices_are_the_tables(flag, table):
    """The README's cell lists exactly the table's names, in its order: a new entry needs its README row."""
    listed = re.findall(r"`([a-z_0-9]+)`", readme_meaning(flag))  # names, not flags such as `--temp`
    assert listed == list(table)


def test_an_old_flag_name_is_accepted_but_not_shown():
    assert parse_args(["--train_data", "x.tsv", "--eval_step", "7"]).eval_steps == 7
    assert parse_args(["--train_data", "x.tsv"]).eval_steps == 100
    assert "--eval_step " not in build_parser().format_help()


@pytest.mark.parametrize("flag", list(parser_flags()))
def test_readme_flag_table_shows_each_default(flag):
    cell, default = readme_flag_table()[flag], parser_flags()[flag]
    field = FIELDS[flag.removeprefix("--")]
    if field.name == "train_data":
        assert cell == "required"
    elif default is None:
        assert cell == field.metadata["none_means"].replace("`", "")
    elif isinstance(default, bool):
        assert cell == ("on" if default else "off")
    elif isinstance(default, (int, float)):
        assert float(cell) == default
    else:
        assert cell == default


def test_parser_defaults_are_the_config_defaults_and_old_names_still_parse():
    assert parse_args(["--train_data", "t.tsv"]) == TrainConfig(train_data="t.tsv")
    assert parse_args(["--train_data", "t.tsv", "--eval_step", "7"]).eval_steps == 7
    config = parse_args(["--train_data", "t.tsv", "--no-unpad", "--amp", "--max_steps", "5", "--temp", "0.1"])
    assert (config.unpad, config.amp, config.max_steps, config.temp) == (False, True, 5, 0.1)
    assert set(vars(build_parser().parse_args(["--train_data", "t.tsv"]))) == set(FIELDS)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch_size", "1"], "--batch_size 1"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--warmup_ratio", "1"], "--warmup_ratio must lie in [0, 1)"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--weight_decay", "-1"], "--weight_decay must be non-negative"),
        (["--grad_cache_chunk", "0"], "--grad_cache_chunk must be at least 1"),
        (["--max_length", "1"], "--max_length must be at least 2"),
        (["--eval_steps", "0"], "--eval_steps must be at least 1"),
        (["--pooler", "avg", "--mlp_only_train"], "--mlp_only_train needs --pooler cls"),
        (["--temp", "inf"], "--temp must lie in [0.001, 10.0]"),
        (["--temp", "1e-30"], "--temp must lie in [0.001, 10.0]"),
        (["--temp", "nan"], "--temp must lie in"),
        (["--hard_negative_weight", "nan"], "--hard_negative_weight must be a finite number"),
        (["--hard_negative_weight=-inf"], "--hard_negative_weight must be a finite number"),
        (["--learning_rate", "inf"], "--learning_rate must be positive and finite"),
        (["--weight_decay", "inf"], "--weight_decay must be non-negative and finite"),
        (["--max_grad_norm", "nan"], "--max_grad_norm must be non-negative and finite"),
        (["--push_to_hub", "me/bad name!"], "--push_to_hub 'me/bad name!' is not a valid Hub repo id"),
        (["--push_to_hub", "a/b/c"], "--push_to_hub 'a/b/c' is not a valid Hub repo id"),
        (["--report_to", "tensorboard", "tensorboard"], "names a tracker twice"),
        (["--num_negatives", "0", "--hard_negative_weight", "1"], "--hard_negative_weight does nothing there"),
    ],
)
def test_bad_values_are_refused_by_name(flags, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_args(["--train_data", "t.tsv", *flags])


def changed_value(field: dataclasses.Field):
    value = TrainConfig(train_data="t.tsv").__getattribute__(field.name)
    if field.metadata["choices"]:
        return next(choice for choice in field.metadata["choices"] if choice != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return "other"


@pytest.mark.parametrize("name", list(FIELDS))
def test_resume_refuses_exactly_the_settings_that_change_the_run(name):
    started = TrainConfig(train_data="t.tsv")
    resumed = dataclasses.replace(started, **{name: changed_value(FIELDS[name])})
    if name in RESUME_MUST_MATCH:
        with pytest.raises(ValueError, match=f"--{name} "):
            check_resumable(resumed, {"config": dataclasses.asdict(started)})
    else:
        check_resumable(resumed, {"config": dataclasses.asdict(started)})


def test_the_derived_lists_are_the_documented_ones():
    """The resume check and the card's recipe are what earlier releases listed by hand."""
    assert set(RESUME_MUST_MATCH) == set(
        "model tokenizer pooler mlp_only_train dropout unpad prompt query_prompt document_prompt train_data valid_data "
        "valid_samples data_dir max_length document_max_length num_negatives objective batch_size mixture epochs "
        "max_steps learning_rate weight_decay warmup_ratio max_grad_norm temp "
        "hard_negative_weight mask_duplicate_negatives grad_cache_chunk amp eval_strategy eval_steps seed "
        "distill_weight teacher_temperature false_negative_margin guide_model guide_margin matryoshka_dims "
        "matryoshka_weights lora_rank lora_alpha lora_dropout lora_target_modules model_dtype".split()
    )
    assert set(CARD_SETTINGS) == set(
        "model train_data valid_samples pooler mlp_only_train prompt query_prompt document_prompt objective max_length "
        "document_max_length num_negatives batch_size mixture epochs max_steps learning_rate weight_decay warmup_ratio "
        "max_grad_norm temp hard_negative_weight dropout amp seed distill_weight teacher_temperature "
        "false_negative_margin guide_model guide_margin matryoshka_dims matryoshka_weights lora_rank lora_alpha "
        "lora_dropout lora_target_modules model_dtype".split()
    )


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default():
    saved = dataclasses.asdict(TrainConfig(train_data="t.tsv"))
    del saved["document_max_length"], saved["num_negatives"]
    check_resumable(TrainConfig(train_data="t.tsv"), {"config": saved})
    with pytest.raises(ValueError, match="--document_max_length 512 -> 256"):
        check_resumable(TrainConfig(train_data="t.tsv", document_max_length=256), {"config": saved})


def test_settings_saved_under_old_names_are_read_under_the_new_ones():
    assert upgrade_saved_settings({"eval_step": 125, "seed": 1}) == {"eval_steps": 125, "seed": 1}
    saved = dataclasses.asdict(TrainConfig(train_data="t.tsv"))
    saved["eval_step"] = saved.pop("eval_steps")
    check_resumable(TrainConfig(train_data="t.tsv"), {"config": saved})
    with pytest.raises(ValueError, match="--eval_steps 100 -> 5"):
        check_resumable(TrainConfig(train_data="t.tsv", eval_steps=5), {"config": saved})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 1}, "--batch_size 1"),
        ({"train_data": ""}, "--train_data is required"),
        ({"pooler": "avg", "mlp_only_train": True}, "--mlp_only_train needs --pooler cls"),
        ({"warmup_ratio": 1.0}, "--warmup_ratio"),
        ({"temp": 0.0}, "--temp"),
        ({"max_steps": 0}, "--max_steps"),
        ({"dropout": -0.1}, "--dropout"),
    ],
)
def test_config_validation(changes, message):
    config = TrainConfig(**{"train_data": "train.tsv", **changes})
    with pytest.raises(ValueError, match=message):
        config.validate()
    TrainConfig(train_data="train.tsv").validate()  # the defaults are valid


@pytest.mark.parametrize(
    "flags, value",
    [([], True), (["--eval_at_start"], True), (["--eval_at_start", "false"], False),
     (["--eval_at_start", "Off"], False), (["--eval_at_start", "1"], True), (["--no-eval_at_start"], False),
     (["--eval_at_start=no"], False)],
)  # fmt: skip
def test_a_switch_on_by_default_takes_no_flag_or_a_word(flags, value):
    assert parse_args(["--train_data", "t.tsv", *flags]).eval_at_start is value


@pytest.mark.parametrize("flags, value", [([], False), (["--amp"], True), (["--amp", "true"], True),
                                          (["--amp", "off"], False), (["--no-amp"], False)])  # fmt: skip
def test_a_switch_off_by_default_takes_the_same_forms(flags, value):
    assert parse_args(["--train_data", "t.tsv", *flags]).amp is value


@pytest.mark.parametrize("flags", [["--eval_at_start", "maybe"], ["--no-eval_at_start", "false"]])
def test_a_switch_refuses_another_word(flags, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--train_data", "t.tsv", *flags])
    assert "give --eval_at_start true or false, or --no-eval_at_start" in capsys.readouterr().err
