"""Fingerprint -> plan: bundle overrides fitted to the dataset, the device and the user's minutes.

:func:`make_plan` applies the rules of :mod:`pipeline.planning.rules` in order (spacing, crop, shape, 2D/3D,
normalisation, patch, pooling, features, batch, schedule), measuring the real step time on the device with
:mod:`pipeline.planning.probe` where the device is present. The result is a :class:`Plan`: the config keys to
lay over a bundle's ``train.json`` (``--config_file "['train.json','plan.json']"``), what each rule found, and
what it could not decide.

Example:
    >>> plan = make_plan(fingerprint, modality="auto", device="cpu", minutes=60)     # doctest: +SKIP
    >>> plan.overrides["patch_size"], plan.overrides["batch_size"]                   # doctest: +SKIP
    ([40, 56, 40], 4)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.data.loading import default_num_workers, usable_cores
from pipeline.planning import rules
from pipeline.planning.fingerprint import Fingerprint
from pipeline.planning.probe import ProbeResult, network_cost, probe_step

__all__ = ["PLAN_VERSION", "DeviceSpec", "Plan", "make_plan"]

#: Layout version of the plan file.
PLAN_VERSION = 1
#: The bundles' default number of folds (the training share of the cases is (K - 1) / K).
FOLDS = 5
#: Seconds before the first training step besides caching: imports, config parsing, the dataset check.
STARTUP_S = 30.0
#: Ceiling on epochs above the prediction, so that a machine faster than the probe still uses its minutes
#: (the time budget stops the run).
EPOCH_HEADROOM = 1.25
#: Learning rate of the project's measured recipe (AdamW, instance norm, hippocampus).
LEARNING_RATE = 0.003
#: Largest patch edge the typical object's extent may force.
OBJECT_FLOOR = 48
#: A time budget shrinks the patch to no less than this share of the median shape per axis (context matters more
#: than steps below it).
MIN_PATCH_SHARE = 0.5

Prober = Callable[..., ProbeResult]


@dataclass
class DeviceSpec:
    """Args:
        kind: ``"cpu"`` or ``"cuda"``.
        present: the device exists here (its step time can be measured).
        memory_bytes: memory the activations may use.
        cores: CPU cores (data workers).
    """

    kind: str
    present: bool
    memory_bytes: float
    cores: int

    @classmethod
    def resolve(cls, device: str = "auto") -> DeviceSpec:
        """``auto`` (CUDA when available), ``cpu`` or ``cuda``; memory budgets: 80% of the GPU's, or 40% of RAM;
        a CUDA device that is absent gets nnU-Net's 8 GiB reference."""
        import torch

        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got '{device}'")
        cuda = torch.cuda.is_available()
        kind = ("cuda" if cuda else "cpu") if device == "auto" else device
        cores = usable_cores()
        if kind == "cuda":
            memory = 0.8 * torch.cuda.get_device_properties(0).total_memory if cuda else 8 * 2**30
            return cls("cuda", cuda, float(memory), cores)
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 16 * 2**30
        return cls("cpu", True, 0.4 * float(ram), cores)


@dataclass
class Plan:
    """Args:
        overrides: bundle config keys and values.
        info: what each rule found (for the table and the record).
        undecided: what the planner could not decide, one sentence each.
        configs: bundle configs to combine with the plan (``train``, plus ``train_2d`` for 2D on slices).
    """

    overrides: dict[str, Any]
    info: dict[str, Any]
    undecided: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=lambda: ["train"])

    def to_config(self) -> dict[str, Any]:
        """The plan file's content: the overrides plus an inert ``plan_info`` record (no ``_target_``)."""
        return {"_desc_": f"plan for {self.info['dataset']}: combine with the bundle's "
                          f"{' + '.join(c + '.json' for c in self.configs)} (python -m pipeline plan)",
                **self.overrides,
                "plan_info": {"version": PLAN_VERSION, **self.info, "undecided": self.undecided,
                              "configs": self.configs}}

    @property
    def bundle(self) -> str:
        """The shipped bundle whose defaults suit the plan: the CT bundle when the first channel is CT."""
        channels = self.info.get("channels") or [{}]
        return "unetpp_ct_segmentation" if channels[0].get("modality") == "ct" else "unetpp_mri_segmentation"

    def to_text(self) -> str:
        """A readable table of the plan."""
        o, i = self.overrides, self.info
        x = "x".join

        def fmt(values: Any) -> str:
            return x(f"{v:.3g}" for v in values)

        strides = " | ".join(x(str(s) for s in level) for level in o["strides"])
        norms = "; ".join(f"ch{c} {n['name'] or '-'}: {n['scheme']} ({n['modality'].upper()}: {n['why']})"
                          for c, n in enumerate(i["channels"]))
        crop = "none" if o["crop_threshold"] is None else f"> {o['crop_threshold']:g} (+{o['crop_margin']} voxels)"
        lines = [
            (f"dataset        {i['dataset']}: {i['cases']} cases, {o['in_channels']} channel(s), "
             f"{o['num_classes']} classes ({_names(list(o['label_names'].values()))})"),
            f"device         {i['device']} ({i['device_note']}), budget {o['minutes']:g} min",
            f"network        {i['dims']}, depth {len(o['strides'])}, features {o['features']}",
            (f"spacing        median {fmt(i['median_spacing'])} mm -> target {fmt(o['target_spacing'])} mm"
             f" ({'anisotropic axis ' + str(i['aniso_axis']) if i['aniso_axis'] is not None else 'isotropic rule'})"),
            (f"shape          median {x(map(str, i['median_shape']))} at the target spacing; crop {crop} "
             f"(body {i['body_fraction']:.0%}, non-zero {i['nonzero_fraction']:.0%} of the image)"),
            f"patch          {x(map(str, i['patch']))}, strides {strides}",
            (f"batch          {o['batch_size']} volume(s) x {o['samples_per_volume']} patch(es) = {i['batch']} per step"
             f" ({i['macs_per_step'] / 1e9:.3g} GMAC forward per step)"),
            f"normalisation  {norms}",
            f"sampling       patch centres equal per class (background included), {o['num_workers']} data worker(s)",
            f"mirroring      axes {o['mirror_axes']}{i.get('mirror_note', '')}",
            f"schedule       {i['step_seconds']:.2f} s/step x {i['steps_per_epoch']} steps/epoch; "
            f"{i['predicted_epochs']} epochs predicted (ceiling {o['epochs']}), validation every "
            f"{o['val_interval']}; LR {o['learning_rate']:g}, warm-up {o['warmup_epochs']} epoch(s)"
            if i.get("step_seconds") else "schedule       not measured (see below)",
            f"expected       {i['expected_minutes']:.1f} min in all (start-up {i['startup_minutes']:.1f}, "
            f"training {i['training_minutes']:.1f}), {i['predicted_steps']} steps" if i.get("step_seconds") else "",
        ]
        lines = [ln for ln in lines if ln]
        lines += [f"not decided    {u}" for u in self.undecided] or ["not decided    nothing"]
        return "\n".join(lines)


def _fraction(fp: Fingerprint, name: str) -> float:
    part, whole = fp.array(name), fp.array("ras_shape")
    return float(np.median(np.prod(part, axis=1) / np.maximum(np.prod(whole, axis=1), 1)))


def _object_floor(fp: Fingerprint, target: list[float]) -> list[int]:
    """Median (over cases) of the largest label extent per axis, in target voxels, at most OBJECT_FLOOR."""
    extents = [np.max(np.asarray(list(c.label_extent_mm.values())), axis=0) for c in fp.cases if c.label_extent_mm]
    if not extents:
        return [0] * len(target)
    median = np.median(np.asarray(extents), axis=0) / np.asarray(target)
    return [int(min(math.ceil(v), OBJECT_FLOOR)) for v in median]


def _calibrate(dims: int, in_ch: int, out_ch: int, base: int, device: str, prober: Prober) -> tuple[float, float]:
    """(seconds per step of fixed overhead, seconds per forward MAC) from two probes of a reference network."""
    feats = rules.features(3, base, 10**6)
    strides = [[2] * dims] * 3
    patch = [32] * 3 if dims == 3 else [96, 96]
    macs, _ = network_cost(dims, in_ch, out_ch, feats, strides, patch)
    one = prober(dims, in_ch, out_ch, feats, strides, patch, batch=1, device=device).seconds
    two = prober(dims, in_ch, out_ch, feats, strides, patch, batch=2, device=device).seconds
    per_patch = max(two - one, 0.5 * two)
    return max(two - 2 * per_patch, 0.0), per_patch / macs


def _validation_seconds(median: list[int], patch: list[int], n_val: int, forward_s: float) -> float:
    windows = math.prod(max(1, math.ceil((m - p) / (p * 0.5)) + 1) for m, p in zip(median, patch))
    return n_val * (windows * forward_s + 0.05)


@dataclass
class _Draft:
    """The decisions so far, passed from one planning stage to the next."""

    fp: Fingerprint
    spec: DeviceSpec
    minutes: float
    undecided: list[str]
    channels: list[dict] = field(default_factory=list)
    schemes: list[dict] = field(default_factory=list)
    target: list[float] = field(default_factory=list)
    aniso: int | None = None
    crop: tuple[float | None, int] = (None, 0)
    median: list[int] = field(default_factory=list)
    dims: str = "3d"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def net_dims(self) -> int:
        return 3 if self.dims == "3d" else 2

    @property
    def shape(self) -> list[int]:
        """The median shape the network's patch is planned on (in-plane only for 2D on slices)."""
        return self.median[:2] if self.dims == "2d-slices" else self.median

    @property
    def in_out(self) -> tuple[int, int]:
        return self.fp.cases[0].channels, max(int(k) for k in self.fp.labels) + 1

    @property
    def base_and_cap(self) -> tuple[int, int]:
        """Features at level 0 and the most at any level: nnU-Net's 32/320 on a GPU, half the base on a CPU."""
        return (32, 320) if self.spec.kind == "cuda" else (16, 256)


def _channels(draft: _Draft, modality: str) -> None:
    """Modality and normalisation scheme of every channel."""
    for c, stats in enumerate(draft.fp.channels):
        name = draft.fp.channel_names[c] if c < len(draft.fp.channel_names) else ""
        kind, why = rules.channel_modality(name, stats, modality)
        draft.channels.append({"name": name, "modality": kind, "why": why})
        if "guessed" in why:
            draft.undecided.append(f"modality of channel {c} was not declared: {why}; pass --modality to set it")
    draft.schemes = rules.normalization([c["modality"] for c in draft.channels], draft.fp.channels)
    for ch, scheme in zip(draft.channels, draft.schemes):
        ch["scheme"] = (f"clip to [{scheme['lower']:g}, {scheme['upper']:g}], z-score with mean {scheme['mean']:g}, "
                        f"std {scheme['std']:g}" if "lower" in scheme else "per-case z-score over non-zero voxels")


def _geometry(draft: _Draft) -> None:
    """Target spacing, crop, median shape after both, and 2D or 3D."""
    fp = draft.fp
    draft.target, draft.aniso = rules.target_spacing(fp.array("ras_spacing"), fp.array("ras_shape"))
    body, nonzero = _fraction(fp, "body_shape"), _fraction(fp, "nonzero_shape")
    ct = draft.channels[0]["modality"] == "ct"
    draft.crop = rules.foreground_crop("ct" if ct else "mri", body, nonzero)
    cropped = "ras_shape" if draft.crop[0] is None else ("body_shape" if ct else "nonzero_shape")
    draft.median = rules.resampled_shape(fp.array(cropped), fp.array("ras_spacing"), draft.target)
    draft.dims = rules.dimensionality(fp.spatial_dims, draft.median, draft.aniso)
    slices = float(fp.array(cropped)[:, 2].sum()) / max(draft.median[2], 1) if draft.dims == "2d-slices" else 1.0
    draft.info.update(body_fraction=body, nonzero_fraction=nonzero, median_shape=draft.median,
                      dataset_voxels=float(math.prod(draft.shape)) * (len(fp.cases) if slices == 1.0 else slices))


def _cost(draft: _Draft) -> Callable[[list[int], list[list[int]]], tuple[float, float]]:
    in_ch, out_ch = draft.in_out
    base, cap = draft.base_and_cap

    def cost(patch: list[int], strides: list[list[int]]) -> tuple[float, float]:
        return network_cost(draft.net_dims, in_ch, out_ch, rules.features(len(strides), base, cap), strides, patch)

    return cost


def _patch(draft: _Draft, prober: Prober | None) -> rules.PatchChoice:
    """Patch, pooling and batch within the device's memory and, measured, the minutes' share of each step."""
    spec = draft.spec
    budget = rules.Budget(activation_bytes=spec.memory_bytes, bytes_per_element=2.6 if spec.kind == "cuda" else 5.2)
    if prober is not None and spec.present:
        overhead_s, s_per_mac = _calibrate(draft.net_dims, *draft.in_out, draft.base_and_cap[0], spec.kind, prober)
        usable = draft.minutes * 60.0 * (1 - rules.VAL_SHARE) - STARTUP_S
        budget.macs = max((usable / rules.MIN_STEPS - overhead_s) / s_per_mac, 0.0)
    elif prober is not None:
        draft.undecided.append(f"no {spec.kind} device here to measure the step time: epochs is a ceiling and the "
                               "time budget decides; run `plan` on the training machine for a measured schedule")
    floor = [max(f, math.ceil(s * MIN_PATCH_SHARE))
             for f, s in zip(_object_floor(draft.fp, draft.target)[: len(draft.shape)], draft.shape)]
    spacing = draft.target[:2] if draft.dims == "2d-slices" else draft.target
    choice = rules.choose_patch_and_batch(draft.shape, spacing, budget, _cost(draft),
                                          draft.info["dataset_voxels"], floor)
    draft.undecided += choice.notes
    if not choice.strides:
        raise ValueError(f"the median image ({_join(draft.shape)} voxels at the target spacing) is too small to "
                         f"pool even once (each axis needs >= {2 * rules.MIN_FEATURE_MAP} voxels)")
    draft.info.update(patch=choice.patch, batch=choice.batch, macs_per_step=choice.macs * choice.batch,
                      object_floor=floor)
    return choice


def _overrides(draft: _Draft, choice: rules.PatchChoice, dataset_dir: str | None) -> dict[str, Any]:
    fp, depth = draft.fp, len(choice.strides)
    samples = rules.samples_per_volume(choice.batch, choice.patch, draft.shape)
    in_ch, out_ch = draft.in_out
    overrides: dict[str, Any] = {
        "dataset_dir": dataset_dir or fp.source,
        "num_classes": out_ch,
        "label_names": {k: v for k, v in sorted(fp.labels.items(), key=lambda kv: int(kv[0]))},
        "in_channels": in_ch,
        "channel_names": [c["name"] or c["modality"].upper() for c in draft.channels],
        "modality": "CT" if draft.channels[0]["modality"] == "ct" else "MR",
        "spatial_dims": fp.spatial_dims,
        "target_spacing": draft.target,
        "crop_threshold": draft.crop[0],
        "crop_margin": draft.crop[1],
        "normalization": draft.schemes,
        "class_ratios": None,
        "rotate_range": rules.rotate_range(draft.net_dims, draft.aniso if draft.dims == "3d" else None),
        "mirror_axes": _mirroring(draft),
        "patch_size": choice.patch if draft.dims != "2d-slices" else [*choice.patch, 1],
        "features": rules.features(depth, *draft.base_and_cap),
        "strides": choice.strides,
        "ds_weights": [0.5 ** i for i in range(depth)],
        "deploy_level": "auto",
        "batch_size": choice.batch // samples,
        "samples_per_volume": samples,
        "num_workers": default_num_workers(draft.spec.cores),
        "learning_rate": LEARNING_RATE,
        "minutes": float(draft.minutes),
    }
    if draft.dims == "2d-slices":
        overrides["patch_size_2d"] = choice.patch
    return overrides


def make_plan(fp: Fingerprint, modality: str = "auto", device: str | DeviceSpec = "auto", minutes: float = 60.0,
              prober: Prober | None = probe_step, dataset_dir: str | None = None) -> Plan:
    """Plan a bundle training for a fingerprinted dataset.

    Args:
        fp: the dataset's fingerprint.
        modality: ``auto``, ``ct`` or ``mri`` (channels whose declared name says otherwise keep it).
            Defaults to ``"auto"``.
        device: ``auto``, ``cpu``, ``cuda`` or a :class:`DeviceSpec`. Defaults to ``"auto"``.
        minutes: the training budget (the whole command, start-up included). Defaults to 60.
        prober: measures a step (:func:`~pipeline.planning.probe.probe_step`); None plans without measuring
            (epochs then default to a ceiling and the time budget decides). Defaults to the real probe.
        dataset_dir: written into the plan as ``dataset_dir``. Defaults to None (the fingerprint's source).

    Raises:
        ValueError: ``minutes`` not > 0, unknown modality or device, images too small to pool.
    """
    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if modality not in ("auto", "ct", "mri"):
        raise ValueError(f"modality must be auto, ct or mri, got '{modality}'")
    spec = device if isinstance(device, DeviceSpec) else DeviceSpec.resolve(device)
    draft = _Draft(fp, spec, float(minutes), [])
    _channels(draft, modality)
    _geometry(draft)
    choice = _patch(draft, prober)
    overrides = _overrides(draft, choice, dataset_dir)
    draft.info.update(dataset=fp.source, cases=len(fp.cases), device=spec.kind,
                      device_note=f"{spec.cores} cores" if spec.kind == "cpu" else
                      ("present" if spec.present else "absent"),
                      dims=draft.dims, median_spacing=fp.median("ras_spacing"), aniso_axis=draft.aniso,
                      channels=draft.channels)
    _schedule(draft, overrides, choice, prober)
    return Plan(overrides, draft.info, draft.undecided, ["train", "train_2d"] if draft.dims == "2d-slices" else
                ["train"])


def _mirroring(draft: _Draft) -> list[int]:
    """Mirrored axes (:func:`rules.mirror_axes`), with the classes' order along each axis for the table."""
    centroids = [c.label_centroid_mm for c in draft.fp.cases if len(c.label_centroid_mm) > 1]
    order = rules.class_order(centroids, draft.fp.spatial_dims)
    axes = rules.mirror_axes(draft.dims, order)
    if order:
        draft.info["mirror_note"] = " (classes' order reversed along each axis in " + ", ".join(
            f"{a}: {share:.0%} of {n} cases" for a, (share, n) in sorted(order.items())) + ")"
    if centroids and max((n for _, n in order.values()), default=0) < rules.MIRROR_MIN_CASES:
        draft.undecided.append(f"mirroring: {len(centroids)} case(s) with two or more classes are too few to tell "
                               f"whether the classes keep one order along an axis; every axis is mirrored")
    return axes


def _names(names: list[str], shown: int = 6) -> str:
    """Label names for the table: all of them, or the first few and the count (a 104-organ map fits one line)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown - 1])}, ... {names[-1]}; {len(names)} named"


def _join(values: Any) -> str:
    return "x".join(str(v) for v in values)


def _schedule(draft: _Draft, overrides: dict, choice: rules.PatchChoice, prober: Prober | None) -> None:
    """Measure the chosen configuration and fit epochs, validation interval and warm-up to the minutes."""
    fp, spec = draft.fp, draft.spec
    n_train = max(1, round(len(fp.cases) * (FOLDS - 1) / FOLDS))
    steps_per_epoch = math.ceil(n_train / overrides["batch_size"])
    if prober is None or not spec.present:
        overrides.update(epochs=1000, warmup_epochs=5, val_interval=5)
        return
    measured = prober(draft.net_dims, *draft.in_out, overrides["features"], choice.strides, choice.patch,
                      batch=choice.batch, device=spec.kind)
    read_s = sum(c.read_seconds for c in fp.cases)
    startup = STARTUP_S + 1.5 * read_s / max(1, min(overrides["num_workers"], 2))
    validation = _validation_seconds(draft.shape, choice.patch, len(fp.cases) - n_train,
                                     measured.seconds / choice.batch / 3.0)
    epochs, interval, training_min = rules.schedule(draft.minutes, startup, measured.seconds, validation,
                                                    steps_per_epoch)
    overrides.update(epochs=math.ceil(epochs * EPOCH_HEADROOM), warmup_epochs=max(1, round(0.04 * epochs)),
                     val_interval=interval)
    draft.info.update(step_seconds=measured.seconds, steps_per_epoch=steps_per_epoch, predicted_epochs=epochs,
                      predicted_steps=epochs * steps_per_epoch, startup_minutes=startup / 60.0,
                      training_minutes=training_min,
                      expected_minutes=startup / 60.0 + training_min + validation / 60.0,
                      validation_seconds=validation, peak_bytes=measured.peak_bytes)
    if epochs * steps_per_epoch < rules.MIN_STEPS and not choice.notes:
        draft.undecided.append(f"{draft.minutes:g} minutes hold only {epochs * steps_per_epoch} steps of this plan "
                               f"(fewer than {rules.MIN_STEPS}); more minutes or a GPU would train it further")
