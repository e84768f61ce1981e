"""Medical image IO with full geometry: NIfTI, NRRD, MHA/MHD (SimpleITK) and DICOM series (pydicom headers,
GDCM pixels)."""

from __future__ import annotations

from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.io.geometry import Geometry
from pipeline.io.reader import (
    IMAGE_SUFFIXES,
    ImageHeader,
    Volume,
    image_suffix,
    is_dicom_series,
    is_image_file,
    read_case,
    read_dicom,
    read_header,
    read_image,
)
from pipeline.io.writer import label_suffix_for, read_notes, write_image

__all__ = [
    "IMAGE_SUFFIXES",
    "Geometry",
    "ImageHeader",
    "Volume",
    "atomic_path",
    "image_suffix",
    "is_dicom_series",
    "is_image_file",
    "label_suffix_for",
    "read_case",
    "read_dicom",
    "read_header",
    "read_image",
    "read_notes",
    "write_image",
    "write_text_atomic",
]
