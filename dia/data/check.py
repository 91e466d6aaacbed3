"""`dia data check`: which datasets are present, their counts, and how to get the missing ones.

A dataset is present (usable), MISSING (its file or folder is not under the data root), or
BROKEN (it is there, but a file is corrupt or a part is absent; the problem line says which). A
present dataset the loader will warn about (a few of the images its split names are absent) gets a
note."""

from __future__ import annotations

import warnings
from pathlib import Path

from dia.data.registry import SPECS, DataError, DataMissing, resolve_data_root

COUNT_COLUMNS = ("train_normal", "test_normal", "test_anomalous", "pool_anomalous", "val_normal",
                 "val_anomalous")


def count_dataset(key: str, root: Path, results_root: Path) -> dict[str, int]:
    """Counts per split and class without decoding images (raises DataError when missing)."""
    from dia.data.folders import count_folder_dataset
    from dia.data.medmnist_files import FLAGS, count_medmnist
    from dia.data.synthetic import COUNTS

    if key == "synthetic":
        return {"train_normal": COUNTS["train"], "test_normal": COUNTS["test_normal"],
                "test_anomalous": COUNTS["test_anomalous"], "pool_anomalous": COUNTS["pool_anomalous"],
                "val_normal": COUNTS["val_normal"], "val_anomalous": COUNTS["val_anomalous"]}
    if key in FLAGS:
        return count_medmnist(key, root)
    return count_folder_dataset(key, root, results_root)


def check_datasets(
    data_root: str | Path | None = None, results_root: str | Path = "results"
) -> list[dict[str, object]]:
    """One row per dataset: `present` (usable), `found` (there at all, usable or not), counts,
    for one not present what is wrong (`problem`), and what its loader will warn about (`note`)."""
    root = resolve_data_root(data_root)
    rows = []
    for key, spec in SPECS.items():
        row: dict[str, object] = {"dataset": key, "title": spec.title, "note": ""}
        try:
            with warnings.catch_warnings(record=True) as caught:  # shown as a note, not on stderr
                warnings.simplefilter("ignore")  # a library's deprecation is no note on the data
                warnings.simplefilter("always", UserWarning)  # the loaders' warnings
                counts = count_dataset(key, root, Path(results_root))
            problem = _unusable_counts(counts)
            notes = dict.fromkeys(str(w.message) for w in caught)  # each once, in order
            row.update({c: 0 for c in COUNT_COLUMNS}, **counts, present=not problem, found=True,
                       problem=problem, note="; ".join(notes))
        except DataError as err:
            row.update({c: "" for c in COUNT_COLUMNS}, present=False,
                       found=not isinstance(err, DataMissing), problem=str(err))
        except (OSError, ValueError) as err:  # a file no reader foresaw: this dataset is broken,
            row.update({c: "" for c in COUNT_COLUMNS}, present=False, found=True,  # not the rest
                       problem=f"cannot be read: {type(err).__name__}: {err} (restore the "
                               "file from the dataset's archive, or fix its permissions)")
        rows.append(row)
    return rows


def _unusable_counts(counts: dict[str, int]) -> str:
    """Why counts that were read cannot give a result ('' when they can): no training normals
    to train on, or a test split without both classes, whose AUC is undefined."""
    if not counts.get("train_normal"):
        return "its training split has no normal images to train on"
    normal, anomalous = counts.get("test_normal", 0), counts.get("test_anomalous", 0)
    if not (normal and anomalous):
        return (f"its test split has {normal} normal and {anomalous} anomalous images: an AUC "
                "needs both classes")
    return ""


def state(row: dict[str, object]) -> str:
    """yes, MISSING or BROKEN, as `dia data check` and the driver name a dataset."""
    return "yes" if row["present"] else "BROKEN" if row["found"] else "MISSING"


def format_check(rows: list[dict[str, object]], data_root: Path) -> str:
    """The table `dia data check` prints, then the problem of each dataset not present and, for
    a missing one, where to get it, and the note of each present one that has a note."""
    from tabulate import tabulate

    table = [[r["dataset"], r["title"], state(r), *[r[c] for c in COUNT_COLUMNS]] for r in rows]
    headers = ["dataset", "name", "present", "train normal", "test normal", "test anomalous",
               "train anomalous/pool", "val normal", "val anomalous"]
    lines = [f"data root: {data_root}  (--data-root or DIA_DATA_ROOT to change it)", "",
             tabulate(table, headers=headers, tablefmt="github"), ""]
    for r in rows:
        if r["present"] and r.get("note"):
            note = str(r["note"]).removeprefix(f"{r['dataset']}: ")  # a warning names its dataset
            lines += [f"{r['dataset']}: note: {note}", ""]
        if not r["present"]:
            spec = SPECS[str(r["dataset"])]
            lines.append(f"{r['dataset']}: {r['problem']}")
            counted = r["train_normal"] != ""  # its files were read: the layout is right
            if not counted and spec.layout not in str(r["problem"]):
                lines += [f"    expected under the data root: {spec.layout}",
                          f"    where to get it: {spec.source}"]
            lines.append("")
    return "\n".join(lines)
