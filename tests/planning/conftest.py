"""Fingerprints of known shapes (isotropic MRI, anisotropic MRI, thick-slice CT, 2D) and a deterministic prober."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.planning import CaseFingerprint, DeviceSpec, Fingerprint
from pipeline.planning.probe import ProbeResult

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
CT_STATS = {"foreground": {"mean": 95.0, "std": 40.0, "p00_5": -20.0, "p50": 96.0, "p99_5": 210.0},
            "image": {"mean": -500.0, "std": 480.0, "p00_5": -1024.0, "p50": -200.0, "p99_5": 600.0},
            "integer": True}
MR_STATS = {"foreground": {"mean": 310.0, "std": 60.0, "p00_5": 120.0, "p50": 300.0, "p99_5": 520.0},
            "image": {"mean": 80.0, "std": 120.0, "p00_5": 0.0, "p50": 20.0, "p99_5": 600.0},
            "integer": False}


def make_fingerprint(shape, spacing, cases=20, channels=1, ct=False, names=None, body=1.0, nonzero=1.0,
                     extent_mm=(30.0, 30.0, 30.0), jitter=0.1, seed=0):
    """``cases`` cases around ``shape`` @ ``spacing`` (RAS order), sizes and spacings jittered by +-``jitter``."""
    rng = np.random.default_rng(seed)
    out = []
    for index in range(cases):
        factor = 1 + rng.uniform(-jitter, jitter, len(shape))
        sh = [max(1, round(s * f)) for s, f in zip(shape, factor)]
        sp = [float(v * rng.uniform(1 - jitter / 2, 1 + jitter / 2)) for v in spacing]
        part = lambda share, sh=sh: [max(1, round(v * share ** (1 / len(sh)))) for v in sh]
        out.append(CaseFingerprint(f"case_{index:03d}", sh, sp, sh, sp, "RAS", channels, part(nonzero), part(body),
                                   {"0": int(np.prod(sh)) - 1000, "1": 600, "2": 400},
                                   {"1": list(extent_mm[: len(sh)]), "2": [e / 2 for e in extent_mm[: len(sh)]]},
                                   0.05))
    stats = [CT_STATS if ct else MR_STATS] * channels
    return Fingerprint("synthetic", "key", {"0": "background", "1": "a", "2": "b"},
                       list(names or []), "", out, [dict(s) for s in stats])


def fake_prober(seconds_per_gmac=0.02, overhead=0.05, calls=None):
    """A prober whose step time is linear in the network's forward MACs (deterministic, instant)."""
    from pipeline.planning import network_cost

    def probe(dims, in_ch, out_ch, features, strides, patch, batch, device="cpu", steps=3):
        macs, _ = network_cost(dims, in_ch, out_ch, features, strides, patch)
        if calls is not None:
            calls.append((list(patch), batch))
        return ProbeResult(overhead + seconds_per_gmac * macs * batch / 1e9, steps, 0, device)

    return probe


@pytest.fixture
def cpu() -> DeviceSpec:
    return DeviceSpec("cpu", True, 8 * 2**30, 2)
