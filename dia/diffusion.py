"""The dissolver's DDPM: a diffusers U-Net trained on the normal training images at 32².

Reference (`reference/algorithms.md` A1): lucidrains ``Unet(dim=64, dim_mults=(1, 2, 4, 8))``
(36.25 M parameters) in ``GaussianDiffusion`` with 1000 cosine-schedule steps, ε-prediction,
L1 loss, Adam lr 8e-5 betas (0.9, 0.99), gradient clipping at 1.0, EMA 0.995 every 10 steps,
fp32, random horizontal flip, images scaled to [−1, 1]; 224² datasets bilinearly resized to 32²
(no antialias), 28² MedMNIST zero-padded by 2. The dissolver uses the *raw* (non-EMA) weights.

Ours: ``diffusers.UNet2DModel`` with the same widths, one ResNet block per level, GroupNorm(8)
as in the reference, attention at the 4² level and in the middle block, and
``DDPMScheduler(1000, "squaredcos_cap_v2")``, whose ᾱₜ equals the reference's cosine schedule.
``diffusion.architecture: reference`` trains the reference's own layout instead
(`dia.reference_unet`). Training length and width are profile settings (`DiffusionConfig`).

Run folder: ``runs/diffusion/<dataset>/ddpm/s<seed>-<hash>/`` with ``checkpoints/last.pt``
(raw + EMA weights, optimiser, step, RNG state, config sections, dataset key), one
``train_log.jsonl`` line per `log_every` steps, and ``DONE`` written last.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dia.checkpoints import read_checkpoint, require_checkpoint_of, save_checkpoint
from dia.config import NUM_TIMESTEPS, UNET_NORM_GROUPS, DiffusionConfig, ExperimentConfig, to_dict
from dia.results import Run, RunError, parse_run_name, restart_advice, retrain_advice
from dia.runtime import autocast_if
from dia.stages import stage_sections

log = logging.getLogger(__name__)

STAGE, METHOD = "diffusion", "ddpm"
SECTIONS = stage_sections(STAGE, METHOD)  # what the checkpoint records of the config
RESOLUTION = 32
NUM_TRAIN_TIMESTEPS = NUM_TIMESTEPS
CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT = "dia-ddpm-v1"
NORM_GROUPS = UNET_NORM_GROUPS  # reference: resnet_block_groups=8
ATTENTION_HEAD_DIM = 32  # reference: 4 heads x 32 dims


# -- model and schedule ------------------------------------------------------------------------


def unet_kwargs(diffusion_cfg: DiffusionConfig) -> dict[str, Any]:
    """The U-Net's constructor arguments for a config (also stored in checkpoints): those of
    ``UNet2DModel``, or with ``architecture: "reference"`` those of `ReferenceUNet`."""
    width = diffusion_cfg.width
    if width < NORM_GROUPS or width % NORM_GROUPS:
        raise ValueError(f"diffusion.width={width}: must be a positive multiple of {NORM_GROUPS}")
    if diffusion_cfg.architecture == "reference":
        return dict(architecture="reference", dim=width, dim_mults=(1, 2, 4, 8),
                    resnet_block_groups=NORM_GROUPS)
    return dict(
        sample_size=RESOLUTION,
        in_channels=3,
        out_channels=3,
        layers_per_block=diffusion_cfg.layers_per_block,
        block_out_channels=tuple(width * m for m in (1, 2, 4, 8)),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=NORM_GROUPS,
        attention_head_dim=min(ATTENTION_HEAD_DIM, width),
    )


def build_unet(diffusion_cfg: DiffusionConfig) -> torch.nn.Module:
    """The ε-prediction U-Net at 32², 3 channels, widths ``width × (1, 2, 4, 8)``.

    Levels 32² → 16² → 8² → 4², attention at 4² (down and up) and in the middle block.
    Parameter counts (measured): width 64 with 1 layer per block 42.86 M (the reference's
    lucidrains U-Net has 36.25 M; 2 layers per block would give 61.83 M, so 1 is closest);
    width 32: 10.73 M; width 16: 2.69 M; width 8: 0.68 M. With ``architecture: reference``
    the reference's layout (`dia.reference_unet`): 36.25 M at width 64, 9.33 M at 32.
    """
    return unet_from_kwargs(unet_kwargs(diffusion_cfg))


def unet_from_kwargs(kwargs: dict[str, Any]) -> torch.nn.Module:
    """The U-Net `unet_kwargs` describes (checkpoints without ``architecture`` are diffusers')."""
    kwargs = dict(kwargs)
    if kwargs.pop("architecture", "diffusers") == "reference":
        from dia.reference_unet import ReferenceUNet

        return ReferenceUNet(**kwargs)
    from diffusers import UNet2DModel

    return UNet2DModel(**kwargs)


def build_scheduler():
    """``DDPMScheduler(1000, "squaredcos_cap_v2", "epsilon", clip_sample=False)``.

    Its ``alphas_cumprod`` is the reference's cosine schedule (s = 0.008, β ≤ 0.999):
    ᾱ₁₀₀ = 0.97158, ᾱ₂₀₀ = 0.89776, ᾱ₄₀₀ = 0.64599.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=False,
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- data --------------------------------------------------------------------------------------


def prepare_images(
    images: torch.Tensor, *, resolution: int = RESOLUTION, device: torch.device | str = "cpu",
    chunk: int = 512,
) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float32 (N, 3, 32, 32) in [−1, 1] on `device`.

    28² (MedMNIST, synthetic) is zero-padded by 2 *before* scaling, as the reference pads the
    [0, 1] tensor; other sizes are resized bilinearly without antialias.
    """
    from dia.dissolve import to_resolution

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"training images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("the training split holds no normal images")
    out = torch.empty(images.shape[0], 3, resolution, resolution, device=device)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].to(device).float() / 255.0
        x, _ = to_resolution(x, resolution)
        out[start:start + x.shape[0]] = x * 2.0 - 1.0
    return out


# -- training pieces ---------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a model's weights, kept beside the raw weights.

    As ema_pytorch in the reference trainer: updated every `every` optimiser steps; until
    `after` steps it copies the raw weights; then decay = min(`decay`, 1 − (1 + k)^(−2/3)),
    with k the steps since `after`.
    """

    def __init__(self, model: torch.nn.Module, decay: float, every: int, after: int) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.every, self.after = decay, every, after

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        if self.every <= 0 or step % self.every:
            return
        src = list(model.state_dict().values())
        dst = list(self.model.state_dict().values())
        if step <= self.after:
            for d, s in zip(dst, src):
                d.copy_(s)
            return
        decay = min(self.decay, 1.0 - (1.0 + step - self.after) ** (-2.0 / 3.0))
        floats = [(d, s) for d, s in zip(dst, src) if d.is_floating_point()]
        torch._foreach_lerp_([d for d, _ in floats], [s for _, s in floats], 1.0 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def sample_train_t(
    num: int, num_steps: int, generator: torch.Generator, device: torch.device | str,
    focus: tuple[int, int, float] = (0, 0, 0.0),
) -> torch.Tensor:
    """Training timesteps t ~ U{0..num_steps−1}, one per sample.

    With ``focus = (lo, hi, p)`` and p > 0, each sample instead draws from U{lo..hi−1} with
    probability p. With p = 0 the draws are exactly the reference's (no extra random numbers).
    """
    t = torch.randint(0, num_steps, (num,), generator=generator, device=device)
    lo, hi, p = focus
    if p > 0:
        inside = torch.rand(num, generator=generator, device=device) < p
        t_focus = torch.randint(lo, hi, (num,), generator=generator, device=device)
        t = torch.where(inside, t_focus, t)
    return t


def focus_of(diffusion_cfg: DiffusionConfig) -> tuple[int, int, float]:
    return diffusion_cfg.focus_t_min, diffusion_cfg.focus_t_max, diffusion_cfg.focus_fraction


def describe_focus(fraction: float, t_min: int, t_max: int) -> str:
    """Where a DDPM's training t come from, for labels: "50% of t from 30-99"."""
    if not fraction:
        return f"t ~ U{{0..{NUM_TRAIN_TIMESTEPS - 1}}}"
    return f"{fraction:.0%} of t from {t_min}-{t_max - 1}"


def ddpm_loss(
    unet: torch.nn.Module, x0: torch.Tensor, alphas_cumprod: torch.Tensor,
    generator: torch.Generator, autocast_dtype: torch.dtype | None = None,
    focus: tuple[int, int, float] = (0, 0, 0.0),
) -> torch.Tensor:
    """L1 between the true and predicted noise at t ~ `sample_train_t` (x0 in [−1, 1])."""
    b = x0.shape[0]
    t = sample_train_t(b, alphas_cumprod.shape[0], generator, x0.device, focus)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
    with autocast_if(x0.device.type, autocast_dtype):
        eps = unet(x_t, t).sample
    return F.l1_loss(eps.float(), noise)


def training_step(
    unet: torch.nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor,
    alphas_cumprod: torch.Tensor, generator: torch.Generator, *, grad_clip: float = 1.0,
    autocast_dtype: torch.dtype | None = None, focus: tuple[int, int, float] = (0, 0, 0.0),
) -> torch.Tensor:
    """One optimiser step on x0 ∈ [−1, 1] (flip, noise, L1, clip, Adam); returns the loss."""
    x0 = random_hflip(x0, generator)
    loss = ddpm_loss(unet, x0, alphas_cumprod, generator, autocast_dtype, focus)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(unet.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


def make_optimizer(unet: torch.nn.Module, diffusion_cfg: DiffusionConfig) -> torch.optim.Adam:
    return torch.optim.Adam(unet.parameters(), lr=diffusion_cfg.lr, betas=(0.9, 0.99))


class _Batches:
    """Shuffled passes over N indices (without replacement within a pass), resumable."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator
        self.perm = torch.empty(0, dtype=torch.long)
        self.cursor = 0

    def next(self, batch: int) -> torch.Tensor:
        parts, need = [], batch
        while need:
            if self.cursor >= self.perm.numel():
                self.perm = torch.randperm(self.n, generator=self.generator,
                                           device=self.generator.device).cpu()
                self.cursor = 0
            take = self.perm[self.cursor:self.cursor + need]
            self.cursor += take.numel()
            need -= take.numel()
            parts.append(take)
        return torch.cat(parts)

    def state(self) -> dict[str, Any]:
        return {"perm": self.perm.clone(), "cursor": self.cursor}

    def load(self, state: dict[str, Any]) -> None:
        self.perm, self.cursor = state["perm"].cpu().clone(), int(state["cursor"])


# -- run folder --------------------------------------------------------------------------------


def open_diffusion_run(cfg: ExperimentConfig, results_root: str | Path = "results") -> Run:
    """The diffusion run folder of `cfg` (created if missing; not trained).

    One DDPM per dataset serves every seed: the folder is that of seed `cfg.diffusion.seed`
    (`dia.stages.stage_config`).
    """
    from dia.stages import open_stage_run

    return open_stage_run(cfg, STAGE, METHOD, results_root)


def diffusion_run_dir(cfg: ExperimentConfig, results_root: str | Path = "results") -> Path:
    """Where the diffusion run of `cfg` is (or would be), creating nothing: for readers of a
    finished run (`load_dissolver_model` says what to do when it is not there)."""
    from dia.stages import stage_run_dir

    return stage_run_dir(cfg, STAGE, METHOD, results_root)


def _config_sections(cfg: ExperimentConfig) -> dict[str, Any]:
    full = to_dict(cfg)
    return {name: full[name] for name in SECTIONS}


def _check_checkpoint(ckpt: Any, cfg: ExperimentConfig, path: Path, run: Run) -> None:
    require_checkpoint_of(
        ckpt, path, kind="DIA diffusion", fmt=CHECKPOINT_FORMAT,
        needs=("unet", "ema", "optimizer", "step", "window", "batches", "generator"),
        identity={"dataset": cfg.dataset, "seed": cfg.seed}, sections=_config_sections(cfg),
        remedy=restart_advice(run.path))


# -- training ----------------------------------------------------------------------------------


def train_diffusion(
    cfg: ExperimentConfig,
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Run:
    """Train (or resume, or skip when DONE) the DDPM of `cfg` on its normal training images.

    Args:
        cfg: the experiment config; uses `cfg.data`, `cfg.diffusion`, `cfg.dataset`; the seed is
            `cfg.diffusion.seed` whatever `cfg.seed` is (one DDPM per dataset, as the reference).
        results_root: where ``runs/`` lives.
        data_root: the data folder (None: `$DIA_DATA_ROOT` or ``data/``).
        device: default `cfg.device` (``auto``: CUDA when available).
        on_step: called with the step number after each optimiser step (and its checkpoint);
            tests use it to simulate a kill.

    Returns:
        the finished `Run` (``DONE`` written).
    """
    from dia.runtime import stage_device
    from dia.stages import is_stage_done, stage_config

    cfg, device = stage_device(stage_config(cfg, STAGE), device)
    unet_kwargs(cfg.diffusion)  # validates the width (counts, fractions, t ranges: by dia.config)
    if not is_stage_done(cfg, STAGE, METHOD, results_root):  # DONE needs no lock (read-only)
        from dia.data import load_for_config

        # the data first: a missing or broken dataset leaves no run folder behind
        splits = load_for_config(cfg, data_root=data_root or None, results_root=results_root)
        x_all = prepare_images(splits.train, device=device)
        del splits
        run = open_diffusion_run(cfg, results_root)
        with run.exclusive():  # another process training this DDPM: wait, then find it DONE
            if not run.is_done():
                return _fit(run, cfg, x_all, device=device, on_step=on_step)
    run = open_diffusion_run(cfg, results_root)
    log.info("diffusion run %s is DONE; skipping", run.path)
    return run


def _fit(run: Run, cfg: ExperimentConfig, x_all: torch.Tensor, *, device: torch.device,
         on_step: Callable[[int], None] | None) -> Run:
    """The training loop of `train_diffusion` on the prepared images `x_all` (resuming from the
    run's checkpoint), then DONE."""
    from tqdm import tqdm

    from dia.runtime import bf16_autocast, seed_everything

    dcfg = cfg.diffusion
    seed_everything(cfg.seed)
    unet = build_unet(dcfg).to(device)
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    unet.train()
    ema = EMA(unet, dcfg.ema_decay, dcfg.ema_every, dcfg.ema_update_after_step)
    optimizer = make_optimizer(unet, dcfg)
    alphas_cumprod = build_scheduler().alphas_cumprod.to(device, torch.float32)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    batches = _Batches(x_all.shape[0], generator)
    autocast_dtype = bf16_autocast(device, cuda=dcfg.cuda_bf16, cpu=dcfg.cpu_bf16,
                                   switch="diffusion.cpu_bf16")

    ckpt_path = run.checkpoint_dir / CHECKPOINT
    step, window = 0, []
    if ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        _check_checkpoint(ckpt, cfg, ckpt_path, run)
        unet.load_state_dict(ckpt["unet"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, window = int(ckpt["step"]), list(ckpt["window"])
        batches.load(ckpt["batches"])
        rng = ckpt["generator"]
        if ckpt.get("generator_device") == device.type:
            generator.set_state(rng.cpu())
        else:  # a checkpoint moved between CPU and CUDA: fresh but deterministic draws
            log.warning("checkpoint RNG is from %s, training on %s: reseeding",
                        ckpt.get("generator_device"), device.type)
            generator.manual_seed(cfg.seed * 1_000_003 + step)
        log.info("resuming %s from step %d", run.path, step)
    run.truncate_log(after_step=step)  # also a run killed before its first checkpoint: it restarts at 0

    def save() -> None:
        save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "dataset": cfg.dataset,
            "seed": cfg.seed,
            "config": _config_sections(cfg),
            "run_hash": run.hash,
            "unet_kwargs": unet_kwargs(dcfg),
            "unet": unet.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "generator_device": device.type,
            "batches": batches.state(),
            "window": window,
        })

    bar = tqdm(total=dcfg.steps, initial=step, desc=f"ddpm {cfg.dataset}", unit="step",
               dynamic_ncols=True)
    pending: list[torch.Tensor] = []  # losses not yet synchronised (avoids a sync per step)
    tic = time.perf_counter()
    window_images = 0
    while step < dcfg.steps:
        idx = batches.next(dcfg.batch_size).to(device)
        loss = training_step(unet, optimizer, x_all[idx], alphas_cumprod, generator,
                             grad_clip=dcfg.grad_clip, autocast_dtype=autocast_dtype,
                             focus=focus_of(dcfg))
        step += 1
        ema.update(unet, step)
        pending.append(loss)
        window_images += dcfg.batch_size
        bar.update(1)
        at_log = step % dcfg.log_every == 0 or step == dcfg.steps
        at_ckpt = step % dcfg.checkpoint_every == 0 or step == dcfg.steps
        if at_log or at_ckpt:
            window.extend(torch.stack(pending).tolist())
            pending.clear()
        if at_log:
            elapsed = time.perf_counter() - tic
            mean_loss = sum(window) / len(window)
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"DDPM loss is {mean_loss} at step {step} ({run.path})")
            run.append_log({"step": step, "loss": mean_loss,
                             "images_per_s": window_images / max(elapsed, 1e-9)})
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            window, window_images, tic = [], 0, time.perf_counter()
        if at_ckpt:
            save()
        if on_step is not None:
            on_step(step)
    bar.close()
    records = run.read_log()
    run.mark_done({
        "steps": step,
        "final_loss": records[-1]["loss"] if records else None,
        "parameters": count_parameters(unet),
        "train_images": int(x_all.shape[0]),
        "checkpoint": str(ckpt_path.relative_to(run.path)),
    })
    return run


# -- loading the dissolver ---------------------------------------------------------------------


def _resolve_checkpoint(run_or_path: Run | str | Path) -> tuple[Path, str | None]:
    """The checkpoint of a finished run (or the file given), and the hash of the run folder
    that holds it (None for a file given as such, or a folder not named like a run)."""
    if isinstance(run_or_path, Run):
        run_path, run_hash = run_or_path.path, run_or_path.hash
    else:
        path = Path(run_or_path)
        if path.is_file():
            return path, None
        run_path, run_hash = path, _folder_hash(path)
    if not (run_path / "DONE").is_file():
        state = "is not finished (no DONE marker)" if run_path.is_dir() else "does not exist"
        raise RunError(f"diffusion run {run_path} {state}: run notebooks/10_train_diffusion "
                       "first")
    ckpt = run_path / "checkpoints" / CHECKPOINT
    if not ckpt.is_file():
        raise RunError(f"diffusion run {run_path} is DONE but has no {ckpt.relative_to(run_path)} "
                       "(a run folder copied without its checkpoints?): "
                       f"{retrain_advice(run_path)}")
    return ckpt, run_hash


def _folder_hash(path: Path) -> str | None:
    """The config hash in a run folder's name; None for a folder not named like one."""
    try:
        return parse_run_name(path.name)[1]
    except ValueError:
        return None


def load_dissolver_model(
    run_or_path: Run | str | Path, device: torch.device | str | None = None,
) -> tuple[torch.nn.Module, torch.Tensor]:
    """The frozen U-Net with the RAW (non-EMA) weights of a finished run, and its ᾱ.

    Args:
        run_or_path: a `Run`, a run folder (must hold DONE) or a checkpoint file.
        device: default CUDA when available, else CPU.

    Returns:
        (unet in eval mode without gradients, alphas_cumprod float32 (1000,) on `device`).
    """
    from dia.runtime import resolve_device

    path, run_hash = _resolve_checkpoint(run_or_path)
    device = torch.device(device) if device is not None else resolve_device("auto")
    remedy = "delete the run folder that holds it to train this DDPM again"
    ckpt = read_checkpoint(path, mmap=True, remedy=remedy)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path} is not a DIA diffusion checkpoint: {remedy}")
    if run_hash is not None and ckpt.get("run_hash", run_hash) != run_hash:
        raise RunError(f"{path} was written by the DDPM run {ckpt['run_hash']}, not by the run "
                       f"{run_hash} whose folder holds it (copied from another run?): {remedy}")
    missing = [key for key in ("unet_kwargs", "unet") if key not in ckpt]
    if missing:  # a key deleted by hand, or another version's file
        raise RunError(f"{path} is not a whole DIA diffusion checkpoint (no "
                       f"{', '.join(missing)}): {remedy}")
    unet = unet_from_kwargs(ckpt["unet_kwargs"])
    unet.load_state_dict(ckpt["unet"])
    unet = unet.to(device).eval().requires_grad_(False)
    alphas_cumprod = build_scheduler().alphas_cumprod.to(device, torch.float32)
    return unet, alphas_cumprod
