"""Which upstream checkpoint a finished run was made from, and whether it is still the one there.

A DIA encoder is trained on the dissolving of one DDPM; an evaluation scores one encoder. Run
folders are named by their config's hash, so an upstream run trained again (its folder deleted,
as the damage messages advise) keeps its name, and without a record the downstream run would stay
DONE with the results of a checkpoint that no longer exists. Such a run records in its DONE (and
an encoder in its checkpoints) the upstream run and the sha256 of the checkpoint file it read;
`upstream_change` compares that with the file there now. A checkpoint saved again with the same
contents (a deterministic retraining) has the same digest and changes nothing.

Counted as unchanged: a run finished before this record existed (the published ones) and an
upstream checkpoint that is not there (a results folder copied without checkpoints): nothing can
be compared, and neither is evidence of a retraining.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dia.results import DONE, Run, run_path

UPSTREAM = "upstream"  # the key in DONE and in an encoder checkpoint


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upstream_record(run: Run, checkpoint: str | Path) -> dict[str, str]:
    """What a downstream run records of the checkpoint `checkpoint` of `run` that it reads."""
    checkpoint = Path(checkpoint)
    return {"run": run.run_id, "checkpoint": checkpoint.relative_to(run.path).as_posix(),
            "sha256": file_sha256(checkpoint)}


def record_change(record: Any, results_root: str | Path) -> str | None:
    """Why the checkpoint `record` (an `upstream_record`, or None) names differs from the file
    there now, or None where it does not (or nothing can be compared)."""
    if not isinstance(record, dict) or not {"run", "checkpoint", "sha256"} <= record.keys():
        return None
    checkpoint = run_path(results_root, record["run"]) / record["checkpoint"]
    if not checkpoint.is_file() or file_sha256(checkpoint) == record["sha256"]:
        return None
    return (f"its upstream run {record['run']} was trained again since it read "
            f"{record['checkpoint']} (the file there now differs)")


def upstream_change(run_folder: str | Path) -> str | None:
    """`record_change` for the upstream a finished run's DONE records (None without DONE)."""
    run_folder = Path(run_folder)
    try:
        done = json.loads((run_folder / DONE).read_text())
    except (OSError, ValueError):  # no DONE, or one written before it held JSON
        return None
    if not isinstance(done, dict):
        return None
    return record_change(done.get(UPSTREAM), results_root_of(run_folder))


def results_root_of(run_folder: Path) -> Path:
    """The results root of `runs/<stage>/<dataset>/<method>/s<seed>-<hash>`."""
    return run_folder.parents[4]


def is_current(run_folder: str | Path) -> bool:
    """DONE, and made from the upstream checkpoint that is there now."""
    run_folder = Path(run_folder)
    return (run_folder / DONE).is_file() and upstream_change(run_folder) is None
