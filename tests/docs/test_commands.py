"""The README's and the docs' command blocks run as written (budgets shrunk), so they cannot go stale.

Each Markdown file's runnable blocks run in order, in one shell, in a scratch folder that holds copies of
``bundles/``, ``configs/`` and ``benchmarks/``, the repository's ``.venv`` (its ``bin`` first on PATH, as after
``source .venv/bin/activate``) and ``../shared`` beside it, so nothing a command writes lands in the repository.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .commands import DOC_FILES, REPO, commands, pipeline_args, read_blocks, repo_paths, runnable_script

BLOCKS = {path: read_blocks(path) for path in DOC_FILES}
RUNNABLE = [path for path, blocks in BLOCKS.items() if any(b.skip is None for b in blocks)]
_IGNORE = shutil.ignore_patterns("__pycache__", "runs", "predictions", "eval", "*.pyc")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def test_every_skipped_block_says_why() -> None:
    """A block is either run or carries its reason; an empty reason is a forgotten block."""
    assert sum(len(b) for b in BLOCKS.values()) > 10, "the docs' command blocks were not found"
    empty = [b.where for blocks in BLOCKS.values() for b in blocks if b.skip is not None and not b.skip]
    assert not empty, f"skipped without a reason: {empty}"
    assert REPO / "README.md" in RUNNABLE, "the README's commands must run in CI"


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_commands_name_real_options_and_files(path: Path) -> None:
    """Every ``python -m pipeline`` command in a block (run or not) parses, and the repository files exist."""
    from pipeline.cli import build_parser

    parser = build_parser()
    problems = []
    for block in BLOCKS[path]:
        base = REPO  # a block that changes folder names files from there
        for command in commands(block.text):
            if command.startswith("cd ") and not command.startswith("cd /"):
                base = base / command.split()[1]
                if not base.is_dir():
                    problems.append(f"{block.where}: {command!r}: no such folder")
                continue
            args = pipeline_args(command)
            if args and args[0] != "bundle":  # `bundle` hands everything to MONAI's own command line
                args = [a for a in args if a not in ("-v", "-q", "--verbose", "--quiet")]
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # --help prints and exits 0
                        parser.parse_args(args)
                except SystemExit as exc:
                    if exc.code not in (0, None):
                        problems.append(f"{block.where}: the command line refuses {command!r}")
            missing = [p for p in repo_paths(command) if not (base / p.rstrip("/")).exists()
                       and not any(p.startswith(q) for q in ("bundles/my_", "configs/my_"))]
            problems += [f"{block.where}: {p} does not exist" for p in missing]
    assert not problems, "\n".join(problems)


def _scratch(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("bundles", "configs", "benchmarks"):
        shutil.copytree(REPO / name, work / name, ignore=_IGNORE, symlinks=True)
    (work / ".venv").symlink_to(REPO / ".venv")
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    return work


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", RUNNABLE, ids=_ids(RUNNABLE))
def test_command_blocks_run(path: Path, tmp_path: Path) -> None:
    """The file's runnable blocks, in order, exit 0 in a scratch copy (the block that failed is named)."""
    text = runnable_script(BLOCKS[path])
    if "../shared/" in text and not (REPO.parent / "shared").is_dir():
        pytest.skip(f"real data not available: {path.name}'s commands read ../shared/data, which is absent")
    work = _scratch(tmp_path)
    script = work / "docs_commands.sh"
    script.write_text(text)
    venv_bin = str(REPO / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_", "RANK", "WORLD_SIZE"))}
    env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(REPO / ".venv"),
               PYTHONUNBUFFERED="1")
    result = subprocess.run(["bash", str(script)], check=False, cwd=work, env=env, capture_output=True, text=True,
                            timeout=840)
    if result.returncode != 0:
        blocks = [line for line in result.stderr.splitlines() if line.startswith("### ")]
        failed = blocks[-1][4:] if blocks else "(before the first block)"
        sys.stderr.write(result.stdout[-4000:])
        pytest.fail(f"{failed}: a command block exited {result.returncode}:\n{result.stderr[-4000:]}")


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_relative_links_resolve(path: Path) -> None:
    """A link to another page or file of the repository points at something that exists."""
    text = path.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    missing = [link for link in links if "://" not in link and not (path.parent / link).exists()]
    assert not missing, f"{path.relative_to(REPO)} links to what does not exist: {missing}"
