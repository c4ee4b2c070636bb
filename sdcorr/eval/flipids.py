"""Left/right keypoint partners, and flip-aligned prediction that renames them as GeoAware-SC.

In the horizontal mirror of an image a left part looks like a right part: the object's left eye
becomes, to any descriptor, a right eye. GeoAware-SC's adaptive pose alignment therefore, when
it matches from the source's mirror, queries keypoint ``k`` at the mirrored position of its
left/right **partner** (``SPAIR_FLIP`` / ``AP10K_FLIP`` in its ``utils/utils_geoware.py``,
applied by ``flip_keypoints(..., permute_indices(...))`` in ``pck_train.py``), and keeps the
unflipped prediction of a keypoint whose partner is not visible in both images
(``optimized_kps_1_to_2``). :class:`FlipIdPredictor` does the same for the flip-aligned presets
(``geoaware``, ``cleandift``) on datasets whose keypoints have ids with partners.

The partner tables below are the pairs of those lists in raw keypoint ids (SPair-71k's
``kps_ids``; AP-10K's 17 slots). GeoAware-SC's test-time SPair list numbers bus and bicycle
keypoints after dropping their never-annotated ids (bus 8, 9; bicycle 11, 12); its training
list (``SPAIR_FLIP_TRN``) gives the same pairs in raw ids, which is what is used here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..flip import mirror_mask, mirror_points
from .pairs import Pair

_P = tuple[tuple[int, int], ...]
_COW: _P = ((0, 1), (2, 3), (4, 5), (6, 7), (9, 10), (11, 12), (15, 16), (17, 18), (19, 20))
_BUS_CAR: _P = ((10, 20), (13, 23), (11, 21), (14, 24), (12, 22), (15, 25), (16, 17), (26, 27),
                (18, 19), (28, 29))  # fmt: skip

SPAIR_PARTNERS: dict[str, _P] = {
    "aeroplane": tuple((a, a + 1) for a in range(4, 21, 2)),
    "bicycle": ((2, 3), (6, 7), (9, 10)),
    "bird": ((1, 2), (4, 5), (7, 8), (10, 11), (12, 13), (14, 15)),
    "boat": ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)),
    "bottle": ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)),
    "bus": ((0, 1), (2, 3), (5, 6), *_BUS_CAR),
    "car": ((0, 1), (2, 3), (6, 7), *_BUS_CAR),
    "cat": ((0, 1), (2, 3), (4, 5), (6, 7), (9, 10), (11, 12)),
    "chair": tuple((a, a + 1) for a in range(0, 13, 2)),
    "cow": _COW,
    "dog": ((0, 1), (2, 3), (4, 5), (9, 10), (11, 12)),
    "horse": ((0, 1), (2, 3), (4, 5), (6, 7), (10, 11), (12, 13), (16, 17), (18, 19)),
    "motorbike": ((0, 1), (2, 3)),
    "person": ((0, 1), (2, 3), (8, 9), (10, 11), (12, 13), (14, 15), (16, 17), (18, 19)),
    "pottedplant": ((0, 2), (4, 5), (6, 8)),
    "sheep": _COW,
    "train": tuple((a, a + 1) for a in range(0, 17, 2)),
    "tvmonitor": ((0, 2), (4, 6), (3, 7), (8, 10), (12, 14), (11, 15)),
}
# eyes, shoulders, elbows, knees, front paws, back paws, hips
AP10K_PARTNERS: _P = ((0, 1), (5, 8), (6, 9), (12, 15), (7, 10), (13, 16), (11, 14))


def partner_map(pairs: _P) -> dict[str, str]:
    """``{id: partner id}`` (both directions, ids as strings like ``kps_ids``)."""
    out: dict[str, str] = {}
    for a, b in pairs:
        out[str(a)], out[str(b)] = str(b), str(a)
    return out


def spair_partners(category: str) -> dict[str, str]:
    """SPair-71k's left/right partners of ``category`` (``{}`` for an unknown one)."""
    return partner_map(SPAIR_PARTNERS.get(category, ()))


def ap10k_partners(category: str) -> dict[str, str]:
    """AP-10K's partners (one skeleton for every species)."""
    return partner_map(AP10K_PARTNERS)


def flipped_queries(kps_ids: tuple[str, ...], partners: Mapping[str, str]) -> list[int | None]:
    """For each keypoint row, the row whose mirrored position answers it from the mirror.

    Row ``i`` (id ``k``) is answered by the row of ``k``'s partner, or by itself when ``k`` has
    none; ``None`` when the partner is not among ``kps_ids`` (not visible in both images):
    that keypoint keeps its unflipped prediction.
    """
    row = {k: i for i, k in enumerate(kps_ids)}
    return [row.get(partners[k]) if k in partners else i for i, k in enumerate(kps_ids)]


def on_image(points: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(K, 2)`` float64 points moved onto the image (annotations may sit on x == W)."""
    w, h = size
    pts = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    return torch.stack([pts[:, 0].clamp(0, w - 1), pts[:, 1].clamp(0, h - 1)], dim=1)


def predict_flipped(
    pipe: Any, fused: Any, src: torch.Tensor, kps_ids: tuple[str, ...],
    partners: Mapping[str, str], width: int,
) -> np.ndarray:  # fmt: skip
    """GeoAware-SC's prediction once the source's mirror is chosen.

    Args:
        pipe: an ``SDDino`` (``match_fused``).
        fused: the pair as the pipeline built it (:class:`sdcorr.pair.FusedPair`, flipped):
            ``fa``/``fb`` are the mirror's and B's fused maps, ``plain`` A's own and B's.
        src: ``(K, 2)`` source keypoints ``(x, y)`` on the image.
        kps_ids: the keypoints' ids.
        partners: ``{id: partner id}`` of the category.
        width: the source's width.

    Returns:
        ``(K, 2)`` ``(x, y)`` in the target: keypoint ``k`` matched from the mirror at its
        partner's mirrored position (see :func:`flipped_queries`), or from the source itself
        when the partner is not visible.
    """
    rows = flipped_queries(kps_ids, partners)
    out = torch.zeros(len(rows), 2, dtype=torch.float64)
    mine = [i for i, r in enumerate(rows) if r is not None]
    if mine:
        query = mirror_points(src[[rows[i] for i in mine]], width)
        m = pipe.match_fused(fused.fa, fused.fb, query, fused.mask_a, fused.mask_b)
        out[mine] = m.points_b.double().cpu()
    rest = [i for i, r in enumerate(rows) if r is None]
    if rest:
        fa, fb = fused.plain
        mask_a = None if fused.mask_a is None else mirror_mask(fused.mask_a)
        m = pipe.match_fused(fa, fb, src[rest], mask_a, fused.mask_b)
        out[rest] = m.points_b.double().cpu()
    return out.numpy()


class FlipIdPredictor:
    """Flip-aligned prediction with GeoAware-SC's renaming of left/right keypoints.

    Wraps a ``ModelPredictor`` whose pipeline flip-aligns (``config.match.flip_align``): the
    pipeline builds the pair and decides between the source and its mirror
    (``SDDino.pair``, each image and mirror through its feature cache); when it picks the
    mirror, the prediction is :func:`predict_flipped`'s.

    Args:
        base: the ``ModelPredictor`` (its ``pipe``, ``cache``, ``use_category``).
        partners: ``partners(category) -> {id: partner id}``.
    """

    def __init__(self, base: Any, partners: Any) -> None:
        """See the class docstring."""
        self.base = base
        self.partners = partners

    @property
    def cache(self) -> Any:
        """The base predictor's feature cache (for the runner's counters)."""
        return self.base.cache

    def __call__(self, pair: Pair) -> np.ndarray:
        """``(K, 2)`` predicted ``(x, y)`` in the target's original pixels."""
        pipe = self.base.pipe
        cat = pair.prompt_name if self.base.use_category else None
        src = on_image(pair.src_kps, pair.src_size)
        fused = pipe.pair(pair.src_image, pair.trg_image, category=cat)
        if not fused.flipped:
            m = pipe.match_fused(fused.fa, fused.fb, src, fused.mask_a, fused.mask_b)
            return m.points_b.detach().cpu().double().numpy()
        partners = self.partners(pair.category)
        return predict_flipped(pipe, fused, src, pair.kps_ids, partners, pair.src_size[0])
