"""Splits: grouped by lesion, stratified by class, seeded, written to and read from a file."""
from __future__ import annotations

import pandas as pd
import pytest

from lesion_pl.data.sources import read_ham10000
from lesion_pl.data.splits import check_no_leak, make_splits, read_splits, summarize, write_splits
from lesion_pl.errors import LesionPLError

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


@pytest.fixture(scope="module")
def table(ham_root):
    return read_ham10000(ham_root)


@pytest.fixture(scope="module")
def split(table):
    return make_splits(table, FRACTIONS, seed=42)


def test_no_lesion_in_two_splits(table, split):
    assert (split.groupby(table["group"]).nunique() == 1).all()
    check_no_leak(table, split)


def test_fractions_and_class_proportions(table, split):
    share = split.value_counts(normalize=True)
    for name, frac in FRACTIONS.items():
        assert abs(share[name] - frac) < 0.01
    overall = table["dx"].value_counts(normalize=True)
    for name in FRACTIONS:
        part = table["dx"][split == name].value_counts(normalize=True)
        for code, p in overall.items():
            assert abs(part.get(code, 0.0) - p) < 0.02, (name, code)


def test_same_seed_same_split_other_seed_other_split(table):
    part = table[table["group"].isin(table["group"].drop_duplicates()[:1500])]  # a fifth of the lesions, the same rule
    split = make_splits(part, FRACTIONS, seed=42)
    assert make_splits(part, FRACTIONS, seed=42).equals(split)
    assert not make_splits(part, FRACTIONS, seed=7).equals(split)


def test_leak_is_detected(table, split):
    leaky = split.copy()
    first = table.index[table["group"].duplicated(keep=False)][:2]
    leaky[first[0]], leaky[first[1]] = "train", "test"
    with pytest.raises(LesionPLError, match="more than one split"):
        check_no_leak(table, leaky)


def test_file_roundtrip_and_missing_images(table, split, tmp_path):
    path = tmp_path / "splits.csv"
    write_splits(table, split, path)
    assert read_splits(table, path).equals(split)
    pd.read_csv(path)[10:].to_csv(path, index=False)
    with pytest.raises(LesionPLError, match=r"10 image\(s\) of the data are not in splits file"):
        read_splits(table, path)


def test_bad_fractions(table):
    with pytest.raises(LesionPLError, match="sum to 1"):
        make_splits(table, {"train": 0.8, "val": 0.15, "test": 0.15}, seed=0)


def test_summary_counts(table, split):
    s = summarize(table, split)
    assert s.loc["images", "all"] == 10015 and s.loc["lesions", "all"] == 7470
    assert s.loc["images", ["train", "val", "test"]].sum() == 10015
    assert s.loc["nv", "all"] == 6705


def test_folds_are_kept_in_the_cache_folder_and_reused(table, split, tmp_path):
    import time

    assert make_splits(table, FRACTIONS, seed=42, cache_dir=tmp_path).equals(split)
    stored = list(tmp_path.glob("folds_*.npy"))
    assert len(stored) == 1
    start = time.perf_counter()
    assert make_splits(table, FRACTIONS, seed=42, cache_dir=tmp_path).equals(split)
    assert time.perf_counter() - start < 2.0  # read back, not recomputed
    small = table.iloc[:400].copy()
    make_splits(small, FRACTIONS, seed=42, cache_dir=tmp_path)
    small.loc[small.index[0], "label"] = (small["label"].iloc[0] + 1) % 7  # other labels: other folds file
    make_splits(small, FRACTIONS, seed=42, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("folds_*.npy"))) == 3
