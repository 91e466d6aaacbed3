"""The H200 figures of docs/MEASUREMENTS.md that are derived from this session's record, not printed by a tool.

    .venv/bin/python results/device_sessions/2026-11-30_h200/derived_figures.py   (repo root)

How busy nvidia-smi saw the GPU over the grid of call 1 (from 44 s, when the lanes started, to
the last sample; 60-360 s while all four lanes ran), and per run in runs_after_call3.tar.gz: the
DDPMs' training time and images/s (each train_log line covers the steps since the last one, at its
images/s) and the encoders' median epoch and training seconds. Cell totals (DDPM + training +
scoring, in a lane) are the `seconds` column of grid_call1.csv.
"""
import tarfile, pandas as pd, yaml
d = "results/device_sessions/2026-11-30_h200"
u = pd.read_csv(f"{d}/gpu_util_call1.csv", skipinitialspace=True)
t = pd.to_datetime(u["timestamp"], format="%Y/%m/%d %H:%M:%S.%f")
s, busy = (t - t.iloc[0]).dt.total_seconds(), u["utilization.gpu [%]"].str.rstrip(" %").astype(float)
for lo, hi in ((44, 413), (60, 360)):  # the grid phase of call 1; all four lanes running
    print(f"{lo}-{hi} s: busy {busy[s.between(lo, hi)].mean():.1f} % (median {busy[s.between(lo, hi)].median():.0f})")
tar = tarfile.open(f"{d}/runs_after_call3.tar.gz")
for name in sorted(n for n in tar.getnames() if n.endswith("train_log.jsonl")):
    log = pd.read_json(tar.extractfile(name), lines=True)
    c = yaml.safe_load(tar.extractfile(name.replace("train_log.jsonl", "config.yaml")))["config"]
    what = f"{name[5:-16]} width {c['diffusion']['width']} steps {c['diffusion']['steps']} {c['dissolve']['dissolver']}:"
    if "epoch" in log:  # an encoder: the median epoch, and its training time from DONE
        done = yaml.safe_load(tar.extractfile(name.replace("train_log.jsonl", "DONE")))
        print(what, f"median epoch {log['seconds'].median():.2f} s, "
              f"training {done['seconds_this_session']} s")
    else:  # a DDPM: each log line covers the steps since the last one, at its images/s
        n = log["step"].diff().fillna(log["step"].iloc[0]) * c["diffusion"]["batch_size"]
        print(what, f"{(n / log['images_per_s']).sum():.1f} s, {n.sum() / (n / log['images_per_s']).sum():.0f} images/s")
