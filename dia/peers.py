"""Peer baselines of the paper's table that we re-run: GANomaly and PatchCore (MobileNetV2).

    run = train_peer(cfg, "ganomaly")     # results/runs/peers/<dataset>/ganomaly/s<seed>-<hash>/
    run = train_peer(cfg, "patchcore")    # results/runs/peers/<dataset>/patchcore/s<seed>-<hash>/

Both write scores.csv (sample_id, label, anomaly_score) and metrics.csv (method = the key, which
`dia.report.METHOD_ROWS` maps to the rows "GANomaly" and "PatchCore (MobileNetV2)"), then DONE;
where the dataset has a labelled validation split, also val_scores.csv and a `val_auc` row.
A run folder depends on the config sections ``("data", "peers")``.
"""

from __future__ import annotations

from pathlib import Path

from dia.results import Run, read_done

STAGE = "peers"
METHODS = ("ganomaly", "patchcore")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown peer method {method!r}; choose one of {', '.join(METHODS)}")


def peer_run_dir(cfg, method: str, results_root: str | Path = "results") -> Path:
    """Where the run of `method` for `cfg` lives (nothing is created)."""
    from dia.stages import stage_run_dir

    _check_method(method)
    return stage_run_dir(cfg, STAGE, method, results_root)


def open_peer_run(cfg, method: str, results_root: str | Path = "results") -> Run:
    from dia.stages import open_stage_run

    _check_method(method)
    return open_stage_run(cfg, STAGE, method, results_root)


def train_peer(cfg, method: str, *, results_root: str | Path = "results", data_root=None,
               device=None) -> Run:
    """Train (or resume) and score one peer baseline; skip it when its run is already DONE.

    Args:
        cfg: an `ExperimentConfig`; `cfg.peers` holds every setting.
        method: "ganomaly" or "patchcore".
        results_root: where `runs/peers/...` is written.
        data_root: dataset root; None or "" = `$DIA_DATA_ROOT`, else `data/`.
        device: torch device or name; default `cfg.device` ("auto").

    Raises:
        ValueError: unknown method.
        dia.mobilenet.WeightsMissing: PatchCore without the weights package (before any write).
        dia.data.DataError: the dataset is missing (before any write).
        dia.metrics.MetricError: its test split lacks a class (before any write).
    """
    from dia.metrics import check_test_labels
    from dia.runtime import seed_everything, stage_device

    _check_method(method)
    if (peer_run_dir(cfg, method, results_root) / "DONE").is_file():
        return open_peer_run(cfg, method, results_root)
    # load the data and check the weights before anything is written under results_root/runs
    if method == "ganomaly":
        from dia.baselines.ganomaly import load_gan_data, run_ganomaly

        data = load_gan_data(cfg, data_root=data_root, results_root=results_root)
    else:
        from dia.baselines.patchcore import run_patchcore
        from dia.data import load_for_config
        from dia.mobilenet import weights_path

        weights_path()
        data = load_for_config(cfg, data_root=data_root or None, results_root=results_root)
    check_test_labels(data, cfg.dataset)  # before training
    cfg, device = stage_device(cfg, device)
    run = open_peer_run(cfg, method, results_root)
    with run.exclusive():  # another process training this run: wait, then find it DONE
        if run.is_done():
            return run
        seed_everything(cfg.seed)
        if method == "ganomaly":
            summary = run_ganomaly(run, cfg, data, device=device)
        else:
            summary = run_patchcore(run, cfg, data, device=device)
        run.append_log({"event": "done", **summary})
        run.mark_done(summary)
    return run


def load_scores(run: Run):
    """The run's scores.csv as a DataFrame (sample_id, label, anomaly_score); one missing or
    damaged is a RunError saying what to do (`dia.metrics.read_scores_file`)."""
    from dia.metrics import read_scores_file

    return read_scores_file(run.finished_file("scores.csv", f"peer {run.method}"))


def load_metrics(run: Run):
    """The run's metrics.csv; one missing or damaged says what to do (`read_metrics_file`)."""
    from dia.metrics import read_metrics_file

    return read_metrics_file(run.finished_file("metrics.csv", f"peer {run.method}"))


def plot_scores(run: Run, ax=None):
    """Histogram of the anomaly scores of normal vs anomalous test images, AUC in the title."""
    import matplotlib.pyplot as plt

    scores = load_scores(run)
    metrics = load_metrics(run)
    auc = float(metrics.loc[metrics["metric"] == "auc", "value"].iloc[0])
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    bins = 30
    for label, name in ((0, "normal"), (1, "anomalous")):
        ax.hist(scores.loc[scores["label"] == label, "anomaly_score"], bins=bins, alpha=0.6,
                label=f"{name} (n={int((scores['label'] == label).sum())})", density=True)
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("density")
    ax.set_title(f"{run.method} on {run.dataset}, seed {run.seed}: AUC {auc:.3f}")
    ax.legend()
    return ax


def main(argv: list[str] | None = None) -> int:
    """`python -m dia.peers --method ganomaly --dataset pneumonia --profile quick --seed 0`."""
    import argparse
    import json
    import sys
    import time

    from dia.config import DATASETS, PROFILES, ConfigError, load_config
    from dia.data import DataError
    from dia.mobilenet import WeightsMissing
    from dia.results import RunError

    parser = argparse.ArgumentParser(prog="python -m dia.peers", description=main.__doc__)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic")
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-root", default="results")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. peers.patchcore_image_size=112 (YAML value)")
    args = parser.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.set:
        key, equals, value = item.partition("=")
        if not equals:
            parser.error(f"--set {item}: expected KEY=VALUE, e.g. peers.ganomaly_epochs=5")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            parser.error(f"--set {item}: the value is not YAML ({' '.join(str(err).split())})")
    t0 = time.perf_counter()
    try:
        cfg = load_config(args.profile, dataset=args.dataset, seed=args.seed, overrides=overrides)
        run = train_peer(cfg, args.method, results_root=args.results_root,
                         data_root=args.data_root, device=args.device)
        summary = read_done(run.path)
    except (ConfigError, DataError, RunError, WeightsMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"run": str(run.path), "seconds": round(time.perf_counter() - t0, 1),
                      **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
