"""ITK's read failures as one readable line: missing data files named, truncated data called so."""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import ImageReadError
from pipeline.io import read_header, read_image

TRUNCATED = "the data is shorter than the header declares (truncated?)"


def _image():
    return sitk.GetImageFromArray(np.arange(10 * 20 * 20, dtype=np.int16).reshape(10, 20, 20))


def _one_clean_line(message: str) -> None:
    assert "\n" not in message and "0x" not in message and "[nrrd]" not in message
    assert "ITK ERROR" not in message and "itk::" not in message


@pytest.mark.parametrize("header, data", [("scan.mhd", "scan.raw"), ("scan.nhdr", "scan.raw")])
def test_a_missing_data_file_is_named(tmp_path, header, data):
    sitk.WriteImage(_image(), str(tmp_path / header))
    (tmp_path / data).unlink()
    for read in (read_header, read_image):
        with pytest.raises(ImageReadError) as info:
            read(tmp_path / header)
        assert str(info.value) == (f"cannot read image '{tmp_path / header}': its data file '{tmp_path / data}' "
                                   f"(named in the header) does not exist")


@pytest.mark.parametrize("name, compress, detail", [
    ("cut.nrrd", False, r"5234 of 8000 bytes"),
    ("cut.nrrd", True, r"\d+ of 8000 bytes after decompression"),
    ("cut.mha", False, r"\d+ of 8000 bytes"),
    ("cut.mha", True, r"\d+ of \d+ compressed bytes"),
])
def test_truncated_nrrd_and_metaimage_data_is_called_truncated(tmp_path, name, compress, detail):
    path = tmp_path / name
    sitk.WriteImage(_image(), str(path), useCompression=compress)
    raw = path.read_bytes()
    header_end = raw.index(b"\n\n") + 2 if name.endswith(".nrrd") else raw.index(b"LOCAL\n") + 6
    path.write_bytes(raw[: header_end + 5234 if not compress else header_end + (len(raw) - header_end) * 2 // 3])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    _one_clean_line(message)
    assert message.startswith(f"cannot read image '{path}': {TRUNCATED}: ")
    assert re.fullmatch(detail, message.split(f"{TRUNCATED}: ")[1]), message


def test_a_detached_metaimage_with_short_data_is_called_truncated(tmp_path):
    sitk.WriteImage(_image(), str(tmp_path / "scan.mhd"))
    raw = (tmp_path / "scan.raw").read_bytes()
    (tmp_path / "scan.raw").write_bytes(raw[:1000])
    with pytest.raises(ImageReadError, match=r"scan\.mhd': the data is shorter than the header declares "
                                             r"\(truncated\?\): 1000 of 8000 bytes$"):
        read_image(tmp_path / "scan.mhd")


def test_short_itk_message_drops_pointers_and_prefixes():
    from pipeline.io.itk_messages import short_itk_message

    exc = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /src/itkNrrdImageIO.cxx:410:\n"
                       "itk::ERROR: NrrdImageIO(0x560269853f40): ReadImageInformation: Error reading a.nrrd:\n"
                       "[nrrd] nrrdLoad: trouble reading \"a.nrrd\"\n[nrrd] nrrdRead: trouble\n"
                       "[nrrd] _nrrdReadNrrdParse_sizes: couldn't parse sizes\n")
    assert short_itk_message(exc) == "couldn't parse sizes"
    exc = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /src/x.cxx:9:\n"
                       "ITK ERROR: PNGImageIO(0x55d0aa): PNG header is damaged\n")
    assert short_itk_message(exc) == "PNG header is damaged"
