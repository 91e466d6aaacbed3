"""Folder datasets: SARS-COV-2, Kvasir, APTOS (seeded split), OCT2017 (official), BrainTumor (DDAD).

Each dataset is first listed as entries (relative path, label, group, split) without decoding
anything, so `dia data check` can count it cheaply; `load_folder_dataset` then decodes the
entries into uint8 tensors. A seeded split is written to `results/splits/` only after every
image decoded.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from dia.data.images import IMAGE_SUFFIXES, list_images, read_images, unreadable_images
from dia.data.registry import DataError, DataMissing, get_spec
from dia.data.seeded_split import SplitRow, make_split, read_split, split_csv_path, write_split
from dia.data.splits import DatasetSplits

DIRS = {
    "sars_cov2": "sars_cov2", "kvasir": "kvasir", "aptos": "aptos2019", "oct": "OCT2017",
    "braintumor": "ddad/BrainTumor",
}
KVASIR_NORMAL = ("normal-cecum", "normal-pylorus", "normal-z-line")
OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
MAX_MISSING_FRACTION = 0.01  # DDAD's data.json may name a few absent files; more is an error
_NOTICED: set[tuple[str, str]] = set()  # (file, notice) given in this process: each once


def dataset_dir(key: str, root: Path) -> Path:
    path = root / DIRS[key]
    if path.exists() and not path.is_dir():  # not missing: something else is in its place
        raise DataError(f"{path} is a file, where the folder of {key} belongs: move it away "
                        f"and put the dataset there ({get_spec(key).layout})")
    if not path.is_dir():
        spec = get_spec(key)
        raise DataMissing(
            f"missing folder {path}; expected {spec.layout} under {root}. Get it: {spec.source}"
        )
    return path


def _class_entries(base: Path, classes: dict[str, int]) -> list[tuple[str, int, str]]:
    entries = []
    for name, label in classes.items():
        entries += [(f"{name}/{p.name}", label, name) for p in list_images(base / name)]
    return entries


def _aptos_entries(base: Path) -> list[tuple[str, int, str]]:
    table = base / "train.csv"
    if not table.is_file():
        raise DataError(f"missing {table}; expected columns id_code,diagnosis")
    try:  # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        with open(table, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"id_code", "diagnosis"} <= set(reader.fieldnames):
                raise DataError(f"{table}: expected columns id_code,diagnosis, found "
                                f"{reader.fieldnames}")
            rows = list(reader)
    except (UnicodeDecodeError, OSError, csv.Error) as err:
        raise DataError(f"{table} cannot be read as a UTF-8 CSV ({err}): save it again as CSV "
                        "(UTF-8), or restore it from the dataset's archive") from err
    entries, missing = [], []
    for row in rows:
        rel = f"train_images/{row['id_code']}.png"
        if not (base / rel).is_file():
            missing.append(rel)
            continue
        try:
            grade = int(row["diagnosis"])
        except (TypeError, ValueError) as err:
            raise DataError(f"{table}: diagnosis {row['diagnosis']!r} is not a grade 0-4") from err
        if not 0 <= grade <= 4:  # else it would count as anomalous, silently
            raise DataError(f"{table}: diagnosis {grade} of {row['id_code']} is not a grade 0-4")
        entries.append((rel, int(grade != 0), f"grade{grade}"))
    if missing:
        raise DataError(
            f"{table} names {len(missing)} image(s) missing from {base / 'train_images'}, e.g. "
            f"{', '.join(missing[:3])}"
        )
    return entries


def seeded_candidates(key: str, base: Path) -> list[tuple[str, int, str]]:
    if key == "sars_cov2":
        return _class_entries(base, {"non-COVID": 0, "COVID": 1})
    if key == "kvasir":
        return _class_entries(base, {**{name: 0 for name in KVASIR_NORMAL}, "polyps": 1})
    if key == "aptos":
        return _aptos_entries(base)
    raise DataError(f"{key!r} has no seeded split")  # pragma: no cover


def list_entries(key: str, root: Path, results_root: Path, *,
                 notice_once: bool = True) -> tuple[list[SplitRow], bool]:
    """All entries of a folder dataset, and whether a new seeded split must be written.
    `notice_once=False` gives a notice about the data (`_notice`) even if given before."""
    base = dataset_dir(key, root)
    if key in ("sars_cov2", "kvasir", "aptos"):
        csv_path = split_csv_path(key, results_root)
        if csv_path.is_file():
            return read_split(csv_path, base), False
        return make_split(seeded_candidates(key, base)), True
    if key == "oct":
        rows = []
        for split in ("train", "test"):
            for name in OCT_CLASSES:
                label = int(name != "NORMAL")
                rows += [SplitRow(f"{split}/{name}/{p.name}", label, split, name)
                         for p in list_images(base / split / name)]
        return rows, False
    if key == "braintumor":
        return _braintumor_entries(base, notice_once), False
    raise DataError(f"{key!r} is not a folder dataset")  # pragma: no cover


def _braintumor_entries(base: Path, notice_once: bool = True) -> list[SplitRow]:
    split_file = base / "data.json"
    try:
        split = json.loads(split_file.read_bytes())
        lists = {
            ("train", 0, "train/0"): split["train"]["0"],
            ("pool", 0, "train/unlabeled/0"): split["train"]["unlabeled"]["0"],
            ("pool", 1, "train/unlabeled/1"): split["train"]["unlabeled"]["1"],
            ("test", 0, "test/0"): split["test"]["0"],
            ("test", 1, "test/1"): split["test"]["1"],
        }
    except FileNotFoundError as err:
        raise DataError(f"missing {split_file} (DDAD's split of the Brain Tumor images)") from err
    except OSError as err:  # a folder in its place, unreadable
        raise DataError(f"{split_file} cannot be read ({err}): restore DDAD's file") from err
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise DataError(
            f"{split_file}: expected DDAD's layout {{train: {{0: [...], unlabeled: {{0, 1}}}}, "
            f"test: {{0, 1}}}} ({err!r})"
        ) from err
    for (_, _, group), names in lists.items():  # a string would be read letter by letter
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{split_file}: {group} is not a list of image file names: restore "
                            "DDAD's file")
    rows = [SplitRow(f"images/{name}", label, part, group)
            for (part, label, group), names in lists.items() for name in names]
    present = [r for r in rows if (base / r.path).is_file()]
    missing = len(rows) - len(present)
    if missing > MAX_MISSING_FRACTION * len(rows):
        raise DataError(
            f"{split_file} names {missing} of {len(rows)} images that are not in {base / 'images'}"
        )
    if missing:
        _notice(f"braintumor: {missing} of the {len(rows)} images its data.json names are "
                "missing; going on with the images present (README, 'Datasets')", split_file,
                once=notice_once)
    return present


def _notice(message: str, path: Path, *, once: bool = True) -> None:
    """A UserWarning filed under the data file `path` (its line 0 echoes no line of code beneath
    it), given once per process and file unless `once` is False: a notebook that loads a dataset
    twice shows it once."""
    if once:
        if (str(path), message) in _NOTICED:
            return
        _NOTICED.add((str(path), message))
    warnings.warn_explicit(message, UserWarning, filename=str(path), lineno=0, module=__name__)


def load_folder_dataset(
    key: str, root: Path, size: int, results_root: Path, *, max_pool: int | None = None
) -> DatasetSplits:
    rows, new_split = list_entries(key, root, results_root)
    base = dataset_dir(key, root)
    train = [r for r in rows if r.split == "train" and r.label == 0]
    test = [r for r in rows if r.split == "test"]
    pool = [r for r in rows if r.split == "pool" or (r.split == "train" and r.label == 1)]
    if max_pool is not None and len(pool) > max_pool:
        keep = np.sort(np.random.default_rng(0).permutation(len(pool))[:max_pool])
        pool = [pool[i] for i in keep]
    for name, part in (("training normal", train), ("test normal", [r for r in test if r.label == 0]),
                       ("test anomalous", [r for r in test if r.label == 1])):
        if not part:
            raise DataError(f"{key}: no {name} images under {base}")
    splits = DatasetSplits(
        key=key,
        image_size=size,
        train=read_images([base / r.path for r in train], size, desc=f"{key} train"),
        train_ids=[r.path for r in train],
        test=read_images([base / r.path for r in test], size, desc=f"{key} test"),
        test_labels=torch.tensor([r.label for r in test], dtype=torch.int64),
        test_ids=[r.path for r in test],
        pool=read_images([base / r.path for r in pool], size, desc=f"{key} pool")
        if pool else torch.empty(0, 3, size, size, dtype=torch.uint8),
        pool_labels=torch.tensor([r.label for r in pool], dtype=torch.int64),
        pool_ids=[r.path for r in pool],
    )
    if new_split:  # only now that every image decoded
        write_split(split_csv_path(key, results_root), rows)
    return splits


def count_folder_dataset(key: str, root: Path, results_root: Path) -> dict[str, int]:
    """Counts per split and class; a DataError when a listed file cannot be an image. Its
    notices about the data are given every time (`dia data check` turns them into notes)."""
    rows, _ = list_entries(key, root, results_root, notice_once=False)
    base = dataset_dir(key, root)
    bad = unreadable_images([base / r.path for r in rows])
    if bad:
        shown = ", ".join(str(p) for p in bad[:3])
        if len(bad) > 3:
            shown += f" and {len(bad) - 3} more"
        raise DataError(f"{len(bad)} of {len(rows)} {key} images are empty or not PNG, JPEG, BMP "
                        f"or TIFF files: {shown}; replace or delete them")
    return {
        "train_normal": sum(r.split == "train" and r.label == 0 for r in rows),
        "test_normal": sum(r.split == "test" and r.label == 0 for r in rows),
        "test_anomalous": sum(r.split == "test" and r.label == 1 for r in rows),
        "pool_anomalous": sum(r.split != "test" and r.label == 1 for r in rows),
    }


__all__ = ["IMAGE_SUFFIXES", "count_folder_dataset", "load_folder_dataset"]
