"""Probe, 2026-12-04: a quick DDPM training step with oneDNN's convolutions and without them.

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python \
        results/device_sessions/2026-12-03_cpu_avx2/onednn_probe.py

One `dia.diffusion.training_step` of the `quick` U-Net (128 random images, 2 threads, memory kept
as every stage keeps it); `torch.backends.mkldnn.enabled` on, then off, twice over; two warm-up
steps after each switch, then the mean of two timed steps. Printed on the idle 2-core AMD EPYC
with AVX2 (the training step's code that of 1fa2f20): on 3.96 / 4.39 s, off 9.65 / 7.91 s per
step. torch's own convolutions are about twice as slow: not adopted. (An uncommitted first
version of these steps, at 5554c49: on 3.93 / 3.45 s, off 6.27 / 7.07 s.)
"""
import time

import torch

from dia.allocator import keep_freed_memory
from dia.config import load_config
from dia.diffusion import build_scheduler, build_unet, make_optimizer, training_step

torch.set_num_threads(2)
keep_freed_memory()
cfg = load_config("quick")
torch.manual_seed(0)
unet = build_unet(cfg.diffusion).train()
optimizer = make_optimizer(unet, cfg.diffusion)
alphas_cumprod = build_scheduler().alphas_cumprod.float()
generator = torch.Generator().manual_seed(0)
x0 = torch.rand(128, 3, 32, 32, generator=generator) * 2 - 1
for _ in range(2):
    for onednn in (True, False):
        torch.backends.mkldnn.enabled = onednn
        for _ in range(2):  # warm-up: oneDNN picks its kernels
            training_step(unet, optimizer, x0, alphas_cumprod, generator)
        tic = time.perf_counter()
        for _ in range(2):
            training_step(unet, optimizer, x0, alphas_cumprod, generator)
        seconds = (time.perf_counter() - tic) / 2
        print(f"oneDNN {'on' if onednn else 'off'}: {seconds:.2f} s per step", flush=True)
