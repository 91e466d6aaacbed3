"""AUC orientation, one-class errors, the bootstrap interval and the per-split files."""

from types import SimpleNamespace

import numpy as np
import pytest

from dia.metrics import (
    MetricError, auc_caveats, bootstrap_auc_ci, check_test_labels, compute_auc, labelled_splits,
)


def test_auc_orientation():
    labels = [0, 0, 1, 1]
    assert compute_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert compute_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_auc_caveats_say_smoke_means_nothing_and_name_a_score_below_chance():
    import pandas as pd

    frame = pd.DataFrame({"method": ["DIA", "DIA", "CSI"], "metric": ["auc", "val_auc", "auc"],
                          "value": [0.401, 0.30, 0.619], "ci_low": [0.336, 0.2, 0.55],
                          "ci_high": [0.465, 0.4, 0.68]})
    text = auc_caveats(frame, "quick")
    assert text.startswith("DIA: AUC 0.401, its whole 95 % interval below 0.5")
    assert len(text.splitlines()) == 1  # not the val row, not CSI above chance
    smoke = auc_caveats(frame, "smoke").splitlines()  # whatever the values; and the same line
    assert "not results" in smoke[0] and smoke[1:] == text.splitlines()
    assert auc_caveats(frame.iloc[1:], "paper") == ""  # a val AUC below 0.5 is not the test's
    frame.loc[0, "ci_high"] = 0.52  # the interval reaches chance: no claim
    assert auc_caveats(frame, "quick") == ""
    terms = pd.DataFrame({"method": ["csi"] * 4,  # each term alone, as 30_evaluate shows them
                          "metric": ["auc", "auc_contrast", "auc_shift", "val_auc_contrast"],
                          "value": [0.619, 0.421, 0.623, 0.3], "ci_low": [0.55, 0.357, 0.56, 0.2],
                          "ci_high": [0.68, 0.488, 0.69, 0.4]})
    assert auc_caveats(terms, "quick") == (
        "csi, its contrastive term alone: AUC 0.421, its whole 95 % interval below 0.5: this "
        "term ranks normal test images as more anomalous than anomalous ones")


def test_one_class_is_a_clear_error_not_nan():
    with pytest.raises(MetricError, match="normal .* and anomalous"):
        compute_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="NaN"):
        compute_auc([0, 1], [0.1, float("nan")])


def test_a_one_class_test_split_is_refused_before_scoring():
    data = SimpleNamespace(test=[], test_labels=[1, 1, 1], test_ids=[], val=[], val_labels=[],
                           val_ids=[])
    with pytest.raises(MetricError, match="test split of toy has 0 normal and 3 anomalous"):
        check_test_labels(data, "toy")
    with pytest.raises(MetricError, match="test split of toy"):  # the path of every scorer
        next(labelled_splits(data, "toy"))
    check_test_labels(SimpleNamespace(test_labels=[0, 1]), "toy")


def test_bootstrap_matches_sklearn_resamples_and_brackets_the_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(60), np.ones(40)].astype(int)
    scores = np.round(rng.normal(size=100) + labels, 1)  # rounding makes ties
    low, high = bootstrap_auc_ci(labels, scores, num_resamples=2000, seed=0)
    auc = compute_auc(labels, scores)
    assert low < auc < high and high - low < 0.3
    # the rank formula equals sklearn on one resample, ties included
    pos, neg = scores[labels == 1], scores[labels == 0]
    idx_p, idx_n = rng.integers(0, 40, 40), rng.integers(0, 60, 60)
    from scipy.stats import rankdata

    both = np.r_[pos[idx_p], neg[idx_n]]
    ranks = rankdata(both)
    mw = (ranks[:40].sum() - 40 * 41 / 2) / (40 * 60)
    assert mw == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(60)], both))


def test_a_validation_split_gives_an_auc_only_with_both_classes(caplog):
    from dia.metrics import has_both_classes

    with caplog.at_level("WARNING"):
        assert not has_both_classes([], "toy")  # no split: nothing to say
        assert not caplog.records
        assert not has_both_classes([0, 0, 0], "toy")  # one class: said, not a NaN AUC
    assert "toy has one class only" in caplog.text
    assert has_both_classes(np.array([0, 1, 0]), "toy")


def test_score_split_writes_the_split_file_and_its_metric(results_root):
    import pandas as pd

    from dia.config import load_config
    from dia.metrics import score_split
    from dia.results import open_run

    run = open_run(load_config("smoke", dataset="synthetic"), stage="peers", method="toy",
                   results_root=results_root)
    common = {"labels": [0, 1, 1], "method": "toy", "profile": "smoke", "image_size": 28}
    test = score_split(run, "test", sample_ids=["a", "b", "c"], anomaly_score=[0.1, 0.9, 0.5],
                       **common)
    val = score_split(run, "val", sample_ids=["d", "e", "f"], anomaly_score=[0.6, 0.9, 0.5],
                      **common)
    assert (test[0]["metric"], test[0]["value"]) == ("auc", 1.0)
    assert (val[0]["metric"], val[0]["value"]) == ("val_auc", 0.5)
    assert pd.read_csv(run.path / "scores.csv")["sample_id"].tolist() == ["a", "b", "c"]
    assert pd.read_csv(run.path / "val_scores.csv")["anomaly_score"].tolist() == [0.6, 0.9, 0.5]
    from dia.metrics import scores_file

    assert scores_file("val", "inter") == "val_scores_inter.csv"  # one of DDAD's scores
    with pytest.raises(ValueError, match="unknown split 'train'; choose one of test, val"):
        score_split(run, "train", sample_ids=["a", "b", "c"], anomaly_score=[0, 1, 1], **common)


def test_scores_that_are_not_finite_are_not_written(tmp_path):
    from dia.config import load_config
    from dia.metrics import write_scores
    from dia.stages import open_stage_run

    run = open_stage_run(load_config("smoke", dataset="synthetic"), "evaluate", "csi", tmp_path)
    with pytest.raises(MetricError, match="1 of 2 anomaly scores are NaN"):
        write_scores(run, ["a", "b"], [0, 1], [0.5, float("nan")])
    assert not run.file("scores.csv").exists()
