"""Probe, 2026-12-03: torch.compile of the dissolving U-Net on the CPU. Not adopted.

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python \
        results/device_sessions/2026-12-03_cpu_xeon/compile_probe.py fp32|compile|compile_bf16

One forward of 128 images (width 32, channels_last, no grad). Printed, the Xeon at 5f3227a, idle:
eager fp32 1.240 s; compiled fp32 1.124 s after a 92.7-s first call; compiled under bf16 autocast
0.788 s after 93.6 s (eager bf16 autocast: 0.576 s, amx_bf16_probe.py).
"""
import time, sys, torch
from dia.config import DiffusionConfig
from dia.diffusion import build_unet
torch.set_num_threads(2)
mode = sys.argv[1]
torch.manual_seed(0)
unet = build_unet(DiffusionConfig(width=32)).eval().to(memory_format=torch.channels_last)
x = torch.rand(128, 3, 32, 32).to(memory_format=torch.channels_last); t = torch.full((128,), 60)
f = unet
if "compile" in mode:
    tic = time.perf_counter(); f = torch.compile(unet); 
bf = "bf16" in mode
def step():
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
        return f(x, t).sample
tic = time.perf_counter(); step(); print("first call", round(time.perf_counter()-tic,1))
step()
tic = time.perf_counter(); n = 5
for _ in range(n): y = step()
print(mode, f"{(time.perf_counter()-tic)/n:.3f} s/128")
