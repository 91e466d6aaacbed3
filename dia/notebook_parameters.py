"""A notebook's parameters as papermill passed them: a misspelled name or a value of the wrong
type is an error, not a default (nor a string ``"False"`` taken as true).

`papermill nb.ipynb out.ipynb -p result_root X` only warns "Passed unknown parameter" and runs
the notebook with its own `results_root`: a training notebook would train the default dataset,
the table notebook would rewrite the published tables. Papermill puts the values it was given in
a cell of their own, right after the cell tagged `parameters`, starting with a "# Parameters"
comment; both are in the kernel's input history (`In`) when the notebook's next cell runs, which
calls `check_injected_parameters()` to compare the two. A notebook run by hand in Jupyter has no
such cell, and nothing is checked. `papermill -p train False` passes the bool False, but
`-r train False` and `-r seeds 2` (raw) pass strings, which would run with ``train`` true and
fail deep in a library on ``seeds``: each given value must have its default's type (an int for a
float allowed).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from dia.config import ConfigError

INJECTED_MARK = "# Parameters"  # the first line of papermill's injected cell (papermill 2.x)


def check_injected_parameters(history: Sequence[str] | None = None) -> None:
    """Raise ConfigError naming any parameter papermill injected that the notebook lacks, or
    whose value has another type than the parameters cell's default.

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
    mistyped = [f"{name} = {value!r} ({type(value).__name__}; its default {declared[name]!r} is "
                f"{type(declared[name]).__name__})"
                for name, value in given.items()
                if name in declared and _mistyped(value, declared[name])]
    if mistyped:
        raise ConfigError(
            f"notebook parameter(s) of the wrong type: {', '.join(mistyped)}; give each the type "
            "of its default (papermill -p reads True, False and numbers as such, -r passes text)")


_NOT_LITERAL = object()  # a value the cell computes: no type to compare


def _mistyped(value: object, default: object) -> bool:
    if value is _NOT_LITERAL or default is _NOT_LITERAL or default is None:
        return False
    if isinstance(default, float) and type(value) is int:
        return False
    return type(value) is not type(default)  # bool is not int here


def _assigned(source: str) -> dict[str, object] | None:
    """The names a cell of assignments assigns, in order, each with its literal value (or
    `_NOT_LITERAL`); None when it is not Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            if isinstance(target, ast.Name):
                names[target.id] = _literal(node.value)
    return names


def _literal(node: ast.expr | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else _NOT_LITERAL
    except (ValueError, TypeError, SyntaxError):
        return _NOT_LITERAL
