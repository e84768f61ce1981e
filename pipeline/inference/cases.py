"""Which cases a batch job takes, under which output names, in which shard.

- :func:`output_names`: ``<sanitised case id>_seg<ending>``, unique, never a path outside the output folder;
  the ending follows the output format (a DICOM SEG ``.dcm`` for DICOM series by default).
- :func:`select_shard`: every n-th case of the sorted list, so n processes cover every case exactly once.
- :func:`without_own_outputs`: the job never takes its own label maps as inputs, whether the output folder lies
  inside the input folder or is the input folder itself (a re-run would otherwise segment ``a_seg``, then
  ``a_seg_seg``...).

Example:
    >>> parse_shard("1/4")
    (1, 4)
    >>> select_shard(["c", "a", "b", "d"], (0, 2))
    ['a', 'c']
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from pipeline.data.datalist import case_id
from pipeline.data.discover import InputCase
from pipeline.io import label_suffix_for
from pipeline.io.dicom_seg import SEG_SUFFIX

__all__ = ["OUTPUT_FORMATS", "output_names", "parse_shard", "select_shard", "shard_from_env", "without_own_outputs"]

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


OUTPUT_FORMATS = ("auto", "nifti", "dicom-seg")


def _suffix(first: str, output_format: str) -> str:
    if output_format == "nifti":
        return ".nii.gz"
    if output_format in ("auto", "dicom-seg") and Path(first).is_dir():  # a DICOM series folder
        return SEG_SUFFIX
    return label_suffix_for(first)


def output_names(inputs: list[str] | list[InputCase], output_format: str = "auto") -> dict[str, str]:
    """Input (path, or a case's :attr:`~pipeline.data.InputCase.source`) -> output file name:
    ``<sanitised case id>_seg<ending>``; inputs sharing a stem get a short hash of their full path appended.
    Names hold no path separators and do not start with a dot.

    Args:
        inputs: input paths or cases.
        output_format: ``auto`` (a DICOM SEG ``.dcm`` for a DICOM series, the input's own ending otherwise),
            ``nifti`` (``.nii.gz`` for all) or ``dicom-seg`` (``.dcm`` for DICOM series; other inputs fail).
            Defaults to ``"auto"``.

    Raises:
        ValueError: an unknown output format.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got '{output_format}'")
    cases = [c if isinstance(c, InputCase) else InputCase(case_id(Path(c.rstrip("/\\"))), (c,)) for c in inputs]
    stems = {c.source: (_SAFE.sub("_", c.name).strip("._") or "image") for c in cases}
    firsts = {c.source: c.paths[0] for c in cases}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    names = {}
    for source, stem in stems.items():
        if counts[stem] > 1:
            stem = f"{stem}_{hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:8]}"
        names[source] = f"{stem}_seg{_suffix(firsts[source], output_format)}"
    return names


def without_own_outputs(cases: list[InputCase], input_path: str | os.PathLike,
                        output_dir: str | os.PathLike, output_format: str = "auto") -> list[InputCase]:
    """``cases`` less the job's own outputs: everything inside ``output_dir`` when that folder lies below
    ``input_path``, and every input that is another input's output file (the two folders are one).

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
    own = {str(out / name) for name in output_names(kept, output_format).values()}
    mine = [c for c in kept if any(str(Path(p).resolve()) in own for p in c.paths)]
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
    """``(RANK, WORLD_SIZE)`` when started by torchrun (or any launcher setting both), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return parse_shard(f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}")
    return None


def select_shard(items: list[str], shard: tuple[int, int]) -> list[str]:
    """Every ``n``-th item of the sorted list, starting at ``i``: the shards partition the items."""
    index, count = shard
    return [p for k, p in enumerate(sorted(items)) if k % count == index]
