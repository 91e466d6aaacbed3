"""What keeping freed memory (`dia.allocator`) buys on this machine: the same steps with glibc's
default malloc and with the tuning every stage applies.

    .venv/bin/python benchmarks/bench_malloc.py [--threads 2] [--steps 3] [--iters 5]
        [--train-epochs 4 --pairs 2 --data-root ../shared/data]

Runs `bench_diffusion.py` (a DDPM optimiser step of the `quick` profile: width 32, 128 images;
dissolving 128 images) and `bench_amplify.py` (DIA and CSI iterations, scoring) on the CPU, each
twice in fresh processes, first with ``DIA_SYSTEM_MALLOC=1`` (glibc's defaults) and then
without, and prints one JSON object: each figure under both allocators, the speed-up, and the
minor page faults per step or iteration (freshly mapped pages the kernel zeroes). These short
figures are timed once each way, in a fixed order: rough, a few seconds each. With
`--train-epochs E`, also the real thing: `--pairs` times, one process each way in turn, DIA
trains E epochs of `quick` on PneumoniaMNIST (`dia.train_encoder.train_amplifier`; its dissolver
a 1-step DDPM, since speed does not depend on the weights), with seconds and faults per epoch
(about 6 minutes a process for 4 epochs on the 2-core CPU). The load average is recorded: other
processes on the machine skew every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(script: str, args: list[str], system_malloc: bool) -> dict:
    env = dict(os.environ)
    env.pop("DIA_SYSTEM_MALLOC", None)
    if system_malloc:
        env["DIA_SYSTEM_MALLOC"] = "1"
    out = subprocess.run([sys.executable, str(HERE / script), *args], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout  # progress bars show
    return json.loads(out)


def _train_child(root: str, epochs: int, data_root: str) -> None:
    """In a fresh process: DIA epochs of `quick` on PneumoniaMNIST; prints one JSON line."""
    import time

    from dia.allocator import keep_freed_memory, minor_page_faults
    from dia.config import load_config, replace
    from dia.diffusion import train_diffusion
    from dia.train_encoder import train_amplifier

    cfg = replace(load_config("quick", dataset="pneumonia", seed=0),
                  {"diffusion.steps": 1, "amplify.epochs": epochs})
    train_diffusion(cfg, results_root=root, data_root=data_root)  # untimed: a second or two
    seconds, faults = [], []
    last = [time.perf_counter(), minor_page_faults()]

    def on_epoch(epoch: int) -> None:  # what this epoch took, from the end of the last one
        now = [time.perf_counter(), minor_page_faults()]
        seconds.append(round(now[0] - last[0], 1))
        faults.append(now[1] - last[1])
        last[:] = now

    train_amplifier(cfg, "dia", results_root=root, data_root=data_root, on_epoch=on_epoch)
    print(json.dumps({"malloc": keep_freed_memory(), "seconds_per_epoch": seconds,
                      "total_seconds": round(sum(seconds), 1),
                      "minor_page_faults_per_epoch": faults}))


def _train_pairs(args) -> list[dict]:
    """The training A/B: a fresh results root per process, system and kept in turn."""
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_malloc_") as base:
        for pair in range(args.pairs):
            for kind in ("system", "kept"):
                child = ["--threads", str(args.threads), "--_train-child",
                         f"{base}/{pair}-{kind}", str(args.train_epochs), args.data_root]
                runs.append({"pair": pair, **_run("bench_malloc.py", child, kind == "system")})
    return runs


def _pair(name: str, system: dict, kept: dict, seconds: str, faults: str) -> dict:
    return {"figure": name, f"system_{seconds}": round(system[seconds], 3),
            f"kept_{seconds}": round(kept[seconds], 3),
            "speedup": round(system[seconds] / kept[seconds], 2),
            f"system_{faults}": system.get(faults), f"kept_{faults}": kept.get(faults)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed DDPM steps / dissolve calls")
    parser.add_argument("--iters", type=int, default=5, help="timed DIA / CSI iterations")
    parser.add_argument("--train-epochs", type=int, default=0,
                        help="also train DIA this many epochs each way (0: skip)")
    parser.add_argument("--pairs", type=int, default=2, help="training processes each way")
    parser.add_argument("--data-root", default="../shared/data", help="holds PneumoniaMNIST")
    parser.add_argument("--_train-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._train_child:
        import torch

        torch.set_num_threads(args.threads)
        root, epochs, data_root = args._train_child
        _train_child(root, int(epochs), data_root)
        return
    diffusion = ["--device", "cpu", "--widths", "32", "--batch", "128", "--dissolve-batch",
                 "128", "--steps", str(args.steps), "--threads", str(args.threads),
                 "--precision", "fp32"]  # as every profile trains
    amplify = ["--device", "cpu", "--iters", str(args.iters), "--score-images", "200",
               "--threads", str(args.threads)]
    load_before = os.getloadavg()[0]
    runs = {kind: {"diffusion": _run("bench_diffusion.py", diffusion, kind == "system"),
                   "amplify": _run("bench_amplify.py", amplify, kind == "system")}
            for kind in ("system", "kept")}
    assert runs["kept"]["diffusion"]["malloc"] == "kept", "the tuning did not apply here"
    figures = []
    ddpm = {kind: r["diffusion"]["results"][0] for kind, r in runs.items()}
    figures.append(_pair("ddpm step (128 images)", ddpm["system"]["ddpm"], ddpm["kept"]["ddpm"],
                         "s_per_step", "minor_page_faults_per_step"))
    figures.append(_pair("dissolve (128 images)", ddpm["system"]["dissolve"],
                         ddpm["kept"]["dissolve"], "s_per_batch", "minor_page_faults_per_batch"))
    amp = {kind: r["amplify"]["results"][0] for kind, r in runs.items()}
    for method in ("dia", "dia_warm_cache", "csi"):
        figures.append(_pair(f"{method} iteration", amp["system"][method], amp["kept"][method],
                             "s_per_it", "minor_page_faults_per_it"))
    score = {kind: 1 / amp[kind]["score"]["images_per_s"] for kind in amp}
    figures.append({"figure": "scoring", "system_s_per_image": round(score["system"], 4),
                    "kept_s_per_image": round(score["kept"], 4),
                    "speedup": round(score["system"] / score["kept"], 2)})
    training = _train_pairs(args) if args.train_epochs else []
    print(json.dumps({"machine": runs["kept"]["diffusion"]["cpu"], "threads": args.threads,
                      "load_average_1min_before": load_before,
                      "load_average_1min_after": os.getloadavg()[0], "figures": figures,
                      "dia_training": training}, indent=1))


if __name__ == "__main__":
    main()
