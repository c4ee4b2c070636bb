"""Steps/s of a pretraining preset on this machine, with a breakdown of one step.

Usage: ``python benchmarks/pretrain_speed.py --data DIR [--preset tiny] [--steps 30]``.
Parts: data (load + kornia multi-crop + masks), backbone (teacher forward + student forward and
backward through the backbones only), heads+losses (head forward/backward, targets, losses),
optimiser+EMA. The full step is measured separately (``train_step``), so the parts are estimates.
"""

from __future__ import annotations

import argparse
import time

import torch


def _time(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> None:
    from sdcorr.pretrain.config import get_preset
    from sdcorr.pretrain.data import PretrainBatches
    from sdcorr.pretrain.dist import DistInfo
    from sdcorr.pretrain.schedules import apply_schedules, build_schedules
    from sdcorr.pretrain.train import build_state, ema_update, train_step

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    cfg = get_preset(args.preset)
    if cfg.run.cpu_threads:
        torch.set_num_threads(cfg.run.cpu_threads)
    dev, info = torch.device("cpu"), DistInfo()
    ds = PretrainBatches(args.data, cfg.data, cfg.model.patch_size, cfg.run.batch_size,
                         num_steps=10**6)  # fmt: skip
    batch = ds[0]
    t_data = _time(lambda: ds[1], args.steps)
    st, sch = build_state(cfg, dev, info), build_schedules(cfg)
    v = sch.at(100)
    apply_schedules(st.optimizer, v)
    t_step = _time(lambda: train_step(st, batch, cfg, v, dev, info), args.steps)
    s, g, lc, m = st.student, batch["global_crops"], batch["local_crops"], batch["masks"]

    def backbone() -> None:
        with torch.no_grad():
            st.teacher.tokens(g)
        a, b = s.tokens(g, m)
        c, _ = s.tokens(lc)
        (a.sum() + b.sum() + c.sum()).backward()

    t_backbone = _time(backbone, args.steps)
    t_optim = _time(lambda: (st.optimizer.step(), ema_update(s, st.teacher, 0.99)), args.steps)
    rest = t_step - t_backbone - t_optim
    print(f"preset {cfg.name}, batch {cfg.run.batch_size}, threads {torch.get_num_threads()}")
    print(f"train step (no data): {t_step * 1e3:.1f} ms = {1 / t_step:.2f} steps/s")
    print(f"  backbone fwd/bwd (student + teacher fwd): {t_backbone * 1e3:.1f} ms")
    print(f"  heads + losses (fwd/bwd, targets):        {rest * 1e3:.1f} ms")
    print(f"  optimiser + EMA:                          {t_optim * 1e3:.1f} ms")
    print(f"data per step (load + multi-crop + masks):  {t_data * 1e3:.1f} ms")
    print(f"end to end, data in-process: {1 / (t_step + t_data):.2f} steps/s")


if __name__ == "__main__":
    main()
