"""The demo: the product's main path on built-in synthetic CT, end to end, in a few minutes on a CPU.

1. ``synth``: phantoms in MSD layout (training set) and a separate held-out test set;
2. train the CT bundle with ``python -m monai.bundle run training ... --tracking configs/mlflow.json``
   (MLflow into the embedded SQLite store);
3. export the best model to TorchScript from its checkpoint and the model card the training wrote beside it;
4. batch-segment the held-out cases with that file only;
5. print Dice against the held-out labels, and where the outputs and the MLflow UI are.

Example:
    $ python -m pipeline demo --out demo_output
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

__all__ = ["REPO", "TRAIN_OVERRIDES", "run_demo"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
BUNDLE = "unetpp_ct_segmentation"
# small enough for a CPU in minutes, large enough to learn the phantoms
TRAIN_OVERRIDES = ["--patch_size", "[48,48,32]", "--features", "[16,16,32,64,128,16]", "--batch_size", "2",
                   "--samples_per_volume", "2", "--num_workers", "0", "--num_folds", "4",
                   "--learning_rate", "0.003", "--warmup_epochs", "1", "--sw_overlap", "0.25"]


def _run(cmd: list[str], log: Path) -> None:
    logger.info("$ %s", " ".join(cmd))
    with log.open("w") as handle:
        proc = subprocess.run(cmd, check=False, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ))
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise PipelineError(f"command failed with exit status {proc.returncode}: {' '.join(cmd)}\n{tail}\n"
                            f"(full log: {log})")


def run_demo(out: str | os.PathLike, cases: int = 8, test_cases: int = 4, epochs: int = 40, seed: int = 0,
             say: Callable[[str], None] = logger.info) -> dict:
    """Run the demo into ``out``; returns the held-out Dice scores and the paths it wrote.

    Args:
        out: output folder.
        cases: training phantoms. Defaults to 8.
        test_cases: held-out phantoms. Defaults to 4.
        epochs: training epochs. Defaults to 40.
        seed: phantom seed (the test set uses ``seed + 1000``). Defaults to 0.
        say: where progress and the summary go, a line at a time (the CLI prints them). Defaults to the log.
    """
    from pipeline.data import load_msd, write_synthetic_dataset
    from pipeline.export import export_checkpoint
    from pipeline.inference import segment
    from pipeline.io import read_image
    from pipeline.training.metrics import dice_scores

    root = Path(out).resolve()
    started = time.time()
    data = write_synthetic_dataset(root / "data", "ct", cases=cases, seed=seed).parent
    test = write_synthetic_dataset(root / "test", "ct", cases=test_cases, seed=seed + 1000).parent
    bundle_root = root / "training"
    say(f"[1/4] {cases} training and {test_cases} held-out CT phantoms in {data} and {test}")
    say(f"[2/4] training {BUNDLE} for {epochs} epochs with MLflow tracking (log: {root / 'train.log'})")
    configs = REPO / "bundles" / BUNDLE / "configs"
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    # through `pipeline bundle`: MONAI's run with the fast allocator and without the start-up noise in train.log
    _run([sys.executable, "-m", "pipeline", "bundle", "run", "training", "--config_file", str(configs / "train.json"),
          "--dataset_dir", str(data), "--bundle_root", str(bundle_root), "--epochs", str(epochs),
          "--val_interval", str(min(5, epochs)),
          "--tracking", str(REPO / "configs" / "mlflow.json"), *TRAIN_OVERRIDES], root / "train.log")
    say("[3/4] exporting the best model to TorchScript (its settings from the model card beside it)")
    result = export_checkpoint(bundle_root / "models" / "model.pt", root / "model.ts")
    say(f"      {result.path} (parity {result.max_abs_diff:.2g})")
    say(f"[4/4] segmenting the held-out cases with {result.path.name} only")
    report = segment(result.path, test / "imagesTr", root / "segmentations", device="auto", progress=False)
    labels = dict(result.card.labels)
    rows = []
    for item in load_msd(test).items:
        case = next((c for c in report.cases if Path(c.input).name == Path(item["image"]).name), None)
        if case is None or case.status == "failed":
            raise PipelineError(f"the demo could not segment {item['image']}: {case.error if case else 'missing'}")
        scores = dice_scores(read_image(case.output).array, read_image(item["label"]).array, labels)
        rows.append((item["case"], scores))
    names = [n for k, n in labels.items() if k != "0"]
    say(f"\nheld-out Dice ({len(rows)} cases, level {result.card.level}):")
    say(f"  {'case':<10}" + "".join(f"{n:>10}" for n in names))
    for case, scores in rows:
        say(f"  {case:<10}" + "".join(f"{scores[n]:>10.3f}" for n in names))
    means = {n: float(np.nanmean([s[n] for _, s in rows])) for n in names}
    say(f"  {'mean':<10}" + "".join(f"{means[n]:>10.3f}" for n in names))
    db = bundle_root / "eval" / "mlruns.db"
    say(f"\nlabel maps: {root / 'segmentations'} (report.json, report.csv)")
    say(f"model:      {result.path}")
    from pipeline.tracking.ui import ui_address, ui_command  # MLflow only for these lines

    if env_uri:
        address = ui_address(env_uri, BUNDLE, *([env_uri] if env_uri.startswith("http") else []))
        say(f"MLflow:     runs are on {env_uri}; open {address}")
    else:
        say(f"MLflow UI:  {ui_command(db)}")
        say(f"            then open {ui_address(f'sqlite:///{db}', BUNDLE)}")
    say("            (Model training mode; the registered model is under Models in the sidebar)")
    say(f"total {time.time() - started:.0f} s")
    return {"dice": means, "cases": rows, "model": str(result.path), "segmentations": str(root / "segmentations"),
            "mlflow_db": str(db)}
