"""Shifts, flips and the batched SimCLR augmentation (reference semantics, explicit generators)."""

from __future__ import annotations

import math

import pytest
import torch

from dia import runtime
from dia.augment import (
    AugmentParams, color_jitter, cutperm, hsv_to_rgb, make_generator, random_grayscale,
    random_hflip, resized_crop, rgb_to_hsv, rotate, sample_crop_boxes, shift_chunks, shift_labels,
    shift_major, simclr_augment,
)
from dia.hostsync import DeviceTraffic


def test_rotation_shift_major_order():
    x = torch.rand(3, 3, 6, 6)
    out = shift_major(x, "rotation")
    assert out.shape == (12, 3, 6, 6)
    for k in range(4):
        for j in range(3):
            torch.testing.assert_close(out[k * 3 + j], torch.rot90(x[j], k, dims=(1, 2)))
    assert shift_labels(3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_shift_chunks_applies_shift_k_to_chunk_k():
    x = torch.rand(8, 3, 4, 4)
    out = shift_chunks(x, "rotation")
    for k in range(4):
        torch.testing.assert_close(out[2 * k:2 * k + 2], rotate(x[2 * k:2 * k + 2], k))


def test_cutperm():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(cutperm(x, 0), x)
    assert torch.equal(cutperm(x, 1), torch.cat([x[..., 2:], x[..., :2]], dim=3))
    assert torch.equal(cutperm(x, 2), torch.cat([x[:, :, 2:], x[:, :, :2]], dim=2))
    for k in range(4):
        assert torch.equal(cutperm(cutperm(x, k), k), x)


def test_hflip_is_per_sample_and_seeded():
    x = torch.rand(64, 3, 5, 5)
    out = random_hflip(x, make_generator(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert torch.all(flipped ^ kept)
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(out, random_hflip(x, make_generator(0)))


def test_hsv_round_trip_and_hue_of_primaries():
    # the atan2 hue agrees with the table hue at multiples of 30 degrees and is off by at most
    # ~1.2 degrees elsewhere, so the round trip is exact only there (the reference's semantics)
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=0.03, rtol=0)
    corners = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0.2, 0.2, 0.2], [0, 0, 0.5]])
    corners = corners.float().view(5, 3, 1, 1)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(corners)), corners, atol=1e-6, rtol=0)
    red_green_blue = torch.eye(3).view(3, 3, 1, 1)
    hue = rgb_to_hsv(red_green_blue)[:, 0, 0, 0]
    torch.testing.assert_close(hue, torch.tensor([0.0, 1 / 3, 2 / 3]), atol=1e-6, rtol=0)


def test_color_jitter_reference_semantics():
    x = torch.rand(200, 3, 6, 6)
    # brightness only: V scaled per sample, hue/saturation untouched
    params = AugmentParams(jitter_p=1.0, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0)
    out = color_jitter(x, make_generator(1), params)
    ratio = rgb_to_hsv(out)[:, 2] / rgb_to_hsv(x)[:, 2]
    per_sample = ratio.flatten(1)
    unclamped = (rgb_to_hsv(out)[:, 2] < 0.999).flatten(1).all(dim=1)
    spread = (per_sample.max(1).values - per_sample.min(1).values)[unclamped]
    assert float(spread.max()) < 1e-4  # one factor per sample
    assert 0.6 - 1e-4 <= float(per_sample.min()) and float(per_sample.max()) <= 1.4 + 1e-4
    # gray images stay gray (saturation 0 makes hue and saturation no-ops)
    gray = torch.rand(16, 1, 6, 6).expand(16, 3, 6, 6)
    out = color_jitter(gray, make_generator(2), AugmentParams(jitter_p=1.0))
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-6, rtol=0)
    # p = 0 is the identity
    assert torch.equal(color_jitter(x, make_generator(3), AugmentParams(jitter_p=0.0)), x)


def test_simclr_augment_reads_nothing_back_where_reads_stall_and_gives_the_same_images(
        monkeypatch):
    """Off the CPU both jitter orders are computed and one kept by `torch.where`, and the crop
    windows are scattered, not mask-indexed: the same images as the CPU path, no host read."""
    x = torch.rand(64, 3, 8, 8)
    params = AugmentParams(crop_scale=(0.3, 1.3))  # some crop trials invalid
    for seed in range(6):  # both outcomes of the order coin
        on_cpu = simclr_augment(x, make_generator(seed), params)
        monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)
        with DeviceTraffic() as traffic:
            stalling = simclr_augment(x, make_generator(seed), params)
        monkeypatch.undo()
        assert traffic.host_reads == 0, traffic.reads
        assert torch.equal(on_cpu, stalling)


def _crop_sizes_by_mask_index(n, height, width, generator, scale, ratio):
    """The first n valid trials picked by boolean-mask indexing (the form before the scatter)."""
    trials = 10 * n
    target = (torch.rand(trials, generator=generator) * (scale[1] - scale[0]) + scale[0]).double()
    target = target * width * height
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp((torch.rand(trials, generator=generator) * (hi - lo) + lo).double())
    w, h = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    order = torch.cumsum(valid.long(), 0) - 1
    take = valid & (order < n)
    w_sel = torch.full((n,), float(width), dtype=torch.float64)
    h_sel = torch.full((n,), float(height), dtype=torch.float64)
    w_sel[order[take]], h_sel[order[take]] = w[take], h[take]
    return w_sel / width, h_sel / height


@pytest.mark.parametrize("n, scale", [(50, (0.08, 1.0)), (50, (0.9, 1.6)), (3, (1.2, 1.6))])
def test_crop_windows_are_the_first_valid_trials(n, scale):
    boxes = sample_crop_boxes(n, 28, 28, make_generator(5), scale=scale, ratio=(3 / 4, 4 / 3))
    w, h = _crop_sizes_by_mask_index(n, 28, 28, make_generator(5), scale, (3 / 4, 4 / 3))
    assert torch.equal(boxes[:, 0], w) and torch.equal(boxes[:, 1], h)


def test_grayscale_luma():
    x = torch.rand(5, 3, 4, 4)
    out = random_grayscale(x, make_generator(0), p=1.0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(out[:, c], luma)


@pytest.mark.parametrize("size", [28, 224])
def test_crop_boxes_fixed_scale_and_inside(size):
    boxes = sample_crop_boxes(500, size, size, make_generator(0), scale=(0.54, 0.54),
                              ratio=(3 / 4, 4 / 3))
    w, h, wb, hb = boxes.T
    area = w * h
    assert torch.all((area - 0.54).abs() < 2.5 / size)  # whole-pixel rounding only
    assert torch.all((w / h >= 3 / 4 - 2 / size) & (w / h <= 4 / 3 + 2 / size))
    assert torch.all((wb.abs() <= 1 - w + 1e-9) & (hb.abs() <= 1 - h + 1e-9))
    assert torch.allclose(wb * size, torch.round(wb * size))  # whole-pixel offsets


def test_crop_falls_back_to_full_image_when_no_trial_is_valid():
    boxes = sample_crop_boxes(4, 8, 8, make_generator(0), scale=(1.5, 1.5), ratio=(1.0, 1.0))
    assert torch.equal(boxes, torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4, dtype=boxes.dtype))


def test_resized_crop_identity_and_zoom():
    x = torch.rand(2, 3, 8, 8)
    full = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2)
    torch.testing.assert_close(resized_crop(x, full), x)
    # the left half window, stretched: output column pairs come from input columns 0..3
    half = torch.tensor([[0.5, 1.0, -0.5, 0.0]] * 2)
    out = resized_crop(x, half)
    torch.testing.assert_close(out[..., 1:-1:2].mean(), x[..., :4].mean(), atol=0.1, rtol=0)


def test_simclr_augment_is_seeded_and_per_sample():
    x = torch.rand(1, 3, 16, 16).expand(32, 3, 16, 16).contiguous()
    a = simclr_augment(x, make_generator(5))
    b = simclr_augment(x, make_generator(5))
    assert a.shape == x.shape and torch.equal(a, b)
    distinct = {tuple(v.flatten()[:20].tolist()) for v in a}
    assert len(distinct) > 20  # the same image gets different parameters per sample
    assert not torch.equal(a, simclr_augment(x, make_generator(6)))
