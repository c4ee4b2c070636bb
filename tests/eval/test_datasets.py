"""The PF-Pascal, PF-Willow, AP-10K and TSS readers on their fixtures and on damaged copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcorr.errors import DatasetError
from sdcorr.eval.pairs import natural_name
from sdcorr.eval.protocol import load_pairs
from sdcorr.eval.tss import read_flo

DATA = Path(__file__).resolve().parents[1] / "data"
PF_PASCAL, PF_WILLOW = DATA / "pf-pascal-mini", DATA / "pf-willow-mini"
AP10K, TSS = DATA / "ap10k-mini", DATA / "tss-mini" / "TSS_CVPR2016"


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / src.name))


def test_natural_names() -> None:
    assert natural_name("pottedplant") == "potted plant"
    assert natural_name("tvmonitor") == "tv monitor"
    assert natural_name("diningtable") == "dining table"
    assert natural_name("aeroplane") == "aeroplane"


def test_pf_pascal_rows() -> None:
    pairs = load_pairs("pf-pascal", PF_PASCAL)
    assert [p.name for p in pairs] == ["0", "1", "2", "3", "4", "5"]  # 0-based row index
    assert [p.category for p in pairs] == [
        "aeroplane",
        "cow",
        "dog",
        "horse",
        "motorbike",
        "pottedplant",
    ]  # 1-based classes 1, 10, 12, ...
    assert pairs[5].prompt_name == "potted plant"
    p = pairs[0]
    assert p.src_kps[0].tolist() == [19.92, 147.84] and p.trg_kps[0].tolist() == [153.6, 57.66]
    assert p.trg_size == Image.open(p.trg_image).size == (160, 107)
    assert p.trg_image == PF_PASCAL / "PF-dataset-PASCAL/JPEGImages/2009_001056.jpg"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace(",1,19.92", ",21,19.92"), "test_pairs_pf_pascal.csv:2: malformed row"),
        (lambda t: t.replace(";32.13;", ";x;"), "test_pairs_pf_pascal.csv:2: malformed row"),
        (lambda t: t.replace("19.92;32.13;", "19.92;"), "6, 7, 7, 7 values"),
        (lambda t: t.replace("2009_001056", "nothere"), "image file not found"),
        (lambda t: t.replace("class,", "klass,"), "header lacks columns ['class']"),
    ],
)
def test_pf_pascal_errors_name_the_row(tmp_path, edit, message) -> None:
    root = _copy(PF_PASCAL, tmp_path)
    csv = root / "PF-dataset-PASCAL" / "test_pairs_pf_pascal.csv"
    csv.write_text(edit(csv.read_text()))
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_pairs("pf-pascal", root)


def test_pf_pascal_missing_list(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"pair list not found: .*val_pairs_pf_pascal.csv"):
        load_pairs("pf-pascal", PF_PASCAL, "val")
    with pytest.raises(DatasetError, match="PF-Pascal not found"):
        load_pairs("pf-pascal", tmp_path / "none")


def test_pf_willow_rows_and_threshold_box() -> None:
    pairs = load_pairs("pf-willow", PF_WILLOW)
    assert [p.name for p in pairs] == [str(i) for i in range(6)]
    assert pairs[0].category == "car(G)" and pairs[0].prompt_name == "car"
    assert pairs[5].prompt_name == "wine bottle" and pairs[0].num_kps == 10
    t = pairs[0].trg_kps
    assert pairs[0].trg_bbox == (t[:, 0].min(), t[:, 1].min(), t[:, 0].max(), t[:, 1].max())
    root = PF_WILLOW
    with pytest.raises(DatasetError, match="unknown PF-Willow split 'val'"):
        load_pairs("pf-willow", root, "val")


def test_pf_willow_short_row(tmp_path) -> None:
    root = _copy(PF_WILLOW, tmp_path)
    csv = root / "test_pairs_pf.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"test_pairs_pf.csv:4: malformed row \(41 columns"):
        load_pairs("pf-willow", root)


def test_ap10k_splits_and_visibility() -> None:
    intra = load_pairs("ap10k", AP10K, "test")
    assert [p.category for p in intra] == ["cow", "horse"]
    cow = intra[0]
    assert cow.name == "2007_005797-2009_003189:cow" and cow.prompt_name == "cow"
    assert cow.num_kps == 7 and "16" not in cow.kps_ids  # slot 16: labelled in the source only
    assert cow.src_image == AP10K / "JPEGImages/Bovidae/cow/2007_005797.jpg"
    x1, y1, x2, y2 = cow.trg_bbox  # from [x, y, w, h]
    assert max(x2 - x1, y2 - y1) == pytest.approx(max(49.0, 84.48), abs=0.02)
    cross = load_pairs("ap10k", AP10K, "test_cross_species")
    assert [p.category for p in cross] == ["Canidae"] and cross[0].prompt_name is None
    assert cross[0].trg_image.parent.name == "fox"
    fam = load_pairs("ap10k", AP10K, "test_cross_family")
    assert [p.category for p in fam] == ["all"]
    with pytest.raises(DatasetError, match="no PairAnnotation/val/"):
        load_pairs("ap10k", AP10K, "val")


def test_ap10k_missing_image_annotation(tmp_path) -> None:
    root = _copy(AP10K, tmp_path)
    (root / "ImageAnnotation/Equidae/horse/2008_007277.json").unlink()
    with pytest.raises(DatasetError, match=r"annotation file not found: .*2008_007277.json"):
        load_pairs("ap10k", root, "test")


def test_tss_pairs_are_target_to_source() -> None:
    pairs = load_pairs("tss", TSS)
    assert [p.name for p in pairs[:2]] == ["FG3DCar/car_mirror/image1-image2",
                                           "FG3DCar/car_mirror/image2-image1"]  # fmt: skip
    assert [p.category for p in pairs] == ["FG3DCar"] * 2 + ["JODS"] * 2 + ["PASCAL"] * 4
    assert [p.prompt_name for p in pairs[::2]] == ["car", "horse", "bus", "aeroplane"]
    shift = pairs[2]  # JODS/horse_shift: TSS source image1, target image2 (8 px to the right)
    assert shift.src_image.name == "image2.png" and shift.trg_image.name == "image1.png"
    np.testing.assert_array_equal(shift.trg_kps, shift.src_kps - np.array([8.0, 0.0]))
    assert shift.trg_size == Image.open(shift.trg_image).size  # threshold: TSS source's side
    mirror = pairs[0]
    w = mirror.src_size[0]
    np.testing.assert_array_equal(mirror.trg_kps[:, 0], w - 1 - mirror.src_kps[:, 0])
    mask = np.asarray(Image.open(TSS / "FG3DCar/car_mirror/mask2.png")) == 255
    assert mirror.num_kps == int(mask.sum())


def test_tss_errors(tmp_path) -> None:
    root = _copy(TSS, tmp_path)
    flo = root / "JODS/horse_shift/flow2.flo"
    flo.write_bytes(flo.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"flow2.flo: .* values for a"):
        load_pairs("tss", root)
    with pytest.raises(DatasetError, match=r"not a \.flo file"):
        (tmp_path / "x.flo").write_bytes(b"\0" * 16)
        read_flo(tmp_path / "x.flo")
    shutil.rmtree(root / "JODS")
    with pytest.raises(DatasetError, match="has no JODS/ folder"):
        load_pairs("tss", root)
    assert len(load_pairs("tss", root, "PASCAL")) == 4
    with pytest.raises(DatasetError, match="TSS not found at"):
        load_pairs("tss", tmp_path / "none")


def test_selection_with_and_without_replacement() -> None:
    pairs = load_pairs("tss", TSS, categories=["PASCAL"])
    assert {p.category for p in pairs} == {"PASCAL"}
    drawn = load_pairs("tss", TSS, sample=3, replace=True, seed=42)
    # the reference: per category, np.random.RandomState(42).choice(n, 3) over sorted names
    idx = np.random.RandomState(42).choice(2, 3).tolist()
    fg = sorted(p.name for p in load_pairs("tss", TSS, categories=["FG3DCar"]))
    names = [fg[i] for i in idx]
    seen: dict[str, int] = {}
    expected = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        expected.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    assert [p.name for p in drawn[:3]] == expected and len(drawn) == 9
    with pytest.raises(DatasetError, match="unknown categories"):
        load_pairs("tss", TSS, categories=["car"])


def _reference_nn_flow(fa, fb, w: int, h: int, unit: bool = True):
    """sd-dino's ``nearest_neighbor_flow`` (pck_tss.py), rewritten from its description:
    per target cell the nearest source cell (L2, on unit descriptors when ``unit``), displacement
    in cells, bilinear resize to L x L, times L / n, centred crop to H x W. Returns
    ``(H, W, 2)``. (The source row is taken as an integer; see the README's TSS paragraph.)"""
    import torch
    import torch.nn.functional as F

    d, n, _ = fa.shape
    a, b = fa.reshape(d, -1).T, fb.reshape(d, -1).T
    if unit:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    idx = torch.cdist(a, b).argmin(dim=1).reshape(n, n)
    gy, gx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    flow = torch.stack([(idx % n) - gx, (idx // n) - gy]).float()[None]
    side = max(w, h)
    flow = F.interpolate(flow, size=(side, side), mode="bilinear", align_corners=False)
    flow = flow * side / n
    if side == h:
        flow = flow[:, :, :, (side - w) // 2 : (side - w) // 2 + w]
    else:
        flow = flow[:, :, (side - h) // 2 : (side - h) // 2 + h, :]
    return flow[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize(("w", "h"), [(40, 30), (30, 45), (36, 36)])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_tss_flow_prediction_equals_the_reference_formula(w, h, metric) -> None:
    import torch

    from sdcorr.eval.tss import cell_flow, reference_flow_points
    from sdcorr.image import Geometry
    from sdcorr.types import FeatureMap

    g = torch.Generator().manual_seed(0)
    fa, fb = torch.randn(8, 6, 6, generator=g), torch.randn(8, 6, 6, generator=g)
    fb = fb * torch.rand(1, 6, 6, generator=g) * 3  # norms differ: L2 and cosine disagree
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    geo = (Geometry(w, h, 84, 14),)  # a 6 x 6 grid
    flow = cell_flow(FeatureMap(fa[None], geo), FeatureMap(fb[None], geo), metric)
    pred = reference_flow_points(flow, (w, h), pts)
    want = _reference_nn_flow(fa, fb, w, h, unit=metric == "cosine")
    np.testing.assert_allclose(pred - pts, want[ys.ravel(), xs.ravel()], atol=1e-4)
    assert np.abs(want).max() > 1  # a non-trivial flow
    other = _reference_nn_flow(fa, fb, w, h, unit=metric != "cosine")
    assert np.abs(other - want).max() > 1  # the two metrics give different flows here
