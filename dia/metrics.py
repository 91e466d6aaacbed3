"""AUC with label 1 = anomalous, bootstrap intervals, and the scores/metrics files of a run.

Every method writes per-image `scores.csv` (sample_id, label, anomaly_score) and a tidy
`metrics.csv`; the table is rebuilt from these files alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dia.results import (
    Run, RunError, parse_run_id, read_whole_csv, rerun_advice, run_id_of,
    write_csv,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
SCORE_COLUMNS = ["sample_id", "label", "anomaly_score"]


class SplitOutput(NamedTuple):
    """Where one labelled split's results go: its per-image scores file, its metric's name."""

    scores: str
    metric: str


# the test split gives the table's AUC; the validation split the figure settings are compared on
SPLITS = {"test": SplitOutput("scores.csv", "auc"), "val": SplitOutput("val_scores.csv", "val_auc")}
METRIC_COLUMNS = [
    "dataset", "method", "seed", "profile", "image_size", "metric", "value", "ci_low", "ci_high",
    "run_id",
]


class MetricError(ValueError):
    """Scores or labels cannot give a meaningful metric (e.g. only one class)."""


def _check(labels: np.ndarray, anomaly_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(int).ravel()
    anomaly_score = np.asarray(anomaly_score, dtype=float).ravel()
    if labels.shape != anomaly_score.shape:
        raise MetricError(f"{labels.size} labels but {anomaly_score.size} scores")
    if not np.isfinite(anomaly_score).all():
        raise MetricError(f"{int((~np.isfinite(anomaly_score)).sum())} scores are NaN or infinite")
    present = set(np.unique(labels).tolist())
    if present != {0, 1}:
        raise MetricError(
            f"the test set needs normal (0) and anomalous (1) images for an AUC; it has labels "
            f"{sorted(present)} only"
        )
    return labels, anomaly_score


def compute_auc(labels: Sequence[int], anomaly_score: Sequence[float]) -> float:
    """ROC-AUC with label 1 = anomalous and higher `anomaly_score` = more anomalous."""
    from sklearn.metrics import roc_auc_score

    labels, anomaly_score = _check(np.asarray(labels), np.asarray(anomaly_score))
    return float(roc_auc_score(labels, anomaly_score))


def bootstrap_auc_ci(
    labels: Sequence[int],
    anomaly_score: Sequence[float],
    *,
    num_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, resampling within each class (stratified).

    Vectorised: each resample's AUC is the Mann-Whitney statistic from average ranks (ties
    count one half), which equals `roc_auc_score` on that resample.
    """
    from scipy.stats import rankdata

    labels, anomaly_score = _check(np.asarray(labels), np.asarray(anomaly_score))
    rng = np.random.default_rng(seed)
    pos, neg = anomaly_score[labels == 1], anomaly_score[labels == 0]
    pos_draw = pos[rng.integers(0, pos.size, (num_resamples, pos.size))]
    neg_draw = neg[rng.integers(0, neg.size, (num_resamples, neg.size))]
    ranks = rankdata(np.concatenate([pos_draw, neg_draw], axis=1), axis=1)
    rank_sum = ranks[:, : pos.size].sum(axis=1)
    aucs = (rank_sum - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size)
    alpha = (1 - level) / 2
    low, high = np.quantile(aucs, [alpha, 1 - alpha])
    return float(low), float(high)


def write_scores(
    run: Run, sample_ids: Sequence[str], labels: Sequence[int], anomaly_score: Sequence[float],
    *, name: str = "scores.csv",
) -> None:
    """Per-image scores of one method (label 1 = anomalous)."""
    labels_arr, scores_arr = np.asarray(labels).astype(int), np.asarray(anomaly_score, float)
    if len(sample_ids) != labels_arr.size:
        raise MetricError(f"{len(sample_ids)} sample ids but {labels_arr.size} labels")
    if not np.isfinite(scores_arr).all():  # a scores.csv is written only when it can be read
        raise MetricError(f"{int((~np.isfinite(scores_arr)).sum())} of {scores_arr.size} anomaly "
                          f"scores are NaN or infinite; {run.path} is left without {name}")
    rows = (
        {"sample_id": sid, "label": int(lab), "anomaly_score": repr(float(s))}
        for sid, lab, s in zip(sample_ids, labels_arr, scores_arr)
    )
    write_csv(run.file(name), rows, SCORE_COLUMNS)


def auc_rows(
    run: Run, *, method: str, profile: str, image_size: int,
    labels: Sequence[int], anomaly_score: Sequence[float], metric: str = "auc",
) -> list[dict[str, Any]]:
    """Tidy metric rows (AUC with its bootstrap interval) for one method of a run.

    `metric` names the row: "auc" is the test split (the table reads only these rows),
    "val_auc" the validation split.
    """
    auc = compute_auc(labels, anomaly_score)
    low, high = bootstrap_auc_ci(labels, anomaly_score)
    return [{
        "dataset": run.dataset, "method": method, "seed": run.seed, "profile": profile,
        "image_size": image_size, "metric": metric, "value": round(auc, 6),
        "ci_low": round(low, 6), "ci_high": round(high, 6), "run_id": run.run_id,
    }]


def read_scores_file(path: str | Path) -> pd.DataFrame:
    """A per-image scores file (sample_id, label, anomaly_score) of a finished run; one that
    cannot be read, ends in the middle of a row (`read_whole_csv`: a score cut to fewer digits
    would read as another number), or holds a label besides 0 and 1 or a score that is no finite
    number (a file cut short or edited), is a RunError naming it and what to do."""
    import pandas as pd

    path, problem = Path(path), ""
    try:
        frame = read_whole_csv(path, rerun_advice(path.parent), dtype={"sample_id": str})
    except ValueError as err:  # its message names the file and what to do
        raise RunError(str(err)) from None
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        problem = f"lacks the column(s) {', '.join(missing)}"
    elif frame.empty:
        problem = "holds no image"
    elif not frame["label"].isin((0, 1)).all():
        problem = "holds a label besides 0 (normal) and 1 (anomalous)"
    elif not np.isfinite(pd.to_numeric(frame["anomaly_score"], errors="coerce")
                         .to_numpy(dtype=float)).all():
        problem = "holds an anomaly_score that is no finite number (edited?)"
    if problem:
        raise RunError(f"{path} {problem}: {rerun_advice(path.parent)}")
    return frame


def read_metrics_file(path: str | Path) -> pd.DataFrame:
    """A finished run's metrics.csv at `path`; one that cannot be read, lacks a column or the auc
    row the table needs, or repeats a row (a file damaged or edited by hand), is a ValueError
    that names it and what to do."""
    import pandas as pd

    path = Path(path)
    remedy = rerun_advice(path.parent)
    frame = read_whole_csv(path, remedy)
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}: {remedy}")
    if not (frame["metric"] == "auc").any():  # left out, the table would look complete without it
        raise ValueError(f"{path} has no auc row: {remedy}")
    repeated = frame[frame.duplicated(["method", "metric"])]
    if not repeated.empty:  # which one would count?
        first = repeated.iloc[0]
        raise ValueError(f"{path} has more than one {first['metric']} row of {first['method']}: "
                         f"{remedy}")
    for column in ("value", "ci_low", "ci_high", "seed", "image_size"):
        try:
            frame[column] = pd.to_numeric(frame[column], errors="raise")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} has a {column} that is no number ({err}): "
                             f"{remedy}") from None
    for column in ("seed", "image_size"):
        if not (frame[column] % 1 == 0).all():  # NaN too
            raise ValueError(f"{path} has a {column} that is no whole number: {remedy}")
        frame[column] = frame[column].astype(int)
    own = run_id_of(path.parent)
    foreign = sorted({str(r) for r in frame["run_id"]} - {own})
    if foreign:  # copied from another run's folder, or cut short into the id column
        raise ValueError(f"{path} names run {foreign[0]}, not its own folder's {own}: {remedy}")
    try:
        _, dataset, _, seed = parse_run_id(own)
    except ValueError:  # a folder not under runs/<stage>/<dataset>/<method>/: nothing to compare
        pass
    else:  # the table files each row under its dataset and seed
        for column, expected in (("dataset", dataset), ("seed", seed)):
            other = frame.loc[frame[column] != expected, column]
            if not other.empty:
                raise ValueError(f"{path} gives the {column} {other.iloc[0]}, its run {own} "
                                 f"{expected}: {remedy}")
    for column in ("value", "ci_low", "ci_high"):  # every metric is an AUC
        outside = not_aucs(frame[column])
        if outside.any():
            bad = frame[outside].iloc[0]
            what = bad["metric"] if column == "value" else f"{bad['metric']} {column}"
            raise ValueError(f"{path} gives {what} {bad[column]}, which is no AUC: {remedy}")
    return frame


def not_aucs(column: pd.Series, *, blank_ok: bool = False) -> pd.Series:
    """Which entries of a table's column are no AUC: text that is no number, a number outside
    [0, 1], or a blank (NaN) unless `blank_ok` (e.g. a val_auc of a run scored before it)."""
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce")
    blank = column.isna()
    return (~blank & ~values.between(0, 1)) | (blank & (not blank_ok))


def write_metrics(run: Run, rows: Sequence[dict[str, Any]]) -> None:
    write_csv(run.file("metrics.csv"), rows, METRIC_COLUMNS)


TERMS = {"auc_contrast": "its contrastive term alone", "auc_shift": "its shift term alone"}


def auc_caveats(metrics: pd.DataFrame, profile: str) -> str:
    """What a reader should know before reading the test AUCs of `metrics` (rows of metrics.csv:
    the score's `auc` and the AUC of each of its terms alone, `TERMS`), one line each; '' when
    nothing. On `smoke` the AUCs check that the pipeline runs and mean nothing, wherever they
    land; on any profile, a score or term whose whole interval lies below 0.5 ranks the classes
    the wrong way round."""
    lines = []
    if profile == "smoke":
        lines.append("smoke profile: a shrunken run (a few dozen images at a small size; tiny "
                     "networks trained for a few steps, or PatchCore's small memory bank); its "
                     "AUCs show that the pipeline runs, they are not results (the quick or paper "
                     "profile gives those)")
    test = metrics[metrics["metric"].isin(["auc", *TERMS])]
    for row in test.itertuples():
        if row.ci_high < 0.5:
            what, this = ((row.method, "score") if row.metric == "auc"
                          else (f"{row.method}, {TERMS[row.metric]}", "term"))
            lines.append(f"{what}: AUC {row.value:.3f}, its whole 95 % interval below 0.5: this "
                         f"{this} ranks normal test images as more anomalous than anomalous ones")
    return "\n".join(lines)


def has_both_classes(labels: Sequence[int], what: str) -> bool:
    """Whether a validation split can give an AUC: it has images of both classes.

    An empty split is False silently (the dataset has none); a one-class split is False with a
    warning naming `what` (e.g. the dataset), since its AUC would be undefined.
    """
    labels = np.asarray(labels).ravel()
    if labels.size and np.unique(labels).size < 2:
        log.warning("the validation split of %s has one class only: no val_auc", what)
        return False
    return labels.size > 0


def scores_file(split: str, kind: str | None = None) -> str:
    """scores.csv / val_scores.csv; scores_<kind>.csv / val_scores_<kind>.csv for one of several
    scores of a run (DDAD's rec, intra, ...)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    name = SPLITS[split].scores
    return name if kind is None else name.replace(".csv", f"_{kind}.csv")


def score_split(
    run: Run, split: str, *, sample_ids: Sequence[str], labels: Sequence[int],
    anomaly_score: Sequence[float], method: str, profile: str, image_size: int,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Write one labelled split's per-image scores and return its AUC row.

    `split` is "test" (scores.csv, metric "auc", the table's row) or "val" (val_scores.csv,
    metric "val_auc", where settings are compared); `kind` as in `scores_file`.
    """
    write_scores(run, sample_ids, labels, anomaly_score, name=scores_file(split, kind))
    return auc_rows(run, method=method, profile=profile, image_size=image_size, labels=labels,
                    anomaly_score=anomaly_score, metric=SPLITS[split].metric)


def check_test_labels(data: Any, dataset: str) -> None:
    """MetricError unless the test split of `data` (its `test_labels`) has normal (0) and
    anomalous (1) images. Called where DIA, CSI, DDAD and the peers load their data, before they
    train or score, so that a one-class test set costs no hours of work and leaves no files
    behind (the DDPM, which never sees the test split, does not check)."""
    labels = np.asarray(data.test_labels).astype(int).ravel()
    present = np.unique(labels).tolist()
    if present != [0, 1]:
        raise MetricError(
            f"the test split of {dataset} has {int((labels == 0).sum())} normal and "
            f"{int((labels == 1).sum())} anomalous images (labels {present}): an AUC needs both "
            f"classes; check its test data with `dia data check --data-root <the data root you "
            f"used>`"
        )


def labelled_splits(data: Any, dataset: str) -> Iterator[tuple[str, Any, np.ndarray, list[str]]]:
    """(split, images, labels, ids) of the test split of `data`, then of its validation split
    where that has both classes (`has_both_classes` names `dataset` when it has one only).

    `data` has `test`, `test_labels`, `test_ids` and `val`, `val_labels`, `val_ids`: a
    `DatasetSplits`, or DDAD's `DDADData` (the same splits at its own size). A one-class test
    split is refused before anything is scored (`check_test_labels`).
    """
    check_test_labels(data, dataset)
    for split in SPLITS:
        images, labels, ids = (getattr(data, f"{split}{part}") for part in ("", "_labels", "_ids"))
        if split == "val" and not has_both_classes(labels, dataset):
            continue
        yield split, images, np.asarray(labels).astype(int), list(ids)


def score_splits(
    run: Run, data: Any, score: Callable[[Any, str], Sequence[float]], *, method: str,
    profile: str, image_size: int, dataset: str,
) -> list[dict[str, Any]]:
    """Score each of `labelled_splits(data, dataset)`: `score(images, split)` gives one anomaly
    score per image. Writes scores.csv (val_scores.csv) and returns the AUC rows, test first.
    """
    return [row for split, images, labels, ids in labelled_splits(data, dataset)
            for row in score_split(run, split, sample_ids=ids, labels=labels,
                                   anomaly_score=score(images, split), method=method,
                                   profile=profile, image_size=image_size)]
