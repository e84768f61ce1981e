"""ONNX export: a valid file holding the .ts file's card, dynamic axes, parity checked (and refused), the format
rule, and nothing half-written when an export fails."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from types import SimpleNamespace

import pytest
import torch

from pipeline.deploy import card_from_dict, card_path, load_model, load_network_weights, read_card
from pipeline.errors import PipelineError
from pipeline.export import ExportError, build_network, export_checkpoint, export_format, export_onnx
from pipeline.networks import UNetPlusPlus

from .conftest import trained_checkpoint

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="ONNX models run with onnxruntime: pip install -e '.[onnx]'")
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript: pip install -e '.[onnx]'")

SMALL = (4, 4, 8, 8, 16, 4)
CARD = card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a"}, "inference": {"roi_size": [32, 32, 32]},
                       "network": {"in_channels": 1, "depth": 4, "out_channels": 2}}, "test card")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_parser):
    """One trained tiny MRI checkpoint exported at level 2 to .ts (library) and to .onnx (command line)."""
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("onnx_export")
    model = trained_checkpoint(root, tiny_parser)
    ts = export_checkpoint(model, root / "m.ts", level=2)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export", "--checkpoint", str(model), "--out", str(root / "m.onnx"), "--level", "2"])
    return SimpleNamespace(root=root, model=model, ts=ts, onnx=root / "m.onnx", code=code, stdout=stdout.getvalue())


def _eager(model, level):
    card = read_card(card_path(model))
    net = build_network(card.network)
    load_network_weights(net, model)
    net.level = level
    return net.eval()


def _net():
    torch.manual_seed(0)
    return UNetPlusPlus(3, 1, 2, features=SMALL)


def test_export_writes_a_valid_onnx_whose_card_is_the_ts_card_but_for_its_format(exports):
    assert exports.code == 0 and f"wrote {exports.onnx}" in exports.stdout and "level 2" in exports.stdout
    assert "parity: max |ONNX Runtime - eager| = " in exports.stdout
    onnx.checker.check_model(str(exports.onnx), full_check=True)
    proto = onnx.load(str(exports.onnx))
    embedded = [p for p in proto.metadata_props if p.key == "model_card.json"]
    assert len(embedded) == 1, [p.key for p in proto.metadata_props]
    in_onnx, in_ts = json.loads(embedded[0].value), exports.ts.card.to_dict()
    assert in_onnx["export"] == {**in_ts["export"], "format": "onnx"} and in_ts["export"]["format"] == "torchscript"
    assert {k: v for k, v in in_onnx.items() if k != "export"} == {k: v for k, v in in_ts.items() if k != "export"}
    assert in_onnx["inference"]["level"] == 2 and in_onnx["training"]["dataset"]["num_train"] == 2, \
        "the shareable card: counts, no case ids"
    _, card = load_model(exports.onnx)
    assert card.to_dict() == in_onnx, "read back through the card's own rules, unchanged"


def test_batch_and_spatial_axes_are_dynamic(exports):
    proto = onnx.load(str(exports.onnx))

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert dims(graph_input)[:2] == ["batch", 1] and dims(graph_output)[:2] == ["batch", 3]
    assert all(isinstance(d, str) and d for d in dims(graph_input)[2:]), dims(graph_input)
    assert dims(graph_output)[2:] == dims(graph_input)[2:]
    session = ort.InferenceSession(str(exports.onnx), providers=["CPUExecutionProvider"])
    net = _eager(exports.model, 2)
    for shape in [(1, 1, 32, 32, 32), (2, 1, 48, 32, 64)]:  # two window sizes (multiples of level 2's 4), two batches
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        (got,) = session.run(None, {graph_input.name: x.numpy()})
        with torch.inference_mode():
            expected = net(x)
        assert got.shape == (shape[0], 3, *shape[2:]) and float((torch.from_numpy(got) - expected).abs().max()) < 1e-4


def test_parity_is_checked_and_a_failing_export_is_refused_leaving_the_old_file(exports, tmp_path, monkeypatch):
    from pipeline.deploy.runtime import OnnxModule

    assert 0 <= export_checkpoint(exports.model, tmp_path / "ok.onnx").max_abs_diff <= 1e-4
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    real = OnnxModule.forward
    monkeypatch.setattr(OnnxModule, "forward", lambda self, x: real(self, x) + 1.0)
    with pytest.raises(ExportError, match=r"^exported model differs from the eager model by 1 \(> tolerance 0.0001\) "
                                          r"on a \(1, 1, 32, 32, 32\) input; the file was not written$"):
        export_checkpoint(exports.model, out)
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "ok.onnx"], "no temporary file left"


def test_an_exporter_failure_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Failed to export the model with torch.export.\nmany more lines")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    with pytest.raises(ExportError) as info:
        export_onnx(_net(), out, CARD)
    assert str(info.value) == ("the network cannot be exported to ONNX: Failed to export the model with torch.export.: "
                               "export TorchScript (.ts) instead")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_what_the_onnx_export_cannot_do_is_refused_before_any_work(tmp_path, monkeypatch):
    def not_reached(*args, **kwargs):
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(torch.onnx, "export", not_reached)
    with pytest.raises(PipelineError, match="^an ONNX export is fp32 .*drop --half, or export to a .ts file$"):
        export_onnx(_net(), tmp_path / "m.onnx", CARD, half=True)
    with pytest.raises(PipelineError, match=r"window size .* multiple of \[16, 16, 16\] per axis .*got \[40, 32, 32\]"):
        export_onnx(_net(), tmp_path / "m.onnx", CARD.replace(inference={"roi_size": (40, 32, 32)}), level=4)
    for name in ("onnxscript", "onnxruntime"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, name, None)
            with pytest.raises(PipelineError) as info:
                export_onnx(_net(), tmp_path / "m.onnx", CARD)
        assert str(info.value) == (f"ONNX export needs onnx, onnxscript and onnxruntime ({name} is missing): pip "
                                   "install onnx onnxscript onnxruntime (or the project's extra: pip install "
                                   "'unetpp-pipeline[onnx]')")
    assert list(tmp_path.iterdir()) == []


RULE = "its suffix chooses the format and must be .ts (TorchScript) or .onnx (ONNX)"


@pytest.mark.parametrize("out, fmt, expected", [
    ("m.ts", None, "torchscript"), ("m.onnx", None, "onnx"), ("runs/M.ONNX", "onnx", "onnx"),
    ("m.ts", "torchscript", "torchscript"),
    ("m.pt", None, f"export destination 'm.pt': {RULE}, got '.pt'"),
    ("model", None, f"export destination 'model': {RULE}, got '(none)'"),
    ("m.ts", "onnx", ("export destination 'm.ts': --format onnx needs a .onnx file, got '.ts' (the suffix and "
                      "--format must agree)")),
    ("m.onnx", "tflite", "--format must be one of torchscript, onnx, got 'tflite'"),
])
def test_the_suffix_chooses_the_format_and_an_explicit_one_must_agree(out, fmt, expected):
    if expected in ("torchscript", "onnx"):
        assert export_format(out, fmt) == expected
        return
    with pytest.raises(PipelineError) as info:
        export_format(out, fmt)
    assert str(info.value) == expected


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/m.pt"], "export destination '{tmp}/m.pt': its suffix chooses the format and must be .ts"),
    (["--out", "{tmp}/m.ts", "--format", "onnx"], "export destination '{tmp}/m.ts': --format onnx needs a .onnx file"),
    (["--out", "{tmp}/m.onnx", "--format", "torchscript", "--bundle", "unetpp_mri_segmentation"],
     "export destination '{tmp}/m.onnx': --format torchscript needs a .ts file, got '.onnx'"),
])
def test_cli_format_errors_are_one_line_with_status_2_before_any_work(args, message, exports, tmp_path, monkeypatch,
                                                                      capsys):
    from pipeline.cli import main
    from pipeline.export import checkpoint

    def not_reached(*a, **k):
        raise AssertionError("the export ran before its format was checked")

    monkeypatch.setattr(checkpoint, "load_network_weights", not_reached)
    code = main(["export", "--checkpoint", str(exports.model), *[a.format(tmp=tmp_path) for a in args]])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert code == 2 and captured.out == "" and len(errors) == 1, captured
    assert errors[0].startswith("pipeline export: error: " + message.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_2d_network_exports_with_dynamic_axes(tmp_path):
    torch.manual_seed(0)
    net = UNetPlusPlus(2, 1, 3, features=SMALL)
    card = card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a", "2": "b"},
                           "inference": {"kind": "slice", "roi_size": [32, 32]},
                           "network": {"spatial_dims": 2, "in_channels": 1, "depth": 4, "out_channels": 3}}, "2d card")
    result = export_onnx(net, tmp_path / "slices.onnx", card, level=3)
    assert result.max_abs_diff <= 1e-4 and result.input_shape == (1, 1, 32, 32) and result.card.level == 3
    module, loaded = load_model(tmp_path / "slices.onnx")
    x = torch.randn(5, 1, 64, 48)
    with torch.inference_mode():
        assert float((module(x) - net.eval()(x)).abs().max()) < 1e-4 and loaded.inference.kind == "slice"
