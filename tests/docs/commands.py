"""The fenced command blocks of the README and the docs, read the way the docs test runs them.

A block fenced as ```bash is a command block. It runs in CI, in order with the other blocks of its file, unless
the line before it says why not: ``<!-- docs-test: skip (reason) -->`` (a long-running server, an hour of
training, another machine). Skipped blocks are still checked: every ``python -m pipeline`` command in them must be
accepted by the command line's parser, and every file of this repository they name must exist. Output samples are
fenced as ```text.

Example:
    >>> blocks = read_blocks(Path("README.md"))                                     # doctest: +SKIP
    >>> [b.line for b in blocks if b.skip is None]                                  # doctest: +SKIP
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: The files whose command blocks are run: the README, the docs and each bundle's and image's own README.
DOC_FILES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "bundles").glob("*/docs/README.md"),
                    REPO / "docker" / "README.md"])

_FENCE = re.compile(r"^```(\S*)\s*$")
_SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<reason>.*)\)\s*-->\s*$")

#: What CI changes in a command before running it: a time budget shrinks to 18 s, so that a training or plan
#: command runs in seconds on synthetic data; everything else runs as written.
SUBSTITUTIONS: list[tuple[re.Pattern[str], str]] = [(re.compile(r"--minutes \d+(\.\d+)?"), "--minutes 0.3")]


@dataclass(frozen=True)
class Block:
    """One fenced command block.

    Args:
        path: the Markdown file.
        line: the line of its opening fence (1-based).
        text: the commands.
        skip: why CI does not run it (None: it runs).
    """

    path: Path
    line: int
    text: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """The ```bash blocks of a Markdown file, with the skip reason written above each (or None).

    Args:
        path: a Markdown file.

    Returns:
        Its command blocks in order.
    """
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    start, lang, body = -1, "", []
    for number, line in enumerate(lines):
        fence = _FENCE.match(line)
        if fence and start < 0:
            start, lang, body = number, fence.group(1), []
        elif fence:
            if lang == "bash":
                above = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
                skip = _SKIP.match(above.strip())
                blocks.append(Block(path, start + 1, "\n".join(body), skip.group("reason").strip() if skip else None))
            start = -1
        elif start >= 0:
            body.append(line)
    return blocks


def commands(text: str) -> list[str]:
    """The commands of a block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a comment (not a '#' inside a config reference)
        if line:
            out.append(line)
    return out


def pipeline_args(command: str) -> list[str] | None:
    """The arguments after ``python -m pipeline`` in a command line, or None when it runs something else."""
    if not re.search(r"(^|[\s/])python3? -m pipeline(\s|$)", command):
        return None
    tail = re.split(r"python3? -m pipeline", command, maxsplit=1)[1]
    tail = tail.split(" && ")[0].split(" | ")[0].rstrip("& ")
    return shlex.split(tail)


def repo_paths(command: str) -> list[str]:
    """Files of this repository that a command names (``bundles/...``, ``configs/...``, ``benchmarks/...``)."""
    found = re.findall(r"(?<![\w/$.-])((?:bundles|configs|benchmarks)/[\w./-]+\w)", command)
    return [p for p in found if "*" not in p]


def runnable_script(blocks: list[Block]) -> str:
    """One bash script that runs the blocks that are not skipped, in order, each from the working folder.

    Each block is announced on stderr (``### README.md:42``), so a failure names the block that failed.
    """
    parts = ["set -euo pipefail", 'ROOT="$PWD"']
    for block in blocks:
        if block.skip is not None:
            continue
        text = block.text
        for pattern, replacement in SUBSTITUTIONS:
            text = pattern.sub(replacement, text)
        parts += [f"echo '### {block.where}' >&2", text, 'cd "$ROOT"']
    return "\n".join(parts) + "\n"
