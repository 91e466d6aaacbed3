"""LARS over momentum SGD and the warm-up + cosine learning-rate schedule of DIA/CSI.

Reference: kakaobrain/torchlars 0.1.2 (`LARS` wrapping `torch.optim.SGD`, CPU branch of
`adaptive_lr.cc`), alinlab/CSI `training/scheduler.py::GradualWarmupScheduler` handing over to
`CosineAnnealingLR(T_max=epochs)`, stepped every iteration with the fractional epoch
`epoch − 1 + n / len(loader)` (`training/unsup/simclr_CSI.py`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """LARS (torchlars semantics) around SGD with momentum; weight decay on every parameter.

    Per parameter p with gradient g (weight decay wd is taken out of SGD and applied here):
        a = trust_coef · ‖p‖ / (‖g‖ + wd·‖p‖ + eps)   if ‖p‖ > 0 and ‖g‖ > 0, else 1
        g ← (g + wd·p) · a
        buf ← g (first step) or momentum·buf + g;   p ← p − lr·buf
    """

    def __init__(
        self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-6,
        eps: float = 1e-8, trust_coef: float = 1e-3,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}"
            )
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eps=eps,
                        trust_coef=trust_coef)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One step for all parameters at once (``torch._foreach_*``).

        A Python loop over the parameters would launch ~18 small kernels per tensor (1,100 per
        step for the ResNet-18 and its heads), which on a GPU costs more than the step's compute.
        Here the norms, factors and updates of a parameter group are a handful of multi-tensor
        calls, with no host read. On the CPU the values are bit-identical to the per-parameter
        form in the class docstring (``tests/test_optim.py``).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._step_group(group, params)
        return loss

    def _step_group(self, group: dict, params: list[torch.Tensor]) -> None:
        wd, momentum = group["weight_decay"], group["momentum"]
        grads = [p.grad for p in params]
        p_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        ratio = group["trust_coef"] * p_norm / (g_norm + wd * p_norm + group["eps"])
        adaptive = torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
        d_p = list(torch._foreach_add(grads, params, alpha=wd))
        torch._foreach_mul_(d_p, list(adaptive.unbind()))
        if momentum != 0:
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:  # first step: momentum·0 + d_p = d_p exactly
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, d_p)
            d_p = bufs
        torch._foreach_add_(params, d_p, alpha=-group["lr"])


def warmup_cosine_lr(
    epoch: np.ndarray | float, *, base_lr: float = 0.1, multiplier: float = 10.0,
    warmup_epochs: int = 10, total_epochs: int = 1000,
) -> np.ndarray:
    """lr at fractional epochs: linear ×multiplier warm-up, then cosine from base·multiplier.

    lr(e) = base·((multiplier − 1)·e / warmup + 1)                   for e ≤ warmup
    lr(e) = base·multiplier·(1 + cos(π·(e − warmup) / total)) / 2   for e > warmup
    (T_max = total epochs, as the reference's CosineAnnealingLR(T_max=epochs).)
    """
    e = np.asarray(epoch, dtype=np.float64)
    peak = base_lr * multiplier
    if warmup_epochs > 0:
        warm = base_lr * ((multiplier - 1.0) * e / warmup_epochs + 1.0)
    else:
        warm = np.full_like(e, peak)
    cos = peak * (1 + np.cos(math.pi * (e - warmup_epochs) / total_epochs)) / 2
    return np.where(e <= warmup_epochs, warm, cos)


def iterations_per_epoch(loader_len: int, max_iters_per_epoch: int) -> int:
    """Iterations one epoch runs: the reference breaks once n ≥ 200, i.e. at most 201."""
    return min(loader_len, max_iters_per_epoch)


def lr_schedule(
    *, epochs: int, loader_len: int, max_iters_per_epoch: int = 201, base_lr: float = 0.1,
    multiplier: float = 10.0, warmup_epochs: int = 10,
) -> np.ndarray:
    """The lr of every training iteration, (epochs · iters_per_epoch,) float64.

    The reference sets the lr after each optimizer step to lr(epoch − 1 + n / len(loader)) (the
    divisor is the full loader length even when the epoch stops at 201 iterations), so iteration
    i trains with the value set after iteration i − 1; the very first one uses lr(0) = base_lr.
    """
    iters = iterations_per_epoch(loader_len, max_iters_per_epoch)
    n = np.arange(iters)
    fractional = np.concatenate([(ep - 1) + n / loader_len for ep in range(1, epochs + 1)])
    set_at = np.concatenate([[0.0], fractional[:-1]])
    return warmup_cosine_lr(set_at, base_lr=base_lr, multiplier=multiplier,
                            warmup_epochs=warmup_epochs, total_epochs=epochs)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = float(lr)
