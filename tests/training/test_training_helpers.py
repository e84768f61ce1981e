from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.errors import DatasetError
from pipeline.training import (
    LATEST,
    LatestCheckpoint,
    MetricsReport,
    inference_items,
    per_class_metrics,
    prepare_fold,
    rank_zero_handlers,
    resume,
)
from pipeline.training.distributed import init_distributed


def test_prepare_fold_checks_and_splits(ct_dataset, tmp_path):
    parts = prepare_fold(ct_dataset, fold=1, num_folds=3, seed=0, splits_file=tmp_path / "s.json", num_classes=3)
    assert len(parts["train"]) == 4 and len(parts["val"]) == 2 and len(parts["all"]) == 6
    assert (tmp_path / "s.json").is_file()
    with pytest.raises(DatasetError, match=r"declared label ids must be < the network's 2 output channels.*got \[2\]"):
        prepare_fold(ct_dataset, num_folds=3, num_classes=2)
    with pytest.raises(ValueError, match="check must be one of full, headers, none"):
        prepare_fold(ct_dataset, check="some")


def test_prepare_fold_logs_the_rule_plainly(tmp_path, caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(DatasetError):
        prepare_fold(tmp_path / "nowhere")
    assert "the dataset cannot be used for training" in caplog.text and "nowhere" in caplog.text


def test_inference_items(ct_dataset, tmp_path):
    items = inference_items(ct_dataset / "imagesTr")
    assert len(items) == 6 and set(items[0]) == {"image", "case"} and items[0]["case"] == "ct_000"
    (tmp_path / "two").mkdir()
    for c in (0, 1):
        (tmp_path / "two" / f"p_000{c}.nii.gz").write_bytes(b"")
    assert inference_items(tmp_path / "two", channels=2) == [
        {"image": [str(tmp_path / "two/p_0000.nii.gz"), str(tmp_path / "two/p_0001.nii.gz")], "case": "p"}]
    (tmp_path / "two/q_0000.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match="every case must be complete .1 are not.*q_0000 to q_0001"):
        inference_items(tmp_path / "two", channels=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="must hold at least one image"):
        inference_items(tmp_path / "empty")


def _engine(epochs=2):
    return Engine(lambda engine, batch: float(batch))


def test_latest_checkpoint_is_atomic_readable_and_resumable(tmp_path, caplog):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = _engine()
    LatestCheckpoint(tmp_path, {"network": net, "optimizer": opt}).attach(trainer)
    trainer.run([1, 2, 3], max_epochs=2)
    state = torch.load(tmp_path / LATEST, weights_only=False)
    assert set(state) == {"network", "optimizer", "trainer"} and state["trainer"]["iteration"] == 6
    mode = stat.S_IMODE(os.stat(tmp_path / LATEST).st_mode)
    assert mode & stat.S_IRGRP, "readable like any other file, not owner-only"
    assert [p.name for p in tmp_path.iterdir()] == [LATEST]
    fresh = _engine()
    assert resume(fresh, tmp_path, {"network": torch.nn.Linear(2, 2), "trainer": fresh}) == str(tmp_path / LATEST)
    seen = []
    fresh.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    fresh.run([1, 2, 3], max_epochs=3)
    assert seen == [3], "continued after the two saved epochs"
    with caplog.at_level(logging.WARNING):
        assert resume(_engine(), tmp_path / "none", {"trainer": _engine()}) is None
    assert "does not exist: training starts from epoch 1" in caplog.text
    assert resume(_engine(), tmp_path, {"trainer": _engine()}, enabled=False) is None


def test_resume_from_an_empty_or_truncated_checkpoint_is_one_line(tmp_path, caplog):
    from pipeline.io.checkpoint import CheckpointError

    (tmp_path / LATEST).write_bytes(b"")  # a run killed while copying it, or a full disk
    with pytest.raises(CheckpointError, match=r"checkpoint_latest.pt' is empty \(0 bytes\)"):
        resume(_engine(), tmp_path, {"trainer": _engine()})
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        resume(_engine(), tmp_path, {"trainer": _engine()}, on_error="exit")
    assert info.value.code == 1 and "cannot resume:" in caplog.text and "--resume false" in caplog.text
    torch.save({"trainer": {"epoch": 1}}, tmp_path / LATEST)
    (tmp_path / LATEST).write_bytes((tmp_path / LATEST).read_bytes()[:40])
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        resume(_engine(), tmp_path, {"trainer": _engine()})


def test_latest_checkpoint_arguments():
    with pytest.raises(ValueError, match="save_dict must name at least one object"):
        LatestCheckpoint("x", {})
    with pytest.raises(ValueError, match="interval must be >= 1, got 0"):
        LatestCheckpoint("x", {"a": torch.nn.Linear(1, 1)}, interval=0)


def test_per_class_metrics_and_report(tmp_path):
    metrics = per_class_metrics({"0": "background", "1": "liver", "2": "kidney"}, ["dice", "hd95"],
                                spacing=[2.0, 2.0, 2.0])
    assert list(metrics) == ["val_dice_liver", "val_dice_kidney", "val_hd95_liver", "val_hd95_kidney"]
    with pytest.raises(ValueError, match="metric kind must be one of dice, hd95, got 'iou'"):
        per_class_metrics({"1": "a"}, ["iou"])
    from monai.data import MetaTensor

    label = torch.zeros(3, 8, 8, 8)
    label[0] = 1
    label[0, 2:5, 2:5, 2:5], label[1, 2:5, 2:5, 2:5] = 0, 1
    pred = label.clone()
    pred[1, 4, 4, 4], pred[0, 4, 4, 4] = 0, 1  # one voxel of liver missed
    evaluator = Engine(lambda e, b: [{"image": MetaTensor(torch.zeros(1, 8, 8, 8), meta={"filename_or_obj": "a"}),
                                      "pred": pred, "label": label}])
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    MetricsReport(tmp_path).attach(evaluator)
    evaluator.run([0], max_epochs=1)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["mean"]["val_dice_liver"] == pytest.approx(2 * 26 / (26 + 27))
    assert report["per_case"][0]["val_dice_kidney"] is None, "absent from both: NaN, written as null"
    assert report["per_case"][0]["case"] == "a"
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("case,val_dice_liver")
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1


def test_rank_zero_handlers_outside_ddp_keeps_everything():
    handlers = [object(), object()]
    assert rank_zero_handlers(handlers) is handlers and rank_zero_handlers(None) is None


def test_init_distributed_needs_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="must be started with torchrun"):
        init_distributed()


def test_hd95_on_original_grids_reads_each_cases_spacing(tmp_path):
    from monai.data import MetaTensor

    label = torch.zeros(2, 12, 12, 12)
    label[1, 4:8, 4:8, 4:8] = 1
    label[0] = 1 - label[1]
    pred = label.clone()
    pred[1, 8, 4:8, 4:8], pred[0, 8, 4:8, 4:8] = 1, 0  # one extra plane along the first axis
    names = {"0": "background", "1": "liver"}
    results = {}
    for spacing, affine_x in (("label", 3.0), ([1.0, 1.0, 1.0], 3.0), (None, 3.0), ("label", 1.0)):
        affine = torch.diag(torch.tensor([affine_x, 1.0, 1.0, 1.0]))
        metric = per_class_metrics(names, ["hd95"], spacing=spacing, prefix="e")["e_hd95_liver"]
        evaluator = Engine(lambda e, b, a=affine: [{"image": MetaTensor(torch.zeros(1, 12, 12, 12)), "pred": pred,
                                                   "label": MetaTensor(label, affine=a)}])
        metric.attach(evaluator, "hd")
        MetricsReport(tmp_path, grid="original").attach(evaluator)
        evaluator.run([0], max_epochs=1)
        results[(str(spacing), affine_x)] = evaluator.state.metrics["hd"]
    assert results[("label", 3.0)] == pytest.approx(3.0), "one voxel along an axis of 3 mm voxels"
    assert results[("label", 1.0)] == pytest.approx(1.0)
    assert results[("[1.0, 1.0, 1.0]", 3.0)] == pytest.approx(1.0), "a fixed spacing ignores the label's"
    assert results[("None", 3.0)] == pytest.approx(1.0), "voxels"
    assert json.loads((tmp_path / "metrics.json").read_text())["grid"] == "original"
    with pytest.raises(ValueError, match="HD95 spacing must be a list of mm, 'label' or None, got 'mm'"):
        per_class_metrics(names, ["hd95"], spacing="mm")
