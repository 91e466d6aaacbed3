"""Throughput of the amplify stage: DIA and CSI training iterations and CSI scoring.

    .venv/bin/python benchmarks/bench_amplify.py [--iters 5] [--size 28] [--batch 32] [--device cpu]

Prints one JSON object: per device, DIA and CSI iterations/s and encoder images/s (an iteration
feeds 3·4·B images for DIA, 2·4·B for CSI), the share of a DIA iteration spent dissolving, DIA
with a warm `DissolveCache` (every (image, flip, t) already stored, as late in a long run) and
with a `DissolveTable` (what training on CUDA uses; on CUDA also how fast one is filled), and
scoring throughput (test images/s with 4 rotations × S draws); on CUDA each with the GPU's
utilisation (`gpu_util.py`: time a second or more of work, e.g. `--iters 50`), and for each
kind of iteration the operators it dispatches and the values it reads back from the device
(`dia.hostsync`; each read makes the host wait for a GPU). The dissolver is
a randomly initialised width-32 DDPM U-Net (speed does not depend on the weights). On CUDA the
U-Net dissolves under bf16 autocast with channels_last, as in training (`dissolve.cuda_bf16`), and
the encoder is timed in fp32, as the profiles train it (`amplify.precision`), and in bf16 autocast
with channels_last (`--encoder-precision`); on the CPU both run channels_last in fp32, as in
training (`dia.train_encoder.encoder_precision`), and with `--cpu-bf16` also both under bf16
autocast, as `amplify.cpu_bf16` and `dissolve.cpu_bf16` train and dissolve (worth it with AMX
only). Reference figures on the project's 2-core CPU (`reference/reference-run-cpu.md`): DIA
2.76 s/it, CSI 0.253 s/it, eval 1,838 images in 23.8 s; on CUDA `vs_reference_gpu` sets a
PneumoniaMNIST epoch at this speed against the reference code's 5.3-6.1 s on one H100
(`reference/reference-run.md`; the bar is 10x), with the one-off filling of the dissolve table.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from gpu_util import GpuUtilisation

REFERENCE_CPU = {"dia_s_per_it": 2.76, "csi_s_per_it": 0.253, "score_images_per_s": 1838 / 23.8,
                 "cpu_capability": "AVX512"}  # an AVX-512 EPYC (reference-run-cpu.md)
# The reference code on one H100 (reference-run.md): a PneumoniaMNIST epoch is 38 iterations of
# 32 images; the mean epoch of its 24- and of its 60-epoch run. The bar: 10x faster.
REFERENCE_GPU = {"gpu": "NVIDIA H100", "iterations_per_epoch": 38, "train_images": 1214,
                 "dia_epoch_s": (5.26, 6.07), "csi_epoch_s": (1.68, 1.74)}
TABLE_ENTRIES_PER_IMAGE = 2 * 70  # a DissolveTable: both flips, t in {30..99}


def vs_reference_gpu(out: dict) -> dict:
    """A PneumoniaMNIST epoch at this call's speed against the reference's on an H100: seconds
    and speed-up (against its fastest and slowest mean epoch) for DIA as CUDA training runs it
    (`dia_table`: every dissolved image looked up), DIA dissolving every iteration and CSI;
    and the one-off filling of the table, spread over `quick`'s 24 epochs."""
    ref, iters = REFERENCE_GPU, REFERENCE_GPU["iterations_per_epoch"]
    res: dict = {"reference": f"{ref['gpu']}, {iters} iterations of 32 images an epoch"}
    for method, ref_s in (("dia_table", ref["dia_epoch_s"]), ("dia", ref["dia_epoch_s"]),
                          ("csi", ref["csi_epoch_s"])):
        epoch = iters * out[method]["s_per_it"]
        res[f"{method}_epoch_s"] = round(epoch, 3)
        res[f"{method}_speedup"] = [round(s / epoch, 1) for s in ref_s]
    build = ref["train_images"] * TABLE_ENTRIES_PER_IMAGE / out["dissolve_table_build_images_per_s"]
    res["dissolve_table_build_s"] = round(build, 1)
    with_build = 24 * res["dia_table_epoch_s"] + build
    res["dia_24_epochs_with_table_build_s"] = round(with_build, 1)
    res["dia_24_epochs_speedup"] = [round(24 * s / with_build, 1) for s in ref["dia_epoch_s"]]
    res["meets_10x"] = min(res["dia_table_speedup"]) >= 10
    return res


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_training(model, optimizer, images, dissolver, device, iters, precision, *,
                   lookup=None):
    """Seconds per iteration (wall and process CPU), dissolving seconds, GPU use, and what one
    iteration asks of the device (`dia.hostsync.DeviceTraffic`: operators, host reads)."""
    from dia.allocator import minor_page_faults
    from dia.amplify import DissolveCache, DissolveTable, amplify_forward
    from dia.augment import make_generator
    from dia.hostsync import DeviceTraffic

    gen = make_generator(0, device)
    timed = {"dissolve": 0.0}
    indices, t_range = None, (30, 100)
    if lookup == "cache":  # one t, a filled cache: every (image, flip, t) a hit, as late in a run
        dissolver = DissolveCache(dissolver, 2**34)
    elif lookup == "table":  # what training on CUDA uses: every (image, flip, t) dissolved before
        as_uint8 = (images * 255).round().to(torch.uint8)
        images = as_uint8.float() / 255
        dissolver = DissolveTable(dissolver, as_uint8, 50, 51, progress=False)
    if lookup:
        indices, t_range = torch.arange(images.shape[0], device=device), (50, 51)

    def dissolve(x, t):
        _sync(device)
        tic = time.perf_counter()
        out = dissolver(x, t)
        _sync(device)
        timed["dissolve"] += time.perf_counter() - tic
        return out

    if lookup:
        dissolve = dissolver  # timed as part of the iteration

    def step():
        terms = amplify_forward(model, images, gen, dissolve=dissolve if dissolver else None,
                                channels_last=precision.channels_last,
                                autocast_dtype=precision.autocast_dtype,
                                t_min=t_range[0], t_max=t_range[1], indices=indices)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()

    for _ in range(3):  # warm-up (the allocator's heap grows for a few steps; cache filling)
        step()
    with DeviceTraffic() as traffic:
        step()
    _sync(device)
    timed["dissolve"] = 0.0
    tic, cpu_tic, faults = time.perf_counter(), time.process_time(), minor_page_faults()
    with GpuUtilisation(device) as util:
        for _ in range(iters):
            step()
        _sync(device)
    seconds = (time.perf_counter() - tic) / iters
    cpu_seconds = (time.process_time() - cpu_tic) / iters
    counts = {"ops_per_it": traffic.ops, "host_reads_per_it": traffic.host_reads,
              "minor_page_faults_per_it": (minor_page_faults() - faults) // iters}
    return seconds, timed["dissolve"] / iters, cpu_seconds, {**counts, **util.summary()}


def _table_build_rate(dissolver, size: int, device: torch.device, images: int = 1024) -> float:
    """Images/s of filling a `DissolveTable` (t ∈ {30..99}, both flips) of `images` images."""
    from dia.amplify import DissolveTable

    train = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, device=device)
    DissolveTable(dissolver, train[:8], 30, 32, progress=False)  # warm-up
    _sync(device)
    tic = time.perf_counter()
    table = DissolveTable(dissolver, train, 30, 100, progress=False)
    _sync(device)
    return table.table[..., 0, 0, 0].numel() / (time.perf_counter() - tic)  # (image, flip, t)


def bench(device: torch.device, *, iters: int, size: int, batch: int, score_images: int,
          num_samples: int, precision: str = "fp32") -> dict:
    from dia.config import DiffusionConfig
    from dia.diffusion import build_scheduler, build_unet
    from dia.dissolve import Dissolver
    from dia.encoder import AmplifyEncoder
    from dia.optim import LARS
    from dia.scoring import extract_features
    from dia.train_encoder import encoder_precision

    torch.manual_seed(0)
    if device.type == "cuda":  # peak_memory_gib is this call's, not the largest so far
        torch.cuda.reset_peak_memory_stats(device)
    # the encoder's, as training sets it; the dissolver is bf16 on CUDA, as in training, and on
    # the CPU when the encoder is (amplify.cpu_bf16 and dissolve.cpu_bf16 both set)
    cpu_bf16 = device.type == "cpu" and precision == "bf16"
    encoder = encoder_precision(precision, device, cpu_bf16=cpu_bf16)
    unet = build_unet(DiffusionConfig(width=32)).to(device)
    dissolver = Dissolver(unet, build_scheduler().alphas_cumprod, cuda_bf16=device.type == "cuda",
                          cpu_bf16=cpu_bf16)
    images = torch.rand(batch, 3, size, size, device=device)
    out = {"device": str(device), "torch_threads": torch.get_num_threads(), "image_size": size,
           "batch": batch, "encoder_precision": precision,
           "dissolver": "ddpm width 32 (random init)"
           + (", bf16" if device.type == "cuda" or cpu_bf16 else "")}
    variants = (("csi", None, None), ("dia", dissolver, None),
                ("dia_warm_cache", dissolver, "cache"), ("dia_table", dissolver, "table"))
    for method, diss, lookup in variants:
        model = AmplifyEncoder().to(device)
        if encoder.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = LARS(model.parameters())
        s_per_it, s_dissolve, cpu_s, util = _time_training(
            model, optimizer, images, diss, device, iters, encoder, lookup=lookup,
        )
        views = 3 if diss else 2
        out[method] = {
            "s_per_it": round(s_per_it, 4), "it_per_s": round(1 / s_per_it, 3),
            "images_per_s": round(views * 4 * batch / s_per_it, 1),
            "process_cpu_s_per_it": round(cpu_s, 4), **util,
        }
        if method == "dia":
            out[method]["dissolve_share"] = round(s_dissolve / s_per_it, 3)
    model.eval()
    test = (torch.rand(score_images, 3, size, size) * 255).to(torch.uint8)
    extract_features(model, test[:8], num_samples=1, batch_size=8, device=device,
                     autocast_dtype=encoder.autocast_dtype)  # warm-up, as timed
    _sync(device)
    tic = time.perf_counter()
    cpu_tic = time.process_time()
    with GpuUtilisation(device) as util:
        extract_features(model, test, num_samples=num_samples, batch_size=100, device=device,
                         autocast_dtype=encoder.autocast_dtype)
        _sync(device)
    seconds = time.perf_counter() - tic
    out["score"] = {"images": score_images, "num_samples": num_samples,
                    "images_per_s": round(score_images / seconds, 1),
                    "forward_images_per_s": round(score_images * 4 * num_samples / seconds, 1),
                    "process_cpu_s": round(time.process_time() - cpu_tic, 3), **util.summary()}
    if device.type == "cpu":
        out["vs_reference_cpu"] = {
            "dia_speedup": round(REFERENCE_CPU["dia_s_per_it"] / out["dia"]["s_per_it"], 2),
            "csi_speedup": round(REFERENCE_CPU["csi_s_per_it"] / out["csi"]["s_per_it"], 2),
            "score_speedup": round(
                out["score"]["images_per_s"] / REFERENCE_CPU["score_images_per_s"], 2),
            "dia_over_csi": round(out["dia"]["s_per_it"] / out["csi"]["s_per_it"], 2),
            "dia_warm_cache_over_csi": round(
                out["dia_warm_cache"]["s_per_it"] / out["csi"]["s_per_it"], 2),
            # the speed-ups compare machines too where this is False
            "same_cpu_capability": torch.backends.cpu.get_cpu_capability()
            == REFERENCE_CPU["cpu_capability"],
        }
    if device.type == "cuda":  # on the CPU a run fills its cache lazily instead (too slow)
        out["dissolve_table_build_images_per_s"] = round(_table_build_rate(dissolver, size, device))
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name(device)
        out["vs_reference_gpu"] = vs_reference_gpu(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--score-images", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--encoder-precision", choices=("fp32", "bf16", "both"), default="both",
                        help="on CUDA only (the CPU: --cpu-bf16); bf16 = autocast + channels_last")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="on the CPU, time fp32 and then the encoder and dissolver in bf16 "
                             "autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    from dia.allocator import keep_freed_memory
    from dia.runtime import describe_device

    result = {"load_average_1min": round(os.getloadavg()[0], 2), "cpu": describe_device("cpu"),
              "malloc": keep_freed_memory(), "results": []}  # as every stage runs (dia.allocator)
    both = ("fp32", "bf16") if args.encoder_precision == "both" else (args.encoder_precision,)
    for device in devices:
        cpu = ("fp32", "bf16") if args.cpu_bf16 else ("fp32",)
        for precision in both if device.type == "cuda" else cpu:
            result["results"].append(bench(
                device, iters=args.iters, size=args.size, batch=args.batch,
                score_images=args.score_images, num_samples=args.num_samples, precision=precision,
            ))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
