"""ITK's read errors as one readable line, and the faults of detached-data headers named before ITK meets them.

ITK's exceptions run to several lines of C++ context, pointer addresses (``MetaImageIO(0x55...)``) and library
prefixes (``[nrrd] nrrdLoad: trouble reading``), and some say the wrong thing: a truncated ``.mha`` fails with
"File cannot be read ... Reason: No such file or directory" (a stale error number; MetaIO prints the real reason on
stderr), and a ``.mhd`` whose ``.raw`` is missing is reported under the ``.mhd``'s name. :func:`explain_itk_failure`
looks at the file itself for these cases; :func:`short_itk_message` cleans up the rest.

Example:
    >>> missing_data_file("scan.mhd")                        # doctest: +SKIP
    PosixPath('scan.raw')
    >>> explain_itk_failure(Path("cut.mha"), exc)             # doctest: +SKIP
    'the data is shorter than the header declares (truncated?): 5235 of 8000 bytes'
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pipeline.errors import ImageReadError

__all__ = ["TRUNCATED", "check_data_file", "data_file", "explain_itk_failure", "missing_data_file", "short_itk_message"]

#: the reason given for data shorter than its header declares
TRUNCATED = "the data is shorter than the header declares (truncated?)"

#: bytes per value of MetaImage element types (MetaIO's table)
_META_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
               "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
               "MET_DOUBLE": 8}
_POINTER = re.compile(r"\s*\(0x[0-9a-fA-F]+\)")
_ITK_PREFIX = re.compile(r"^(?:ITK ERROR|itk::ERROR|ERROR):\s*(?:[A-Za-z]\w*\s*:\s*)?")
_NRRD_SHORT = (re.compile(r"got only (\d+) (\d+)-sized things, not (\d+)"),
               re.compile(r"expected (\d+) bytes but received (\d+)"))


def _nrrd_reason(line: str) -> str:
    """The last ``[nrrd] function: text`` line of teem's error chain, without its prefix."""
    text = re.sub(r"^\[nrrd\]\s*\w+:\s*", "", line).strip()
    if match := _NRRD_SHORT[0].search(text):
        got, size, want = (int(v) for v in match.groups())
        return f"{TRUNCATED}: {got * size} of {want * size} bytes"
    if match := _NRRD_SHORT[1].search(text):
        return f"{TRUNCATED}: {match[2]} of {match[1]} bytes after decompression"
    if match := re.search(r'couldn\'t open "([^"]+)"', text):
        return f"its data file '{match[1]}' (named in the header) cannot be opened"
    return text or "teem's NRRD reader failed without a reason"


def short_itk_message(exc: Exception) -> str:
    """The informative part of a SimpleITK/ITK exception, on one line, without pointer addresses or library prefixes.

    Args:
        exc: the exception SimpleITK raised.

    Example:
        >>> short_itk_message(RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /x.cxx:490:\\n"
        ...                                "ITK ERROR: NrrdImageIO(0x55d0): Read: Error reading a.nrrd:\\n"
        ...                                "[nrrd] nrrdLoad: trouble reading \\"a.nrrd\\"\\n"
        ...                                "[nrrd] _nrrdEncodingRaw_read: fread got only 5 2-sized things, not 8"))
        'the data is shorter than the header declares (truncated?): 10 of 16 bytes'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    nrrd = [ln for ln in lines if ln.startswith("[nrrd]")]
    if nrrd:  # teem chains its callers' "trouble" lines; the last one says what went wrong
        return _nrrd_reason(nrrd[-1])
    for ln in lines:
        if "Description:" in ln:
            return _POINTER.sub("", ln.split("Description:", 1)[1]).strip()
    for ln in lines:
        if ln.startswith("sitk::ERROR:"):
            reason = ln.split(":", 3)[-1].strip()
            if reason.startswith("Unable to determine ImageIO reader"):  # ITK's words for unrecognised content
                return "no image reader recognises its content (damaged, truncated, or not an image of this format)"
            return reason
    for ln in lines:
        if not ln.startswith(("Exception thrown", "sitk::ERROR", "/")):
            return _ITK_PREFIX.sub("", _POINTER.sub("", ln)).strip() or type(exc).__name__
    return type(exc).__name__


def _meta_header(path: Path) -> tuple[dict[str, str], int] | None:
    """A MetaImage header's fields and the byte offset just past its last one (``ElementDataFile``, which ends
    the header), or None where the file does not hold such a header in its first 64 KiB."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return None
    fields: dict[str, str] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        key, sep, value = raw.decode("latin-1").partition("=")
        if sep:
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                return fields, offset
    return None


def _nrrd_data_name(path: Path) -> str | None:
    """The ``data file:`` a detached NRRD header (``.nhdr``) names, or None (none, a list, or a pattern)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16).decode("latin-1")
    except OSError:
        return None
    for line in head.splitlines():
        if not line.strip():
            break  # a blank line ends a NRRD header
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("data file", "datafile"):
            return value.strip()
    return None


def _single_file(name: str | None) -> bool:
    """True for a header's data file entry that names one file (not LOCAL, a LIST, or a numbered pattern)."""
    return bool(name) and name.upper() != "LOCAL" and not name.upper().startswith("LIST") and "%" not in name \
        and " " not in name


def data_file(path: str | os.PathLike) -> Path | None:
    """The one data file a ``.mhd`` or ``.nhdr`` header names (whether it exists or not); None for other formats,
    data in the header file itself, or a list or pattern of files.

    Args:
        path: the header file.

    Example:
        >>> data_file("scan.nii.gz") is None   # not a detached-data format
        True
    """
    p = Path(path)
    suffix = p.name.lower()
    if suffix.endswith(".mhd"):
        header = _meta_header(p)
        name = header[0].get("ElementDataFile") if header else None
    elif suffix.endswith(".nhdr"):
        name = _nrrd_data_name(p)
    else:
        return None
    if not _single_file(name):
        return None
    return Path(name) if Path(name).is_absolute() else p.parent / name


def missing_data_file(path: str | os.PathLike) -> Path | None:
    """The data file a ``.mhd`` or ``.nhdr`` header names, where that file does not exist or is not a regular
    file (a named pipe would block ITK's open for ever); else None.

    Args:
        path: the header file.

    Example:
        >>> missing_data_file("scan.nii.gz") is None   # not a detached-data format
        True
    """
    data = data_file(path)
    return None if data is None or data.is_file() else data


def check_data_file(path: str | os.PathLike) -> None:
    """Raise when a ``.mhd``/``.nhdr`` header names a data file that does not exist or is not a regular file (ITK
    reads such a header without complaint and fails later, naming the header, or blocks on a pipe).

    Args:
        path: the header file (other formats pass).

    Raises:
        ImageReadError: naming the data file.
    """
    data = missing_data_file(path)
    if data is not None:
        why = "does not exist" if not data.exists() else "is not a regular file (a pipe or a device)"
        raise ImageReadError(path, f"its data file '{data}' (named in the header) {why}")


def _meta_shortfall(path: Path) -> tuple[int, int, str] | None:
    """``(bytes present, bytes declared, what)`` for a MetaImage file whose data is shorter than its header
    declares; None where it is not short, or the header does not let the length be worked out."""
    header = _meta_header(path)
    if header is None:
        return None
    fields, offset = header
    name = fields.get("ElementDataFile", "")
    try:
        skip = int(fields.get("HeaderSize", "0"))
        if fields.get("CompressedData", "False").lower() == "true":
            declared, what = int(fields["CompressedDataSize"]), " compressed"
        else:
            values = np.prod([int(v) for v in fields["DimSize"].split()], dtype=np.int64)
            values *= int(fields.get("ElementNumberOfChannels", "1"))
            declared, what = int(values) * _META_BYTES[fields["ElementType"]], ""
    except (KeyError, ValueError):
        return None
    if skip < 0:  # HeaderSize = -1: the data is the file's last bytes, however long the file
        return None
    if name.upper() == "LOCAL":
        present = path.stat().st_size - offset - skip
    elif _single_file(name):
        data = Path(name) if Path(name).is_absolute() else path.parent / name
        present = data.stat().st_size - skip if data.exists() else 0
    else:
        return None
    return (max(present, 0), declared, what) if present < declared else None


def explain_itk_failure(path: str | os.PathLike, exc: Exception) -> str:
    """Why ITK could not read ``path``, in one line: a missing data file or short data found in the file itself,
    else ITK's own message cleaned up (:func:`short_itk_message`).

    Args:
        path: the image file ITK failed on.
        exc: ITK's exception.

    Example:
        >>> explain_itk_failure("x.nrrd", RuntimeError("ITK ERROR: NrrdImageIO(0x5): bad magic"))
        'bad magic'
    """
    p = Path(path)
    data = missing_data_file(p)
    if data is not None:
        return f"its data file '{data}' (named in the header) does not exist"
    if p.name.lower().endswith((".mha", ".mhd")) and p.is_file():
        short = _meta_shortfall(p)
        if short is not None:
            return f"{TRUNCATED}: {short[0]} of {short[1]}{short[2]} bytes"
    reason = short_itk_message(exc)
    if reason.startswith("File cannot be read") and p.is_file():  # MetaIO's stale "No such file or directory"
        return "its data cannot be read (truncated or damaged?)"
    return reason
