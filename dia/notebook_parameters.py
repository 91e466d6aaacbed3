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

    Args:
        history: the sources of the cells run so far, in order (default: the kernel's `In`).
    """
    if history is None:
        from IPython import get_ipython

        shell = get_ipython()
        history = shell.user_ns.get("In", []) if shell is not None else []
    injected = [i for i, source in enumerate(history)
                if i > 0 and source.lstrip().startswith(INJECTED_MARK)]
    if not injected:
        return
    at = injected[-1]
    declared, given = _assigned(history[at - 1]), _assigned(history[at])
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise ConfigError(
            f"unknown notebook parameter(s) {', '.join(unknown)}: this notebook takes "
            f"{', '.join(declared)} (papermill's -p names must match its parameters cell)")


def _assigned(source: str) -> list[str]:
    """The names a cell of plain assignments assigns, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [target.id for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)]
