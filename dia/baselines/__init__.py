"""Methods we reproduce beside DIA and CSI.

DDAD-ASR: `dia.baselines.ddad.train_ddad(cfg)` (building blocks in `dia.baselines.ddad_models`).
Importing this package does no work; the names below are loaded on first use.
"""

from __future__ import annotations

__all__ = ["NotApplicable", "train_ddad"]


def __getattr__(name: str):
    if name in __all__:
        from dia.baselines import ddad

        return getattr(ddad, name)
    raise AttributeError(f"module 'dia.baselines' has no attribute {name!r}")
