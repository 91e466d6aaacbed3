"""LARS against a hand-computed step, and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import numpy as np
import torch

from dia.optim import LARS, iterations_per_epoch, lr_schedule, warmup_cosine_lr


def test_lars_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))  # |p| = 5
    opt = LARS([p], lr=0.1, momentum=0.9, weight_decay=0.01, eps=1e-8, trust_coef=1e-3)
    g1 = torch.tensor([0.6, 0.8], dtype=torch.float64)  # |g| = 1
    p.grad = g1.clone()
    opt.step()
    a1 = 1e-3 * 5 / (1 + 0.01 * 5 + 1e-8)
    d1 = (g1 + 0.01 * torch.tensor([3.0, 4.0], dtype=torch.float64)) * a1
    p1 = torch.tensor([3.0, 4.0], dtype=torch.float64) - 0.1 * d1
    torch.testing.assert_close(p.detach(), p1)
    g2 = torch.tensor([0.0, 2.0], dtype=torch.float64)
    p.grad = g2.clone()
    opt.step()
    pn, gn = float(p1.norm()), 2.0
    a2 = 1e-3 * pn / (gn + 0.01 * pn + 1e-8)
    d2 = (g2 + 0.01 * p1) * a2
    buf = 0.9 * d1 + d2
    torch.testing.assert_close(p.detach(), p1 - 0.1 * buf)


def test_lars_zero_norm_uses_plain_sgd_rate():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = LARS([p], lr=0.5, momentum=0.0, weight_decay=0.0)
    p.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), -0.5))


def test_lars_state_round_trips():
    p = torch.nn.Parameter(torch.ones(2))
    opt = LARS([p])
    p.grad = torch.ones(2)
    opt.step()
    opt2 = LARS([p])
    opt2.load_state_dict(opt.state_dict())
    torch.testing.assert_close(opt2.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])


def test_warmup_cosine_values():
    lr = lambda e: float(warmup_cosine_lr(e, base_lr=0.1, multiplier=10, warmup_epochs=10,
                                          total_epochs=1000))
    assert math.isclose(lr(0), 0.1)  # warm-up start
    assert math.isclose(lr(5), 0.55)  # half way
    assert math.isclose(lr(10), 1.0)  # warm-up end = peak
    assert math.isclose(lr(510), 0.5, rel_tol=1e-9)  # cosine half way (T_max = epochs)
    assert lr(10.5) < 1.0


def test_schedule_per_iteration_array():
    lrs = lr_schedule(epochs=20, loader_len=4, max_iters_per_epoch=201, base_lr=0.1,
                      multiplier=10, warmup_epochs=10)
    assert lrs.shape == (80,)
    assert lrs[0] == 0.1 and lrs[1] == 0.1  # first lr, then the value set after step 0 (e = 0)
    # iteration i uses lr(e of iteration i-1): e = 5 is epoch 6, n = 0 -> index 20, used at 21
    assert math.isclose(lrs[21], 0.55)
    assert math.isclose(lrs[41], 1.0)  # e = 10 exactly: end of warm-up
    assert np.all(np.diff(lrs[:41]) >= 0) and np.all(np.diff(lrs[41:]) <= 0)


def test_epoch_is_capped_at_201_iterations_with_fraction_over_the_full_loader():
    assert iterations_per_epoch(823, 201) == 201 and iterations_per_epoch(38, 201) == 38
    lrs = lr_schedule(epochs=2, loader_len=823, max_iters_per_epoch=201, warmup_epochs=10)
    assert lrs.shape == (402,)
    expected = float(warmup_cosine_lr(200 / 823, warmup_epochs=10, total_epochs=2))
    assert math.isclose(lrs[201], expected)  # first iteration of epoch 2 uses e = 0 + 200/823


def _lars_by_loop(params, grads, bufs, *, lr, momentum, wd, eps=1e-8, trust=1e-3):
    """The class docstring's per-parameter LARS, one tensor at a time (torchlars' form)."""
    out = []
    for p, g, buf in zip(params, grads, bufs):
        p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
        ratio = trust * p_norm / (g_norm + wd * p_norm + eps)
        adaptive = torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
        d_p = g.add(p, alpha=wd).mul_(adaptive)
        buf = d_p.clone() if buf is None else buf.mul_(momentum).add_(d_p)
        out.append((p.clone().add_(buf, alpha=-lr), buf))
    return out


def test_lars_multi_tensor_step_equals_the_per_parameter_loop_bit_for_bit():
    """Three steps over tensors of many shapes, one with a zero weight, one without a gradient
    at first (its momentum starts a step later): every value equals the loop's exactly."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 3, 7, 7), (64,), (512, 512), (4,), (128, 64, 3, 3)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    with torch.no_grad():
        params[1].zero_()
    opt = LARS(params, lr=0.7, momentum=0.9, weight_decay=1e-6)
    mine = [p.detach().clone() for p in params]
    bufs = [None] * len(params)
    for step in range(3):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        live = [i for i in range(len(params)) if not (step == 0 and i == 3)]
        params[3].grad = None if step == 0 else params[3].grad
        opt.step()
        done = _lars_by_loop([mine[i] for i in live], [grads[i] for i in live],
                             [bufs[i] for i in live], lr=0.7, momentum=0.9, wd=1e-6)
        for i, (new_p, new_buf) in zip(live, done):
            mine[i], bufs[i] = new_p, new_buf
        for p, expected in zip(params, mine):
            assert torch.equal(p.detach(), expected)
    assert "momentum_buffer" in opt.state[params[3]]
