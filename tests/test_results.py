"""Run folders: paths, atomic writes, DONE semantics, refusal to mix configs."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import zipfile

import pytest

from dia.config import load_config, replace
from dia.results import (
    RunError, atomic_write_text, find_runs, open_run, parse_run_id, parse_run_name, read_run_config,
    read_run_env, run_commits,
)


def test_run_folder_layout(results_root):
    cfg = load_config("smoke", dataset="synthetic", seed=3)
    run = open_run(cfg, stage="diffusion", method="ddpm", results_root=results_root,
                   sections=("data", "diffusion"))
    assert run.path.parent == results_root / "runs" / "diffusion" / "synthetic" / "ddpm"
    assert run.path.name.startswith("s3-") and len(run.path.name) == 3 + 8
    assert (run.path / "config.yaml").is_file() and (run.path / "env.json").is_file()
    assert read_run_config(run.path)["config"]["seed"] == 3
    assert find_runs(results_root, "diffusion") == [run.path]
    assert run.profile == "smoke"  # figures are named with it
    assert run.checkpoint_dir == run.path / "checkpoints"
    assert not run.checkpoint_dir.exists()  # asking where checkpoints go (to read one) makes none
    (run.path / "config.yaml").write_text("config: {seed: 3}\n")  # not written by open_run
    with pytest.raises(RunError, match="names no profile"):
        run.profile


def test_a_damaged_config_or_env_record_names_its_file_and_what_to_do(results_root):
    cfg = load_config("smoke", dataset="synthetic")
    run = open_run(cfg, stage="diffusion", method="ddpm", results_root=results_root)
    config_file, env_file = run.path / "config.yaml", run.path / "env.json"
    good = config_file.read_text()
    for text, says in (("run: [unclosed\n  : :", "cannot be read"), ("- a\n- list\n", "holds list"),
                       (b"\xff\xfe\x00\x01", "cannot be read"),
                       ("run: {}\nconfig: edited\n", "has a 'config' that is a str, not a mapping")):
        if isinstance(text, bytes):  # bytes that are no text
            config_file.write_bytes(text)
        else:
            config_file.write_text(text)
        for call in (lambda: read_run_config(run.path),
                     lambda: open_run(cfg, stage="diffusion", method="ddpm",
                                      results_root=results_root)):
            with pytest.raises(RunError, match=f"config.yaml {says}.*delete the run folder"):
                call()
    config_file.write_text(good)
    env_file.write_text('{"device": "cpu"')  # cut short
    with pytest.raises(RunError, match="env.json cannot be read.*delete that file"):
        read_run_env(run.path)
    with pytest.warns(UserWarning, match="finishing the run without updating it"):
        run.mark_done()  # a damaged record does not cost a finished training
    assert run.is_done()
    env_file.unlink()
    assert read_run_env(run.path) == {}


def test_run_names_and_ids_parse_and_others_are_refused():
    assert parse_run_name("s12-0a1b2c3d") == (12, "0a1b2c3d")
    assert parse_run_id("amplify/pneumonia/dia/s3-794608c4") == ("amplify", "pneumonia", "dia", 3)
    for name in ("my_ddpm", "s-0a1b2c3d", "sx-0a1b2c3d", "s3-", "3-0a1b2c3d", "s0-0a1b2c3d-old",
                 "s²-0a1b2c3d", "s0-x"):
        with pytest.raises(ValueError, match="not a run folder's name"):
            parse_run_name(name)
    for run_id in ("pneumonia/dia/s3-794608c4", "amplify/pneumonia/dia/my_run"):
        with pytest.raises(ValueError, match="is not a run id"):
            parse_run_id(run_id)


def test_a_cpu_is_described_with_its_vector_isa():
    """The vector ISA changes rounding and speed: env.json must say which one a run used."""
    import torch

    from dia.runtime import describe_device

    text = describe_device("cpu")
    assert text.startswith("cpu (") and torch.backends.cpu.get_cpu_capability() in text


def test_a_cpu_is_described_by_its_model_name_where_linux_gives_one(monkeypatch, tmp_path):
    from dia import runtime

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f\n")
    assert runtime.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Processor"
    real_model = runtime.cpu_model
    monkeypatch.setattr(runtime, "cpu_model", lambda: real_model(cpuinfo))
    cores = runtime.os.cpu_count()
    assert f"({cores} cores, Intel(R) Xeon(R) Processor, " in runtime.describe_device("cpu")
    cpuinfo.unlink()  # not Linux: the architecture, as before
    assert real_model(cpuinfo) == (runtime.platform.processor() or runtime.platform.machine())


@pytest.fixture
def checkout(monkeypatch):
    """A fake checkout: `checkout.head` is what `git rev-parse` answers; `checkout.new_process()`
    forgets the commit this process began at, as a fresh process would."""
    import types

    from dia import runtime

    state = types.SimpleNamespace(head="a" * 40, new_process=runtime.process_commit.cache_clear)
    monkeypatch.setattr(runtime, "git_commit", lambda repo=None: state.head)
    state.new_process()
    yield state
    state.new_process()


def test_a_run_records_one_commit_when_the_checkout_stays(results_root, checkout):
    run = open_run(load_config("smoke"), stage="amplify", method="csi", results_root=results_root)
    run.mark_done()
    env = read_run_env(run.path)
    assert env["git_commit"] == env["finished"]["git_commit"] == checkout.head
    assert "process_git_commit" not in env and "process_git_commit" not in env["finished"]
    assert run_commits(env) == [checkout.head]


def test_a_process_that_lives_through_a_commit_records_both(results_root, checkout, caplog):
    """A long script imports part of `dia` at one commit and the rest later, at another."""
    cfg = load_config("smoke")
    first = open_run(cfg, stage="diffusion", method="ddpm", results_root=results_root,
                     sections=("data", "diffusion"))
    checkout.head = "b" * 40  # a commit lands while the process trains
    with caplog.at_level("WARNING", logger="dia.runtime"):
        second = open_run(cfg, stage="amplify", method="dia", results_root=results_root)
    assert "may mix code of both commits" in caplog.text
    env = read_run_env(second.path)
    assert env["process_git_commit"] == "a" * 40 and env["git_commit"] == "b" * 40
    assert run_commits(env) == ["a" * 40, "b" * 40]
    first.mark_done()  # the first run's env.json says it was created at a and finished under b
    assert run_commits(read_run_env(first.path)) == ["a" * 40, "b" * 40]


def test_a_run_resumed_at_another_commit_records_both(results_root, checkout):
    cfg = load_config("smoke")
    open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    checkout.head = "c" * 40
    checkout.new_process()  # killed, then resumed by a fresh process after a commit
    run = open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    assert read_run_env(run.path)["git_commit"] == "a" * 40  # env.json is written once
    run.mark_done()
    env = read_run_env(run.path)
    assert env["finished"]["git_commit"] == "c" * 40
    assert "process_git_commit" not in env["finished"]
    assert run_commits(env) == ["a" * 40, "c" * 40]
    assert run_commits({}) == []


def test_a_resumed_run_that_lives_through_a_commit_records_all_three(results_root, checkout):
    cfg = load_config("smoke")
    open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    checkout.head = "b" * 40
    checkout.new_process()  # resumed at b ...
    run = open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    checkout.head = "c" * 40  # ... and c lands before it finishes
    run.mark_done()
    assert run_commits(read_run_env(run.path)) == ["a" * 40, "b" * 40, "c" * 40]


def test_a_results_root_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunError, match=r"cannot make the run folder .*is the results root .*file "
                                       "a folder"):
        open_run(load_config("smoke"), stage="amplify", method="csi",
                 results_root=tmp_path / "file")


def test_done_marker_and_reopen(results_root):
    cfg = load_config("smoke")
    run = open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    assert not run.is_done()
    with pytest.raises(RunError, match="not finished"):
        run.require_done()
    run.mark_done({"auc": 0.5})
    again = open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    assert again.path == run.path and again.is_done()


def test_changed_config_gets_a_new_folder(results_root):
    cfg = load_config("smoke")
    first = open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    second = open_run(replace(cfg, {"amplify.epochs": 9}), stage="amplify", method="csi",
                      results_root=results_root)
    assert first.path != second.path


def test_foreign_config_in_folder_is_refused(results_root):
    cfg = load_config("smoke")
    run = open_run(cfg, stage="amplify", method="csi", results_root=results_root)
    text = (run.path / "config.yaml").read_text().replace("epochs: 2", "epochs: 99")
    (run.path / "config.yaml").write_text(text)
    with pytest.raises(RunError, match="another config"):
        open_run(cfg, stage="amplify", method="csi", results_root=results_root)


def test_folder_written_before_a_field_was_added_still_opens(results_root):
    import yaml

    from dia.config import ADDED_FIELDS

    cfg = load_config("smoke")
    run = open_run(cfg, stage="diffusion", method="ddpm", results_root=results_root,
                   sections=("data", "diffusion"))
    old = yaml.safe_load((run.path / "config.yaml").read_text())
    for name in ADDED_FIELDS["diffusion"]:  # as the file was written before the field existed
        del old["config"]["diffusion"][name]
    (run.path / "config.yaml").write_text(yaml.safe_dump(old))
    again = open_run(cfg, stage="diffusion", method="ddpm", results_root=results_root,
                     sections=("data", "diffusion"))
    assert again.path == run.path
    changed = {**old["config"]["diffusion"], "focus_fraction": 0.5}  # a set added field counts
    old["config"]["diffusion"] = changed
    (run.path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(RunError, match="another config"):
        open_run(cfg, stage="diffusion", method="ddpm", results_root=results_root,
                 sections=("data", "diffusion"))


def test_log_is_append_only_and_survives_a_cut_line(results_root):
    run = open_run(load_config("smoke"), stage="amplify", method="csi", results_root=results_root)
    run.append_log({"step": 1, "loss": 2.0})
    run.append_log({"step": 2, "loss": 1.0})
    with open(run.path / "train_log.jsonl", "a") as handle:
        handle.write('{"step": 3, "lo')  # a writer killed mid-line
    assert [r["step"] for r in run.read_log()] == [1, 2]
    with open(run.path / "train_log.jsonl", "ab") as handle:  # damage: lines that are no record
        handle.write(b'\n[1]\n3\n\xff\xfe{"step": 9}\n{"step": "x"}\n{"step": 4, "loss": 0.5}\n')
    assert [r["step"] for r in run.read_log()] == [1, 2, "x", 4]
    run.truncate_log(after_step=1)
    assert [r["step"] for r in run.read_log()] == [1]


def _slow_writer(path: str) -> None:
    from dia import results

    real = os.fsync

    def slow_fsync(fd):
        time.sleep(30)
        real(fd)

    results.os.fsync = slow_fsync
    results.atomic_write_text(path, "x" * 1000)


def test_killed_writer_leaves_no_file_and_no_done(tmp_path):
    target = tmp_path / "DONE"
    proc = mp.get_context("fork").Process(target=_slow_writer, args=(str(target),))
    proc.start()
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert not target.exists()


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_over_a_folder_names_the_folder_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "auc.csv").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        atomic_write_text(tmp_path / "auc.csv", "new")
    assert caught.value.filename == str(tmp_path / "auc.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["auc.csv"]


def test_atomic_write_gives_the_mode_of_a_plain_open_not_owner_only(tmp_path):
    import stat

    before = os.umask(0o027)  # a group-readable umask, as on a shared cluster
    try:
        (tmp_path / "plain.txt").write_text("x")
        atomic_write_text(tmp_path / "a.txt", "new")
    finally:
        os.umask(before)
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("a.txt") == mode("plain.txt") == 0o640  # mkstemp alone gives 0o600
    (tmp_path / "a.txt").chmod(0o604)  # a file replaced keeps its own mode (e.g. a README)
    atomic_write_text(tmp_path / "a.txt", "newer")
    assert mode("a.txt") == 0o604


def test_exclusive_lets_one_process_at_a_time_work_on_a_run(results_root, capfd, hold_lock,
                                                           locked_elsewhere):
    import threading

    run = open_run(load_config("smoke"), stage="diffusion", method="ddpm",
                   results_root=results_root, sections=("data", "diffusion"))
    assert not locked_elsewhere(run.path)
    _, release = hold_lock(run)
    assert locked_elsewhere(run.path)
    with run.exclusive(wait=False) as got:
        assert got is False  # held elsewhere: no waiting, nothing held
    threading.Timer(0.5, release.set).start()
    tic = time.monotonic()
    with run.exclusive() as got:  # blocks until the other process lets go
        waited = time.monotonic() - tic
        assert got and locked_elsewhere(run.path)  # now this process holds it
        with run.exclusive(wait=False) as again:  # re-entrant within a process
            assert again
        assert locked_elsewhere(run.path)  # the inner exit kept the outer hold
    assert waited >= 0.4 and not locked_elsewhere(run.path)
    assert "waiting: another process is working on" in capfd.readouterr().err


def test_a_stages_explicit_device_is_the_one_env_json_names(results_root, monkeypatch):
    import torch

    from dia import runtime
    from dia.config import ConfigError, config_hash

    monkeypatch.setattr(runtime, "describe_device", lambda preference="auto": f"as {preference}")
    cfg = load_config("smoke")
    assert cfg.device == "auto" and runtime.stage_device(cfg)[0] is cfg
    chosen, device = runtime.stage_device(cfg, torch.device("cpu"))
    assert device == torch.device("cpu") and chosen.device == "cpu"
    assert config_hash(chosen) == config_hash(cfg)  # the same run folder
    run = open_run(chosen, stage="amplify", method="csi", results_root=results_root)
    assert read_run_env(run.path)["device"] == "as cpu"  # not the config's "auto"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            runtime.stage_device(cfg, "cuda")


def test_only_edited_code_makes_a_checkout_dirty(tmp_path):
    """A published result rewritten by a finished job is not an edit of the code running."""
    import shutil
    import subprocess

    from dia.runtime import git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True)
    clean = git_commit(tmp_path)
    assert clean and len(clean) == 40
    (tmp_path / "results" / "table.md").write_text("b\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + "-dirty"


@pytest.mark.parametrize("damage", ["empty", "cut short", "tail zeroed", "not a checkpoint"])
def test_a_checkpoint_that_cannot_be_read_names_its_file(tmp_path, damage):
    import torch

    from dia.checkpoints import read_checkpoint, save_checkpoint
    from dia.results import RunError

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"weights": torch.arange(1000.0)})
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "cut short": data[: len(data) // 2],
                      "tail zeroed": data[:-100] + bytes(100),
                      "not a checkpoint": b"<html>404</html>" * 10}[damage])
    with pytest.raises(RunError, match=rf"{path} cannot be read \(.+ bytes .*cut short.*\); delete"):
        read_checkpoint(path)


def test_a_checkpoint_whose_bytes_were_changed_inside_is_damaged_not_loaded(tmp_path):
    import torch

    from dia.checkpoints import read_checkpoint, save_checkpoint
    from dia.results import RunError

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"weights": torch.arange(4096.0)})
    data = bytearray(path.read_bytes())
    start = data.index(torch.arange(4096.0).numpy().tobytes()[:64])  # the tensor's stored bytes
    data[start + 4000:start + 4100] = bytes(100)
    path.write_bytes(bytes(data))
    assert zipfile.is_zipfile(path)  # still a whole zip: torch.load alone would take it
    with pytest.raises(RunError, match=rf"{path} is damaged: .* fails its checksum.*; delete it"):
        read_checkpoint(path)


def test_a_lock_asked_about_for_an_instant_is_still_taken(tmp_path):
    import fcntl
    import threading

    from dia.results import flock_now, lock_held

    lock = tmp_path / ".lock"
    lock.touch()
    assert lock_held(lock) is False and lock_held(tmp_path / "absent") is None
    asker = open(lock, "rb")
    fcntl.flock(asker, fcntl.LOCK_SH)  # as lock_held holds it while --status asks
    threading.Timer(0.03, fcntl.flock, (asker, fcntl.LOCK_UN)).start()
    with open(lock, "a") as trainer:
        assert flock_now(trainer)  # taken on the second try, not refused
        assert lock_held(lock) is True
    asker.close()
    with open(lock, "rb") as holder, open(lock, "a") as other:
        fcntl.flock(holder, fcntl.LOCK_SH)  # a holder that stays
        assert not flock_now(other)


class _NotAllowed:  # a class torch.load(weights_only=True) refuses to build
    pass


def test_a_whole_checkpoint_that_does_not_load_is_not_called_damaged(tmp_path):
    from dia.checkpoints import read_checkpoint, save_checkpoint
    from dia.results import RunError

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"thing": _NotAllowed()})
    with pytest.raises(RunError, match="cannot be loaded .* the file is whole") as err:
        read_checkpoint(path)
    assert "delete" not in str(err.value)  # a long run's good file is not to be thrown away


def test_a_run_checkpoint_of_another_run_or_no_dict_is_refused_with_the_callers_remedy(
        results_root):
    import re

    import torch

    from dia.checkpoints import load_run_checkpoint, save_checkpoint

    cfg = load_config("smoke", dataset="synthetic")
    run = open_run(cfg, stage="peers", method="ganomaly", results_root=results_root,
                   sections=("data", "peers"))
    path = run.checkpoint_dir / "last.pt"
    path.parent.mkdir()
    assert load_run_checkpoint(path, run) is None  # none yet: a fresh start
    save_checkpoint(path, {"run_hash": run.hash, "name": "g"})
    assert load_run_checkpoint(path, run, name="g")["name"] == "g"
    finished = f"delete the run folder {run.path} to train it again"  # e.g. a finished run's
    for state, says in (({"run_hash": run.hash, "name": "d"}, "belongs to another run"),
                        ({"run_hash": "other", "name": "g"}, "belongs to another run"),
                        (torch.zeros(3), "not a checkpoint of this code .it holds a Tensor")):
        save_checkpoint(path, state)
        with pytest.raises(RunError, match=f"{says}.*delete it or use another results root"):
            load_run_checkpoint(path, run, name="g")
        with pytest.raises(RunError, match=f"{says}.*{re.escape(finished)}"):
            load_run_checkpoint(path, run, remedy=finished, name="g")
    save_checkpoint(path, {"run_hash": run.hash, "name": "g", "model": {}})  # a key deleted
    assert load_run_checkpoint(path, run, needs=("model",), name="g")["model"] == {}
    with pytest.raises(RunError, match=rf"{re.escape(str(path))} is not a whole checkpoint \(no "
                                       rf"epoch, optimizer\); {re.escape(finished)}"):
        load_run_checkpoint(path, run, remedy=finished, needs=("model", "epoch", "optimizer"))


def test_atomic_savefig_replaces_a_figure_whole_or_not_at_all(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dia import results
    from dia.results import atomic_savefig

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = atomic_savefig(fig, tmp_path / "figures" / "roc.png", dpi=50)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG") and [p.name for p in path.parent.iterdir()] == ["roc.png"]

    def killed(*args, **kwargs):  # the process ends while the bytes are being written
        raise KeyboardInterrupt

    monkeypatch.setattr(results.os, "replace", killed)
    ax.plot([0, 1], [0, 1])
    with pytest.raises(KeyboardInterrupt):
        atomic_savefig(fig, path, dpi=50)
    assert path.read_bytes() == before  # the last whole figure, not a cut one
    assert [p.name for p in path.parent.iterdir()] == ["roc.png"]  # no temporary file left
    plt.close(fig)
