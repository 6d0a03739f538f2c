"""How the project's `imagenette` commands read their flags: typed dataclasses through jsonargparse, one spelling.

The rule: a flag is its field's Python name with underscores, as LightningCLI spells `--ckpt_path` and
`--trainer.max_epochs`; a field holding a dataclass is a dotted group (`--data.predict_dir`). So each option's
type (`Literal[...]` for choices), default and help (the dataclass's `Args:`) are written once, in the
dataclass. A boolean is a switch (`--apply`, or `--apply false`); a list is repeated to add items (`--output
a.md --output a.json`). A spelling that shipped before the rule (`--log-flush-records`, `--checkpoint`) still
works as a deprecated alias: it prints one line naming the new flag, then parses exactly as that flag does.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NoReturn, TypeVar, get_args, get_origin

import jsonargparse
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

# Spellings from before the rule, dashed: each one's new spelling has underscores instead.
_DASHED = (
    "--accuracy-tolerance", "--alert-id", "--alert-k", "--batch-size", "--batch-timeout", "--cache-dir",
    "--canary-metrics", "--canary-revision", "--clear-k", "--exclude-trained", "--expect-champion",
    "--expected-sha256", "--feedback-token", "--github-repo", "--harm-drop", "--harm-method", "--harm-windows",
    "--log-dir", "--log-flush-records", "--log-flush-seconds", "--log-images", "--log-level",
    "--log-retention-days", "--log-spill-dir", "--max-batch-size", "--max-bytes", "--max-error-increase",
    "--max-latency-increase", "--max-pixels", "--max-shift", "--min-accuracy", "--min-records", "--monitor-out",
    "--no-tta", "--ray-address", "--reference-root", "--refit-reference", "--stable-metrics",
    "--stable-revision", "--training-run", "--unfamiliar-tolerance", "--window-tolerance",
)  # fmt: skip
# Old spelling -> new spelling: the one table of deprecated aliases, for the parser and the tests.
RENAMED = {
    "--checkpoint": "--ckpt_path",
    "--data": "--data.predict_dir",
    "--corruption": "--data.corruption",
    "--severity": "--data.severity",
    **{old: "--" + old[2:].replace("-", "_") for old in _DASHED},
}

Options = TypeVar("Options")

# Names of restricted types in one-line errors.
_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    PositiveInt: "a positive integer",
    NonNegativeInt: "a non-negative integer",
    PositiveFloat: "a positive number",
    NonNegativeFloat: "a non-negative number",
}


class CommandParser(jsonargparse.ArgumentParser):
    """The parser of one project command (or one of its subcommands), its flags taken from dataclasses.

    Use `CommandParser("imagenette export", description, ExportOptions)`, then `parser.options(ExportOptions,
    argv)` for an `ExportOptions`; a command with subcommands adds a `CommandParser` per subcommand with
    `parser.add_subcommands()`. Any parse error, and `parser.error(...)` in the command, is one line on stderr
    naming the flag (and the choices), exit 2.
    """

    def __init__(self, prog: str, description: str | None = None, *options: type, **kwargs: Any) -> None:
        super().__init__(prog=prog, description=description, allow_abbrev=False, **kwargs)
        for cls in options:
            self.add_options(cls)

    def add_options(self, cls: type) -> None:
        """Add a flag per field of the dataclass `cls` (nested dataclasses: dotted groups)."""
        self.add_class_arguments(cls)
        for action in self._actions:
            if _typehint(action) is bool:  # a switch, as argparse's store_true, that also takes true/false
                action.nargs, action.const = "?", True
            elif get_origin(_typehint(action)) is list:  # one item per flag, the flag repeated
                action.metavar = action.dest.rpartition(".")[2].upper()

    def parse_args(
        self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any
    ) -> jsonargparse.Namespace:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(self._new_spellings(argv), *rest, **kwargs)

    def options(self, options: type[Options], argv: Sequence[str] | None = None) -> Options:
        """Parse `argv` into an instance of the dataclass `options` (one of this parser's)."""
        return build(options, self.instantiate(self.parse_args(argv)))

    def _new_spellings(self, argv: list[str]) -> list[str]:
        """`argv` with deprecated spellings replaced (each said once on stderr) and list flags appending."""
        actions = {flag: action for action in _all_actions(self) for flag in action.option_strings}
        out = []
        for i, token in enumerate(argv):
            if token == "--":
                return out + argv[i:]
            flag, equals, value = token.partition("=")
            if flag in RENAMED and RENAMED[flag] in actions:
                print(
                    f"{self.prog}: {flag} is deprecated and will be removed; use {RENAMED[flag]} (the spelling "
                    "every imagenette command uses).",
                    file=sys.stderr,
                )
                flag = RENAMED[flag]
            if flag in actions and get_origin(_typehint(actions[flag])) is list and not flag.endswith("+"):
                flag += "+"  # jsonargparse's append: a repeated flag adds an item, as argparse's `append`
            out.append(flag + equals + value)
        return out

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"{prog}: error: {_one_line(self, message)}", file=sys.stderr)
        raise SystemExit(2)


def build(options: type[Options], namespace: Any) -> Options:
    """The dataclass `options` from a parsed (and instantiated) namespace holding its fields."""
    return options(**{field.name: namespace[field.name] for field in dataclasses.fields(options)})


def _typehint(action: argparse.Action) -> Any:
    return getattr(action, "_typehint", None)


def _all_actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The actions of `parser` and of its subcommands' parsers."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from _all_actions(subparser)


def _one_line(parser: CommandParser, message: str) -> str:
    """jsonargparse's multi-line message as one line naming the flag and what it takes."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    required = re.match(r"the following arguments are required: (.*)$", lines[0]) if lines else None
    if required is not None:
        flags = ", ".join(_flag(parser, dest.strip()) for dest in required.group(1).split(","))
        return f"the following arguments are required: {flags}"
    key = re.match(r'(?:Parser key|Key) "([^"]+)"', lines[0]) if lines else None
    if key is None:
        return "; ".join(lines)
    flag = _flag(parser, key.group(1))
    if "is required" in lines[0]:
        return f"the following arguments are required: {flag}"
    action = next((a for a in _all_actions(parser) if flag in a.option_strings), None)
    typehint = _typehint(action) if action is not None else None
    got = re.search(r"(?:Got|Given) value: (.*)$", message, re.M) or re.search(
        r": (\S+) does not conform", message
    )
    value = got.group(1) if got else "?"
    args = [a for a in get_args(typehint) if a is not type(None)]
    if get_origin(typehint) is Literal or (len(args) == 1 and get_origin(args[0]) is Literal):
        choices = get_args(typehint if get_origin(typehint) is Literal else args[0])
        return f"argument {flag}: invalid choice: {value!r} (choose from {', '.join(map(str, choices))})"
    name = _TYPE_NAMES.get(args[0] if len(args) == 1 else typehint)
    if name is not None:
        return f"argument {flag}: must be {name}, got {value!r}"
    return f"argument {flag}: " + "; ".join(lines[1:] or lines)


def _flag(parser: argparse.ArgumentParser, dest: str) -> str:
    """The flag of a parsed key: `--min_records` for `decide.min_records` of a subcommand `decide`."""
    first, _, rest = dest.partition(".")
    subcommands = {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }
    return f"--{rest if rest and first in subcommands else dest}"
