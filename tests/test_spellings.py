"""One spelling per concept: the project's commands take Lightning's flag names; old spellings still work, and say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagenette_drift.cli import cli_main
from imagenette_drift.commands import drift, export, serve
from imagenette_drift.commands._options import RENAMED

CASES = {
    "drift": (
        drift.build_parser,
        [
            "--ckpt_path",
            "a.ckpt",
            "--data.predict_dir",
            "uploads",
            "--data.corruption",
            "fog",
            "--data.severity",
            "2",
        ],
    ),
    "serve": (serve.build_parser, ["--ckpt_path", "gs://bucket/a.ckpt"]),
    "export": (export.build_parser, ["--ckpt_path", "a.ckpt", "--output", "b.ckpt"]),
}


def _old_spelling(argv: list[str]) -> list[str]:
    new_to_old = {new: old for old, new in RENAMED.items()}
    return [new_to_old.get(arg, arg) for arg in argv]


@pytest.mark.parametrize("command", sorted(CASES))
def test_old_and_new_spellings_parse_alike_and_the_old_one_is_flagged(
    command: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODEL_URI", raising=False)
    build_parser, argv = CASES[command]
    new = build_parser().parse_args(argv)
    assert capsys.readouterr().err == ""
    old_argv = _old_spelling(argv)
    assert old_argv != argv
    old = build_parser().parse_args(old_argv)
    assert old == new and isinstance(new.ckpt_path, str | Path)
    err = capsys.readouterr().err
    for flag in set(old_argv) - set(argv):
        assert f"{flag} is deprecated and will be removed; use {RENAMED[flag]}" in err


def test_drift_takes_the_data_root_as_predict_and_test_do(tmp_path: Path) -> None:
    args = drift.build_parser().parse_args(["--ckpt_path", "a.ckpt", "--data.root", str(tmp_path)])
    assert args.root == tmp_path and args.predict_dir is None


def test_the_checkpoint_flag_is_required_under_either_spelling(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        export.build_parser().parse_args(["--output", "b.ckpt"])
    assert "--ckpt_path/--checkpoint" in capsys.readouterr().err


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
        (["--ckpt", "a.ckpt"], "required: --ckpt_path/--checkpoint"),
        (["--ckpt_path", "a.ckpt", "--data.pred", "x"], "unrecognized arguments: --data.pred x"),
    ):
        with pytest.raises(SystemExit):
            drift.build_parser().parse_args(argv)
        assert error in capsys.readouterr().err
