"""Every command in the docs works as written: each is parsed by the program it names, and the cheap ones run.

The docs are README.md, docs/*.md and benchmarks/results/README.md. Their ```bash blocks are read line by line
(backslash continuations joined, comments dropped), and so is each row of the README's table of commands (a
first cell that is a command in backticks). Each command is checked by what it calls:
- `imagenette <Lightning command> ...`: LightningCLI parses it all (configs, flags) with `--print_config`;
- `imagenette <project command> ...`: the command's own argparse parser accepts exactly those arguments;
- `make [VAR=...] target`: the target exists (`make -n`);
- a Python script (`.venv/bin/python path.py ...`): the file exists and every `--flag` is in its `--help`;
- `curl`, `docker`, `dvc`, `source`, `export` and the other tools: named in KNOWN_TOOLS with where they are
  tested (the serving, Docker and DVC suites), so that a new kind of command fails here until it is covered.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._shell import commands
from tests.conftest import REPO

README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "results" / "README.md"]
TABLE_COMMAND = re.compile(r"^\|\s*`((?:imagenette|make|\.venv/bin/python) [^`]*)`\s*\|")
PYTHON = Path(sys.executable)
# Tools whose README lines are exercised elsewhere (named so that a new tool is a conscious addition).
KNOWN_TOOLS = {
    "curl": "tests/serve (real server, every route)",
    "docker": "tests/containers (podman builds and runs both images; docker spells the commands the same)",
    "podman": "tests/containers (both images built and run)",
    "bootstrap_base.sh": "tests/containers/conftest.py (.ci/run calls it before the suite)",
    "in_image.sh": "tests/containers/test_training_image.py (fit and test inside the training image)",
    "dvc": "tests/test_dvc.py (real DVC)",
    "source": "shell built-in",
    "export": "shell built-in",
    "pip": "the Makefile's install",
    "wandb": "W&B's own CLI",
    "cml": "CML's own CLI (CI)",
    "gcloud": "scripts/deploy_cloud_run.sh DRY_RUN tests",
    "IMG": "a shell variable",
    "pre-commit": "tests/test_workflows.py",
    "openssl": "OpenSSL's own CLI",
}


def bash_blocks(path: Path) -> list[str]:
    """The text of each ```bash block in a Markdown file."""
    blocks, block = [], None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if block is None and line.strip() == "```bash":
                block = []
            elif block is not None:
                blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    return blocks


def readme_commands(path: Path = README) -> list[list[str]]:
    """argv lists of every command in a Markdown file's bash blocks (and the README's table; env assignments kept)."""
    table = [
        m.group(1) for m in map(TABLE_COMMAND.match, path.read_text().splitlines()) if m and path == README
    ]
    return [argv for text in [*bash_blocks(path), *table] for argv in commands(text)]


def _split_env(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        key, value = argv[0].split("=", 1)
        env[key] = value
        argv = argv[1:]
    return env, argv


def _program(argv: list[str]) -> str:
    name = Path(argv[0]).name
    if name in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        return "script"
    return name


COMMANDS = readme_commands()
DOC_COMMANDS = [(path.relative_to(REPO), argv) for path in DOCS for argv in readme_commands(path)]


def _param(path: Path, argv: list[str]):
    """Lightning commands and scripts' `--help` start a process or import torch (seconds each): those are `slow`."""
    rest = _split_env(argv)[1]
    lightning = (
        len(rest) > 1 and _program(rest) == "imagenette" and rest[1] in ("fit", "validate", "test", "predict")
    )
    slow = lightning or (bool(rest) and _program(rest) == "script")
    return pytest.param(argv, id=f"{path}: {' '.join(argv)}"[:100], marks=[pytest.mark.slow] if slow else [])


def test_the_readme_starts_with_make_train_and_make_test() -> None:
    first = [" ".join(_split_env(argv)[1]) for argv in COMMANDS[:2]]
    assert first == ["make train", "make test"]


def test_the_docs_are_all_found() -> None:
    assert all(path.is_file() for path in DOCS) and len(DOCS) > 2
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", README.read_text()))
    missing = [str(p.relative_to(REPO)) for p in DOCS[1:-1] if str(p.relative_to(REPO)) not in linked]
    assert not missing, f"the README's table of docs does not link {missing}"


@pytest.mark.parametrize("argv", [_param(path, argv) for path, argv in DOC_COMMANDS])
def test_every_readme_command_is_understood_by_what_it_calls(argv: list[str]) -> None:
    env, argv = _split_env(argv)
    if not argv:  # a bare assignment line, e.g. IMG=...
        return
    program = _program(argv)
    if program == "imagenette":
        _check_imagenette(argv[1:], env)
    elif program == "make":
        targets = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        done = subprocess.run(["make", "-n", *targets], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, f"`{' '.join(argv)}`: {done.stderr}"
    elif program == "script":
        _check_script(argv[1], argv[2:])
    else:
        assert program in KNOWN_TOOLS, f"README runs {program!r}: check it here or name it in KNOWN_TOOLS"


def _check_imagenette(args: list[str], env: dict[str, str]) -> None:
    from imagenette_drift.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS

    command, rest = args[0], args[1:]
    if command in EXTRA_COMMANDS:
        module = importlib.import_module(EXTRA_COMMANDS[command][0].split(":")[0])
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                module.build_parser().parse_args([os.path.expandvars(a) for a in rest])
        except SystemExit as e:
            pytest.fail(f"`imagenette {' '.join(args)}` does not parse (exit {e.code}): {said.getvalue()}")
        assert "deprecated" not in said.getvalue(), f"README uses an old spelling: {said.getvalue()}"
        return
    assert command in LIGHTNING_COMMANDS, f"unknown command imagenette {command}"
    from imagenette_drift.cli import cli_main

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        for key, value in env.items():
            patch.setenv(key, value)
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None), f"`imagenette {' '.join(args)}` does not parse"


def _check_script(path: str, args: list[str]) -> None:
    script = REPO / path
    assert script.is_file(), f"README runs {path}, which does not exist"
    done = subprocess.run(
        [str(PYTHON), str(script), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        if flag == "--":
            break
        assert flag in done.stdout, f"README passes {flag} to {path}, which does not take it"
