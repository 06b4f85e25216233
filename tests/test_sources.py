"""The HAM10000 reader: both on-disk layouts, the label space, and clear errors on bad input."""
from __future__ import annotations

import pandas as pd
import pytest

from lesion_pl.classes import CLASSES, MALIGNANT
from lesion_pl.data.sources import read_ham10000, read_source
from lesion_pl.errors import LesionPLError

from .conftest import make_dataset, sample_meta


def test_label_space():
    assert CLASSES == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert set(MALIGNANT) == {"mel", "bcc", "akiec"}


def test_reads_the_full_dataset(ham_root):
    table = read_ham10000(ham_root)
    assert len(table) == 10015
    assert table["group"].nunique() == 7470
    assert table["dx"].value_counts().to_dict() == {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514,
                                                    "akiec": 327, "vasc": 142, "df": 115}
    assert (table["label"] == table["dx"].map(CLASSES.index)).all()
    assert {"age", "sex", "localization", "dx_type"} <= set(table.columns)


@pytest.mark.parametrize("layout", ["flat", "kaggle"])
def test_finds_images_in_either_layout(ham_root, ham_meta, tmp_path, layout):
    meta = sample_meta(ham_meta, 2)
    root = make_dataset(ham_root, meta, tmp_path / layout, layout)
    table = read_ham10000(root)
    assert table["image_id"].tolist() == meta["image_id"].tolist()
    for _, row in table.iterrows():
        assert row["path"].endswith(f"{row['image_id']}.jpg")
    folders = {p.split("/")[-2] for p in table["path"]}
    assert folders == ({"images"} if layout == "flat" else {"HAM10000_images_part_1", "HAM10000_images_part_2"})


def test_metadata_csv_one_folder_down(ham_root, ham_meta, tmp_path):
    make_dataset(ham_root, sample_meta(ham_meta, 1), tmp_path / "ham10000")
    assert len(read_source("ham10000", tmp_path)) > 0


def _write(ham_root, ham_meta, tmp_path, edit):
    meta = sample_meta(ham_meta, 2)
    root = make_dataset(ham_root, meta, tmp_path / "d")
    edit(root, meta)
    return root


def test_missing_root_says_how_to_get_the_data(tmp_path):
    with pytest.raises(LesionPLError, match=r"does not exist.*DVN/DBW86T.*LESION_PL_DATA"):
        read_ham10000(tmp_path / "nowhere")


def test_missing_column(ham_root, ham_meta, tmp_path):
    root = _write(ham_root, ham_meta, tmp_path,
                  lambda r, m: m.drop(columns="dx").to_csv(r / "HAM10000_metadata.csv", index=False))
    with pytest.raises(LesionPLError, match=r"HAM10000_metadata.csv is missing column\(s\) dx"):
        read_ham10000(root)


def test_image_listed_but_missing(ham_root, ham_meta, tmp_path):
    gone = []

    def edit(root, meta):
        for image_id in meta["image_id"][:2]:
            (root / "images" / f"{image_id}.jpg").unlink()
            gone.append(image_id)

    root = _write(ham_root, ham_meta, tmp_path, edit)
    with pytest.raises(LesionPLError, match=rf"2 image\(s\) listed .* not found .*{gone[0]}, {gone[1]}"):
        read_ham10000(root)


def test_unknown_dx_label(ham_root, ham_meta, tmp_path):
    def edit(root, meta):
        meta = meta.copy()
        meta.loc[3, "dx"] = "melanomaa"
        meta.to_csv(root / "HAM10000_metadata.csv", index=False)

    root = _write(ham_root, ham_meta, tmp_path, edit)
    with pytest.raises(LesionPLError, match=r"unknown label\(s\) 'melanomaa' in 1 row\(s\) \(first at line 5\)"):
        read_ham10000(root)


def test_no_metadata(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(LesionPLError, match="no HAM10000_metadata.csv"):
        read_ham10000(tmp_path)


def test_duplicate_image_id(ham_root, ham_meta, tmp_path):
    def edit(root, meta):
        pd.concat([meta, meta[:1]]).to_csv(root / "HAM10000_metadata.csv", index=False)

    root = _write(ham_root, ham_meta, tmp_path, edit)
    with pytest.raises(LesionPLError, match="image listed twice"):
        read_ham10000(root)
