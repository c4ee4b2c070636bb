"""The evaluation loop of every dataset: predict, score, record pair by pair; resume; shard.

* Pairs are grouped by source image (the official order already is) so the pipeline's per-image
  feature cache (:mod:`sdcorr.cache`) serves every later pair an image appears in.
* Each finished pair is one flushed JSONL line (:mod:`sdcorr.eval.results`); a rerun with the
  same output folder skips finished pairs, and refuses a folder written with another config.
* Under ``torchrun`` each rank takes a disjoint shard of whole source-image groups; rank 0 waits
  for all (a gloo barrier), merges the shards and writes one ``summary.json``. Scores come from
  the per-pair records sorted by name, so the summary equals a single-process run's bit for bit.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DatasetError, OutputError
from ..io import write_json
from .pck import DEFAULT_ALPHAS, keypoint_hits, markdown_table, summarize, threshold_length
from .results import JsonlWriter, rank_file, read_jsonl, read_results, write_merged
from .spair import SPairPair, base_name

log = logging.getLogger("sdcorr")

Predictor = Callable[[SPairPair], np.ndarray]
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------- scoring
def score_pair(
    pair: SPairPair,
    pred: np.ndarray,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    threshold: str = "bbox",
    inclusive: bool = False,
    compact: bool = False,
) -> dict[str, Any]:
    """The JSONL record of one pair.

    Args:
        pair: the pair; the threshold length comes from its **target** (``trg_bbox``,
            ``trg_size`` or ``trg_kps``, see :func:`sdcorr.eval.pck.threshold_length`).
        pred: ``(K, 2)`` predicted target points ``(x, y)``.
        alphas: PCK α values.
        threshold: ``"bbox"``, ``"img"`` or ``"kps"``.
        inclusive: ``dist <= α·L`` counts as correct (``<`` otherwise).
        compact: store ``hit_counts``/``n_kps``/``mean_error_px`` instead of the points and
            per-keypoint hits (dense benchmarks with thousands of points per pair).

    Returns:
        ``{"pair", "category", "threshold_px", ...}`` with ``kps_ids``, ``pred_kps``,
        ``true_kps`` and ``hits``, or the compact fields.
    """
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != pair.trg_kps.shape:
        raise DatasetError(
            f"pair {pair.name}: {pred.shape[0] if pred.ndim else 0} predicted keypoints, "
            f"expected {pair.num_kps}"
        )
    length = threshold_length(pair.trg_bbox, pair.trg_size, threshold, pair.trg_kps)
    hits = keypoint_hits(pred, pair.trg_kps, length, alphas, inclusive)
    rec: dict[str, Any] = {"pair": pair.name, "category": pair.category, "threshold_px": length}
    if compact:
        err = np.linalg.norm(pred - pair.trg_kps, axis=1)
        rec["n_kps"] = pair.num_kps
        rec["hit_counts"] = {k: int(sum(v)) for k, v in hits.items()}
        rec["mean_error_px"] = float(err.mean()) if len(err) else None
        return rec
    rec.update(kps_ids=list(pair.kps_ids), pred_kps=pred.tolist(),
               true_kps=pair.trg_kps.tolist(), hits=hits)  # fmt: skip
    return rec


# --------------------------------------------------------------------------- sharding
def group_by_image(pairs: Sequence[SPairPair]) -> list[list[SPairPair]]:
    """Pairs grouped by ``(category, source image)``, groups in order of first appearance."""
    groups: dict[tuple[str, str], list[SPairPair]] = {}
    for p in pairs:
        groups.setdefault((p.category, str(p.src_image)), []).append(p)
    return list(groups.values())


def shard(pairs: Sequence[SPairPair], rank: int, world: int) -> list[SPairPair]:
    """This rank's pairs: whole source-image groups, dealt greedily to the least-loaded rank.

    Deterministic, disjoint, and covering: the shards of ranks ``0..world-1`` partition
    ``pairs``. Each shard keeps the grouped order.
    """
    load = [0] * world
    mine: list[SPairPair] = []
    for group in group_by_image(pairs):
        r = min(range(world), key=lambda i: (load[i], i))
        load[r] += len(group)
        if r == rank:
            mine.extend(group)
    return mine


# --------------------------------------------------------------------------- distributed
def init_distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; joins the torchrun group (gloo) when there is one.

    Only barriers are exchanged, so gloo is used even on GPUs; the timeout is long because
    ranks may finish their shards far apart.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def close_distributed() -> None:
    """Leave the process group if one was joined."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------- output folder
def check_out_dir(out_dir: str | Path, config: dict[str, Any]) -> Path:
    """Create ``out_dir`` or check that its previous run used the same ``config``.

    Raises:
        OutputError: the folder holds results of a different configuration.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path is not a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / CONFIG_FILE
    if cfg_file.is_file():
        try:
            old = json.loads(cfg_file.read_text())
        except json.JSONDecodeError:
            raise OutputError(f"unreadable {cfg_file}; remove it or use another --out") from None
        diff = config_diff(old, json.loads(json.dumps(config)))
        if diff:
            raise OutputError(
                f"{out} holds results of another configuration ({cfg_file}): {diff}; "
                "use another --out, or rerun with the earlier settings to resume"
            )
    return out


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: obj}


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key.endswith("root") and isinstance(a, str) and isinstance(b, str):
        return normalise_path(a) == normalise_path(b)  # spelling: "data/x/" == "./data/x"
    return False


def normalise_path(path: str | Path) -> str:
    """The absolute, normalised spelling of a path (``~`` expanded, no trailing ``/``)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def config_diff(old: dict[str, Any], new: dict[str, Any], most: int = 6) -> str:
    """``"key: old (previous run) != new (this run); ..."`` for the settings that differ."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in a.keys() | b.keys() if not _same(k, a.get(k, "<unset>"),
                                                               b.get(k, "<unset>")))  # fmt: skip
    parts = [f"{k}: {a.get(k, '<unset>')!r} (previous run) != {b.get(k, '<unset>')!r} (this run)"
             for k in keys[:most]]  # fmt: skip
    if len(keys) > most:
        parts.append(f"and {len(keys) - most} more")
    return "; ".join(parts)


# --------------------------------------------------------------------------- main loop
def evaluate(
    pairs: Sequence[SPairPair],
    predict: Predictor,
    out_dir: str | Path,
    config: dict[str, Any],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    threshold: str = "bbox",
    quiet: bool = False,
    stats: Callable[[], dict[str, int]] | None = None,
    inclusive: bool = False,
    compact: bool = False,
) -> dict[str, Any] | None:
    """Score ``pairs`` into ``out_dir`` (resuming), then write the summary on rank 0.

    Args:
        pairs: the selected pairs, in official order.
        predict: ``predict(pair) -> (K, 2)`` predicted target keypoints ``(x, y)``.
        out_dir: output folder (``pairs.jsonl``, ``summary.json``, ``config.json``,
            ``timing.json``).
        config: JSON-ready description of the run; recorded, and checked on resume.
        alphas: PCK α values.
        threshold: ``"bbox"``, ``"img"`` or ``"kps"`` (see :mod:`sdcorr.eval.pck`).
        quiet: no progress bar.
        stats: returns counters (e.g. images extracted) for the progress bar and timing.
        inclusive: ``dist <= α·L`` counts as correct (``<`` otherwise).
        compact: compact per-pair records (see :func:`score_pair`).

    Returns:
        The summary on rank 0, ``None`` on other ranks.
    """
    rank, world, _ = init_distributed()
    out = check_out_dir(out_dir, config)
    _barrier(world)  # every rank checked the folder before rank 0 writes into it
    if rank == 0:
        write_json(out / CONFIG_FILE, config)
    done = set(read_results(out, alphas))
    todo = [p for p in shard(pairs, rank, world) if p.name not in done]
    log.info("rank %d/%d: %d pairs to do, %d already done", rank, world, len(todo), len(done))
    score = {"alphas": alphas, "threshold": threshold, "inclusive": inclusive, "compact": compact}
    timing = _run_shard(todo, predict, rank_file(out, rank, world), score,
                        quiet or rank != 0, stats, config.get("dtype"))  # fmt: skip
    _barrier(world)
    if rank != 0:
        return None
    summary = finalize(out, pairs, config, alphas)
    write_json(out / "timing.json",
               {"world_size": world, "dtype": config.get("dtype"), "rank0": timing})  # fmt: skip
    return summary


def _run_shard(
    todo: Sequence[SPairPair],
    predict: Predictor,
    path: Path,
    score: dict[str, Any],
    quiet: bool,
    stats: Callable[[], dict[str, int]] | None,
    dtype: str | None,
) -> dict[str, Any]:
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="pair", desc="pairs", disable=quiet or None, smoothing=0.1)
    with JsonlWriter(path) as writer, bar:
        for pair in todo:
            writer.write({**score_pair(pair, predict(pair), **score), "dtype": dtype})
            bar.update(1)
            if stats is not None:
                bar.set_postfix(stats(), refresh=False)
    seconds = time.perf_counter() - start
    timing = {"pairs": len(todo), "seconds": round(seconds, 3)}
    timing["pairs_per_s"] = round(len(todo) / seconds, 3) if seconds > 0 and todo else None
    timing.update(stats() if stats is not None else {})
    log.info("scored %d pairs in %.1f s %s", len(todo), seconds, timing)
    return timing


def finalize(
    out: Path, pairs: Sequence[SPairPair], config: dict[str, Any], alphas: Sequence[float]
) -> dict[str, Any]:
    """Merge every shard into ``pairs.jsonl`` (official order), write and print the summary."""
    found = read_results(out, alphas)
    missing = [p.name for p in pairs if p.name not in found]
    if missing:
        raise OutputError(f"{len(missing)} pairs have no result (first: {missing[0]}) in {out}")
    records = [found[p.name] for p in pairs]
    write_merged(out, records)
    summary = {"config": config, "pck": summarize(records, alphas)}
    write_json(out / SUMMARY_FILE, summary)
    ev = config.get("eval", {})
    title, thr = ev.get("dataset", "SPair-71k"), ev.get("threshold", "bbox")
    op = "<=" if ev.get("compare") == "le" else "<"
    print(f"\n{title} PCK per image (error {op} α · {thr}), {out}\n")
    print(markdown_table(summary["pck"], "per_image"))
    print("\nPCK per keypoint\n")
    print(markdown_table(summary["pck"], "per_keypoint"))
    return summary


# --------------------------------------------------------------------------- predictors
def load_predictions(path: str | Path, pairs: Sequence[SPairPair]) -> Predictor:
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

    def __call__(self, pair: SPairPair) -> np.ndarray:
        """``(K, 2)`` predicted ``(x, y)`` in the target's original pixels."""
        cat = pair.prompt_name if self.use_category else None
        # annotations may sit on the far border (x == W); keep them on the image's last pixel
        w, h = pair.src_size[:2]
        src = torch.as_tensor(pair.src_kps, dtype=torch.float64)
        src = torch.stack([src[:, 0].clamp(0, w - 1), src[:, 1].clamp(0, h - 1)], dim=1)
        matches = self.pipe.match_points(pair.src_image, pair.trg_image, src, category=cat)
        return matches.points_b.detach().cpu().double().numpy()
