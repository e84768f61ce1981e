"""Self-configuration: fingerprint a dataset, plan a bundle training for it on a device within a time budget.

``python -m pipeline plan DATASET --out plan.json`` runs :func:`plan_dataset`; the plan is a bundle override
(``--config_file "['train.json','plan.json']"``). Rules: :mod:`pipeline.planning.rules`; the fingerprint:
:mod:`pipeline.planning.fingerprint`; step costs and the device probe: :mod:`pipeline.planning.probe`.
"""

from __future__ import annotations

from pipeline.planning.fingerprint import CaseFingerprint, Fingerprint, fingerprint_dataset
from pipeline.planning.plan_file import plan_dataset
from pipeline.planning.planner import DeviceSpec, Plan, make_plan
from pipeline.planning.probe import network_cost, probe_step

__all__ = ["CaseFingerprint", "DeviceSpec", "Fingerprint", "Plan", "fingerprint_dataset", "make_plan",
           "network_cost", "plan_dataset", "probe_step"]
