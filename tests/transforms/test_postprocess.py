"""KeepLargestComponentd: bundle inference applies the card's postprocessing, in the right place of the chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor

from pipeline.deploy import card_from_dict, card_path, file_sha256, write_card
from pipeline.transforms import KeepLargestComponentd, card_postprocessing

REPO = Path(__file__).resolve().parents[2]
POST = {"foreground": False, "largest_component_labels": [1]}


def _checkpoint(tmp_path: Path, post: dict | None, sha: str | None = None) -> Path:
    ckpt = tmp_path / "models" / "model.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    card = card_from_dict({"card_version": 4, "labels": {"0": "bg", "1": "a", "2": "b"}, "network": {"out_channels": 3},
                           "inference": {"postprocessing": post} if post else {},
                           "training": {"checkpoint_sha256": sha or file_sha256(ckpt)}}, "t")
    write_card(card, card_path(ckpt))
    return ckpt


def _pred() -> MetaTensor:
    m = torch.zeros(1, 12, 10, 8)
    m[0, 1:5, 1:5, 1:5] = 1
    m[0, 10, 8, 6] = 1       # a second, small blob of label 1
    m[0, 7:9, 1:3, 1:3] = 2
    m[0, 11, 1, 1] = 2       # a second blob of label 2: not listed, kept
    return MetaTensor(m, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))


def test_auto_reads_the_card_beside_the_checkpoint_and_removes_the_small_blob(tmp_path):
    out = KeepLargestComponentd("pred", "auto", _checkpoint(tmp_path, POST))({"pred": _pred()})["pred"]
    assert isinstance(out, MetaTensor) and out.shape == (1, 12, 10, 8) and out.dtype == torch.float32
    assert out[0, 10, 8, 6] == 0 and int((out == 1).sum()) == 64
    assert out[0, 11, 1, 1] == 2 and int((out == 2).sum()) == 9
    assert torch.equal(out.affine, _pred().affine)


@pytest.mark.parametrize("value, post, other_sha", [("none", POST, False), ("auto", None, False),
                                                    ("auto", POST, True)])
def test_none_no_card_decision_or_another_checkpoint_apply_nothing(tmp_path, value, post, other_sha):
    ckpt = _checkpoint(tmp_path, post, sha="0" * 64 if other_sha else None)
    assert not card_postprocessing(value, ckpt)
    pred = _pred()
    assert torch.equal(KeepLargestComponentd("pred", value, ckpt)({"pred": pred})["pred"], pred)


def test_a_dict_is_applied_as_given_and_a_bad_value_is_one_line(tmp_path):
    assert card_postprocessing({"foreground": True}, None).foreground
    assert not card_postprocessing("auto", None)
    with pytest.raises(ValueError, match="postprocess must be 'auto', 'none' or an object like"):
        card_postprocessing("always", None)


@pytest.mark.parametrize("bundle", ["unetpp_mri_segmentation", "unetpp_ct_segmentation"])
def test_inference_json_applies_it_after_the_argmax_and_before_saving(bundle, tmp_path):
    from monai.bundle import ConfigParser

    raw = json.loads((REPO / "bundles" / bundle / "configs" / "inference.json").read_text())
    chain = [t["_target_"] for t in raw["postprocessing"]["transforms"]]
    at = chain.index("pipeline.transforms.KeepLargestComponentd")
    assert chain[at - 1] == "AsDiscreted" and chain[at + 1] == "SaveImaged" and raw["postprocess"] == "auto"
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser["ckpt_path"] = str(_checkpoint(tmp_path, POST))
    transform = parser.get_parsed_content(f"postprocessing#transforms#{at}")
    assert transform.decision.labels == (1,)
    assert int((transform({"pred": _pred()})["pred"] == 1).sum()) == 64
