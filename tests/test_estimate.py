"""The plan's time estimate: every job it can plan is priced from a measured table, per method
where methods differ, and a CPU's `quick` plan prints the range of the machines measured."""

from __future__ import annotations

import pytest

from dia import estimate, suite
from dia.config import DATASETS, PROFILES
from dia.plan import METHODS, PlanRequest, build_plan


def _plan(profile: str, tmp_path, methods=METHODS):
    return build_plan(PlanRequest(
        profile=profile, datasets=list(DATASETS), methods=methods, ablations=True,
        results_root=str(tmp_path), ddad_datasets=frozenset(DATASETS)))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("gpu", [False, True])
def test_every_job_a_plan_can_hold_has_a_cost_in_its_table(profile, gpu, tmp_path):
    table = estimate.cost_table(profile, gpu)
    jobs = _plan(profile, tmp_path)
    assert {job.stage for job in jobs} >= {"diffusion", "amplify", "evaluate", "ddad", "peers",
                                           "ablations", "table"}
    for column in (table.fast, table.slow):
        unpriced = [job.key for job in jobs
                    if f"{job.stage}/{job.method}" not in column and job.stage not in column]
        assert not unpriced, f"add these stages to dia/estimate.py: {unpriced}"


def test_a_job_is_priced_by_its_method_where_methods_differ(tmp_path):
    jobs = {job.key: job for job in _plan("quick", tmp_path, methods=("dia", "csi"))}
    table = estimate.QUICK_CPU.slow
    dia = estimate.job_seconds(table, jobs["amplify/pneumonia/dia/s0"])
    csi = estimate.job_seconds(table, jobs["amplify/pneumonia/csi/s0"])
    assert dia == table["amplify/dia"] and csi == table["amplify/csi"] and dia > csi
    low, high, _ = estimate.estimate([jobs["amplify/pneumonia/dia/s0"]], "quick", gpu=False)
    assert (low, high) == (estimate.QUICK_CPU.fast["amplify/dia"], table["amplify/dia"])


def test_the_ablation_grid_is_priced_per_seed(tmp_path):
    def grid(seeds):
        jobs = build_plan(PlanRequest(profile="quick", datasets=["pneumonia"], methods=("dia",),
                                      seeds=seeds, ablations=True, results_root=str(tmp_path)))
        return next(job for job in jobs if job.stage == "ablations")

    table = estimate.QUICK_CPU.fast
    assert estimate.job_seconds(table, grid(3)) == 3 * estimate.job_seconds(table, grid(1)) > 0


def test_a_range_only_where_the_machines_differ_by_a_minute():
    assert estimate.describe(480, 500) == "8 min"
    assert estimate.describe(2247, 4611) == "37–77 min"


def test_the_plan_line_gives_a_range_on_a_cpu_and_one_figure_for_smoke(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(suite.shutil, "which", lambda name: None)  # no nvidia-smi, no sbatch
    argv = ["--datasets", "synthetic", "--methods", "dia,csi", "--results-root",
            str(tmp_path / "results"), "--data-root", str(tmp_path), "--plan-only"]
    assert suite.main(argv + ["--profile", "quick"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("plan:"))
    low, high = line.split("rough estimate ")[1].split(" min")[0].split("–")
    assert 0 < int(low) < int(high) and "measured on 2-core CPUs" in line
    assert suite.main(argv + ["--profile", "smoke"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("plan:"))
    assert "–" not in line.split("rough estimate ")[1].split("(")[0]


def test_a_job_whose_runs_are_finished_is_not_priced_as_training(tmp_path, capsys, monkeypatch):
    """Its rendering gone (or a file of its run folder), such a job runs again, but only renders:
    the estimate leaves out its training."""
    from dia.config import load_config
    from dia.stages import stage_run_dir

    monkeypatch.setattr(suite.shutil, "which", lambda name: None)
    root = tmp_path / "results"
    argv = ["--profile", "quick", "--datasets", "synthetic", "--methods", "dia",
            "--results-root", str(root), "--data-root", str(tmp_path), "--plan-only"]

    def plan_line() -> str:
        assert suite.main(argv) == 0
        return next(x for x in capsys.readouterr().out.splitlines() if x.startswith("plan:"))

    before = plan_line()
    assert "only to render again" not in before
    ddpm = stage_run_dir(load_config("quick", dataset="synthetic"), "diffusion", "ddpm", root)
    ddpm.mkdir(parents=True)
    (ddpm / "DONE").write_text("{}")
    after = plan_line()
    assert "(1 only to render again)" in after

    def high(line: str) -> int:
        return int(line.split("rough estimate ")[1].split(" min")[0].split("–")[-1])

    ddpm_min = estimate.QUICK_CPU.slow["diffusion"] / 60  # the DDPM's training, left out
    assert abs(high(before) - high(after) - ddpm_min) <= 1, (before, after)
