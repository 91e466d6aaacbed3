"""The suite plan: jobs, dependencies, names, and what counts as finished."""

from __future__ import annotations

import pytest

from dia.config import ConfigError, load_config
from dia.plan import (
    PlanRequest, build_plan, is_job_done, parse_seed_list, rendered_path, stamp_path, stamp_record,
)
from dia.stages import open_stage_run, stage_run_dir


def _req(tmp_path, **kw):
    base = dict(profile="smoke", datasets=["synthetic", "pneumonia"], seeds=2,
                results_root=str(tmp_path), ddad_datasets=frozenset({"pneumonia"}))
    base.update(kw)
    return PlanRequest(**base)


def test_plan_has_the_expected_jobs_and_dependencies(tmp_path):
    jobs = {j.key: j for j in build_plan(_req(tmp_path))}
    assert "diffusion/synthetic/ddpm/s0" in jobs and "gallery/pneumonia" in jobs
    for ds in ("synthetic", "pneumonia"):
        for seed in (0, 1):
            assert jobs[f"amplify/{ds}/dia/s{seed}"].depends_on == (f"diffusion/{ds}/ddpm/s0",)
            assert jobs[f"amplify/{ds}/csi/s{seed}"].depends_on == ()
            assert jobs[f"evaluate/{ds}/dia/s{seed}"].depends_on == (f"amplify/{ds}/dia/s{seed}",)
    assert "ddad/pneumonia/ddad-aeu/s1" in jobs and not any(k.startswith("ddad/synthetic") for k in jobs)
    assert list(jobs)[-1] == "table"
    names = [j.output_name for j in jobs.values()]
    assert "20_train_amplifier-pneumonia-dia-smoke-s1.ipynb" in names and len(set(names)) == len(names)
    order = list(jobs)
    for key, job in jobs.items():  # every dependency comes first
        assert all(order.index(dep) < order.index(key) for dep in job.depends_on)


def test_methods_filter(tmp_path):
    keys = [j.key for j in build_plan(_req(tmp_path, methods=("csi",)))]
    assert not any("dia" in k or "diffusion" in k or "ddad" in k for k in keys)


def test_a_seed_list_keeps_only_its_seeds_jobs_and_the_shared_ones(tmp_path):
    keys = [j.key for j in build_plan(_req(tmp_path, seeds=5, seed_list=(1, 3), ablations=True))]
    seeds = {k.rsplit("/s", 1)[1] for k in keys if k.startswith(("amplify/", "evaluate/", "ddad/"))}
    assert seeds == {"1", "3"}
    for shared in ("diffusion/pneumonia/ddpm/s0", "gallery/synthetic", "ablations/pneumonia",
                   "table"):
        assert shared in keys
    every = [j.key for j in build_plan(_req(tmp_path, seeds=5, ablations=True))]
    assert keys == [k for k in every if k in keys]  # the jobs of the full plan, in its order
    # seeds beyond --seeds' default: the ablations keep their own count, as without the list
    plan = build_plan(_req(tmp_path, seeds=1, seed_list=(3, 4), ablations=True))
    assert {j.seed for j in plan if j.key.startswith("amplify/")} == {3, 4}
    ablations = next(j for j in plan if j.key == "ablations/synthetic")
    alone = next(j for j in build_plan(_req(tmp_path, seeds=1, ablations=True))
                 if j.key == "ablations/synthetic")
    assert ablations.parameters["seeds"] == 1 and ablations.config_hash == alone.config_hash


def test_seed_lists_are_parsed_or_refused_with_the_flag_named():
    assert parse_seed_list("4, 3,3") == (3, 4)
    assert parse_seed_list("0", seeds=1) == (0,)
    for text, seeds in (("a", None), ("-1", None), ("", None), (",", None), ("2", 2),
                        (str(2**64), None)):
        with pytest.raises(ConfigError, match=f"--seed-list {text}"):
            parse_seed_list(text, seeds)


def test_one_ddpm_serves_every_seed(tmp_path):
    cfg0, cfg1 = load_config("smoke", seed=0), load_config("smoke", seed=1)
    assert stage_run_dir(cfg0, "diffusion", "ddpm") == stage_run_dir(cfg1, "diffusion", "ddpm")
    assert stage_run_dir(cfg0, "amplify", "dia") != stage_run_dir(cfg1, "amplify", "dia")


def test_job_done_needs_done_marker_notebook_and_stamp(tmp_path):
    import json

    req = _req(tmp_path, datasets=["synthetic"], seeds=1)
    job = next(j for j in build_plan(req) if j.key == "amplify/synthetic/csi/s0")
    assert not is_job_done(job, req)
    run = stage_run_dir(load_config("smoke", dataset="synthetic"), "amplify", "csi", tmp_path)
    run.mkdir(parents=True)
    (run / "DONE").write_text("{}")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / job.output_name).write_text("{}")
    assert not is_job_done(job, req)  # no stamp yet
    stamp = stamp_path(tmp_path, job)
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"config_hash": job.config_hash}))
    assert not is_job_done(job, req)  # a finished run folder without its config.yaml
    cfg = load_config("smoke", dataset="synthetic")
    other = open_stage_run(load_config("smoke", dataset="synthetic", seed=1), "amplify", "csi",
                           tmp_path).path
    for damaged in ("", "run: [\n", (other / "config.yaml").read_text()):  # or another run's
        (run / "config.yaml").write_text(damaged)
        assert not is_job_done(job, req)
    (run / "config.yaml").unlink()
    assert open_stage_run(cfg, "amplify", "csi", tmp_path).path == run  # writes it anew
    assert is_job_done(job, req)
    stamp.write_text(json.dumps({"config_hash": "00000000"}))  # another config: not done
    assert not is_job_done(job, req)
    for cut_short in ("", '{"config_', "[]"):  # a stamp cut short by a kill: run it again
        stamp.write_text(cut_short)
        assert not is_job_done(job, req)


def test_a_rendering_put_back_by_git_is_rendered_again(tmp_path):
    """`git checkout -- results/` restores the published notebook beside this run's stamp: the
    stamp records the rendering it was written for, so the job is not done until it renders."""
    import json
    import os

    req = _req(tmp_path, datasets=["synthetic"], seeds=1)
    job = next(j for j in build_plan(req) if j.key == "amplify/synthetic/csi/s0")
    run = open_stage_run(load_config("smoke", dataset="synthetic"), "amplify", "csi",
                         tmp_path).path
    (run / "DONE").write_text("{}")
    rendering, stamp = rendered_path(tmp_path, job), stamp_path(tmp_path, job)
    rendering.parent.mkdir(parents=True)
    stamp.parent.mkdir(parents=True)
    rendering.write_text('{"cells": ["this run"]}')
    stamp.write_text(json.dumps(stamp_record(job, req)))
    assert is_job_done(job, req)
    rendering.write_text('{"cells": ["the published run"]}')
    assert not is_job_done(job, req)
    rendering.write_text('{"cells": ["this run"]}')  # the same bytes again (a later mtime)
    os.utime(rendering, (1, 1))
    assert is_job_done(job, req)
    record = json.loads(stamp.read_text())  # a stamp written before it recorded renderings
    del record["rendering"]
    stamp.write_text(json.dumps(record))
    rendering.write_text('{"cells": ["the published run"]}')
    assert is_job_done(job, req)


def test_each_profile_renders_and_stamps_its_own_notebooks(tmp_path):
    """A smoke run into a results folder must not replace (or un-finish) a quick one's."""
    plans = {p: {j.key: j for j in build_plan(_req(tmp_path, profile=p))}
             for p in ("smoke", "quick")}
    for key, smoke in plans["smoke"].items():
        quick = plans["quick"][key]
        if key == "table":  # one table from whatever finished, of every profile
            assert smoke.output_name == quick.output_name
            continue
        assert smoke.output_name != quick.output_name and "smoke" in smoke.output_name, key
        assert stamp_path(tmp_path, smoke) != stamp_path(tmp_path, quick)
