"""Throughput of the diffusion stage: DDPM optimiser steps and dissolving.

    .venv/bin/python benchmarks/bench_diffusion.py [--widths 32 64] [--batch 64]
        [--dissolve-batch 128] [--steps 3] [--device cpu|cuda|all] [--precision fp32|both]

Prints one JSON object with, per device, width and precision: DDPM optimiser steps/s and
images/s at `--batch` images per step (flip, noise, U-Net forward/backward, L1, clip, Adam, EMA,
as in `dia.diffusion.train_diffusion`), and dissolved images/s for 28² inputs (pad → one-step x̂₀
→ crop, `dia.dissolve.Dissolver`). Weights are random: speed does not depend on them. On CUDA
both fp32 and bf16 autocast + channels_last are measured, with the GPU's utilisation
(`gpu_util.py`); on a CPU with bf16 units (AMX, AVX512-BF16) both fp32 and bf16 autocast, as
`diffusion.cpu_bf16` and `dissolve.cpu_bf16` run them. `cpu_s_*` is process CPU time: on a
machine shared with other jobs, with `--threads 1`, it approximates the uncontended wall time
(the load average is recorded). Reference figures on the project's
2-core CPU (`reference/reference-run-cpu.md`): the published DDPM loop takes 49.7 s per optimiser
step of 512 images (≈ 10.3 images/s; its U-Net has 36 M parameters); the reference dissolving of
32 images (one `p_sample`) takes 2.42 s / 4 ≈ 0.6 s (≈ 53 images/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from gpu_util import GpuUtilisation

REFERENCE_CPU = {"ddpm_images_per_s_512": 512 / 49.7, "dissolve_images_per_s": 4 * 32 / 2.42}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_training(width: int, batch: int, steps: int, device: torch.device, bf16: bool) -> dict:
    from dia.allocator import minor_page_faults
    from dia.config import DiffusionConfig
    from dia.diffusion import EMA, build_scheduler, build_unet, count_parameters, make_optimizer
    from dia.diffusion import training_step

    cfg = DiffusionConfig(width=width)
    torch.manual_seed(0)
    unet = build_unet(cfg).to(device).train()
    if device.type == "cuda" and bf16:
        unet = unet.to(memory_format=torch.channels_last)
    opt = make_optimizer(unet, cfg)
    ema = EMA(unet, cfg.ema_decay, cfg.ema_every, cfg.ema_update_after_step)
    ac = build_scheduler().alphas_cumprod.to(device, torch.float32)
    gen = torch.Generator(device).manual_seed(0)
    x0 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    dtype = torch.bfloat16 if bf16 else None

    def step(i: int) -> None:
        training_step(unet, opt, x0, ac, gen, grad_clip=cfg.grad_clip, autocast_dtype=dtype)
        ema.update(unet, i)

    for i in range(3):  # warm-up: the allocator's heap takes a few steps to reach its size
        step(i + 1)
    _sync(device)
    tic, cpu, faults = time.perf_counter(), time.process_time(), minor_page_faults()
    with GpuUtilisation(device) as util:
        for i in range(steps):
            step(i + 4)
        _sync(device)
    seconds = (time.perf_counter() - tic) / steps
    return {"parameters": count_parameters(unet), "batch": batch, "s_per_step": seconds,
            "steps_per_s": 1 / seconds, "images_per_s": batch / seconds,
            "cpu_s_per_step": (time.process_time() - cpu) / steps,
            "minor_page_faults_per_step": (minor_page_faults() - faults) // steps,
            **util.summary()}


def bench_dissolve(width: int, batch: int, repeats: int, device: torch.device, bf16: bool) -> dict:
    from dia.allocator import minor_page_faults
    from dia.config import DiffusionConfig
    from dia.diffusion import build_scheduler, build_unet
    from dia.dissolve import Dissolver

    torch.manual_seed(0)
    unet = build_unet(DiffusionConfig(width=width)).to(device)
    d = Dissolver(unet, build_scheduler().alphas_cumprod, cuda_bf16=bf16, cpu_bf16=bf16)
    images = torch.rand(batch, 3, 28, 28, device=device)
    t = torch.full((batch,), 65, dtype=torch.long, device=device)
    d(images, t)  # warm-up
    _sync(device)
    tic, cpu, faults = time.perf_counter(), time.process_time(), minor_page_faults()
    with GpuUtilisation(device) as util:
        for _ in range(repeats):
            d(images, t)
        _sync(device)
    seconds = (time.perf_counter() - tic) / repeats
    return {"batch": batch, "s_per_batch": seconds, "images_per_s": batch / seconds,
            "cpu_s_per_batch": (time.process_time() - cpu) / repeats,
            "minor_page_faults_per_batch": (minor_page_faults() - faults) // repeats,
            **util.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=64, help="images per DDPM optimiser step")
    parser.add_argument("--dissolve-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps / dissolve calls")
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cuda when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--precision", choices=("fp32", "both"), default="both",
                        help="both: bf16 autocast too, on CUDA or a CPU with bf16 units")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    from dia.allocator import keep_freed_memory
    from dia.runtime import cpu_has_bf16_units, describe_device

    report: dict = {
        "benchmark": "diffusion",
        "malloc": keep_freed_memory(),  # as every stage runs (dia.allocator)
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": describe_device("cpu"),
        "reference_cpu": REFERENCE_CPU,
        "load_average_1min_before": os.getloadavg()[0],  # other processes skew CPU figures
        "results": [],
    }
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda":
            report["gpu"] = torch.cuda.get_device_name(device)
        # bf16 on a CPU only where it has bf16 units (elsewhere emulated, slower than fp32)
        both = args.precision == "both" and (device.type == "cuda" or cpu_has_bf16_units())
        for bf16 in ([False, True] if both else [False]):
            for width in args.widths:
                row = {"device": name, "width": width, "precision": "bf16" if bf16 else "fp32"}
                row["ddpm"] = bench_training(width, args.batch, args.steps, device, bf16)
                row["dissolve"] = bench_dissolve(width, args.dissolve_batch, args.steps, device,
                                                 bf16)
                if device.type == "cpu":
                    row["ddpm"]["x_reference_images_per_s"] = (
                        row["ddpm"]["images_per_s"] / REFERENCE_CPU["ddpm_images_per_s_512"])
                    row["dissolve"]["x_reference_images_per_s"] = (
                        row["dissolve"]["images_per_s"] / REFERENCE_CPU["dissolve_images_per_s"])
                if device.type == "cuda":
                    row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                    torch.cuda.reset_peak_memory_stats(device)
                report["results"].append(row)
                print(json.dumps(row), flush=True, file=sys.stderr)
    report["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
