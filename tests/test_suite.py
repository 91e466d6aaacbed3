"""The run_all.sh driver on fake notebooks: skipping, failures, missing data, the lock."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import nbformat
import pytest

from dia import driver_paths, notebook_jobs, suite
from dia.plan import PlanRequest

STAGES = {"10_train_diffusion": ("diffusion", "ddpm"), "20_train_amplifier": ("amplify", None),
          "30_evaluate": ("evaluate", None), "40_ddad": ("ddad", "ddad-aeu"),
          "45_peers": ("peers", None)}


def _notebook(path: Path, body: str) -> None:
    params = nbformat.v4.new_code_cell(
        'dataset = "synthetic"\nprofile = "smoke"\nseed = 0\nmethod = "dia"\n'
        'results_root = "results"\ndata_root = ""\nbackbone = "aeu"')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, (stage, method) in STAGES.items():
        method_expr = repr(method) if method else "method"
        _notebook(folder / f"{name}.ipynb", (
            "from dia.config import load_config\nfrom dia.stages import open_stage_run\n"
            "from dia.plan import FINISHED_FILES\n"
            "cfg = load_config(profile, dataset=dataset, seed=seed)\n"
            f"run = open_stage_run(cfg, {stage!r}, {method_expr}, results_root)\n"
            f"if 'scores.csv' in FINISHED_FILES[{stage!r}]:  # what the real notebook writes\n"
            "    from dia.metrics import auc_rows, write_metrics, write_scores\n"
            "    write_scores(run, ['a', 'b'], [0, 1], [0.2, 0.7])\n"
            "    write_metrics(run, auc_rows(run, method=run.method, profile=profile, "
            "image_size=28, labels=[0, 1], anomaly_score=[0.2, 0.7]))\n"
            "run.mark_done()\n"
            "import pathlib; log = pathlib.Path(results_root) / 'calls.txt'\n"
            f"log.open('a').write({name!r} + '\\n')"))
    _notebook(folder / "15_dissolving_gallery.ipynb", "pass")
    _notebook(folder / "90_auc_table.ipynb", "pass")
    monkeypatch.setattr(notebook_jobs, "NOTEBOOK_DIR", folder)
    return folder


def _calls(results_root: Path) -> list[str]:
    path = results_root / "calls.txt"
    return path.read_text().split() if path.is_file() else []


def test_bad_arguments_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(suite.shutil, "which", lambda name: None)  # not on a Slurm cluster
    for argv, fragment in ((["--profile", "fast"], "smoke, quick, paper"),
                           (["--datasets", "mnist"], "unknown dataset"),
                           (["--datasets", " ,"], "--datasets ' ,' names no dataset"),
                           (["--methods", "dia,gan"], "unknown method"),
                           (["--executor", "slurm"], "needs a Slurm cluster (no sbatch on PATH)"),
                           (["--executor", "slurm", "--slurm-time", "-5", "--plan-only"],
                            "--slurm-time -5: must be at least 1"),
                           (["--seed-list", "1,x"], "comma list of numbers"),
                           (["--seeds", "2", "--seed-list", "2"],
                            "with --seeds 2 the seeds are 0..1")):
        assert suite.main(argv + ["--results-root", str(tmp_path)]) == 2
        assert fragment in capsys.readouterr().err
    for threads in ("", "two", "0", "2,x"):  # libgomp would warn in every rendering
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        assert suite.main(["--plan-only", "--results-root", str(tmp_path)]) == 2
        assert f"OMP_NUM_THREADS={threads!r} is not a number" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert suite.main(["--plan-only", "--datasets", "synthetic", "--results-root",
                       str(tmp_path)]) == 0
    capsys.readouterr()
    plans = {}  # spaces after commas and repeats: the same plan as the plain list
    for datasets, methods in (("synthetic", "csi"), (" synthetic, synthetic", "csi, csi")):
        assert suite.main(["--plan-only", "--datasets", datasets, "--methods", methods,
                           "--results-root", str(tmp_path)]) == 0
        plans[datasets] = capsys.readouterr().out.splitlines()[0]
    assert plans["synthetic"] == plans[" synthetic, synthetic"]
    configs = tmp_path / "configs"  # a profile file with an error: said before any plan
    configs.mkdir()
    (configs / "smoke.yaml").write_text("diffusion:\n  width: 8\ndiffusion:\n  width: 8\n")
    with monkeypatch.context() as patch:
        patch.setattr("dia.config.CONFIGS_DIR", configs)
        for flag in ("--status", "--plan-only"):
            assert suite.main([flag, "--profile", "smoke", "--results-root", str(tmp_path)]) == 2
            assert "key 'diffusion' given twice" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # --status starts no kernel: not refused for it
    assert suite.main(["--status", "--datasets", "synthetic", "--results-root",
                       str(tmp_path)]) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "file").write_text("")
    for flag in ("--status", "--plan-only"):
        assert suite.main([flag, "--results-root", str(tmp_path / "file")]) == 2
        assert "is not a folder" in capsys.readouterr().err


def test_paths_are_passed_relative_to_the_repository_symlinks_as_named(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()  # REPO is resolved, and so is the working directory
    repo, data = tmp_path / "repo", tmp_path / "elsewhere" / "data"
    (repo / "sub").mkdir(parents=True)
    data.mkdir(parents=True)
    (tmp_path / "shared").symlink_to(tmp_path / "elsewhere")
    (repo / "link").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(driver_paths, "REPO", repo)
    monkeypatch.chdir(repo)
    assert driver_paths.repo_relative(Path("../shared/data")) == Path("../shared/data")
    assert driver_paths.repo_relative(tmp_path / "shared" / "data") == Path("../shared/data")
    assert driver_paths.repo_relative(Path("sub/../results")) == Path("results")
    # link/.. is the parent of the link's target, not the repository: passed resolved
    assert driver_paths.repo_relative(Path("link/../shared")) == Path("../elsewhere")
    assert driver_paths.repo_relative(Path("link/..")) == Path("..")
    # shown to the user from where the driver was called, links as named here too
    monkeypatch.setattr(driver_paths, "_caller_dir", tmp_path)
    assert driver_paths.shown("../shared/data") == "shared/data"  # not elsewhere/data
    assert driver_paths.shown("sub") == "repo/sub"
    monkeypatch.setattr(driver_paths, "_caller_dir", repo / "sub")
    assert driver_paths.shown("../shared/data") == str(tmp_path / "shared" / "data")
    req = PlanRequest(profile="smoke", results_root="..", data_root="../shared/data")
    text = ("stopped ... see ../notebooks/x.ipynb; data ../shared/data/medmnist "
            "('../shared/data'), `../shared/data`, ../../x/ and ../notebooks/.failed.")
    shared = tmp_path / "shared" / "data"
    assert notebook_jobs.roots_as_shown(text, req) == (  # whole path names only, normalised
        f"stopped ... see {tmp_path}/notebooks/x.ipynb; data {shared}/medmnist ('{shared}'), "
        f"`{shared}`, {tmp_path.parent}/x/ and {tmp_path}/notebooks/.failed.")
    monkeypatch.setattr(driver_paths, "_caller_dir", tmp_path)
    req = PlanRequest(profile="smoke", results_root="results", data_root="")
    monkeypatch.setenv("DIA_DATA_ROOT", "../shared/data")  # as main() rewrites it
    assert notebook_jobs.roots_as_shown("results/runs/x, the results; ../shared/data/y", req) == (
        "repo/results/runs/x, the results; shared/data/y")  # the word is no path


def test_a_relative_data_root_is_checked_where_the_driver_was_called(tmp_path, monkeypatch,
                                                                     shared_data, capsys):
    medmnist = tmp_path / "data" / "medmnist"
    medmnist.mkdir(parents=True)
    (medmnist / "pneumoniamnist.npz").symlink_to(shared_data / "medmnist" / "pneumoniamnist.npz")
    monkeypatch.chdir(tmp_path)  # not the repository
    argv = ["--profile", "smoke", "--datasets", "pneumonia", "--methods", "csi",
            "--results-root", "res", "--data-root", "data"]
    assert suite.main(["--plan-only", *argv]) == 0
    assert "amplify/pneumonia/csi/s0" in capsys.readouterr().out  # found, not MISSING
    (medmnist / "pneumoniamnist.npz").unlink()
    (medmnist / "pneumoniamnist.npz").write_bytes(b"not an npz")
    monkeypatch.chdir(tmp_path)
    assert suite.main(["--plan-only", *argv]) == 0
    out = capsys.readouterr().out  # the problem names the file as given from here
    assert "broken dataset pneumonia: cannot read data/medmnist/pneumoniamnist.npz" in out


def test_a_tilde_after_an_equals_sign_is_the_home_folder(tmp_path, monkeypatch, shared_data,
                                                          capsys):
    medmnist = tmp_path / "home" / "my data" / "medmnist"  # the shell leaves --x=~/y alone
    medmnist.mkdir(parents=True)
    (medmnist / "pneumoniamnist.npz").symlink_to(shared_data / "medmnist" / "pneumoniamnist.npz")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert suite.main(["--plan-only", "--profile", "smoke", "--datasets", "pneumonia,breast",
                       "--methods", "csi", "--results-root=~/res", "--data-root=~/my data"]) == 0
    out = capsys.readouterr().out
    assert "amplify/pneumonia/csi/s0" in out and "-> home/res/notebooks/" in out
    assert not (tmp_path / "~").exists()
    assert "data check --data-root 'home/my data'`" in out  # breast is missing: a command to paste


def test_runs_skips_and_reruns_one_stage(fake_notebooks, tmp_path):
    root = tmp_path / "results"
    argv = ["--profile", "smoke", "--datasets", "synthetic", "--results-root", str(root),
            "--data-root", str(tmp_path)]
    assert suite.main(argv) == 0
    first = _calls(root)
    assert sorted(first) == sorted(["10_train_diffusion", "20_train_amplifier", "20_train_amplifier",
                                    "30_evaluate", "30_evaluate", "40_ddad", "45_peers",
                                    "45_peers"])
    assert (root / "notebooks" / "20_train_amplifier-synthetic-dia-smoke-s0.ipynb").is_file()
    assert suite.main(argv) == 0
    assert _calls(root) == first  # a second call skips everything
    done = next((root / "runs" / "evaluate" / "synthetic" / "csi").glob("s0-*/DONE"))
    done.unlink()
    assert suite.main(argv) == 0
    assert _calls(root)[len(first):] == ["30_evaluate"]  # only that stage again


def test_failing_notebook_names_notebook_and_cell(fake_notebooks, tmp_path, capsys):
    _notebook(fake_notebooks / "20_train_amplifier.ipynb",
              "raise ValueError(f'boom in {results_root}/runs')")
    root = tmp_path / "results"
    code = suite.main(["--profile", "smoke", "--datasets", "synthetic", "--methods", "csi",
                       "--results-root", str(root), "--data-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED amplify/synthetic/csi/s0: 20_train_amplifier.ipynb cell" in out
    # the notebook gets the root relative to the repository (../../tmp/...); the line names it
    # as the user gave it, as its "(see ...)" part does
    assert f"ValueError: boom in {root}/runs (see {root}/" in out
    assert suite.main(["--status", "--profile", "smoke", "--datasets", "synthetic", "--methods",
                       "csi", "--results-root", str(root), "--data-root", str(tmp_path)]) == 0
    status = capsys.readouterr().out
    assert f"error in {root}/notebooks/.failed/" in status and "../" not in status
    assert "evaluate/synthetic/csi/s0: not run" in out  # its dependent is not run


def test_a_killed_kernel_is_reported_with_what_to_do(fake_notebooks, tmp_path, capsys):
    _notebook(fake_notebooks / "20_train_amplifier.ipynb", "import os, signal\n"
              "os.kill(os.getpid(), signal.SIGKILL)  # as the kernel out-of-memory killer does")
    code = suite.main(["--profile", "smoke", "--datasets", "synthetic", "--methods", "csi",
                       "--results-root", str(tmp_path / "results"), "--data-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED amplify/synthetic/csi/s0: 20_train_amplifier.ipynb" in out
    assert "DeadKernelError" in out and "run the same command again to resume" in out


def test_missing_dataset_does_not_stop_the_others(fake_notebooks, tmp_path, capsys):
    root = tmp_path / "results"
    code = suite.main(["--profile", "smoke", "--datasets", "kvasir,synthetic", "--methods", "csi",
                       "--results-root", str(root), "--data-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "MISSING kvasir" in out
    assert "20_train_amplifier" in _calls(root)


def test_a_broken_dataset_found_under_the_data_root_is_reported_not_skipped(
        fake_notebooks, tmp_path, capsys, monkeypatch):
    from dia.data import medmnist_files

    monkeypatch.setattr(medmnist_files, "fetch_medmnist", lambda *a, **k: None)  # offline
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "pneumoniamnist.npz").write_bytes(b"garbage")
    root = tmp_path / "results"
    argv = ["--profile", "smoke", "--methods", "csi", "--results-root", str(root),
            "--data-root", str(tmp_path)]
    assert suite.main(argv + ["--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "broken dataset pneumonia: cannot read" in out
    assert "pneumonia" not in out.split("so not run: ")[1].splitlines()[0]  # not "not found"
    assert suite.main(argv) == 1  # the others run; the broken one fails the run
    out = capsys.readouterr().out
    assert "BROKEN pneumonia" in out and "20_train_amplifier" in _calls(root)
    assert suite.main(argv + ["--status"]) == 0
    assert "broken dataset pneumonia: cannot read" in capsys.readouterr().out


def test_second_driver_on_the_same_results_refuses(tmp_path, capsys):
    root = tmp_path / "results"
    handle = suite._lock(root)
    try:
        assert suite.main(["--profile", "smoke", "--datasets", "synthetic",
                           "--results-root", str(root)]) == 3
        assert "another run_all.sh" in capsys.readouterr().err
    finally:
        handle.close()


def test_a_failed_rerun_keeps_the_last_good_notebook(fake_notebooks, tmp_path, capsys):
    import json

    import nbformat

    root = tmp_path / "results"
    argv = ["--profile", "smoke", "--datasets", "synthetic", "--methods", "csi",
            "--results-root", str(root), "--data-root", str(tmp_path)]
    assert suite.main(argv) == 0
    good = root / "notebooks" / "20_train_amplifier-synthetic-csi-smoke-s0.ipynb"
    failed = root / "notebooks" / ".failed" / good.name
    rendered = good.read_text()
    recorded = json.loads(rendered)["metadata"]["papermill"]["output_path"]
    assert recorded.endswith(f"/notebooks/{good.name}")  # where it is, not where it was written
    # rerun: the run trains again, then a later cell (a plot, say) fails
    next((root / "runs" / "amplify" / "synthetic" / "csi").glob("s0-*/DONE")).unlink()
    source = fake_notebooks / "20_train_amplifier.ipynb"
    body = nbformat.read(source, as_version=4).cells[1].source
    _notebook(source, body + "\nraise ValueError('boom')")
    assert suite.main(argv) == 1
    assert good.read_text() == rendered  # the published rendering is not replaced by a failure
    assert "ValueError" in failed.read_text()
    assert f"notebooks/.failed/{good.name})" in capsys.readouterr().out  # the message names it
    assert not list((root / "notebooks" / ".partial").iterdir())
    calls = len(_calls(root))
    _notebook(source, body)
    assert suite.main(argv) == 0 and not failed.exists()  # fixed: the stale failure is gone
    # its runs were DONE after the failure, yet the job was not taken as done: it ran again
    assert _calls(root)[calls:] == ["20_train_amplifier"]


def test_a_data_root_that_is_not_a_folder_is_refused(tmp_path, capsys, monkeypatch):
    typo = tmp_path / "dtaa"
    argv = ["--profile", "smoke", "--results-root", str(tmp_path / "results"), "--plan-only"]
    assert suite.main(argv + ["--data-root", str(typo)]) == 2
    assert "--data-root" in capsys.readouterr().err and not typo.exists()
    monkeypatch.setenv("DIA_DATA_ROOT", str(typo))
    assert suite.main(argv) == 2
    assert "DIA_DATA_ROOT" in capsys.readouterr().err and not typo.exists()


def test_plan_only_downloads_nothing_and_names_what_is_not_found(tmp_path, capsys, monkeypatch):
    from dia.data import medmnist_files

    monkeypatch.setattr(medmnist_files, "fetch_medmnist",
                        lambda *a, **k: pytest.fail("--plan-only downloaded"))
    assert suite.main(["--profile", "smoke", "--results-root", str(tmp_path / "results"),
                       "--data-root", str(tmp_path), "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "not found under the data root, so not run: " in out and "pneumonia" in out
    assert "datasets synthetic;" in out


def test_plan_only_works_beside_a_running_driver(tmp_path, capsys):
    from dia.results import LOCK, flock_now

    root = tmp_path / "results"
    root.mkdir()
    with open(root / LOCK, "w") as held:
        assert flock_now(held)  # a driver is running in this folder
        argv = ["--profile", "smoke", "--datasets", "synthetic", "--methods", "csi",
                "--results-root", str(root), "--data-root", str(tmp_path)]
        assert suite.main(argv + ["--plan-only"]) == 0
        assert "amplify/synthetic/csi/s0 -> " in capsys.readouterr().out
        assert suite.main(argv) == 3  # running is still refused
        assert "another run_all.sh is using" in capsys.readouterr().err


def test_a_seed_list_plans_only_those_seeds(tmp_path, capsys):
    argv = ["--profile", "smoke", "--datasets", "synthetic", "--methods", "dia,csi",
            "--results-root", str(tmp_path / "results"), "--data-root", str(tmp_path)]
    assert suite.main(argv + ["--seed-list", "3,1", "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "seeds 1,3," in out
    trained = sorted(line.split()[0] for line in out.splitlines() if "  amplify/" in line)
    assert trained == ["amplify/synthetic/csi/s1", "amplify/synthetic/csi/s3",
                       "amplify/synthetic/dia/s1", "amplify/synthetic/dia/s3"]
    assert "  diffusion/synthetic/ddpm/s0 -> " in out and "  table -> " in out


def test_a_medmnist_dataset_asked_for_by_name_is_fetched_and_no_other(tmp_path, monkeypatch):
    from dia.data import medmnist_files

    fetched = []
    monkeypatch.setattr(medmnist_files, "fetch_medmnist", lambda key, *a, **k: fetched.append(key))

    def stop(*args, **kwargs):  # the plan is made: stop there (as after Ctrl-C)
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "run_plan", stop)
    assert suite.main(["--profile", "smoke", "--results-root", str(tmp_path / "results"),
                       "--data-root", str(tmp_path), "--datasets", "pneumonia,synthetic"]) == 130
    assert fetched == ["pneumonia"]


def test_an_unwritable_results_root_is_refused(tmp_path, capsys):
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("")
    argv = ["--profile", "smoke", "--datasets", "synthetic", "--results-root"]
    assert suite.main(argv + [str(not_a_folder)]) == 2
    # named as the user gave it, not as the driver's repository-relative ../../ path
    assert f"--results-root {not_a_folder.resolve()} is not a folder" in capsys.readouterr().err
    for flag in ([], ["--status"]):  # cannot be made: refused before --status calls it pending
        assert suite.main(argv + [str(not_a_folder / "runs"), *flag]) == 2
        assert (f"--results-root {not_a_folder.resolve() / 'runs'} cannot be made: "
                f"{not_a_folder.resolve()} is not a folder") in capsys.readouterr().err
    (tmp_path / "link").symlink_to(tmp_path / "gone")  # a link to nothing
    assert suite.main(argv + [str(tmp_path / "link" / "runs"), "--status"]) == 2
    assert f"{tmp_path.resolve() / 'link'} is not a folder" in capsys.readouterr().err
    for option in ("--results-root", "--data-root"):  # ~name of no user: no traceback
        assert suite.main(["--status", f"{option}=~no_such_user_here/x"]) == 2
        assert f"{option} ~no_such_user_here/x: " in capsys.readouterr().err


def test_an_interrupted_run_says_how_to_go_on_and_lets_go_of_the_lock(tmp_path, capsys,
                                                                     monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "run_plan", interrupted)
    root = tmp_path / "results"
    assert suite.main(["--profile", "smoke", "--datasets", "synthetic", "--results-root",
                       str(root), "--data-root", str(tmp_path)]) == 130
    assert "run the same command again" in capsys.readouterr().err
    suite._lock(root).close()  # not held any more


@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_stops_the_running_notebook_and_its_kernel(fake_notebooks, tmp_path, capsys,
                                                            signal_when, still_running, signum,
                                                            code, said):
    # The notebook's kernel runs in a session of its own and gets no terminal's Ctrl-C; the
    # driver passes the interrupt on to it, keeps the notebook so far, and stops.
    started = tmp_path / "started"
    _notebook(fake_notebooks / "10_train_diffusion.ipynb",
              f"import pathlib, time\npathlib.Path({str(started)!r}).write_text('')\n"
              "time.sleep(120)")
    kernels = signal_when(started.exists, signum)
    root = tmp_path / "results"
    tic = time.monotonic()
    assert suite.main(["--profile", "smoke", "--datasets", "synthetic", "--methods", "dia",
                       "--results-root", str(root), "--data-root", str(tmp_path)]) == code
    assert time.monotonic() - tic < 60  # not the notebook's 120 s
    out, err = capsys.readouterr()
    assert f"{said}: finished runs are kept" in err
    assert "diffusion/synthetic/ddpm/s0: interrupted after" in out
    assert "20_train_amplifier" not in out  # nothing after it ran
    assert kernels and not still_running(kernels)
    kept = next((root / "notebooks" / ".failed").glob("10_train_diffusion-*.ipynb"))
    errors = [o["ename"] for c in nbformat.read(kept, as_version=4).cells
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == ["KeyboardInterrupt"]  # stopped inside the cell, as Jupyter's interrupt
    notebooks = root / "notebooks"
    assert not list(notebooks.glob("10_train_diffusion-*.ipynb"))  # not rendered
    assert not list(notebooks.glob(".partial/*")) and not list(notebooks.rglob("*.json"))
    suite._lock(root).close()  # not held any more


def test_datasets_ddad_does_not_apply_to_are_named_not_dropped_silently(tmp_path, monkeypatch,
                                                                         capsys):
    real = suite._available

    def no_pool_anomalies(*args, **kwargs):  # as kvasir, sars_cov2 and aptos are
        present, unusable, _ = real(*args, **kwargs)
        return present, unusable, set()

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["--datasets", "synthetic", "--results-root", str(tmp_path)]
    assert suite.main(["--plan-only", *argv]) == 0
    assert "DDAD-ASR not run" not in capsys.readouterr().out  # synthetic has pool anomalies
    monkeypatch.setattr(suite, "_available", no_pool_anomalies)
    for flag in ("--plan-only", "--status"):
        assert suite.main([flag, *argv]) == 0
        out = capsys.readouterr().out
        assert "DDAD-ASR not run on synthetic: the training split holds no anomalous" in out
        assert "ddad/synthetic" not in out
    assert suite.main(["--plan-only", *argv, "--methods", "dia"]) == 0
    assert "DDAD-ASR" not in capsys.readouterr().out  # not asked for: not mentioned


def test_a_notebook_that_leaves_a_damaged_file_behind_fails_naming_it(fake_notebooks, tmp_path,
                                                                       capsys):
    # 40_ddad reads no scores.csv: one damaged would leave its job not done, and each call would
    # render it again and say "ok"
    root = tmp_path / "results"
    argv = ["--profile", "smoke", "--datasets", "synthetic", "--methods", "csi",
            "--results-root", str(root), "--data-root", str(tmp_path)]
    assert suite.main(argv) == 0
    scores = next((root / "runs" / "evaluate" / "synthetic" / "csi").glob("s0-*/scores.csv"))
    scores.write_text(scores.read_text()[:-2])  # cut short in its last number
    _notebook(fake_notebooks / "30_evaluate.ipynb", "pass")  # finds the run DONE, reads nothing
    capsys.readouterr()
    assert suite.main(argv) == 1
    out = capsys.readouterr().out
    assert "RunError: " in out and "scores.csv ends in the middle of a row (cut short?)" in out, out
    failed = root / "notebooks" / ".failed" / "30_evaluate-synthetic-csi-smoke-s0.ipynb"
    assert failed.is_file() and not list((root / "notebooks" / ".partial").iterdir())
    assert not (root / "notebooks" / ".stamps" / "30_evaluate-synthetic-csi-smoke-s0.json").exists()
