"""Train the amplifying encoder (DIA) or its baseline (CSI): the `amplify` stage.

    run = train_amplifier(cfg, "dia", results_root="results")   # trains the DDPM first if needed

One run folder per (dataset, method, seed, config) (`dia.stages`). Every epoch ends with an atomic
checkpoint (`checkpoints/last.pt`: model, optimiser, epoch, config identity) and one line in
`train_log.jsonl`; a killed run resumes from the last checkpoint and, since the data order and the
augmentation draws come from generators seeded by (seed, epoch), continues exactly as if it had
not been killed. `DONE` is written last; the reported model is the last checkpoint.

Reference: shijianjian/DIA `train.py`, `common/train.py`, `training/unsup/simclr_DIA.py`
(alinlab/CSI `training/unsup/simclr_CSI.py` for the baseline). Not reproduced: the linear probe
(monitoring only) and the in-training test-set evaluation with best-checkpoint selection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from dia.amplify import DissolveCache, DissolveTable, amplify_forward
from dia.augment import AugmentParams, make_generator, num_shifts
from dia.checkpoints import ensure_finite, read_checkpoint, require_checkpoint_of, save_checkpoint
from dia.config import ExperimentConfig, to_dict
from dia.encoder import AmplifyEncoder
from dia.optim import LARS, iterations_per_epoch, lr_schedule, set_lr
from dia.results import Run, RunError, is_finite_number, restart_advice, retrain_advice
from dia import runtime
from dia.runtime import seed_everything, stage_device
from dia.lineage import UPSTREAM, refuse_out_of_date, upstream_record
from dia.stages import is_stage_done, open_stage_run, stage_run_dir, stage_sections

METHODS = ("dia", "csi")
CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT = "dia-amplifier-v1"
DEVICE_IMAGES_MAX_BYTES = 2 * 2**30  # a training set up to this size is copied to the GPU once


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown amplifier method {method!r}; choose one of {', '.join(METHODS)}")


def build_encoder(cfg: ExperimentConfig) -> AmplifyEncoder:
    """The encoder of `cfg.amplify` (random init from the current global RNG)."""
    return AmplifyEncoder(num_shifts(cfg.amplify.shift), width=cfg.amplify.encoder_width)


def prepare_dissolver(
    cfg: ExperimentConfig, *, results_root: str | Path, data_root, device: torch.device
) -> tuple[Any, dict[str, str] | None]:
    """The frozen dissolver of the DIA view, the DDPM of `cfg` (trained or reused) or a blur,
    and the `dia.lineage.upstream_record` of the DDPM checkpoint it reads (None for a blur)."""
    if cfg.dissolve.dissolver != "diffusion":  # an ablation: no DDPM needed
        from dia.blur import BlurDissolver

        return BlurDissolver(cfg.dissolve.dissolver, cfg.dissolve.t_min, cfg.dissolve.t_max), None
    from dia.diffusion import CHECKPOINT as DDPM_CHECKPOINT
    from dia.diffusion import train_diffusion
    from dia.dissolve import Dissolver
    from dia.stages import stage_config

    diffusion_run = train_diffusion(
        stage_config(cfg, "diffusion"), results_root=results_root, data_root=data_root,
        device=device,
    )
    upstream = upstream_record(diffusion_run.path,
                               diffusion_run.checkpoint_dir / DDPM_CHECKPOINT)
    return Dissolver.from_run(diffusion_run, cfg.dissolve, device), upstream


def _identity(cfg: ExperimentConfig, method: str) -> dict[str, Any]:
    full = to_dict(cfg)
    return {
        "dataset": cfg.dataset, "method": method, "seed": cfg.seed,
        "config": {name: full[name] for name in stage_sections("amplify", method)},
    }


def check_checkpoint(ckpt: Any, cfg: ExperimentConfig, method: str, path: Path, *,
                     remedy: str) -> None:
    """Refuse an encoder checkpoint written for another dataset, method, seed or config (or no
    encoder checkpoint at all), naming each difference; `remedy` says what to do."""
    identity = _identity(cfg, method)
    sections = identity.pop("config")
    require_checkpoint_of(ckpt, path, kind="DIA/CSI encoder", fmt=CHECKPOINT_FORMAT,
                          needs=("model", "optimizer", "epoch"), identity=identity,
                          sections=sections, remedy=remedy)


def load_encoder(
    run: Run, cfg: ExperimentConfig, method: str, device: torch.device | str = "cpu"
) -> tuple[AmplifyEncoder, dict[str, Any]]:
    """The encoder of the last checkpoint of an amplify run, in eval mode, and its metadata."""
    path, remedy = run.checkpoint_dir / CHECKPOINT, retrain_advice(run.path)
    if not path.is_file():
        raise RunError(f"amplify run {run.path} has no checkpoint {CHECKPOINT} (a run folder "
                       f"copied without its checkpoints?): {remedy}")
    ckpt = read_checkpoint(path, remedy=remedy)
    check_checkpoint(ckpt, cfg, method, path, remedy=remedy)
    model = build_encoder(cfg)
    model.load_state_dict(ckpt["model"])
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")}
    model = model.to(device).eval()
    if encoder_precision(cfg.amplify.precision, torch.device(device),
                         cpu_bf16=cfg.amplify.cpu_bf16).channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, meta


class EncoderPrecision(NamedTuple):
    autocast_dtype: torch.dtype | None
    channels_last: bool


def encoder_precision(precision: str, device: torch.device, *,
                      cpu_bf16: bool = False) -> EncoderPrecision:
    """How the encoder computes on `device` for ``amplify.precision`` (fp32 | bf16) and
    ``amplify.cpu_bf16``, in training, scoring and `benchmarks/bench_amplify.py` alike.

    bf16 autocast on CUDA with ``precision="bf16"``, on a CPU with `cpu_bf16`
    (`dia.runtime.bf16_autocast`, which warns where the CPU has no bf16 units). channels_last
    (NHWC) under bf16, and on the CPU, where oneDNN's convolutions of the ResNet are faster so
    (2-core CPU, a training step of 384 images of 28²: 914 → 754 ms,
    `benchmarks/bench_cpu_layout.py`); CUDA fp32 keeps NCHW, as measured on the H200.
    """
    dtype = runtime.bf16_autocast(device, cuda=precision == "bf16", cpu=cpu_bf16,
                                  switch="amplify.cpu_bf16")
    return EncoderPrecision(dtype, dtype is not None or device.type == "cpu")


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63 - 1)


def draws_of_epoch(epoch: int, replay: bool) -> int:
    """The epoch whose random draws `epoch` makes: itself, or with `replay`
    (`amplify.replay_epoch_draws`, the reference's README protocol) epoch 2 for every epoch
    after the first."""
    return min(epoch, 2) if replay else epoch


def images_where_trained(train: torch.Tensor, device: torch.device,
                         max_bytes: int = DEVICE_IMAGES_MAX_BYTES) -> torch.Tensor:
    """The uint8 training images where the loop indexes them: on `device` when they fit
    `max_bytes` (one copy per run instead of one per iteration, which on a GPU would make the
    host wait), else on the host (`_run_epoch` then pins each batch before copying it)."""
    if device.type == "cpu" or train.numel() > max_bytes:
        return train
    return train.to(device)


def _run_epoch(model, optimizer, train, order, gen, lrs, *, batch, device, bar, epoch, **step):
    """One epoch of len(lrs) iterations; returns the mean loss terms and the last lr.

    Unless reads are free (CPU), nothing in an iteration reads a value back from the device
    (`dia.hostsync`), so the host can queue the next iteration while a GPU computes this one,
    as long as the dissolved view comes from the dissolver or a `DissolveTable`: a lazily
    filled `DissolveCache` (on a GPU, when the table does not fit `amplify.dissolve_cache_gib`,
    e.g. for 224-pixel datasets) reads its keys back every iteration. The loss shown on the
    progress bar is then read once per epoch.
    """
    model.train()
    sums: dict[str, torch.Tensor] = {}
    order_on_device = order.to(device)  # the cache keys and, for images on the device, the index
    show = 10 if runtime.host_reads_are_free(device) else None  # else: at the epoch's end
    for it, lr in enumerate(lrs.tolist()):
        set_lr(optimizer, lr)
        index = order_on_device[it * batch:(it + 1) * batch]
        if train.device.type == "cpu" and device.type != "cpu":  # too large for the device
            x = train[order[it * batch:(it + 1) * batch]]
            x = x.pin_memory().to(device, non_blocking=True)
        else:
            x = train[index]
        terms = amplify_forward(model, x.float().div_(255.0), gen, indices=index, **step)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        for key, value in terms.items():  # summed on the device: no read per iteration
            sums[key] = sums.get(key, 0.0) + value.detach()
        bar.update(1)
        if (show and it % show == 0) or it == len(lrs) - 1:
            bar.set_postfix(epoch=epoch, loss=f"{float(terms['total'].detach()):.3f}",
                            lr=f"{lr:.3g}")
    names = {key: "loss" if key == "total" else f"loss_{key}" for key in sums}
    return {names[key]: float(value) / len(lrs) for key, value in sums.items()}, lr


def require_full_log(run: Run, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """The finished run's train log, one record per epoch with a finite loss (and every other
    value a finite number: the notebook plots them); a RunError naming the log and what to do
    when it is not (a record deleted or damaged since: the checkpoint is the last epoch's, so
    resuming cannot write the record again)."""
    path, epochs = run.path / "train_log.jsonl", cfg.amplify.epochs
    run.require_done("its train log is read once it has trained")
    log = run.read_log()
    got = sorted(r["epoch"] for r in log if isinstance(r.get("epoch"), int))
    finite = all("loss" in r and all(map(is_finite_number, r.values())) for r in log)
    if got != list(range(1, epochs + 1)) or not finite:
        odd = "" if finite else " (a loss missing, or a value not a number, among them)"
        raise RunError(f"{path} should hold one record with a finite loss for each of the "
                       f"{epochs} epochs, and holds epochs {_spans(got) or 'none'}{odd}: it was "
                       f"edited or damaged; {retrain_advice(run.path)}")
    return log


def _spans(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def train_amplifier(
    cfg: ExperimentConfig,
    method: str = "dia",
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> Run:
    """Train (or resume, or skip when DONE) the DIA or CSI encoder of `cfg`.

    Args:
        cfg: the experiment config (`cfg.amplify`; for DIA also `cfg.diffusion`, `cfg.dissolve`).
        method: "dia" (3 views, dissolved negatives) or "csi" (the baseline, 2 views).
        results_root: where ``runs/`` lives.
        data_root: the data folder (None: `$DIA_DATA_ROOT` or ``data/``).
        device: default `cfg.device` (``auto``: CUDA when available).
        on_epoch: called with the epoch number after each epoch's checkpoint (tests use it to
            simulate a kill).

    Returns:
        the finished amplify `Run` (``DONE`` written; ``checkpoints/last.pt`` is the model).

    Raises:
        dia.metrics.MetricError: the test split lacks a class (no AUC could be computed), before
            anything is trained or written.
    """
    _check_method(method)
    cfg, device = stage_device(cfg, device)
    if is_stage_done(cfg, "amplify", method, results_root):
        return open_stage_run(cfg, "amplify", method, results_root)
    refuse_out_of_date(  # a DONE run of a DDPM trained again since: not reused, nor trained over
        stage_run_dir(cfg, "amplify", method, results_root), "amplify run",
        "its encoder learnt from the old DDPM's dissolving. Delete the run folder to train it on "
        "the new one")
    from dia.data import load_for_config
    from dia.metrics import check_test_labels

    splits = load_for_config(cfg, data_root=data_root, results_root=results_root)
    splits.require_training_normals("training the encoder")
    check_test_labels(splits, cfg.dataset)  # its evaluation would refuse it: before the hours
    dissolver, upstream = None, None
    if method == "dia":
        dissolver, upstream = prepare_dissolver(
            cfg, results_root=results_root, data_root=data_root, device=device
        )
    run = open_stage_run(cfg, "amplify", method, results_root)
    with run.exclusive():  # another process training this run: wait, then find it DONE
        if not run.is_done():
            _train(cfg, method, run, splits.train, dissolver, upstream, device, on_epoch)
    return run


def _model_and_optimizer(cfg, method, run: Run, device, channels_last: bool,
                         upstream: dict[str, str] | None = None):
    """A fresh (seeded) encoder and LARS, or both restored from the run's last checkpoint (of
    the same DDPM checkpoint, `upstream`, where the checkpoint records one)."""
    a = cfg.amplify
    seed_everything(cfg.seed)
    model = build_encoder(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = LARS(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
                     eps=a.lars_eps, trust_coef=a.lars_trust_coef)
    path = run.checkpoint_dir / CHECKPOINT
    if not path.is_file():
        return model, optimizer, 1
    ckpt = read_checkpoint(path)
    check_checkpoint(ckpt, cfg, method, path, remedy=restart_advice(run.path))
    recorded = ckpt.get(UPSTREAM)
    if upstream is not None and recorded is not None and recorded != upstream:
        raise RunError(f"{path} was trained on the dissolving of {recorded['run']} as it was "
                       "before that DDPM was trained again: delete the run folder to train the "
                       "encoder from its beginning on the new one")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return model, optimizer, int(ckpt["epoch"]) + 1


def use_dissolve_table(train: torch.Tensor, device: torch.device, t_min: int, t_max: int,
                       budget_bytes: int) -> bool:
    """Dissolve every (image, flip, t) before training (`DissolveTable`) instead of lazily
    (`DissolveCache`): on CUDA, when the table fits the cache budget. The table spares a GPU the
    host reads of a lazy cache; the values are the dissolver's either way, up to its differences
    between batch sizes. On the CPU a lazy cache dissolves fewer images in a short run."""
    return (device.type == "cuda"
            and DissolveTable.nbytes(train, t_min, t_max) <= budget_bytes)


def _build_table(dissolver, train: torch.Tensor, t_min: int, t_max: int) -> DissolveTable | None:
    """A `DissolveTable`, or None (with a warning) when the GPU runs out of memory filling it."""
    try:
        return DissolveTable(dissolver, train, t_min, t_max)
    except torch.cuda.OutOfMemoryError:
        import warnings

        torch.cuda.empty_cache()
        warnings.warn("the dissolve table does not fit in GPU memory: dissolving lazily "
                      "instead (lower amplify.dissolve_cache_gib to skip the attempt)",
                      stacklevel=2)
        return None


def _train(cfg, method, run: Run, train: torch.Tensor, dissolver, upstream, device,
           on_epoch) -> None:
    a = cfg.amplify
    n, batch = train.shape[0], a.batch_size
    loader_len = math.ceil(n / batch)
    iters = iterations_per_epoch(loader_len, a.max_iters_per_epoch)
    lrs = lr_schedule(
        epochs=a.epochs, loader_len=loader_len, max_iters_per_epoch=a.max_iters_per_epoch,
        base_lr=a.lr, multiplier=a.warmup_multiplier, warmup_epochs=a.warmup_epochs,
    )
    precision = encoder_precision(a.precision, device, cpu_bf16=a.cpu_bf16)
    model, optimizer, start_epoch = _model_and_optimizer(
        cfg, method, run, device, precision.channels_last, upstream)
    ckpt_path = run.checkpoint_dir / CHECKPOINT
    run.truncate_log(after_step=start_epoch - 1, key="epoch")
    augment = AugmentParams(crop_scale=(a.crop_scale_min, 1.0))
    train = images_where_trained(train, device)
    table_seconds = None
    if dissolver is not None and a.dissolve_cache_gib > 0:
        budget = int(a.dissolve_cache_gib * 2**30)
        table = None
        if start_epoch <= a.epochs and use_dissolve_table(
                train, device, cfg.dissolve.t_min, cfg.dissolve.t_max, budget):
            tic = time.perf_counter()
            table = _build_table(dissolver, train.to(device), cfg.dissolve.t_min,
                                 cfg.dissolve.t_max)
            if table is not None:
                table_seconds = round(time.perf_counter() - tic, 1)
        dissolver = table if table is not None else DissolveCache(dissolver, budget)
    from tqdm import tqdm

    bar = tqdm(total=a.epochs * iters, initial=(start_epoch - 1) * iters,
               desc=f"amplify {method} {cfg.dataset}", unit="it")
    step_kwargs = dict(
        shift=a.shift, dissolve=dissolver, t_min=cfg.dissolve.t_min, t_max=cfg.dissolve.t_max,
        augment=augment, temperature=a.temperature, exclude_own_dissolved=a.exclude_own_dissolved,
        shift_weight=a.shift_weight, channels_last=precision.channels_last,
        autocast_dtype=precision.autocast_dtype,
    )
    started, last = time.perf_counter(), {}
    for epoch in range(start_epoch, a.epochs + 1):
        draws = draws_of_epoch(epoch, a.replay_epoch_draws)
        order = torch.randperm(n, generator=make_generator(_epoch_seed(cfg.seed, draws, 0)))
        gen = make_generator(_epoch_seed(cfg.seed, draws, 1), device)
        tic = time.perf_counter()
        epoch_lrs = lrs[(epoch - 1) * iters:epoch * iters]
        last, lr = _run_epoch(model, optimizer, train, order, gen, epoch_lrs, batch=batch,
                              device=device, bar=bar, epoch=epoch, **step_kwargs)
        seconds = time.perf_counter() - tic
        views = 2 if dissolver is None else 3
        images = views * num_shifts(a.shift) * min(n, iters * batch)  # encoder inputs
        record = {"epoch": epoch, "step": epoch * iters, **last, "lr": lr,
                  "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 2)}
        if isinstance(dissolver, DissolveCache):
            record["dissolve_cache_hit_rate"] = round(dissolver.hit_rate(), 4)
        run.append_log(record)  # before the checkpoint: a resume truncates what it cannot keep
        ensure_finite(last, where=f"{method} epoch {epoch} ({run.path})",
                      hint="check amplify.lr and amplify.temperature")
        if epoch % a.checkpoint_every_epochs == 0 or epoch == a.epochs:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, **_identity(cfg, method), "epoch": epoch,
                "iterations_per_epoch": iters, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **({UPSTREAM: upstream} if upstream is not None else {}),
            })
        if on_epoch is not None:
            on_epoch(epoch)
    bar.close()
    if not last:  # killed after the last checkpoint, before DONE: the log has the last epoch's
        final = [r for r in run.read_log() if r.get("epoch") == a.epochs][-1:]
        last = {k: v for k, v in final[0].items() if k.startswith("loss")} if final else {}
    run.mark_done({
        "method": method, "epochs": a.epochs, "iterations": a.epochs * iters,
        "iterations_per_epoch": iters, "final": last, "checkpoint": f"checkpoints/{CHECKPOINT}",
        "seconds_this_session": round(time.perf_counter() - started, 1),
        **({"dissolve_table_seconds": table_seconds} if table_seconds is not None else {}),
        **({UPSTREAM: upstream} if upstream is not None else {}),
    })
