"""Operators and host reads of one amplify training iteration, counted on any device.

    .venv/bin/python benchmarks/device_traffic.py [--device cpu] [--gpu-path]

On a GPU a 28² DIA iteration is bound by the host (docs/MEASUREMENTS.md, *Benchmarks*): each
operator is a kernel launch, and each host read (`.item()`, `bool(t)`, `.tolist()`, a boolean-mask
index) makes the host wait until the GPU has drained its queue. Both are properties of the code, so
they are counted here (`dia.hostsync.DeviceTraffic`) in seconds on a CPU, with a small encoder (the
counts do not depend on its width or the batch size). `--gpu-path` takes the branches the code takes
off the CPU (where a read is not free). Prints one JSON object: for CSI, DIA with the dissolver
called every iteration, DIA with a lazily filled `DissolveCache`, and DIA with a `DissolveTable`
(what training on CUDA uses), the operators of an iteration split into forward (views, augmentation,
encoder, loss), backward and optimiser, and the host reads by operator.
"""

from __future__ import annotations

import argparse
import json

import torch


def count(device: torch.device) -> dict:
    from dia.amplify import DissolveCache, amplify_forward
    from dia.augment import make_generator
    from dia.config import DiffusionConfig
    from dia.diffusion import build_scheduler, build_unet
    from dia.dissolve import Dissolver
    from dia.encoder import AmplifyEncoder
    from dia.hostsync import DeviceTraffic
    from dia.optim import LARS

    torch.manual_seed(0)
    batch = 4
    train = torch.randint(0, 256, (batch, 3, 28, 28), dtype=torch.uint8, device=device)
    images, indices = train.float() / 255, torch.arange(batch, device=device)
    dissolver = Dissolver(build_unet(DiffusionConfig(width=8)).to(device),
                          build_scheduler().alphas_cumprod)
    variants = {"csi": None, "dia": dissolver, "dia_cache": DissolveCache(dissolver, 2**30)}
    try:
        from dia.amplify import DissolveTable
        variants["dia_table"] = DissolveTable(dissolver, train, 30, 100, progress=False)
    except ImportError:  # a checkout from before the table
        pass
    out = {}
    for name, dissolve in variants.items():
        model = AmplifyEncoder(width=8).to(device)
        optimizer = LARS(model.parameters())
        gen = make_generator(0, device)
        counts = {}
        for repeat in range(2):  # the first iteration warms up (and checks the dissolver's input)
            with DeviceTraffic() as forward:
                terms = amplify_forward(model, images, gen, dissolve=dissolve, indices=indices)
            optimizer.zero_grad(set_to_none=True)
            with DeviceTraffic() as backward:
                terms["total"].backward()
            with DeviceTraffic() as step:
                optimizer.step()
            counts = {"forward": forward, "backward": backward, "optimizer": step}
        reads = sum((c.reads for c in counts.values()), start=type(forward.reads)())
        out[name] = {
            "ops_per_it": sum(c.ops for c in counts.values()),
            **{f"ops_{part}": c.ops for part, c in counts.items()},
            "host_reads_per_it": sum(reads.values()), "host_reads": dict(reads),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu-path", action="store_true",
                        help="take the branches of a device where reads stall (CPU only)")
    args = parser.parse_args()
    if args.gpu_path:
        from dia import runtime
        runtime.host_reads_are_free = lambda device: False
    result = {"device": args.device, "gpu_path": args.gpu_path,
              "counts": count(torch.device(args.device))}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
