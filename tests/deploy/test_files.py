"""What ``--model`` is given when it is not an exported model: each is one line saying what the file is instead."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline.deploy import load_torchscript
from pipeline.errors import PipelineError


def _checkpoint(path, legacy=False):
    torch.save({"conv.weight": torch.zeros(2, 1, 1, 1, 1)}, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True])
def test_a_checkpoint_is_named_as_one_with_the_export_command(tmp_path, legacy):
    model = _checkpoint(tmp_path / "model.pt", legacy)
    with pytest.raises(PipelineError) as info:
        load_torchscript(model)
    assert str(info.value) == (f"model file '{model}' is a PyTorch checkpoint (torch.save), not an exported "
                               f"TorchScript file: export it with `python -m pipeline export --checkpoint {model} "
                               "--out model.ts` and give model.ts")


def test_a_folder_a_pipe_and_a_missing_file_are_told_apart(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path, rule in [(tmp_path, "must be a TorchScript file, got a folder"),
                       (tmp_path / "fifo", "must be a regular file, got a device, socket or pipe"),
                       (tmp_path / "none.ts", "does not exist")]:
        with pytest.raises(PipelineError, match=f"^model file '{path}' {rule}"):
            load_torchscript(path)


def test_other_files_are_still_not_torchscript(tmp_path):
    (tmp_path / "notes.ts").write_text("not a model")
    with pytest.raises(PipelineError, match="notes.ts' is not a TorchScript file: .*not a ZIP archive.$"):
        load_torchscript(tmp_path / "notes.ts")
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(1, 2, 1)), str(tmp_path / "m.ts"))
    with pytest.raises(PipelineError, match="has no embedded model card"):  # TorchScript: past the checks above
        load_torchscript(tmp_path / "m.ts")


def test_segment_given_a_checkpoint_is_one_line_with_status_2(tmp_path, capsys):
    from pipeline.cli import main

    model = _checkpoint(tmp_path / "model.pt")
    (tmp_path / "in").mkdir()
    code = main(["segment", "--model", str(model), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    (line,) = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert line.startswith(f"pipeline segment: error: model file '{model}' is a PyTorch checkpoint")
