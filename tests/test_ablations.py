"""Ablation options: each changes what it should and nothing else; the notebook runs on smoke."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import torch

from dia.ablations import cells, run_ablations, summary, variants
from dia.blur import BlurDissolver
from dia.results import read_run_env, run_commits


def test_median_blur_of_a_constant_image_is_the_same_image():
    images = torch.full((3, 3, 16, 16), 0.37)
    out = BlurDissolver("median_blur")(images, torch.tensor([30, 65, 99]))
    assert torch.allclose(out, images)


def test_gaussian_blur_keeps_constants_and_grows_with_t():
    torch.manual_seed(0)
    const = torch.full((1, 3, 16, 16), 0.5)
    blur = BlurDissolver("gaussian_blur")
    assert torch.allclose(blur(const, 50), const, atol=1e-6)
    noise = torch.rand(1, 3, 32, 32)
    weak, strong = blur(noise, 30), blur(noise, 99)
    assert strong.std() < weak.std() < noise.std()  # a larger t removes more detail


def test_median_kernel_follows_t():
    blur = BlurDissolver("median_blur")
    assert blur.strength(torch.tensor([30])).item() == 0.0
    spike = torch.zeros(1, 3, 9, 9)
    spike[..., 4, 4] = 1.0
    assert blur(spike, 30).abs().sum() == 0  # a lone pixel is removed by any median


def test_unknown_blur_and_ablation_are_refused():
    with pytest.raises(ValueError, match="gaussian_blur or median_blur"):
        BlurDissolver("box_blur")
    with pytest.raises(ValueError, match="unknown ablation"):
        variants(["nope"], "smoke", "synthetic")


def test_seeds_and_train_of_the_wrong_type_are_refused_before_any_run(results_root):
    from dia.config import ConfigError

    for seeds in (0, -1, "2", True, 2.0):
        with pytest.raises(ConfigError, match="give how many seeds"):
            run_ablations("synthetic", "smoke", seeds=seeds, which=["exclusion"],
                          results_root=results_root, train=False)
    with pytest.raises(ConfigError, match="train = 'False': give True or False"):
        run_ablations("synthetic", "smoke", seeds=1, which=["exclusion"],
                      results_root=results_root, train="False")
    assert not (results_root / "runs").exists()


def test_variants_override_only_their_key():
    rows = {(a, label): (o, m) for a, label, o, m in variants(
        ["dissolver", "value_range", "exclusion", "ddpm_steps", "resolution"], "smoke", "synthetic")}
    assert rows[("value_range", "normalized")] == ({"dissolve.value_range": "normalized"}, "dia")
    assert rows[("exclusion", "own dissolved copy negative")] == (
        {"amplify.exclude_own_dissolved": False}, "dia")
    assert rows[("dissolver", "none (CSI)")] == ({}, "csi")
    assert [k[1] for k in rows if k[0] == "ddpm_steps"] == ["5", "10", "20"]
    assert not any(k[0] == "resolution" for k in rows)  # 28-pixel data is always dissolved at 32


def test_ddpm_budget_scales_the_profiles_ddpm_to_the_reference_short_run():
    from dia.config import load_config

    quick = load_config("quick", dataset="pneumonia").diffusion
    rows = variants(["ddpm_budget"], "quick", "pneumonia")
    assert rows[0][1:] == (f"width 32, {quick.steps} x 128 images", {}, "dia")  # the profile's own
    assert rows[1][1] == f"width 64, {quick.steps} x 512 images"  # the reference run's 580 x 512
    big = load_config("quick", dataset="pneumonia", overrides=rows[1][2]).diffusion
    assert (big.width, big.batch_size, big.steps, big.lr) == (64, 512, quick.steps, quick.lr)


def test_ddpm_arch_sets_the_reference_layout_beside_the_profiles_ddpm():
    from dia.config import load_config

    quick = load_config("quick", dataset="pneumonia").diffusion
    rows = variants(["ddpm_arch"], "quick", "pneumonia")
    assert rows[0][2] == {}  # the profile's own DDPM: the main table's DIA cell, not trained again
    configs = [load_config("quick", dataset="pneumonia", overrides=r[2]).diffusion for r in rows]
    assert [c.architecture for c in configs] == ["diffusers", "reference", "reference"]
    assert [(c.width, c.batch_size) for c in configs] == [(32, 128), (32, 128), (64, 512)]
    assert {c.steps for c in configs} == {quick.steps}
    assert rows[2][1].startswith("reference, width 64")


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_ddpm_focus_varies_the_share_of_t_drawn_where_dissolving_uses_it(profile):
    from dia.config import load_config

    own = load_config(profile, dataset="pneumonia")
    d = own.diffusion
    rows = variants(["ddpm_focus"], profile, "pneumonia")
    assert rows[0][2] == {} and rows[0][1].startswith(f"{d.steps} steps, ")  # the profile's own
    ddpms = [load_config(profile, dataset="pneumonia", overrides=r[2]).diffusion for r in rows]
    cells = [(x.steps, x.focus_fraction) for x in ddpms]
    assert cells[0] == (d.steps, d.focus_fraction) and len(set(cells)) == len(cells)
    quarter = round(d.steps / 4)
    assert cells[1:] == [(quarter, 0.0), (quarter, 0.5), (quarter, 1.0)]
    dissolving = f"{own.dissolve.t_min}-{own.dissolve.t_max - 1}"  # the t range focused on
    for (steps, focus), (_, label, _, _) in zip(cells, rows):
        assert label == (f"{steps} steps, {focus:.0%} of t from {dissolving}" if focus
                         else f"{steps} steps, t ~ U{{0..999}}")


def test_ddpm_seed_trains_the_profiles_ddpm_under_other_seeds():
    from dia.config import load_config
    from dia.stages import stage_run_dir

    own = load_config("quick", dataset="pneumonia", seed=2)
    rows = variants(["ddpm_seed"], "quick", "pneumonia")
    assert [r[1] for r in rows] == ["DDPM seed 0", "DDPM seed 1", "DDPM seed 2"]
    assert rows[0][2] == {} and {r[3] for r in rows} == {"dia"}
    cfgs = [load_config("quick", dataset="pneumonia", seed=2, overrides=r[2] or None) for r in rows]
    assert all(c.seed == own.seed for c in cfgs)  # the amplifier's seed is not what varies
    assert all(c.diffusion.seed == k for k, c in enumerate(cfgs))
    changed = {k for c in cfgs[1:] for k, v in vars(c.diffusion).items()
               if v != getattr(own.diffusion, k)}
    assert changed == {"seed"}  # nothing but the DDPM's seed
    ddpm_runs = {stage_run_dir(c, "diffusion", "ddpm", "R") for c in cfgs}
    dia_runs = {stage_run_dir(c, "amplify", "dia", "R") for c in cfgs}
    assert len(ddpm_runs) == len(dia_runs) == 3  # three DDPMs, each with its own DIA run


@pytest.mark.slow
def test_blur_ablation_runs_end_to_end_and_is_kept_out_of_the_table(results_root, monkeypatch,
                                                                    load_script, caplog):
    from dia import ablations, report

    monkeypatch.setitem(ablations.ABLATIONS, "dissolver",
                        [v for v in ablations.ABLATIONS["dissolver"] if v[0] != "gaussian_blur"])
    frame = run_ablations("synthetic", "smoke", seeds=1, which=["dissolver"],
                          results_root=results_root)
    assert list(frame["variant"]) == ["diffusion", "median_blur", "none (CSI)"]
    assert frame["auc"].between(0, 1).all() and frame["val_auc"].between(0, 1).all()
    assert len(summary(frame)) == 3 and len(summary(frame, "val_auc")) == 3
    table = report.tidy_auc(results_root)
    ours = table[table["source"] == "re-run"]
    assert len(ours) == 2  # only the profile's own DIA and CSI, not the blur variants
    again = run_ablations("synthetic", "smoke", seeds=1, which=["dissolver"],
                          results_root=results_root)
    assert list(again["run_id"]) == list(frame["run_id"])  # finished variants are reused

    # tools/device_grid.py (a GPU lease in one call): one CSV row per finished cell, and no cell
    # starts once the time left is under 1.3 x the longest so far; the first always starts.
    # Within a seed, the main table's cells run first.
    grid, out = load_script("tools/device_grid.py"), results_root / "grid.csv"
    args = ["--dataset", "synthetic", "--profile", "smoke", "--seeds", "1", "--which", "dissolver",
            "--results-root", str(results_root), "--out", str(out), "--device", "cpu"]
    assert grid.main([*args, "--budget-s", "0"]) == 0
    assert grid.main([*args, "--budget-s", "1e6"]) == 0
    rows = pd.read_csv(out)
    order = [0, 0, 2, 1]  # the main table's cells (DIA, CSI) first, then median_blur
    assert list(rows["run_id"]) == list(frame["run_id"].iloc[order])
    assert list(rows["auc"]) == pytest.approx(list(frame["auc"].iloc[order]), abs=1e-6)
    assert list(rows["val_auc"]) == pytest.approx(list(frame["val_auc"].iloc[order]), abs=1e-6)
    assert rows["device"].str.startswith("cpu").all() and (rows["status"] == "done").all()

    folders = sorted(p for p in (results_root / "runs").rglob("*") if p.is_dir())
    partial = run_ablations("synthetic", "smoke", seeds=2, which=["dissolver"],
                            results_root=results_root, train=False)
    assert sorted(p for p in (results_root / "runs").rglob("*") if p.is_dir()) == folders
    done = partial[partial["status"] == "done"]
    assert list(done["run_id"]) == list(frame["run_id"]) and (done["seed"] == 0).all()
    metrics = results_root / "runs" / done["run_id"].iloc[0] / "metrics.csv"
    whole = metrics.read_bytes()  # cut short, it is refused by name, not read as it is
    metrics.write_bytes(whole[:-5])
    with pytest.raises(ValueError, match="metrics.csv ends in the middle of a row"):
        run_ablations("synthetic", "smoke", seeds=1, which=["dissolver"],
                      results_root=results_root, train=False)
    metrics.write_bytes(whole)
    marker = metrics.parent / "DONE"  # a run left out is said, with why: not a silent gap
    kept_marker = marker.read_text()
    marker.write_text(kept_marker[:20])
    cut = run_ablations("synthetic", "smoke", seeds=1, which=["dissolver"],
                        results_root=results_root, train=False)
    assert (cut["status"] == "not run").sum() == 1
    assert (f"ablation run {metrics.parent} is left out (not run): {marker} is not the JSON "
            "summary") in caplog.text
    marker.write_text(kept_marker)
    upstream = json.loads(kept_marker)["upstream"]["run"]  # its encoder's DONE deleted, as the
    amplify_done = results_root / "runs" / upstream / "DONE"  # advice for a cut one says
    kept_amplify = amplify_done.read_text()
    amplify_done.unlink()
    cut = run_ablations("synthetic", "smoke", seeds=1, which=["dissolver"],
                        results_root=results_root, train=False)
    assert (cut["status"] == "not run").sum() == 1  # as the table, it waits for the encoder
    assert f"left out (not run): {upstream} is not finished (no DONE)" in caplog.text
    amplify_done.write_text(kept_amplify)

    # device_grid --no-train publishes the scored cells of a grid trained some other way, with
    # the device each run's env.json names (a run without one is not credited to this machine,
    # and no env.json is written for it); it trains nothing, so seed 1 stays out.
    read_back, runs = results_root / "read_back.csv", results_root / "runs"
    with pytest.raises(SystemExit):  # without --no-train a budget is required
        grid.main(args)
    envs = [runs / run_id / "env.json" for run_id in done["run_id"]]
    saved = [env.read_text() for env in envs]
    envs[0].write_text(saved[0].replace('"device": "cpu', '"device": "elsewhere cpu'))
    envs[1].unlink()
    read_args = ["--dataset", "synthetic", "--profile", "smoke", "--seeds", "2", "--which",
                 "dissolver", "--results-root", str(results_root), "--out", str(read_back),
                 "--no-train"]
    assert grid.main(read_args) == 0
    assert sorted(p for p in runs.rglob("*") if p.is_dir()) == folders and not envs[1].exists()
    rows = pd.read_csv(read_back)
    assert list(rows.columns) == grid.COLUMNS and list(rows["run_id"]) == list(done["run_id"])
    assert list(rows["val_auc"]) == pytest.approx(list(done["val_auc"]), abs=1e-6)
    assert rows["device"][0].startswith("elsewhere cpu (") and pd.isna(rows["device"][1])
    assert rows["device"][2].startswith("cpu (") and rows["seconds"].isna().all()
    for env, text in zip(envs, saved):
        env.write_text(text)
    nothing = results_root / "nothing.csv"  # no scored cell: an error, and no file
    assert grid.main([*read_args[:-3], "--out", str(nothing), "--seed-list", "1",
                      "--no-train"]) == 1
    assert not nothing.exists()
    missing = ablations.not_run(partial)
    assert list(missing["seed"]) == [1, 1, 1] and partial.loc[missing.index, "auc"].isna().all()
    assert all(cell.endswith("(n=1)") for cell in summary(partial)["synthetic"])
    unscored = partial.assign(val_auc=float("nan"))  # as runs scored before val_auc existed
    assert set(summary(unscored, "val_auc")["synthetic"]) == {
        "no val_auc (no validation split, or scored before it existed)"}
    assert set(summary(unscored.assign(auc=float("nan")), "val_auc")["synthetic"]) == {"not run"}

    # The ledger keeps the AUCs when the run folders are gone (another machine) ...
    ablations.write_ablation_tables(partial, results_root)
    ledger_rows = ablations.read_ledger(results_root).itertuples()
    commits = {row.run_id: row.git_commit for row in ledger_rows}
    assert commits == {run_id: "+".join(run_commits(read_run_env(runs / run_id)))
                       for run_id in done["run_id"]}
    shutil.rmtree(results_root / "runs")
    ledger = ablations.ledger_path(results_root)
    assert (ablations.provenance(partial, results_root)["device"] != "").all()
    last = done["run_id"].iloc[-1]
    ledger.write_text(ledger.read_text().replace(last, last[:-8] + "0" * 8))
    kept = run_ablations("synthetic", "smoke", seeds=2, which=["dissolver"],
                         results_root=results_root, train=False)
    recorded = kept[kept["status"] == "recorded"]  # ... only under the run id the config still has
    assert list(recorded["run_id"]) == list(done["run_id"])[:-1]
    assert list(recorded["auc"]) == pytest.approx(list(done["auc"])[:-1], abs=1e-6)
    assert list(recorded["val_auc"]) == pytest.approx(list(done["val_auc"])[:-1], abs=1e-6)
    assert len(ablations.not_run(kept)) == 4 and not (results_root / "runs").exists()
    ablations.write_ablation_tables(kept, results_root)  # recorded rows are not lost on rewrite
    assert len(ablations.read_ledger(results_root)) == len(done)


def test_a_ledger_written_before_val_auc_still_reads(results_root):
    from dia import ablations

    path = ablations.ledger_path(results_root)
    path.parent.mkdir(parents=True)
    path.write_text("run_id,dataset,method,seed,overrides,auc,device,git_commit,created\n"
                    "evaluate/pneumonia/dia/s0-6d31e124,pneumonia,dia,0,{},0.765187,cpu,,\n")
    ledger = ablations.read_ledger(results_root)
    assert list(ledger.columns) == ablations.LEDGER_COLUMNS
    assert ledger["auc"].tolist() == [0.765187] and ledger["val_auc"].isna().all()


def test_a_damaged_ledger_is_refused_by_name_not_read_as_it_is(results_root):
    # its rows are published without their run folders, and record_runs writes back what it
    # read: a cut AUC would be published with fewer digits, a row without one lost for good
    from dia import ablations

    path = ablations.ledger_path(results_root)
    path.parent.mkdir(parents=True)
    header = "run_id,dataset,method,seed,overrides,auc,val_auc,device,git_commit,created\n"
    row = "evaluate/pneumonia/dia/s4-b937e645,pneumonia,dia,4,{},0.836248,,cpu,abc,2026-12-01\n"
    for text, says in ((row[:-10], "ends in the middle of a row (cut short?)"),
                       (row.replace("0.836248", "0.83x248"), "auc 0.83x248, which is no AUC"),
                       (row.replace("0.836248", ""), "gives run evaluate/pneumonia/dia/s4-b937e645 "
                                                    "no auc"),
                       (row.replace("0.836248,", "1.5,0.9"), "auc 1.5, which is no AUC"),
                       (row.replace(",,cpu", ",-0.1,cpu"), "val_auc -0.1, which is no AUC"),
                       ("<<<<<<< HEAD\n" + row, "markers of an unresolved git merge")):
        path.write_text(header + text)
        with pytest.raises(ValueError, match=re.escape(f"{path}") + ".*" + re.escape(says)):
            ablations.read_ledger(results_root)
    path.write_text(header + row)
    assert ablations.read_ledger(results_root)["auc"].tolist() == [0.836248]


def test_the_ledger_keeps_a_run_per_kind_of_machine(results_root, monkeypatch):
    import json

    from dia import ablations

    run_id = "evaluate/pneumonia/dia/s0-6d31e124"
    folder = results_root / "runs" / run_id
    folder.mkdir(parents=True)
    cpu = "cpu (2 cores, x86_64, AVX512)"
    (folder / "env.json").write_text(json.dumps({"device": cpu, "created": "2026-12-03"}))
    path = ablations.ledger_path(results_root)
    path.parent.mkdir(parents=True)
    path.write_text("run_id,dataset,method,seed,overrides,auc,val_auc,device,git_commit,created\n"
                    f"{run_id},pneumonia,dia,0,{{}},0.81,0.90,NVIDIA H200,abc,2026-11-30\n"
                    f"{run_id},pneumonia,dia,0,{{}},0.71,0.80,cpu (2 cores),abc,2026-11-29\n")
    frame = pd.DataFrame([{"run_id": run_id, "status": "done", "dataset": "pneumonia",
                           "method": "dia", "seed": 0, "overrides": "{}", "auc": 0.84,
                           "val_auc": 0.91}])
    ablations.record_runs(frame, results_root)  # scored again on a CPU: the CPU row is replaced
    ledger = ablations.read_ledger(results_root)
    assert sorted(zip(ledger["device"], ledger["auc"])) == [("NVIDIA H200", 0.81), (cpu, 0.84)]

    # Published from the ledger alone: this machine's kind where recorded, else the latest row;
    # provenance names the row each AUC came from.
    assert ablations._recorded_aucs(ledger, "cpu")[run_id] == {"auc": 0.84, "val_auc": 0.91,
                                                               "device": cpu}
    monkeypatch.setattr("dia.runtime.describe_device", lambda preference="auto": "NVIDIA H200")
    taken = ablations._recorded_aucs(ledger, "cuda")[run_id]
    assert taken["auc"] == 0.81
    assert list(ablations.provenance(frame.assign(device=taken["device"]), results_root)["auc"]) \
        == [0.81]
    monkeypatch.setattr("dia.runtime.describe_device", lambda preference="auto": "NVIDIA A100")
    assert ablations._recorded_aucs(ledger, "cuda")[run_id]["auc"] == 0.84  # the latest

    # A run whose machine is unknown (no env.json) replaces only a row without one.
    (folder / "env.json").unlink()
    ablations.record_runs(frame.assign(auc=0.5), results_root)
    ledger = ablations.read_ledger(results_root)
    assert sorted(zip(ledger["device"], ledger["auc"])) == [
        ("", 0.5), ("NVIDIA H200", 0.81), (cpu, 0.84)]
    ablations.record_runs(frame.assign(auc=0.6), results_root)
    assert len(ablations.read_ledger(results_root)) == 3


def test_ddpm_steps_figure_draws_seeds_means_and_the_csi_line(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from dia.ablations import plot_ddpm_steps

    drawn = {}
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: drawn.update(fig=fig, path=path))
    rows = [("ddpm_steps", "150", "dia", 0.70), ("ddpm_steps", "150", "dia", 0.80),
            ("ddpm_steps", "600", "dia", 0.90), ("ddpm_steps", "300", "dia", None),
            ("dissolver", "none (CSI)", "csi", 0.75), ("dissolver", "none (CSI)", "csi", 0.77)]
    frame = pd.DataFrame(rows, columns=["ablation", "variant", "method", "auc"])
    frame = frame.assign(dataset="synthetic", profile="smoke")
    assert plot_ddpm_steps(frame, tmp_path / "f.png") == tmp_path / "f.png"
    ax = drawn["fig"].axes[0]
    mean_line, csi_line = ax.get_lines()
    assert list(mean_line.get_xdata()) == [150, 600]  # a step count with no AUC is left out
    assert list(mean_line.get_ydata()) == pytest.approx([0.75, 0.90])
    assert list(csi_line.get_ydata()) == pytest.approx([0.76, 0.76])
    assert "CSI, mean of 2 seed(s)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert plot_ddpm_steps(frame[frame["ablation"] != "ddpm_steps"], tmp_path / "g.png") is None


@pytest.mark.notebook
def test_ablation_notebook_runs_on_smoke(tmp_path, run_notebook):
    import json

    results = tmp_path / "results"
    out = run_notebook("50_ablations", dataset="synthetic", profile="smoke", seeds=1,
                       which="value_range,keep_gray", results_root=str(results), data_root="")
    cells = json.loads(out.read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    table = (results / "tables").glob("ablations*")
    assert list(table), "the notebook writes its tables"
    evaluated = list((results / "runs" / "evaluate" / "synthetic" / "dia").glob("s0-*"))
    assert len(evaluated) == 3  # reference (shared by both ablations), normalized, keep_gray


def test_device_grid_skips_cells_whose_ddpm_another_process_is_training(
        results_root, load_script, hold_lock, locked_elsewhere):
    from dia.stages import open_stage_run

    grid = load_script("tools/device_grid.py")
    pending = list(cells("synthetic", "smoke", seeds=1, which=["dissolver"]))
    assert [row["variant"] for row, _ in pending][:2] == ["diffusion", "gaussian_blur"]
    ddpm = open_stage_run(pending[0][1], "diffusion", "ddpm", results_root)
    holder, release = hold_lock(ddpm)  # another process trains the DDPM the first cell needs
    (row, _), claim = grid._next_cell(pending, str(results_root))
    with claim:
        assert row["variant"] == "gaussian_blur"  # the first cell that needs no DDPM
    release.set()
    holder.join(10)
    (row, _), claim = grid._next_cell(pending, str(results_root))
    assert row["variant"] == "diffusion"
    with claim:
        assert locked_elsewhere(ddpm.path)  # claimed before the cell even loads its data
    assert not locked_elsewhere(ddpm.path)


def test_device_report_counts_each_cell_once_and_pairs_variants_with_dia(tmp_path,
                                                                          load_script):
    cols = ("dataset,ablation,variant,method,seed,profile,overrides,auc,val_auc,status,run_id,"
            "seconds,device")
    dia, csi, med = ("evaluate/p/dia/s{}-aaaaaaaa", "evaluate/p/csi/s{}-bbbbbbbb",
                     "evaluate/p/dia/s{}-cccccccc")
    rows = {  # call 1 trains seed 0 and CSI seed 1; call 2 reads them back (0 s) and adds the rest
        "call1.csv": [f"p,dissolver,diffusion,dia,0,q,{{}},0.80,0.90,done,{dia.format(0)},60,G",
                      f"p,dissolver,none (CSI),csi,0,q,{{}},0.70,0.85,done,{csi.format(0)},40,G",
                      f"p,dissolver,none (CSI),csi,1,q,{{}},0.90,0.95,done,{csi.format(1)},40,G"],
        "call2.csv": [f"p,dissolver,diffusion,dia,0,q,{{}},0.80,0.90,done,{dia.format(0)},0.1,G",
                      f"p,dissolver,diffusion,dia,1,q,{{}},0.84,0.92,done,{dia.format(1)},61,G",
                      f'p,dissolver,median_blur,dia,1,q,"{{""d"": 1}}",0.88,0.93,done,'
                      f"{med.format(1)},50,G"],
    }
    for name, lines in rows.items():
        (tmp_path / name).write_text("\n".join([cols, *lines]) + "\n")
    util = tmp_path / "gpu_util.csv"
    util.write_text("timestamp, utilization.gpu [%], memory.used [MiB]\n" + "".join(
        f"2026/11/30 23:37:{s:02d}.000, {s * 3} %, 10 MiB\n" for s in range(20)))
    report = load_script("tools/device_report.py")
    root = tmp_path / "results"
    assert report.main([str(tmp_path / "call1.csv"), str(tmp_path / "call2.csv"),
                        "--name", "gpu_x", "--util", str(util), "--results-root", str(root)]) == 0
    cells = pd.read_csv(root / "tables" / "gpu_x.csv")
    assert len(cells) == 5 and cells.loc[cells["run_id"] == dia.format(0), "seconds"].item() == 60
    table, val = (root / "tables" / "gpu_x.md").read_text().split("\nValidation AUC")
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in body] == [
        "DIA as specified", "CSI", "dissolver: median_blur"]
    assert "0.820 ± 0.028 (n=2)" in body[0]  # DIA 0.80 and 0.84
    assert "-0.020 (n=2)" in body[1]  # CSI − DIA, same seed: 0.70 − 0.80 and 0.90 − 0.84
    assert "+0.040 (n=1)" in body[2] and "| –" in body[2]  # seed 1 only; no seed 0
    assert "| 0.880 (n=1)" in body[2]  # one seed: no spread to show
    body = [line for line in val.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in body] == [
        "DIA as specified", "CSI", "dissolver: median_blur"]
    assert "0.910 ± 0.014 (n=2)" in body[0]  # the same layout for the validation AUC
    assert "-0.010 (n=2)" in body[1] and "+0.010 (n=1)" in body[2]
    assert (root / "figures" / "gpu_x.png").is_file()
    assert (root / "figures" / "gpu_x_val.png").is_file()
    assert (root / "figures" / "gpu_x_gpu_util.png").is_file()
    noval = tmp_path / "noval.csv"  # a grid without val_auc (the 2026-11-30 H200 grids)
    pd.read_csv(tmp_path / "call1.csv").drop(columns="val_auc").to_csv(noval, index=False)
    assert report.main([str(noval), "--name", "noval", "--results-root", str(root)]) == 0
    assert "Validation" not in (root / "tables" / "noval.md").read_text()
    assert not (root / "figures" / "noval_val.png").exists()
    with pytest.raises(SystemExit):  # a missing file is named, not a traceback
        report.main([str(tmp_path / "nope.csv"), "--name", "x", "--results-root", str(root)])
    empty = tmp_path / "empty.csv"
    empty.write_text(cols + "\n")
    with pytest.raises(SystemExit):  # so is a grid without cells
        report.main([str(empty), "--name", "x", "--results-root", str(root)])
    for name, content, says in (("blank.csv", b"", "cannot be read"),
                                ("bytes.csv", b"\xff\xfe\x00\x01", "cannot be read"),
                                ("other.csv", b"a,b\n1,2\n", "lacks the column(s)")):
        (tmp_path / name).write_bytes(content)
        for argv in ([str(tmp_path / name)],  # as a grid, as --cpu and as --util
                     [str(tmp_path / "call1.csv"), "--cpu", str(tmp_path / name)],
                     [str(tmp_path / "call1.csv"), "--util", str(tmp_path / name)]):
            with pytest.raises(SystemExit, match=rf"{re.escape(name)} {re.escape(says)}"):
                report.main([*argv, "--name", "x", "--results-root", str(root)])
    whole = (tmp_path / "call1.csv").read_text()  # a lane killed while appending its last row
    for name, content, says in (("cut.csv", whole[:-3], "ends in the middle of a row"),
                                ("text.csv", whole.replace(",0.80,", ",0.8x,", 1),
                                 "gives auc 0.8x, which is no AUC"),
                                ("merge.csv", "<<<<<<< HEAD\n" + whole,
                                 "holds the markers of an unresolved git merge")):
        (tmp_path / name).write_text(content)
        with pytest.raises(SystemExit, match=rf"{re.escape(name)} {re.escape(says)}"):
            report.main([str(tmp_path / name), "--name", "x", "--results-root", str(root)])
    changed = tmp_path / "call3.csv"  # the same cell under another config hash: refused
    changed.write_text((tmp_path / "call1.csv").read_text().replace("aaaaaaaa", "dddddddd"))
    with pytest.raises(SystemExit, match="more than one run id"):
        report.main([str(tmp_path / "call1.csv"), str(changed), "--name", "x",
                     "--results-root", str(root)])


def test_the_device_grid_refuses_bad_arguments_by_name(load_script, tmp_path, capsys):
    grid = load_script("tools/device_grid.py")
    base = ["--dataset", "synthetic", "--profile", "smoke", "--out", str(tmp_path / "g.csv"),
            "--results-root", str(tmp_path)]
    for extra, says in ((["--which", "nosuch"], "unknown ablation(s) ['nosuch']"),
                        (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
                        (["--profile", "nosuch"], "unknown profile 'nosuch'"),
                        (["--seeds", "0"], "seeds = 0"),
                        (["--budget-s", "-5"], "--budget-s -5.0: must be at least 0")):
        for mode in (["--budget-s", "1"], ["--no-train"]):
            with pytest.raises(SystemExit):
                grid.main([*base, *mode, *extra])
            assert says in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "g.csv").exists()
