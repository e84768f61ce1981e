"""Exceptions that user-facing code raises: each message names the file (or option), the rule and the value.

Example:
    >>> raise DatasetError("labelsTr/case_1.nii.gz", "label values must be among the declared labels [0, 1, 2]", "[0, 1, 7]")
    Traceback (most recent call last):
    ...
    pipeline.errors.DatasetError: labelsTr/case_1.nii.gz: label values must be among the declared labels [0, 1, 2], got [0, 1, 7]
"""

from __future__ import annotations

__all__ = ["DatasetError", "DatasetValidationError", "DiskFullError", "ImageReadError", "ImageWriteError",
           "PipelineError"]


class PipelineError(Exception):
    """Base class of the errors this package raises for bad input; the CLI prints them on one line."""


class DatasetError(PipelineError, ValueError):
    """A dataset or datalist breaks a rule.

    Args:
        where: the file (or dataset folder) at fault.
        rule: the rule it breaks, phrased as what must hold.
        value: what was found instead (optional).
    """

    def __init__(self, where: object, rule: str, value: object | None = None) -> None:
        self.where = str(where)
        self.rule = rule
        self.value = value
        message = f"{self.where}: {rule}"
        if value is not None:
            message += f", got {value}"
        super().__init__(message)


class DatasetValidationError(DatasetError):
    """One or more rules broken; ``problems`` lists them all, the message shows up to ``shown`` of them, one line
    each.

    Args:
        source: the dataset (folder or listing file).
        problems: every rule broken, in the order found.
        shown: how many the message lists. Defaults to 20.
    """

    def __init__(self, source: str, problems: list[DatasetError], shown: int = 20) -> None:
        self.problems = problems
        lines = [f"  - {p}" for p in problems[:shown]]
        if len(problems) > shown:
            lines.append(f"  ... and {len(problems) - shown} more")
        super().__init__(source, f"dataset has {len(problems)} problem(s):\n" + "\n".join(lines))


class ImageReadError(PipelineError, OSError):
    """An image file or DICOM folder cannot be read.

    Args:
        path: the file or folder.
        reason: why, in a few words (the reader's own message where it has one).
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{self.path}': {reason}")


class ImageWriteError(PipelineError, OSError):
    """An output image cannot be written.

    Args:
        path: the destination.
        reason: why.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write image '{self.path}': {reason}")


class DiskFullError(ImageWriteError):
    """The destination's file system is full: a batch job stops here (every further write would fail too).

    Args:
        path: the file that could not be written.
        free: bytes left on its file system, where known.
        inodes: file entries (inodes) left on it, where known: with none left a disk is full however many bytes
            are free.
    """

    def __init__(self, path: object, free: int | None = None, inodes: int | None = None) -> None:
        left = "" if free is None else f" ({free} bytes free)"
        if inodes == 0:
            super().__init__(path, f"no file entries (inodes) left on the device{left}; remove some files and run "
                             "again")
        else:
            super().__init__(path, f"no space left on the device{left}; free some space and run again")
