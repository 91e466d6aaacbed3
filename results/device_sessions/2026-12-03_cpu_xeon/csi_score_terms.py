"""Does the shift term pull DIA's synthetic AUC below 0.5? The CSI score split into its two terms.

    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python \
        results/device_sessions/2026-12-03_cpu_xeon/csi_score_terms.py R DATASET SEEDS \
        [DATA_ROOT [PROFILE]]

R is the results root of e.g. `./run_all.sh --profile quick --datasets synthetic --methods
dia,csi --results-root R` (its DONE amplify runs keep their checkpoints), SEEDS a comma list (0),
DATA_ROOT ../shared/data by default, PROFILE quick. For DIA and CSI and each seed, this extracts
the training, test and validation features of the last checkpoint once, exactly as
`dia.evaluate` does, and scores them three ways (`dia.scoring.csi_normality_score` and
`csi_score_terms`, which `dia.evaluate` now also writes into metrics.csv as `auc_contrast`,
`auc_shift`):

    full        s(x) = (1/K) Σ_k [λcon_k · max_m ⟨z̄_k(x), a_k,m⟩ + λcls_k · c̄_k(x)[k]]
                (must equal the evaluate run's scores.csv: checked, printed as max |diff|)
    contrast    (1/K) Σ_k λcon_k · max_m ⟨z̄_k(x), a_k,m⟩  (the shift term dropped)
    shift       (1/K) Σ_k λcls_k · c̄_k(x)[k]             (the shift term alone)

and prints the AUC of each on test and val, with the λ weights.

The question (docs/MEASUREMENTS.md, "Measured so far", the synthetic set): DIA's λcls on the synthetic set are
all negative (its rotation head learnt nothing there), so its shift term ranks a confidently
recognised rotation as less normal. Written before the run: the lead holds if, for DIA, the
`contrast` AUC is above 0.5 on both test and val while `shift` is below 0.5 on both; it fails if
`contrast` is itself at or below 0.5 (the features, not the weights, are the problem). This is a
diagnosis only: the score the suite reports stays the reference's (λcls kept).

Also run on the 2026-12-02 Xeon record's PneumoniaMNIST quick runs, seeds 0-2 (their checkpoints
were still on that machine), to see which term carries DIA's and CSI's AUC there: no rule, a
description.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import torch

from dia.config import load_config
from dia.data import load_for_config
from dia.evaluate import SCORES, finished_amplify_run
from dia.metrics import compute_auc
from dia.scoring import csi_normality_score, csi_score_terms, csi_statistics, extract_features
from dia.stages import open_stage_run
from dia.train_encoder import load_encoder


def main(root: str, dataset: str, seeds: str, data_root: str = "../shared/data",
         profile: str = "quick") -> dict:
    torch.set_num_threads(2)
    out = {}
    for seed, method in ((int(s), m) for s in seeds.split(",") for m in ("dia", "csi")):
        cfg = load_config(profile, dataset=dataset, seed=seed)
        model, meta = load_encoder(finished_amplify_run(cfg, method, root), cfg, method, "cpu")
        splits = load_for_config(cfg, data_root=data_root, results_root=root)
        s = cfg.score
        common = dict(num_samples=s.num_samples, crop_scale=s.crop_scale, shift=cfg.amplify.shift,
                      device="cpu")
        train = extract_features(model, splits.train, batch_size=s.train_batch_size, **common)
        stats = csi_statistics(train)
        row = {"epoch": meta["epoch"], "weight_con": stats.weight_con.tolist(),
               "weight_cls": stats.weight_cls.tolist()}
        for split, images, labels in (("test", splits.test, splits.test_labels),
                                      ("val", splits.val, splits.val_labels)):
            feats = extract_features(model, images, batch_size=s.batch_size, **common)
            scores = {"full": csi_normality_score(stats, feats), **csi_score_terms(stats, feats)}
            for name, normality in scores.items():
                anomaly = (-normality).numpy()
                row[f"{split}_{name}"] = round(compute_auc(labels.numpy(), anomaly), 4)
                if split == "test" and name == "full":
                    path = open_stage_run(cfg, "evaluate", method, root).path / SCORES
                    published = pd.read_csv(path, dtype={"sample_id": str}).set_index("sample_id")
                    ours = pd.Series(anomaly, index=list(splits.test_ids))
                    row["max_abs_diff_vs_scores_csv"] = float(
                        np.abs(published["anomaly_score"] - ours.loc[published.index]).max())
        out[f"{method} s{seed}"] = row
        print(f"{dataset} {method} s{seed}", json.dumps(row), flush=True)
    return out


if __name__ == "__main__":
    main(*sys.argv[1:])
