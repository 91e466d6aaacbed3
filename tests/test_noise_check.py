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


class Recorder(torch.nn.Module):
    """Answers ε = 0 and remembers how many images each call was shown."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x_t, t):
        self.seen.append(x_t.shape[0])
        return SimpleNamespace(sample=torch.zeros_like(x_t))


@pytest.mark.parametrize("val_labels, splits_measured", [
    ([], ["train"]),  # no validation split (the folder datasets)
    ([1, 1, 1], ["train"]),  # anomalous val images are never denoised
    ([0, 1, 0], ["train", "val"]),
])
def test_check_ddpm_adds_held_out_normals_where_there_are_any(monkeypatch, val_labels,
                                                               splits_measured):
    import dia.data
    import dia.diffusion
    from dia.config import load_config
    from dia.data.splits import DatasetSplits
    from dia.noise_check import check_ddpm

    def images(n):
        return torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8)

    val = images(len(val_labels)) if val_labels else torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    splits = DatasetSplits(key="synthetic", image_size=28, train=images(6), test=images(2),
                           test_labels=torch.tensor([0, 1]), test_ids=["a", "b"],
                           train_ids=[str(i) for i in range(6)], val=val,
                           val_labels=torch.tensor(val_labels, dtype=torch.int64))
    model = Recorder()
    ac = build_scheduler().alphas_cumprod
    monkeypatch.setattr(dia.data, "load_for_config", lambda *a, **k: splits)
    monkeypatch.setattr(dia.diffusion, "open_diffusion_run", lambda *a, **k: None)
    monkeypatch.setattr(dia.diffusion, "load_dissolver_model", lambda *a, **k: (model, ac))
    rows = check_ddpm(load_config("smoke"), num_images=4, timesteps=(30, 99))
    assert [r["split"] for r in rows] == [s for s in splits_measured for _ in (30, 99)]
    # 4 of the 6 training normals per t, then every normal val image (2) per t
    assert model.seen == [4, 4] + ([2, 2] if "val" in splits_measured else [])
    assert all(r["l1"] == pytest.approx(r["zero_l1"]) for r in rows)
