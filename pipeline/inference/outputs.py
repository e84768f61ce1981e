"""The batch job's output folder: checked before the model loads, its own leftovers only removed, and every label
map marked with what produced it.

A re-run must not trust a file because its name matches. Each label map carries a provenance line in its header
(NIfTI ``descrip``, NRRD/MHA ``ITK_FileNotes``, a DICOM SEG's Content Description): ``pipeline segment <hash>
<input>``, the hash of the model file's SHA-256, the level, precision, TTA and overlap, then the fingerprint of
the input's content (:func:`pipeline.inference.inputs.input_fingerprint`). For an existing output the job then

- skips it when the line matches this run and this input (the case is complete);
- redoes it when the line is this job's but another run's (another model, level, precision, TTA or overlap), or
  its input changed (a scan copied over the old one);
- refuses it (one line, the case fails) when it has no such line, i.e. somebody else's file, or when the name
  is a symbolic link, which is never followed; ``--overwrite`` replaces both (the link itself, not its target).

Example:
    >>> folder = OutputFolder("labels/")                                          # doctest: +SKIP
    >>> folder.remove_own_temporaries(["a_seg.nii.gz"])                           # doctest: +SKIP
    >>> folder.state("a_seg.nii.gz", Provenance("3f2a...", 2, "fp32", False, 0.5))   # doctest: +SKIP
    'done'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.io import read_notes
from pipeline.io.atomic import temporary_pattern
from pipeline.io.dicom_seg import SEG_SUFFIX, read_seg_notes
from pipeline.io.writer import PROVENANCE_PREFIX

__all__ = ["PROVENANCE_PREFIX", "OutputFolder", "Provenance"]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Provenance:
    """What decides a label map's voxels.

    Args:
        model_sha256: the exported model file's SHA-256.
        level: UNet++ inference level.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        tta: mirroring test-time augmentation.
        overlap: sliding-window overlap.
    """

    model_sha256: str
    level: int
    precision: str
    tta: bool
    overlap: float

    @property
    def line(self) -> str:
        """``pipeline segment <16 hex digits>`` (fits NIfTI's 80-character ``descrip``)."""
        text = json.dumps({**asdict(self), "overlap": round(float(self.overlap), 6)}, sort_keys=True)
        return PROVENANCE_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]

    def for_input(self, fingerprint: str) -> str:
        """The line an output of the input with ``fingerprint`` carries: :attr:`line`, a space, the fingerprint
        (:func:`pipeline.inference.inputs.input_fingerprint`); 46 characters, within a SEG's 64."""
        return f"{self.line} {fingerprint}" if fingerprint else self.line

    def describe(self) -> str:
        return (f"model {self.model_sha256[:12]}, level {self.level}, {self.precision}, TTA "
                f"{'on' if self.tta else 'off'}, overlap {self.overlap:g}")


def _notes(path: Path) -> str | None:
    return read_seg_notes(path) if path.suffix == SEG_SUFFIX else read_notes(path)


class OutputFolder:
    """The folder a batch job writes to.

    Args:
        path: the folder; checked at once, created (with its parents) by :meth:`create`.

    Raises:
        PipelineError: the path is a file, or neither it nor its nearest existing parent can be written (one line
            naming it).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        if self.path.exists() and not self.path.is_dir():
            raise PipelineError(f"--output must be a folder, got '{self.path}', which is a file")
        if self.path.is_dir():
            self._write_test()
            return
        parent = next((p for p in self.path.absolute().parents if p.exists()), None)
        # nothing is created before the model loads and the inputs are found
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            why = "is a file" if parent is not None and parent.exists() and not parent.is_dir() else \
                "cannot be written"
            raise PipelineError(f"--output must be a folder this job can write to, got '{self.path}' ('{parent}' "
                                f"{why})")

    def _write_test(self) -> None:
        try:
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise PipelineError(f"--output must be a folder this job can write to, got '{self.path}' "
                                f"({exc.strerror or exc})") from None

    def create(self) -> None:
        """Create the folder (once the job is sure to run) and check that it can be written.

        Raises:
            PipelineError: it cannot be created or written.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PipelineError(f"--output must be a folder this job can create, got '{self.path}' "
                                f"({exc.strerror or exc})") from None
        self._write_test()

    def claim(self, names: Iterable[str]) -> list[str]:
        """Hold this job's share of a lock on the folder (``flock`` on the folder itself: no extra file, released
        when the process ends, even by SIGKILL); when no other job holds it, first remove the temporary files an
        interrupted run left for ``names``. Another job's files in progress are never touched. Where the file
        system has no such locks, the temporaries are removed as before.

        Args:
            names: this job's outputs and reports.

        Returns:
            The temporary files removed.
        """
        try:
            import fcntl

            self._lock = os.open(self.path, os.O_RDONLY)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another job is writing to %s: its temporary files are left alone", self.path)
            fcntl.flock(self._lock, fcntl.LOCK_SH)
            return []
        except (ImportError, OSError) as exc:  # no flock here (Windows, some network mounts, a write-only folder)
            logger.debug("no lock on %s (%s)", self.path, exc)
            self.release()
            return self.remove_own_temporaries(names)
        removed = self.remove_own_temporaries(names)
        fcntl.flock(self._lock, fcntl.LOCK_SH)  # other jobs may start now; they will not clean up under us
        return removed

    def contains(self, path: str | os.PathLike) -> bool:
        """True when ``path`` lies inside this folder (the folder itself included)."""
        here, there = self.path.resolve(), Path(path).resolve()
        return there == here or here in there.parents

    def release(self) -> None:
        """Give the folder's lock back (the job is over; the end of the process does it too)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def remove_own_temporaries(self, names: Iterable[str]) -> list[str]:
        """Delete the temporary files that a killed run of this job left for ``names`` (its outputs and reports);
        nothing else, whatever its name or age."""
        patterns = [temporary_pattern(n) for n in names]
        removed = []
        try:
            entries = list(self.path.iterdir())
        except OSError as exc:  # a drop box (write, no read): nothing can be listed, so nothing is removed
            logger.info("cannot list %s (%s): temporary files of an interrupted run stay", self.path, exc.strerror)
            return removed
        for entry in entries:
            if entry.name.startswith(".") and any(p.match(entry.name) for p in patterns) and entry.is_file():
                try:
                    entry.unlink()
                    removed.append(entry.name)
                except OSError as exc:
                    logger.warning("could not remove %s, left by an interrupted run: %s", entry, exc)
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted run", len(removed))
        return removed

    def state(self, name: str, provenance: Provenance, overwrite: bool = False, fingerprint: str = "") -> str:
        """``missing``, ``done`` (made by this very run's settings from this very input) or ``redo`` for output
        ``name``.

        Args:
            name: the output's file name.
            provenance: this run's settings.
            overwrite: redo whatever exists. Defaults to False.
            fingerprint: the input's fingerprint; ``""`` compares the settings only. Defaults to ``""``.

        Raises:
            PipelineError: (without ``overwrite``) the name is a symbolic link, or a file this job did not write.
        """
        path = self.path / name
        if path.is_symlink():
            if overwrite:
                return "redo"
            raise PipelineError(f"{path} is a symbolic link; outputs are never written through links: remove it or "
                                "pass --overwrite to replace the link")
        if not path.exists():
            return "missing"
        if overwrite:
            return "redo"
        notes = _notes(path) if path.is_file() else None
        if notes == provenance.for_input(fingerprint):
            return "done"
        if notes and notes.startswith(provenance.line):
            logger.info("%s: its input changed since it was segmented (or was made before inputs were "
                        "fingerprinted); redoing it", path.name)
            return "redo"
        if notes and notes.startswith(PROVENANCE_PREFIX):
            logger.info("%s was made by another run (model, level, precision, TTA or overlap differ); redoing it "
                        "with %s", path.name, provenance.describe())
            return "redo"
        raise PipelineError(f"{path} exists and was not written by this job (no provenance line in its header); "
                            "move it away or pass --overwrite")
