"""Dissolving: x̂₀ vs the closed form and diffusers, oracle recovery, t sampler, ranges, shapes."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from dia.config import DiffusionConfig
from dia.diffusion import build_scheduler, build_unet
from dia.dissolve import (
    DissolveError, Dissolver, dissolve, from_resolution, predict_x0, sample_t, to_resolution,
)
from dia import runtime
from dia.hostsync import DeviceTraffic


@pytest.fixture(scope="module")
def alphas_cumprod() -> torch.Tensor:
    return build_scheduler().alphas_cumprod.float()


@pytest.fixture(scope="module")
def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(DiffusionConfig(width=8)).eval().requires_grad_(False)


class ConstEps(torch.nn.Module):
    """A stand-in U-Net predicting a fixed ε (or a function of x), recording what it was fed."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, t):
        self.seen.append((x.clone(), t.clone()))

        class Out:
            sample = self.fn(x, t)

        return Out()


def closed_form(eps, x, t, ac):
    a = ac[t].view(-1, 1, 1, 1).double()
    return (torch.sqrt(1 / a) * x.double() - torch.sqrt(1 / a - 1) * eps.double()).float()


def test_schedule_matches_reference_cosine_table(alphas_cumprod):
    # algorithms.md A2 table (lucidrains cosine schedule, 0-indexed t)
    for t, want in [(30, 0.99647), (50, 0.99172), (70, 0.98507), (99, 0.97209), (100, 0.97158),
                    (200, 0.89776), (400, 0.64599)]:
        assert alphas_cumprod[t].item() == pytest.approx(want, abs=2e-5), t


@pytest.mark.parametrize("t", [0, 30, 99, 100, 200, 400, 999])
def test_predict_x0_closed_form_scalar_t(alphas_cumprod, t):
    g = torch.Generator().manual_seed(t)
    x, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    got = predict_x0(eps, x, t, alphas_cumprod)
    want = closed_form(eps, x, torch.full((4,), t), alphas_cumprod)
    # float32 rounding of the two terms, each about |x|/√ᾱ (2·10⁴ at t = 999)
    scale = max(1.0, float(alphas_cumprod[t]) ** -0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_predict_x0_batch_varying_t(alphas_cumprod):
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(5, 3, 8, 8, generator=g), torch.randn(5, 3, 8, 8, generator=g)
    t = torch.tensor([30, 99, 100, 400, 999])
    got = predict_x0(eps, x, t, alphas_cumprod)
    torch.testing.assert_close(got, closed_form(eps, x, t, alphas_cumprod), rtol=1e-5, atol=1e-5)
    for i in range(5):  # each row uses its own t
        torch.testing.assert_close(got[i:i + 1], predict_x0(eps[i:i + 1], x[i:i + 1], int(t[i]),
                                                             alphas_cumprod))


@pytest.mark.parametrize("t", [30, 100, 200, 400])
def test_predict_x0_equals_scheduler_step(alphas_cumprod, t):
    sched = build_scheduler()
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    want = sched.step(eps, t, x, generator=torch.Generator().manual_seed(0)).pred_original_sample
    torch.testing.assert_close(predict_x0(eps, x, t, alphas_cumprod), want, rtol=1e-5, atol=1e-5)


def test_oracle_eps_recovers_x0(alphas_cumprod):
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 30, 99, 200, 400, 900])
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    torch.testing.assert_close(predict_x0(noise, x_t, t, alphas_cumprod), x0, rtol=1e-4, atol=1e-4)


def test_dissolve_with_oracle_model_is_exact(alphas_cumprod):
    """dissolve() = predict_x0 on what the model saw, clamped (normalized range, 32² input)."""
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 32, 32, generator=g)
    model = ConstEps(lambda x, t: torch.zeros_like(x))
    t = torch.tensor([30, 100, 400])
    out = dissolve(images, model, alphas_cumprod, t, value_range="normalized")
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    want = ((((images * 2 - 1) / a.sqrt()).clamp(-1, 1)) + 1) / 2
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(model.seen[0][1], t)


def test_sample_t_range_and_distribution():
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_t(4, g) for _ in range(7000)])
    assert draws.dtype == torch.int64 and draws.shape == (7000, 4)
    assert (draws == draws[:, :1]).all(), "one t per call, shared by the batch"
    t = draws[:, 0]
    assert int(t.min()) == 30 and int(t.max()) == 99
    counts = torch.bincount(t, minlength=100)[30:100].double()
    assert (counts > 0).all()
    expected = 7000 / 70
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 69 + 5 * math.sqrt(2 * 69), chi2  # 69 dof, about 5 sigma
    # general range, and reproducible from the generator
    t2 = torch.stack([sample_t(1, torch.Generator().manual_seed(i), 100, 401) for i in range(500)])
    assert int(t2.min()) >= 100 and int(t2.max()) <= 400
    assert torch.equal(sample_t(3, torch.Generator().manual_seed(7)),
                       sample_t(3, torch.Generator().manual_seed(7)))
    with pytest.raises(DissolveError):
        sample_t(1, g, 50, 50)


def test_sample_t_is_the_reference_formula_computed_without_a_host_read():
    """t = int(30 + 70·u) on the host (as earlier runs computed it; the reference's
    int(100·(0.3 + 0.7·u)) differs from it at one of the 2^24 float32 draws, u = 0.5: 65 vs 64)
    equals the device-side float64 computation for the same draw, and no value is read back."""
    for seed in range(300):
        u = float(torch.rand((), generator=torch.Generator().manual_seed(seed)))
        with DeviceTraffic() as traffic:
            t = sample_t(2, torch.Generator().manual_seed(seed))
        assert traffic.host_reads == 0
        assert t.tolist() == [min(int(30 + (100 - 30) * u), 99)] * 2


def test_reference_range_feeds_01_clamps_and_does_not_rescale(alphas_cumprod):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    # ε = −5: x̂₀ = x/√ᾱ + 5·√(1/ᾱ−1) exceeds 1 at t=400 → clamped to 1, not rescaled into [0,1]
    model = ConstEps(lambda x, t: torch.full_like(x, -5.0))
    out = dissolve(images, model, alphas_cumprod, 400, value_range="reference")
    torch.testing.assert_close(model.seen[0][0], images)  # fed unchanged, in [0, 1]
    assert float(out.max()) == 1.0
    # ε = +5 pushes below 0: the reference keeps negative values down to −1
    model = ConstEps(lambda x, t: torch.full_like(x, 5.0))
    out = dissolve(images, model, alphas_cumprod, 400, value_range="reference")
    assert float(out.min()) == -1.0
    a = alphas_cumprod[400]
    want = (images / a.sqrt() - 5 * (1 / a - 1).sqrt()).clamp(-1, 1)
    torch.testing.assert_close(out, want)
    # normalized: mapped to [−1, 1] before and back to [0, 1] after
    model = ConstEps(lambda x, t: torch.full_like(x, 5.0))
    out = dissolve(images, model, alphas_cumprod, 400, value_range="normalized")
    torch.testing.assert_close(model.seen[0][0], images * 2 - 1)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_keep_gray_makes_gray_inputs_gray_and_leaves_the_rest(alphas_cumprod):
    tint = torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)  # a U-Net answering a coloured ε
    unet = ConstEps(lambda x, t: tint.expand_as(x))
    gray = torch.rand(2, 1, 28, 28).expand(2, 3, 28, 28)
    colour = torch.rand(2, 3, 28, 28)
    images = torch.cat([gray, colour])
    plain = dissolve(images, unet, alphas_cumprod, 99)
    kept = dissolve(images, unet, alphas_cumprod, 99, keep_gray=True)
    assert (plain[:2, 0] - plain[:2, 1]).abs().max() > 0.01  # the tint, without the option
    assert torch.equal(kept[:2, 0], kept[:2, 1]) and torch.equal(kept[:2, 1], kept[:2, 2])
    assert torch.allclose(kept[:2, 0], plain[:2].mean(1))  # the channel mean, nothing else
    assert torch.equal(kept[2:], plain[2:])  # colour inputs untouched


def test_shape_round_trips(alphas_cumprod):
    identity = ConstEps(lambda x, t: torch.zeros_like(x))
    small = torch.rand(2, 3, 28, 28)
    out = dissolve(small, identity, alphas_cumprod, 0, value_range="normalized")
    assert identity.seen[-1][0].shape == (2, 3, 32, 32)
    assert (identity.seen[-1][0][..., :2, :] == -1).all()  # zero padding of the [0,1] image
    assert out.shape == small.shape
    torch.testing.assert_close(out, small, atol=2e-4, rtol=0)  # ᾱ₀ ≈ 1: near identity
    big = torch.rand(2, 3, 224, 224)
    out = dissolve(big, identity, alphas_cumprod, 0, value_range="normalized")
    assert identity.seen[-1][0].shape == (2, 3, 32, 32) and out.shape == big.shape
    # resize is bilinear without antialias, down and back up
    x, how = to_resolution(big)
    torch.testing.assert_close(x, torch.nn.functional.interpolate(
        big, size=(32, 32), mode="bilinear", align_corners=False, antialias=False))
    assert from_resolution(x, how).shape == big.shape
    x, how = to_resolution(small)
    torch.testing.assert_close(from_resolution(x, how), small)


def test_bad_inputs_are_refused(alphas_cumprod, tiny_unet):
    ok = torch.rand(2, 3, 28, 28)
    with pytest.raises(DissolveError, match=r"\[0, 1\]"):
        dissolve(ok * 2 - 1, tiny_unet, alphas_cumprod, 50)
    with pytest.raises(DissolveError, match="shape"):
        dissolve(torch.rand(2, 1, 28, 28), tiny_unet, alphas_cumprod, 50)
    with pytest.raises(DissolveError, match="shape"):
        dissolve(torch.rand(3, 28, 28), tiny_unet, alphas_cumprod, 50)
    with pytest.raises(DissolveError, match="float"):
        dissolve((ok * 255).to(torch.uint8), tiny_unet, alphas_cumprod, 50)
    with pytest.raises(DissolveError, match="t must"):
        dissolve(ok, tiny_unet, alphas_cumprod, 1000)
    with pytest.raises(DissolveError, match="t must"):
        dissolve(ok, tiny_unet, alphas_cumprod, torch.tensor([50, 60, 70]))
    with pytest.raises(DissolveError, match="t must"):
        dissolve(ok, tiny_unet, alphas_cumprod, torch.tensor([0.5, 0.5]))
    with pytest.raises(DissolveError, match="value_range"):
        dissolve(ok, tiny_unet, alphas_cumprod, 50, value_range="clean")
    with pytest.raises(DissolveError, match=r"\[0, 1\]"):
        dissolve(torch.full((1, 3, 28, 28), float("nan")), tiny_unet, alphas_cumprod, 50)


def test_dissolver_checks_every_batch_on_the_cpu_and_the_first_on_a_gpu(
        alphas_cumprod, tiny_unet, monkeypatch):
    ok = torch.rand(2, 3, 28, 28)
    d = Dissolver(tiny_unet, alphas_cumprod)
    d(ok, 50)
    with pytest.raises(DissolveError, match=r"\[0, 1\]"):  # the CPU: reading back is free
        d(ok * 2 - 1, 50)
    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)
    d = Dissolver(tiny_unet, alphas_cumprod)
    with pytest.raises(DissolveError, match=r"\[0, 1\]"):
        d(ok * 2 - 1, 50)
    with pytest.raises(DissolveError, match="t must lie"):
        d(ok, 1000)
    d(ok, 50)
    with DeviceTraffic() as traffic:  # later batches: shapes and dtypes only, nothing read back
        d(ok, torch.full((2,), 60))
    assert traffic.host_reads == 0
    with pytest.raises(DissolveError, match="shape"):
        d(torch.rand(2, 1, 28, 28), 50)


def test_dissolver_real_unet_frozen_and_no_grad(alphas_cumprod, tiny_unet):
    d = Dissolver(tiny_unet, alphas_cumprod)
    images = torch.rand(4, 3, 28, 28, requires_grad=True)
    t = sample_t(4, torch.Generator().manual_seed(0))
    out = d(images, t)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert not out.requires_grad
    assert all(not p.requires_grad for p in d.unet.parameters())
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    torch.testing.assert_close(out, d(images.detach(), t))  # deterministic
    assert d.autocast_dtype is None  # CPU: plain fp32
    assert "Dissolver(" in repr(d)


def test_cpu_bf16_dissolver_autocasts_and_stays_close_to_fp32(alphas_cumprod, tiny_unet):
    import copy

    images = torch.rand(16, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.randint(30, 100, (16,), generator=torch.Generator().manual_seed(1))
    fp32 = Dissolver(copy.deepcopy(tiny_unet), alphas_cumprod)(images, t)
    bf16 = Dissolver(copy.deepcopy(tiny_unet), alphas_cumprod, cpu_bf16=True)
    assert bf16.autocast_dtype == torch.bfloat16
    out = bf16(images, t)
    assert out.dtype == torch.float32 and not torch.equal(out, fp32)
    torch.testing.assert_close(out, fp32, atol=3e-2, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no dtype of its own: the caller's applies
        outer = Dissolver(copy.deepcopy(tiny_unet), alphas_cumprod)(images, t)
    torch.testing.assert_close(outer, out)


def test_bf16_is_chosen_per_device_and_warned_about_once_without_bf16_units(monkeypatch, caplog):
    monkeypatch.setattr(runtime, "_warned_emulated", set())  # as in a fresh process
    on = functools.partial(runtime.bf16_autocast, switch="dissolve.cpu_bf16")
    assert on("cuda", cuda=True, cpu=False) == torch.bfloat16
    assert on("cuda", cuda=False, cpu=True) is None
    assert on("cpu", cuda=True, cpu=False) is None
    monkeypatch.setattr(runtime, "cpu_has_bf16_units", lambda: True)
    with caplog.at_level("WARNING", logger="dia.runtime"):
        assert on("cpu", cuda=False, cpu=True) == torch.bfloat16
    assert not caplog.records
    monkeypatch.setattr(runtime, "cpu_has_bf16_units", lambda: False)
    with caplog.at_level("WARNING", logger="dia.runtime"):
        assert on("cpu", cuda=False, cpu=True) == torch.bfloat16
        assert on("cpu", cuda=False, cpu=True) == torch.bfloat16
        runtime.bf16_autocast("cpu", cuda=False, cpu=True, switch="amplify.cpu_bf16")
    assert "no bf16 units" in caplog.text and "set dissolve.cpu_bf16 to false" in caplog.text
    assert [r.getMessage().split()[0] for r in caplog.records] == ["dissolve.cpu_bf16",
                                                                  "amplify.cpu_bf16"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_dissolver_matches_cpu_fp32(alphas_cumprod, tiny_unet):
    import copy

    images = torch.rand(16, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.randint(30, 100, (16,), generator=torch.Generator().manual_seed(1))
    cpu = Dissolver(copy.deepcopy(tiny_unet), alphas_cumprod)(images, t)
    gpu = Dissolver(copy.deepcopy(tiny_unet).cuda(), alphas_cumprod)
    assert gpu.autocast_dtype == torch.bfloat16
    out = gpu(images.cuda(), t.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), cpu, atol=3e-2, rtol=0)
    fp32 = Dissolver(copy.deepcopy(tiny_unet).cuda(), alphas_cumprod, cuda_bf16=False)
    torch.testing.assert_close(fp32(images.cuda(), t.cuda()).cpu(), cpu, atol=1e-4, rtol=0)
