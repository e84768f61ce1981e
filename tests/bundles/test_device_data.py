"""The GPU data path (device_data: cached volumes on the training device, augmentation there, a thread loader
without worker processes), run on the CPU: the same transforms give the same batches as the CPU path."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from .conftest import BUNDLES, MODALITY, NAMES


def _batches(bundle: str, data, device_data: bool, extra: tuple[str, ...] = ()):
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / f"{n}.json") for n in ("train", *extra)])
    for key, value in {"dataset_dir": str(data), "device": "$torch.device('cpu')", "device_data": device_data,
                       "check_data": "none", "splits_file": None, "num_workers": 0, "batch_size": 2,
                       "patch_size": [24, 24, 16], "datalist": "$pipeline.training.prepare_fold(@dataset_dir, "
                                                              "num_folds=3, check='none')"}.items():
        parser[key] = value
    set_determinism(seed=0)
    loader = parser.get_parsed_content("train#dataloader")
    chain = [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing")]
    batches = [(batch["image"], batch["label"]) for _epoch in range(3) for batch in loader]
    set_determinism(seed=None)
    return type(loader).__name__, loader.num_workers, chain, batches


@pytest.mark.parametrize("bundle", NAMES)
@pytest.mark.parametrize("extra", [(), ("train_2d",)], ids=["3d", "2d"])
def test_device_path_gives_the_cpu_paths_batches(bundle, extra, tiny_datasets):
    data = tiny_datasets[MODALITY[bundle]]
    kind, workers, chain, device_batches = _batches(bundle, data, True, extra)
    assert kind == "ThreadDataLoader" and workers == 0
    assert "ToDeviced" in chain and chain.index("ClassesToIndicesd") < chain.index("ToDeviced") < \
        chain.index("RandCropByLabelClassesd"), "cached on the device, cropped there"
    _, _, cpu_chain, cpu_batches = _batches(bundle, data, False, extra)
    assert "ToDeviced" not in cpu_chain
    assert len(device_batches) == len(cpu_batches) >= 6
    for (image, label), (cpu_image, cpu_label) in zip(device_batches, cpu_batches):
        assert type(image) is torch.Tensor, "plain tensors for the training step (no MetaTensor bookkeeping)"
        assert torch.equal(image, cpu_image) and torch.equal(label, cpu_label)
    assert not torch.equal(device_batches[0][0], device_batches[1][0]), "random crops differ between draws"


@pytest.mark.parametrize("bundle", NAMES)
def test_device_data_is_the_default_on_cuda_only(bundle):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
    parser["device"] = "$torch.device('cpu')"
    assert parser.get_parsed_content("device_data") is False
    parser["device"] = "$torch.device('cuda:0')"
    assert parser.get_parsed_content("device_data") is True
    assert parser.get_parsed_content("amp") is True, "and MONAI's fp16 amp"
    parser["precision"] = "fp32"
    assert parser.get_parsed_content("amp") is False
