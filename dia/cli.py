"""The `dia` command (also `python -m dia`).

    dia data check [--data-root DIR]        which datasets are present, counts, how to get the rest
    dia data fetch pneumonia|breast         download a MedMNIST file (needs network)
    dia config PROFILE [--dataset KEY]      print the resolved config of a profile
    dia table [--results-root DIR] [--readme README.md]
                                            rebuild the AUC table (and copy it into the README)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dia", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect or fetch datasets")
    data_sub = data.add_subparsers(dest="action", required=True)
    check = data_sub.add_parser("check", help="list datasets, counts and what is missing "
                                "(exit 1 when one found is BROKEN)")
    check.add_argument("--data-root", default=None, help="default: $DIA_DATA_ROOT, else data/")
    check.add_argument("--results-root", default="results")
    fetch = data_sub.add_parser("fetch", help="download a MedMNIST dataset")
    fetch.add_argument("dataset", choices=["pneumonia", "breast"])
    fetch.add_argument("--data-root", default=None)

    config = sub.add_parser("config", help="print a resolved config")
    config.add_argument("profile")
    config.add_argument("--dataset", default="synthetic")
    config.add_argument("--seed", type=int, default=0)

    table = sub.add_parser("table", help="rebuild the AUC table from results/runs")
    table.add_argument("--results-root", default="results")
    table.add_argument("--readme", default=None, help="also copy auc.md into this README")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except BrokenPipeError:  # `dia data check | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except _OutputError as err:  # `dia config quick > full-disk/file`
        print(f"error: {err}", file=sys.stderr)
        return 2


class _OutputError(Exception):
    """Standard output refused the command's result (not a pipe whose reader left)."""


def _say(text: str) -> None:
    """Print the command's result; a standard output that cannot take it (a file on a full disk)
    is an `_OutputError` saying so. Flushed here, where an error can only be standard output's,
    instead of at exit, where Python reports it as ignored and exits 120."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as err:
        raise _OutputError(f"cannot write to standard output ({err.strerror or err}): "
                           "redirect it to a file on a disk with room, or leave it on the "
                           "terminal") from None


def _main(args: argparse.Namespace) -> int:
    from dia.config import ConfigError
    from dia.data.registry import DataError
    from dia.results import RunError

    try:
        if args.command == "data":
            return _data(args)
        if args.command == "config":
            from dia.config import config_hash, load_config, to_yaml

            cfg = load_config(args.profile, dataset=args.dataset, seed=args.seed)
            _say(to_yaml(cfg) + f"# hash of all sections: {config_hash(cfg)}")
            return 0
        if args.command == "table":
            from dia.report import splice_into_readme, write_tables

            _check_table_args(Path(args.results_root), args.readme)
            try:
                paths = write_tables(args.results_root)
                if args.readme:
                    splice_into_readme(args.readme, paths["md"])
            except OSError as err:  # read-only, full, no permission: not a traceback
                print(f"error: cannot read or write {err.filename or args.results_root}: "
                      f"{err.strerror or err}; give a --results-root (and --readme) you can "
                      "read and write", file=sys.stderr)
                return 2
            _say("\n".join(f"{name}: {path}" for name, path in paths.items()))
            return 0
    except (DataError, ConfigError, RunError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover


def _check_table_args(results_root: Path, readme: str | None) -> None:
    """Refuse before writing anything: a results root that is not a folder of runs, a README
    that is not there."""
    if not results_root.is_dir():
        raise ValueError(f"results root {results_root} does not exist or is not a folder: give "
                         "the one that holds runs/ (default results/)")
    if readme and not Path(readme).is_file():
        raise ValueError(f"--readme {readme} is not a file: give the README to copy the table into")
    if readme:
        from dia.report import readme_parts

        readme_parts(readme)  # its markers, checked before the tables are rewritten
    if not (results_root / "runs").is_dir():
        print(f"note: no runs under {results_root / 'runs'}: the table holds the paper's rows and "
              "those recorded in tables/auc.csv", file=sys.stderr)


def _data(args: argparse.Namespace) -> int:
    from dia.data.registry import DataError, check_given_data_root, resolve_data_root

    if args.action == "check":
        from dia.data.check import check_datasets, format_check, state

        root = check_given_data_root(args.data_root)  # a DataError: exit 2
        if not root.is_dir():
            print(f"note: the default data root {root} does not exist yet: every dataset but "
                  "the synthetic one is missing; the table says where to get each",
                  file=sys.stderr)
        rows = check_datasets(root, args.results_root)
        _say(format_check(rows, root))
        return 1 if any(state(r) == "BROKEN" for r in rows) else 0
    from dia.data.medmnist_files import fetch_medmnist, npz_path, read_npz

    if args.data_root == "":  # not the default root, silently
        raise DataError("--data-root is empty: give a folder, or leave the option out")
    root = resolve_data_root(args.data_root)
    there = npz_path(args.dataset, root)
    if there.is_file():  # never overwritten; a damaged one is named
        read_npz(args.dataset, root)
        _say(f"{args.dataset}: {there} (already there and readable; not downloaded)")
        return 0
    _say(f"{args.dataset}: {fetch_medmnist(args.dataset, root)}")
    return 0
