"""DIA/CSI batch assembly and loss against algorithms.md A3/A5 and a direct per-row loop."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dia.amplify import (
    DissolveCache, DissolveTable, amplify_forward, amplify_loss, assemble_views, contrastive_loss,
    pair_masks,
)
from dia.augment import make_generator, rotate
from dia.hostsync import DeviceTraffic


def _positive_terms_sum(z, num_views, *, exclude_own=True, tau=0.5, eps=1e-8):
    """The sum of the 2N anchors' −log p terms of NT_xent_neg (shifted_removed) / NT_xent,
    written out row by row with Python loops (the normaliser is the caller's)."""
    size = z.shape[0]
    n = size // num_views
    zn = z / (z.norm(dim=1, keepdim=True) + eps)
    sim = zn @ zn.T
    total = 0.0
    for r in range(2 * n):
        excluded = {r}
        if num_views == 3 and exclude_own:
            excluded.add(2 * n + (r % n))
        denom = sum(math.exp(float(sim[r, c]) / tau) for c in range(size) if c not in excluded)
        pos = (r + n) % (2 * n)
        p = math.exp(float(sim[r, pos]) / tau) / (denom + eps)
        total += -math.log(p + eps)
    return total


def test_masks_on_a_hand_built_example():
    # B = 1 image, K = 2 "shifts": N = 2; V1 = {0, 1}, V2 = {2, 3}, V3 = {4, 5}
    positive, excluded, anchor = pair_masks(2, 3)
    assert sorted(map(tuple, positive.nonzero().tolist())) == [(0, 2), (1, 3), (2, 0), (3, 1)]
    own_dissolved = [(0, 4), (1, 5), (2, 4), (3, 5), (4, 0), (4, 2), (5, 1), (5, 3)]
    diagonal = [(i, i) for i in range(6)]
    assert sorted(map(tuple, excluded.nonzero().tolist())) == sorted(diagonal + own_dissolved)
    assert anchor.tolist() == [True, True, True, True, False, False]
    # anchor 0 (sample 0, shift 0, view 1): its negatives
    negatives = [c for c in range(6) if not excluded[0, c] and not positive[0, c]]
    assert negatives == [1, 3, 5]  # other shift in V1 and V2, dissolved copy under the other shift


def test_exclude_own_dissolved_false_moves_exactly_those_pairs_to_negatives():
    n = 4
    _, with_exclusion, _ = pair_masks(n, 3, exclude_own_dissolved=True)
    _, without, _ = pair_masks(n, 3, exclude_own_dissolved=False)
    moved = sorted(map(tuple, (with_exclusion & ~without).nonzero().tolist()))
    expected = []
    for i in range(n):
        expected += [(i, 2 * n + i), (2 * n + i, i), (n + i, 2 * n + i), (2 * n + i, n + i)]
    assert moved == sorted(expected)
    assert not torch.any(without & ~with_exclusion)
    assert torch.equal(without, torch.eye(3 * n, dtype=torch.bool))


def test_loss_equals_direct_loop_and_normalisers():
    torch.manual_seed(0)
    n = 6
    z3 = torch.randn(3 * n, 16, dtype=torch.float64)
    # normaliser: the DIA sum of 2N positive terms is divided by 3N, CSI's by 2N
    for exclude in (True, False):
        got = contrastive_loss(z3, 3, exclude_own_dissolved=exclude)
        total = _positive_terms_sum(z3, 3, exclude_own=exclude)
        assert math.isclose(float(got), total / (3 * n), rel_tol=1e-5)
    z2 = z3[: 2 * n]
    got = contrastive_loss(z2, 2)
    assert math.isclose(float(got), _positive_terms_sum(z2, 2) / (2 * n), rel_tol=1e-5)


def test_dissolved_rows_are_never_anchors_but_are_negatives():
    torch.manual_seed(1)
    n = 3
    z = torch.randn(3 * n, 8, dtype=torch.float64)
    base = contrastive_loss(z, 3)
    moved = z.clone()
    moved[2 * n] = z[1]  # a dissolved image becomes identical to anchor 1: a harder negative
    assert contrastive_loss(moved, 3) > base
    positive, excluded, anchor = pair_masks(n, 3)
    assert not anchor[2 * n:].any() and not positive[2 * n:].any()


def test_total_and_rotation_labels_over_three_views():
    b, k = 2, 4
    images = torch.rand(b, 3, 8, 8)
    calls = []

    def fake_dissolve(x, t):
        calls.append((x.shape[0], t.clone()))
        return x * 0.5 - 0.25  # values outside [0, 1] pass through unchanged

    batch = assemble_views(images, make_generator(0), dissolve=fake_dissolve)
    n = k * b
    assert batch.images.shape == (3 * n, 3, 8, 8) and batch.num_views == 3
    assert batch.shift_labels.tolist() == ([0] * b + [1] * b + [2] * b + [3] * b) * 3
    assert len(calls) == 1 and calls[0][0] == n  # ONE dissolver call over the K·B images
    t = calls[0][1]
    assert all(len(set(t[s * b:(s + 1) * b].tolist())) == 1 for s in range(k))  # one t per shift
    assert all(30 <= v < 100 for v in t.tolist())
    for view in range(3):
        for s in range(k):
            for j in range(b):
                got = batch.images[view * n + s * b + j]
                unrot = rotate(got[None], -s)[0]
                src = images[j] if view < 2 else images[j] * 0.5 - 0.25
                assert torch.equal(unrot, src) or torch.equal(unrot, src.flip(-1))
    logits = torch.randn(3 * n, k)
    terms = amplify_loss(torch.randn(3 * n, 16), logits, batch.shift_labels, 3)
    ce = torch.nn.functional.cross_entropy(logits, batch.shift_labels)
    torch.testing.assert_close(terms["shift"], ce)
    torch.testing.assert_close(terms["total"], terms["contrastive"] + terms["shift"])


@pytest.mark.parametrize("views", [3, 2])
def test_one_augmentation_call_and_one_forward_over_all_views(views, monkeypatch):
    """Batch norm sees the clean and dissolved views together (algorithms.md C1): a step that
    augmented or forwarded the views one at a time would train another network."""
    import dia.amplify

    b, k = 2, 4
    augment = dia.amplify.simclr_augment
    augmented, forwarded = [], []

    def counting_augment(x, *args, **kwargs):
        augmented.append(x.shape[0])
        return augment(x, *args, **kwargs)

    class Recorder(torch.nn.Module):
        def forward(self, x):
            forwarded.append(x.shape[0])
            flat = x.flatten(1)
            return SimpleNamespace(projection=flat[:, :16], shift_logits=flat[:, :k])

    monkeypatch.setattr(dia.amplify, "simclr_augment", counting_augment)
    terms = amplify_forward(Recorder(), torch.rand(b, 3, 8, 8), make_generator(0),
                            dissolve=(lambda x, t: x * 0.5) if views == 3 else None)
    assert augmented == forwarded == [views * k * b]
    assert torch.isfinite(terms["total"])


def test_clean_views_have_independent_flips_and_csi_has_two_views():
    images = torch.rand(64, 3, 6, 6)
    batch = assemble_views(images, make_generator(3))
    n = 4 * 64
    assert batch.num_views == 2 and batch.images.shape[0] == 2 * n and batch.t is None
    v1, v2 = batch.images[:64], batch.images[n:n + 64]  # shift 0 of each view
    same = [torch.equal(a, c) for a, c in zip(v1, v2)]
    assert 5 < sum(same) < 59  # flips drawn independently per view and sample


def test_dissolve_cache_gives_the_same_batch_and_counts_hits():
    calls = []

    def fake_dissolve(x, t):
        calls.append(x.shape[0])
        return x * 0.5 + t.view(-1, 1, 1, 1).float() / 1000  # depends on (image, flip, t)

    images = torch.rand(3, 3, 6, 6)
    indices = torch.tensor([7, 1, 4])
    cache = DissolveCache(fake_dissolve, max_bytes=10**9)
    plain = assemble_views(images, make_generator(0), dissolve=fake_dissolve, t_min=30, t_max=32)
    cached = assemble_views(images, make_generator(0), dissolve=cache, t_min=30, t_max=32,
                            indices=indices)
    assert torch.equal(plain.images, cached.images) and torch.equal(plain.t, cached.t)
    for seed in range(1, 30):
        plain = assemble_views(images, make_generator(seed), dissolve=fake_dissolve, t_min=30,
                               t_max=32)
        cached = assemble_views(images, make_generator(seed), dissolve=cache, t_min=30, t_max=32,
                                indices=indices)
        assert torch.equal(plain.images, cached.images)
    assert len(cache.store) == 3 * 2 * 2  # every (image, flip, t) seen, stored once
    assert cache.misses <= 2 * 12 and cache.hit_rate() > 0.5
    small = DissolveCache(fake_dissolve, max_bytes=2 * 3 * 6 * 6 * 4)  # room for two entries
    assemble_views(images, make_generator(0), dissolve=small, indices=indices)
    assert len(small.store) == 2


def test_dissolve_table_gives_the_batch_of_the_dissolver_without_a_host_read():
    def fake_dissolve(x, t):  # depends on (image, flip, t)
        return x * 0.5 + t.view(-1, 1, 1, 1).float() / 1000 + x[..., :1].cumsum(-2)

    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8, generator=gen)
    table = DissolveTable(fake_dissolve, train, 30, 34, batch=2, progress=False)
    assert table.table.numel() * 4 == DissolveTable.nbytes(train, 30, 34)
    indices = torch.tensor([4, 0, 2])
    images = train[indices].float().div_(255.0)
    for seed in range(20):
        plain = assemble_views(images, make_generator(seed), dissolve=fake_dissolve, t_min=30,
                               t_max=34)
        with DeviceTraffic() as traffic:
            looked_up = assemble_views(images, make_generator(seed), dissolve=table, t_min=30,
                                       t_max=34, indices=indices)
        assert torch.equal(plain.images, looked_up.images)
        assert traffic.host_reads == 0


@pytest.mark.gpu
def test_bf16_channels_last_step_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from dia.amplify import amplify_forward
    from dia.encoder import AmplifyEncoder

    device = torch.device("cuda")
    model = AmplifyEncoder().to(device).to(memory_format=torch.channels_last)
    images = torch.rand(8, 3, 28, 28, device=device)
    terms = amplify_forward(model, images, make_generator(0, device),
                            dissolve=lambda x, t: x * 2 - 1, channels_last=True,
                            autocast_dtype=torch.bfloat16)
    terms["total"].backward()
    assert torch.isfinite(terms["total"]) and terms["contrastive"].dtype == torch.float32
