"""Batch segmentation: every image under a path, through an exported model, to label maps on each input's grid.

The job needs only the exported file (``.ts`` TorchScript, or ``.onnx`` run by ONNX Runtime:
:func:`pipeline.deploy.runtime.load_model`): preprocessing, ROI, overlap, labels and the number of input channels
come from its embedded model card. A multi-channel model takes each case as a 4D file, as nnU-Net channel files
(``CASE_0000``, ``CASE_0001``...) or as a CSV row (``image_0``, ``image_1``...); see
:func:`pipeline.data.find_cases`. It loses nothing:

- the output folder is checked (a folder, writable) before the model loads;
- outputs are written to a temporary file, read back, synced and renamed, so a label map that exists is
  complete; a full disk stops the job with one line and leaves no partial file under a final name;
- every label map records what produced it (:mod:`pipeline.inference.outputs`): a re-run skips the cases this
  very model and these settings completed, redoes those another run made, and refuses files it did not write
  and symbolic links; a job killed (even with SIGKILL) resumes where it stopped and removes only its own
  temporary files;
- a case that fails (unreadable, truncated, too large, wrong dimensionality, NaNs, empty) is reported with its
  error and the job goes on; the exit status is non-zero when any case failed; a constant image gets a warning;
- output names come from input names only (sanitised, ``<name>_seg<ending>``), never point outside the output
  folder, and the job's own outputs are never taken as inputs;
- ``output_format``: ``auto`` writes a DICOM SEG (``<name>_seg.dcm``, :mod:`pipeline.io.dicom_seg`) for a DICOM
  series and the input's own format otherwise; ``nifti`` writes NIfTI for all; ``dicom-seg`` fails the cases that
  are not DICOM series (a SEG references its source images);
- ``shard=(i, n)`` (or ``RANK``/``WORLD_SIZE`` under torchrun) takes every n-th case of the sorted list,
  so n processes on any number of machines cover every case exactly once;
- the postprocessing the model card records (keep the largest connected component per class and/or of the
  foreground, chosen on validation by ``pipeline postprocess``: :mod:`pipeline.deploy.postprocess`) is applied to
  the label map on the input's grid, before it is written and before its volumes and statistics;
- ``extras=Extras(statistics=True, preview=True)`` adds per-label statistics to the reports and a
  ``<name>_preview.png`` beside each label map, for skipped cases too (:mod:`pipeline.inference.extras`); one
  that cannot be made leaves the label map and the case's status as they are, with a warning.

Reading and preprocessing of the next cases (``workers`` threads) and inverting and writing of finished ones
overlap with the network's compute; at most ``workers`` predictions wait for the writer, so a fast GPU cannot
pile probability maps up in memory.

Example:
    >>> report = segment("ct.ts", "incoming/", "labels/", device="auto", level=3)      # doctest: +SKIP
    >>> report.counts()                                                                 # doctest: +SKIP
    {'ok': 48, 'skipped': 2, 'failed': 0}
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from pipeline.console import progress as console_progress
from pipeline.data.discover import Discovery, InputCase, discover
from pipeline.deploy.card import ModelCard
from pipeline.deploy.files import file_sha256
from pipeline.deploy.postprocess import Postprocessing, apply
from pipeline.deploy.runtime import load_model, runtime_settings
from pipeline.errors import DiskFullError, ImageReadError, PipelineError
from pipeline.inference.cases import (
    case_key,
    output_names,
    parse_shard,
    select_shard,
    shard_from_env,
    without_own_outputs,
)
from pipeline.inference.extras import CaseExtras, Extras
from pipeline.inference.inputs import check_image, check_input_memory, input_fingerprint
from pipeline.inference.outputs import OutputFolder, Provenance
from pipeline.inference.predictor import Predictor
from pipeline.inference.preprocess import Preprocessor
from pipeline.inference.report import CaseResult, JobReport
from pipeline.io import Volume, read_case, read_dicom, read_image, write_image
from pipeline.io.dicom_seg import SEG_SUFFIX, SegAlgorithm, read_dicom_seg, write_dicom_seg
from pipeline.io.dicom_series import find_series
from pipeline.io.integrity import check_fits

__all__ = ["output_names", "parse_shard", "segment", "select_shard", "shard_from_env"]

logger = logging.getLogger(__name__)

#: the most reading threads: each holds a whole case (and its float32 copy) in memory
MAX_WORKERS = 32


class _Case:
    def __init__(self, case: InputCase, output: Path) -> None:
        self.input, self.path, self.output, self.started = case, case.source, output, time.time()
        self.name = output.name.rsplit("_seg", 1)[0]
        self.volume = None
        self.existing: dict[str, float] = {}
        self.fingerprint = ""
        self.series = None  # the DICOM series of a folder input, found once
        self.image: torch.Tensor | None = None
        self.state = None
        self.warning = ""
        self.extras = CaseExtras()


def _volumes(labels: np.ndarray, spacing: tuple[float, ...], names: dict[str, str]) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(names) + 1)
    return {name: float(counts[int(k)]) * voxel_ml for k, name in names.items()
            if str(k) != "0" and int(k) < len(counts)}


def _as_stored(labels: np.ndarray, series) -> np.ndarray:
    """The label map as a SEG stores it: slices that no image holds (a filled gap) have no frame, so their labels
    count in no volume (a re-run that reads the SEG back reports the same volumes)."""
    filled = sorted(set(range(labels.shape[-1])) - {s.index for s in series.slices}) if labels.ndim == 3 else []
    if not filled:
        return labels
    stored = labels.copy()
    stored[..., filled] = 0
    return stored


class _Job:
    """One run of :func:`segment` over this shard's cases (see the module docstring)."""

    def __init__(self, predictor: Predictor, card: ModelCard, folder: OutputFolder, cases: dict[str, InputCase],
                 names: dict[str, str], provenance: Provenance, overwrite: bool, workers: int,
                 output_format: str, extras: Extras, postprocessing: Postprocessing) -> None:
        self.predictor, self.card, self.folder, self.cases, self.names = predictor, card, folder, cases, names
        self.provenance, self.overwrite, self.workers = provenance, overwrite, workers
        self.output_format, self.extras, self.postprocessing = output_format, extras, postprocessing
        self.preprocess = Preprocessor(card)
        self.labels = dict(card.labels)
        bundle = card.bundle  # what a DICOM SEG describes: its segments and the algorithm
        self.segments = {k: v for k, v in card.label_ids.items() if k > 0}
        self.algorithm = SegAlgorithm(str(bundle.get("name") or "unetpp-pipeline"),
                                      str(bundle.get("version") or "unknown"), provenance.model_sha256)
        self.disk_full: DiskFullError | None = None
        self.write_queue_peak = 0

    def prepare(self, path: str) -> _Case:
        case = _Case(self.cases[path], self.folder.path / self.names[path])
        if case.input.error:
            raise PipelineError(case.input.error)
        if Path(case.input.paths[0]).is_dir():  # a DICOM series: its headers are read once for the whole case
            case.series = find_series(case.input.paths[0], case.input.series or None)
        case.fingerprint = input_fingerprint(case.input, case.series)
        state = self.folder.state(case.output.name, self.provenance, self.overwrite, case.fingerprint)
        if state == "done":
            try:  # complete by its provenance; it must also read back (a run killed by a full disk...)
                case.existing, labels = self.existing(case)
            except ImageReadError as exc:
                logger.warning("%s: redoing it: %s", case.output, exc)
            else:
                if self.extras:
                    case.extras = self.skipped_extras(case, labels)
                return case
        if self.output_format == "dicom-seg" and not case.output.name.endswith(SEG_SUFFIX):
            raise PipelineError(f"{path}: --output-format dicom-seg needs a DICOM series as input (a SEG references "
                                "its source images); use --output-format auto or nifti for other files")
        check_input_memory(case.input, self.workers)
        case.volume = self.read(case)
        series = case.volume.dicom
        if series is not None and series.shear_deg and not case.output.name.endswith(SEG_SUFFIX):
            raise PipelineError(f"{path}: the slices step {series.shear_deg:.1f} degrees off their normal (gantry "
                                "tilt), which a NIfTI grid cannot hold; write a DICOM SEG (--output-format auto or "
                                "dicom-seg), or resample the series first")
        case.warning = "; ".join([*(series.warnings if series is not None else []),
                                  *check_image(case.volume, path, self.card)])
        case.image, case.state = self.preprocess(case.volume.array, case.volume.geometry.affine,
                                                 spatial_dims=case.volume.geometry.ndim)
        classes = max(2, len(self.labels))  # probabilities and the window weights, before they are allocated
        check_fits(float(np.prod(case.image.shape[1:], dtype=np.float64)) * 4 * (classes + 1), path,
                   f"predicting {classes} class probabilities on the {'x'.join(map(str, case.image.shape[1:]))} "
                   "preprocessed grid")
        return case

    @staticmethod
    def read(case: _Case) -> Volume:
        return read_dicom(case.input.paths[0], series=case.series) if case.series is not None \
            else read_case(case.input.paths)

    def skipped_extras(self, case: _Case, labels: np.ndarray) -> CaseExtras:
        """A complete output's statistics and preview, from its label map and its input read back."""
        try:
            check_input_memory(case.input, self.workers)
            volume = self.read(case)
        except Exception as exc:  # noqa: BLE001 - the label map is complete; the case stays skipped
            return self.extras.unavailable(case.name, f"its input could not be read again ({exc})")
        return self.extras.make(labels, volume, self.labels, case.output.parent, case.name)

    def finish(self, case: _Case, probs: torch.Tensor) -> CaseResult:
        restored = self.preprocess.invert(probs[0], case.state)
        labels_map = apply(torch.argmax(restored, dim=0).to(torch.uint8).numpy(), self.postprocessing)
        if labels_map.shape != case.volume.geometry.shape:
            raise PipelineError(f"internal error: prediction of shape {labels_map.shape} does not match the input "
                                f"grid {case.volume.geometry.shape}")
        if case.output.is_symlink():  # --overwrite: replace the link itself, never write through it
            case.output.unlink()
        if case.output.name.endswith(SEG_SUFFIX):
            write_dicom_seg(labels_map, case.volume.dicom, case.output, self.segments, self.algorithm,
                            notes=self.provenance.for_input(case.fingerprint))
        else:
            write_image(labels_map, case.volume.geometry, case.output,
                        notes=self.provenance.for_input(case.fingerprint))
        if case.warning:
            logger.warning("%s: %s", case.path, case.warning)
        stored = _as_stored(labels_map, case.volume.dicom) if case.output.name.endswith(SEG_SUFFIX) else labels_map
        if self.extras:  # from the labels as stored: a SEG's filled gap slices hold none
            case.extras = self.extras.make(stored, case.volume, self.labels, case.output.parent, case.name)
        return CaseResult(case.name, case.path, str(case.output), "ok", round(time.time() - case.started, 2),
                          volumes_ml=_volumes(stored, case.volume.geometry.spacing, self.labels),
                          **_with_extras(case.warning, case.extras))

    def existing(self, case: _Case) -> tuple[dict[str, float], np.ndarray]:
        """Label volumes of a complete output and its label map, read back (ImageReadError when it does not
        read)."""
        if case.output.name.endswith(SEG_SUFFIX):
            series = case.series  # a SEG is written only for a DICOM folder, whose series prepare() found
            labels, spacing = read_dicom_seg(case.output, series), series.geometry.spacing
        else:
            existing = read_image(case.output)
            labels, spacing = existing.array, existing.geometry.spacing
        return _volumes(labels, spacing, self.labels), labels

    def skipped(self, case: _Case) -> CaseResult:
        return CaseResult(case.name, case.path, str(case.output), "skipped", 0.0, volumes_ml=case.existing,
                          **_with_extras("", case.extras))

    def failed(self, path: str, exc: Exception) -> CaseResult:
        if isinstance(exc, DiskFullError):
            self.disk_full = self.disk_full or exc
        message = str(exc) if isinstance(exc, (PipelineError, OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
        where = self.cases[path].paths[0]  # most messages name the file already: name it once
        logger.error("%s", message if where in message else f"{path}: {message}")
        return CaseResult(self.names[path].rsplit("_seg", 1)[0], path, "", "failed", 0.0, message)

    def collect(self, path: str, future: Future) -> CaseResult:
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the job
            return self.failed(path, exc)

    def results(self, mine: list[str]) -> Iterator[CaseResult]:
        """Results in order of completion; reads run ahead, writes behind (bounded); a full disk stops it."""
        with ThreadPoolExecutor(max_workers=self.workers) as readers, ThreadPoolExecutor(max_workers=1) as writer:
            pending = [(p, readers.submit(self.prepare, p)) for p in mine[: self.workers]]
            queued = len(pending)
            writes: list[tuple[str, Future]] = []
            while pending and self.disk_full is None:
                path, future = pending.pop(0)
                if queued < len(mine):
                    pending.append((mine[queued], readers.submit(self.prepare, mine[queued])))
                    queued += 1
                try:
                    case = future.result()
                    if case.image is None:
                        yield self.skipped(case)
                        continue
                    probs = self.predictor(case.image)
                    if self.workers == 1:
                        yield self.finish(case, probs)
                        continue
                    while len(writes) >= self.workers:  # back-pressure: the writer is behind
                        yield self.collect(*writes.pop(0))
                    writes.append((path, writer.submit(self.finish, case, probs)))
                    self.write_queue_peak = max(self.write_queue_peak, len(writes))
                except Exception as exc:  # noqa: BLE001 - one bad case must not stop the job
                    yield self.failed(path, exc)
                while writes and writes[0][1].done():
                    yield self.collect(*writes.pop(0))
            for _, future in pending:
                future.cancel()
            for done_path, done in writes:
                yield self.collect(done_path, done)


def _with_extras(warning: str, extras: CaseExtras) -> dict:
    """A case's warning, statistics and preview fields (the warning joined with what extras could not be made)."""
    return {"warning": "; ".join(w for w in (warning, extras.warning) if w), "statistics": extras.statistics,
            "preview": extras.preview}


def _find(input_path: str | os.PathLike, folder: OutputFolder, channels: int,
          output_format: str) -> tuple[dict[str, InputCase], Discovery]:
    found = discover(input_path, channels=channels)
    cases = without_own_outputs(found.cases, input_path, folder.path, output_format)
    if found.ignored:
        damaged = [i for i in found.ignored if i.damaged]
        for item in damaged:
            logger.warning("%s: %s", item.path, item.reason)
        logger.info("passed over %d file(s) that are not images to segment (%d damaged); report.json names each",
                    len(found.ignored), len(damaged))
    if not cases:
        raise PipelineError(f"no images found under '{input_path}' (NIfTI, NRRD, MHA/MHD files or DICOM series)"
                            + (f"; {len(found.ignored)} DICOM file(s) there are not images to segment, e.g. "
                               f"{found.ignored[0].path}: {found.ignored[0].reason}" if found.ignored else ""))
    return {c.source: c for c in cases}, found


def segment(model: str | os.PathLike, input_path: str | os.PathLike, output_dir: str | os.PathLike,
            device: str = "auto", level: int | None = None, tta: bool = False, overlap: float | None = None,
            sw_batch_size: int | None = None, workers: int = 2, precision: str = "auto",
            shard: tuple[int, int] | None = None, overwrite: bool = False, progress: bool = True,
            output_format: str = "auto", extras: Extras | None = None, postprocess: bool = True) -> JobReport:
    """Segment every image under ``input_path`` with the exported ``model``; see the module docstring.

    Args:
        model: TorchScript (``.ts``) or ONNX (``.onnx``) file written by ``python -m pipeline export``.
        input_path: image file, DICOM series folder, folder searched recursively, or CSV with an ``image`` column
            (``image_0``, ``image_1``... for a multi-channel model).
        output_dir: folder for label maps and ``report.json``/``report.csv``.
        device: ``auto``, ``cpu`` or ``cuda[:N]``. Defaults to ``"auto"`` (``cuda:LOCAL_RANK`` under torchrun).
        level: UNet++ inference level; None keeps the exported one (the only one an ONNX model holds). Defaults to
            None.
        tta: mirroring test-time augmentation. Defaults to False.
        overlap: sliding-window overlap; None keeps the exported one. Defaults to None.
        sw_batch_size: windows per forward pass; None keeps the model card's. Defaults to None.
        workers: threads reading/preprocessing ahead (and one writing behind when > 1). Defaults to 2.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``; see :class:`Predictor` (an ONNX model runs fp32:
            ``auto`` or ``fp32``). Defaults to ``"auto"``.
        shard: ``(i, n)``; None uses RANK/WORLD_SIZE when set, else ``(0, 1)``. Defaults to None.
        overwrite: redo every case whose output exists, whoever wrote it. Defaults to False.
        progress: show progress (a bar on a terminal, log lines elsewhere). Defaults to True.
        output_format: ``auto``, ``nifti`` or ``dicom-seg`` (see the module docstring). Defaults to ``"auto"``.
        extras: optional outputs beyond the label maps (:class:`~pipeline.inference.extras.Extras`: statistics,
            preview); None makes none. Defaults to None.
        postprocess: apply the postprocessing the model card records. Defaults to True (False: the raw argmax, as
            ``pipeline postprocess`` measures it; use a fresh output folder, since a re-run does not tell the two
            apart).

    Returns:
        The :class:`JobReport` (also written to the output folder).

    Raises:
        PipelineError: bad output folder (checked first), model file, input path, device or options (before any
            case runs).
        DiskFullError: the output folder's file system filled up; the job stopped after recording it.
    """
    if not 1 <= int(workers) <= MAX_WORKERS:  # each worker holds a case in memory
        raise PipelineError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")
    folder = OutputFolder(output_dir)
    shard = shard or shard_from_env() or (0, 1)
    if device == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    module, card = load_model(model, device="cpu")
    device, precision = runtime_settings(module, device, precision)
    try:
        predictor = Predictor(module, card, device=device, level=level, overlap=overlap,
                              sw_batch_size=sw_batch_size, tta=tta, precision=precision)
        provenance = Provenance(file_sha256(model), predictor.level, predictor.precision, bool(tta), predictor.overlap)
        cases, found = _find(input_path, folder, card.network.in_channels, output_format)
        root = input_path if Path(input_path).is_dir() else None
        names = output_names(list(cases.values()), output_format, root=root)
        keys = {s: case_key(c, root or Path(input_path).parent) for s, c in cases.items()}
        extras = extras or Extras()
        job = _Job(predictor, card, folder, cases, names, provenance, overwrite, int(workers), output_format, extras,
                   card.postprocessing if postprocess else Postprocessing())
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    mine = select_shard(list(cases), shard, keys=keys)
    report = JobReport(str(model), str(folder.path), job.labels, shard, {
        **_settings(job), "tta": tta, "workers": workers, "inputs": len(cases), "this_shard": len(mine)},
        extras=extras.names)
    if job.postprocessing:  # only then, as extras: a report without it stays as it was
        report.settings["postprocessing"] = job.postprocessing.to_dict()
    if extras:  # only then: a report without them stays as it was
        report.settings["extras"] = {"outputs": list(extras.names), "channel": (card.channels or ["image"])[0]}
    if shard[0] == 0:  # one shard names the files that are not cases, so that merged reports name them once
        report.ignored = [{"path": i.path, "reason": i.reason, "damaged": i.damaged} for i in found.ignored]
    folder.create()
    try:
        previews = [extras.preview_name(names[p].rsplit("_seg", 1)[0]) for p in mine] if extras.preview else []
        folder.claim([names[p] for p in mine] + previews + [f"{report.stem}.json", f"{report.stem}.csv"])
        logger.info("segmenting %d of %d image(s) (shard %d/%d) on %s at level %d in %s", len(mine), len(cases),
                    *shard, predictor.device, predictor.level, predictor.precision)
        _run(job, mine, report, progress)
    finally:
        folder.release()
    return report


def _settings(job: _Job) -> dict:
    """What ran, for the report: the predictor's settings, the provenance and the model card's facts."""
    predictor, card, provenance = job.predictor, job.card, job.provenance
    return {"device": str(predictor.device), "level": predictor.level, "overlap": predictor.overlap,
            "precision": predictor.precision, "provenance": provenance.line, "model_sha256": provenance.model_sha256,
            "sw_batch_size": predictor.sw_batch_size, "output_format": job.output_format,
            "model": {"bundle": dict(card.bundle), "format": card.export.format if card.export else "torchscript",
                      "modality": card.modality, "channels": list(card.channels),
                      "mirror_axes": card.inference.mirror_axes, "validation": dict(card.training.validation)}}


def _run(job: _Job, mine: list[str], report: JobReport, progress: bool) -> None:
    bar = console_progress(len(mine), "segment", "case", enabled=progress)  # log lines where no terminal
    try:
        for result in job.results(mine):
            report.add(result)
            report.write()
            bar.update(1)
            bar.set_postfix(report.counts())
    except DiskFullError as exc:  # the report itself could not be written
        job.disk_full = job.disk_full or exc
    finally:
        bar.close()
    report.settings["write_queue_peak"] = job.write_queue_peak
    counts = report.counts()
    if job.disk_full is not None:
        try:
            report.write()
        except DiskFullError:
            logger.error("the report could not be written either (the disk is full)")
        raise job.disk_full
    report.write()
    logger.debug("done: %d segmented, %d already complete, %d failed; report in %s", counts["ok"], counts["skipped"],
                counts["failed"], job.folder.path / f"{report.stem}.json")
