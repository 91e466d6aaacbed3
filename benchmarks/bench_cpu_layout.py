"""The two CPU choices of the amplify stage, each against its alternative, on this machine.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_cpu_layout.py [--repeats 5] [--threads 2]

Prints one JSON object (milliseconds, means over `--repeats`, the alternatives timed in turn):
1. layer4's convolutions at 28² (384 images, forward + backward): ``nn.Conv2d`` against
   `dia.encoder.Conv2d`, which computes a single output position as one matrix product;
2. an encoder training step (384 images of 28², forward + backward) in NCHW and channels_last
   (`dia.train_encoder.encoder_precision` picks channels_last on the CPU);
3. the width-32 DDPM U-Net's dissolving forward (96 images of 32², inference) in NCHW and
   channels_last (`dia.dissolve.Dissolver` runs channels_last). Random weights;
4. a DDPM training step of the same U-Net (`dia.diffusion.training_step`: 128 images of 32²,
   forward, backward, clipping, Adam) in NCHW and channels_last.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    return round((time.perf_counter() - tic) / repeats * 1000, 1)


def _conv(cls, shape, in_ch, out_ch, kernel, stride, pad):
    conv = cls(in_ch, out_ch, kernel, stride, pad, bias=False)
    x = torch.randn(shape, requires_grad=True)
    return lambda: conv(x).sum().backward()


def main() -> None:
    from dia.config import DiffusionConfig
    from dia.diffusion import build_scheduler, build_unet, make_optimizer, training_step
    from dia.encoder import AmplifyEncoder, Conv2d

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from dia.runtime import describe_device

    out = {"benchmark": "cpu_layout", "torch": torch.__version__, "cpu": describe_device("cpu"),
           "threads": torch.get_num_threads(), "load_average_1min_before": os.getloadavg()[0]}

    convs = {"512->512 3x3 on 1x1": ((384, 512, 1, 1), 512, 512, 3, 1, 1),
             "256->512 3x3/2 on 2x2": ((384, 256, 2, 2), 256, 512, 3, 2, 1)}
    out["conv_ms"] = {
        name: {"nn.Conv2d": _ms(_conv(torch.nn.Conv2d, *spec), args.repeats),
               "dia.encoder.Conv2d": _ms(_conv(Conv2d, *spec), args.repeats)}
        for name, spec in convs.items()
    }

    def encoder_step(fmt):
        model = AmplifyEncoder().train().to(memory_format=fmt)
        x = torch.rand(384, 3, 28, 28).contiguous(memory_format=fmt)

        def step():
            o = model(x)
            (o.projection.sum() + o.shift_logits.sum()).backward()
        return step

    unet = build_unet(DiffusionConfig(width=32)).eval().requires_grad_(False)
    t = torch.full((96,), 65)

    def dissolve(fmt):
        net, x = unet.to(memory_format=fmt), torch.rand(96, 3, 32, 32).contiguous(memory_format=fmt)

        def forward():
            with torch.inference_mode():
                net(x, t)
        return forward

    ddpm_cfg = DiffusionConfig(width=32)
    alphas_cumprod = build_scheduler().alphas_cumprod.float()

    def ddpm_step(fmt):
        torch.manual_seed(0)
        net = build_unet(ddpm_cfg).train().to(memory_format=fmt)
        optimizer = make_optimizer(net, ddpm_cfg)
        x0 = (torch.rand(128, 3, 32, 32) * 2 - 1).contiguous(memory_format=fmt)
        generator = torch.Generator().manual_seed(0)
        return lambda: training_step(net, optimizer, x0, alphas_cumprod, generator)

    formats = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    for key, make in (("encoder_step_ms", encoder_step), ("dissolve_96_ms", dissolve),
                      ("ddpm_train_step_128_ms", ddpm_step)):
        times = {name: [] for name in formats}
        for _ in range(args.repeats):  # in turn, so drifting machine load hits both alike
            for name, fmt in formats.items():
                times[name].append(_ms(make(fmt), 1))
        out[key] = {name: round(sum(v) / len(v), 1) for name, v in times.items()}
    out["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
