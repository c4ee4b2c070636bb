"""Image loading and the original ⇄ frame ⇄ grid geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdcorr.errors import ImageLoadError, PointsError
from sdcorr.image import Geometry, load_image, prepare_image

SIZES = {"portrait": (333, 500), "landscape": (500, 334), "square": (256, 256), "tiny": (3, 2)}


def _ref_frame(x: float, y: float, w: int, h: int, n: int) -> tuple[float, float]:
    """The SD-DINO reference's keypoint rule, written out: ``x * n / max(W, H) + pad``."""
    long = max(w, h)
    pad_x = int((n - round(n * w / long)) / 2) if w < h else 0
    pad_y = int((n - round(n * h / long)) / 2) if h < w else 0
    return x * n / long + pad_x, y * n / long + pad_y


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("frame,stride", [(840, 14), (960, 16), (960, 64)])
def test_round_trip(name: str, frame: int, stride: int) -> None:
    w, h = SIZES[name]
    g = Geometry(w, h, frame, stride)
    pts = torch.rand(200, 2, dtype=torch.float64) * torch.tensor([w - 1.0, h - 1.0])
    back = g.from_frame(g.to_frame(pts))
    assert torch.allclose(back, pts, atol=1e-9)
    # every point follows the reference rule (x != y, so an x/y swap fails)
    expected = [_ref_frame(x, y, w, h, frame) for x, y in pts.tolist()]
    assert torch.allclose(g.to_frame(pts), torch.tensor(expected, dtype=torch.float64))


def test_to_frame_literals() -> None:
    # 500 x 333 at 840: scale 1.68, content 840 x 559, pad (0, 140)
    g = Geometry(500, 333, 840, 14)
    f = g.to_frame([[25.0, 100.0], [8.0, 3.0]])
    assert torch.allclose(f, torch.tensor([[42.0, 308.0], [13.44, 145.04]], dtype=torch.float64))
    # 333 x 500 at 960: scale 1.92, content 639 x 960, pad (160, 0)
    g = Geometry(333, 500, 960, 16)
    f = g.to_frame([[10.0, 50.0]])
    assert torch.allclose(f, torch.tensor([[179.2, 96.0]], dtype=torch.float64))
    assert torch.allclose(g.from_frame(f), torch.tensor([[10.0, 50.0]], dtype=torch.float64))


def test_keypoint_to_cell_is_the_reference_rule() -> None:
    # the reference: cell = int(n / frame * x_frame) with x_frame = x * frame / max(W, H) + pad
    g = Geometry(500, 250, 840, 14)  # scale 1.68, pad (0, 210)
    pts = [[400.0, 20.0], [8.0, 3.0], [25.0, 100.0], [499.0, 249.0], [0.0, 0.0]]
    cells = g.to_cell(pts).tolist()
    assert cells[0] == [48, 17]  # (col, row): int(672 / 14), int(243.6 / 14)
    # 8 -> 13.44 is cell 0 (a half-pixel rule, (8.5 * 1.68 - 0.5 + 0.5) / 14, gives cell 1)
    assert cells[1] == [0, 15]
    expected = []
    for x, y in pts:
        fx, fy = _ref_frame(x, y, 500, 250, 840)
        expected.append([int(60 / 840 * fx), int(60 / 840 * fy)])
    assert cells == expected


@pytest.mark.parametrize("size", [(500, 333), (333, 500), (640, 480), (256, 256)])
@pytest.mark.parametrize("frame,stride", [(840, 14), (960, 16), (960, 64)])
def test_keypoint_to_cell_matches_reference_on_many_points(size, frame, stride) -> None:
    w, h = size
    g = Geometry(w, h, frame, stride)
    n = g.grid[0]
    gen = torch.Generator().manual_seed(1)
    pts = torch.rand(500, 2, dtype=torch.float64, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
    pts = torch.cat([pts, pts.round()])  # integer annotations, as in SPair
    expected = []
    for x, y in pts.tolist():
        fx, fy = _ref_frame(x, y, w, h, frame)
        expected.append([int(n / frame * fx), int(n / frame * fy)])
    assert g.to_cell(pts).tolist() == expected


@pytest.mark.parametrize("size", [(500, 333), (333, 500), (100, 7)])
def test_cell_centre_round_trip_is_exact(size) -> None:
    w, h = size
    g = Geometry(w, h, 840, 14)
    long, (ox, oy) = max(w, h), g.offset
    cells = torch.nonzero(g.content_mask()).flip(1)  # (col, row)
    p = g.cell_to_original(cells, clip=False)
    # the reference's prediction: centre 14 c + 6.5 in the frame, mapped back by the same rule
    ref = torch.stack(
        [(14 * cells[:, 0] + 6.5 - ox) * long / 840, (14 * cells[:, 1] + 6.5 - oy) * long / 840], 1
    ).double()
    assert torch.allclose(p, ref, atol=1e-9)
    # a point at a cell centre maps to that cell, and back to itself
    assert torch.equal(g.to_cell(p), cells)
    assert torch.allclose(g.cell_to_original(g.to_cell(p), clip=False), p, atol=1e-9)


def test_resize_and_padding_match_reference_rule() -> None:
    g = Geometry(500, 333, 840)
    # long side -> frame, short side round(840 * 333 / 500) = 559, padded centred
    assert g.resized == (840, 559)
    assert g.offset == (0, (840 - 559) // 2)
    g = Geometry(333, 500, 960)
    assert g.resized == (round(960 * 333 / 500), 960)
    assert g.offset == ((960 - 639) // 2, 0)


def test_cell_centres_follow_the_reference_convention() -> None:
    g = Geometry(840, 840, 840, 14)
    assert g.grid == (60, 60)
    centres = g.cell_centre(torch.tensor([[0, 0], [59, 3]]))
    assert centres.tolist() == [[6.5, 6.5], [59 * 14 + 6.5, 3 * 14 + 6.5]]
    # frame x belongs to cell floor(x / 14), as in the reference (fractional x included)
    xs = torch.arange(0, 840, 0.25, dtype=torch.float64)
    cells = g.frame_to_cell(torch.stack([xs, 2 * xs.flip(0) % 840], 1))
    assert torch.equal(cells[:, 0], (xs // 14).long())
    assert torch.equal(cells[:, 1], ((2 * xs.flip(0) % 840) // 14).long())
    # every cell centre maps back into its own cell
    rc = torch.stack(torch.meshgrid(torch.arange(60), torch.arange(60), indexing="ij"), -1).view(
        -1, 2
    )
    assert torch.equal(g.frame_to_cell(g.cell_centre(rc)), rc)


def test_overlapping_patches_grid() -> None:
    g = Geometry(840, 840, 840, stride=7, patch=14)
    assert g.grid == (119, 119)
    assert g.cell_centre(torch.tensor([[1, 0]]))[0, 0].item() == 7 + 6.5
    # a point at a cell centre is assigned to that cell
    c = torch.tensor([[5, 9], [118, 0]])
    assert torch.equal(g.frame_to_cell(g.cell_centre(c)), c)


def test_resampled_grid_keeps_cell_centres_consistent() -> None:
    g = Geometry(500, 333, 840, 14).resampled(156)
    assert g.grid == (156, 156)
    c = torch.tensor([[0, 0], [155, 77]])
    assert torch.equal(g.frame_to_cell(g.cell_centre(c)), c)


def test_points_in_padding_are_rejected_not_clamped() -> None:
    g = Geometry(500, 333, 840, 14)
    ok = g.check_inside([[0, 0], [499, 332], [-0.5, 332.5]])
    assert ok.shape == (3, 2)
    with pytest.raises(PointsError, match="outside the 500x333 image"):
        g.check_inside([[10, 10], [10, 340]])
    with pytest.raises(PointsError, match=r"shape \(K, 2\)"):
        g.check_inside([1.0, 2.0, 3.0])
    with pytest.raises(PointsError, match="NaN"):
        g.check_inside([[float("nan"), 1.0]])


def test_content_mask_excludes_padding_cells() -> None:
    g = Geometry(500, 250, 840, 14)  # content rows 210..630 of the frame
    m = g.content_mask()
    assert m.shape == (60, 60)
    assert not m[:15].any() and not m[45:].any() and m[15:45].all()


def test_cell_to_original_clips_border_cells_into_the_image() -> None:
    g = Geometry(100, 7, 840, 14)  # content 840 x 59 px: border cells straddle the padding
    rows = torch.nonzero(g.content_mask()[:, 0]).flatten()
    cells = torch.stack([torch.zeros_like(rows), rows], 1)
    p = g.cell_to_original(cells)
    assert g.inside(p).all()


def test_load_image_variants(tmp_path) -> None:
    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    assert load_image(rgb).size == (30, 20)
    assert load_image(rgb[..., 0]).mode == "RGB"
    assert load_image(rgb.astype(np.float32) / 255).size == (30, 20)
    assert load_image(torch.from_numpy(rgb).permute(2, 0, 1)).size == (30, 20)
    rgba = Image.fromarray(np.dstack([rgb, np.full((20, 30), 255, np.uint8)]), "RGBA")
    assert load_image(rgba).mode == "RGB"
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").mode == "RGB"
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert load_image(str(tmp_path / "p.png")).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_bad_images(tmp_path) -> None:
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "x.jpg").write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(ImageLoadError, match="zero size"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="zero size"):
        Geometry(0, 5, 840)


def test_prepare_image_pads_with_black_and_keeps_content() -> None:
    rgb = np.full((50, 100, 3), 200, np.uint8)
    p = prepare_image(rgb, 224)
    assert p.pixels.shape == (3, 224, 224)
    ox, oy = p.geometry.offset
    w, h = p.geometry.resized
    assert (w, h) == (224, 112)
    assert p.pixels[:, :oy].abs().max() == 0 and p.pixels[:, oy + h :].abs().max() == 0
    assert torch.allclose(p.pixels[:, oy : oy + h, ox : ox + w], torch.tensor(200 / 255))


def test_grid_points_are_cell_centres_of_their_own_cells() -> None:
    g = Geometry(500, 333, 840, 14)  # pad (0, 140)
    pts = g.grid_points(step=3)
    cells = g.to_cell(pts)
    assert ((cells % 3) == 0).all() and g.content_mask()[cells[:, 1], cells[:, 0]].all()
    interior = (cells[:, 1] > 10) & (cells[:, 1] < 49)  # rows whose centre lies on the image
    x, y = pts[interior, 0], pts[interior, 1]
    assert torch.allclose(x, (14 * cells[interior, 0] + 6.5).double() / 1.68)
    assert torch.allclose(y, (14 * cells[interior, 1] + 6.5 - 140).double() / 1.68)


def test_grid_to_pixels_gives_each_pixel_its_cells_value() -> None:
    # 5x3 image, frame 10 (scale 2, content rows 2..8), 4-px cells: a 2x2 grid. Pixel x lands at
    # frame 2x (cols 0,0,1,1 and the far border clamped into 1), pixel y at 2y + 2 (rows 0,1,1).
    g = Geometry(5, 3, frame=10, stride=4)
    values = np.array([[0, 1], [10, 11]])
    expected = [[0, 0, 1, 1, 1], [10, 10, 11, 11, 11], [10, 10, 11, 11, 11]]
    assert g.grid_to_pixels(values).tolist() == expected
    assert torch.equal(g.pixel_cells()[..., 0], torch.tensor([[0, 0, 1, 1, 1]] * 3))
    rgb = torch.arange(12).view(2, 2, 3)  # trailing dimensions are carried along
    lifted = g.grid_to_pixels(rgb)
    assert lifted.shape == (3, 5, 3) and torch.equal(lifted[2, 4], rgb[1, 1])
    with pytest.raises(ValueError, match="expected the grid"):
        g.grid_to_pixels(torch.zeros(3, 2))


def test_grid_to_pixels_agrees_with_to_cell_on_a_real_geometry() -> None:
    g = Geometry(500, 333, 840, 14)
    values = torch.arange(60 * 60).view(60, 60)
    lifted = g.grid_to_pixels(values)
    pts = torch.tensor([[0.0, 0.0], [499.0, 332.0], [123.0, 45.0], [250.0, 166.0]])
    cells = g.to_cell(pts)
    for (x, y), (c, r) in zip(pts.long().tolist(), cells.tolist(), strict=True):
        assert lifted[y, x] == values[r, c]
