"""Source notebooks: no outputs, a markdown introduction, a literals-only parameters cell."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    names = {p.stem for p in NOTEBOOKS}
    assert {"10_train_diffusion", "15_dissolving_gallery", "20_train_amplifier", "30_evaluate",
            "40_ddad", "90_auc_table"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_source_is_clean_and_thin(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip the outputs"
    assert nb.cells[0].cell_type == "markdown", "open with the idea of the step"
    assert nb.cells[-1].cell_type == "markdown", "close with what the reader should have seen"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged `parameters`"
    assert code[0] is params[0], "the parameters cell is the first code cell"
    after = code[1].source
    assert "check_injected_parameters()" in after, "check papermill's names right after them"
    for node in ast.parse(params[0].source).body:
        assert isinstance(node, ast.Assign), "parameters hold assignments only"
        assert isinstance(node.value, ast.Constant), f"parameter {ast.unparse(node)} is not a literal"
    for cell in code:  # logic belongs in dia/, not in the notebook
        tree = ast.parse("\n".join(l for l in cell.source.splitlines() if not l.startswith("%")))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.Try))
                       for n in ast.walk(tree)), f"{path.name}: move loops/defs into dia/"
