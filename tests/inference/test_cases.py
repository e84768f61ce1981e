"""The job's own outputs are never inputs, wherever the output folder lies."""

from __future__ import annotations

import pytest

from pipeline.data.discover import InputCase
from pipeline.inference import output_names, without_own_outputs


def _case(path):
    return InputCase(path.name.split(".")[0], (str(path),))


def _touch(*paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    return [_case(p) for p in paths]


def test_output_folder_inside_the_inputs(tmp_path):
    cases = _touch(tmp_path / "a.nii.gz", tmp_path / "sub/b.nii.gz", tmp_path / "out/a_seg.nii.gz",
                   tmp_path / "out/deeper/x.nii.gz")
    kept = without_own_outputs(cases, tmp_path, tmp_path / "out")
    assert [c.name for c in kept] == ["a", "b"]


@pytest.mark.parametrize("runs", [1, 3])
def test_output_folder_is_the_input_folder(tmp_path, runs):
    cases = _touch(tmp_path / "a.nii.gz", tmp_path / "b_seg.nii.gz")  # b_seg has no b: it is an input
    for _ in range(runs):  # what earlier runs would have left: a_seg, and (before this rule) a_seg_seg...
        names = output_names(cases)
        cases += _touch(*[tmp_path / n for n in names.values() if not (tmp_path / n).exists()])
    kept = without_own_outputs(cases, tmp_path, tmp_path)
    assert sorted(c.name for c in kept) == ["a", "b_seg"]
