"""GeoAware-SC's left/right renaming after a flip, with a stub pipeline that records queries."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sdcorr.eval.flipids import FlipIdPredictor, flipped_queries, spair_partners
from sdcorr.eval.protocol import resolve_protocol
from sdcorr.eval.runner import ModelPredictor
from sdcorr.eval.spair import load_spair
from sdcorr.eval.tss import FlowPredictor
from sdcorr.types import Matches

MIRROR_VIEW = 1000.0  # the stub answers a query from the mirror's features with this offset


class StubPipe:
    """Fused maps are tags: ``pair`` builds a pair whose matched view is the mirror when
    ``flipped``; every answer of ``match_fused`` is the query moved by the view it was matched
    from (the mirror by ``MIRROR_VIEW``, the image itself by 1), so each prediction says where
    it came from."""

    def __init__(self, flipped: bool) -> None:
        self.config = SimpleNamespace(match=SimpleNamespace(flip_align=True))
        self.flipped = flipped
        self.calls: list[tuple[str, torch.Tensor]] = []

    def pair(self, img_a, img_b, category=None):
        view = "mirror" if self.flipped else "image"
        return SimpleNamespace(flipped=self.flipped, fa=view, fb="b", mask_a=None, mask_b=None,
                               plain=("image", "b"))  # fmt: skip

    def match_fused(self, fa, fb, points_a, mask_a=None, mask_b=None):
        self.calls.append((fa, torch.as_tensor(points_a).clone()))
        pts = torch.as_tensor(points_a, dtype=torch.float64)
        return Matches(pts, pts + (MIRROR_VIEW if fa == "mirror" else 1.0), torch.ones(len(pts)))


@pytest.fixture
def dog(spair_root):
    return load_spair(spair_root, categories=["dog"])[0]


def test_partner_rows_of_a_dog_pair(dog) -> None:
    assert dog.kps_ids == ("4", "6", "7", "8", "9", "10", "11", "12", "14")
    # 4's partner 5 is not visible: unflipped; 9<->10 and 11<->12 swap; the rest answer alone
    assert flipped_queries(dog.kps_ids, spair_partners("dog")) == [None, 1, 2, 3, 5, 4, 7, 6, 8]


def test_flipped_pairs_query_the_partner_in_the_mirror(dog) -> None:
    pipe = StubPipe(flipped=True)
    pred = FlipIdPredictor(ModelPredictor(pipe), spair_partners)(dog)
    w = dog.src_size[0]
    src = torch.as_tensor(dog.src_kps, dtype=torch.float64)
    rows = [1, 2, 3, 5, 4, 7, 6, 8]  # keypoints 1..8 of the pair
    views = [c[0] for c in pipe.calls]
    assert views == ["mirror", "image"]  # the mirror answers, the unflipped rest
    mirror_query = pipe.calls[0][1]
    np.testing.assert_array_equal(mirror_query[:, 0], w - 1 - src[rows, 0])
    np.testing.assert_array_equal(mirror_query[:, 1], src[rows, 1])
    np.testing.assert_array_equal(pred[1:], mirror_query.numpy() + MIRROR_VIEW)
    np.testing.assert_array_equal(pred[0], dog.src_kps[0] + 1.0)  # keypoint 4: from the image


def test_unflipped_decision_is_the_plain_prediction(dog) -> None:
    pipe = StubPipe(flipped=False)
    pred = FlipIdPredictor(ModelPredictor(pipe), spair_partners)(dog)
    np.testing.assert_array_equal(pred, dog.src_kps + 1.0)
    assert len(pipe.calls) == 1


def test_the_protocol_picks_how_a_model_predicts() -> None:
    flipping = ModelPredictor(StubPipe(flipped=True))
    plain = ModelPredictor(SimpleNamespace(config=SimpleNamespace(match=SimpleNamespace(
        flip_align=False))))  # fmt: skip
    assert isinstance(resolve_protocol("spair").predictor(flipping), FlipIdPredictor)
    assert isinstance(resolve_protocol("ap10k").predictor(flipping), FlipIdPredictor)
    assert resolve_protocol("spair").predictor(plain) is plain
    assert resolve_protocol("pf-pascal").predictor(flipping) is flipping  # no keypoint ids
    assert isinstance(resolve_protocol("tss").predictor(plain), FlowPredictor)
