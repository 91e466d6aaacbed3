"""Compare a results root with an earlier record, run folder by run folder: is it the same run?

    .venv/bin/python results/device_sessions/2026-12-04_cpu_avx2/compare_with_record.py R \
        results/device_sessions/2026-12-02_cpu_avx2/runs.tar.gz

R is the results root of a new run (`./run_all.sh ... --results-root R`, or `results/` of a
fresh clone). Each run folder of the record (a tar of `runs/...`, checkpoints left out) whose
path is also under `R/runs/` is compared file by file, on the values, not on the bytes:

- `train_log.jsonl`: every logged number but the timings (`images_per_s`, `seconds`), step by
  step (a resumed run logs some steps twice; the last record of a step counts);
- `scores.csv`, `val_scores.csv`: the per-image anomaly scores, row by row;
- `metrics.csv`: the AUCs and their bootstrap intervals;
- `csi_statistics.json`: the per-rotation weights the scores use.

Prints one row per file: how many values were compared, how many are bit-identical, and the
largest absolute difference. The same config on the same kind of CPU should give 0 here; a
different oneDNN kernel (another CPU) or a change of the arithmetic would not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

TIMING_KEYS = {"images_per_s", "seconds"}


def _numbers(obj, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value, keyed by its path (booleans and strings left out)."""
    if isinstance(obj, (dict, list)):
        out = {}
        for key, value in obj.items() if isinstance(obj, dict) else enumerate(obj):
            out.update(_numbers(value, f"{prefix}{key}."))
        return out
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix.rstrip("."): float(obj)}
    return {}


def _log_values(path: Path) -> dict[str, float]:
    by_step = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        by_step[record.get("step")] = record  # the last record of a step counts
    return {f"step {step}: {key}": value
            for step, record in by_step.items()
            for key, value in _numbers({k: v for k, v in record.items()
                                        if k not in TIMING_KEYS}).items()}


def _csv_values(path: Path, key: str, columns: list[str]) -> dict[str, float]:
    frame = pd.read_csv(path)
    return {f"{row[key]}: {col}": float(row[col]) for _, row in frame.iterrows()
            for col in columns if col in frame.columns and pd.notna(row[col])}


READERS = {
    "train_log.jsonl": _log_values,
    "scores.csv": lambda p: _csv_values(p, "sample_id", ["anomaly_score"]),
    "val_scores.csv": lambda p: _csv_values(p, "sample_id", ["anomaly_score"]),
    "metrics.csv": lambda p: _csv_values(p, "metric", ["value", "ci_low", "ci_high"]),
    "csi_statistics.json": lambda p: _numbers(json.loads(p.read_text())),
}


def compare(new: dict[str, float], old: dict[str, float]) -> tuple[int, int, float, int]:
    """(values compared, bit-identical, largest |difference|, keys in one file only)."""
    shared = new.keys() & old.keys()
    same = sum(new[k] == old[k] or (math.isnan(new[k]) and math.isnan(old[k])) for k in shared)
    largest = max((abs(new[k] - old[k]) for k in shared), default=0.0)
    return len(shared), same, largest, len(new.keys() ^ old.keys())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_root", type=Path, help="the new run's results root")
    parser.add_argument("record", type=Path, help="an earlier record: runs.tar.gz")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.record) as tar:
            tar.extractall(tmp, filter="data")
        for old_file in sorted(Path(tmp).glob("runs/*/*/*/*/*")):
            if old_file.name not in READERS:
                continue
            relative = old_file.relative_to(tmp)
            new_file = args.results_root / relative
            if not new_file.is_file():
                continue
            read = READERS[old_file.name]
            n, same, largest, unmatched = compare(read(new_file), read(old_file))
            rows.append((str(relative), n, same, largest, unmatched))
    if not rows:
        print("no run folder of the record is under the results root", file=sys.stderr)
        return 1
    print("| file | values compared | bit-identical | largest difference | in one file only |")
    print("|---|---|---|---|---|")
    for name, n, same, largest, unmatched in rows:
        print(f"| `{name}` | {n} | {same} | {largest:.3g} | {unmatched} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
