"""Loading an exported model of either format: the ONNX wrapper, its card, and what it refuses in one line.

The ONNX files here are built by hand with ``onnx.helper`` (an Identity or a 1x1 convolution), so the loader is tested
without torch's exporter (tests/export/test_onnx.py exports real networks).
"""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch

from pipeline.deploy import CardError, OnnxModule, load_model, model_format, runtime_settings
from pipeline.deploy.runtime import load_onnx
from pipeline.errors import PipelineError

onnx = pytest.importorskip("onnx", reason="building the test models needs onnx: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="ONNX models run with onnxruntime: pip install -e '.[onnx]'")
from onnx import TensorProto, helper, numpy_helper  # after the skip: onnx is an optional extra

CARD = {"card_version": 3, "labels": {"0": "background", "1": "a", "2": "b"},
        "network": {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "depth": 4},
        "inference": {"roi_size": [8, 8, 8], "level": 2}, "export": {"precision": "fp32", "device": "cpu",
                                                                        "format": "onnx"}}
WEIGHT = np.array([1.0, -2.0, 0.5], dtype=np.float32).reshape(3, 1, 1, 1, 1)


def _model(path, card=CARD, dtype=TensorProto.FLOAT, shape=("batch", 1, "x", "y", "z"), conv=True):
    """A 1x1x1 convolution of one channel to three (``WEIGHT``), or an Identity, with ``card`` as metadata."""
    image = helper.make_tensor_value_info("image", dtype, list(shape))
    if conv:
        logits = helper.make_tensor_value_info("logits", dtype, [shape[0], 3, *shape[2:]])
        nodes = [helper.make_node("Conv", ["image", "w"], ["logits"])]
        init = [numpy_helper.from_array(WEIGHT, "w")]
    else:
        logits = helper.make_tensor_value_info("logits", dtype, list(shape))
        nodes, init = [helper.make_node("Identity", ["image"], ["logits"])], []
    graph = helper.make_graph(nodes, "g", [image], [logits], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if card is not None:
        helper.set_model_props(model, {"model_card.json": card if isinstance(card, str) else json.dumps(card)})
    onnx.save_model(model, str(path))
    return path


def test_the_suffix_chooses_the_loader_and_the_module_runs_like_a_network(tmp_path):
    assert [model_format(p) for p in ("m.onnx", "m.ONNX", "m.ts", "model")] == ["onnx", "onnx", "torchscript",
                                                                                "torchscript"]
    module, card = load_model(_model(tmp_path / "m.onnx"))
    assert isinstance(module, OnnxModule) and card.export.format == "onnx" and card.level == 2 and module.level == 2
    x = torch.randn(2, 1, 8, 12, 4, dtype=torch.float64)  # any batch and size (the graph's axes are dynamic)
    with torch.inference_mode():
        out = module(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 3, 8, 12, 4)
    assert torch.allclose(out, torch.from_numpy(WEIGHT.reshape(1, 3, 1, 1, 1)) * x.float())
    assert module.to("cpu") is module and module.to(torch.float32) is module
    with pytest.raises(ValueError, match="an ONNX model runs in float32, got torch.float16"):
        module.to(torch.float16)
    (tmp_path / "m.ts").write_text("not a model")
    with pytest.raises(PipelineError, match="m.ts' is not a TorchScript file"):  # .ts: the TorchScript loader
        load_model(tmp_path / "m.ts")


def test_the_card_goes_through_the_card_rules(tmp_path):
    broken = copy.deepcopy(CARD)
    broken["labels"] = {"0": "background", "1": "a"}
    with pytest.raises(CardError) as info:
        load_onnx(_model(tmp_path / "broken.onnx", broken))
    assert str(info.value).startswith(f"'{tmp_path / 'broken.onnx'}': model card: there must be as many labels as "
                                      "output channels (3)")
    with pytest.raises(CardError, match="model card version 9 is newer than this pipeline reads"):
        load_onnx(_model(tmp_path / "newer.onnx", {**CARD, "card_version": 9}))
    with pytest.raises(CardError, match="the model card must be valid JSON"):
        load_onnx(_model(tmp_path / "text.onnx", "{not json"))
    with pytest.raises(PipelineError, match=r"^'.*bare.onnx' has no embedded model card \(metadata_props "
                                            r"'model_card.json'\): export it with `python -m pipeline export"):
        load_onnx(_model(tmp_path / "bare.onnx", None))


def test_files_that_are_not_onnx_models_are_named_in_one_line(tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model")
    (tmp_path / "folder.onnx").mkdir()
    for path, rule in [(tmp_path / "notes.onnx", "' is not an ONNX model ONNX Runtime can load: "),
                       (tmp_path / "folder.onnx", "' must be an ONNX file, got a folder (give the .onnx file that "),
                       (tmp_path / "none.onnx", "' does not exist")]:
        with pytest.raises(PipelineError) as info:
            load_model(path)
        assert rule in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PipelineError, match=r"must take one float32 tensor \(tensor\(float\)\), got "
                                            r"\['tensor\(float16\)'\]"):
        load_model(_model(tmp_path / "half.onnx", dtype=TensorProto.FLOAT16, conv=False))


def test_an_onnx_runtime_failure_is_one_line_naming_the_file_and_the_input(tmp_path):
    module, _ = load_model(_model(tmp_path / "m.onnx", shape=(1, 1, 8, 8, 8)))
    with pytest.raises(PipelineError) as info:
        module(torch.zeros(1, 2, 8, 8, 8))
    message = str(info.value)
    assert message.startswith(f"'{tmp_path / 'm.onnx'}': ONNX Runtime failed on a (1, 2, 8, 8, 8) input: ")
    assert "\n" not in message


def test_a_missing_onnxruntime_says_what_to_install(tmp_path, monkeypatch):
    path = _model(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PipelineError) as info:
        load_model(path)
    assert str(info.value) == ("ONNX models run with ONNX Runtime, which is not installed: pip install onnxruntime "
                               "(or the project's extra: pip install 'unetpp-pipeline[onnx]')")


def test_the_graph_holds_one_level(tmp_path):
    from pipeline.inference.predictor import Predictor

    module, card = load_model(_model(tmp_path / "m.onnx"))
    module.level = 2  # the level it holds: accepted
    with pytest.raises(ValueError) as info:
        module.level = 3
    assert str(info.value) == (f"'{tmp_path / 'm.onnx'}' is an ONNX model of level 2 (an ONNX graph holds one level), "
                               "got level 3: export it again with --level 3, or use the TorchScript (.ts) export, "
                               "whose level can be switched")
    assert Predictor(module, card, device="cpu", level=2, precision="fp32").level == 2
    with pytest.raises(ValueError, match="is an ONNX model of level 2"):
        Predictor(module, card, device="cpu", level=4, precision="fp32")


def test_an_onnx_model_runs_fp32_and_on_cuda_only_where_onnx_runtime_has_it(tmp_path, monkeypatch):
    module, _ = load_model(_model(tmp_path / "m.onnx"))
    assert runtime_settings(module, "cpu", "auto") == ("cpu", "fp32")
    assert runtime_settings(module, "cpu", "fp32") == ("cpu", "fp32")
    for precision in ("bf16", "fp16"):
        with pytest.raises(PipelineError, match=f"an ONNX model runs in fp32 .*got --precision {precision}: use "
                                                "--precision auto or fp32, or the TorchScript"):
            runtime_settings(module, "cpu", precision)
    eager = torch.nn.Identity()
    assert runtime_settings(eager, "auto", "bf16") == ("auto", "bf16"), "a torch module: as asked"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert runtime_settings(module, "auto", "auto") == ("cpu", "fp32"), "no CUDA provider: auto is the CPU"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime_settings(module, "auto", "auto") == ("cuda", "fp32")


def test_cuda_without_onnx_runtimes_cuda_provider_is_refused(tmp_path, monkeypatch):
    from pipeline.deploy import runtime

    module, _ = load_model(_model(tmp_path / "m.onnx"))
    monkeypatch.setattr(runtime, "resolve_device", lambda device: torch.device(str(device)))  # as on a GPU machine
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(PipelineError) as info:
        module.to("cuda:1")
    assert str(info.value) == ("device 'cuda:1' asked for an ONNX model, but this ONNX Runtime offers no "
                               "CUDAExecutionProvider (it has CPUExecutionProvider): pip install onnxruntime-gpu, or "
                               "run on the CPU (--device cpu)")
    assert module.device == torch.device("cpu"), "still usable where it was"
