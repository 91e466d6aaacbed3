"""The CSI score on toy features against a hand computation; AUC orientation; extraction."""

from __future__ import annotations

import math

import torch

from dia.encoder import AmplifyEncoder
from dia.metrics import compute_auc
from dia.scoring import (
    Features, csi_anomaly_score, csi_normality_score, csi_score_terms, csi_statistics,
    extract_features,
)


def _toy():
    # M = 2 training images, K = 2 shifts, S = 2 draws, d = 2
    train_z = torch.tensor([
        [[[1.0, 0.0], [3.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]],   # z̄_0 = (2,0), z̄_1 = (0,2)
        [[[0.0, 4.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]],   # z̄_0 = (0,4), z̄_1 = (1,1)
    ])
    train_c = torch.tensor([
        [[[2.0, 0.0], [4.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]],   # c̄_0[0] = 3, c̄_1[1] = 2
        [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 4.0], [0.0, 6.0]]],   # c̄_0[0] = 1, c̄_1[1] = 5
    ])
    test_z = torch.tensor([[[[3.0, 4.0], [3.0, 4.0]], [[2.0, 0.0], [0.0, 0.0]]]])  # (3,4), (1,0)
    test_c = torch.tensor([[[[1.0, 9.0], [3.0, 9.0]], [[9.0, 2.0], [9.0, 0.0]]]])  # 2, 1
    return Features(train_z, train_c), Features(test_z, test_c)


def test_csi_score_by_hand():
    train, test = _toy()
    stats = csi_statistics(train)
    # λcon_0 = 1 / mean(|(2,0)|, |(0,4)|) = 1/3 ; λcon_1 = 1 / mean(2, √2)
    lam_con = [1 / 3, 1 / ((2 + math.sqrt(2)) / 2)]
    lam_cls = [1 / 2, 1 / 3.5]  # 1 / mean(3, 1), 1 / mean(2, 5)
    torch.testing.assert_close(stats.weight_con, torch.tensor(lam_con))
    torch.testing.assert_close(stats.weight_cls, torch.tensor(lam_cls))
    # shift 0: bank (1,0), (0,1); z̄ = (3,4) -> max(3, 4) = 4 ; logit 2
    # shift 1: bank (0,1), (1,1)/√2; z̄ = (1,0) -> max(0, 1/√2) ; logit 1
    s = ((lam_con[0] * 4 + lam_cls[0] * 2) + (lam_con[1] / math.sqrt(2) + lam_cls[1] * 1)) / 2
    got = csi_normality_score(stats, test)
    assert math.isclose(float(got[0]), s, rel_tol=1e-6)
    assert math.isclose(float(csi_anomaly_score(train, test)[0]), -s, rel_tol=1e-6)


def test_the_two_terms_of_the_score_by_hand():
    train, test = _toy()
    terms = csi_score_terms(csi_statistics(train), test)
    lam_con = [1 / 3, 1 / ((2 + math.sqrt(2)) / 2)]
    lam_cls = [1 / 2, 1 / 3.5]
    # the contrastive term of each shift (max similarity 4 and 1/√2), then the shift term
    # (logits 2 and 1), each averaged over the K = 2 shifts as in test_csi_score_by_hand
    assert math.isclose(float(terms["contrast"][0]),
                        (lam_con[0] * 4 + lam_con[1] / math.sqrt(2)) / 2, rel_tol=1e-6)
    assert math.isclose(float(terms["shift"][0]), (lam_cls[0] * 2 + lam_cls[1]) / 2, rel_tol=1e-6)
    total = csi_normality_score(csi_statistics(train), test)
    torch.testing.assert_close(terms["contrast"] + terms["shift"], total)


def test_a_near_zero_or_negative_mean_shift_logit_is_warned_about(caplog):
    train, _ = _toy()
    with caplog.at_level("WARNING", logger="dia.scoring"):
        csi_statistics(train)
    assert not caplog.records  # mean logits 2 and 3.5: stable
    logits = train.shift_logits.clone()
    logits[:, 1, :, 1] = -logits[:, 1, :, 1]  # shift 1's applied-shift logit turns negative
    with caplog.at_level("WARNING", logger="dia.scoring"):
        stats = csi_statistics(Features(train.projection, logits))
    assert "shift(s) [1] (-3.5)" in caplog.text and "λcls" in caplog.text
    assert float(stats.weight_cls[1]) < 0  # the reference's weight, kept: only monitored


def test_auc_orientation():
    labels = [0, 0, 0, 1, 1]
    perfect = [0.1, 0.2, 0.3, 0.8, 0.9]  # anomalies score higher
    assert compute_auc(labels, perfect) == 1.0
    assert compute_auc(labels, [-v for v in perfect]) == 0.0


def test_extract_features_shapes_seeds_and_per_batch_reseeding():
    torch.manual_seed(0)
    model = AmplifyEncoder(width=8)
    a, b = ((torch.rand(3, 16, 16) * 255).to(torch.uint8) for _ in range(2))
    images = torch.stack([a, b, a, b])
    feats = extract_features(model, images, num_samples=3, batch_size=2)
    assert feats.projection.shape == (4, 4, 3, 128) and feats.shift_logits.shape == (4, 4, 3, 4)
    # the generator is reseeded with j for every batch: same position, same image -> same draws
    torch.testing.assert_close(feats.projection[0], feats.projection[2])
    torch.testing.assert_close(feats.shift_logits[1], feats.shift_logits[3])
    # different draws j differ
    assert not torch.allclose(feats.projection[0, 0, 0], feats.projection[0, 0, 1])
    again = extract_features(model, images, num_samples=3, batch_size=2)
    torch.testing.assert_close(again.projection, feats.projection)
    assert not model.training


def test_the_encoder_computes_under_the_callers_autocast_when_given_no_dtype():
    """Without a dtype of their own, training's forward and scoring leave an autocast the caller
    opened in force (as `dia.runtime.autocast_if` does for the DDPM and dissolving)."""
    from dia.amplify import amplify_forward
    from dia.augment import make_generator

    torch.manual_seed(0)
    model = AmplifyEncoder(width=8)
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    images = (torch.rand(2, 3, 16, 16) * 255).to(torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        extract_features(model, images, num_samples=1, batch_size=2)
        amplify_forward(model.train(), images.float() / 255, make_generator(0))
    extract_features(model, images, num_samples=1, batch_size=2)  # and none without it
    assert seen == [True, True, False]
