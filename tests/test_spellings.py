"""One spelling rule for every `imagenette` command: a flag is its option's Python name (underscores, dotted groups),
as LightningCLI spells `--ckpt_path` and `--data.predict_dir`; old spellings still work, and say so."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from imagenette_drift.cli import EXTRA_COMMANDS, cli_main
from imagenette_drift.commands import drift, export, serve
from imagenette_drift.commands._options import RENAMED, CommandParser

RULE = re.compile(r"--[a-z][a-z0-9]*(_[a-z0-9]+)*(\.[a-z][a-z0-9]*(_[a-z0-9]+)*)*")
# The smallest valid command line of each command (and subcommand); a flag under test is appended to it.
BASE: dict[tuple[str, str | None], list[str]] = {
    ("drift", None): ["--ckpt_path", "a.ckpt"],
    ("serve", None): ["--ckpt_path", "a.ckpt"],
    ("monitor", None): ["--ckpt_path", "a.ckpt"],
    ("export", None): ["--ckpt_path", "a.ckpt", "--output", "b.ckpt"],
    ("export-labelled", None): ["--log", "log", "--output", "out"],
    ("report", None): ["--log_dir", "runs"],
    ("gate", None): ["--candidate", "c.ckpt"],
    ("registry", "list"): ["list"],
    ("registry", "show"): ["show", "champion"],
    ("registry", "register"): ["register", "--ckpt_path", "a.ckpt"],
    ("registry", "promote"): ["promote", "0123456789ab"],
    ("registry", "lineage"): ["lineage"],
    ("canary", "start"): ["start", "--service", "s", "--region", "r", "--image", "i", "--candidate", "c"],
    ("canary", "decide"): ["decide", "--log", "log"],
    ("canary", "promote"): ["promote", "--service", "s", "--region", "r"],
    ("canary", "rollback"): ["rollback", "--service", "s", "--region", "r", "--stable_revision", "s-1"],
}


def _parser(command: str) -> CommandParser:
    module = importlib.import_module(EXTRA_COMMANDS[command][0].split(":")[0])
    return module.build_parser()


def _parsers(parser: argparse.ArgumentParser, name: str | None = None) -> Iterator[tuple[str | None, Any]]:
    """(subcommand or None, parser) for the parser and each of its subcommands."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _parsers(subparser, sub)


def offending_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The flags of `parser` (and its subcommands) that break the rule: not `--` + their key, snake_case."""
    bad = []
    for _, each in _parsers(parser):
        for action in each._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                name = flag.removesuffix("+")  # jsonargparse's spelling for appending to a list
                if not (RULE.fullmatch(name) and name == f"--{action.dest}"):
                    bad.append(flag)
    return bad


@pytest.mark.parametrize("command", sorted(EXTRA_COMMANDS))
def test_every_flag_of_every_command_follows_the_rule_and_has_help(command: str) -> None:
    parser = _parser(command)
    assert offending_flags(parser) == []
    for _, each in _parsers(parser):
        for action in each._actions:
            assert action.help or not action.option_strings, (
                f"imagenette {command}: {action.dest} has no help"
            )
    assert sum(len(a.option_strings) > 0 for _, p in _parsers(parser) for a in p._actions) > 1


def test_the_rule_check_catches_a_dashed_flag() -> None:
    parser = export.build_parser()
    parser.add_argument("--some-dash-flag", help="a flag that breaks the rule")
    parser.add_argument("--Camel", help="so does this one")
    assert offending_flags(parser) == ["--some-dash-flag", "--Camel"]


def _value(typehint: Any) -> list[str]:
    """A valid command-line value (nothing for a switch) of an option typed `typehint`, not its default."""
    args = [a for a in get_args(typehint) if a is not type(None)]
    if get_origin(typehint) is not Literal and len(args) == 1 and get_origin(typehint) is not list:
        typehint = args[0]  # Optional[X] -> X
    if typehint is bool:
        return []
    if get_origin(typehint) is Literal:
        return [str(get_args(typehint)[-1])]
    if typehint is float or getattr(typehint, "_type", None) is float:
        return ["0.5"]
    if typehint is int or getattr(typehint, "_type", None) is int:
        return ["4"]
    return ["x"]


def _alias_cases() -> Iterator[tuple[str, str | None, str, str, list[str]]]:
    for command in sorted(EXTRA_COMMANDS):
        for sub, parser in _parsers(_parser(command)):
            for action in parser._actions:
                for old, new in RENAMED.items():
                    if new in action.option_strings:
                        yield command, sub, old, new, _value(getattr(action, "_typehint", None))


ALIAS_CASES = list(_alias_cases())


def test_every_old_spelling_is_the_alias_of_a_flag() -> None:
    assert {old for _, _, old, _, _ in ALIAS_CASES} == set(RENAMED)


@pytest.mark.parametrize(
    ("command", "sub", "old", "new", "value"),
    ALIAS_CASES,
    ids=[f"{c}-{s or ''}-{old}" for c, s, old, _, _ in ALIAS_CASES],
)
def test_an_old_spelling_parses_as_the_new_one_and_names_it(
    command: str,
    sub: str | None,
    old: str,
    new: str,
    value: list[str],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = BASE[command, sub]
    parsed_new = _parser(command).parse_args([*base, new, *value])
    assert capsys.readouterr().err == ""
    parsed_old = _parser(command).parse_args([*base, old, *value])
    err = capsys.readouterr().err
    assert parsed_old.as_dict() == parsed_new.as_dict()
    assert len(err.splitlines()) == 1 and f"{old} is deprecated" in err and f"use {new} " in err
    if value:  # the --flag=value form too
        assert _parser(command).parse_args([*base, f"{old}={value[0]}"]).as_dict() == parsed_new.as_dict()


def test_a_bad_value_under_an_old_spelling_fails_as_under_the_new_one(capsys: pytest.CaptureFixture) -> None:
    """One line naming the new flag and the valid choices, exit 2, either way."""
    errors = []
    for flag in ("--severity", "--data.severity"):
        with pytest.raises(SystemExit) as exit_info:
            drift.build_parser().parse_args(["--ckpt_path", "a.ckpt", flag, "7"])
        assert exit_info.value.code == 2
        errors.append(capsys.readouterr().err.splitlines()[-1])
    assert errors[0] == errors[1]
    assert errors[1] == (
        "imagenette drift: error: argument --data.severity: invalid choice: '7' (choose from 1, 2, 3, 4, 5)"
    )


def test_a_switch_takes_no_value_or_true_false(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = serve.build_parser()
    assert parser.parse_args(["--no_tta"]).no_tta is True
    assert parser.parse_args(["--no_tta", "false"]).no_tta is False
    assert parser.parse_args([]).no_tta is False


def test_a_list_flag_is_repeated_to_add_items() -> None:
    from imagenette_drift.commands import gate

    args = gate.build_parser().parse_args(["--candidate", "c", "--output", "a.md", "--output=a.json"])
    assert args.output == [Path("a.md"), Path("a.json")]


def test_drift_takes_the_data_root_as_predict_and_test_do(tmp_path: Path) -> None:
    args = drift.build_parser().parse_args(["--ckpt_path", "a.ckpt", "--data.root", str(tmp_path)])
    assert args.data.root == tmp_path and args.data.predict_dir is None


def test_the_checkpoint_flag_is_required_under_either_spelling(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export.build_parser().parse_args(["--output", "b.ckpt"])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err
        == "imagenette export: error: the following arguments are required: --ckpt_path\n"
    )


def test_an_old_spelling_works_through_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`imagenette drift --checkpoint X` runs as before (here: to the missing-file error) and prints the rename."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["drift", f"--checkpoint={tmp_path / 'missing.ckpt'}", f"--output={tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "--checkpoint is deprecated and will be removed; use --ckpt_path" in err and "does not exist" in err
    )


def test_abbreviations_are_refused(capsys: pytest.CaptureFixture) -> None:
    """`--data.pred` is not taken for `--data.predict_dir` (nor `--ckpt` for `--ckpt_path`), as in Lightning's."""
    for argv, error in (
        (["--ckpt", "a.ckpt"], "unrecognized arguments: --ckpt a.ckpt"),
        (["--ckpt_path", "a.ckpt", "--data.pred", "x"], "unrecognized arguments: --data.pred x"),
    ):
        with pytest.raises(SystemExit):
            drift.build_parser().parse_args(argv)
        assert error in capsys.readouterr().err
