"""The arithmetic of a whole DIA + CSI run, and the time it needs at the rate this machine sustains.

    .venv/bin/python benchmarks/flop_budget.py [--profile quick] [--dataset pneumonia]
        [--data-root ../shared/data] [--device cpu] [--threads 2] [--repeats 2]

Counts the floating-point operations of one image through each network a run uses
(`torch.utils.flop_counter`: convolutions and matrix products, two per multiply-add; norms,
activations and the optimiser are left out): the DDPM's U-Net in training (forward + backward),
dissolving (one U-Net forward per dissolved image), the encoder in training (forward +
backward) and in scoring (forward). It multiplies them by the images each stage feeds under the
profile and the dataset's counts (read from the data root without decoding), times each network
on `--device` as the stages run it (on the CPU the encoder and the dissolving U-Net
channels_last, each network in bf16 where the profile sets `diffusion.cpu_bf16` /
`dissolve.cpu_bf16` / `amplify.cpu_bf16`, else fp32; on CUDA the U-Net in bf16 where it sets
`cuda_bf16`, the encoder as `amplify.precision` says) to get the rate it sustains, and prints
one JSON object: per stage the images, TFLOP, the sustained GFLOP/s and the seconds the
arithmetic alone takes at that rate.

What the machine can reach at all is measured beside it (`matmul_ceiling`): the best rate of
large square matrix products (fp32; on CUDA also TF32, which cuDNN's fp32 convolutions use by
default, and bf16; on a CPU bf16 too when a network runs in it), and each network's rate as a
share of the ceiling of the precision it runs in (`ceiling_kinds`). A network near its ceiling
is limited by the arithmetic; far below it, by everything else.

Dissolved images are counted as training computes them: with the `amplify.dissolve_cache_gib`
cache, each (image, flip, t) drawn once while the cache has room (one image is drawn 4 times an
epoch, once per rotation, with a t and a flip of its own), then every draw of a key it could not
store (`dissolved_images`); without a cache every draw. On CUDA, when every key fits the budget,
a `DissolveTable` dissolves them all before training (`table_images`), and `--device cuda`
counts those.

The seconds are what the kernels need at their measured speed: augmentation, data movement, the
optimiser and Python come on top, so a stage takes longer (docs/MEASUREMENTS.md, "What a run
costs", compares).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up: oneDNN / cuDNN pick their kernels on the first call
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - tic) / repeats


def matmul_ceiling(device: torch.device, *, sizes=(1024, 2048, 4096), repeats: int = 3,
                   cpu_bf16: bool = False) -> dict[str, float]:
    """The best GFLOP/s of an n×n by n×n product over `sizes`, per precision `device` runs (bf16
    on a CPU only with `cpu_bf16`: without bf16 units it is emulated, and slow to time)."""
    kinds = {"fp32": (torch.float32, False)}
    if device.type == "cuda":
        kinds.update(tf32=(torch.float32, True), bf16=(torch.bfloat16, False))
    elif cpu_bf16:
        kinds.update(bf16=(torch.bfloat16, False))
    best = {}
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, (dtype, tf32) in kinds.items():
            torch.backends.cuda.matmul.allow_tf32 = tf32
            rates = []
            for n in sizes:
                a = torch.randn(n, n, device=device, dtype=dtype)
                b = torch.randn(n, n, device=device, dtype=dtype)
                rates.append(2 * n**3 / _seconds(lambda: a @ b, repeats, device) / 1e9)
            best[name] = max(rates)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return best


def ceiling_kinds(cfg, device: torch.device) -> dict[str, str]:
    """The `matmul_ceiling` precision each network of `measure_networks` runs in on `device`."""
    from dia.train_encoder import encoder_precision

    full = "tf32" if device.type == "cuda" else "fp32"  # fp32's ceiling: TF32 on CUDA (cuDNN's)
    encoder = "bf16" if encoder_precision(cfg.amplify.precision, device,
                                          cpu_bf16=cfg.amplify.cpu_bf16
                                          ).autocast_dtype == torch.bfloat16 else full
    if device.type != "cuda":  # on a CPU `amplify.precision` does not apply; `cpu_bf16` does
        return {"ddpm_train": "bf16" if cfg.diffusion.cpu_bf16 else "fp32",
                "dissolve": "bf16" if cfg.dissolve.cpu_bf16 else "fp32",
                "encoder_train": encoder, "encoder_score": encoder}
    return {"ddpm_train": "bf16" if cfg.diffusion.cuda_bf16 else "tf32",
            "dissolve": "bf16" if cfg.dissolve.cuda_bf16 else "tf32",
            "encoder_train": encoder, "encoder_score": encoder}


def measure_networks(cfg, device: torch.device, *, repeats: int) -> dict[str, dict[str, float]]:
    """GFLOP per image and sustained GFLOP/s of each network, in the precision, memory layout and
    batch size the stages use on `device` (the dissolving batch: the 4·B draws of an iteration on
    the CPU, the 2048-image batches that fill a `DissolveTable` on CUDA)."""
    from dia.data import image_size_for
    from dia.diffusion import RESOLUTION, build_scheduler, build_unet
    from dia.dissolve import Dissolver
    from dia.runtime import autocast_if, bf16_autocast
    from dia.train_encoder import build_encoder, encoder_precision

    torch.manual_seed(0)
    size, b = image_size_for(cfg), cfg.amplify.batch_size
    precision = encoder_precision(cfg.amplify.precision, device, cpu_bf16=cfg.amplify.cpu_bf16)
    layout = torch.channels_last if precision.channels_last else torch.contiguous_format
    unet = build_unet(cfg.diffusion).to(device)
    if device.type == "cuda":  # as dia.diffusion trains it
        unet = unet.to(memory_format=torch.channels_last)
    dissolver = Dissolver(build_unet(cfg.diffusion).to(device), build_scheduler().alphas_cumprod,
                          cfg.dissolve.value_range, cfg.dissolve.resolution,
                          cuda_bf16=cfg.dissolve.cuda_bf16, cpu_bf16=cfg.dissolve.cpu_bf16)
    encoder = build_encoder(cfg).to(device, memory_format=layout)
    ddpm_batch = torch.randn(cfg.diffusion.batch_size, 3, RESOLUTION, RESOLUTION, device=device)
    ddpm_t = torch.randint(0, 1000, (cfg.diffusion.batch_size,), device=device)
    train_batch = torch.rand(12 * b, 3, size, size, device=device).contiguous(memory_format=layout)
    score_batch = torch.rand(4 * cfg.score.batch_size, 3, size, size, device=device).contiguous(
        memory_format=layout)  # 4 rotations of a test batch
    dissolve_batch = torch.rand(2048 if device.type == "cuda" else 4 * b, 3, size, size,
                                device=device)
    ddpm_dtype = bf16_autocast(device, cuda=cfg.diffusion.cuda_bf16, cpu=cfg.diffusion.cpu_bf16,
                               switch="diffusion.cpu_bf16")

    def ddpm_step():  # in the precision dia.diffusion trains it (fp32 in every profile)
        unet.zero_grad(set_to_none=True)
        with autocast_if(device.type, ddpm_dtype):
            out = unet(ddpm_batch, ddpm_t).sample
        out.float().square().mean().backward()

    def dissolve():
        dissolver(dissolve_batch, torch.full((dissolve_batch.shape[0],), 50, device=device))

    def encoder_step():
        encoder.train().zero_grad(set_to_none=True)
        with autocast_if(device.type, precision.autocast_dtype):
            out = encoder(train_batch)
        (out.projection.float().square().mean() + out.shift_logits.float().square().mean()
         ).backward()

    def encoder_score():
        with torch.no_grad(), autocast_if(device.type, precision.autocast_dtype):
            encoder.eval()(score_batch)

    networks = {"ddpm_train": (ddpm_step, ddpm_batch), "dissolve": (dissolve, dissolve_batch),
                "encoder_train": (encoder_step, train_batch),
                "encoder_score": (encoder_score, score_batch)}
    out = {}
    for name, (fn, batch) in networks.items():
        flops = _flops(fn)
        seconds = _seconds(fn, repeats, device)
        out[name] = {"gflop_per_image": flops / batch.shape[0] / 1e9,
                     "gflop_per_s": flops / seconds / 1e9, "batch": batch.shape[0]}
    return out


def dissolved_images(normals: int, keys_per_image: int, draws_per_image: float,
                     capacity: float) -> float:
    """Expected images a `DissolveCache` of `capacity` entries dissolves (0: no cache).

    Each draw of an image picks one of its `keys_per_image` (flip, t) uniformly. The cache stores
    every new key until it is full, none after: until then only first draws are dissolved (the
    expected distinct keys after d draws per image are K·(1 − (1 − 1/K)^d) per image); after it,
    every draw of a key not stored (a share 1 − capacity/keys of them)."""
    keys = normals * keys_per_image
    distinct = keys * (1 - (1 - 1 / keys_per_image) ** draws_per_image)
    if distinct <= capacity:
        return distinct
    full_after = math.log1p(-capacity / keys) / math.log1p(-1 / keys_per_image)  # draws/image
    return capacity + (draws_per_image - full_after) * normals * (1 - capacity / keys)


def stage_images(cfg, counts: dict[str, int], device_type: str = "cpu") -> dict[str, float]:
    """Images each network sees over the run under `cfg` (`data.max_*` caps included)."""
    from dia.amplify import DissolveTable
    from dia.augment import num_shifts
    from dia.data import image_size_for
    from dia.optim import iterations_per_epoch

    a, cap = cfg.amplify, cfg.data.max_test_per_class or math.inf
    normals = min(counts["train_normal"], cfg.data.max_train or math.inf)
    iters = iterations_per_epoch(math.ceil(normals / a.batch_size), a.max_iters_per_epoch)
    per_epoch = min(normals, iters * a.batch_size)  # the last batch may be short
    shifts = num_shifts(a.shift)
    draws_per_image = shifts * a.epochs * per_epoch / normals  # once per shift, each epoch
    keys_per_image = 2 * (cfg.dissolve.t_max - cfg.dissolve.t_min)  # (flip, t)
    size = image_size_for(cfg)
    budget_bytes = a.dissolve_cache_gib * 2**30
    shape = torch.empty(int(normals), 3, size, size, device="meta")
    if device_type == "cuda" and budget_bytes and DissolveTable.nbytes(
            shape, cfg.dissolve.t_min, cfg.dissolve.t_max) <= budget_bytes:
        dissolved = normals * keys_per_image  # dia.train_encoder.use_dissolve_table
    else:
        capacity = budget_bytes // (3 * size * size * 4)  # float32 entries
        dissolved = dissolved_images(normals, keys_per_image, draws_per_image, capacity)
    test = sum(min(counts[k], cap) for k in ("test_normal", "test_anomalous"))
    val = [min(counts.get(k, 0), cap) for k in ("val_normal", "val_anomalous")]
    scored = (normals + test + (sum(val) if min(val) > 0 else 0)) * 4 * cfg.score.num_samples
    return {"ddpm_train": cfg.diffusion.steps * cfg.diffusion.batch_size,
            "dissolve": dissolved, "table_images": normals * keys_per_image,
            "dia_train": a.epochs * per_epoch * 3 * shifts,  # 2 clean views + dissolved
            "csi_train": a.epochs * per_epoch * 2 * shifts,
            "scoring_per_method": scored}


def budget(cfg, counts: dict[str, int], networks: dict[str, dict[str, float]],
           device_type: str = "cpu") -> dict:
    images = stage_images(cfg, counts, device_type)
    uses = {"ddpm": ("ddpm_train", "ddpm_train"), "dissolving": ("dissolve", "dissolve"),
            "dia_encoder": ("dia_train", "encoder_train"),
            "csi_encoder": ("csi_train", "encoder_train"),
            "scoring_dia_and_csi": ("scoring_per_method", "encoder_score")}
    stages = {}
    for stage, (count, network) in uses.items():
        n = images[count] * (2 if stage.startswith("scoring") else 1)
        tflop = n * networks[network]["gflop_per_image"] / 1e3
        stages[stage] = {"images": round(n), "tflop": round(tflop, 1),
                         "gflop_per_s": round(networks[network]["gflop_per_s"], 1),
                         "seconds": round(tflop * 1e3 / networks[network]["gflop_per_s"])}
    total = sum(s["seconds"] for s in stages.values())
    return {"stages": stages, "total_tflop": round(sum(s["tflop"] for s in stages.values()), 1),
            "total_seconds": total, "total_minutes": round(total / 60, 1),
            "table_images": round(images["table_images"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", default="pneumonia")
    parser.add_argument("--data-root", default=None, help="default: $DIA_DATA_ROOT, else data/")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per network")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from dia.allocator import keep_freed_memory
    from dia.config import load_config
    from dia.data.check import count_dataset
    from dia.data.registry import resolve_data_root
    from dia.runtime import describe_device, resolve_device

    device = resolve_device(args.device)
    cfg = load_config(args.profile, dataset=args.dataset)
    malloc = keep_freed_memory()  # as every stage runs (dia.allocator)
    counts = count_dataset(args.dataset, resolve_data_root(args.data_root), "results")
    networks = measure_networks(cfg, device, repeats=args.repeats)
    kinds = ceiling_kinds(cfg, device)
    ceiling = matmul_ceiling(device, repeats=args.repeats, cpu_bf16="bf16" in kinds.values())
    for name, rates in networks.items():
        rates["share_of_matmul_ceiling"] = rates["gflop_per_s"] / ceiling[kinds[name]]
    print(json.dumps({"profile": args.profile, "dataset": args.dataset, "counts": counts,
                      "machine": describe_device(args.device), "malloc": malloc,
                      "torch_threads": torch.get_num_threads(),
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "matmul_ceiling_gflop_per_s": {k: round(v, 1) for k, v in ceiling.items()},
                      "ceiling_of_network": kinds,
                      "networks": {k: {m: round(v, 3) for m, v in d.items()}
                                   for k, d in networks.items()},
                      **budget(cfg, counts, networks, device.type)}, indent=1))


if __name__ == "__main__":
    main()
