"""Where a DDPM training step spends its time, operator by operator, on this machine.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/profile_ddpm_step.py [--profile quick]
        [--batch 128] [--threads 2] [--device cpu] [--top 12] [--precision fp32|bf16]
        [--architecture diffusers|reference]

One `dia.diffusion.training_step` of the profile's U-Net (random weights, random images in
[-1, 1]: flip, noise, forward, L1, backward, clipping, Adam) under `torch.profiler`, after two
warm-up steps. Prints one JSON object: the step's seconds, the share of the profiled time each of
the `--top` operators takes by itself (self time: convolution forward and backward, matrix
products, norms, activations, ...), and the convolutions' share in all, so one can tell whether
the step is bound by its arithmetic (the convolutions) or by everything around it, which fusing
operators (`torch.compile`) could shorten. On CUDA the device's kernel time is reported instead.
`--precision bf16` runs the step under bf16 autocast (channels_last on CUDA), as
`diffusion.cuda_bf16` trains on CUDA; on a CPU it is what `diffusion.cpu_bf16` does (off in every
profile: it changes the rounding), fast only on a CPU with bf16 units (AVX512-BF16, AMX). Before
commit `60d3f71` the step ignored the dtype off CUDA, so a CPU's bf16 figure measured fp32.
`--architecture reference` times the reference code's U-Net layout (`diffusion.architecture`,
DECISIONS.md DIA 20) instead of the profile's.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

CONVOLUTION = ("aten::convolution_backward", "aten::mkldnn_convolution",
               "aten::cudnn_convolution", "aten::_convolution")


def profile_step(cfg, batch: int, device: torch.device, top: int, bf16: bool = False) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from dia.diffusion import build_scheduler, build_unet, make_optimizer, training_step

    torch.manual_seed(0)
    unet = build_unet(cfg.diffusion).to(device).train()
    if bf16 and device.type == "cuda":  # as training: channels_last on CUDA only
        unet = unet.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(unet, cfg.diffusion)
    alphas_cumprod = build_scheduler().alphas_cumprod.to(device, torch.float32)
    generator = torch.Generator(device).manual_seed(0)
    x0 = torch.rand(batch, 3, 32, 32, generator=generator, device=device) * 2 - 1

    def step():
        training_step(unet, optimizer, x0, alphas_cumprod, generator,
                      autocast_dtype=torch.bfloat16 if bf16 else None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm-up: oneDNN / cuDNN choose their kernels
        step()
    tic = time.perf_counter()
    step()
    seconds = time.perf_counter() - tic
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        step()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return {
        "step_seconds": round(seconds, 3),
        "images_per_s": round(batch / seconds, 1),
        "convolution_share": round(sum(getattr(e, attr) for e in events
                                       if e.key in CONVOLUTION) / total, 3),
        "top_operators": [{"name": e.key, "calls": e.count,
                           "share": round(getattr(e, attr) / total, 3)} for e in events[:top]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--batch", type=int, default=None, help="default: the profile's")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: autocast (channels_last on CUDA), as diffusion.cuda_bf16 "
                        "/ cpu_bf16")
    parser.add_argument("--architecture", choices=("diffusers", "reference"), default=None,
                        help="the U-Net layout (default: the profile's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from dia.allocator import keep_freed_memory
    from dia.config import load_config
    from dia.runtime import describe_device, resolve_device

    overrides = {"diffusion.architecture": args.architecture} if args.architecture else None
    cfg = load_config(args.profile, overrides=overrides)
    malloc = keep_freed_memory()  # as every stage runs (dia.allocator)
    device = resolve_device(args.device)
    batch = args.batch or cfg.diffusion.batch_size
    print(json.dumps({"profile": args.profile, "architecture": cfg.diffusion.architecture,
                      "width": cfg.diffusion.width, "batch": batch,
                      "machine": describe_device(args.device), "malloc": malloc,
                      "precision": args.precision,
                      "torch_threads": torch.get_num_threads(),
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      **profile_step(cfg, batch, device, args.top,
                                     bf16=args.precision == "bf16")}, indent=1))


if __name__ == "__main__":
    main()
