"""segment --statistics/--preview through the job and the command line: previews beside the label maps and made
again for skipped cases, a failure that keeps the label map and sets exit status 1, DICOM SEG statistics of what
the SEG stores, multi-channel cases, and no matplotlib import without --preview."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.cli.commands import cmd_segment
from pipeline.cli.parser import build_parser
from pipeline.errors import PipelineError
from pipeline.inference import Extras, segment
from pipeline.inference.preview import preview_size
from pipeline.inference.statistics import label_statistics
from pipeline.io import Geometry, Volume, read_image
from pipeline.io.dicom_seg import read_dicom_seg
from tests.conftest import write_dicom_series

BOTH = Extras(statistics=True, preview=True)


def test_previews_beside_the_label_maps_and_made_again_for_skipped_cases(tmp_path, mri_dataset, exported):
    model, out = exported["unetpp_mri_segmentation"], tmp_path / "out"
    out.mkdir()
    (out / ".mri_000_preview.png.a1b2c3d4.part.png").write_bytes(b"left by a killed run")
    report = segment(model, mri_dataset / "imagesTr", out, device="cpu", progress=False, extras=BOTH)
    assert report.counts()["ok"] == 4 and report.incomplete() == []
    saved = json.loads((out / "report.json").read_text())
    assert saved["settings"]["extras"] == {"outputs": ["statistics", "preview"], "channel": "T1"}
    for case in report.cases:
        assert case.preview == str(out / f"{case.case}_preview.png")
        present = sum(s["voxels"] > 0 for s in case.statistics.values())
        assert Image.open(case.preview).size == preview_size(3, present or 1)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left, none kept
    (out / "mri_001_preview.png").unlink()
    again = segment(model, mri_dataset / "imagesTr", out, device="cpu", progress=False, extras=Extras(preview=True))
    assert again.counts()["skipped"] == 4 and again.incomplete() == []
    assert (out / "mri_001_preview.png").is_file() and all(c.statistics is None for c in again.cases)
    cases = json.loads((out / "report.json").read_text())["cases"]
    assert all("preview" in c and "statistics" not in c for c in cases)


def _cli(model, source, out, *flags: str) -> int:
    args = build_parser().parse_args(["segment", "--model", str(model), "--input", str(source), "--output", str(out),
                                      "--device", "cpu", "--no-progress", *flags])
    return cmd_segment(args)


def test_a_failed_preview_or_statistics_keeps_the_label_map_and_exits_1(tmp_path, mri_dataset, exported, monkeypatch,
                                                                        capsys):
    import pipeline.inference.extras as extras_module
    import pipeline.inference.preview as preview_module

    def broken(*args, **kwargs):
        raise RuntimeError("no renderer")

    model, source, out = exported["unetpp_mri_segmentation"], mri_dataset / "imagesTr/mri_000.nii.gz", tmp_path / "o"
    monkeypatch.setattr(preview_module, "write_preview", broken)
    monkeypatch.setattr(extras_module, "label_statistics", broken)
    assert _cli(model, source, out, "--statistics", "--preview") == 1
    printed = capsys.readouterr().out
    assert "1 segmented, 0 already complete, 0 failed, 1 without their statistics or preview" in printed
    assert "INCOMPLETE" in printed and "preview not written: RuntimeError: no renderer" in printed
    (case,) = json.loads((out / "report.json").read_text())["cases"]
    assert case["status"] == "ok" and (out / "mri_000_seg.nii.gz").is_file() and "statistics" not in case
    assert case["warning"] == "statistics not computed: RuntimeError: no renderer; preview not written: " \
                              "RuntimeError: no renderer"
    assert sorted(p.name for p in out.iterdir()) == ["mri_000_seg.nii.gz", "report.csv", "report.json"]
    monkeypatch.undo()
    assert _cli(model, source, out, "--statistics", "--preview") == 0  # the rerun makes what was missing
    (case,) = json.loads((out / "report.json").read_text())["cases"]
    assert case["status"] == "skipped" and case["warning"] == "" and (out / "mri_000_preview.png").is_file()
    assert set(case["statistics"]) == {"anterior", "posterior"}
    plain = build_parser().parse_args(["segment", "--model", "m", "--input", "i", "--output", "o"])
    assert (plain.statistics, plain.preview) == (False, False)  # off unless asked for


def test_a_skipped_case_whose_input_cannot_be_read_again_says_why(tmp_path, mri_dataset, exported, monkeypatch,
                                                                  capsys):
    import pipeline.inference.job as job_module

    model, source, out = exported["unetpp_mri_segmentation"], mri_dataset / "imagesTr/mri_001.nii.gz", tmp_path / "o"
    assert _cli(model, source, out) == 0

    def too_large(*args, **kwargs):
        raise PipelineError("needs 9 GB of memory, 1 GB available")

    monkeypatch.setattr(job_module, "check_input_memory", too_large)  # only the skipped case's read-back checks now
    assert _cli(model, source, out, "--statistics") == 1
    (case,) = json.loads((out / "report.json").read_text())["cases"]
    assert case["status"] == "skipped" and case["volumes_ml"] and "statistics" not in case
    assert case["warning"] == "statistics not made: its input could not be read again (needs 9 GB of memory, 1 GB " \
                              "available)"
    assert "INCOMPLETE" in capsys.readouterr().out


def test_dicom_seg_statistics_are_those_of_the_labels_it_stores(tmp_path, ct_dataset, exported):
    """A series with a missing slice: the SEG holds no frame there (the filled slice counts as background), and
    the statistics, as the volumes, are those of the SEG read back, on the first run and on the skipped rerun."""
    volume = read_image(ct_dataset / "imagesTr/ct_000.nii.gz")
    folder = write_dicom_series(tmp_path / "in" / "series", volume.array.astype(np.int16))
    (folder / "img_0005.dcm").unlink()
    model, out = exported["unetpp_ct_segmentation"], tmp_path / "out"
    first = segment(model, tmp_path / "in", out, device="cpu", progress=False, extras=BOTH)
    (case,) = first.cases
    assert case.status == "ok" and "missing" in case.warning and case.output.endswith(".dcm")
    image = read_image(folder)
    stored = read_dicom_seg(case.output, image.dicom)
    assert not stored[:, :, 5].any()
    expected = {name: s.as_dict() for name, s in label_statistics(stored, image.array, first.labels).items()}
    assert case.statistics == expected and any(s["voxels"] for s in expected.values())
    voxel_ml = np.prod(image.geometry.spacing) / 1000
    assert all(case.volumes_ml[n] == pytest.approx(s["voxels"] * voxel_ml) for n, s in case.statistics.items())
    (again,) = segment(model, tmp_path / "in", out, device="cpu", progress=False, extras=BOTH).cases
    assert again.status == "skipped" and again.statistics == case.statistics and again.warning == ""


def test_a_multichannel_case_is_described_by_its_first_channel(tmp_path):
    rng = np.random.default_rng(5)
    channels = rng.normal(size=(9, 8, 7, 2))
    channels[..., 1] *= 100  # the second channel differs
    labels = rng.integers(0, 3, (9, 8, 7)).astype(np.uint8)
    volume = Volume(channels, Geometry((9, 8, 7), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    names = {"0": "background", "1": "a", "2": "b"}
    made = BOTH.make(labels, volume, names, tmp_path, "two")
    assert made.problems == [] and made.preview == str(tmp_path / "two_preview.png")
    assert made.statistics == {n: s.as_dict() for n, s in label_statistics(labels, channels[..., 0], names).items()}


def test_segment_without_preview_does_not_import_matplotlib(tmp_path, mri_dataset, exported):
    code = ("import sys\nfrom pipeline.inference import Extras, segment\n"
            "r = segment(sys.argv[1], sys.argv[2], sys.argv[3], device='cpu', progress=False, "
            "extras=Extras(statistics=True))\n"
            "assert r.counts()['ok'] == 1 and r.cases[0].statistics, r.cases\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n")
    source = tmp_path / "one.nii.gz"
    shutil.copy(mri_dataset / "imagesTr/mri_002.nii.gz", source)
    done = subprocess.run([sys.executable, "-c", code, str(exported["unetpp_mri_segmentation"]), str(source),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
