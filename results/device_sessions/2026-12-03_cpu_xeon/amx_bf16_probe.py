"""Probe, 2026-12-03: does CPU bf16 (this Xeon's AMX) speed up quick's networks? Not adopted.

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python \
        results/device_sessions/2026-12-03_cpu_xeon/amx_bf16_probe.py MODE WHAT

MODE fp32 | autocast (torch.autocast("cpu", bfloat16)) | bf32 (torch.backends.mkldnn.fp32_precision
= "bf16", oneDNN's implicit down-conversion); WHAT ddpm (a training step of 128 images, width 32)
| dissolve (one U-Net forward of 128 images, channels_last, no grad) | enc (an encoder step of 384
images at 28², channels_last). Printed, the Xeon at 5f3227a, idle, one call each (2 warm-up + 4
timed): dissolve 1.266 / 0.576 / 1.290 s, enc 0.603 / 0.473 / 0.816 s, ddpm 3.135 / 2.338 /
4.133 s (fp32 / autocast / bf32). The DDPM's fp32 figure is high against the 2.54 s that
profile_ddpm_step.py measured on this machine the day before (docs/MEASUREMENTS.md), where bf16 was no faster.
"""
import time, sys, torch
from dia.config import DiffusionConfig
from dia.diffusion import build_unet, build_scheduler, make_optimizer, training_step
torch.set_num_threads(2)
mode = sys.argv[1]   # fp32 | autocast | bf32
what = sys.argv[2]   # ddpm | dissolve | enc
if mode == "bf32":
    torch.backends.mkldnn.fp32_precision = "bf16"
ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "autocast" else (lambda: torch.autocast("cpu", enabled=False))
torch.manual_seed(0)
if what in ("ddpm", "dissolve"):
    cfg = DiffusionConfig(width=32)
    unet = build_unet(cfg)
    ac = build_scheduler().alphas_cumprod.float()
    gen = torch.Generator().manual_seed(0)
    if what == "ddpm":
        unet.train(); opt = make_optimizer(unet, cfg)
        x0 = torch.rand(128, 3, 32, 32) * 2 - 1
        def step():
            with ctx():
                training_step(unet, opt, x0, ac, gen, grad_clip=1.0)
    else:
        unet.eval().to(memory_format=torch.channels_last)
        x = torch.rand(128, 3, 32, 32).to(memory_format=torch.channels_last); t = torch.full((128,), 60)
        def step():
            with torch.no_grad(), ctx():
                unet(x, t)
else:
    from dia.encoder import AmplifyEncoder

    enc = AmplifyEncoder().to(memory_format=torch.channels_last)
    x = torch.rand(384, 3, 28, 28).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(enc.parameters(), lr=0.01)
    def step():
        with ctx():
            out = enc(x)
            loss = sum(o.float().pow(2).mean() for o in (out if isinstance(out, (tuple, list)) else out.values()) if torch.is_tensor(o))
        opt.zero_grad(); loss.backward(); opt.step()
for _ in range(2): step()
tic = time.perf_counter(); n = 4
for _ in range(n): step()
print(mode, what, f"{(time.perf_counter()-tic)/n:.3f} s/call")
