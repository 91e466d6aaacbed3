"""DIA benchmark suite: Dissolving Is Amplifying (ECCV 2024) and DDAD-ASR, reproduced.

Importing `dia` does no work: no device, no model, no disk access. Modules are imported where
they are used (`from dia import config`, `from dia.data import load_dataset`, ...).
"""

__version__ = "0.1.0"
