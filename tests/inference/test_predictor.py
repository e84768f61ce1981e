from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from pipeline.deploy import ExportRecord, card_from_dict
from pipeline.deploy.device import autocast_dtype, native_bf16
from pipeline.errors import PipelineError
from pipeline.inference import Predictor
from pipeline.networks import UNetPlusPlus

META = card_from_dict({"card_version": 3, "labels": {"0": "background", "1": "a", "2": "b"},
                       "inference": {"kind": "sliding_window", "roi_size": [32, 32, 32], "overlap": 0.5,
                                     "mode": "gaussian", "sigma_scale": 0.125},
                       "network": {"depth": 4, "out_channels": 3}}, "test card")


def _net():
    torch.manual_seed(0)
    return UNetPlusPlus(3, 1, 3, features=(4, 4, 8, 8, 16, 4)).eval()


def test_equals_monai_sliding_window_inference():
    net, x = _net(), torch.randn(1, 1, 40, 37, 35)
    with torch.inference_mode():
        expected = torch.softmax(sliding_window_inference(x, [32, 32, 32], 1, net, overlap=0.5, mode="gaussian"), 1)
    got = Predictor(net, META, device="cpu", precision="fp32")(x)
    assert got.shape == (1, 3, 40, 37, 35) and torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(1, 40, 37, 35), atol=1e-5)


def test_level_and_overlap_are_applied():
    net, x = _net(), torch.randn(1, 1, 32, 32, 32)
    predictor = Predictor(net, META, device="cpu", level=2, overlap=0.0, precision="fp32")
    assert predictor.level == 2 and net.level == 2
    with torch.inference_mode():
        expected = torch.softmax(net(x), 1)
    assert torch.allclose(predictor(x), expected, atol=1e-6)
    for bad, match in [({"level": 5}, "level must be between 1 and the model's depth 4, got 5"),
                       ({"overlap": 1.0}, "overlap must be >= 0 and < 1, got 1.0"),
                       ({"sw_batch_size": 0}, "sw_batch_size must be >= 1, got 0"),
                       ({"precision": "int8"}, "precision must be one of auto, fp32, bf16, fp16, got 'int8'"),
                       ({"precision": "fp16"}, "precision fp16 needs a CUDA device")]:
        with pytest.raises(ValueError, match=match):
            Predictor(_net(), META, device="cpu", **bad)


def test_mirroring_tta_averages_all_flips():
    net, x = _net(), torch.randn(1, 1, 32, 32, 32)
    plain = Predictor(net, META, device="cpu", precision="fp32")
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    expected = sum(torch.flip(plain(torch.flip(x, f) if f else x), f) if f else plain(x) for f in flips) / 8
    got = Predictor(net, META, device="cpu", tta=True, precision="fp32")(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain(x), atol=1e-4)


@pytest.mark.parametrize("mirror_axes, flips", [([0], [(), (2,)]), ([0, 2], [(), (2,), (4,), (2, 4)]), ([], [()])])
def test_tta_mirrors_only_the_axes_the_model_was_trained_to_mirror(mirror_axes, flips):
    net, x = _net(), torch.randn(1, 1, 32, 32, 32)
    meta = META.replace(inference={"mirror_axes": tuple(mirror_axes)})
    plain = Predictor(net, META, device="cpu", precision="fp32")
    expected = sum(torch.flip(plain(torch.flip(x, f)), f) if f else plain(x) for f in flips) / len(flips)
    got = Predictor(net, meta, device="cpu", tta=True, precision="fp32")(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_device_errors_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the 'CUDA absent' error cannot be checked here")
    with pytest.raises(PipelineError, match="CUDA is not available"):
        Predictor(_net(), META, device="cuda")
    with pytest.raises(ValueError, match="exported in fp16 for CUDA"):
        Predictor(_net(), META.replace(export=ExportRecord(precision="fp16", device="cuda")), device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: AMP, pinned memory and fp16 paths")
def test_cuda_amp_matches_fp32():
    net, x = _net(), torch.randn(1, 1, 40, 40, 40)
    cpu = Predictor(net, META, device="cpu", precision="fp32")(x)
    gpu = Predictor(_net(), META, device="cuda")(x)
    assert gpu.device.type == "cpu" and (gpu - cpu).abs().max() < 2e-2


def test_the_card_decides_what_arguments_leave_open():
    card = META.replace(inference={"overlap": 0.25, "sw_batch_size": 2, "level": 3})
    predictor = Predictor(torch.jit.script(_net()), card, device="cpu", precision="fp32")
    settings = (predictor.overlap, predictor.sw_batch_size, predictor.level, predictor.roi_size)
    assert settings == (0.25, 2, 4, [32] * 3), \
        "the scripted module's own level (the export sets it from the card) wins over the card's"
    assert Predictor(_net(), card, device="cpu", overlap=0.5, sw_batch_size=1).overlap == 0.5
    with pytest.raises(ValueError, match="records no window size"):
        Predictor(_net(), META.replace(inference={"roi_size": ()}), device="cpu")


def test_precision_choice_per_device(tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("fp32", cuda) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16 and autocast_dtype("auto", cuda) == torch.float16
    assert autocast_dtype("auto", cuda, half_model=True) is None  # an fp16 export runs as it is
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if native_bf16() else None)
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("flags\t: fpu sse2 avx2 avx512f avx512_bf16 avx_vnni\n")
    without.write_text("flags\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert native_bf16(str(with_bf16)) and not native_bf16(str(without))
    assert not native_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "torchscript"])
def test_bf16_agrees_with_fp32(scripted):
    net, x = _net(), torch.randn(1, 1, 40, 32, 32)  # two windows: bf16 is emulated (slow) on CPUs without it
    model = torch.jit.script(net) if scripted else net
    fp32 = Predictor(model, META, device="cpu", precision="fp32")
    bf16 = Predictor(torch.jit.script(_net()) if scripted else _net(), META, device="cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32(x), bf16(x)
    assert b.dtype == torch.float32 and torch.allclose(b.sum(1), torch.ones(1, 40, 32, 32), atol=1e-5)
    difference = (a - b).abs().max().item()
    assert 0 < difference < 0.05, difference  # really ran in bf16 (not 0), and close
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.97


def test_slice_wise_tta_mirrors_the_volume_axes_of_the_networks_axes():
    """A 2D network slicing along axis 0 was trained with its axis 1 flipped: that is the volume's axis 2."""
    torch.manual_seed(0)
    net = UNetPlusPlus(2, 1, 3, features=(4, 4, 8, 8, 16, 4)).eval()
    card = card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a", "2": "b"},
                           "network": {"spatial_dims": 2, "depth": 4, "out_channels": 3},
                           "inference": {"kind": "slice", "roi_size": [32, 32], "spatial_dim": 0,
                                         "mirror_axes": [1]}}, "t")
    x = torch.randn(1, 1, 3, 32, 40)
    plain = Predictor(net, card, device="cpu", precision="fp32")
    expected = (plain(x) + torch.flip(plain(torch.flip(x, (4,))), (4,))) / 2
    assert torch.allclose(Predictor(net, card, device="cpu", tta=True, precision="fp32")(x), expected, atol=1e-5)
