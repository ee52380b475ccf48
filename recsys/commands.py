"""How run.json records the command that made a run, and how it is read back (for --resume and for people)."""
from __future__ import annotations

import shlex


def command_text(command: list[str]) -> str:
    """A command line as run.json records it: shell-quoted, so a path with spaces can be pasted back into a shell."""
    return shlex.join(str(c) for c in command)


def command_argv(text: str) -> list[str]:
    """run.json's recorded command back as arguments (records older than shell-quoting were joined by spaces)."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split(" ")
