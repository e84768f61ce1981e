"""UNet++: one shared contract that every configuration runs, plus MONAI reference checks."""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks.nets import BasicUNetPlusPlus

from pipeline.networks import UNetPlusPlus, to_monai_state_dict

SMALL = (4, 4, 8, 8, 16, 4)

# (name, constructor kwargs, input shape): odd sizes on purpose, to catch padding bugs.
CASES = [
    ("3d_default", {"spatial_dims": 3, "features": SMALL}, (1, 1, 33, 32, 19)),
    ("2d_default", {"spatial_dims": 2, "features": SMALL}, (2, 1, 33, 47)),
    ("3d_aniso_batchnorm",
     {"spatial_dims": 3, "features": SMALL, "strides": [(2, 2, 1), (2, 2, 1), 2, 2], "norm": "batch",
                                "in_channels": 2}, (2, 2, 35, 32, 9)),
    ("3d_depth3_nontrainable", {"spatial_dims": 3, "features": (4, 8, 8, 16, 4), "depth": 3, "upsample": "nontrainable",
                                    "act": "relu", "dropout": 0.1}, (1, 1, 17, 16, 21)),
    ("2d_depth5_pixelshuffle", {"spatial_dims": 2, "features": (4, 4, 8, 8, 16, 16, 4), "depth": 5,
                                    "upsample": "pixelshuffle"}, (1, 1, 64, 37)),
]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request):
    _name, kwargs, shape = request.param
    torch.manual_seed(0)
    kwargs = dict(kwargs, out_channels=3, deep_supervision=True)
    net = UNetPlusPlus(**kwargs)
    net.build_kwargs = kwargs  # lets a test build an identical twin
    return net, shape


class TestNetworkContract:
    """Every configuration: forward, every level, backward, state_dict, TorchScript."""

    def test_training_returns_every_head_deepest_first(self, case):
        net, shape = case
        net.train()
        outputs = net(torch.randn(*shape))
        assert isinstance(outputs, list) and len(outputs) == net.depth
        assert all(o.shape == (shape[0], 3, *shape[2:]) for o in outputs)

    def test_eval_returns_one_tensor_for_every_level(self, case):
        net, shape = case
        net.eval()
        x = torch.randn(*shape)
        for level in range(1, net.depth + 1):
            net.level = level
            with torch.no_grad():
                out = net(x)
            assert isinstance(out, torch.Tensor) and out.shape == (shape[0], 3, *shape[2:])

    def test_backward_reaches_every_parameter(self, case):
        net, shape = case
        net.train()
        loss = sum(o.square().mean() for o in net(torch.randn(*shape)))
        loss.backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None]
        assert missing == []

    def test_state_dict_round_trip(self, case):
        net, shape = case
        net.eval()
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        twin = type(net)(**net.build_kwargs).eval()
        twin.load_state_dict(torch.load(buffer))
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.equal(net(x), twin(x))

    def test_torchscript_round_trip_every_level(self, case, tmp_path):
        net, shape = case
        net.eval()
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, tmp_path / "net.ts")
        loaded = torch.jit.load(tmp_path / "net.ts").eval()
        x = torch.randn(*shape)
        for level in range(1, net.depth + 1):
            net.level = level
            loaded.level = level
            with torch.no_grad():
                diff = (net(x) - loaded(x)).abs().max().item()
            assert diff < 1e-5, f"level {level}: {diff}"


def test_pruned_level_equals_deep_supervision_head():
    torch.manual_seed(1)
    net = UNetPlusPlus(3, 1, 2, features=SMALL, deep_supervision=True)
    x = torch.randn(1, 1, 32, 33, 17)
    with torch.no_grad():
        heads = net.train()(x)  # instance norm has no running statistics: train and eval agree here
        net.eval()
        for level in range(1, 5):
            net.level = level
            assert (net(x) - heads[4 - level]).abs().max() < 1e-5


@pytest.mark.parametrize("spatial_dims, shape", [(3, (2, 1, 32, 33, 17)), (2, (1, 2, 33, 48))])
def test_all_levels_gives_every_pruned_level_in_one_pass(spatial_dims, shape):
    torch.manual_seed(2)
    net = UNetPlusPlus(spatial_dims, shape[1], 3, features=SMALL).eval()  # no deep supervision needed
    x = torch.randn(*shape)
    with torch.no_grad():
        net.all_levels = True
        heads = net(x)
        net.all_levels = False
        assert len(heads) == 4 and not net.training
        for level in range(1, 5):
            net.level = level
            assert (net(x) - heads[4 - level]).abs().max() < 1e-5, f"level {level}"
        scripted = torch.jit.script(net)
        scripted.all_levels = True
        assert all((a - b).abs().max() < 1e-5 for a, b in zip(scripted(x), heads)), "kept by scripting"


def test_pruned_levels_compute_only_their_nodes():
    net = UNetPlusPlus(3, 1, 2, features=SMALL).eval()
    calls = []
    for k, nodes in enumerate(net.decoder):
        for j, node in enumerate(nodes):
            node.register_forward_hook(lambda m, i, o, name=(k - j, j + 1): calls.append(name))
    for level, expected in [(1, {(0, 1)}), (2, {(0, 1), (1, 1), (0, 2)}), (4, None)]:
        calls.clear()
        net.level = level
        with torch.no_grad():
            net(torch.zeros(1, 1, 32, 16, 16))
        assert len(calls) == level * (level + 1) // 2
        assert all(i + j <= level for i, j in calls)
        if expected:
            assert set(calls) == expected


@pytest.mark.parametrize("spatial_dims, shape", [(3, (2, 1, 32, 33, 20)), (2, (2, 2, 65, 64))])
@pytest.mark.parametrize("options", [
    {},
    {"norm": "batch", "act": "relu", "bias": False},
    {"upsample": "nontrainable"},
    {"upsample": "pixelshuffle", "dropout": 0.0},
])
def test_monai_weight_parity(spatial_dims, shape, options):
    torch.manual_seed(0)
    features = (4, 8, 8, 16, 16, 8)
    ref = BasicUNetPlusPlus(spatial_dims, shape[1], 3, features=features, deep_supervision=True, **options)
    ours = UNetPlusPlus(spatial_dims, shape[1], 3, features=features, deep_supervision=True, **options)
    # randomise the norm statistics so that eval-mode batch norm is exercised too
    for module in ref.modules():
        if isinstance(module, torch.nn.BatchNorm3d | torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    assert str(ours.load_state_dict(ref.state_dict())) == "<All keys matched successfully>"
    copied = UNetPlusPlus.from_monai(ref)
    ref.eval(), ours.eval(), copied.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = ref(x)
        for level in range(1, 5):
            ours.level = copied.level = level
            assert (ours(x) - expected[level - 1]).abs().max() < 1e-5
            assert (copied(x) - expected[level - 1]).abs().max() < 1e-5
    # and back: our weights load into MONAI's class
    back = BasicUNetPlusPlus(spatial_dims, shape[1], 3, features=features, deep_supervision=True, **options).eval()
    back.load_state_dict(to_monai_state_dict(ours.state_dict()))
    with torch.no_grad():
        assert (back(x)[-1] - expected[-1]).abs().max() < 1e-6


def test_level_is_validated_and_kept_by_scripting(tmp_path):
    net = UNetPlusPlus(2, 1, 2, features=SMALL, level=3).eval()
    for bad in (0, 5, "2", 2.0, True):
        with pytest.raises(ValueError, match="level must be an int between 1 and depth=4"):
            net.level = bad
    with pytest.raises(ValueError, match="level must be"):
        UNetPlusPlus(2, 1, 2, features=SMALL, level=7)
    scripted = torch.jit.script(net)
    torch.jit.save(scripted, tmp_path / "n.ts")
    loaded = torch.jit.load(tmp_path / "n.ts")
    assert loaded.level == 3
    loaded.level = 9
    with pytest.raises(torch.jit.Error, match="level must be between 1 and depth=4, got 9"):
        loaded(torch.zeros(1, 1, 16, 16))


def test_too_small_input_names_the_divisor():
    net = UNetPlusPlus(3, 1, 2, features=SMALL, strides=[(2, 2, 1), (2, 2, 1), 2, 2]).eval()
    assert net.min_input_size() == [16, 16, 4] and net.min_input_size(2) == [4, 4, 1]
    with pytest.raises(ValueError, match=r"input spatial size must be >= \[16, 16, 4\].*got \[16, 16, 3\]"):
        net(torch.zeros(1, 1, 16, 16, 3))
    with pytest.raises(ValueError, match=r"more than one voxel at the deepest level.*got \[16, 16, 4\]"):
        net(torch.zeros(1, 1, 16, 16, 4))
    net.level = 2  # a pruned level needs only its own strides
    assert net(torch.zeros(1, 1, 8, 4, 1)).shape == (1, 2, 8, 4, 1)
    scripted = torch.jit.script(net)
    scripted.level = 4
    with pytest.raises(torch.jit.Error, match=r"must be >= \[16, 16, 4\]"):
        scripted(torch.zeros(1, 1, 8, 16, 8))


@pytest.mark.parametrize("kwargs, match", [
    ({"spatial_dims": 1}, "spatial_dims must be 2 or 3, got 1"),
    ({"depth": 0}, "depth must be between 1 and 6, got 0"),
    ({"features": (4, 4, 8)}, r"features must be depth \+ 2 = 6 positive ints"),
    ({"strides": [2, 2]}, r"strides must be an int, one per-axis stride, or one entry per level \(4\)"),
    ({"strides": [(2, 2), 2, 2, 2]}, "each stride must be a positive int or 3 positive ints"),
    ({"upsample": "bicubic"}, "upsample must be one of deconv, nontrainable, pixelshuffle"),
    ({"upsample": "pixelshuffle", "strides": (2, 2, 1)}, "pixelshuffle' needs isotropic strides"),
])
def test_bad_arguments(kwargs, match):
    args = {"spatial_dims": 3, "features": SMALL}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        UNetPlusPlus(**args)


def test_deep_supervision_checkpoint_loads_without_it():
    trained = UNetPlusPlus(3, 1, 2, features=SMALL, deep_supervision=True)
    plain = UNetPlusPlus(3, 1, 2, features=SMALL, deep_supervision=False)
    plain.load_state_dict(trained.state_dict())
    plain.train()
    assert isinstance(plain(torch.zeros(1, 1, 32, 16, 16)), torch.Tensor)


@pytest.mark.parametrize("spatial_dims, shape", [(3, (2, 2, 33, 32, 19)), (2, (3, 1, 33, 47))])
def test_channels_last_layout_trains_the_same_network(spatial_dims, shape):
    """The layout the CPU trains in (pipeline.training.prepare_network): same heads, same gradients."""
    torch.manual_seed(0)
    net = UNetPlusPlus(spatial_dims, shape[1], 3, features=SMALL, deep_supervision=True)
    twin = UNetPlusPlus(spatial_dims, shape[1], 3, features=SMALL, deep_supervision=True)
    twin.load_state_dict(net.state_dict())
    layout = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    twin = twin.to(memory_format=layout)
    x = torch.randn(*shape)
    heads, cl_heads = net(x), twin(x)
    for a, b in zip(heads, cl_heads):
        assert (a - b).abs().max() < 1e-4
    sum(h.square().mean() for h in heads).backward()
    sum(h.square().mean() for h in cl_heads).backward()
    grads = dict(twin.named_parameters())
    # float sums in another order: compare each gradient as a whole, against a floor for those that are zero in
    # exact arithmetic (a convolution bias followed by instance norm)
    floor = 1e-2 * max(p.grad.norm() for p in net.parameters())
    for name, p in net.named_parameters():
        error = (p.grad - grads[name].grad).norm() / torch.maximum(p.grad.norm(), floor)
        assert error < 1e-2, f"{name}: relative error {error:.2e}"


def test_decoder_nodes_never_concatenate(monkeypatch):
    """A node convolves each skip part with its slice of the weights: no full-resolution concatenation copy."""
    net = UNetPlusPlus(3, 1, 2, features=SMALL, deep_supervision=True)
    calls = []
    original = torch.cat
    monkeypatch.setattr(torch, "cat", lambda *a, **k: calls.append(1) or original(*a, **k))
    net(torch.randn(2, 1, 32, 32, 16))
    assert calls == []
