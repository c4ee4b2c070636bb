"""The evaluation loop of every dataset: predict, score, record pair by pair; resume; shard.

* Pairs are grouped by source image (the official order already is) so the pipeline's per-image
  feature cache (:mod:`sdcorr.cache`) serves every later pair an image appears in.
* Each finished pair is one flushed JSONL line (:mod:`sdcorr.records`), scored as the run's
  :class:`~sdcorr.eval.protocol.Protocol` says; a rerun with the same output folder skips
  finished pairs, and refuses a folder written with another config (:mod:`sdcorr.outdir`).
* Under ``torchrun`` each rank takes a disjoint shard of source-image groups; rank 0 waits
  for all (a gloo barrier, :mod:`sdcorr.distributed`), merges the shards and writes one
  ``summary.json``. Scores come from the per-pair records sorted by name, so the summary equals
  a single-process run's bit for bit. The sharded, resumable loop is the core's
  (:mod:`sdcorr.shards`), shared with ``sdcorr match --pairs``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import shards
from ..distributed import barrier, join_group
from ..errors import DatasetError, OutputError
from ..io import write_json
from ..outdir import CONFIG_FILE, check_out_dir
from ..records import rank_file, read_jsonl, write_merged
from .pairs import Pair, base_name
from .pck import headline_table, markdown_table, summarize
from .protocol import Predictor, Protocol

log = logging.getLogger("sdcorr")

PAIRS = "pairs"  # pairs.jsonl, pairs.rank<r>.jsonl
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------- sharding
def _source(p: Pair) -> tuple[str, str]:
    return p.category, str(p.src_image)


def group_by_image(pairs: Sequence[Pair]) -> list[list[Pair]]:
    """Pairs grouped by ``(category, source image)``, groups in order of first appearance."""
    return shards.group_by(pairs, _source)


def shard(pairs: Sequence[Pair], rank: int, world: int) -> list[Pair]:
    """This rank's pairs: source-image groups, whole unless larger than an equal share
    (:func:`sdcorr.shards.shard`)."""
    return shards.shard(pairs, rank, world, _source)


# --------------------------------------------------------------------------- main loop
def evaluate(
    pairs: Sequence[Pair],
    predict: Predictor,
    out_dir: str | Path,
    config: dict[str, Any],
    protocol: Protocol,
    quiet: bool = False,
    stats: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any] | None:
    """Score ``pairs`` into ``out_dir`` (resuming), then write the summary on rank 0.

    Args:
        pairs: the selected pairs, in official order.
        predict: ``predict(pair) -> (K, 2)`` predicted target keypoints ``(x, y)``.
        out_dir: output folder (``pairs.jsonl``, ``summary.json``, ``config.json``,
            ``timing.json``).
        config: JSON-ready description of the run; recorded, and checked on resume.
        protocol: how pairs are scored and summarised.
        quiet: no progress bar.
        stats: returns counters (e.g. images extracted) for the progress bar and timing.

    Returns:
        The summary on rank 0, ``None`` on other ranks.
    """
    info = join_group()
    out = check_out_dir(out_dir, config)
    barrier(info)  # every rank checked the folder before rank 0 writes into it
    if info.main:
        write_json(out / CONFIG_FILE, config)
    todo, skipped = shards.pending(pairs, out, PAIRS, info, lambda p: p.name, _source,
                                   protocol.is_complete)  # fmt: skip
    log.info("rank %d/%d: %d pairs to do, %d already done", info.rank, info.world_size,
             len(todo), skipped)  # fmt: skip
    timing = _run_shard(todo, predict, rank_file(out, PAIRS, info.rank, info.world_size),
                        protocol, quiet or not info.main, stats, config.get("dtype"))  # fmt: skip
    barrier(info)
    if not info.main:
        return None
    summary = finalize(out, pairs, config, protocol)
    write_json(out / "timing.json",
               {"world_size": info.world_size, "dtype": config.get("dtype"),
                "rank0": timing})  # fmt: skip
    return summary


def _run_shard(
    todo: Sequence[Pair],
    predict: Predictor,
    path: Path,
    protocol: Protocol,
    quiet: bool,
    stats: Callable[[], dict[str, int]] | None,
    dtype: str | None,
) -> dict[str, Any]:
    def score(pair: Pair) -> dict[str, Any]:
        return {**protocol.score(pair, predict(pair)), "dtype": dtype}

    seconds = shards.record_each(todo, score, path, "pairs", quiet, stats)
    timing = {"pairs": len(todo), "seconds": round(seconds, 3)}
    timing["pairs_per_s"] = round(len(todo) / seconds, 3) if seconds > 0 and todo else None
    timing.update(stats() if stats is not None else {})
    log.info("scored %d pairs in %.1f s %s", len(todo), seconds, timing)
    return timing


def finalize(
    out: Path, pairs: Sequence[Pair], config: dict[str, Any], protocol: Protocol
) -> dict[str, Any]:
    """Merge every shard into ``pairs.jsonl`` (official order), write and print the summary:
    ``pck`` (the run's own scoring) and ``by_protocol`` (every scoring of the protocol)."""
    records, missing = shards.collect(out, PAIRS, [p.name for p in pairs], protocol.is_complete)
    if missing:
        raise OutputError(f"{len(missing)} pairs have no result (first: {missing[0]}) in {out}")
    write_merged(out, PAIRS, records)
    summary = {
        "config": config,
        "pck": summarize(records, protocol.alphas),
        "by_protocol": protocol.by_protocol(records, pairs),
    }
    write_json(out / SUMMARY_FILE, summary)
    sc = protocol.scoring
    where = f" in a {sc.frame}x{sc.frame} frame" if sc.frame else ""
    op = "<=" if sc.compare == "le" else "<"
    print(f"\n{protocol.spec.title} PCK per image (error {op} α · {sc.threshold}{where}), {out}\n")
    print(markdown_table(summary["pck"], "per_image"))
    print("\nPCK per keypoint\n")
    print(markdown_table(summary["pck"], "per_keypoint"))
    print("\nEvery protocol (all pairs; summary.json by_protocol): per image / per keypoint\n")
    print(headline_table(summary["by_protocol"]))
    return summary


# --------------------------------------------------------------------------- predictors
def load_predictions(path: str | Path, pairs: Sequence[Pair]) -> Predictor:
    """A predictor that returns keypoints from a JSONL of ``{"pair": name, "pred_kps": [...]}``.

    A pair drawn more than once (``name#2``, sampling with replacement) uses ``name``'s line.

    Raises:
        DatasetError: the file is missing, a line lacks fields, a pair is listed twice, or a
            selected pair has no prediction.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"predictions file not found: {path}")
    preds: dict[str, np.ndarray] = {}
    for i, rec in enumerate(read_jsonl(path), 1):
        if "pair" not in rec or "pred_kps" not in rec:
            raise DatasetError(f"{path}: record {i} needs 'pair' and 'pred_kps'")
        name = str(rec["pair"])
        if name in preds:
            raise DatasetError(f"{path}: pair {name} is listed twice")
        preds[name] = np.asarray(rec["pred_kps"], dtype=np.float64).reshape(-1, 2)
    missing = [p.name for p in pairs if base_name(p.name) not in preds]
    if missing:
        raise DatasetError(
            f"{path}: no prediction for {len(missing)} of {len(pairs)} selected pairs "
            f"(first: {missing[0]}); narrow the selection with --categories/--limit"
        )
    return lambda pair: preds[base_name(pair.name)]


def counters(predict: Any) -> dict[str, int]:
    """The feature counters of a model predictor (its own ``stats``, else its cache's)."""
    stats = getattr(predict, "stats", None)
    return dict(stats if isinstance(stats, dict) else predict.cache.stats)


class ModelPredictor:
    """Predicts target keypoints with an ``SDDino``-like pipeline, through its feature cache.

    Args:
        pipe: has ``match_points(src, trg, points_a, category=...)`` and a feature ``cache``
            (:class:`sdcorr.cache.FeatureCache`; see :class:`sdcorr.pipeline.SDDino`): an image
            is extracted once for all the pairs it appears in while that cache holds it; when
            the pipeline's ``config.match.flip_align`` is on (``geoaware``, ``cleandift``), so
            is each source's mirror.
        use_category: pass the pair's ``prompt_name`` (the natural name, e.g. "potted plant")
            as the category (SD prompt "a photo of a {name}"); ``False`` (default): empty prompt.
    """

    def __init__(self, pipe: Any, use_category: bool = False) -> None:
        """See the class docstring."""
        self.pipe = pipe
        self.use_category = use_category

    @property
    def cache(self) -> Any:
        """The pipeline's feature cache (its ``stats`` are the runner's counters)."""
        return self.pipe.cache

    @property
    def flip_align(self) -> bool:
        """Whether the pipeline's match config asks for adaptive flip alignment (GeoAware-SC)."""
        return bool(self.pipe.config.match.flip_align)

    def __call__(self, pair: Pair) -> np.ndarray:
        """``(K, 2)`` predicted ``(x, y)`` in the target's original pixels."""
        cat = pair.prompt_name if self.use_category else None
        # annotations may sit on the far border (x == W); keep them on the image's last pixel
        w, h = pair.src_size[:2]
        src = torch.as_tensor(pair.src_kps, dtype=torch.float64)
        src = torch.stack([src[:, 0].clamp(0, w - 1), src[:, 1].clamp(0, h - 1)], dim=1)
        matches = self.pipe.match_points(pair.src_image, pair.trg_image, src, category=cat)
        return matches.points_b.detach().cpu().double().numpy()
