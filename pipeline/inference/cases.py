"""Which cases a batch job takes, under which output names, in which shard.

- :func:`output_names`: ``<sanitised case id>_seg<ending>``, unique, never a path outside the output folder;
  the ending follows the output format (a DICOM SEG ``.dcm`` for DICOM series by default).
- :func:`select_shard`: the cases whose path hash falls in shard i of n, so n processes cover every case exactly
  once, even when they list a changing folder at different moments.
- :func:`without_own_outputs`: the job never takes its own label maps as inputs, whether the output folder lies
  inside the input folder or is the input folder itself (a re-run would otherwise segment ``a_seg``, then
  ``a_seg_seg``...).

Example:
    >>> parse_shard("1/4")
    (1, 4)
    >>> sorted(select_shard(["a", "b", "c", "d"], (0, 2)) + select_shard(["a", "b", "c", "d"], (1, 2)))
    ['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pipeline.data.datalist import case_id
from pipeline.data.discover import InputCase
from pipeline.inference.inputs import is_own_output
from pipeline.io import is_image_file, label_suffix_for
from pipeline.io.dicom_seg import SEG_SUFFIX

__all__ = ["OUTPUT_FORMATS", "case_key", "output_names", "parse_shard", "select_shard", "shard_from_env", "shard_of",
           "without_own_outputs"]

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


OUTPUT_FORMATS = ("auto", "nifti", "dicom-seg")


def _suffix(first: str, output_format: str) -> str:
    if output_format == "nifti":
        return ".nii.gz"
    if output_format in ("auto", "dicom-seg") and Path(first).is_dir():  # a DICOM series folder
        return SEG_SUFFIX
    return label_suffix_for(first)


def output_names(inputs: list[str] | list[InputCase], output_format: str = "auto",
                 root: str | os.PathLike | None = None) -> dict[str, str]:
    """Input (path, or a case's :attr:`~pipeline.data.InputCase.source`) -> output file name:
    ``<sub-folders under root>_<sanitised case id>_seg<ending>``, so that a name depends on its own input only
    (a file added elsewhere with the same stem renames nothing). Inputs that still share a name (``a.nii.gz`` and
    ``a.nrrd`` side by side with ``nifti`` output) get a short hash of their path under ``root`` appended, the same
    on every machine. Names hold no path separators and do
    not start with a dot.

    Args:
        inputs: input paths or cases.
        output_format: ``auto`` (a DICOM SEG ``.dcm`` for a DICOM series, the input's own ending otherwise),
            ``nifti`` (``.nii.gz`` for all) or ``dicom-seg`` (``.dcm`` for DICOM series; other inputs fail).
            Defaults to ``"auto"``.
        root: the input folder; None names cases by their id alone (a CSV's rows). Defaults to None.

    Raises:
        ValueError: an unknown output format.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got '{output_format}'")
    cases = [c if isinstance(c, InputCase) else InputCase(case_id(Path(c.rstrip("/\\"))), (c,)) for c in inputs]
    stems = {c.source: (_SAFE.sub("_", _folders(c.paths[0], root) + c.name).strip("._") or "image")
             for c in cases}
    plain = {c.source: f"{stems[c.source]}_seg{_suffix(c.paths[0], output_format)}" for c in cases}
    counts: dict[str, int] = {}
    for name in plain.values():
        counts[name] = counts.get(name, 0) + 1
    names = {}
    for c in cases:  # a clash: a hash of the path under the input folder, the same on every machine
        if counts[plain[c.source]] > 1:
            digest = hashlib.sha1(case_key(c, root if root is not None else None).encode()).hexdigest()[:8]
            names[c.source] = f"{stems[c.source]}_{digest}_seg{_suffix(c.paths[0], output_format)}"
        else:
            names[c.source] = plain[c.source]
    return names


def _folders(path: str, root: str | os.PathLike | None) -> str:
    """``"a_b_"`` for a path in ``root/a/b/``; ``""`` directly in root, outside it, or without a root."""
    if root is None:
        return ""
    parent = os.path.relpath(os.path.dirname(os.path.abspath(path.rstrip("/\\"))), os.path.abspath(root))
    if parent == "." or parent.startswith(".."):
        return ""
    return parent.replace(os.sep, "_") + "_"


def without_own_outputs(cases: list[InputCase], input_path: str | os.PathLike,
                        output_dir: str | os.PathLike, output_format: str = "auto") -> list[InputCase]:
    """``cases`` less the job's own outputs: everything inside ``output_dir`` when that folder lies below
    ``input_path``, every input that is another input's output file (the two folders are one), and every image
    file whose header carries the job's provenance line (an output of another format or an earlier folder).

    Args:
        cases: the cases found under the input path.
        input_path: where they were found.
        output_dir: the job's output folder.
        output_format: as :func:`output_names`. Defaults to ``"auto"``.
    """
    out, source = Path(output_dir).resolve(), Path(input_path).resolve()
    kept = cases
    if source != out and source in out.parents:
        kept = [c for c in cases if not any(out == Path(p).resolve() or out in Path(p).resolve().parents
                                            for p in c.paths)]
        if len(kept) < len(cases):
            logger.info("left out %d input(s) inside the output folder %s", len(cases) - len(kept), out)
    folder = input_path if Path(input_path).is_dir() else None
    own = {str(out / name) for name in output_names(kept, output_format, root=folder).values()}
    mine = [c for c in kept if any(str(Path(p).resolve()) in own for p in c.paths)
            or any(is_image_file(p) and is_own_output(p) for p in c.paths)]  # any format, any earlier folder
    if mine:
        logger.info("left out %d input(s) that are this job's own outputs (e.g. %s)", len(mine), mine[0].paths[0])
    return [c for c in kept if c not in mine]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Raises:
        ValueError: anything else, with the rule.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"shard must be i/n with 0 <= i < n (e.g. 0/4), got '{text}'")
    return int(match[1]), int(match[2])


def shard_from_env() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when started by torchrun (or any launcher setting both), else None.

    Raises:
        ValueError: only one of the two is set (every process would do every case), or they are not a shard.
    """
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None and world is None:
        return None
    if rank is None or world is None:
        raise ValueError(f"RANK and WORLD_SIZE must be set together (a launcher sets both), got RANK={rank!r} and "
                         f"WORLD_SIZE={world!r}")
    try:
        return parse_shard(f"{rank}/{world}")
    except ValueError:
        raise ValueError(f"RANK and WORLD_SIZE must be whole numbers with 0 <= RANK < WORLD_SIZE, got RANK={rank!r} "
                         f"and WORLD_SIZE={world!r}") from None


def select_shard(items: list[str], shard: tuple[int, int], root: str | os.PathLike | None = None,
                 keys: Mapping[str, str] | None = None) -> list[str]:
    """The items whose stable key falls in shard ``i`` of ``n`` (sorted): the key is a hash of the item's path
    relative to ``root`` (or ``keys[item]``: :func:`case_key`), so an item's shard never depends on which other
    items a process happened to list. Ranks that list a changing folder at different moments therefore never drop
    a case that another rank would have taken; a case that arrives later is done by its own shard's next run.

    Args:
        items: case sources (paths).
        shard: ``(i, n)``.
        root: the input folder the paths lie under (machines may mount it at different places). Defaults to None.
        keys: item -> its key, where the caller has one (cases of several files, DICOM series). Defaults to None.
    """
    index, count = shard
    return [p for p in sorted(items)
            if shard_of(keys[p] if keys is not None else _relative(p, root), count) == index]


def case_key(case: InputCase, root: str | os.PathLike | None) -> str:
    """A case's name that every machine agrees on: each of its paths relative to ``root`` (the input folder, or
    the folder of the input file or CSV), joined, with its DICOM series key; a path outside ``root`` stays
    absolute.

    Args:
        case: the case.
        root: the folder the input was given as, or holds the input file.
    """
    return ";".join(_relative(p, root) for p in case.paths) + (f"#{case.series}" if case.series else "")


def _relative(path: str, root: str | os.PathLike | None) -> str:
    if root is None:
        return path.replace(os.sep, "/")
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:  # another drive (Windows)
        return path
    return (os.path.abspath(path) if rel.startswith("..") else rel).replace(os.sep, "/")


def shard_of(key: str, count: int) -> int:
    """The shard (``0 <= s < count``) of a case key (:func:`case_key`): a hash of it.

    Args:
        key: the case's key.
        count: the number of shards.
    """
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16) % int(count)


