"""The DDPM dissolver: architecture, data preparation, training, checkpoints, kill and resume."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil

import pytest
import torch

from dia.config import ConfigError, DiffusionConfig, load_config, replace
from dia.diffusion import (
    CHECKPOINT, EMA, build_scheduler, build_unet, count_parameters, load_dissolver_model,
    open_diffusion_run, prepare_images, sample_train_t, train_diffusion,
)
from dia.dissolve import Dissolver
from dia.results import RunError
from dia.stages import stage_run_dir

# A width-8 U-Net (0.68 M parameters) overfitting 4 images: a step is about 0.1 s on one core.
TINY = {
    "data.max_train": 4,
    "diffusion.width": 8,
    "diffusion.batch_size": 4,
    "diffusion.lr": 5e-3,
    "diffusion.steps": 6,
    "diffusion.checkpoint_every": 2,
    "diffusion.log_every": 2,
    "diffusion.ema_update_after_step": 2,
    "diffusion.ema_every": 1,
}


def tiny_cfg(**extra):
    return load_config("smoke", dataset="synthetic", overrides={**TINY, **extra})


class Killed(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unet_layout_and_parameter_count():
    with torch.device("meta"):  # count without initialising 43 M weights
        unet = build_unet(DiffusionConfig(width=64))
        small = build_unet(DiffusionConfig(width=32))
    assert count_parameters(unet) == 42_858_179  # stated in build_unet's docstring
    assert unet.config.block_out_channels == (64, 128, 256, 512)
    assert unet.config.sample_size == 32 and unet.config.in_channels == 3
    assert unet.config.down_block_types[-1] == "AttnDownBlock2D"
    assert unet.config.up_block_types[0] == "AttnUpBlock2D"
    assert count_parameters(small) == 10_727_267
    with pytest.raises(ValueError, match="width"):
        build_unet(DiffusionConfig(width=12))


def test_scheduler_settings():
    s = build_scheduler()
    assert s.config.num_train_timesteps == 1000
    assert s.config.beta_schedule == "squaredcos_cap_v2"
    assert s.config.prediction_type == "epsilon" and s.config.clip_sample is False


def test_prepare_images_pad_resize_and_range():
    small = torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8)
    x = prepare_images(small)
    assert x.shape == (3, 3, 32, 32)
    assert (x[..., :2, :] == -1).all() and (x[..., -2:, :] == -1).all()  # zero pad at [0,1] scale
    torch.testing.assert_close(x[..., 2:30, 2:30], small.float() / 127.5 - 1)
    big = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    y = prepare_images(big, chunk=1)
    want = torch.nn.functional.interpolate(big.float() / 255, size=(32, 32), mode="bilinear",
                                           antialias=False) * 2 - 1
    torch.testing.assert_close(y, want)
    assert float(y.min()) >= -1 and float(y.max()) <= 1
    with pytest.raises(ValueError, match="uint8"):
        prepare_images(big.float())


def test_ema_copies_then_averages():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5, every=1, after=1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 1)  # step <= after: copy
    torch.testing.assert_close(ema.model.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model, 100)  # decay capped at 0.5: halfway
    torch.testing.assert_close(ema.model.weight, torch.full((2, 2), 2.0))


def test_train_loss_falls_checkpoints_and_skips_when_done(tmp_path):
    cfg = tiny_cfg(**{"diffusion.steps": 16, "diffusion.log_every": 8,
                      "diffusion.checkpoint_every": 8})
    run = train_diffusion(cfg, results_root=tmp_path, device="cpu")
    assert run.is_done() and run.path.parts[-4:-1] == ("diffusion", "synthetic", "ddpm")
    log = run.read_log()
    assert [r["step"] for r in log] == [8, 16]
    assert all(r["images_per_s"] > 0 for r in log)
    assert log[-1]["loss"] < 0.9 * log[0]["loss"], log  # overfits 4 images
    ckpt = torch.load(run.checkpoint_dir / CHECKPOINT, weights_only=True)
    assert ckpt["step"] == 16 and ckpt["dataset"] == "synthetic"
    assert set(ckpt) >= {"unet", "ema", "optimizer", "generator", "config", "batches"}
    assert ckpt["config"]["diffusion"]["lr"] == 5e-3
    assert not list(run.checkpoint_dir.glob(".*tmp"))  # atomic writes leave nothing behind
    # raw weights are what the dissolver loads, not the EMA
    unet, ac = load_dissolver_model(run, "cpu")
    for name, value in unet.state_dict().items():
        torch.testing.assert_close(value, ckpt["unet"][name])
    assert any(not torch.equal(ckpt["unet"][k], ckpt["ema"][k]) for k in ckpt["unet"])
    assert ac.shape == (1000,) and not any(p.requires_grad for p in unet.parameters())
    # DONE: a second call does nothing
    mtime = (run.path / "train_log.jsonl").stat().st_mtime_ns
    again = train_diffusion(cfg, results_root=tmp_path, device="cpu")
    assert again.path == run.path
    assert (run.path / "train_log.jsonl").stat().st_mtime_ns == mtime
    d = Dissolver.from_run(run, cfg.dissolve, "cpu")
    assert d(torch.rand(2, 3, 28, 28), 50).shape == (2, 3, 28, 28)
    assert d.autocast_dtype is None  # every profile dissolves in fp32 on the CPU
    bf16 = Dissolver.from_run(run, replace(cfg, {"dissolve.cpu_bf16": True}).dissolve, "cpu")
    assert bf16.autocast_dtype == torch.bfloat16


def test_cpu_bf16_trains_under_autocast_in_a_folder_of_its_own(tmp_path):
    fp32 = train_diffusion(tiny_cfg(), results_root=tmp_path, device="cpu")
    bf16 = train_diffusion(tiny_cfg(**{"diffusion.cpu_bf16": True}), results_root=tmp_path,
                           device="cpu")
    assert bf16.is_done() and bf16.path != fp32.path  # cpu_bf16 enters the hash once set
    a, b = fp32.read_log()[0]["loss"], bf16.read_log()[0]["loss"]
    assert a != b and b == pytest.approx(a, rel=0.05)  # bf16's rounding: autocast was on


def test_the_reference_layout_trains_and_dissolves(tmp_path):
    from dia.reference_unet import ReferenceUNet

    cfg = tiny_cfg(**{"diffusion.architecture": "reference", "diffusion.steps": 16,
                      "diffusion.log_every": 8, "diffusion.checkpoint_every": 8})
    run = train_diffusion(cfg, results_root=tmp_path, device="cpu")
    log = run.read_log()
    assert log[-1]["loss"] < 0.9 * log[0]["loss"], log
    assert run.path != stage_run_dir(tiny_cfg(**{"diffusion.steps": 16}), "diffusion", "ddpm",
                                     tmp_path)  # its own run id: the layout enters the hash
    unet, _ = load_dissolver_model(run, "cpu")
    assert isinstance(unet, ReferenceUNet)
    d = Dissolver.from_run(run, cfg.dissolve, "cpu")
    assert d(torch.rand(2, 3, 28, 28), 50).shape == (2, 3, 28, 28)


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = tiny_cfg()
    whole = train_diffusion(cfg, results_root=tmp_path / "a", device="cpu")

    def kill_after_5(step: int) -> None:
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train_diffusion(cfg, results_root=tmp_path / "b", device="cpu", on_step=kill_after_5)
    run = open_diffusion_run(cfg, tmp_path / "b")
    assert not run.is_done()
    assert torch.load(run.checkpoint_dir / CHECKPOINT, weights_only=True)["step"] == 4
    run.append_log({"step": 5, "loss": 9.9})  # a line written after the last checkpoint
    resumed = train_diffusion(cfg, results_root=tmp_path / "b", device="cpu")
    assert resumed.is_done()
    a, b = whole.read_log(), resumed.read_log()
    assert [r["step"] for r in b] == [2, 4, 6]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6), (a, b)
    ca = torch.load(whole.checkpoint_dir / CHECKPOINT, weights_only=True)
    cb = torch.load(resumed.checkpoint_dir / CHECKPOINT, weights_only=True)
    assert ca["step"] == cb["step"] == 6
    for name in ca["unet"]:
        torch.testing.assert_close(ca["unet"][name], cb["unet"][name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ca["ema"][name], cb["ema"][name], rtol=1e-4, atol=1e-5)


def test_a_run_killed_before_its_first_checkpoint_restarts_with_a_clean_log(tmp_path):
    cfg = tiny_cfg(**{"diffusion.checkpoint_every": 4})  # logs at 2, 4, 6; checkpoints at 4, 6

    def kill_after_3(step: int) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train_diffusion(cfg, results_root=tmp_path, device="cpu", on_step=kill_after_3)
    run = open_diffusion_run(cfg, tmp_path)
    assert not (run.checkpoint_dir / CHECKPOINT).exists() and [r["step"] for r in run.read_log()] == [2]
    assert [r["step"] for r in train_diffusion(cfg, results_root=tmp_path, device="cpu").read_log()] == [2, 4, 6]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    first = train_diffusion(tiny_cfg(**{"diffusion.steps": 2}), results_root=tmp_path,
                            device="cpu")
    other_cfg = tiny_cfg(**{"diffusion.steps": 2, "diffusion.lr": 1e-3})
    other = open_diffusion_run(other_cfg, tmp_path)
    assert other.path != first.path
    other.checkpoint_dir.mkdir()
    shutil.copy(first.checkpoint_dir / CHECKPOINT, other.checkpoint_dir / CHECKPOINT)
    with pytest.raises(RunError, match=r"written for another run \(differs in config.diffusion.lr: "
                                       r"0\.005 in the checkpoint, 0\.001 here\); delete the run "
                                       rf"folder {re.escape(str(other.path))}"):
        train_diffusion(other_cfg, results_root=tmp_path, device="cpu")


def test_a_finished_run_holding_another_runs_checkpoint_or_none_is_refused(tmp_path):
    first = train_diffusion(tiny_cfg(**{"diffusion.steps": 2}), results_root=tmp_path,
                            device="cpu")
    other = train_diffusion(tiny_cfg(**{"diffusion.steps": 2, "diffusion.lr": 1e-3}),
                            results_root=tmp_path, device="cpu")
    shutil.copy(first.checkpoint_dir / CHECKPOINT, other.checkpoint_dir / CHECKPOINT)
    with pytest.raises(RunError, match=rf"written by the DDPM run {first.hash}, not by the run "
                                       rf"{other.hash} .*delete the run folder"):
        load_dissolver_model(other, device="cpu")
    with pytest.raises(RunError, match=rf"not by the run {other.hash} "):  # its folder, by path
        load_dissolver_model(str(other.path), device="cpu")
    load_dissolver_model(other.checkpoint_dir / CHECKPOINT, device="cpu")  # a file: as it is
    for name in ("my_ddpm", f"{other.path.name}-old"):  # folders named by their user
        load_dissolver_model(shutil.copytree(other.path, tmp_path / name), device="cpu")
    (other.checkpoint_dir / CHECKPOINT).unlink()  # a folder copied without its checkpoints
    with pytest.raises(RunError, match="has no checkpoints/last.pt .*delete the run folder"):
        load_dissolver_model(other.path, device="cpu")


def test_a_checkpoint_cut_short_is_a_clear_error(tmp_path):
    cfg = tiny_cfg(**{"diffusion.steps": 2})
    run = train_diffusion(cfg, results_root=tmp_path, device="cpu")
    ckpt = run.checkpoint_dir / CHECKPOINT
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # say, a disk that filled up while copying
    with pytest.raises(RunError, match=rf"checkpoint {ckpt} cannot be read .*delete the run"):
        load_dissolver_model(run, device="cpu")
    state = torch.load(io.BytesIO(data), weights_only=True)
    del state["unet_kwargs"]  # whole, but a key deleted (edited by hand, another version's)
    torch.save(state, ckpt)
    with pytest.raises(RunError, match=rf"{ckpt} is not a whole DIA diffusion checkpoint \(no "
                                       r"unet_kwargs\): delete the run"):
        load_dissolver_model(run, device="cpu")
    ckpt.write_bytes(data[: len(data) // 2])
    run.file("DONE").unlink()  # the same file met by a resume
    with pytest.raises(RunError, match=rf"checkpoint {ckpt} cannot be read .*restart this run"):
        train_diffusion(cfg, results_root=tmp_path, device="cpu")


def test_bad_config_is_refused_before_writing(tmp_path):
    # checked by dia.config itself, before any stage: a width the norm groups cannot divide, counts
    with pytest.raises(ConfigError, match="diffusion.width = 12"):
        tiny_cfg(**{"diffusion.width": 12})
    with pytest.raises(ConfigError, match="log_every"):
        tiny_cfg(**{"diffusion.log_every": 0})
    cfg = tiny_cfg()  # a config made by hand, past the checks: the stage refuses it too
    cfg = dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, width=12))
    with pytest.raises(ValueError, match="width"):
        train_diffusion(cfg, results_root=tmp_path, device="cpu")
    assert not list(tmp_path.iterdir())


def test_missing_data_is_refused_before_writing(tmp_path):
    from dia.data import DataMissing

    cfg = load_config("smoke", dataset="pneumonia", overrides=TINY)
    with pytest.raises(DataMissing):
        train_diffusion(cfg, results_root=tmp_path / "results", data_root=tmp_path / "no_data",
                        device="cpu")
    assert not (tmp_path / "results" / "runs").exists()


def test_a_done_ddpm_is_skipped_without_reading_its_data(tmp_path, monkeypatch):
    cfg = tiny_cfg(**{"diffusion.steps": 2})
    run = train_diffusion(cfg, results_root=tmp_path, device="cpu")

    def no_data(*args, **kwargs):
        raise AssertionError("a DONE DDPM must not load its dataset")

    monkeypatch.setattr("dia.data.load_for_config", no_data)
    assert train_diffusion(cfg, results_root=tmp_path, device="cpu").path == run.path


def test_timestep_focus():
    draw = lambda focus: sample_train_t(  # noqa: E731
        4000, 1000, torch.Generator().manual_seed(0), "cpu", focus)
    reference = torch.randint(0, 1000, (4000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw((30, 100, 0.0)), reference)  # no focus: the reference's draws
    everything = draw((30, 100, 1.0))
    assert int(everything.min()) >= 30 and int(everything.max()) <= 99
    half = draw((30, 100, 0.5))
    share = float(((half >= 30) & (half < 100)).float().mean())
    assert 0.5 < share < 0.58  # 0.5 focused + 0.5 x 7 % of the uniform draws
    assert int(half.max()) > 500  # the rest still covers the whole schedule


def test_bad_timestep_focus_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"focus_fraction = 1.5; must lie in \[0, 1\]"):
        tiny_cfg(**{"diffusion.focus_fraction": 1.5})
    with pytest.raises(ConfigError, match="diffusion.focus_t_min = 30, diffusion.focus_t_max = "
                                          "2000; need diffusion.focus_t_min < "):
        tiny_cfg(**{"diffusion.focus_fraction": 0.5, "diffusion.focus_t_max": 2000})


def test_one_ddpm_per_dataset_whatever_the_run_seed(tmp_path):
    a = open_diffusion_run(load_config("smoke", dataset="synthetic", seed=3), tmp_path)
    b = open_diffusion_run(load_config("smoke", dataset="synthetic", seed=0), tmp_path)
    assert a.path == b.path and a.path.name.startswith("s0-")


def test_unfinished_run_is_refused_for_dissolving(tmp_path):
    run = open_diffusion_run(tiny_cfg(), tmp_path)
    with pytest.raises(RunError, match="notebooks/10_train_diffusion"):
        load_dissolver_model(run, "cpu")
    with pytest.raises(RunError, match="not finished"):
        Dissolver.from_run(run.path, tiny_cfg().dissolve, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_and_resumes_on_cuda(tmp_path):
    cfg = tiny_cfg(**{"diffusion.cuda_bf16": True})

    def kill_after_3(step: int) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train_diffusion(cfg, results_root=tmp_path, device="cuda", on_step=kill_after_3)
    run = train_diffusion(cfg, results_root=tmp_path, device="cuda")
    assert run.is_done() and [r["step"] for r in run.read_log()] == [2, 4, 6]
    unet, ac = load_dissolver_model(run, "cuda")
    assert next(unet.parameters()).device.type == "cuda" and ac.device.type == "cuda"


def test_the_gallery_before_the_ddpm_is_trained_says_so_and_creates_nothing(tmp_path):
    from dia.gallery import dissolving_gallery
    from dia.noise_check import check_ddpm

    for call in (lambda: dissolving_gallery(tiny_cfg(), results_root=tmp_path, device="cpu"),
                 lambda: check_ddpm(tiny_cfg(), results_root=tmp_path, device="cpu")):
        with pytest.raises(RunError, match="diffusion run .* does not exist|is not finished"):
            call()
    assert not (tmp_path / "runs").exists()  # no folder of a run that never ran


def test_a_loss_curve_of_a_damaged_log_is_refused_not_drawn(tmp_path):
    # a loss that is text would be drawn on a category axis, where it seems to rise
    from dia.gallery import plot_loss_curve
    from dia.stages import open_stage_run

    run = open_stage_run(tiny_cfg(), "diffusion", "ddpm", tmp_path)
    for step in (10, 20):
        run.append_log({"step": step, "loss": 1.0 / step, "images_per_s": 50.0})
    assert plot_loss_curve(run).is_file()
    log = run.path / "train_log.jsonl"
    whole = log.read_text()
    for damaged in (whole.replace('"loss": 0.05', '"loss": "abc"'),
                    whole.replace('"step": 20', '"stop": 20')):
        log.write_text(damaged)
        with pytest.raises(RunError, match=rf"{re.escape(str(log))} has a record without a step "
                                           r"and a loss that are finite numbers"):
            plot_loss_curve(run)
