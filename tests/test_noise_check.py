"""The DDPM noise-error check: a model answering 0 scores E|ε|, an oracle scores 0."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dia.diffusion import build_scheduler
from dia.noise_check import ZERO_PREDICTOR_L1, noise_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Oracle(torch.nn.Module):
    """Knows x0, so recovers ε = (x_t − √ᾱ·x0)/√(1−ᾱ) exactly; `zero=True` answers 0."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor, zero: bool = False):
        super().__init__()
        self.x0, self.ac, self.zero = x0, alphas_cumprod, zero
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x_t, t):
        if self.zero:
            return SimpleNamespace(sample=torch.zeros_like(x_t))
        a = self.ac[t].view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(x_t - a.sqrt() * self.x0) / (1 - a).sqrt())


def test_oracle_and_zero_predictor():
    ac = build_scheduler().alphas_cumprod
    x0 = torch.rand(16, 3, 32, 32) * 2 - 1
    exact = noise_error(Oracle(x0, ac), ac, x0, (30, 99, 400), batch_size=16)
    assert [r["t"] for r in exact] == [30, 99, 400]
    assert all(r["l1"] < 1e-3 for r in exact)
    zero = noise_error(Oracle(x0, ac, zero=True), ac, x0, (30, 400), batch_size=5)
    for row in zero:  # batches of 5 over 16 images: the mean is still over every element
        assert row["l1"] == pytest.approx(row["zero_l1"], rel=1e-5)
        assert row["zero_l1"] == pytest.approx(ZERO_PREDICTOR_L1, abs=0.02)
