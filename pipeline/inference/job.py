"""Batch segmentation: every image under a path, through an exported model, to label maps on each input's grid.

The job needs only the ``.ts`` file: preprocessing, ROI, overlap, labels and the number of input channels come
from its embedded metadata. A multi-channel model takes each case as a 4D file, as nnU-Net channel files
(``CASE_0000``, ``CASE_0001``...) or as a CSV row (``image_0``, ``image_1``...); see
:func:`pipeline.data.find_cases`. It loses nothing:

- outputs are written to a temporary file and renamed, so a label map that exists is complete; re-running
  the job skips those cases, so a job killed (even with SIGKILL) resumes where it stopped;
- a case that fails (unreadable, wrong dimensionality, NaNs, empty) is reported with its error and the job goes
  on; the exit status is non-zero when any case failed;
- output names come from input names only (sanitised, ``<name>_seg<ending>``, NIfTI for DICOM folders) and
  can never point outside the output folder;
- ``shard=(i, n)`` (or ``RANK``/``WORLD_SIZE`` under torchrun) takes every n-th case of the sorted list,
  so n processes on any number of machines cover every case exactly once.

Reading and preprocessing of the next cases (``workers`` threads) and inverting and writing of finished ones
overlap with the network's compute.

Example:
    >>> report = segment("ct.ts", "incoming/", "labels/", device="auto", level=3)      # doctest: +SKIP
    >>> report.counts()                                                                 # doctest: +SKIP
    {'ok': 48, 'skipped': 2, 'failed': 0}
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.data.discover import InputCase, find_cases
from pipeline.errors import ImageReadError, PipelineError
from pipeline.export.torchscript import load_torchscript
from pipeline.inference.predictor import Predictor
from pipeline.inference.preprocess import Preprocessor
from pipeline.inference.report import CaseResult, JobReport
from pipeline.io import label_suffix_for, read_case, read_image, write_image

__all__ = ["output_names", "parse_shard", "shard_from_env", "select_shard", "segment"]

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_names(inputs: list[str] | list[InputCase]) -> dict[str, str]:
    """Input (path, or a case's :attr:`~pipeline.data.InputCase.source`) -> output file name:
    ``<sanitised case id>_seg<ending of its first file>``; inputs sharing a stem get a short hash of their full
    path appended. Names hold no path separators and do not start with a dot."""
    from pipeline.data.datalist import case_id

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
        names[source] = f"{stem}_seg{label_suffix_for(firsts[source])}"
    return names


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


class _Case:
    def __init__(self, case: InputCase, output: Path) -> None:
        self.input, self.path, self.output, self.started = case, case.source, output, time.time()
        self.name = output.name.rsplit("_seg", 1)[0]
        self.volume = None
        self.image: torch.Tensor | None = None
        self.state = None


def _check(volume, path: str, meta: dict) -> None:  # noqa: ANN001 - Volume
    net = meta.get("network") or {}
    kind = meta.get("inference", {}).get("kind", "sliding_window")
    want = 3 if kind == "slice" else int(net.get("spatial_dims") or 3)
    if volume.array.size == 0:
        raise ImageReadError(path, "the image is empty (no voxels)")
    if volume.geometry.ndim != want:
        raise ImageReadError(path, f"wrong dimensionality: the model segments {want}D images, got a "
                             f"{volume.geometry.ndim}D image of size {volume.geometry.shape}")
    if net.get("in_channels") and volume.channels != int(net["in_channels"]):
        raise ImageReadError(path, f"the model needs {net['in_channels']} channel(s), the image has "
                             f"{volume.channels}")
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        if bad:
            raise ImageReadError(path, f"the image holds {bad} NaN or infinite voxel(s)")


def _volumes(labels: np.ndarray, spacing: tuple[float, ...], names: dict[str, str]) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(names) + 1)
    return {name: float(counts[int(k)]) * voxel_ml for k, name in names.items()
            if str(k) != "0" and int(k) < len(counts)}


def _remove_stale_parts(folder: Path, older_than_s: float = 300.0) -> None:
    """Delete temporary files a killed job left behind (``.<name>.*.part*``); fresh ones may belong to a shard
    that is writing right now, so only those untouched for ``older_than_s`` go."""
    now = time.time()
    for tmp in folder.glob(".*.part*"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                logger.info("removed %s, left behind by an interrupted job", tmp.name)
        except OSError:
            pass


def segment(model: str | os.PathLike, input_path: str | os.PathLike, output_dir: str | os.PathLike,
            device: str = "auto", level: int | None = None, tta: bool = False, overlap: float | None = None,
            sw_batch_size: int = 1, workers: int = 2, precision: str = "auto", shard: tuple[int, int] | None = None, overwrite: bool = False,
            progress: bool = True) -> JobReport:
    """Segment every image under ``input_path`` with the exported ``model``; see the module docstring.

    Args:
        model: TorchScript file written by ``python -m pipeline export``.
        input_path: image file, DICOM series folder, folder searched recursively, or CSV with an ``image`` column
            (``image_0``, ``image_1``... for a multi-channel model).
        output_dir: folder for label maps and ``report.json``/``report.csv``.
        device: ``auto``, ``cpu`` or ``cuda[:N]``. Defaults to ``"auto"`` (``cuda:LOCAL_RANK`` under torchrun).
        level: UNet++ inference level; None keeps the exported one. Defaults to None.
        tta: mirroring test-time augmentation. Defaults to False.
        overlap: sliding-window overlap; None keeps the exported one. Defaults to None.
        sw_batch_size: windows per forward pass. Defaults to 1.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``; see :class:`Predictor`. Defaults to ``"auto"``.
        workers: threads reading/preprocessing ahead (and one writing behind when > 1). Defaults to 2.
        shard: ``(i, n)``; None uses RANK/WORLD_SIZE when set, else ``(0, 1)``. Defaults to None.
        overwrite: redo cases whose output exists. Defaults to False.
        progress: show a tqdm bar. Defaults to True.

    Returns:
        The :class:`JobReport` (also written to the output folder).

    Raises:
        PipelineError: bad model file, input path, device or options (before any case runs).
    """
    if int(workers) < 1:
        raise PipelineError(f"workers must be >= 1, got {workers}")
    shard = shard or shard_from_env() or (0, 1)
    if device == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    module, meta = load_torchscript(model, device="cpu")
    try:
        predictor = Predictor(module, meta, device=device, level=level, overlap=overlap,
                              sw_batch_size=sw_batch_size, tta=tta, precision=precision)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    channels = int((meta.get("network") or {}).get("in_channels") or 1)
    cases = {c.source: c for c in find_cases(input_path, channels=channels)}
    inputs = list(cases)
    if not inputs:
        raise PipelineError(f"no images found under '{input_path}' (NIfTI, NRRD, MHA/MHD files or DICOM series)")
    names = output_names(list(cases.values()))
    mine = select_shard(inputs, shard)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(out_dir)
    labels = {str(k): str(v) for k, v in meta.get("labels", {}).items()}
    report = JobReport(str(model), str(out_dir), labels, shard, {
        "device": str(predictor.device), "level": predictor.level, "overlap": predictor.overlap, "tta": tta,
        "precision": predictor.precision,
        "sw_batch_size": sw_batch_size, "workers": workers, "inputs": len(inputs), "this_shard": len(mine)})
    try:
        preprocess = Preprocessor(meta)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    logger.info("segmenting %d of %d image(s) (shard %d/%d) on %s at level %d in %s", len(mine), len(inputs),
                *shard, predictor.device, predictor.level, predictor.precision)

    def prepare(path: str) -> _Case:
        case = _Case(cases[path], out_dir / names[path])
        if case.output.exists() and not overwrite:
            return case
        if case.input.error:
            raise PipelineError(case.input.error)
        case.volume = read_case(case.input.paths)
        _check(case.volume, path, meta)
        case.image, case.state = preprocess(case.volume.array, case.volume.geometry.affine,
                                            spatial_dims=case.volume.geometry.ndim)
        return case

    def finish(case: _Case, probs: torch.Tensor) -> CaseResult:
        restored = preprocess.invert(probs[0], case.state)
        labels_map = torch.argmax(restored, dim=0).to(torch.uint8).numpy()
        if labels_map.shape != case.volume.geometry.shape:
            raise PipelineError(f"internal error: prediction of shape {labels_map.shape} does not match the input "
                                f"grid {case.volume.geometry.shape}")
        write_image(labels_map, case.volume.geometry, case.output)
        return CaseResult(case.name, case.path, str(case.output), "ok", round(time.time() - case.started, 2),
                          volumes_ml=_volumes(labels_map, case.volume.geometry.spacing, labels))

    def skipped(case: _Case) -> CaseResult:
        existing = read_image(case.output)
        return CaseResult(case.name, case.path, str(case.output), "skipped", 0.0,
                          volumes_ml=_volumes(existing.array, existing.geometry.spacing, labels))

    def failed(path: str, exc: Exception) -> CaseResult:
        message = str(exc) if isinstance(exc, (PipelineError, OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
        logger.error("%s: %s", path, message)
        return CaseResult(names[path].rsplit("_seg", 1)[0], path, "", "failed", 0.0, message)

    def collect(path: str, future: Future) -> CaseResult:
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the job
            return failed(path, exc)

    def results() -> Iterator[CaseResult]:
        with ThreadPoolExecutor(max_workers=int(workers)) as readers, ThreadPoolExecutor(max_workers=1) as writer:
            pending: list[tuple[str, Future]] = [(p, readers.submit(prepare, p)) for p in mine[: int(workers)]]
            queued = len(pending)
            writes: list[tuple[str, Future]] = []
            while pending:
                path, future = pending.pop(0)
                if queued < len(mine):
                    pending.append((mine[queued], readers.submit(prepare, mine[queued])))
                    queued += 1
                try:
                    case = future.result()
                    if case.image is None:
                        yield skipped(case)
                        continue
                    probs = predictor(case.image)
                    if int(workers) > 1:
                        writes.append((path, writer.submit(finish, case, probs)))
                    else:
                        yield finish(case, probs)
                except Exception as exc:  # noqa: BLE001 - one bad case must not stop the job
                    yield failed(path, exc)
                while writes and writes[0][1].done():
                    yield collect(*writes.pop(0))
            for done_path, done in writes:
                yield collect(done_path, done)

    bar = tqdm(total=len(mine), desc="segment", unit="case", disable=not progress)
    for result in results():
        report.add(result)
        report.write()
        bar.update(1)
        bar.set_postfix(report.counts())
    bar.close()
    report.write()
    counts = report.counts()
    logger.info("done: %d segmented, %d already complete, %d failed; report in %s", counts["ok"], counts["skipped"],
                counts["failed"], out_dir / f"{report.stem}.json")
    return report
