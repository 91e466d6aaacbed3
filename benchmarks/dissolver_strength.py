"""How much each dissolver changes training images: the fine detail removed, and the side effects.

    .venv/bin/python benchmarks/dissolver_strength.py --dataset pneumonia --profile quick \
        --data-root ../shared/data [--images 64] [--results-root results]
        [--architecture diffusers|reference]

For `--images` random training normals (seeded) and t = 30, 65, 99 (the ends and middle of the
range DIA draws from), prints one markdown row per (dissolver, t): the mean absolute pixel change,
the mean brightness (a global shift is a shortcut that tells dissolved views apart without
looking at detail), and the energy of the Laplacian (fine detail) left, as a share of the clean
images'. Dissolvers: the profile's trained DDPM (its finished run under `--results-root`) with
both value ranges, and the Gaussian and median blurs of the ablations. Needs that DDPM run;
`--architecture reference` reads the profile's DDPM of the reference code's U-Net layout instead
(the `ddpm_arch` ablation's at the profile's width and batch, not its width-64 one).
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

TIMESTEPS = (30, 65, 99)


def laplacian_energy(images: torch.Tensor) -> float:
    """Mean squared response of the 3×3 Laplacian per channel: how much fine detail is left."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    kernel = kernel.view(1, 1, 3, 3).repeat(images.shape[1], 1, 1, 1)
    return F.conv2d(images, kernel, groups=images.shape[1]).pow(2).mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pneumonia")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--results-root", default="results")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architecture", choices=("diffusers", "reference"), default=None,
                        help="the DDPM's U-Net layout (default: the profile's)")
    args = parser.parse_args(argv)

    from dia.blur import BlurDissolver
    from dia.config import load_config
    from dia.data import load_for_config
    from dia.diffusion import METHOD, STAGE, load_dissolver_model
    from dia.dissolve import Dissolver
    from dia.results import RunError
    from dia.stages import stage_run_dir

    overrides = {"diffusion.architecture": args.architecture} if args.architecture else None
    cfg = load_config(args.profile, dataset=args.dataset, overrides=overrides)
    ddpm = stage_run_dir(cfg, STAGE, METHOD, args.results_root)
    try:
        unet, alphas_cumprod = load_dissolver_model(ddpm, "cpu")
    except RunError as err:  # not trained: it says which notebook trains it
        print(f"error: {err}", file=sys.stderr)
        return 1
    train = load_for_config(cfg, data_root=args.data_root, results_root=args.results_root).train
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    clean = train[pick[:args.images]].float() / 255
    dissolvers = {
        f"DDPM ({ddpm.name}), reference range": Dissolver(unet, alphas_cumprod, "reference"),
        f"DDPM ({ddpm.name}), normalized range": Dissolver(unet, alphas_cumprod, "normalized"),
        "Gaussian blur": BlurDissolver("gaussian_blur", cfg.dissolve.t_min, cfg.dissolve.t_max),
        "median blur": BlurDissolver("median_blur", cfg.dissolve.t_min, cfg.dissolve.t_max),
    }
    detail = laplacian_energy(clean)
    print(f"{args.dataset}, {len(clean)} training normals (seed {args.seed}); clean: mean "
          f"{clean.mean():.3f}, Laplacian energy {detail:.5f}\n")
    print("| dissolver | t | mean abs change | mean brightness | fine detail left |")
    print("|---|---|---|---|---|")
    for name, dissolve in dissolvers.items():
        for t in TIMESTEPS:
            with torch.no_grad():
                out = dissolve(clean, torch.full((len(clean),), t))
            print(f"| {name} | {t} | {(out - clean).abs().mean():.3f} | {out.mean():.3f} | "
                  f"{laplacian_energy(out) / detail:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
