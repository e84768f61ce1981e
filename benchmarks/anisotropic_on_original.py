"""Score a model trained on the anisotropic copy (``anisotropic_dataset.py``) against the original labels.

The bundle's validation scores the anisotropic run on its own grid, against labels resampled to thick slices
(the slab's majority class, or nearest neighbour: ``anisotropic_dataset.py --labels``); the isotropic run is scored
at 1 mm. To compare the two on the same footing, this script segments the fold's validation cases of the
anisotropic copy with the bundle's preprocessing and sliding window, inverts the softmax onto each anisotropic
file's grid, resamples it linearly (in physical space) onto the original image's 1 mm grid, takes the argmax and
scores it against the original label. It also scores on the anisotropic grid, to
reproduce the bundle's own figure, and scores the anisotropic *labels* brought back to 1 mm the same way (one-hot,
linear, argmax): the ceiling that thick slices leave to any model, however good.

    .venv/bin/python benchmarks/anisotropic_on_original.py --bundle_root runs/aniso_plan \
        --plan plans/aniso/plan.json --aniso data/hippo_aniso [--original ../shared/data/hippocampus]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import machine, write_json

from pipeline.training.metrics import dice_scores


def _dice(pred: np.ndarray, label: np.ndarray, labels: dict) -> list[float]:
    return list(dice_scores(pred, label, labels).values())


def _parser(args: argparse.Namespace):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles/unetpp_mri_segmentation/configs/train.json"), args.plan])
    for key, value in {"dataset_dir": args.aniso, "bundle_root": args.bundle_root, "num_workers": 0,
                       "device": "$torch.device('cpu')", "check_data": "none"}.items():
        parser[key] = value
    return parser


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--bundle_root", required=True, help="the anisotropic training's --bundle_root")
    cli.add_argument("--plan", required=True, help="the plan it trained with")
    cli.add_argument("--aniso", required=True, help="the anisotropic dataset folder")
    cli.add_argument("--original", default=str(REPO.parent / "shared/data/hippocampus"))
    cli.add_argument("--json", default=None)
    args = cli.parse_args()

    from monai.data import MetaTensor
    from monai.transforms import Compose, Invertd, LoadImage, ResampleToMatch

    from pipeline.deploy import load_network_weights

    parser = _parser(args)
    net = parser.get_parsed_content("network_def")
    load_network_weights(net, Path(args.bundle_root) / "models" / "model.pt")
    net.eval()
    pre = Compose(parser.get_parsed_content("preprocessing"))
    inferer = parser.get_parsed_content("inferer")
    classes = parser.get_parsed_content("label_names")
    names = json.loads((Path(args.bundle_root) / "models" / "splits.json").read_text())["folds"][0]["val"]
    load = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)
    rows = []
    for name in names:
        item = pre({"image": str(Path(args.aniso) / "imagesTr" / f"{name}.nii.gz")})
        with torch.inference_mode():
            prob = torch.softmax(inferer(item["image"][None], net)[0], dim=0)
        item["pred"] = MetaTensor(prob, meta=dict(item["image"].meta),
                                  applied_operations=list(item["image"].applied_operations))
        pred = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(item)["pred"]
        aniso_label = load(str(Path(args.aniso) / "labelsTr" / f"{name}.nii.gz"))
        original_label = load(str(Path(args.original) / "labelsTr" / f"{name}.nii.gz"))
        back = ResampleToMatch(mode="bilinear", padding_mode="border")
        on_original = back(pred, img_dst=original_label)
        onehot = torch.stack([aniso_label[0] == k for k in range(pred.shape[0])]).float()
        ceiling = back(MetaTensor(onehot, affine=aniso_label.affine), img_dst=original_label)
        rows.append({"case": name,
                     "aniso_grid": _dice(pred.argmax(0).numpy(), aniso_label[0].numpy(), classes),
                     "original_grid": _dice(on_original.argmax(0).numpy(), original_label[0].numpy(), classes),
                     "label_ceiling": _dice(ceiling.argmax(0).numpy(), original_label[0].numpy(), classes)})
    result = {"cases": len(rows), "rows": rows}
    for grid in ("aniso_grid", "original_grid", "label_ceiling"):
        per_class = np.nanmean(np.array([r[grid] for r in rows]), axis=0)
        result[grid] = {"per_class": per_class.tolist(), "mean": float(per_class.mean())}
        print(f"{grid:<14} mean Dice {per_class.mean():.4f}  per class "
              + " / ".join(f"{v:.4f}" for v in per_class))
    print(f"wrote {write_json('anisotropic_on_original', {'machine': machine(), **result}, args.json)}")


if __name__ == "__main__":
    main()
