"""The AUC table is rebuilt from run folders and the published rows, beside the paper's transcription."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from dia import report
from dia.config import load_config
from dia.metrics import auc_rows, write_metrics, write_scores
from dia.stages import open_stage_run


def _fake_run(results_root, dataset, method, seed, labels, scores, profile="smoke", done=True,
              overrides=None, val_scores=None):
    cfg = load_config(profile, dataset=dataset, seed=seed, overrides=overrides)
    run = open_stage_run(cfg, "evaluate", method, results_root)
    write_scores(run, [f"x{i}" for i in range(len(labels))], labels, scores)
    row_of = dict(method=method, profile=profile, image_size=28, labels=labels)
    rows = auc_rows(run, anomaly_score=scores, **row_of)
    if val_scores is not None:  # a validation AUC, as evaluate_amplifier writes it
        rows += auc_rows(run, anomaly_score=val_scores, metric="val_auc", **row_of)
    write_metrics(run, rows)
    if done:
        run.mark_done()
    return run


def test_paper_transcription_has_14_methods_by_6_datasets():
    paper = report.load_paper_table()
    assert paper["method"].nunique() == 14
    assert set(paper["dataset"]) == set(report.PAPER_DATASETS)
    assert len(paper) == 14 * 6
    dia = paper[(paper.method == "DIA") & (paper.dataset == "pneumonia")]
    assert float(dia["auc"].iloc[0]) == 0.903


def test_table_from_runs(results_root):
    _fake_run(results_root, "synthetic", "dia", 0, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9],  # AUC 1
              val_scores=[0.9, 0.8, 0.2, 0.1])  # val AUC 0: must not enter the table
    _fake_run(results_root, "synthetic", "dia", 1, [0, 0, 1, 1], [0.1, 0.9, 0.2, 0.8])  # AUC 0.5
    _fake_run(results_root, "synthetic", "csi", 0, [0, 1], [0.9, 0.1], done=False)  # unfinished
    _fake_run(results_root, "synthetic", "dia", 0, [0, 1], [0.9, 0.1],  # an ablation variant
              overrides={"dissolve.value_range": "normalized"})
    paths = report.write_tables(results_root)
    tidy = pd.read_csv(paths["csv"])
    ours = tidy[tidy.source == "re-run"]
    assert sorted(ours["auc"]) == [0.5, 1.0]  # neither the unfinished run nor the variant
    assert {"dataset", "method", "seed", "profile", "auc", "source"} <= set(tidy.columns)
    table = report.build_table(report.tidy_auc(results_root)).set_index("method")
    assert table.loc["DIA", "Synthetic"].startswith("0.750 ± 0.354 (n=2, smoke)")
    assert table.loc["DIA", "PneumoniaMNIST"].startswith("no data")
    assert table.loc["DIA", "source"] == "re-run + paper"
    assert table.loc["GANomaly", "source"] == "paper, not re-run"
    assert table.loc["GANomaly", "PneumoniaMNIST"] == "0.552 ± 0.01"
    md = paths["md"].read_text()
    assert "| DIA" in md and "0.903" in md
    assert "\\begin{tabular}" in paths["tex"].read_text()
    assert paths["figure"].is_file()


def test_the_figure_is_drawn_alike_each_time_and_leaves_numpy_seeded_as_it_was(results_root):
    import numpy as np

    for seed, scores in ((0, [0.1, 0.2, 0.8, 0.9]), (1, [0.1, 0.9, 0.2, 0.8])):
        _fake_run(results_root, "synthetic", "dia", seed, [0, 0, 1, 1], scores)
    tidy = report.tidy_auc(results_root)
    np.random.seed(5)
    expected = np.random.random()
    np.random.seed(5)
    first = report.plot_ours_vs_paper(tidy, results_root / "a.png").read_bytes()
    assert np.random.random() == expected  # seaborn's jitter drew from a state of its own
    assert report.plot_ours_vs_paper(tidy, results_root / "b.png").read_bytes() == first


def test_ddad_cells_of_a_seeded_split_say_it_never_runs_there(results_root):
    run = open_stage_run(load_config("smoke", dataset="synthetic"), "ddad", "ddad-ae", results_root)
    write_metrics(run, auc_rows(run, anomaly_score=[0.1, 0.9], labels=[0, 1], method="ddad-asr",
                                profile="smoke", image_size=32))
    run.mark_done()
    table = report.build_table(report.tidy_auc(results_root)).set_index("method")
    assert table.loc["DDAD-ASR", "Synthetic"].startswith("1.000 (n=1, smoke")  # no spread
    for seeded in ("SARS-COV-2", "Kvasir", "APTOS 2019"):  # every anomalous image is a test image
        assert table.loc["DDAD-ASR", seeded] == report.NOT_FOR_DDAD
    assert table.loc["DDAD-ASR", "Retinal OCT"].startswith("no data")  # runs once OCT is there
    assert "n/a" not in table.loc["DIA", "Kvasir"]  # DIA needs no anomalous training images


@pytest.mark.parametrize("damage, says", [
    ("", "cannot be read (No columns to parse"),
    ("auc,0.9\n", "lacks the column(s) dataset, method"),
    ("HEADER", "has no auc row"),
    ("NO NUMBER", "has a value that is no number"),
    ("TWICE", "has more than one auc row of dia"),
    ("CUT", "ends in the middle of a row (cut short?)"),
    ("NO AUC", "gives auc 1.7, which is no AUC"),
    ("FOREIGN", "names run evaluate/pneumonia/dia/s0-"),
    ("DATASET", "gives the dataset pneumonia, its run evaluate/synthetic/dia/s0-"),
    ("SEED", "gives the seed 3, its run evaluate/synthetic/dia/s0-"),
    ("SEED x", "has a seed that is no number"),
    ("SEED 0.5", "has a seed that is no whole number"),
    ("CI abc", "has a ci_high that is no number"),
    ("CI 1.5", "gives auc ci_high 1.5, which is no AUC"),
])
def test_a_damaged_metrics_file_names_its_run_and_what_to_do(results_root, damage, says):
    from dia.evaluate import read_metrics

    run = _fake_run(results_root, "synthetic", "dia", 0, [0, 1], [0.1, 0.9])
    lines = (run.path / "metrics.csv").read_text().splitlines(keepends=True)
    if damage == "HEADER":  # every row gone, e.g. a grep that kept too little
        damage = lines[0]
    elif damage == "TWICE":  # e.g. two runs' files pasted together
        damage = "".join(lines) + "".join(lines[1:])
    elif damage == "NO NUMBER":
        damage = lines[0] + "".join(line.replace(",auc,", ",auc,abc", 1) if ",auc," in line
                                    else line for line in lines[1:])
    elif damage == "CUT":  # a copy cut short: pandas reads the part of its last row
        damage = "".join(lines)[:-12]
    elif damage == "FOREIGN":  # another run's file copied in
        damage = "".join(line.replace("/synthetic/", "/pneumonia/") for line in lines)
    elif damage in ("DATASET", "SEED", "SEED x", "SEED 0.5"):  # another run's row pasted in
        dataset, seed = ("pneumonia", "0") if damage == "DATASET" else ("synthetic", damage[5:])
        damage = lines[0] + "".join(line.replace("synthetic,dia,0,", f"{dataset},dia,"
                                                 f"{seed or 3},", 1) for line in lines[1:])
    elif damage.startswith("CI "):  # the interval's upper end edited
        head, *rows = lines
        damage = head + "".join(",".join([*r.split(",")[:8], damage[3:], r.split(",")[9]])
                                for r in rows)
    elif damage == "NO AUC":  # edited by hand
        damage = lines[0] + "".join(line.replace(",auc,1.0,", ",auc,1.7,", 1) for line in lines[1:])
    (run.path / "metrics.csv").write_text(damage)
    where, done = re.escape(str(run.path / "metrics.csv")), re.escape(str(run.path / "DONE"))
    with pytest.raises(ValueError, match=rf"{where} {re.escape(says)}.*delete {done}"):
        report.write_tables(results_root)
    with pytest.raises(ValueError, match=rf"{where} {re.escape(says)}.*delete {done}"):
        read_metrics(run)  # the evaluate notebook's reading: the same refusal, not a KeyError


def test_a_run_whose_profile_was_edited_is_refused_not_left_out(results_root):
    # left out, the table would look complete without it; kept, its cell would name another
    from dia.results import RunError

    run = _fake_run(results_root, "synthetic", "dia", 0, [0, 1], [0.1, 0.9])
    metrics, config = run.path / "metrics.csv", run.path / "config.yaml"
    whole = metrics.read_text()
    metrics.write_text(whole.replace(",smoke,", ",smokf,"))
    with pytest.raises(RunError, match=rf"{re.escape(str(metrics))} is of the profile 'smokf', "
                                       r"its run's config.yaml of 'smoke' \(edited\?\): delete"):
        report.write_tables(results_root)
    metrics.write_text(whole)
    config.write_text(config.read_text().replace("  profile: smoke\n", ""))
    with pytest.raises(RunError, match=rf"{re.escape(str(config))} names no profile \(edited\?\): "
                                       rf"delete the run folder {re.escape(str(run.path))}"):
        report.write_tables(results_root)


def test_a_finished_scoring_run_without_its_metrics_file_is_an_error_not_a_gap(results_root):
    from dia.evaluate import read_metrics, read_scores
    from dia.results import RunError

    run = _fake_run(results_root, "synthetic", "dia", 0, [0, 1], [0.1, 0.9])
    cfg = load_config("smoke", dataset="synthetic")
    open_stage_run(cfg, "amplify", "dia", results_root).mark_done()  # finished, no metrics: fine
    (run.path / "metrics.csv").unlink()
    done = re.escape(str(run.path / "DONE"))
    with pytest.raises(RunError, match=rf"{re.escape(str(run.path))} is marked finished but "
                                       rf"has no metrics.csv .*: delete {done}"):
        report.write_tables(results_root)
    with pytest.raises(RunError, match="marked finished but has no metrics.csv.*delete .*DONE and run"):
        read_metrics(run)
    scores = run.path / "scores.csv"
    whole = scores.read_text()
    assert list(read_scores(run)["label"]) == [0, 1]  # the file that is there still reads
    for damaged, says in ((whole[:-2], "ends in the middle of a row (cut short?)"),  # 0.9 -> 0.
                          (whole[:whole.rindex(",") + 1], "ends in the middle of a row"),
                          (whole[:whole.rindex(",") + 1] + "\n", "no finite number"),  # edited
                          (whole.replace("\nx1,1,", "\nx1,7,"), "a label besides 0"),
                          ("", "cannot be read"), (whole.splitlines()[0] + "\n", "holds no image"),
                          ("a,b\n1,2\n", "lacks the column(s) sample_id, label, anomaly_score")):
        scores.write_text(damaged)
        assert damaged != whole
        with pytest.raises(RunError, match=rf"scores.csv .*{re.escape(says)}.*delete {done}"):
            read_scores(run)
    scores.unlink()
    with pytest.raises(RunError, match="has no scores.csv"):
        read_scores(run)


def test_a_finished_scoring_run_without_its_config_is_an_error_not_a_gap(results_root):
    from dia.results import RunError

    run = _fake_run(results_root, "synthetic", "dia", 0, [0, 1], [0.1, 0.9])
    (run.path / "config.yaml").unlink()  # its profile unknown: it must not drop out of the table
    with pytest.raises(RunError, match=rf"{re.escape(str(run.path))} is marked finished but "
                                       "has no config.yaml"):
        report.write_tables(results_root)


@pytest.mark.parametrize("damage, says", [
    ("CONFLICT", "markers of an unresolved git merge"),
    ("TWICE", "more than once"),
    ("SEED", "damaged seed, image_size or auc column"),
    (b"\xff\xfe\x00garbage", "cannot be read"),
    ("CUT", "ends in the middle of a row (cut short?)"),
    ("AUC", "an auc of 7.5"),
])
def test_a_damaged_auc_csv_is_refused_by_name_not_counted(results_root, damage, says):
    _fake_run(results_root, "synthetic", "dia", 0, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    path = report.write_tables(results_root)["csv"]
    lines = path.read_text().splitlines(keepends=True)
    ours = next(i for i, line in enumerate(lines) if ",re-run," in line)
    row, other = lines[ours], lines[ours].replace("1.0,", "0.7,", 1)
    if damage == "CONFLICT":  # a merge of two machines' tables, left unresolved
        lines[ours:ours + 1] = ["<<<<<<< HEAD\n", row, "=======\n", other, ">>>>>>> theirs\n"]
    elif damage == "TWICE":  # resolved by keeping both sides: one run counted as two seeds
        lines[ours:ours + 1] = [row, other]
    elif damage == "SEED":
        lines[ours] = row.replace(",0,smoke,", ",x,smoke,", 1)
    elif damage == "CUT":  # cut short in its last row: the rows after it would be lost unsaid
        lines[ours:] = [row[:len(row) // 2]]
    elif damage == "AUC":
        lines[ours] = row.replace("1.0,", "7.5,", 1)
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        assert lines != path.read_text().splitlines(keepends=True)  # the damage was made
        path.write_text("".join(lines))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} .*{re.escape(says)}"):
        report.tidy_auc(results_root)


def test_the_scoring_stages_are_those_whose_runs_write_metrics():
    from dia import peers
    from dia.baselines import ddad

    assert set(report.SCORING_STAGES) == {"evaluate", peers.STAGE, ddad.STAGE}


def test_empty_results_still_give_the_paper_table(results_root):
    paths = report.write_tables(results_root)
    table = pd.read_csv(paths["csv"])
    assert set(table["source"]) == {"paper"}


def test_only_the_most_complete_profile_of_a_cell_is_kept():
    frame = pd.DataFrame({
        "dataset": ["pneumonia", "pneumonia", "pneumonia", "synthetic"],
        "method": ["DIA", "DIA", "CSI", "DIA"],
        "profile": ["smoke", "quick", "smoke", "smoke"],
        "auc": [0.57, 0.77, 0.62, 0.60],
    })
    kept = report.keep_best_profile(frame)
    assert sorted(zip(kept["dataset"], kept["method"], kept["profile"])) == [
        ("pneumonia", "CSI", "smoke"), ("pneumonia", "DIA", "quick"), ("synthetic", "DIA", "smoke")]


def test_published_rows_outlive_their_run_folders_while_their_config_holds(results_root):
    kept = _fake_run(results_root, "synthetic", "dia", 0, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    gone = _fake_run(results_root, "synthetic", "dia", 1, [0, 0, 1, 1], [0.1, 0.9, 0.2, 0.8])
    stale = _fake_run(results_root, "synthetic", "csi", 0, [0, 1], [0.1, 0.9])
    paths = report.write_tables(results_root)
    first = pd.read_csv(paths["csv"])
    assert set(first.loc[first.source == "re-run", "origin"]) == {"folder"}
    assert first.loc[first.source == "re-run", "device"].str.startswith("cpu").all()

    # Another machine: two run folders are not here; one of them has a config changed since.
    shutil.rmtree(gone.path)
    shutil.rmtree(stale.path)
    csv = paths["csv"].read_text()
    paths["csv"].write_text(csv.replace(stale.run_id, stale.run_id[:-8] + "0" * 8))
    ours = report.tidy_auc(results_root).query("source == 're-run'").set_index("run_id")
    assert sorted(ours.index) == sorted([kept.run_id, gone.run_id])
    assert ours.loc[kept.run_id, "origin"] == "folder"
    assert ours.loc[gone.run_id, "origin"] == "recorded" and ours.loc[gone.run_id, "auc"] == 0.5
    assert ours.loc[gone.run_id, "device"].startswith("cpu")  # where it was measured, kept

    again = pd.read_csv(report.write_tables(results_root)["csv"])  # a rewrite loses nothing
    assert sorted(again.loc[again.source == "re-run", "run_id"]) == sorted(ours.index)
    table = report.build_table(report.tidy_auc(results_root)).set_index("method")
    assert table.loc["DIA", "Synthetic"].startswith("0.750 ± 0.354 (n=2, smoke)")


def test_a_run_being_redone_keeps_its_recorded_row_marked_as_recorded(results_root):
    run = _fake_run(results_root, "synthetic", "dia", 0, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    report.write_tables(results_root)
    run.file("DONE").unlink()  # scored again and killed half way: the folder is here, not DONE
    ours = report.tidy_auc(results_root).query("source == 're-run'").set_index("run_id")
    # the last finished AUC, said to come from the record: a rebuild must not erase a row that
    # may have been measured on another machine (auc.csv is the published record)
    assert ours.loc[run.run_id, "origin"] == "recorded" and ours.loc[run.run_id, "auc"] == 1.0


def test_a_cell_is_not_averaged_over_kinds_of_machine_and_its_record_loses_no_row(results_root):
    here = _fake_run(results_root, "synthetic", "dia", 0, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    gpu = _fake_run(results_root, "synthetic", "dia", 1, [0, 0, 1, 1], [0.1, 0.9, 0.2, 0.8])
    unknown = _fake_run(results_root, "synthetic", "dia", 2, [0, 0, 1, 1], [0.1, 0.9, 0.2, 0.8])
    paths = report.write_tables(results_root)
    # published elsewhere, only their rows are here: seed 1 and another run of seed 0 (same run
    # id) on a GPU, seed 2 from before devices were recorded
    shutil.rmtree(gpu.path)
    shutil.rmtree(unknown.path)
    record = pd.read_csv(paths["csv"])
    record.loc[record.run_id == gpu.run_id, "device"] = "NVIDIA H200"
    record.loc[record.run_id == unknown.run_id, "device"] = float("nan")
    seed0_gpu = record[record.run_id == here.run_id].assign(device="NVIDIA H200", auc=0.25)
    paths["csv"].write_text(pd.concat([record, seed0_gpu]).to_csv(index=False))

    ours = report.tidy_auc(results_root).query("source == 're-run'")
    origins = sorted(zip(ours["run_id"], ours["origin"], ours["auc"]))
    assert origins == sorted([(here.run_id, "folder", 1.0), (here.run_id, "other-machine", 0.25),
                              (gpu.run_id, "other-machine", 0.5),
                              (unknown.run_id, "recorded", 0.5)])
    table = report.build_table(report.tidy_auc(results_root)).set_index("method")
    # the CPU run here and the row of unknown device; neither GPU row
    assert table.loc["DIA", "Synthetic"].startswith("0.750 ± 0.354 (n=2, smoke)")
    again = pd.read_csv(report.write_tables(results_root)["csv"])
    assert sorted(again.loc[again.origin == "other-machine", "run_id"]) == sorted(
        [here.run_id, gpu.run_id])  # both still in the record
    assert (again.origin == "folder").sum() == 1


def test_a_foreign_auc_csv_is_refused(results_root):
    (results_root / "tables").mkdir(parents=True)
    (results_root / "tables" / "auc.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an AUC table"):
        report.tidy_auc(results_root)


def test_a_finished_run_of_a_profile_gone_since_is_left_out_with_a_warning(results_root, caplog):
    import yaml

    run = _fake_run(results_root, "synthetic", "dia", 0, [0, 1], [0.1, 0.9])
    assert len(report.collect_metrics(results_root)) == 1
    record = yaml.safe_load((run.path / "config.yaml").read_text())
    record["config"]["profile"] = "fast"  # a profile renamed since
    (run.path / "config.yaml").write_text(yaml.safe_dump(record))
    with caplog.at_level("WARNING", logger="dia.report"):
        assert report.collect_metrics(results_root).empty
    assert f"finished run {run.path} is of the profile 'fast'" in caplog.text
    assert "left out of the table" in caplog.text
