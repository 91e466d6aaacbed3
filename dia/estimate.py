"""The plan's rough time estimate: seconds per notebook job, from runs measured end to end.

Each table gives a job's seconds by ``"stage/method"`` where methods differ (DIA's encoder costs
three times CSI's) and by stage otherwise. A CPU profile has two columns, the fastest and the
slowest 2-core machine the project has measured, so the plan prints a range: the same `quick` run
took 37.5 min on one 2-core CPU and 77 on another. Where the figures come from (commands,
commits, machines): docs/MEASUREMENTS.md, *What a run costs*, and the records it cites.
"""

from __future__ import annotations

from typing import NamedTuple

from dia.plan import Job

UNMEASURED_S = 60.0  # a stage that no table names (a new notebook)


class CostTable(NamedTuple):
    """Seconds per job on the fastest and the slowest machine measured (the same table twice
    where one machine was measured), and what the figures rest on."""

    fast: dict[str, float]
    slow: dict[str, float]
    basis: str


def _both(table: dict[str, float], basis: str) -> CostTable:
    return CostTable(table, table, basis)


# Smoke: the notebook times of `./run_all.sh --profile smoke --data-root ../shared/data` on the
# idle 2-core AMD EPYC with AVX2, 2026-12-03 at 07815ff (290 s for 28 notebooks), the mean over
# PneumoniaMNIST, BrainTumor and Synthetic (results/device_sessions/2026-12-03_cpu_avx2/).
SMOKE = _both(
    {"diffusion": 18, "gallery": 9, "amplify/dia": 9, "amplify/csi": 7, "evaluate": 9,
     "ddad": 17, "peers/ganomaly": 9, "peers/patchcore": 7, "ablations": 120, "table": 4},
    "measured on an idle 2-core CPU; the ablation grid guessed",
)

# Quick on a CPU, PneumoniaMNIST (28 px): the from-scratch DIA + CSI runs of `./run_all.sh
# --profile quick --datasets pneumonia --methods dia,csi`, 2-core AMD EPYC with AVX-512 (37.5 min,
# 2026-12-02 at d12375c) and with AVX2 (77 min, 2026-12-01 at c1614bb). DDAD: BrainTumor's 60 min
# of CPU time per seed; GANomaly 5-8 min and PatchCore 23 min per run; the ablation grid roughly
# 8 h per seed (its cells of the default `which` at 42-81 min each, MEASUREMENTS *Ablations*).
_QUICK_CPU_SHARED = {"ddad": 3600, "peers/patchcore": 1380, "ablations": 30000}
QUICK_CPU = CostTable(
    {"diffusion": 1159, "gallery": 10, "amplify/dia": 754, "amplify/csi": 245, "evaluate": 35,
     "peers/ganomaly": 300, "table": 5, **_QUICK_CPU_SHARED},
    {"diffusion": 2423, "gallery": 11, "amplify/dia": 1547, "amplify/csi": 493, "evaluate": 65,
     "peers/ganomaly": 480, "table": 5, **_QUICK_CPU_SHARED},
    "measured on 2-core CPUs, 28-px data; 224-px data take longer, the ablation grid a guess",
)

# Quick on a GPU: the DDPM and the encoders as one H200 trained them while three other runs
# shared it (2026-11-30: DDPM 25 s, DIA 65 s, CSI 41 s, scoring about 14 s), plus the notebook's
# own start; DDAD, the peers and the ablations were not timed on a GPU.
QUICK_GPU = _both(
    {"diffusion": 45, "gallery": 20, "amplify/dia": 80, "amplify/csi": 55, "evaluate": 30,
     "ddad": 600, "peers": 600, "ablations": 7200, "table": 10},
    "DDPM, DIA and CSI measured on one H200; DDAD, peers and ablations guessed",
)

PAPER = _both(
    {"diffusion": 40000, "gallery": 20, "amplify": 60000, "evaluate": 300, "ddad": 7200,
     "peers": 1800, "ablations": 100000, "table": 10},
    "a guess until measured on a GPU",
)


def cost_table(profile: str, gpu: bool) -> CostTable:
    """The table for `profile` on a machine with (`gpu`) or without a GPU."""
    if profile == "smoke":
        return SMOKE
    if profile == "quick":
        return QUICK_GPU if gpu else QUICK_CPU
    return PAPER


def job_seconds(table: dict[str, float], job: Job) -> float:
    """A job's seconds: by its stage and method, else by its stage, else `UNMEASURED_S`; the
    ablation grid's per seed it trains."""
    seconds = table.get(f"{job.stage}/{job.method}", table.get(job.stage, UNMEASURED_S))
    return seconds * job.parameters.get("seeds", 1) if job.stage == "ablations" else seconds


def estimate(jobs: list[Job], profile: str, gpu: bool) -> tuple[float, float, str]:
    """(seconds on the fastest machine measured, on the slowest, what they rest on) for `jobs`
    run one after another."""
    table = cost_table(profile, gpu)
    return (sum(job_seconds(table.fast, job) for job in jobs),
            sum(job_seconds(table.slow, job) for job in jobs), table.basis)


def describe(low_s: float, high_s: float) -> str:
    """"8 min", or "37–77 min" where the machines measured differ by a minute or more."""
    low, high = round(low_s / 60), round(high_s / 60)
    return f"{low} min" if low == high else f"{low}–{high} min"
