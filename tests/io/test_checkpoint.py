"""Checkpoints that cannot be read are one line naming the file and why."""

from __future__ import annotations

import pytest
import torch

from pipeline.io.checkpoint import CheckpointError, load_checkpoint


def test_a_good_checkpoint_loads(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["w"], torch.ones(3))


@pytest.mark.parametrize("make, rule", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "must be a file, got a folder"),
    (lambda p: p.write_bytes(b""), "is empty (0 bytes): a run stopped while writing it"),
    (lambda p: p.write_text("hello, not a checkpoint"), "(23 bytes) is not a readable PyTorch checkpoint"),
])
def test_bad_files_are_one_line(tmp_path, make, rule):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert rule in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_truncated_checkpoint_is_one_line(tmp_path):
    torch.save({"w": torch.zeros(10000)}, tmp_path / "full.pt")
    raw = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt' \(\d+ bytes\) is not a readable PyTorch checkpoint \("
                                              r"truncated, damaged or another kind of file\): \S"):
        load_checkpoint(tmp_path / "cut.pt")
