"""A papermill parameter the notebook lacks, or one of another type than its default, stops the
notebook before its first library call."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill
import pytest

from dia.config import ConfigError
from dia.notebook_parameters import _assigned, _mistyped, check_injected_parameters
from dia.plan import METHODS, PlanRequest, build_plan

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PARAMETERS = 'dataset = "synthetic"\nresults_root = "results"  # where runs/ live'


def test_injected_names_are_checked_against_the_parameters_cell():
    check = "check_injected_parameters()"
    check_injected_parameters(["", PARAMETERS, check])  # by hand: nothing injected, nothing checked
    check_injected_parameters(["", PARAMETERS, '# Parameters\ndataset = "pneumonia"\n', check])
    with pytest.raises(ConfigError, match=r"unknown notebook parameter\(s\) result_root, sed: "
                                          r"this notebook takes dataset, results_root"):
        check_injected_parameters(["", PARAMETERS, '# Parameters\nresult_root = "x"\nsed = 1\n',
                                   check])
    # papermill's own names (--inject-paths) and annotated parameters are no strangers
    injected = '# Parameters\nseed = 1\nPAPERMILL_INPUT_PATH = "in.ipynb"\n'
    check_injected_parameters(["", "seed: int = 0", injected, check])
    # cells run again by hand in Jupyter, the injected one last: not papermill's order
    check_injected_parameters(["", PARAMETERS, injected, "x = 1", injected, check])


def test_injected_values_must_have_their_defaults_type():
    check = "check_injected_parameters()"
    cell = 'seeds = 1\ntrain = True\nlr = 0.1\nroot = ""\nshape = (2, 2)\nnow = len("ab")'
    fine = ('# Parameters\nseeds = 3\ntrain = False\nlr = 1\nroot = "r"\nshape = (3, 3)\n'
            'now = 5\nPAPERMILL_INPUT_PATH = "in.ipynb"\n')
    check_injected_parameters(["", cell, fine, check])  # an int for a float is fine
    for injected, says in (('train = "False"', "train = 'False' (str; its default True is bool)"),
                           ('seeds = "2"', "seeds = '2' (str; its default 1 is int)"),
                           ("seeds = True", "seeds = True (bool"),
                           ("seeds = 2.0", "seeds = 2.0 (float"),
                           ("root = 3", "root = 3 (int")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            check_injected_parameters(["", cell, f"# Parameters\n{injected}\n", check])


def test_papermill_stops_at_a_misspelled_parameter(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    check = ("from dia.notebook_parameters import check_injected_parameters\n"
             "check_injected_parameters()")
    nb.cells = [params, nbformat.v4.new_code_cell(check),
                nbformat.v4.new_code_cell("open('ran', 'w').close()")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    run = dict(kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    papermill.execute_notebook(tmp_path / "in.ipynb", tmp_path / "ok.ipynb",
                               parameters={"dataset": "pneumonia"}, **run)
    assert (tmp_path / "ran").is_file()
    (tmp_path / "ran").unlink()
    with pytest.raises(papermill.PapermillExecutionError, match="unknown notebook parameter"):
        papermill.execute_notebook(tmp_path / "in.ipynb", tmp_path / "bad.ipynb",
                                   parameters={"result_root": "elsewhere"}, **run)
    assert not (tmp_path / "ran").exists()


def test_the_suite_passes_each_notebook_only_parameters_it_has():
    req = PlanRequest(profile="smoke", datasets=["synthetic", "pneumonia"], methods=METHODS,
                      ablations=True, ddad_datasets=frozenset({"pneumonia"}))
    for job in build_plan(req):
        nb = nbformat.read(NOTEBOOKS / f"{job.notebook}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        defaults = _assigned(cell.source)
        assert set(job.parameters) <= set(defaults), job.key
        for name, value in job.parameters.items():  # as check_injected_parameters wants them
            assert not _mistyped(value, defaults[name]), (job.key, name, value)
