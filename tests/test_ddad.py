"""DDAD-ASR: score maps, AE-U normalisation, unlabeled set, patch pasting, a resumable smoke run."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dia.baselines import ddad
from dia.baselines.ddad import NotApplicable, build_ddad_data, train_ddad
from dia.baselines.ddad_models import (
    MemAE,
    RefineNet,
    build_backbone,
    draw_unlabeled,
    ensemble_maps,
    focal_loss,
    paste_patches,
    reconstruction_loss,
    score_maps,
    to_ddad_gray,
)
from dia.config import load_config
from dia.data.splits import DatasetSplits
from dia.metrics import compute_auc
from dia.results import RunError

# -- score maps -----------------------------------------------------------------------------------


def _const(values, shape=(2, 1, 4, 4)):
    return torch.stack([torch.full(shape, float(v)) for v in values])


def test_score_maps_hand_built():
    x = torch.zeros(2, 1, 4, 4)
    maps = score_maps(x, recs_a=_const([3, 3, 3]), recs_b=_const([0, 1, 2]))
    assert torch.allclose(maps.rec, torch.ones_like(x))  # (x - mu_B)^2 = (0 - 1)^2
    assert torch.allclose(maps.intra, torch.ones_like(x))  # unbiased std of {0,1,2} (biased: 0.816)
    assert torch.allclose(maps.inter, torch.full_like(x, 2.0))  # |3 - 1|
    scores = maps.image_scores()
    assert set(scores) == {"rec", "intra", "inter"} and scores["inter"].shape == (2,)
    # per image = mean over pixels
    recs_b = _const([0, 0, 0]).clone()
    recs_b[0, 1, 0, 0, 0] = 3.0  # one pixel of image 1 disagrees in one member
    maps = score_maps(x, recs_a=_const([0, 0, 0]), recs_b=recs_b)
    expected_std = float(torch.tensor([3.0, 0.0, 0.0]).std(unbiased=True))
    assert maps.image_scores()["intra"].tolist() == pytest.approx([0.0, expected_std / 16])
    assert maps.image_scores()["inter"].tolist() == pytest.approx([0.0, 1.0 / 16])


def test_aeu_normalisation_uses_the_ndm_variance_only():
    x = torch.zeros(2, 1, 4, 4)
    log_vars_b = torch.log(_const([2, 4, 6]))  # sigma^2 = mean exp(s) = 4, sigma = 2
    maps = score_maps(x, recs_a=_const([3, 3, 3]), recs_b=_const([0, 1, 2]), log_vars_b=log_vars_b)
    assert torch.allclose(maps.rec, torch.full_like(x, 1 / 4))  # (x - mu)^2 / sigma^2
    assert torch.allclose(maps.intra, torch.full_like(x, 1 / 2))  # sqrt(var_unbiased / sigma^2)
    assert torch.allclose(maps.inter, torch.full_like(x, 2 / 2))  # |mu_A - mu_B| / sigma

    class Fixed(nn.Module):  # an "AE-U" that outputs constants
        def __init__(self, rec, log_var):
            super().__init__()
            self.rec, self.log_var = rec, log_var

        def forward(self, inp):
            return {"rec": torch.full_like(inp, self.rec),
                    "log_var": torch.full_like(inp, self.log_var)}

    nets_b = [Fixed(v, float(np.log(s))) for v, s in ((0, 2), (1, 4), (2, 6))]
    for udm_log_var in (-5.0, 5.0):  # the UDM's variances are ignored
        nets_a = [Fixed(3, udm_log_var) for _ in range(3)]
        got = ensemble_maps(x, nets_a, nets_b)
        assert torch.allclose(got.inter, torch.ones_like(x))
        assert torch.allclose(got.intra, torch.full_like(x, 0.5))


def test_backbones_and_losses():
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    for name in ("ae", "aeu", "memae"):
        net = build_backbone(name, image_size=32)
        out = net(x)
        assert out["rec"].shape == x.shape
        assert ("log_var" in out) == (name == "aeu")
        assert torch.isfinite(reconstruction_loss(out, x))
    mem = MemAE(image_size=32)
    att = mem(x)["att"]
    assert att.shape == (4, 25) and torch.allclose(att.sum(1), torch.ones(4))
    assert mem.memory.abs().max() <= 0.25  # U(-1/sqrt(16), 1/sqrt(16))
    logits = RefineNet(2, width=8)(torch.rand(4, 2, 32, 32))
    assert logits.shape == (4, 2, 32, 32)
    target = torch.zeros(4, 1, 32, 32)
    confident = torch.cat([torch.full_like(target, 20.0), torch.full_like(target, -20.0)], dim=1)
    assert focal_loss(confident, target) < 1e-6 < focal_loss(-confident, target)


def test_to_ddad_gray_range_and_size():
    images = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)
    images[1] = 255
    gray = to_ddad_gray(images, 64)
    assert gray.shape == (2, 1, 64, 64)
    assert gray[0].max() == -1 and torch.allclose(gray[1], torch.ones(1, 64, 64))


# -- the unlabeled set ----------------------------------------------------------------------------


def _splits(num_train=50, pool_labels=(1,) * 40, key="toy"):
    g = torch.Generator().manual_seed(0)
    n_pool, n_test = len(pool_labels), 20
    return DatasetSplits(
        key=key, image_size=16,
        train=torch.randint(0, 256, (num_train, 3, 16, 16), generator=g, dtype=torch.uint8),
        train_ids=[f"train/{i}" for i in range(num_train)],
        test=torch.randint(0, 256, (n_test, 3, 16, 16), generator=g, dtype=torch.uint8),
        test_labels=torch.tensor([0, 1] * (n_test // 2)),
        test_ids=[f"test/{i}" for i in range(n_test)],
        pool=torch.randint(0, 256, (n_pool, 3, 16, 16), generator=g, dtype=torch.uint8),
        pool_labels=torch.tensor(pool_labels, dtype=torch.int64),
        pool_ids=[f"pool/{i}" for i in range(n_pool)],
    )


def _cfg(**overrides):
    base = {"ddad.image_size": 16}
    base.update(overrides)
    return load_config("smoke", dataset="synthetic", overrides=base)


def test_unlabeled_set_is_seeded_at_the_rate_and_disjoint_from_test():
    splits, cfg = _splits(), _cfg()
    a, b = build_ddad_data(splits, cfg), build_ddad_data(splits, cfg)
    assert a.unlabeled_ids == b.unlabeled_ids and torch.equal(a.known, b.known)
    other = build_ddad_data(splits, _cfg(**{"ddad.unlabeled_seed": 1}))
    assert other.unlabeled_ids != a.unlabeled_ids
    # no normals in the pool: held out of the training normals, size = |D_n| = 50 / 1.4 -> 35
    assert (a.split.num_anomalous, a.split.num_normal) == (21, 14)
    assert a.split.anomaly_rate == pytest.approx(0.6)
    assert a.known.shape[0] == 50 - 14 and a.unlabeled.shape[0] == 35
    assert not set(a.unlabeled_ids) & set(splits.test_ids)
    held = {i for i in a.unlabeled_ids if i.startswith("train/")}
    known = {splits.train_ids[i] for i in a.split.known.tolist()}
    assert len(held) == 14 and not held & known  # D_n and D_u never overlap (reference)
    assert sum(a.unlabeled_labels) == 21


def test_unlabeled_set_with_pool_normals_and_short_classes():
    labels = torch.tensor([0] * 30 + [1] * 100)
    split = draw_unlabeled(40, labels, anomaly_rate=0.6, seed=0)
    # braintumor-like: normals from the pool, D_n untouched, |D_u| = |D_n| = 40
    assert split.known.tolist() == list(range(40)) and split.unlabeled_train.numel() == 0
    assert (split.num_normal, split.num_anomalous) == (16, 24)
    assert set(labels[split.unlabeled_pool].tolist()) == {0, 1}
    # too few pool normals: the set shrinks so the rate holds (braintumor: 399 / 600, |D_n| 998)
    split = draw_unlabeled(998, torch.tensor([0] * 399 + [1] * 600), anomaly_rate=0.6)
    assert (split.num_normal, split.num_anomalous) == (399, 598)
    first = draw_unlabeled(40, labels, anomaly_rate=0.6, selection="first")
    assert first.unlabeled_pool.tolist() == list(range(16)) + list(range(30, 54))


def test_a_validation_image_in_the_unlabeled_pool_is_refused():
    from dataclasses import replace

    splits = _splits()
    build_ddad_data(splits, _cfg())  # fine while the validation split is apart
    # a loader bug: the pool's images are also the validation split (ids shared)
    leaky = replace(splits, val=splits.pool, val_labels=splits.pool_labels,
                    val_ids=list(splits.pool_ids))
    with pytest.raises(RunError, match="unlabeled images are also validation images"):
        build_ddad_data(leaky, _cfg())


def test_not_applicable_without_pool_anomalies():
    with pytest.raises(NotApplicable, match="not applicable"):
        build_ddad_data(_splits(pool_labels=()), _cfg())
    with pytest.raises(NotApplicable):
        build_ddad_data(_splits(pool_labels=(0,) * 10), _cfg())


# -- synthetic anomalies --------------------------------------------------------------------------


def test_paste_patches_changes_only_the_masked_square():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 64, 64).contiguous()
    out, mask = paste_patches(x, torch.Generator().manual_seed(0), clean_prob=0.0)
    for i in range(4):
        m = mask[i, 0].bool()
        assert m.any()
        rows, cols = m.any(1).nonzero().view(-1), m.any(0).nonzero().view(-1)
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a full rectangle
        side = max(rows.numel(), cols.numel())
        assert 6 <= side <= 24 and rows.numel() <= 24 and cols.numel() <= 24
        assert torch.equal(out[i, 0][~m], x[i, 0][~m])  # nothing outside the patch changes
        inside = out[i, 0][m]
        assert torch.allclose(inside, inside[0].expand_as(inside))  # one alpha per patch
    clean, clean_mask = paste_patches(x, torch.Generator().manual_seed(0), clean_prob=1.0)
    assert torch.equal(clean, x) and not clean_mask.any()
    _, mixed = paste_patches(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(1))
    fraction_clean = float((mixed.flatten(1).sum(1) == 0).float().mean())
    assert 0.35 < fraction_clean < 0.65


def test_paste_patches_blends_with_another_image():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 32, 32).contiguous()
    out, mask = paste_patches(x, torch.Generator().manual_seed(3), clean_prob=0.0)
    for i in range(4):
        value = out[i, 0][mask[i, 0].bool()][0]
        # (1 - a) * x_i + a * x_j with j != i: lies between x_i and some other image's value
        assert any(min(i, j) - 1e-6 <= value <= max(i, j) + 1e-6 for j in range(4) if j != i)


# -- end to end: train, kill, resume, score ------------------------------------------------------


class _Killed(Exception):
    pass


def _tiny_cfg():
    return load_config("smoke", dataset="synthetic", overrides={
        "ddad.image_size": 16, "ddad.epochs": 2, "ddad.refine_epochs": 1, "ddad.refine_width": 16,
        "ddad.num_models": 2, "data.max_train": 40, "data.max_test_per_class": 12,
    })


@pytest.fixture
def fast_bootstrap(monkeypatch):
    """The AUC interval with 50 resamples: the run's plumbing is under test here, not the CI."""
    import functools

    import dia.metrics

    monkeypatch.setattr(dia.metrics, "bootstrap_auc_ci",
                        functools.partial(dia.metrics.bootstrap_auc_ci, num_resamples=50))


def test_a_run_another_process_trains_is_waited_for_not_trained_twice(tmp_path, monkeypatch,
                                                                      finish_elsewhere):
    cfg = _tiny_cfg()
    run = ddad.open_ddad_run(cfg, results_root=tmp_path)
    waited = finish_elsewhere(run)
    monkeypatch.setattr(ddad, "train_backbone", lambda *a, **k: pytest.fail("trained"))
    assert train_ddad(cfg, results_root=tmp_path, device="cpu").path == run.path
    assert run.is_done() and waited()


@pytest.mark.slow
def test_smoke_run_resumes_after_a_kill(tmp_path, monkeypatch, fast_bootstrap):
    cfg = _tiny_cfg()
    # reference: one uninterrupted run
    ref = train_ddad(cfg, results_root=tmp_path / "ref", device="cpu")
    assert ref.is_done()

    real_save, calls = ddad.save_checkpoint, []

    def dying_save(path, state):
        real_save(path, state)
        calls.append(path.name)
        if len(calls) == 5:  # udm_0 x2, udm_1 x2, then ndm_0 epoch 1: killed
            raise _Killed

    monkeypatch.setattr(ddad, "save_checkpoint", dying_save)
    root = tmp_path / "killed"
    with pytest.raises(_Killed):
        train_ddad(cfg, results_root=root, device="cpu")
    run = ddad.open_ddad_run(cfg, results_root=root)
    assert not run.is_done()
    stale = run.checkpoint_dir / "udm_7.pt"  # a stale file must never join the ensemble
    stale.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(ddad, "save_checkpoint", real_save)
    run = train_ddad(cfg, results_root=root, device="cpu")
    assert run.is_done()

    log = [r for r in run.read_log() if "net" in r]
    pairs = [(r["net"], r["epoch"]) for r in log]
    assert len(pairs) == len(set(pairs))  # nothing retrained after the resume
    assert ("ndm_0", 2) in pairs and ("refine_dual", 1) in pairs and ("refine_intra", 1) in pairs
    assert json.loads((run.path / "ensemble.json").read_text())["udm"] == [
        "checkpoints/udm_0.pt", "checkpoints/udm_1.pt"]

    metrics = pd.read_csv(run.path / "metrics.csv")
    methods = ["DDAD-rec", "DDAD-intra", "DDAD-inter", "DDAD-ASR"]
    assert metrics["method"].tolist() == methods * 2  # the test split, then the validation split
    assert metrics["metric"].tolist() == ["auc"] * 4 + ["val_auc"] * 4
    assert metrics["value"].between(0, 1).all() and (metrics["image_size"] == 16).all()
    for prefix, metric in (("scores", "auc"), ("val_scores", "val_auc")):
        for kind in ("rec", "intra", "inter", "asr", "asr_intra"):
            scores = pd.read_csv(run.path / f"{prefix}_{kind}.csv", dtype={"sample_id": str})
            assert len(scores) == 24 and np.isfinite(scores["anomaly_score"]).all()
            # the resumed run computes exactly what the uninterrupted one did
            expected = pd.read_csv(ref.path / f"{prefix}_{kind}.csv")
            np.testing.assert_allclose(scores["anomaly_score"], expected["anomaly_score"],
                                       rtol=1e-5)
            if kind in ddad.METHOD_NAMES:  # asr_intra has no row (its AUC is in DONE)
                row = metrics[(metrics["metric"] == metric)
                              & (metrics["method"] == ddad.METHOD_NAMES[kind])]
                assert row["value"].item() == pytest.approx(
                    compute_auc(scores["label"], scores["anomaly_score"]), abs=1e-6)
        assert pd.read_csv(run.path / f"{prefix}.csv").equals(
            pd.read_csv(run.path / f"{prefix}_asr.csv"))
    done = json.loads((run.path / "DONE").read_text())
    assert {"DDAD-ASR", "DDAD-ASR-intra", "unlabeled_anomaly_rate"} <= set(done)
    assert set(done["val_auc"]) == {*ddad.METHOD_NAMES.values(), "DDAD-ASR-intra"}
    assert done["val"] == 24 and done["DDAD-ASR"] == metrics["value"].iloc[3]

    # a DONE run is skipped; the plots load exactly the recorded ensemble
    assert train_ddad(cfg, results_root=root, device="cpu").path == run.path
    fig = ddad.plot_examples(run, cfg, results_root=root, per_class=2)
    assert len(fig.axes) == 4 * 6
    assert len(ddad.plot_score_histograms(run).axes) == 5
    shown = ddad.read_metrics(run)
    assert shown[shown["metric"] == "auc"]["method"].tolist() == methods

    # a finished run damaged or copied without its checkpoints: each says to train it again
    retrain = f"delete the run folder {re.escape(str(run.path))} to train it again"
    (run.path / "scores_rec.csv").write_text("")
    with pytest.raises(RunError, match="scores_rec.csv cannot be read .*delete .*DONE"):
        ddad.plot_score_histograms(run)
    ensemble = run.path / "ensemble.json"
    ensemble.write_text(ensemble.read_text()[:10])
    with pytest.raises(RunError, match=f"ensemble.json cannot be read .*{retrain}"):
        ddad.load_ensemble(run, cfg)
    shutil.rmtree(run.checkpoint_dir)
    ensemble.write_text(json.dumps(ddad.ensemble_plan(cfg)))
    with pytest.raises(RunError, match=f"udm_0.pt is missing from the finished run .*{retrain}"):
        ddad.load_ensemble(run, cfg)


def test_not_applicable_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ddad, "prepare_data", lambda cfg, **kw: build_ddad_data(
        _splits(pool_labels=()), cfg))
    with pytest.raises(NotApplicable):
        train_ddad(_tiny_cfg(), results_root=tmp_path, device="cpu")
    assert not (tmp_path / "runs").exists()


def test_bad_config_is_refused_when_loaded():
    # with the config, before the plan's DDPM, DIA and CSI jobs run, not when DDAD's job starts
    from dia.config import ConfigError

    for bad in ({"ddad.image_size": 40}, {"ddad.num_models": 1}):
        with pytest.raises(ConfigError, match="ddad"):
            _cfg(**bad)


def test_a_one_class_test_set_is_refused_before_training(tmp_path, normals_only_test_set):
    from dia.metrics import MetricError

    normals_only_test_set()
    with pytest.raises(MetricError, match="test split of synthetic has .* 0 anomalous"):
        train_ddad(_cfg(), results_root=tmp_path, device="cpu")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_dataset_without_a_validation_split_scores_the_test_split_only(
        tmp_path, monkeypatch, fast_bootstrap):
    monkeypatch.setattr(ddad, "prepare_data", lambda cfg, **kw: build_ddad_data(_splits(), cfg))
    cfg = load_config("smoke", dataset="synthetic", overrides={
        "ddad.image_size": 16, "ddad.epochs": 1, "ddad.refine_epochs": 1, "ddad.refine_width": 16,
        "ddad.num_models": 2})
    run = train_ddad(cfg, results_root=tmp_path, device="cpu")
    metrics = pd.read_csv(run.path / "metrics.csv")
    assert metrics["metric"].tolist() == ["auc"] * 4
    assert not list(run.path.glob("val_scores*")) and len(list(run.path.glob("scores*"))) == 6
    done = json.loads((run.path / "DONE").read_text())
    assert "val_auc" not in done and done["val"] == 0 and done["test"] == 20


def test_a_diverged_net_is_not_checkpointed(tmp_path):
    run = ddad.open_ddad_run(_cfg(), results_root=tmp_path)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def nan_loss(idx, gen):
        return model.weight.sum() * float("nan")

    with pytest.raises(FloatingPointError, match=r"ddad A0 epoch 1 .*'loss': nan.* diverged"):
        ddad._fit(run, "A0", model, optimizer, epochs=2, num_items=4, batch_size=2,
                  loss_fn=nan_loss, device=torch.device("cpu"))
    assert not (run.checkpoint_dir / "A0.pt").exists()  # a resume starts afresh, not from NaN
