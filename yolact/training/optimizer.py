"""PyTorch-style SGD and the YOLACT learning-rate schedule (keras.ops only)."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from yolact.training.schedules import LR_SCHEDULES


@keras.saving.register_keras_serializable(package="yolact")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then the official step decay or a linear / cosine anneal.

    lr(it) = warmup_init + (base - warmup_init) * it / warmup_iters   for it <= warmup_iters
    afterwards, by `kind`:
      "step"   base * gamma ** (number of steps <= it)              (official train.py)
      "linear" base * (1 - (1 - final_ratio) * t)
      "cosine" base * (final_ratio + (1 - final_ratio) * (1 + cos(pi * t)) / 2)
    with t = (it - warmup_iters) / (max_iter - warmup_iters), clipped to [0, 1].

    `set_length(n)` moves the end of the run to n iterations (the steps and
    max_iter are stretched in proportion, warmup is not): train.py's
    -time_budget fits the run to the measured step rate this way.
    """

    def __init__(self, base_lr, warmup_init_lr, warmup_iters, steps=(), gamma=0.1,
                 kind="step", max_iter=None, final_ratio=0.01):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"schedule kind must be one of {LR_SCHEDULES}, got {kind!r}")
        if kind != "step" and not max_iter:
            raise ValueError(f"a {kind} schedule needs max_iter, got {max_iter!r}")
        self.base_lr = float(base_lr)
        self.warmup_init_lr = float(warmup_init_lr)
        self.warmup_iters = int(warmup_iters)
        self.steps = tuple(int(s) for s in steps)
        self.gamma = float(gamma)
        self.kind = kind
        self.max_iter = None if max_iter is None else int(max_iter)
        self.final_ratio = float(final_ratio)
        self.stretch = keras.Variable(1.0, dtype="float32", trainable=False,
                                      name="schedule_stretch")

    @property
    def nominal_length(self) -> int | None:
        """max_iter, else the last step (the length the steps were placed for)."""
        return self.max_iter or (self.steps[-1] if self.steps else None)

    def set_length(self, num_iters: int) -> None:
        if not self.nominal_length:
            raise ValueError("set_length needs max_iter or steps")
        self.stretch.assign(float(num_iters) / float(self.nominal_length))

    def has_decayed(self, step: int) -> bool:
        """Whether a step schedule has passed its first decay (under the current stretch)."""
        if self.kind != "step" or not self.steps:
            return False
        stretch = np.float32(ops.convert_to_numpy(self.stretch))
        return step >= int(np.floor(np.float32(self.steps[0]) * stretch))

    def _decayed(self, step):
        if self.kind == "step":
            passed = ops.zeros((), "float32")
            for boundary in self.steps:
                passed = passed + ops.cast(step >= ops.floor(boundary * self.stretch), "float32")
            return self.base_lr * ops.power(self.gamma, passed)
        end = ops.floor(float(self.max_iter) * self.stretch)
        span = ops.maximum(end - float(self.warmup_iters), 1.0)
        t = ops.clip((step - float(self.warmup_iters)) / span, 0.0, 1.0)
        if self.kind == "linear":
            factor = 1.0 - (1.0 - self.final_ratio) * t
        else:
            factor = self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (
                1.0 + ops.cos(math.pi * t))
        return self.base_lr * factor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decayed = self._decayed(step)
        if self.warmup_iters <= 0:
            return decayed
        frac = step / float(self.warmup_iters)
        warm = (self.base_lr - self.warmup_init_lr) * frac + self.warmup_init_lr
        # Official code: warmup applies while it <= warmup_iters; the step decay
        # only changes lr once it >= a step, so warmup never overlaps a decay.
        return ops.where(step <= self.warmup_iters, warm, decayed)

    def get_config(self):
        return {"base_lr": self.base_lr, "warmup_init_lr": self.warmup_init_lr,
                "warmup_iters": self.warmup_iters, "steps": self.steps, "gamma": self.gamma,
                "kind": self.kind, "max_iter": self.max_iter, "final_ratio": self.final_ratio}


@keras.saving.register_keras_serializable(package="yolact")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum and L2 weight decay exactly as `torch.optim.SGD`.

    g = grad + l2 * w;  buf = momentum * buf + g;  w = w - lr * buf

    Keras's built-in SGD folds lr into the momentum buffer and its
    `weight_decay` is decoupled from the gradient; the official YOLACT
    schedule was tuned with the update above, so we keep it.

    Non-finite gradients: a variable whose (all-reduced) gradient contains
    NaN/Inf is left untouched, momentum included. The trainer turns every
    gradient into NaN when the loss of any replica is non-finite, so a bad
    step is skipped as a whole on every replica.
    """

    def __init__(self, learning_rate=1e-3, momentum=0.9, l2=5e-4, name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.l2 = float(l2)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        buf = self.momentums[self._get_variable_index(variable)]
        ok = ops.all(ops.isfinite(gradient))
        grad = gradient + self.l2 * variable
        new_buf = self.momentum * buf + grad
        self.assign(buf, ops.where(ok, new_buf, buf))
        self.assign(variable, ops.where(ok, variable - lr * new_buf, variable))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "l2": self.l2})
        return config
