"""Run folders: where every stage writes, atomically, with a DONE marker written last.

Layout (SPEC section 10)::

    <results_root>/runs/<stage>/<dataset>/<method>/s<seed>-<hash8>/
        config.yaml  env.json  train_log.jsonl  scores.csv  metrics.csv  checkpoints/  DONE  .lock

A run whose DONE marker exists is complete and is skipped; a run folder without it is resumed.
A process training a run holds its `.lock` (`Run.exclusive`), so two never train it at once.
A folder written for another config cannot share a path, because the hash names the folder.

This module does not import torch.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dia.config import SECTIONS, ExperimentConfig, config_hash, hashed_section, to_dict

DONE = "DONE"
LOCK = ".lock"


class RunError(RuntimeError):
    """A run folder is missing, incomplete or belongs to another config."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers see all or nothing.

    The file gets the mode a plain `open` would give it (the umask's; a file replaced keeps its
    own), not mkstemp's owner-only 0600: results are often shared, e.g. on a cluster."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # os.replace would name the temporary file, not the folder in the way
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError):  # a file system without modes (some CIFS, FUSE)
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_savefig(fig, path: str | Path, **savefig_kwargs: Any) -> Path:
    """`fig.savefig` (format from the suffix) through `atomic_write_bytes`: a run killed in the
    middle of a save leaves the last whole figure, never a cut one. Returns `path`."""
    path, buffer = Path(path), io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _new_file_mode() -> int:
    """0o666 less the process's umask (which can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def read_done(path: str | Path, what_to_do: str | None = None) -> dict[str, Any]:
    """The summary in the DONE marker of the run folder `path`; {} when there is none or it is
    empty (as `touch DONE` leaves it). Every DONE this code writes is a JSON mapping, so other
    text (cut short, edited) is a RunError naming it and ending in `what_to_do` (default:
    `rerun_advice`)."""
    file = Path(path) / DONE
    what_to_do = what_to_do or rerun_advice(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"{file} cannot be read ({first_line(err)}): {what_to_do}") from None
    try:
        summary = json.loads(text) if text.strip() else {}
    except ValueError:
        summary = None
    if not isinstance(summary, dict):
        raise RunError(f"{file} is not the JSON summary this code writes (cut short or "
                       f"edited?): {what_to_do}")
    return summary


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its type when it has none), for an error
    that names a file and says what to do."""
    return (str(err).strip() or type(err).__name__).splitlines()[0]


def zip_damage(path: str | Path) -> str:
    """Why the zip at `path` (torch.save writes one) is not whole, '' when it is: not a zip at
    all (cut short: the directory is at its end), members that cannot be read, or one failing its
    CRC-32 (a bad copy or disk). Reads the whole file."""
    if not zipfile.is_zipfile(path):
        return "not a whole zip archive, as torch.save writes"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        return f"its members cannot be read ({err})"
    return f"its member {bad} fails its checksum" if bad is not None else ""


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: list[str]) -> None:
    """Write rows (dicts) as CSV, atomically, with the given column order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row[key] for key in columns})
    atomic_write_text(path, buffer.getvalue())


def is_finite_number(value: Any) -> bool:
    """A value of a train log record that can be plotted: an int or float (not a bool), finite."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def read_whole_csv(path: str | Path, remedy: str, **read_csv_kwargs: Any):
    """The table at `path`, which this code writes whole (atomically, its last row ended), as a
    pandas DataFrame; a ValueError naming it and `remedy` when it cannot be read, holds the
    markers of an unresolved git merge, or ends in the middle of a row (pandas would read a cut
    row as whole: a number cut to fewer digits, a field lost)."""
    import pandas as pd

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} cannot be read ({first_line(err)}): {remedy}") from None
    if any(line.startswith(("<<<<<<<", "=======", ">>>>>>>")) for line in text.splitlines()):
        raise ValueError(f"{path} holds the markers of an unresolved git merge: keep one side of "
                         f"each conflict (or both rows, when they are different runs); else "
                         f"{remedy}")
    if text and not text.endswith("\n"):
        raise ValueError(f"{path} ends in the middle of a row (cut short?): {remedy}")
    try:
        return pd.read_csv(io.StringIO(text), **read_csv_kwargs)
    except ValueError as err:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise ValueError(f"{path} cannot be read ({first_line(err)}): {remedy}") from None


@dataclass(frozen=True)
class Run:
    """One run folder. Create with `open_run`; all writes go through its methods."""

    path: Path
    stage: str
    dataset: str
    method: str
    seed: int
    hash: str

    @property
    def run_id(self) -> str:
        return run_id_of(self.path)

    @property
    def profile(self) -> str:
        """The profile its config came from (config.yaml), for the names of its figures."""
        config = self.path / "config.yaml"
        profile = None
        if config.is_file():
            profile = read_run_config(self.path).get("config", {}).get("profile")
        if not profile:
            raise RunError(f"{config} names no profile: this run folder was not written by "
                           "dia.results.open_run; rerun its stage")
        return str(profile)

    def file(self, name: str) -> Path:
        """Path of a file inside the run folder (parents created)."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @property
    def checkpoint_dir(self) -> Path:
        """Where the run's checkpoints go; not created here (reading a run leaves it as it was:
        `save_checkpoint` makes the folder when it writes)."""
        return self.path / "checkpoints"

    def is_done(self) -> bool:
        return (self.path / DONE).is_file()

    def require_done(self, what: str = "") -> None:
        """Raise a clear error when this run has not finished."""
        if not self.is_done():
            hint = f" ({what})" if what else ""
            raise RunError(
                f"run {self.path} is not finished{hint}: it has no {DONE} marker. "
                "Run its stage first (or let ./run_all.sh do it)."
            )

    def finished_file(self, name: str, what: str = "") -> Path:
        """Path of `name` in this finished run; a RunError saying what to do when the run is
        not finished, or lacks the file (`finished_file`)."""
        self.require_done(what)
        return finished_file(self.path, name)

    @contextlib.contextmanager
    def exclusive(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the run folder's lock: two processes never train the same run at once.

        Yields True once held. While another process holds it, blocks (saying so once) or, with
        `wait=False`, yields False at once, holding nothing. The lock is a `flock`: the system
        releases it when its process ends, killed or not. Re-entrant within a process, so a
        caller may hold it around a function that takes it again. The caller checks `is_done()`
        once inside: the other process may have finished the run meanwhile. Where the file
        system has no `flock`, runs unlocked with a warning.
        """
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield True
            finally:
                _HELD[key] -= 1
            return
        with open(self.file(LOCK), "a") as handle:
            if not _try_flock(handle, self.path):
                if not wait:
                    yield False
                    return
                print(f"waiting: another process is working on {self.path}", file=sys.stderr,
                      flush=True)
                _flock(handle, block=True)
            _HELD[key] = 1
            try:
                yield True
            finally:
                del _HELD[key]

    def mark_done(self, summary: Mapping[str, Any] | None = None) -> None:
        """Write the DONE marker last; it holds an optional JSON summary.

        First its `env.json` gains `finished`: the commit of the process that finishes the run
        (a run resumed after a commit, or a process that lived through one, ran code of more
        than one commit; `run_commits` lists them).
        """
        from dia.runtime import commit_record, utc_now

        try:
            env = read_run_env(self.path)
        except RunError as err:  # a record damaged by hand must not cost a finished training
            warnings.warn(f"{err}; finishing the run without updating it", stacklevel=2)
            env = {}
        if env:
            self.write_json("env.json", {**env, "finished": {**commit_record(), "at": utc_now()}})
        atomic_write_text(self.path / DONE, json.dumps(dict(summary or {}), indent=2) + "\n")

    def append_log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to train_log.jsonl (append-only, flushed per line)."""
        with open(self.file("train_log.jsonl"), "a") as handle:
            handle.write(json.dumps(dict(record), sort_keys=True) + "\n")
            handle.flush()

    def read_log(self) -> list[dict[str, Any]]:
        path = self.path / "train_log.jsonl"
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: the rest is still good
                continue
            if isinstance(record, dict):  # a line of another shape is damage, not a record
                records.append(record)
        return records

    def truncate_log(self, *, after_step: int, key: str = "step") -> None:
        """Drop log records past `after_step`: those written after the checkpoint a run resumes from."""
        kept = [r for r in self.read_log()
                if isinstance(step := r.get(key, -1), (int, float)) and step <= after_step]
        atomic_write_text(
            self.path / "train_log.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        )

    def write_json(self, name: str, data: Any) -> Path:
        target = self.file(name)
        atomic_write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return target


_HELD: dict[Path, int] = {}  # run folders whose lock this process holds -> nesting depth


def _flock(handle, *, block: bool) -> None:
    import fcntl

    fcntl.flock(handle, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))


def flock_now(handle) -> bool:
    """Take `handle`'s exclusive flock without waiting for its holder: False when another
    process holds it. Held at the first try, it is tried once more 0.1 s later, since
    `lock_held` (`--status`) holds a lock for an instant to ask about it. OSError where the file
    system has no flock."""
    for attempt in range(2):
        try:
            _flock(handle, block=False)
            return True
        except BlockingIOError:
            if attempt == 0:
                time.sleep(0.1)
    return False


def lock_held(path: str | Path) -> bool | None:
    """Whether a process holds the `flock` on the lock file `path` (a run folder's `.lock`, a
    results root's driver lock): True or False, None when it cannot be told (no such file, or
    no `flock` on this file system). Asks by taking a shared lock for an instant and letting go
    (`flock_now` tries again after such an instant); never creates the file."""
    import fcntl

    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return None


def _try_flock(handle, path: Path) -> bool:
    """Take the lock without waiting: False when another process holds it."""
    try:
        return flock_now(handle)
    except OSError as err:  # no flock on this file system
        print(f"warning: cannot lock {path} ({err}); running unlocked", file=sys.stderr,
              flush=True)
    return True


def run_id_of(path: str | Path) -> str:
    """"stage/dataset/method/s<seed>-<hash>": a run folder's id, relative to `results/runs`."""
    return "/".join(Path(path).parts[-4:])


def run_path(results_root: str | Path, run_id: str) -> Path:
    """The folder of a run id (`run_id_of`) under `results_root`, without creating anything."""
    return Path(results_root) / "runs" / run_id


def parse_run_name(name: str) -> tuple[int, str]:
    """(seed, hash8) of a run folder's name "s<seed>-<hash8>" (8 hex digits); ValueError when it
    is not one (e.g. a copy named "s0-e9604b16-old")."""
    match = re.fullmatch(r"s([0-9]+)-([0-9a-f]{8})", name)
    if match is None:
        raise ValueError(f"{name!r} is not a run folder's name (s<seed>-<hash8>)")
    return int(match[1]), match[2]


def parse_run_id(run_id: str) -> tuple[str, str, str, int]:
    """(stage, dataset, method, seed) of a run id (`run_id_of`); ValueError when it is not one."""
    parts = run_id.split("/")
    if len(parts) == 4:
        with contextlib.suppress(ValueError):
            return parts[0], parts[1], parts[2], parse_run_name(parts[3])[0]
    raise ValueError(f"{run_id!r} is not a run id (stage/dataset/method/s<seed>-<hash8>)")


def run_dir(
    results_root: str | Path, stage: str, dataset: str, method: str, seed: int, hash8: str
) -> Path:
    return Path(results_root) / "runs" / stage / dataset / method / f"s{seed}-{hash8}"


def open_run(
    cfg: ExperimentConfig,
    *,
    stage: str,
    method: str,
    results_root: str | Path = "results",
    sections: tuple[str, ...] = SECTIONS,
) -> Run:
    """Create (or reopen) the run folder of `cfg` for one stage and method.

    The folder name holds the hash of `sections` (`dia.stages.stage_sections` names them per
    stage, upstream sections included). `config.yaml` is written on creation; on reopening it
    must match, else the folder belongs to another config and we refuse to mix them.
    """
    from dia.runtime import process_commit

    process_commit()  # the commit this process began at, before its first run goes on
    hash8 = config_hash(cfg, sections)
    path = run_dir(results_root, stage, cfg.dataset, method, cfg.seed, hash8)
    config_file = path / "config.yaml"
    if config_file.is_file():
        require_own_config(path, cfg, stage=stage, method=method, sections=sections)
    else:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file where the results root or a folder of it should be
            raise RunError(f"cannot make the run folder {path} ({err}): is the results root "
                           f"{results_root} a folder?") from None
        atomic_write_text(config_file, yaml.safe_dump(_config_record(cfg, stage, method, sections),
                                                      sort_keys=True))
    run = Run(path=path, stage=stage, dataset=cfg.dataset, method=method, seed=cfg.seed, hash=hash8)
    if not (path / "env.json").is_file():
        from dia.runtime import capture_env

        run.write_json("env.json", capture_env(cfg.device))
    return run


def find_runs(results_root: str | Path, stage: str | None = None) -> list[Path]:
    """All run folders under `results_root/runs` (optionally of one stage), sorted."""
    base = Path(results_root) / "runs"
    pattern = f"{stage or '*'}/*/*/s*-*"
    return sorted(p for p in base.glob(pattern) if p.is_dir())


def _config_record(cfg: ExperimentConfig, stage: str, method: str,
                   sections: tuple[str, ...]) -> dict[str, Any]:
    """What `open_run` writes into the config.yaml of a run folder of `cfg` (plain data, as
    YAML reads it back)."""
    run = {"stage": stage, "method": method, "hash": config_hash(cfg, sections),
           "sections": list(sections)}
    return {"run": run, "config": to_dict(cfg)}


def require_own_config(path: str | Path, cfg: ExperimentConfig, *, stage: str, method: str,
                       sections: tuple[str, ...]) -> None:
    """A RunError saying what to do where the config.yaml in the run folder `path` cannot be
    read (`read_run_config`) or is not that of (`cfg`, stage, method) in what the run depends on
    (copied from another run's folder, edited); nothing where it is."""
    path = Path(path)
    own = _config_record(cfg, stage, method, sections)
    if _semantic(read_run_config(path), sections) != _semantic(own, sections):
        raise RunError(
            f"{path} holds a run of another config (its config.yaml differs); "
            "delete the folder or use another results root."
        )


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The run folder's `config.yaml` ({"run": ..., "config": ...}); one that is not a mapping
    of YAML (damaged, or edited by hand) is a RunError naming it and what to do."""
    file = Path(path) / "config.yaml"
    try:
        # libyaml's loader where there is one: the plan reads every finished run's config
        record = yaml.load(file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, OSError, ValueError) as err:  # ValueError: bytes that are no UTF-8
        raise RunError(f"{file} cannot be read ({' '.join(str(err).split())}): "
                       f"{remake_advice(path)}") from None
    if not isinstance(record, dict):
        what = "nothing" if record is None else type(record).__name__
        raise RunError(f"{file} holds {what}, not a run's config: {remake_advice(path)}")
    for key in ("run", "config"):  # readers take their .get: each a mapping where present
        if key in record and not isinstance(record[key], dict):
            raise RunError(f"{file} has a {key!r} that is a {type(record[key]).__name__}, not "
                           f"a mapping: {remake_advice(path)}")
    return record


def read_run_env(path: str | Path) -> dict[str, Any]:
    """The run folder's `env.json` (commit, packages, device, time); {} when it has none."""
    env = Path(path) / "env.json"
    if not env.is_file():
        return {}
    try:
        record = json.loads(env.read_text())
    except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
        problem = f"cannot be read ({err})"
    else:
        if isinstance(record, dict):
            return record
        problem = f"holds {type(record).__name__}, not a run's record"
    raise RunError(f"{env} {problem}: restore it from a copy, or delete that file (the run keeps "
                   "its results but loses its record of commit and machine)")


def finished_file(path: str | Path, name: str) -> Path:
    """Path of `name` in the run folder `path`, which is marked finished; a RunError saying what
    to do when the file is not there (deleted, or the folder was copied without it)."""
    target = Path(path) / name
    if not target.is_file():
        raise RunError(f"run {path} is marked finished but has no {name} (deleted, or the folder "
                       f"was copied without it): {rerun_advice(path)}")
    return target


def rerun_advice(path: str | Path) -> str:
    """What to do about a finished run whose results are damaged or missing."""
    return f"delete {Path(path) / DONE} and run the same command again to make them anew"


def retrain_advice(path: str | Path) -> str:
    """What to do about a finished run whose checkpoints or log are damaged, missing or another
    run's: only training it again makes them."""
    return f"delete the run folder {path} to train it again"


def restart_advice(path: str | Path) -> str:
    """What to do about a run that would resume from a checkpoint written for another run."""
    return (f"delete the run folder {path} to train it from its beginning, or use another "
            "results root")


def remake_advice(path: str | Path) -> str:
    """What to do about a run folder whose config.yaml or env.json is damaged."""
    return (f"delete the run folder {path} and run the same command again (or restore the file "
            "from a copy)")


def run_commits(env: Mapping[str, Any]) -> list[str]:
    """Every commit a run's code may come from, oldest first, from its `env.json`.

    One commit for a run created and finished by processes that did not see the checkout move;
    more when it was resumed after a commit or its process lived through one. [] when unknown.
    """
    records = [env, env.get("finished") or {}]
    found = [r.get(key) for r in records for key in ("process_git_commit", "git_commit")]
    return list(dict.fromkeys(c for c in found if c))


def _semantic(record: dict[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    cfg = record.get("config", {})
    keep = {name: hashed_section(name, cfg.get(name)) for name in sections}
    keep.update(dataset=cfg.get("dataset"), seed=cfg.get("seed"))
    run = {k: v for k, v in record.get("run", {}).items()}
    return {"config": keep, "run": run}
