"""A notebook's parameters as papermill passed them: a misspelled name is an error, not a default.

`papermill nb.ipynb out.ipynb -p result_root X` only warns "Passed unknown parameter" and runs
the notebook with its own `results_root`: a training notebook would train the default dataset,
the table notebook would rewrite the published tables. Papermill puts the values it was given in
a cell of their own, right after the cell tagged `parameters`, starting with a "# Parameters"
comment; both are in the kernel's input history (`In`) when the notebook's next cell runs, which
calls `check_injected_parameters()` to compare the two. A notebook run by hand in Jupyter has no
such cell, and nothing is checked.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from dia.config import ConfigError

INJECTED_MARK = "# Parameters"  # the first line of papermill's injected cell (papermill 2.x)


def check_injected_parameters(history: Sequence[str] | None = None) -> None:
    """Raise ConfigError naming any parameter papermill injected that the notebook lacks.

    Checked only when the kernel has run exactly the parameters cell (a notebook's first code
    cell), papermill's cell and this one, as papermill runs a notebook; not in a Jupyter session
    that ran cells again by hand. Names papermill adds itself (`--inject-paths`:
    ``PAPERMILL_INPUT_PATH``, ...) pass.

    Args:
        history: the sources of the cells run so far, this one last, after an empty first entry
            as IPython's `In` has (default: the kernel's `In`).
    """
    if history is None:
        from IPython import get_ipython

        shell = get_ipython()
        history = shell.user_ns.get("In", []) if shell is not None else []
    if len(history) != 4 or not history[2].lstrip().startswith(INJECTED_MARK):
        return  # In[0] is empty; In[1] the parameters, In[2] papermill's, In[3] this cell
    declared, given = _assigned(history[1]), _assigned(history[2])
    if declared is None or given is None:  # not plain Python: nothing to compare
        return
    unknown = [name for name in given
               if name not in declared and not name.startswith("PAPERMILL_")]
    if unknown:
        raise ConfigError(
            f"unknown notebook parameter(s) {', '.join(unknown)}: this notebook takes "
            f"{', '.join(declared)} (papermill's -p names must match its parameters cell)")


def _assigned(source: str) -> list[str] | None:
    """The names a cell of assignments assigns, in order; None when it is not Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        names += [target.id for target in targets if isinstance(target, ast.Name)]
    return names
