"""README's first command: the demo runs the whole path and prints Dice and where everything is."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--out", str(tmp_path / "demo"), "--epochs", "2",
                           "--cases", "4"], check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "held-out Dice", "label maps:", "MLflow UI:"):
        assert step in out, step
    assert re.search(r"mean\s+\d\.\d{3}\s+\d\.\d{3}", out), "a Dice row per organ"
    report = json.loads((tmp_path / "demo/segmentations/report.json").read_text())
    assert report["counts"] == {"ok": 4, "skipped": 0, "failed": 0}
    assert (tmp_path / "demo/model.ts").is_file()
    assert (tmp_path / "demo/training/eval/mlruns.db").is_file(), "tracked into the embedded MLflow store"


def test_demo_bad_out_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--out", str(tmp_path / "file/sub")], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--out must be a writable folder" in proc.stderr
