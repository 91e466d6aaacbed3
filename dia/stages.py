"""Which config sections each stage's run folder depends on, in one place.

A run folder is `runs/<stage>/<dataset>/<method>/s<seed>-<hash8>` with the hash taken over the
sections below. Upstream sections are included (an `evaluate` run depends on the amplifier, which
for DIA depends on the DDPM), so a change anywhere upstream gives a new folder downstream.
The suite driver uses the same function to decide, without running anything, which work is done.
"""

from __future__ import annotations

from pathlib import Path

from dia.config import ExperimentConfig, config_hash, replace
from dia.lineage import is_current
from dia.results import Run, open_run, require_own_config, run_dir

DIA_SECTIONS = ("data", "diffusion", "dissolve", "amplify")
CSI_SECTIONS = ("data", "amplify")


def stage_sections(stage: str, method: str) -> tuple[str, ...]:
    """The config sections a (stage, method) run depends on."""
    if stage == "diffusion":
        return ("data", "diffusion")
    if stage in ("amplify", "evaluate"):
        if method not in ("dia", "csi"):
            raise ValueError(f"unknown amplifier method {method!r}; choose dia or csi")
        base = DIA_SECTIONS if method == "dia" else CSI_SECTIONS
        return base + (("score",) if stage == "evaluate" else ())
    if stage == "ddad":
        return ("data", "ddad")
    if stage == "peers":
        if method not in ("ganomaly", "patchcore"):
            raise ValueError(f"unknown peer method {method!r}; choose ganomaly or patchcore")
        return ("data", "peers")
    raise ValueError(
        f"unknown stage {stage!r}; stages are diffusion, amplify, evaluate, ddad, peers")


def stage_config(cfg: ExperimentConfig, stage: str) -> ExperimentConfig:
    """The config a stage runs under: the DDPM always uses `cfg.diffusion.seed`.

    One DDPM per dataset serves every seed of the amplifier, as in the reference code, which
    seeds DDPM training with 0.
    """
    if stage == "diffusion" and cfg.seed != cfg.diffusion.seed:
        return replace(cfg, {"seed": cfg.diffusion.seed})
    return cfg


def stage_run_dir(
    cfg: ExperimentConfig, stage: str, method: str, results_root: str | Path = "results"
) -> Path:
    """Where the run of (stage, method) for `cfg` lives, without creating anything."""
    cfg = stage_config(cfg, stage)
    return run_dir(results_root, stage, cfg.dataset, method, cfg.seed,
                   stage_run_hash(cfg, stage, method))


def stage_run_hash(cfg: ExperimentConfig, stage: str, method: str) -> str:
    """The config hash that names the run of (stage, method) for `cfg` (its folder's suffix)."""
    return config_hash(stage_config(cfg, stage), stage_sections(stage, method))


def open_stage_run(
    cfg: ExperimentConfig, stage: str, method: str, results_root: str | Path = "results"
) -> Run:
    """Create or reopen the run folder of (stage, method) for `cfg`."""
    cfg = stage_config(cfg, stage)
    return open_run(cfg, stage=stage, method=method, results_root=results_root,
                    sections=stage_sections(stage, method))


def require_stage_config(cfg: ExperimentConfig, stage: str, method: str, path: Path) -> None:
    """A RunError saying what to do where the run folder `path` of (stage, method) for `cfg`
    holds a config.yaml that cannot be read or is another config's (`open_stage_run` would
    refuse it)."""
    require_own_config(path, stage_config(cfg, stage), stage=stage, method=method,
                       sections=stage_sections(stage, method))


def is_stage_done(
    cfg: ExperimentConfig, stage: str, method: str, results_root: str | Path = "results"
) -> bool:
    """DONE, and made from the upstream checkpoint that is there now (`dia.lineage`)."""
    return is_current(stage_run_dir(cfg, stage, method, results_root))
