from __future__ import annotations

import json

import pytest

from pipeline.data import fold_datalist, load_splits, make_splits, save_splits, split_items


def test_folds_partition_the_cases_and_repeat_per_seed():
    cases = [f"c{i:02d}" for i in range(23)]
    splits = make_splits(cases, num_folds=5, seed=3)
    vals = [set(f["val"]) for f in splits["folds"]]
    assert set().union(*vals) == set(cases) and sum(map(len, vals)) == 23
    assert sorted(map(len, vals)) == [4, 4, 5, 5, 5]
    for fold in splits["folds"]:
        assert set(fold["train"]) | set(fold["val"]) == set(cases) and not set(fold["train"]) & set(fold["val"])
    assert make_splits(list(reversed(cases)), 5, 3) == splits
    assert make_splits(cases, 5, 4) != splits


def test_save_load_and_nnunet_format(tmp_path):
    splits = make_splits(["a", "b", "c", "d"], 2, 0)
    assert load_splits(save_splits(splits, tmp_path / "s.json")) == splits
    (tmp_path / "splits_final.json").write_text(json.dumps(splits["folds"]))
    assert load_splits(tmp_path / "splits_final.json")["folds"] == splits["folds"]


def test_fold_datalist_writes_then_reuses_split(tmp_path):
    items = [{"case": f"c{i}", "image": f"{i}.nii"} for i in range(10)]
    path = tmp_path / "splits.json"
    train, val = fold_datalist(items, fold=1, num_folds=5, seed=0, splits_file=path)
    assert path.exists() and len(val) == 2 and len(train) == 8
    # a different seed is ignored once the file exists: the run repeats exactly
    assert fold_datalist(items, fold=1, num_folds=5, seed=99, splits_file=path) == (train, val)


@pytest.mark.parametrize("k", [1, 11])
def test_bad_fold_counts(k):
    with pytest.raises(ValueError, match=f"num_folds must be >= 2 and <= the number of cases \\(10\\), got {k}"):
        make_splits([str(i) for i in range(10)], k)


def test_split_naming_unknown_cases():
    splits = make_splits(["a", "b", "x"], 3, 0)
    with pytest.raises(ValueError, match="does not hold"):
        split_items([{"case": "a"}, {"case": "b"}], splits, 0)
    with pytest.raises(ValueError, match="fold must be >= 0 and < 3, got 3"):
        split_items([{"case": "a"}], splits, 3)
