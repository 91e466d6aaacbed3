"""Rendered notebooks: progress bars collapse to their last state, nothing else is lost."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from dia import rendering


def _stream(name, text):
    return new_output("stream", name=name, text=text)


def _notebook(outputs):
    cell = new_code_cell("train()")
    cell.outputs = outputs
    return new_notebook(cells=[cell, new_code_cell("x = 1")])


WARNING = (".venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not "
           "found. Please update jupyter and ipywidgets.\n"
           "  from .autonotebook import tqdm as notebook_tqdm\n")


def test_bar_redraws_collapse_to_the_last_and_other_outputs_stay():
    figure = new_output("display_data", data={"image/png": "iVBOR"})
    nb = _notebook([
        _stream("stderr", WARNING),
        _stream("stderr", "\rtrain:   0%|  | 0/3 [00:00<?, ?it/s]"),
        _stream("stdout", "epoch 1 done\n"),
        _stream("stderr", "\rtrain:  33%|# | 1/3 [00:01<00:02, loss=2.0]"),
        _stream("stderr", "\rtrain: 100%|##| 3/3 [00:03<00:00, loss=1.0]"),
        _stream("stderr", "\n"),
        _stream("stderr", "UserWarning: 4 images missing\n"),
        _stream("stderr", "\rdecode:  50%|#| 1/2\r                   \r"),  # leave=False
        figure,
        _stream("stdout", "AUC = 0.85\n"),
    ])
    out = rendering.tidy_outputs(nb).cells[0].outputs
    assert [(o.output_type, o.get("name")) for o in out] == [
        ("stream", "stderr"), ("stream", "stdout"), ("stream", "stderr"), ("display_data", None),
        ("stream", "stdout")]
    # stdout between two redraws splits the bar: each part keeps its own last state
    assert out[0].text == "train:   0%|  | 0/3 [00:00<?, ?it/s]"
    assert out[1].text == "epoch 1 done\n"
    assert out[2].text == ("train: 100%|##| 3/3 [00:03<00:00, loss=1.0]\n"
                           "UserWarning: 4 images missing\n")
    assert out[3] == figure and out[4].text == "AUC = 0.85\n"
    assert nb.cells[1].outputs == []


def test_a_cell_whose_only_output_was_the_warning_has_none_left():
    nb = rendering.tidy_outputs(_notebook([_stream("stderr", WARNING)]))
    assert nb.cells[0].outputs == []


def test_publishable_scrubs_paths_and_tidies_once(tmp_path: Path):
    repo = tmp_path / "repo"
    partial = repo / "results" / "notebooks" / ".partial" / "n.ipynb"
    final = repo / "results" / "notebooks" / "n.ipynb"
    partial.parent.mkdir(parents=True)
    nb = _notebook([_stream("stderr", f"\rbar 1\rbar 2 in {repo}/dia/x.py\n")])
    nb.metadata["papermill"] = {"output_path": str(partial)}
    nbformat.write(nb, partial)
    rendering.publishable(partial, output_path=final, repo=repo)
    text = partial.read_text()
    assert str(tmp_path) not in text
    tidied = nbformat.reads(text, as_version=4)
    assert tidied.cells[0].outputs[0].text == "bar 2 in dia/x.py\n"
    assert tidied.metadata["papermill"]["output_path"] == "results/notebooks/n.ipynb"
    assert rendering.tidy_file(partial) is False  # a second pass changes nothing


def test_cli_refuses_a_missing_file(tmp_path: Path, capsys):
    assert rendering.main([str(tmp_path / "absent.ipynb")]) == 1
    assert "is not a file" in capsys.readouterr().err


def test_a_line_ending_in_returns_keeps_its_text():
    nb = rendering.tidy_outputs(_notebook([_stream("stdout", "abc\r\r\nxyz\r\n")]))
    assert nb.cells[0].outputs[0].text == "abc\nxyz\n"


def test_a_notebook_nbformat_cannot_read_is_published_untidied(tmp_path: Path):
    repo = tmp_path / "repo"
    partial = repo / "n.ipynb"
    partial.parent.mkdir()
    partial.write_text(f'{{"cells": "{repo}/x", ')  # cut short
    with pytest.warns(UserWarning, match="outputs left as they are"):
        rendering.publishable(partial, output_path=repo / "final.ipynb", repo=repo)
    assert partial.read_text() == '{"cells": "x", '
