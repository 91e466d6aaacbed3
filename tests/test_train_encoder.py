"""Smoke runs of the amplify and evaluate stages on CPU: train, resume, refuse, score."""

from __future__ import annotations

import copy
import json
import re
import shutil

import pandas as pd
import pytest
import torch

from dia.config import load_config
from dia.evaluate import evaluate_amplifier
from dia.results import RunError
from dia.scoring import csi_normality_score
from dia.stages import open_stage_run, stage_run_dir
from dia.train_encoder import (CHECKPOINT, encoder_precision, load_encoder, require_full_log,
                               train_amplifier)

TINY = {
    "data.max_train": 8, "data.max_test_per_class": 4,
    "diffusion.width": 8, "diffusion.steps": 2, "diffusion.batch_size": 4,
    "diffusion.checkpoint_every": 2, "diffusion.log_every": 1,
    "amplify.epochs": 2, "amplify.batch_size": 4, "amplify.max_iters_per_epoch": 1,
    "amplify.warmup_epochs": 1, "amplify.encoder_width": 8,
    "score.num_samples": 2, "score.batch_size": 8, "score.train_batch_size": 8,
}


def _cfg(**extra):
    return load_config("smoke", dataset="synthetic", seed=0, overrides={**TINY, **extra})


@pytest.fixture(autouse=True)
def _short_bootstrap(monkeypatch):
    """The AUC interval is dia.metrics' business; 50 resamples keep these CPU tests short."""
    import dia.metrics

    original = dia.metrics.bootstrap_auc_ci
    monkeypatch.setattr(dia.metrics, "bootstrap_auc_ci",
                        lambda *a, **k: original(*a, **{**k, "num_resamples": 50}))


class Killed(RuntimeError):
    pass


def _kill_after(epoch_to_die: int):
    def on_epoch(epoch: int) -> None:
        if epoch == epoch_to_die:
            raise Killed(f"simulated kill after epoch {epoch}")
    return on_epoch


@pytest.mark.parametrize("method", ["csi", "dia"])
def test_train_resume_and_score(method, tmp_path, monkeypatch, finish_elsewhere):
    cfg = _cfg()
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    with pytest.raises(RunError, match="train the"):
        evaluate_amplifier(cfg, method, results_root=killed_root, device="cpu")
    with pytest.raises(Killed):
        train_amplifier(cfg, method, results_root=killed_root, device="cpu",
                        on_epoch=_kill_after(1))
    run_path = stage_run_dir(cfg, "amplify", method, killed_root)
    assert (run_path / "checkpoints" / CHECKPOINT).is_file() and not (run_path / "DONE").exists()
    with pytest.raises(RunError, match="not finished"):
        evaluate_amplifier(cfg, method, results_root=killed_root, device="cpu")
    assert not (killed_root / "runs" / "evaluate").exists()  # refused before writing anything

    run = train_amplifier(cfg, method, results_root=killed_root, device="cpu")
    assert run.is_done()
    log = run.read_log()
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"loss", "loss_contrastive", "loss_shift", "lr", "images_per_s"} <= set(log[0])
    # resuming gives exactly the uninterrupted run (data order and draws seeded per epoch)
    clean_cfg = cfg
    if method == "dia":  # share the trained DDPM; the uninterrupted run uses the dissolve cache
        shutil.copytree(killed_root / "runs" / "diffusion", clean_root / "runs" / "diffusion")
        clean_cfg = _cfg(**{"amplify.dissolve_cache_gib": 0.01})
    clean = train_amplifier(clean_cfg, method, results_root=clean_root, device="cpu")
    a = torch.load(run.checkpoint_dir / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(clean.checkpoint_dir / CHECKPOINT, weights_only=True)["model"]
    if method == "csi":
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:  # the cache is exact up to the U-Net's float reordering across batch sizes
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
        assert "dissolve_cache_hit_rate" in clean.read_log()[-1]
    assert train_amplifier(cfg, method, results_root=killed_root, device="cpu").path == run.path

    # the score's two terms are scored as the score is: stand-ins equal to s(x) and −s(x) must
    # give the AUC and 1 − AUC on each split (the terms themselves: tests/test_scoring.py)
    def stand_in_terms(stats, feats):
        s = csi_normality_score(stats, feats)
        return {"contrast": s, "shift": -s}

    monkeypatch.setattr("dia.evaluate.csi_score_terms", stand_in_terms)
    ev = evaluate_amplifier(cfg, method, results_root=killed_root, device="cpu")
    assert ev.is_done()
    scores = pd.read_csv(ev.path / "scores.csv")
    assert len(scores) == 8 and set(scores["label"]) == {0, 1}
    assert scores["anomaly_score"].notna().all()
    metrics = pd.read_csv(ev.path / "metrics.csv")
    assert metrics.loc[0, "metric"] == "auc" and 0.0 <= metrics.loc[0, "value"] <= 1.0
    # the synthetic set's validation split is scored beside the test split, never mixed with it
    assert list(metrics["metric"]) == ["auc", "val_auc", "auc_contrast", "auc_shift",
                                       "val_auc_contrast", "val_auc_shift"]
    value = metrics.set_index("metric")["value"]
    for split in ("auc", "val_auc"):
        assert value[f"{split}_contrast"] == value[split]
        assert value[f"{split}_shift"] == pytest.approx(1 - value[split], abs=1e-6)
    val = pd.read_csv(ev.path / "val_scores.csv")
    assert len(val) == 8 and set(val["label"]) == {0, 1}
    assert val["sample_id"].str.startswith("val_").all()
    assert not set(val["sample_id"]) & set(scores["sample_id"])
    done = json.loads((ev.path / "DONE").read_text())
    assert done["auc"] == metrics.loc[0, "value"] and done["val_auc"] == metrics.loc[1, "value"]
    # another process scoring the same run: wait for it, do not score again
    (ev.path / "DONE").unlink()
    waited = finish_elsewhere(ev)
    monkeypatch.setattr("dia.evaluate.extract_features", lambda *a, **k: pytest.fail("scored"))
    assert evaluate_amplifier(cfg, method, results_root=killed_root, device="cpu").is_done()
    assert waited()


@pytest.mark.parametrize("replay", [False, True])
def test_replayed_epoch_draws_repeat_epoch_2s_order_and_draws(replay, tmp_path, monkeypatch):
    """amplify.replay_epoch_draws: the reference's README protocol reseeds every RNG after each
    epoch, so epochs 2, 3, ... repeat one set of draws; by default each epoch draws afresh."""
    import dia.train_encoder

    seen = []
    original = dia.train_encoder._run_epoch

    def spy(model, optimizer, train, order, gen, lrs, **kwargs):
        seen.append(order.tolist() + gen.get_state().tolist())  # the order, the draws' seed
        return original(model, optimizer, train, order, gen, lrs, **kwargs)

    monkeypatch.setattr(dia.train_encoder, "_run_epoch", spy)
    cfg = _cfg(**{"amplify.epochs": 3, "amplify.replay_epoch_draws": replay})
    train_amplifier(cfg, "csi", results_root=tmp_path, device="cpu")
    first, second, third = seen
    assert first != second
    assert (second == third) is replay


def test_a_train_log_edited_after_the_run_names_itself_and_what_to_do(tmp_path):
    """The notebook reads the log of a finished run: a record lost or damaged since cannot be
    written again by resuming (the checkpoint is the last epoch's), so it says to retrain."""
    cfg = _cfg(**{"amplify.epochs": 3})
    run = open_stage_run(cfg, "amplify", "csi", tmp_path)
    with pytest.raises(RunError, match="not finished"):
        require_full_log(run, cfg)
    for epoch in (1, 2, 3):
        run.append_log({"epoch": epoch, "loss": 1.0 / epoch, "lr": 0.1})
    run.mark_done()
    assert [r["epoch"] for r in require_full_log(run, cfg)] == [1, 2, 3]
    log = run.path / "train_log.jsonl"
    whole = log.read_text()
    for damaged, says in ((whole.rsplit("{", 1)[0], "holds epochs 1-2:"),  # last line deleted
                          (whole.replace('"loss": 0.5', '"loss": NaN'), "not a number"),
                          (whole.replace('"lr": 0.1', '"lr": "abc"', 1), "not a number"),
                          (whole.replace('"loss": 0.5, ', ""), "not a number"),
                          ("", "holds epochs none")):
        log.write_text(damaged)
        with pytest.raises(RunError, match=rf"{re.escape(str(log))} should hold one record .*"
                                           rf"3 epochs.*{says}.*delete the run folder"):
            require_full_log(run, cfg)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    cfg = _cfg()
    with pytest.raises(Killed):
        train_amplifier(cfg, "csi", results_root=tmp_path, device="cpu", on_epoch=_kill_after(1))
    ckpt_path = stage_run_dir(cfg, "amplify", "csi", tmp_path) / "checkpoints" / CHECKPOINT
    original = torch.load(ckpt_path, weights_only=True)
    run = open_stage_run(cfg, "amplify", "csi", tmp_path)
    load_encoder(run, cfg, "csi")  # its own checkpoint loads
    changes = {  # what differs: how the checkpoint is changed
        "dataset": lambda c: c.update(dataset="pneumonia"),
        "method": lambda c: c.update(method="dia"),
        "seed": lambda c: c.update(seed=1),
        "config.amplify": lambda c: c["config"]["amplify"].update(lr=0.5),
    }
    for differs, change in changes.items():
        ckpt = copy.deepcopy(original)
        change(ckpt)
        torch.save(ckpt, ckpt_path)
        refusal = rf"written for another run \(differs in {differs}\b.*delete the run folder"
        with pytest.raises(RunError, match=refusal):  # resuming
            train_amplifier(cfg, "csi", results_root=tmp_path, device="cpu")
        with pytest.raises(RunError, match=refusal):  # scoring
            load_encoder(run, cfg, "csi")
    # each difference with the checkpoint's value beside this run's
    ckpt = copy.deepcopy(original)
    ckpt.update(seed=1)
    ckpt["config"]["amplify"].update(lr=0.5)
    torch.save(ckpt, ckpt_path)
    says = (r"differs in seed: 1 in the checkpoint, 0 here; config.amplify.lr: 0.5 in the "
            rf"checkpoint, {cfg.amplify.lr} here\)")
    with pytest.raises(RunError, match=says):
        load_encoder(run, cfg, "csi")
    # files that are no encoder checkpoint of this code: refused by name, not a deep traceback
    without_model = {k: v for k, v in original.items() if k != "model"}
    for other, says in ((torch.zeros(3), "holds a Tensor, not a dict"),
                        ({**original, "format": "x"}, "format 'x', expected"),
                        (without_model, "not a whole DIA/CSI encoder checkpoint \\(no model\\)"),
                        ({**original, "config": [1]},
                         "differs in config: a list in the checkpoint, not a mapping\\)")):
        torch.save(other, ckpt_path)
        for call in (lambda: train_amplifier(cfg, "csi", results_root=tmp_path, device="cpu"),
                     lambda: load_encoder(run, cfg, "csi")):
            with pytest.raises(RunError, match=f"{says}.*delete the run folder"):
                call()
    # a finished run folder copied without its checkpoints: scoring says what to do
    ckpt_path.unlink()
    run.mark_done()
    with pytest.raises(RunError, match="has no checkpoint last.pt .*delete the run folder"):
        load_encoder(run, cfg, "csi")


def test_a_one_class_test_set_is_refused_before_training_or_scoring(
        tmp_path, monkeypatch, normals_only_test_set):
    cfg = _cfg()
    train_amplifier(cfg, "csi", results_root=tmp_path, device="cpu")
    normals_only_test_set()
    monkeypatch.setattr("dia.evaluate.extract_features", lambda *a, **k: pytest.fail("scored"))
    one_class = r"test split of synthetic has 4 normal and 0 anomalous images .*needs both classes"
    with pytest.raises(ValueError, match=one_class):
        evaluate_amplifier(cfg, "csi", results_root=tmp_path, device="cpu")
    assert not (tmp_path / "runs" / "evaluate").exists()  # no half-written run folder
    with pytest.raises(ValueError, match=one_class):  # nor hours of training first
        train_amplifier(cfg, "dia", results_root=tmp_path, device="cpu")
    assert not (tmp_path / "runs" / "amplify" / "synthetic" / "dia").exists()


def test_a_training_split_without_normals_is_refused_before_training_or_scoring(
        tmp_path, monkeypatch):
    import dataclasses

    import dia.data
    from dia.data import DataError

    cfg = _cfg()
    train_amplifier(cfg, "csi", results_root=tmp_path, device="cpu")
    load = dia.data.load_for_config
    monkeypatch.setattr(dia.data, "load_for_config", lambda *a, **k: dataclasses.replace(
        load(*a, **k), train=torch.empty(0, 3, 32, 32, dtype=torch.uint8), train_ids=[]))
    says = r"training split of synthetic has no normal images, needed for {}; .*dia data check"
    with pytest.raises(DataError, match=says.format("the CSI score's statistics")):
        evaluate_amplifier(cfg, "csi", results_root=tmp_path, device="cpu")
    assert not (tmp_path / "runs" / "evaluate").exists()  # no half-written run folder
    with pytest.raises(DataError, match=says.format("training the encoder")):
        train_amplifier(cfg, "dia", results_root=tmp_path, device="cpu")
    assert not (tmp_path / "runs" / "amplify" / "synthetic" / "dia").exists()


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one of dia, csi"):
        train_amplifier(_cfg(), "simclr", results_root=tmp_path)
    assert not (tmp_path / "runs").exists()


def _epoch_reads(iterations: int, device: str, monkeypatch) -> int:
    """Host reads (CPU: `DeviceTraffic`; CUDA: synchronising calls) of one DIA epoch."""
    import warnings

    import numpy as np
    from tqdm import tqdm

    from dia import hostsync, runtime, train_encoder
    from dia.amplify import DissolveTable
    from dia.diffusion import build_scheduler, build_unet
    from dia.dissolve import Dissolver
    from dia.encoder import AmplifyEncoder
    from dia.optim import LARS

    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)  # the GPU's path
    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = _cfg()
    model = AmplifyEncoder(width=8).to(dev)
    optimizer = LARS(model.parameters())
    train = torch.randint(0, 256, (4 * iterations, 3, 28, 28), dtype=torch.uint8, device=dev)
    unet = build_unet(cfg.diffusion).to(dev)
    table = DissolveTable(Dissolver(unet, build_scheduler().alphas_cumprod), train, 30, 33,
                          progress=False)
    order = torch.randperm(train.shape[0])
    kwargs = dict(batch=4, device=dev, bar=tqdm(disable=True), epoch=1, dissolve=table,
                  t_min=30, t_max=33)
    lrs = np.full(iterations, 0.1)
    gen = torch.Generator(dev).manual_seed(0)
    train_encoder._run_epoch(model, optimizer, train, order, gen, lrs, **kwargs)  # warm-up
    if dev.type == "cpu":
        with hostsync.DeviceTraffic() as traffic:
            train_encoder._run_epoch(model, optimizer, train, order, gen, lrs, **kwargs)
        return traffic.host_reads
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_encoder._run_epoch(model, optimizer, train, order, gen, lrs, **kwargs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA")]),
])
def test_a_dia_iteration_reads_nothing_back_from_the_device(device, monkeypatch):
    """The reads of an epoch do not grow with its iterations: the loss sums and the progress
    bar are read at its end, the host never waits for the device inside the loop."""
    short, long = _epoch_reads(2, device, monkeypatch), _epoch_reads(6, device, monkeypatch)
    # per epoch: the loss terms and the bar's loss; on CUDA also the copy of the epoch's order
    assert short == long and long <= 8, (short, long)


def test_the_table_is_used_on_a_gpu_when_it_fits_and_the_images_go_there_when_they_fit():
    from dia.amplify import DissolveTable
    from dia.train_encoder import images_where_trained, use_dissolve_table

    train = torch.zeros(10, 3, 28, 28, dtype=torch.uint8)
    size = DissolveTable.nbytes(train, 30, 100)
    assert size == 10 * 2 * 70 * 3 * 28 * 28 * 4
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_dissolve_table(train, cuda, 30, 100, size)
    assert not use_dissolve_table(train, cuda, 30, 100, size - 1)
    assert not use_dissolve_table(train, cpu, 30, 100, 10 * size)  # the CPU fills a cache lazily
    assert images_where_trained(train, cpu) is train
    assert images_where_trained(train, cuda, max_bytes=train.numel() - 1) is train  # stays here
    with pytest.raises(TypeError, match="uint8"):
        DissolveTable(lambda x, t: x, train.float(), 30, 31, progress=False)


def test_a_table_that_does_not_fit_in_gpu_memory_falls_back_to_the_lazy_cache(monkeypatch):
    from dia import train_encoder

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(train_encoder, "DissolveTable", out_of_memory)
    train = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)
    with pytest.warns(UserWarning, match="dissolving lazily"):
        assert train_encoder._build_table(lambda x, t: x, train, 30, 32) is None


def test_a_diverged_run_is_neither_checkpointed_nor_done(tmp_path, monkeypatch):
    import dia.train_encoder

    real = dia.train_encoder._run_epoch

    def diverging(*args, **kwargs):
        last, lr = real(*args, **kwargs)
        return {**last, "loss": float("nan")}, lr

    monkeypatch.setattr(dia.train_encoder, "_run_epoch", diverging)
    with pytest.raises(FloatingPointError, match="epoch 1 .* diverged"):
        train_amplifier(_cfg(), "csi", results_root=tmp_path, device="cpu")
    run_dir = stage_run_dir(_cfg(), "amplify", "csi", tmp_path)
    assert not (run_dir / "DONE").exists()
    assert not (run_dir / "checkpoints" / CHECKPOINT).exists()


def test_encoder_precision_per_device_and_switch():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert encoder_precision("fp32", cpu) == (None, True)  # every profile: fp32, channels_last
    assert encoder_precision("bf16", cpu) == (None, True)  # `precision` is CUDA's switch
    assert encoder_precision("fp32", cpu, cpu_bf16=True) == (torch.bfloat16, True)
    assert encoder_precision("fp32", cuda) == (None, False)
    assert encoder_precision("bf16", cuda) == (torch.bfloat16, True)
    assert encoder_precision("fp32", cuda, cpu_bf16=True) == (None, False)


def test_cpu_bf16_trains_and_scores_the_encoder_under_autocast_in_folders_of_their_own(
        tmp_path, monkeypatch):
    import dia.evaluate

    fp32, bf16 = _cfg(), _cfg(**{"amplify.cpu_bf16": True})
    a = train_amplifier(fp32, "csi", results_root=tmp_path, device="cpu")
    b = train_amplifier(bf16, "csi", results_root=tmp_path, device="cpu")
    assert b.is_done() and b.path != a.path  # cpu_bf16 enters the hash once set
    loss_a, loss_b = a.read_log()[0]["loss"], b.read_log()[0]["loss"]
    assert loss_a != loss_b and loss_b == pytest.approx(loss_a, rel=0.05)  # bf16's rounding
    dtypes = []
    real = dia.evaluate.extract_features

    def spy(*args, **kwargs):
        dtypes.append(kwargs["autocast_dtype"])
        return real(*args, **kwargs)

    monkeypatch.setattr(dia.evaluate, "extract_features", spy)
    ev_a = evaluate_amplifier(fp32, "csi", results_root=tmp_path, device="cpu")
    ev_b = evaluate_amplifier(bf16, "csi", results_root=tmp_path, device="cpu")
    assert ev_b.is_done() and ev_b.path != ev_a.path
    assert json.loads((ev_b.path / "DONE").read_text())["amplify_run"] == b.run_id
    assert set(dtypes[: len(dtypes) // 2]) == {None}
    assert set(dtypes[len(dtypes) // 2:]) == {torch.bfloat16}
