"""A run made from an upstream checkpoint that was trained again since is not taken as done:
an evaluation scores the new encoder, a DIA encoder of an old DDPM is refused, the table
stops, a gallery renders again; the same checkpoint saved again, a missing one or a run without
a record count as unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from dia import lineage
from dia.checkpoints import read_checkpoint, save_checkpoint
from dia.config import load_config
from dia.evaluate import evaluate_amplifier
from dia.plan import (
    PlanRequest, build_plan, is_job_done, rendered_path, stamp_path, stamp_record,
)
from dia.report import collect_metrics
from dia.results import DONE, RunError
from dia.stages import is_stage_done, stage_run_dir
from dia.train_encoder import CHECKPOINT, train_amplifier


def _cfg():  # the profile's own config: its runs count in the plan and the table
    return load_config("smoke", dataset="synthetic", seed=0)


def _retrain(checkpoint, key):
    """Stand-in for a training made again: the same file with other weights under `key`."""
    state = read_checkpoint(checkpoint)
    state[key] = {name: value + 0.01 if value.is_floating_point() else value
                  for name, value in state[key].items()}
    save_checkpoint(checkpoint, state)


def _rendered(job, req):
    """Leave `job` as the suite does once its notebook has rendered: the file and its stamp."""
    rendering, stamp = rendered_path(req.results_root, job), stamp_path(req.results_root, job)
    for path in (rendering, stamp):
        path.parent.mkdir(parents=True, exist_ok=True)
    rendering.write_text("{}")
    stamp.write_text(json.dumps(stamp_record(job, req)))


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A DIA encoder on a tiny DDPM, scored: (results root, cfg)."""
    root = tmp_path_factory.mktemp("lineage") / "results"
    cfg = _cfg()
    train_amplifier(cfg, "dia", results_root=root, device="cpu")
    evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
    return root, cfg


def test_each_run_records_the_checkpoint_it_read(scored):
    root, cfg = scored
    amplify = stage_run_dir(cfg, "amplify", "dia", root)
    evaluate = stage_run_dir(cfg, "evaluate", "dia", root)
    ddpm_record = json.loads((amplify / DONE).read_text())[lineage.UPSTREAM]
    assert ddpm_record["run"].startswith("diffusion/synthetic/ddpm/")
    assert ddpm_record == read_checkpoint(amplify / "checkpoints" / CHECKPOINT)[lineage.UPSTREAM]
    encoder_record = json.loads((evaluate / DONE).read_text())[lineage.UPSTREAM]
    assert encoder_record["sha256"] == lineage.file_sha256(amplify / "checkpoints" / CHECKPOINT)
    assert lineage.is_current(amplify) and lineage.is_current(evaluate)


def test_a_retrained_encoder_is_scored_again_and_stops_the_table_until_then(scored, caplog,
                                                                           monkeypatch):
    root, cfg = scored
    evaluate = stage_run_dir(cfg, "evaluate", "dia", root)
    encoder = stage_run_dir(cfg, "amplify", "dia", root) / "checkpoints" / CHECKPOINT
    req = PlanRequest(profile="smoke", datasets=["synthetic"], methods=("dia",),
                      results_root=str(root))
    job = next(j for j in build_plan(req) if j.key.startswith("evaluate/"))
    _rendered(job, req)
    assert is_job_done(job, req) and not collect_metrics(root).empty
    _retrain(encoder, "model")
    assert not is_stage_done(cfg, "evaluate", "dia", root)
    assert not is_job_done(job, req)  # the suite runs the job again
    with pytest.raises(RunError, match="trained again since"):
        collect_metrics(root)
    assert (evaluate / "val_scores.csv").is_file()
    from dia import evaluate as evaluate_module  # the validation split has lost a class since:
    only_test = evaluate_module.labelled_splits  # the rescoring writes no val_scores.csv
    monkeypatch.setattr(evaluate_module, "labelled_splits",
                        lambda *a: [next(iter(only_test(*a)))])
    evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
    assert "scoring the new encoder" in caplog.text
    assert not (evaluate / "val_scores.csv").exists()  # the old encoder's scores are gone too
    record = json.loads((evaluate / DONE).read_text())[lineage.UPSTREAM]
    assert record["sha256"] == lineage.file_sha256(encoder)
    assert is_stage_done(cfg, "evaluate", "dia", root) and is_job_done(job, req)
    assert not collect_metrics(root).empty


def test_a_dia_encoder_of_a_retrained_ddpm_is_refused(scored):
    root, cfg = scored
    amplify = stage_run_dir(cfg, "amplify", "dia", root)
    record = json.loads((amplify / DONE).read_text())[lineage.UPSTREAM]
    ddpm = root / "runs" / record["run"] / record["checkpoint"]
    before = ddpm.read_bytes()
    _retrain(ddpm, "unet")
    try:
        assert not is_stage_done(cfg, "amplify", "dia", root)
        with pytest.raises(RunError, match="Delete the run folder"):
            train_amplifier(cfg, "dia", results_root=root, device="cpu")
        # its scores are out of date too, one level further down
        assert not is_stage_done(cfg, "evaluate", "dia", root)
        with pytest.raises(RunError, match="is out of date: its upstream run diffusion/"):
            collect_metrics(root)
        with pytest.raises(RunError, match="delete the run folder to train the DIA encoder"):
            evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
        # killed half way and resumed on the new DDPM: refused too, not mixed
        (amplify / DONE).rename(amplify / "DONE.kept")
        with pytest.raises(RunError, match="from its beginning"):
            train_amplifier(cfg, "dia", results_root=root, device="cpu")
        (amplify / "DONE.kept").rename(amplify / DONE)
    finally:
        ddpm.write_bytes(before)
    assert is_stage_done(cfg, "amplify", "dia", root)
    assert is_stage_done(cfg, "evaluate", "dia", root)


def test_a_gallery_of_a_retrained_ddpm_renders_again(scored):
    root, cfg = scored
    req = PlanRequest(profile="smoke", datasets=["synthetic"], methods=("dia",),
                      results_root=str(root))
    gallery = next(j for j in build_plan(req) if j.key.startswith("gallery/"))
    _rendered(gallery, req)
    [read] = json.loads(stamp_path(root, gallery).read_text())["reads"]
    assert read["run"].startswith("diffusion/synthetic/ddpm/") and is_job_done(gallery, req)
    ddpm = root / "runs" / read["run"] / read["checkpoint"]
    before = ddpm.read_bytes()
    _retrain(ddpm, "unet")
    try:
        assert not is_job_done(gallery, req)
    finally:
        ddpm.write_bytes(before)
    assert is_job_done(gallery, req)


def test_what_cannot_be_compared_counts_as_unchanged(scored, tmp_path):
    root, cfg = scored
    evaluate = stage_run_dir(cfg, "evaluate", "dia", root)
    encoder = stage_run_dir(cfg, "amplify", "dia", root) / "checkpoints" / CHECKPOINT
    save_checkpoint(encoder, torch.load(encoder, weights_only=True))  # the same weights again
    assert lineage.upstream_change(evaluate) is None
    moved = tmp_path / "moved.pt"
    encoder.rename(moved)  # a results folder copied without its checkpoints
    try:
        assert lineage.is_current(evaluate)
    finally:
        moved.rename(encoder)
    whole = encoder.read_bytes()  # damaged bytes are not another training: said as damage
    half = len(whole) // 2  # cut short; zeros inside a member (its checksum fails)
    for damaged in (whole[:half], whole[:half] + bytes(1000) + whole[half + 1000:]):
        encoder.write_bytes(damaged)
        try:
            with pytest.raises(RunError) as caught:
                collect_metrics(root)
            assert re.search(r"cannot be checked: the checkpoint checkpoints/last.pt of its "
                             r"upstream run .* is damaged \(.*restore it from a copy, or delete "
                             r"that run folder to train it again$", str(caught.value))
            with pytest.raises(RunError, match="damaged|cannot be read") as caught:
                evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
            assert "trained again" not in str(caught.value)
            assert (evaluate / DONE).is_file()  # not rescored: its scores kept for the file
        finally:
            encoder.write_bytes(whole)
    ddpm = stage_run_dir(cfg, "diffusion", "ddpm", root) / "checkpoints" / "last.pt"
    kept = ddpm.read_bytes()  # the DDPM behind a sound encoder: scoring stops, keeps its DONE
    ddpm.write_bytes(kept[: len(kept) // 2])
    try:
        with pytest.raises(RunError, match=r"(amplify|evaluate) run .* cannot be checked: the "
                                           r"checkpoint checkpoints/last.pt of its upstream run "
                                           r"diffusion/"):
            evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
        assert (evaluate / DONE).is_file()
    finally:
        ddpm.write_bytes(kept)
    assert lineage.is_current(evaluate)
    done = json.loads((evaluate / DONE).read_text())
    published = tmp_path / "runs" / "evaluate" / "synthetic" / "dia" / evaluate.name
    published.mkdir(parents=True)
    (published / DONE).write_text(json.dumps({k: v for k, v in done.items()
                                              if k != lineage.UPSTREAM}))
    assert lineage.is_current(published)  # finished before runs kept the record


def test_a_done_marker_cut_short_is_damage_not_a_run_without_record(scored, caplog):
    # taken as a run finished before the record existed, a cut DONE would let the table publish
    # the scores of an encoder whose DDPM was trained again since
    root, cfg = scored
    amplify = stage_run_dir(cfg, "amplify", "dia", root)
    evaluate = stage_run_dir(cfg, "evaluate", "dia", root)
    whole = (amplify / DONE).read_text()
    (amplify / DONE).write_text(whole[:100])
    try:
        assert not lineage.is_current(amplify) and not is_stage_done(cfg, "evaluate", "dia", root)
        damage = (rf"cannot be checked: {re.escape(str(amplify / DONE))} is not the JSON summary "
                  r"this code writes \(cut short or edited\?\): delete it, then run the same "
                  r"./run_all.sh command \(or the notebook that made the run\) again")
        with pytest.raises(RunError, match="scored run .* " + damage):
            collect_metrics(root)
        with pytest.raises(RunError, match="amplify run .* " + damage):
            evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
        assert (evaluate / DONE).is_file()  # not rescored: its encoder cannot be checked
        (amplify / DONE).unlink()  # as the message says; until the run is made again, the
        with pytest.raises(RunError, match=r"scored run .* was made from amplify/.*, which is "
                                           r"not finished \(no DONE\): run the same"):
            collect_metrics(root)  # table does not publish what was made from it
        train_amplifier(cfg, "dia", results_root=root, device="cpu")  # resumes at its end
        anew, before = (json.loads(text) for text in ((amplify / DONE).read_text(), whole))
        anew.pop("seconds_this_session"), before.pop("seconds_this_session")
        assert anew == before  # its final losses read back from the log, its upstream record too
    finally:
        (amplify / DONE).write_text(whole)
    assert lineage.is_current(amplify)
    scores = (evaluate / "scores.csv").read_text()
    (evaluate / DONE).write_text("{\n  \"upstream\": {")  # an evaluation's own: scored again
    evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
    assert f"{evaluate / DONE} is not the JSON summary" in caplog.text
    assert "scoring it again" in caplog.text
    assert lineage.is_current(evaluate) and (evaluate / "scores.csv").read_text() == scores
    rescored = (evaluate / DONE).read_text()
    (evaluate / DONE).write_text("")  # empty: an old marker, not damage
    assert lineage.upstream_change(evaluate) is None
    evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
    (evaluate / DONE).write_text(rescored)  # as the module's other tests expect it


def test_a_ddpm_being_made_again_stops_the_table_not_the_runs_made_from_it(scored):
    root, cfg = scored
    ddpm = stage_run_dir(cfg, "diffusion", "ddpm", root)
    (ddpm / DONE).rename(ddpm / "DONE.kept")  # resumed (its checkpoint kept), or DONE deleted
    try:
        assert is_stage_done(cfg, "amplify", "dia", root)  # nothing to retrain or score again
        train_amplifier(cfg, "dia", results_root=root, device="cpu")
        evaluate_amplifier(cfg, "dia", results_root=root, device="cpu")
        with pytest.raises(RunError, match=r"scored run .* was made from diffusion/synthetic/"
                                           r"ddpm/.*, which is not finished \(no DONE\)"):
            collect_metrics(root)  # two links up: the table waits for the DDPM
        checkpoint = ddpm / "checkpoints" / "last.pt"  # a folder never trained (device_grid
        checkpoint.rename(ddpm / "kept.pt")  # opens one before its cell) counts as absent
        try:
            assert lineage.unfinished_upstream(stage_run_dir(cfg, "evaluate", "dia", root)) is None
            assert not collect_metrics(root).empty
        finally:
            (ddpm / "kept.pt").rename(checkpoint)
    finally:
        (ddpm / "DONE.kept").rename(ddpm / DONE)
    assert not collect_metrics(root).empty


def test_upstream_records_that_loop_are_damage_not_a_recursion_error(tmp_path):
    run = tmp_path / "runs" / "evaluate" / "synthetic" / "dia" / "s0-12345678"
    run.mkdir(parents=True)
    (run / DONE).write_text(json.dumps({lineage.UPSTREAM: {  # edited to name itself
        "run": "evaluate/synthetic/dia/s0-12345678", "checkpoint": "x", "sha256": "y"}}))
    change = lineage.upstream_change(run)
    assert isinstance(change, lineage.Damage) and "lead round in a loop (edited?)" in change
    assert lineage.unfinished_upstream(run) is None


@pytest.mark.parametrize("record", [None, 5, [1], {"run": 7, "checkpoint": "x", "sha256": "y"},
                                    {"run": "a/b/c/s0-12345678", "checkpoint": "x"}])
def test_a_record_of_another_shape_counts_as_none(record, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "evaluate" / "synthetic" / "dia" / "s0-12345678"
    run.mkdir(parents=True)
    (run / DONE).write_text(json.dumps({lineage.UPSTREAM: record}))
    assert lineage.is_current(run) and lineage.record_change(record, tmp_path) is None
    monkeypatch.chdir(tmp_path)
    shallow = Path("elsewhere")  # not under runs/<stage>/<dataset>/<method>/: no results root
    shallow.mkdir()
    (shallow / DONE).write_text(json.dumps({lineage.UPSTREAM: {
        "run": "a/b/c/s0-12345678", "checkpoint": "x", "sha256": "y"}}))
    assert lineage.upstream_change(shallow) is None


def test_status_says_why_a_finished_run_is_out_of_date_and_what_to_do(scored):
    from dia.status import job_state

    root, cfg = scored
    req = PlanRequest(profile="smoke", datasets=["synthetic"], methods=("dia",),
                      results_root=str(root))
    jobs = {j.key.split("/")[0]: j for j in build_plan(req) if j.key.split("/")[0] in
            ("diffusion", "amplify", "evaluate")}
    for job in jobs.values():
        _rendered(job, req)
    assert {job_state(job, req)[0] for job in jobs.values()} == {"done"}
    amplify = stage_run_dir(cfg, "amplify", "dia", root)
    evaluate = stage_run_dir(cfg, "evaluate", "dia", root)
    ddpm = stage_run_dir(cfg, "diffusion", "ddpm", root)
    encoder = amplify / "checkpoints" / CHECKPOINT
    kept = {path: path.read_bytes() for path in (encoder, ddpm / "checkpoints" / "last.pt",
                                                 ddpm / DONE)}
    try:
        _retrain(encoder, "model")  # the evaluation scores the new encoder: nothing to do
        state, detail = job_state(jobs["evaluate"], req)
        assert state == "pending" and detail.startswith(f"{evaluate} is DONE, but its upstream "
                                                        "run amplify/"), detail
        assert detail.endswith("the next call scores it again")
        encoder.write_bytes(kept[encoder])
        _retrain(ddpm / "checkpoints" / "last.pt", "unet")  # the encoder's job stops: say so
        state, detail = job_state(jobs["amplify"], req)
        assert state == "failed" and "trained again since" in detail, detail
        assert detail.endswith(f"delete the run folder {amplify} to train it again")
        state, detail = job_state(jobs["evaluate"], req)  # refused too until the encoder is
        assert state == "failed" and "the run it was made from, amplify/" in detail, detail
        assert detail.endswith(f"delete the run folder {amplify} to train it again")
        ddpm_checkpoint = ddpm / "checkpoints" / "last.pt"
        ddpm_checkpoint.write_bytes(kept[ddpm_checkpoint][:1000])  # damaged: restore it
        state, detail = job_state(jobs["amplify"], req)
        assert state == "failed" and detail.startswith(f"{amplify} cannot be checked: "), detail
        assert "restore it from a copy" in detail
        state, detail = job_state(jobs["evaluate"], req)  # damage two links up: no rescoring
        assert state == "failed" and "restore it from a copy" in detail, detail
        ddpm_checkpoint.write_bytes(kept[ddpm_checkpoint])
        (ddpm / DONE).write_text("{")  # its own DONE cut short: delete it and run again
        state, detail = job_state(jobs["diffusion"], req)
        assert state == "failed" and f"{ddpm / DONE} is not the JSON summary" in detail, detail
        assert "delete it, then run the same ./run_all.sh command" in detail
        (ddpm / DONE).write_bytes(kept[ddpm / DONE])
        (evaluate / DONE).rename(evaluate / "DONE.kept")
        (evaluate / DONE).write_text("{")  # an evaluation's own: scored again
        state, detail = job_state(jobs["evaluate"], req)
        assert state == "pending" and detail.endswith("the next call scores it again"), detail
        assert "is not the JSON summary" in detail
        (evaluate / "DONE.kept").replace(evaluate / DONE)
    finally:
        for path, data in kept.items():
            path.write_bytes(data)
    assert {job_state(job, req)[0] for job in jobs.values()} == {"done"}
