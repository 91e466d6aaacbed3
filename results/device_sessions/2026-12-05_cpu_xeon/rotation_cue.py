"""Where DIA's rotation head learnt to tell rotations apart on the synthetic set (quick, seed 0).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python \
        results/device_sessions/2026-12-05_cpu_xeon/rotation_cue.py R ../shared/data [DATASET]
        [--cpu-bf16]

R: a results root holding the finished quick runs of DATASET (default synthetic) with their
checkpoints (e.g. after `./run_all.sh --profile quick --datasets synthetic --methods dia,csi
--results-root R`; `--cpu-bf16` for runs made with `cpu_bf16: true` in the three sections). For the
DIA and the CSI encoder (eval mode, no augmentation), the rotation head's accuracy and cross-
entropy on 256 training images rotated by k = 0..3, clean and dissolved (one t drawn in 30..99
with seed 0) before the rotation, as DIA's third view is made.

Recorded on 2026-12-05 (the 2-core Intel Xeon with AMX; R: the runs of
`synthetic_quick_run_all.log`, made at b7d5846):

    dia clean     t=85: rotation accuracy 0.255 (per k [0.04, 0.28, 0.3, 0.4]), CE 1.382
    dia dissolved t=85: rotation accuracy 1.000 (per k [1.0, 1.0, 1.0, 1.0]), CE 0.000
    csi clean     t=85: rotation accuracy 0.262 (per k [0.07, 0.12, 0.47, 0.39]), CE 1.391
    csi dissolved t=85: rotation accuracy 0.235 (per k [0.04, 0.04, 0.44, 0.43]), CE 1.394

DIA's head reads the rotation of a dissolved image perfectly and of a clean one at chance: its
training CE fell on the dissolved view alone. A likely cue is the frame dissolving leaves along
the padded edge (`15_dissolving_gallery`), which turns with the image; not tested further.

On PneumoniaMNIST (the same day, with `pneumonia --cpu-bf16`; R: a copy of the bf16 quick runs
of seed 0 made on 2026-12-04 at a1c9d6d with the three switches set in configs/quick.yaml,
`quick_bf16_runs.tar.gz` of `results/device_sessions/2026-12-04_cpu_xeon/` without their
checkpoints; DIA's test AUC 0.834) both encoders
read every rotation of clean and dissolved images alike (accuracy 1.000, CE <= 0.002, t = 85):
chest X-rays show their rotation, so there the cue changes nothing the head could not learn
anyway.
"""
import sys

import torch
import torch.nn.functional as F

from dia.augment import rotate
from dia.config import load_config
from dia.data import load_for_config
from dia.diffusion import load_dissolver_model
from dia.dissolve import Dissolver
from dia.stages import open_stage_run, stage_run_dir
from dia.train_encoder import load_encoder


def main(root: str, data_root: str, dataset: str = "synthetic", bf16: bool = False) -> None:
    torch.manual_seed(0)
    overrides = {f"{s}.cpu_bf16": True for s in ("diffusion", "dissolve", "amplify")} if bf16 else {}
    cfg = load_config("quick", dataset=dataset, seed=0, overrides=overrides)
    splits = load_for_config(cfg, data_root=data_root, results_root=root)
    x = splits.train[:256].float() / 255
    unet, alphas = load_dissolver_model(stage_run_dir(cfg, "diffusion", "ddpm", root),
                                        device="cpu")
    dissolver = Dissolver(unet, alphas)
    t = torch.randint(30, 100, (1,)).item()
    views = {"clean": x,
             "dissolved": torch.cat([dissolver(x[i:i + 64], t) for i in range(0, len(x), 64)])}
    for method in ("dia", "csi"):
        model, _ = load_encoder(open_stage_run(cfg, "amplify", method, root), cfg, method, "cpu")
        for name, images in views.items():
            accs, ces = [], []
            with torch.no_grad():
                for k in range(4):
                    logits = model(rotate(images, k)).shift_logits
                    target = torch.full((len(images),), k)
                    accs.append((logits.argmax(1) == target).float().mean().item())
                    ces.append(F.cross_entropy(logits, target).item())
            print(f"{method} {name:9s} t={t}: rotation accuracy {sum(accs) / 4:.3f} "
                  f"(per k {[round(a, 2) for a in accs]}), CE {sum(ces) / 4:.3f}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--cpu-bf16"]
    main(*args[:3], bf16="--cpu-bf16" in sys.argv)
