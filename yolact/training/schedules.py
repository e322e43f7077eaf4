"""Learning-rate schedule arithmetic: the kinds, and the official `--autoscale` rule.

The Keras schedule object that follows it step by step is `yolact.training.optimizer.WarmupSchedule`.
"""

from __future__ import annotations

LR_SCHEDULES = ("step", "linear", "cosine")


def scaled_schedule(cfg, batch_size: int) -> dict:
    """Official `--autoscale` rule: lr x (batch / 8), iterations // (batch / 8).

    Warmup length and warmup start lr are not scaled, as in the official train.py.
    """
    factor = batch_size / 8
    return {
        "lr": cfg.LR * factor,
        "warmup_init_lr": cfg.WARMUP_INIT_LR,
        "warmup_iters": cfg.WARMUP_ITERS,
        "lr_steps": tuple(int(s // factor) for s in cfg.LR_STEPS),
        "max_iter": int(cfg.MAX_ITER // factor),
        "gamma": cfg.LR_GAMMA,
        "kind": cfg.LR_SCHEDULE,
        "final_ratio": cfg.LR_FINAL_RATIO,
    }
