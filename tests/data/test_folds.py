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


def test_a_split_file_records_the_dataset_it_splits(tmp_path):
    from pipeline.data.folds import cases_fingerprint

    splits = make_splits(["b", "a", "c", "d"], 2, 0)
    assert splits["num_cases"] == 4 and splits["cases_sha256"] == cases_fingerprint(["a", "b", "c", "d"])
    assert json.loads(save_splits(splits, tmp_path / "s.json").read_text())["cases_sha256"] == splits["cases_sha256"]


@pytest.mark.parametrize("change, reason", [
    (lambda items: [{"case": f"other{i}"} for i in range(10)], "names 10 case(s) the datalist does not hold"),
    (lambda items: items + [{"case": "c10"}], "lacks 1 of its 11 (e.g. ['c10'])"),
    (lambda items: items[:-1], "names 1 case(s) the datalist does not hold (e.g. ['c9'])"),
])
def test_folds_made_for_another_dataset_are_replaced_and_kept(tmp_path, caplog, change, reason):
    items = [{"case": f"c{i}"} for i in range(10)]
    path = tmp_path / "splits.json"
    fold_datalist(items, fold=0, num_folds=5, seed=0, splits_file=path)
    old = load_splits(path)
    other = change(items)
    with caplog.at_level("WARNING", logger="pipeline.data.folds"):
        train, val = fold_datalist(other, fold=0, num_folds=5, seed=0, splits_file=path)
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "was made for another dataset" in line and reason in line and "\n" not in line
    new = load_splits(path)
    assert new == make_splits([i["case"] for i in other], 5, 0) and {i["case"] for i in train + val} == \
        {i["case"] for i in other}
    kept = path.with_name(f"splits.{old['cases_sha256'][:12]}.json")
    assert load_splits(kept) == old, "the old folds are kept beside the new ones"


def test_nnunet_splits_are_reused_when_they_split_the_same_cases(tmp_path, caplog):
    items = [{"case": f"c{i}"} for i in range(6)]
    folds = make_splits([i["case"] for i in items], 3, 7)["folds"]
    (tmp_path / "splits_final.json").write_text(json.dumps(folds))
    with caplog.at_level("WARNING"):
        train, val = fold_datalist(items, fold=2, num_folds=3, splits_file=tmp_path / "splits_final.json")
    assert [i["case"] for i in val] == folds[2]["val"] and not caplog.records
    fold_datalist(items, fold=0, num_folds=2, splits_file=tmp_path / "splits_final.json")
    assert len(load_splits(tmp_path / "splits_final.json")["folds"]) == 2, "other num_folds: new folds"


def test_a_rank_that_replaces_the_split_late_keeps_the_old_one_kept(tmp_path):
    """DDP ranks all see the old split; the first replaces it. A later rank must not move the new split over the
    kept old one."""
    from pipeline.data.folds import _replace_split

    old_items, new_items = [{"case": f"a{i}"} for i in range(6)], [{"case": f"b{i}"} for i in range(6)]
    path = tmp_path / "splits.json"
    save_splits(make_splits([i["case"] for i in old_items], 3, 0), path)
    old = load_splits(path)
    first = _replace_split(path, old, new_items, 3, 0, "other cases")
    late = _replace_split(path, old, new_items, 3, 0, "other cases")  # it loaded `old` before the first replaced it
    assert first == late == load_splits(path)
    assert load_splits(path.with_name(f"splits.{old['cases_sha256'][:12]}.json")) == old
