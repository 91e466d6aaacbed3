"""The seeded split of datasets without an official one (SARS-COV-2, Kvasir, APTOS).

20 % of the normal images (stratified by source class, seed 0) plus all anomalous images form
the test set; the other normal images train. The split is written once to
`<results_root>/splits/<key>.csv` (path relative to the dataset folder, label, split, group) and
reused, so every method and every later run sees the same test set.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dia.data.registry import DataError
from dia.results import atomic_write_text

TEST_FRACTION = 0.2
SPLIT_SEED = 0
COLUMNS = ["path", "label", "split", "group"]


@dataclass(frozen=True)
class SplitRow:
    path: str  # relative to the dataset folder
    label: int  # 1 = anomalous
    split: str  # "train" or "test"
    group: str  # source class, for stratification and bookkeeping


def make_split(candidates: list[tuple[str, int, str]], *, seed: int = SPLIT_SEED) -> list[SplitRow]:
    """Split (path, label, group) candidates: 20 % of each normal group to test, anomalies to test."""
    rng = np.random.default_rng(seed)
    rows: list[SplitRow] = []
    groups = sorted({g for _, label, g in candidates if label == 0})
    for group in groups:
        paths = sorted(p for p, label, g in candidates if label == 0 and g == group)
        order = rng.permutation(len(paths))
        num_test = int(round(TEST_FRACTION * len(paths)))
        test = set(order[:num_test].tolist())
        rows += [SplitRow(p, 0, "test" if i in test else "train", group) for i, p in enumerate(paths)]
    rows += [SplitRow(p, 1, "test", g) for p, label, g in sorted(candidates) if label == 1]
    return rows


def split_csv_path(key: str, results_root: str | Path) -> Path:
    return Path(results_root) / "splits" / f"{key}.csv"


REDO = ("restore it, or delete it to split again (the test set then changes: re-run every "
        "method).")


def read_split(path: Path, dataset_dir: Path) -> list[SplitRow]:
    """Read a split CSV; every file it names must exist under `dataset_dir`. One cut short or
    edited is a DataError: a row cut inside its label or split, or lost, would silently change
    the test set every later run is scored on."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read split file {path}: {err}") from err
    if text and not text.endswith("\n"):  # written whole, it ends its last row
        raise DataError(f"split file {path} ends in the middle of a row (cut short?): {REDO}")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames != COLUMNS:
        raise DataError(f"{path}: expected columns {COLUMNS}, found {reader.fieldnames}")
    rows = []
    for r in reader:
        if (None in r or None in r.values() or r["label"] not in ("0", "1")
                or r["split"] not in ("train", "test")):  # a field missing or one too many
            raise DataError(f"split file {path} line {reader.line_num} is no row of path, label "
                            f"0 or 1, train or test, group (edited?): {REDO}")
        rows.append(SplitRow(r["path"], int(r["label"]), r["split"], r["group"]))
    parts = {r.split for r in rows}
    if not {"train", "test"} <= parts:  # cut short or emptied: not the split it was written as
        lacking = " and no ".join(sorted({"train", "test"} - parts))
        raise DataError(f"split file {path} has no {lacking} rows (cut short or edited?): {REDO}")
    missing = [r.path for r in rows if not (dataset_dir / r.path).is_file()]
    if missing:
        raise DataError(
            f"{path} names {len(missing)} file(s) that do not exist under {dataset_dir}, e.g. "
            f"{', '.join(missing[:3])}. Restore the files, or delete {path} to split again "
            "(the test set then changes: re-run every method)."
        )
    return rows


def write_split(path: Path, rows: list[SplitRow]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([r.path, r.label, r.split, r.group] for r in rows)
    atomic_write_text(path, buffer.getvalue())
