"""Batch segmentation end to end (read, preprocess, predict, invert, write): ``python -m pipeline segment`` against
the stock MONAI route, side by side, same weights.

Stock route, as a Model Zoo ``inference.json`` runs it: ``LoadImaged`` -> ``EnsureChannelFirstd`` ->
``Orientationd`` -> ``Spacingd`` -> intensity (-> ``CropForegroundd`` for CT) -> ``SupervisedEvaluator`` with
``SlidingWindowInferer`` (Gaussian) and MONAI's ``BasicUNetPlusPlus`` -> softmax -> ``Invertd`` -> argmax ->
``SaveImaged``, in a plain ``python`` process (glibc malloc). Ours: ``python -m pipeline segment`` with an exported
TorchScript file of the same weights and its defaults. Both are timed as whole commands (start-up included),
alternating rounds; the outputs are compared by Dice.

Cases: ``hippo`` = 50 hippocampus volumes with the trained MRI model (``--bundle_root``): the 42 validation cases
of its fold (Dice against their labels is reported for both routes) and 8 training cases; ``ct`` = the real
abdomen CT of ../shared/data/ct_mr_examples at the CT bundle's spacing, with seeded random weights of the CT
bundle's default network (speed does not depend on the weights; agreement is still checked).

    .venv/bin/python benchmarks/inference_speed.py --bundle_root runs/hippo [--cases hippo ct] [--rounds 3]
        [--level 3] [--overlap 0.5] [--precision auto|fp32|bf16|fp16] [--device cpu|cuda]

``--device`` (default: CUDA when present) applies to both routes; on CUDA the stock route runs with AMP, as a
Model Zoo ``inference.json`` does there, and ours with ``--precision auto`` (fp16 autocast).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"
BUNDLES = {"hippo": "unetpp_mri_segmentation", "ct": "unetpp_ct_segmentation"}


def stock_worker(bundle: str, weights: str, inputs: str, output: str, overrides: str) -> None:
    """The stock MONAI route, built from the bundle's preprocessing as an inference.json would list it, on the
    device that ``overrides["device"]`` names (AMP on CUDA)."""
    import torch
    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.networks.nets import BasicUNetPlusPlus
    from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, SaveImaged

    from pipeline.networks import to_monai_state_dict

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    for key, value in json.loads(overrides).items():
        parser[key] = value
    preprocessing = Compose(parser.get_parsed_content("preprocessing"))
    features = parser.get_parsed_content("features")
    device = parser.get_parsed_content("device")
    net = BasicUNetPlusPlus(3, 1, parser.get_parsed_content("num_classes"), features=features).to(device)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(to_monai_state_dict(state))
    files = sorted(str(p) for p in Path(inputs).iterdir() if p.name.endswith((".nii.gz", ".nii")))
    loader = DataLoader(Dataset([{"image": f} for f in files], preprocessing), batch_size=1, num_workers=2)
    post = Compose([Activationsd(keys="pred", softmax=True),
                    Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False),
                    AsDiscreted(keys="pred", argmax=True),
                    SaveImaged(keys="pred", output_dir=output, output_postfix="seg", output_dtype=np.uint8,
                               resample=False, separate_folder=False, print_log=False)])
    evaluator = SupervisedEvaluator(device=device, val_data_loader=loader, network=net, amp=device.type == "cuda",
                                    inferer=parser.get_parsed_content("inferer"), postprocessing=post)
    evaluator.run()


def _dice(a: np.ndarray, b: np.ndarray, labels: list[int]) -> float:
    scores = []
    for k in labels:
        x, y = a == k, b == k
        if x.sum() + y.sum():
            scores.append(2 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return float(np.mean(scores)) if scores else 1.0


def _timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env={**env, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def prepare(case: str, work: Path, bundle_root: str | None, level: int | None, overlap: float | None,
            device: str = "cpu"):
    import torch

    from pipeline.export import export_bundle

    bundle = BUNDLES[case]
    inputs = work / f"{case}_in"
    inputs.mkdir()
    overrides: dict = {"device": f"$torch.device('{device}')"}
    if overlap is not None:
        overrides["sw_overlap"] = overlap
    if case == "hippo":
        splits = json.loads((Path(bundle_root) / "models" / "splits.json").read_text())["folds"][0]
        names = sorted(splits["val"]) + sorted(splits["train"])[: 50 - len(splits["val"])]
        for name in names:
            shutil.copy(SHARED / "hippocampus/imagesTr" / f"{name}.nii.gz", inputs / f"{name}.nii.gz")
        weights = Path(bundle_root) / "models" / "model.pt"
        labels = [1, 2]
    else:
        shutil.copy(SHARED / "ct_mr_examples/example_ct.nii.gz", inputs / "example_ct.nii.gz")
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
        parser["device"] = "$torch.device('cpu')"
        torch.manual_seed(0)
        weights = work / "ct_random.pt"
        torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
        labels = [1, 2]
    model = export_bundle(REPO / "bundles" / bundle, weights, work / f"{case}.ts", level=level,
                          overrides={k: v for k, v in overrides.items() if k != "device"}).path
    return bundle, inputs, weights, model, overrides, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle_root", default=None, help="trained MRI bundle root (models/model.pt)")
    parser.add_argument("--cases", nargs="+", default=["hippo", "ct"], choices=list(BUNDLES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--level", type=int, default=None, help="level exported for ours (default: bundle config)")
    parser.add_argument("--overlap", type=float, default=None, help="sliding-window overlap for both routes")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="ours: pipeline segment --precision (auto: fp16 on CUDA, bf16 on CPUs with native bf16)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] for both routes (default: cuda when present)")
    parser.add_argument("--stock-worker", nargs=5, metavar=("BUNDLE", "WEIGHTS", "IN", "OUT", "OVERRIDES"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.stock_worker:
        stock_worker(*args.stock_worker)
        return
    from _common import machine, median, pick_device, write_json

    device = pick_device(parser, args.device)

    from pipeline.deploy import load_torchscript
    from pipeline.io import read_image

    plain = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in args.cases:
            if case == "hippo" and not args.bundle_root:
                print("skipping hippo: --bundle_root of a trained MRI model is needed")
                continue
            bundle, inputs, weights, model, overrides, labels = prepare(case, work, args.bundle_root, args.level,
                                                                       args.overlap, device)
            n = len(list(inputs.iterdir()))
            times = {"stock": [], "ours": []}
            for round_no in range(args.rounds):
                for side in ("stock", "ours"):
                    out = work / f"{case}_{side}_out"
                    shutil.rmtree(out, ignore_errors=True)
                    if side == "stock":
                        cmd = [sys.executable, __file__, "--stock-worker", bundle, str(weights), str(inputs), str(out),
                               json.dumps(overrides)]
                    else:
                        cmd = [sys.executable, "-m", "pipeline", "segment", "--model", str(model), "--input",
                               str(inputs), "--output", str(out), "--device", device, "--no-progress",
                               "--precision", args.precision]
                    times[side].append(_timed(cmd, plain))
                    print(f"{case} round {round_no + 1} {side}: {times[side][-1]:.1f} s", flush=True)
            agreement, truth = [], {"stock": [], "ours": []}
            val = set(json.loads((Path(args.bundle_root) / "models" / "splits.json").read_text())["folds"][0]["val"]) \
                if case == "hippo" else set()
            for f in sorted(inputs.iterdir()):
                stem = f.name[: -len(".nii.gz")]
                a = read_image(work / f"{case}_stock_out" / f"{stem}_seg.nii.gz").array
                b = read_image(work / f"{case}_ours_out" / f"{stem}_seg.nii.gz").array
                agreement.append(_dice(a, b, labels))
                if stem in val:
                    label = read_image(SHARED / "hippocampus/labelsTr" / f.name).array
                    truth["stock"].append(_dice(a, label, labels))
                    truth["ours"].append(_dice(b, label, labels))
            stock_s, ours_s = median(times["stock"]), median(times["ours"])
            results[case] = {"volumes": n, "stock_s": stock_s, "ours_s": ours_s, "speedup": stock_s / ours_s,
                             "dice_agreement_mean": float(np.mean(agreement)),
                             "dice_agreement_min": float(np.min(agreement)), "times": times,
                             "ours_level": load_torchscript(model)[1].level,
                             "ours_precision": json.loads((work / f"{case}_ours_out" / "report.json").read_text())
                             ["settings"]["precision"],
                             "dice_vs_labels": {k: float(np.mean(v)) for k, v in truth.items() if v},
                             "labelled_cases": len(truth["ours"])}
    print(f"\nend to end, median of {args.rounds} rounds, {device}; stock = MONAI route in plain python, ours = "
          f"python -m pipeline segment")
    print(f"{'case':<8}{'volumes':>8}{'stock s':>10}{'ours s':>10}{'speed-up':>10}{'level':>7}{'precision':>10}"
          f"{'agreement':>11}{'Dice stock':>12}{'Dice ours':>11}")
    for case, r in results.items():
        truth = r["dice_vs_labels"]
        print(f"{case:<8}{r['volumes']:>8}{r['stock_s']:>10.1f}{r['ours_s']:>10.1f}{r['speedup']:>9.2f}x"
              f"{r['ours_level']:>7}{r['ours_precision']:>10}{r['dice_agreement_mean']:>11.4f}"
              + (f"{truth['stock']:>12.4f}{truth['ours']:>11.4f}" if truth else f"{'-':>12}{'-':>11}"))
    print(f"wrote {write_json('inference_speed', {'machine': machine(), 'results': results}, args.json)}")


if __name__ == "__main__":
    main()
