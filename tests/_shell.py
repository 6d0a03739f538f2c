"""Shell text -> the simple commands in it, for tests that check what a document or a workflow runs."""

from __future__ import annotations

import shlex

SEPARATORS = (";", "&&", "||", "&", "(", ")")
REDIRECTIONS = (">", ">>", "<", "2>", "|")  # what follows (a file, the rest of a pipeline) is not checked


def commands(script: str) -> list[list[str]]:
    """argv of each simple command in `script`: continuations joined, comments dropped.

    Commands are split at newlines, `;`, `&&`, `||`, `&` and parentheses (so `x=$(imagenette ...)` yields the
    `imagenette ...` inside); a redirection or a pipe ends the command. Environment assignments in front stay.
    """
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv, skipping = [], False
        for token in [*lexer, ";"]:
            if token in SEPARATORS or token in REDIRECTIONS:
                if argv and not skipping:
                    found.append(argv)
                argv, skipping = [], token in REDIRECTIONS
            elif not skipping:
                argv.append(token)
    return found


def runs(argv: list[str], prefix: list[str]) -> bool:
    """True when the command `argv` (environment assignments skipped) starts with `prefix`."""
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        argv = argv[1:]
    return argv[: len(prefix)] == prefix
