"""Write the fixture that checks `dia.reference_unet` against the package it rebuilds.

    pip download --no-deps denoising_diffusion_pytorch==0.27.12 einops -d W
    (cd W && for f in *.whl; do unzip -qo "$f" -d src; done)
    .venv/bin/python tools/reference_unet_fixture.py --package-path W/src

Builds ``denoising_diffusion_pytorch.Unet(dim=8, dim_mults=(1, 2, 4, 8))``, fills its
parameters from a seeded generator (`fill_parameters`, the same call the test makes on ours),
runs it on a seeded batch at t = 0, 30, 99, 999 (`check_inputs`) and writes the output's mean,
standard deviation and 64 seeded entries (`probe`), its parameters' names and shapes and the
parameter count of ``Unet(64)`` (the reference's) to ``tests/fixtures/reference_unet_dim8.json``;
``tests/test_reference_unet.py`` does the same to `dia.reference_unet.ReferenceUNet` with these
three functions and compares. The package imports
torchvision, ema_pytorch and accelerate at module level for its Trainer, which the U-Net does not
use; empty stand-ins are put in their place (torchvision would pull another torch).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference_unet_dim8.json"
PROBES = 64


def fill_parameters(net) -> None:
    """Every parameter, in registration order, from one seeded generator (std 0.05; gains and
    norm weights 1 + that)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in net.named_parameters():
            values = 0.05 * torch.randn(param.shape, generator=generator)
            param.copy_(values + 1.0 if name.endswith((".g", "norm.weight")) else values)


def check_inputs():
    """A seeded batch of four x_t at 32² and their timesteps."""
    import torch

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([0, 30, 99, 999])


def probe(out) -> dict:
    """The output's mean, std and PROBES entries at seeded flat positions."""
    import torch

    flat = out.detach().flatten().double()
    where = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(2))[:PROBES]
    return {"mean": flat.mean().item(), "std": flat.std().item(),
            "positions": where.tolist(), "values": flat[where].tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-path", type=Path, required=True,
                        help="a folder holding denoising_diffusion_pytorch 0.27.12 and einops")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.package_path))
    for name, attrs in (("torchvision", ("transforms", "utils")), ("ema_pytorch", ("EMA",)),
                        ("accelerate", ("Accelerator",))):
        sys.modules.setdefault(name, types.SimpleNamespace(**dict.fromkeys(attrs)))
    import importlib.metadata

    import torch
    from denoising_diffusion_pytorch.denoising_diffusion_pytorch import Unet

    version = importlib.metadata.version("denoising_diffusion_pytorch")
    if version != "0.27.12":
        parser.error(f"denoising_diffusion_pytorch {version} found; the reference uses 0.27.12")

    unet = Unet(8, dim_mults=(1, 2, 4, 8)).eval()
    fill_parameters(unet)
    with torch.no_grad():
        out = unet(*check_inputs())
    record = {"package": f"denoising_diffusion_pytorch {version}", "dim": 8,
              "torch": torch.__version__, **probe(out),
              "parameters_dim64": sum(p.numel() for p in Unet(64).parameters()),
              "state_dict": {k: list(v.shape) for k, v in unet.state_dict().items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record) + "\n")
    print(f"wrote {args.out}: mean {record['mean']:.6f}, std {record['std']:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
