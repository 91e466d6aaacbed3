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
from pathlib import Path
from typing import Any

from dia.results import DONE, RunError, read_done, run_id_of, run_path, zip_damage

UPSTREAM = "upstream"  # the key in DONE and in an encoder checkpoint
MAX_CHAIN = 4  # upstream links a record may lead through (DDPM <- encoder <- evaluation: 2)
REDO_DONE = ("delete it, then run the same ./run_all.sh command (or the notebook that made the "
             "run) again: that checks the run and writes its DONE anew")
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, this process


def file_sha256(path: str | Path) -> str:
    """The file's sha256, computed once per process for a given (path, size, mtime): the plan
    asks again for every job of a dataset, and a quick DDPM checkpoint is some 130 MB."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def upstream_record(run_folder: str | Path, checkpoint: str | Path) -> dict[str, str]:
    """What a downstream run records of the checkpoint `checkpoint` of the run in `run_folder`
    that it reads."""
    run_folder, checkpoint = Path(run_folder), Path(checkpoint)
    return {"run": run_id_of(run_folder),
            "checkpoint": checkpoint.relative_to(run_folder).as_posix(),
            "sha256": file_sha256(checkpoint)}


def _valid(record: Any) -> bool:
    return (isinstance(record, dict)
            and all(isinstance(record.get(key), str) for key in ("run", "checkpoint", "sha256")))


class Damage(str):
    """A `record_change` that is a damaged file, not a training made again: it carries its own
    remedy, and the caller's (score or train anew) does not apply."""


def record_change(record: Any, results_root: str | Path) -> str | None:
    """Why the checkpoint `record` (an `upstream_record`; anything else counts as none) names
    differs from the file there now, or None where it does not (or nothing can be compared)."""
    if not _valid(record):
        return None
    checkpoint = run_path(results_root, record["run"]) / record["checkpoint"]
    if not checkpoint.is_file() or file_sha256(checkpoint) == record["sha256"]:
        return None
    damage = zip_damage(checkpoint)
    if damage:  # not another training's file: this one's bytes are broken
        return Damage(f"the checkpoint {record['checkpoint']} of its upstream run "
                      f"{record['run']} is damaged ({damage}; a bad copy or disk?): restore it "
                      "from a copy, or delete that run folder to train it again")
    return (f"its upstream run {record['run']} was trained again since it read "
            f"{record['checkpoint']} (the file there now differs)")


def recorded_upstream(run_folder: str | Path) -> dict[str, str] | Damage | None:
    """The upstream record in a run's DONE; None without DONE or record (an empty DONE, a run
    finished before the record existed). A DONE that is not the JSON this code writes (cut short,
    edited) is a `Damage`: what the run was made from can no longer be checked (taken as
    unchanged, the table would publish the scores of an encoder whose DDPM was trained again)."""
    try:
        summary = read_done(run_folder, REDO_DONE)
    except RunError as err:
        return Damage(str(err))
    record = summary.get(UPSTREAM)
    return record if _valid(record) else None


def upstream_change(run_folder: str | Path, _depth: int = 0) -> str | None:
    """Why a finished run is out of date, or None: the checkpoint it read changed (`record_change`),
    or the run that wrote it is itself out of date (an evaluation of a DIA encoder whose DDPM was
    trained again); a `Damage` where its DONE is, or where edited records run in a loop."""
    run_folder = Path(run_folder)
    record = recorded_upstream(run_folder)
    if isinstance(record, Damage):
        return record
    if record is None or len(run_folder.parents) < 5:  # not runs/<stage>/<dataset>/<method>/<run>
        return None
    if _depth > MAX_CHAIN:  # DDPM <- encoder <- evaluation: a longer chain loops
        return Damage(f"the upstream records in {run_folder / DONE} and the runs it names lead "
                      f"round in a loop (edited?): {REDO_DONE}")
    root = run_folder.parents[4]
    change = record_change(record, root)
    if change is not None:
        return change
    deeper = upstream_change(run_path(root, record["run"]), _depth + 1)
    if deeper is None or isinstance(deeper, Damage):
        return deeper
    return f"the run it was made from, {record['run']}, is out of date: {deeper}"


def unfinished_upstream(run_folder: str | Path) -> str | None:
    """The first run upstream of a finished one whose folder holds the recorded checkpoint but no
    DONE (being made again, or its DONE deleted as a `Damage` advises), or None. Such a run
    cannot be checked yet: the table and the ablation read-back wait for it, while training and
    scoring go on, since a DDPM being resumed keeps its checkpoint and the driver runs it first.
    A folder without that checkpoint (never trained, e.g. opened by `tools/device_grid.py`, or
    copied without checkpoints) counts as absent, as in `record_change`."""
    run_folder = Path(run_folder)
    for _ in range(MAX_CHAIN + 1):
        record = recorded_upstream(run_folder)
        if not isinstance(record, dict) or len(run_folder.parents) < 5:
            return None
        run_folder = run_path(run_folder.parents[4], record["run"])
        if (run_folder / record["checkpoint"]).is_file() and not (run_folder / DONE).is_file():
            return record["run"]
    return None


def is_current(run_folder: str | Path) -> bool:
    """DONE, and made from upstream checkpoints that are there now (`upstream_change`)."""
    run_folder = Path(run_folder)
    return (run_folder / DONE).is_file() and upstream_change(run_folder) is None


def refuse_out_of_date(run_folder: str | Path, what: str, remedy: str) -> None:
    """A RunError naming the run, why it is out of date (`upstream_change`) and `remedy`, where
    it is; nothing where it is not."""
    change = upstream_change(run_folder)
    if isinstance(change, Damage):
        raise RunError(f"{what} {run_folder} cannot be checked: {change}")
    if change is not None:
        raise RunError(f"{what} {run_folder} is DONE, but {change}: {remedy}")
