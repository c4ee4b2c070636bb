"""The SPair-71k reader on the real fixture and on damaged copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcorr.errors import DatasetError
from sdcorr.eval.common import select_names
from sdcorr.eval.spair import DOWNLOAD_URL, load_spair

FIXTURE_PAIRS = [
    "000167-2008_007604-2009_001056:aeroplane",
    "006394-2007_005797-2009_003189:cow",
    "007272-2009_001225-2011_002398:dog",
    "008166-2010_003297-2008_007277:horse",
    "008714-2010_002408-2008_003249:motorbike",
    "010448-2011_001863-2010_002195:pottedplant",
]


def test_reads_the_six_fixture_pairs(spair_root: Path) -> None:
    pairs = load_spair(spair_root, "test")
    assert [p.name for p in pairs] == FIXTURE_PAIRS
    assert [p.category for p in pairs] == [n.split(":")[1] for n in FIXTURE_PAIRS]
    assert [p.num_kps for p in pairs] == [7, 7, 9, 9, 7, 4]
    for p in pairs:
        src_id, trg_id = p.name.split(":")[0].split("-")[1:]
        assert p.src_image == spair_root / "JPEGImages" / p.category / f"{src_id}.jpg"
        assert p.trg_image == spair_root / "JPEGImages" / p.category / f"{trg_id}.jpg"
        assert Image.open(p.src_image).size == p.src_size
        assert Image.open(p.trg_image).size == p.trg_size
        for kps, (w, h) in ((p.src_kps, p.src_size), (p.trg_kps, p.trg_size)):
            assert kps.shape == (p.num_kps, 2)
            assert (kps[:, 0] <= w - 1).all() and (kps[:, 1] <= h - 1).all()


def test_first_pair_values_in_xy_order(spair_root: Path) -> None:
    """Values from the official file (reference note §A.3, example 2)."""
    p = load_spair(spair_root, "test", categories=["aeroplane"])[0]
    assert p.src_size == (333, 500) and p.trg_size == (500, 334)  # [W, H]
    # (62, 462): y = 462 > W = 333 of the portrait source, so this can only be (x, y)
    np.testing.assert_array_equal(p.src_kps[0], [62, 462])
    np.testing.assert_array_equal(p.src_kps[-1], [260, 27])
    np.testing.assert_array_equal(p.trg_kps[0], [480, 180])
    assert p.kps_ids == ("0", "1", "2", "16", "18", "22", "23")
    assert p.src_bbox == (1, 25, 333, 494)
    assert p.trg_bbox == (14, 71, 483, 220)


def test_selection(spair_root: Path) -> None:
    assert [p.category for p in load_spair(spair_root, categories=["dog", "cow"])] == ["cow", "dog"]
    assert len(load_spair(spair_root, limit=2)) == 2
    assert len(load_spair(spair_root, sample=1)) == 6  # one pair per category present


def test_sample_per_category_is_seeded_and_ordered() -> None:
    names = [f"{i:06d}-a-b:{c}" for c in ("cat", "dog") for i in range(10)]
    entries = [(n, n.split(":")[1]) for n in names]
    a = select_names(entries, sample=3, seed=1)
    assert a == select_names(entries, sample=3, seed=1)
    assert a != select_names(entries, sample=3, seed=2)
    assert sum(n.endswith(":cat") for n in a) == 3 and sum(n.endswith(":dog") for n in a) == 3
    assert a == sorted(a, key=names.index)  # official order is kept
    with pytest.raises(DatasetError, match="unknown categories"):
        select_names(entries, categories=["unicorn"])
    with pytest.raises(DatasetError, match="--sample must be at least 1"):
        select_names(entries, sample=0)


@pytest.fixture
def damaged(spair_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "SPair-71k"
    shutil.copytree(spair_root, root)
    return root


def test_missing_image_names_the_file(damaged: Path) -> None:
    (damaged / "JPEGImages" / "dog" / "2011_002398.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image file not found: .*dog/2011_002398\.jpg"):
        load_spair(damaged)


def test_bad_json_names_the_file(damaged: Path) -> None:
    bad = damaged / "PairAnnotation" / "test" / f"{FIXTURE_PAIRS[3]}.json"
    bad.write_text('{"pair_id": 8166, "src_kps": [[1, 2]')
    with pytest.raises(DatasetError, match=r"unreadable JSON in .*008166-2010_003297"):
        load_spair(damaged)


def test_missing_field_and_missing_pair_file(damaged: Path) -> None:
    bad = damaged / "PairAnnotation" / "test" / f"{FIXTURE_PAIRS[0]}.json"
    bad.write_text('{"category": "aeroplane", "src_imname": "2008_007604.jpg"}')
    with pytest.raises(DatasetError, match=r"000167.*missing field"):
        load_spair(damaged)
    bad.unlink()
    with pytest.raises(DatasetError, match=r"annotation file not found: .*000167"):
        load_spair(damaged)


def test_not_downloaded_explains_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_spair(tmp_path / "nowhere" / "SPair-71k")
    assert DOWNLOAD_URL in str(err.value) and "PairAnnotation" in str(err.value)
    (tmp_path / "SPair-71k" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no PairAnnotation/ folder"):
        load_spair(tmp_path / "SPair-71k")
    with pytest.raises(DatasetError, match="unknown SPair split"):
        load_spair(tmp_path / "SPair-71k", split="train")
