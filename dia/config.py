"""Frozen, strict, hashed configuration.

A config is resolved in this order: dataclass defaults -> `configs/<profile>.yaml` -> explicit
overrides (dotted keys such as ``{"amplify.epochs": 3}``). Unknown keys, wrong types and unknown
datasets are errors that list what is allowed. Each stage's run folder is named by a hash of the
config sections that stage depends on (`config_hash`), so changing the DIA schedule does not
invalidate a trained diffusion model.

This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
PROFILES = ("smoke", "quick", "paper")
DATASETS = ("pneumonia", "breast", "sars_cov2", "kvasir", "oct", "aptos", "braintumor", "synthetic")


NUM_TIMESTEPS = 1000  # of the DDPM's noise schedule (dia.diffusion.NUM_TRAIN_TIMESTEPS)
# Every seed (the run's, `diffusion.seed`, ...) lies in 0..MAX_SEED: numpy's legacy seeding takes
# 32 bits, and seeds derived from one (the DDPM's per-step `seed * 1_000_003 + step`) must stay
# within torch's 64.
MAX_SEED = 2**32 - 1
UNET_DOWNSAMPLING = 8  # the dissolving U-Net halves its input three times (levels 1, 2, 4, 8)
UNET_NORM_GROUPS = 8  # the DDPM U-Net's GroupNorm groups (reference resnet_block_groups=8)
GANOMALY_DOWNSAMPLING = 16  # the DCGAN encoder's strided convolutions down to 4 x 4
DDAD_DOWNSAMPLING = 16  # the DDAD autoencoder halves its input four times (reference: 64)
MOBILENET_BLOCKS = 19  # MobileNetV2 `features` has blocks 0..18 (PatchCore's layers)


class ConfigError(ValueError):
    """A config file, key or value is not valid; the message says what is allowed."""


# Fields that count something (sizes, steps, epochs, intervals, widths): each must be >= 1.
COUNTS = frozenset({
    "large_image_size", "max_train", "max_test_per_class",  # data
    "width", "layers_per_block", "steps", "batch_size", "ema_every", "checkpoint_every",
    "log_every", "resolution",  # diffusion, dissolve
    "epochs", "max_iters_per_epoch", "checkpoint_every_epochs", "encoder_width",  # amplify
    "num_samples", "train_batch_size",  # score
    "image_size", "num_models", "unlabeled_size", "latent_size", "base_width", "mem_dim",
    "refine_epochs", "refine_batch_size", "refine_width", "eval_batch_size",  # ddad
    "ganomaly_epochs", "ganomaly_batch_size", "ganomaly_image_size", "ganomaly_width", "nz",
    "patchcore_image_size", "patchcore_projection_dim", "patchcore_batch_size",  # peers
})

# Numbers with a range narrower than their type (besides COUNTS), by field name in any section.
NON_NEGATIVE = frozenset({
    "seed", "unlabeled_seed", "warmup_epochs", "ema_update_after_step", "t_min", "focus_t_min",
    "weight_decay", "refine_weight_decay", "grad_clip", "shift_weight", "dissolve_cache_gib",
    "entropy_weight", "w_adv", "w_con", "w_enc",
})
SEEDS = frozenset({"seed", "unlabeled_seed"})  # also NON_NEGATIVE; at most MAX_SEED
POSITIVE = frozenset({"lr", "refine_lr", "ganomaly_lr", "temperature", "warmup_multiplier",
                      "lars_trust_coef", "lars_eps"})
FRACTIONS = frozenset({"ema_decay", "momentum", "beta1", "ganomaly_beta1", "focus_fraction",
                       "anomaly_rate"})  # in [0, 1]
SHARES = frozenset({"crop_scale", "crop_scale_min", "patchcore_coreset_ratio"})  # in (0, 1]


def _check_range(name: str, value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, str, tuple)):
        return
    wrong = ""
    if name in COUNTS and value < 1:
        wrong = "must be >= 1"
    elif name in NON_NEGATIVE and value < 0:
        wrong = "must be >= 0"
    elif name in SEEDS and value > MAX_SEED:
        wrong = f"must be at most {MAX_SEED}"
    elif name in POSITIVE and value <= 0:
        wrong = "must be > 0"
    elif name in FRACTIONS and not 0 <= value <= 1:
        wrong = "must lie in [0, 1]"
    elif name in SHARES and not 0 < value <= 1:
        wrong = "must lie in (0, 1]"
    if wrong:
        raise ConfigError(f"{where} = {value!r}; {wrong}")


@dataclass(frozen=True)
class DataConfig:
    """How images are loaded (SPEC section 3)."""

    large_image_size: int = 224  # size of the 224-pixel datasets; a CPU profile may shrink it
    max_train: int | None = None  # seeded subsample of the training normals (smoke only)
    max_test_per_class: int | None = None  # seeded subsample of each test class (smoke only)


@dataclass(frozen=True)
class DiffusionConfig:
    """The DDPM dissolver (SPEC section 4); `width` scales block_out_channels (1, 2, 4, 8)."""

    seed: int = 0  # one DDPM per dataset, seeded 0 whatever the run's seed (reference: _seed_all(0))
    # The U-Net: "diffusers" (SPEC's UNet2DModel, `layers_per_block` ResNet blocks per level) or
    # "reference" (the reference code's lucidrains layout, two per level; DECISIONS.md, DIA 20).
    architecture: Literal["diffusers", "reference"] = "diffusers"
    width: int = 64
    layers_per_block: int = 1
    steps: int = 156_250  # optimiser steps; the reference's milestone 5
    batch_size: int = 512
    lr: float = 8e-5
    ema_decay: float = 0.995
    ema_every: int = 10
    grad_clip: float = 1.0
    ema_update_after_step: int = 100  # ema_pytorch default: the EMA copies the raw weights until then
    checkpoint_every: int = 1000
    log_every: int = 50
    cuda_bf16: bool = False  # bf16 autocast for training on CUDA; the reference trains in fp32
    # bf16 autocast for training on a CPU: faster only with bf16 units (AMX: a step of 128 images
    # 3.2 -> 2.45 s on the 2-core Xeon, docs/MEASUREMENTS.md "bf16 on a CPU with AMX"); off in
    # every profile, which train in fp32 as the reference does
    cpu_bf16: bool = False
    # Timestep focus (not in the reference, which draws t ~ U{0..999}): each training sample
    # draws its t from {focus_t_min..focus_t_max-1}, the range dissolving uses, with probability
    # focus_fraction. 0 (every profile) reproduces the reference (DECISIONS.md, DIA 17).
    focus_fraction: float = 0.0
    focus_t_min: int = 30
    focus_t_max: int = 100


@dataclass(frozen=True)
class DissolveConfig:
    """The dissolving transformation (SPEC section 5); defaults reproduce the reference code."""

    dissolver: Literal["diffusion", "gaussian_blur", "median_blur"] = "diffusion"
    t_min: int = 30  # reference: diffusion_offset 0.3 x step_scale 100
    t_max: int = 100  # exclusive: t in {30..99}
    value_range: Literal["reference", "normalized"] = "reference"
    resolution: int = 32
    cuda_bf16: bool = True  # bf16 autocast + channels_last for the frozen U-Net on CUDA
    # the same on a CPU: faster only with bf16 units (AMX: 128 images 1.0 -> 0.65 s on the 2-core
    # Xeon, docs/MEASUREMENTS.md "bf16 on a CPU with AMX"); off in every profile
    cpu_bf16: bool = False
    # Not in the reference: a gray input's x̂₀ is made gray again (channel mean). A short DDPM
    # tints gray images slightly, a colour cue no clean view has (DECISIONS.md, DIA 18).
    keep_gray: bool = False


@dataclass(frozen=True)
class AmplifyConfig:
    """Training of the amplifying encoder (DIA) and of the CSI baseline (SPEC section 6)."""

    epochs: int = 1000
    batch_size: int = 32
    max_iters_per_epoch: int = 201  # the reference breaks after n >= 200
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-6
    warmup_epochs: int = 10
    warmup_multiplier: float = 10.0
    temperature: float = 0.5
    # the shift trained and scored with (CSI scores with the shifts its head learnt): SPEC's
    # rotations by default; cutperm is CSI's other shift, an option beyond the paper
    shift: Literal["rotation", "cutperm"] = "rotation"
    exclude_own_dissolved: bool = True
    crop_scale_min: float = 0.08
    checkpoint_every_epochs: int = 1
    lars_trust_coef: float = 1e-3  # torchlars default
    lars_eps: float = 1e-8
    shift_weight: float = 1.0  # weight of the shift cross-entropy (reference sim_lambda = 1)
    encoder_width: int = 64  # ResNet-18 first-stage channels; < 64 only for tests
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast + channels_last, CUDA only
    # bf16 autocast for the encoder on a CPU, in training and scoring, as `precision` on CUDA:
    # faster only with bf16 units (AMX: a CSI iteration 1.4x faster on the 2-core Xeon,
    # docs/MEASUREMENTS.md "bf16 on a CPU with AMX"); off in every profile
    cpu_bf16: bool = False
    dissolve_cache_gib: float = 0.0  # memoise dissolved (image, flip, t); 0 = off (reference)
    # The reference's README protocol (--save_step 1) evaluates after every epoch, and its
    # evaluation reseeds every RNG (set_random_seed(j), j = 0..9), so from epoch 2 on each epoch
    # repeats one epoch's draws: batch order, flips, t, crops, jitter (DECISIONS.md DIA 21).
    # True does the same (epochs >= 2 draw as epoch 2); False draws afresh each epoch, as the
    # reference authors' own short run (--save_step = epochs) did.
    replay_epoch_draws: bool = False


@dataclass(frozen=True)
class ScoreConfig:
    """CSI scoring (SPEC section 7)."""

    num_samples: int = 10
    crop_scale: float = 0.54
    batch_size: int = 100  # test loader batch of the reference
    train_batch_size: int = 128  # train-feature loader batch of the reference


@dataclass(frozen=True)
class DDADConfig:
    """DDAD-ASR (SPEC section 8); defaults are the reference cfgs/*.yaml (algorithms.md B1-B5)."""

    backbone: Literal["ae", "aeu", "memae"] = "aeu"
    image_size: int = 64
    num_models: int = 3  # K_A = K_B
    anomaly_rate: float = 0.6  # of the unlabeled set D_u
    unlabeled_size: int | None = None  # |D_u|; None = |D_n| (reference extra_data ~ |train/0|)
    unlabeled_selection: Literal["seeded", "first"] = "seeded"  # reference: "first" (list order)
    unlabeled_seed: int = 0  # fixed: every run seed sees the same D_u
    epochs: int = 250
    batch_size: int = 64
    lr: float = 5e-4
    beta1: float = 0.5  # Adam betas (beta1, 0.999)
    weight_decay: float = 0.0
    latent_size: int = 16
    base_width: int = 16  # reference 16 x multiplier 1
    mem_dim: int = 25  # MemAE memory slots (shrink_thres 0)
    entropy_weight: float = 0.0002  # MemAE attention-entropy loss weight
    refine_epochs: int = 100
    refine_batch_size: int = 8
    refine_lr: float = 1e-4
    refine_weight_decay: float = 1e-4
    refine_width: int = 128
    refine_intra: bool = True  # also train the R_intra ASR-Net (input: intra map only)
    eval_batch_size: int = 128  # inference only (BN in eval mode: batching changes nothing)


@dataclass(frozen=True)
class PeersConfig:
    """The peer baselines GANomaly and PatchCore (issue 9); defaults follow the originals.

    GANomaly (Akcay et al. 2018, reference code samet-akcay/ganomaly): DCGAN encoder-decoder-
    encoder, niter 15, batch 64, nz 100, ngf = ndf 64, Adam 2e-4 (0.5, 0.999), w_adv/con/enc
    1/50/1. PatchCore (Roth et al. 2022) with an ImageNet MobileNetV2: blocks 6 and 13 (strides 8
    and 16, the analogue of WideResNet layer2 + layer3), coreset 10 %, projection to 128 dims.
    """

    ganomaly_epochs: int = 15
    ganomaly_batch_size: int = 64
    ganomaly_image_size: int | None = None  # None = native: 28 padded to 32, 224 datasets at 64
    ganomaly_width: int = 64  # ngf = ndf
    nz: int = 100
    ganomaly_lr: float = 2e-4
    ganomaly_beta1: float = 0.5
    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    patchcore_image_size: int = 224  # bilinear resize before the ImageNet-normalised backbone
    patchcore_layers: tuple[int, ...] = (6, 13)  # MobileNetV2 `features` indices
    patchcore_coreset_ratio: float = 0.1
    patchcore_projection_dim: int = 128  # random projection used only to select the coreset
    patchcore_batch_size: int = 32


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one (dataset, seed) of the suite depends on."""

    profile: str = "quick"
    dataset: str = "synthetic"
    seed: int = 0
    device: str = "auto"  # not part of any hash
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    dissolve: DissolveConfig = field(default_factory=DissolveConfig)
    amplify: AmplifyConfig = field(default_factory=AmplifyConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    ddad: DDADConfig = field(default_factory=DDADConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)


SECTIONS = ("data", "diffusion", "dissolve", "amplify", "score", "ddad", "peers")
NON_SEMANTIC = ("device", "profile")


def load_config(
    profile: str = "quick",
    *,
    dataset: str = "synthetic",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    configs_dir: str | Path | None = None,
) -> ExperimentConfig:
    """Resolve defaults -> `configs/<profile>.yaml` -> overrides into a frozen config.

    Args:
        profile: one of `PROFILES` (a YAML file of that name under `configs_dir`).
        dataset: a key of `DATASETS`.
        seed: the run's seed.
        overrides: dotted keys (``"amplify.epochs"``) or nested dicts, applied last.
        configs_dir: where the profile files live (default: the repository's `configs/`).
    """
    configs_dir = Path(configs_dir) if configs_dir else CONFIGS_DIR
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    path = configs_dir / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(f"profile file {path} is missing")
    raw = read_yaml(path)
    if not raw:  # an emptied file would silently run the dataclass defaults
        raise ConfigError(f"profile file {path} is empty (it would run the built-in defaults "
                          "under this profile's name): restore it with git, or give it its "
                          "sections")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed!r}: must be a whole number from 0 to {MAX_SEED}")
    overrides = _expand_dotted(overrides or {})
    # these come from the arguments: in the file or an override they would be overwritten below
    for where, keys in ((str(path), raw), ("overrides", overrides)):
        own = sorted(set(keys) & {"profile", "dataset", "seed"})
        if own:
            raise ConfigError(f"{where}: {', '.join(own)} would be ignored there; "
                              f"{'it is' if len(own) == 1 else 'they are'} load_config's own "
                              "arguments (--profile, --dataset, --seed)")
    merged = _deep_merge(raw, overrides)
    merged.update(profile=profile, dataset=dataset, seed=seed)
    return build_config(merged, source=f"{path} with overrides {overrides}" if overrides
                        else str(path))


def build_config(raw: dict[str, Any], *, source: str = "config") -> ExperimentConfig:
    """Build an `ExperimentConfig` from nested plain data, checking every key and type."""
    cfg = _build(ExperimentConfig, raw, source)
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.device):
        raise ConfigError(f"{source}: device = {cfg.device!r}; use auto, cpu, cuda, cuda:N "
                          "or mps")
    d, f = cfg.dissolve, cfg.diffusion
    for lo, low, hi, high in (("dissolve.t_min", d.t_min, "dissolve.t_max", d.t_max),
                              ("diffusion.focus_t_min", f.focus_t_min,
                               "diffusion.focus_t_max", f.focus_t_max)):
        if not low < high <= NUM_TIMESTEPS:  # both are >= 0 (NON_NEGATIVE)
            raise ConfigError(f"{source}: {lo} = {low}, {hi} = {high}; need {lo} < {hi} <= "
                              f"{NUM_TIMESTEPS} (t is drawn from {low}..{high - 1})")
    _check_network_shapes(cfg, source)
    return cfg


def _check_network_shapes(cfg: ExperimentConfig, source: str) -> None:
    """Sizes a network cannot take, refused here rather than when its stage first runs it
    (the dissolving resolution only after the DDPM has trained)."""
    p = cfg.peers
    multiples = [("dissolve.resolution", cfg.dissolve.resolution, UNET_DOWNSAMPLING,
                  "the U-Net halves it three times"),
                 ("diffusion.width", cfg.diffusion.width, UNET_NORM_GROUPS,
                  f"the U-Net normalises its channels in {UNET_NORM_GROUPS} groups")]
    if p.ganomaly_image_size is not None:
        multiples.append(("peers.ganomaly_image_size", p.ganomaly_image_size,
                          GANOMALY_DOWNSAMPLING, "the DCGAN encoder halves it down to 4 x 4"))
    multiples.append(("ddad.image_size", cfg.ddad.image_size, DDAD_DOWNSAMPLING,
                      "the DDAD autoencoder halves it four times; reference: 64"))
    for name, value, factor, why in multiples:
        if value % factor:
            raise ConfigError(f"{source}: {name} = {value}; must be a multiple of {factor} "
                              f"({why})")
    if cfg.ddad.num_models < 2:
        raise ConfigError(f"{source}: ddad.num_models = {cfg.ddad.num_models}; the "
                          "intra-discrepancy (a std over the NDM members) needs at least 2 "
                          "(reference: 3)")
    if not p.patchcore_layers or not all(0 <= k < MOBILENET_BLOCKS for k in p.patchcore_layers):
        raise ConfigError(f"{source}: peers.patchcore_layers = {list(p.patchcore_layers)}; give "
                          f"one or more MobileNetV2 block indices from 0 to {MOBILENET_BLOCKS - 1}")


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping (YAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, str] = {}
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat
                continue
            # the key as the mapping will hold it: `true` and `True`, or `1` and `true`, are
            # one key to a Python dict, which would keep the last value silently
            name = self.construct_object(key) if isinstance(key, yaml.ScalarNode) else id(key)
            if name in seen:
                spelt = "" if seen[name] == key.value else f" (first as {seen[name]!r})"
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"key {key.value!r} given twice{spelt} (YAML would keep the last one "
                    "silently; remove one of them)", key.start_mark)
            seen[name] = key.value
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a syntax error or a repeated key is a ConfigError naming the file
    and the line."""
    try:
        with open(path) as stream:  # a stream, so that the error's marks name the file
            return yaml.load(stream, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as nested plain data (tuples become lists), ready for YAML or JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=True)


def config_hash(cfg: ExperimentConfig, sections: tuple[str, ...] = SECTIONS) -> str:
    """First 8 hex digits of SHA-256 over the dataset, the seed and the given sections.

    Non-semantic fields (device, profile name) never enter the hash: two profiles that resolve
    to the same values share their runs.
    """
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config sections {sorted(unknown)}; sections are {SECTIONS}")
    full = to_dict(cfg)
    payload = {"dataset": cfg.dataset, "seed": cfg.seed}
    payload.update({name: hashed_section(name, full[name]) for name in sorted(sections)})
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


# Fields added after runs were published enter the hash only when they differ from their
# default, so the folders of those runs keep their names.
ADDED_FIELDS = {
    "diffusion": ("focus_fraction", "focus_t_min", "focus_t_max", "architecture", "cpu_bf16"),
    "dissolve": ("keep_gray", "cpu_bf16"),
    "amplify": ("replay_epoch_draws", "cpu_bf16"),
}


def hashed_section(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """A section's values as hashed and compared: `ADDED_FIELDS` at their default dropped."""
    added = ADDED_FIELDS.get(section, ())
    if not added or not isinstance(values, dict):
        return values
    defaults = to_dict(ExperimentConfig())[section]
    return {k: v for k, v in values.items() if k not in added or v != defaults[k]}


def comparable_sections(sections: dict[str, Any]) -> dict[str, Any]:
    """`hashed_section` of each section: how a checkpoint's recorded config is compared."""
    return {name: hashed_section(name, values) for name, values in sections.items()}


def replace(cfg: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """A copy of `cfg` with dotted-key overrides applied and validated."""
    return build_config(_deep_merge(to_dict(cfg), _expand_dotted(overrides)), source="overrides")


# -- helpers -----------------------------------------------------------------------------------


def _expand_dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _key_name(key: Any) -> str:
    """A mapping key as an error shows it; YAML reads `1`, `true` or `null` as no name."""
    if isinstance(key, str):
        return key
    return f"{key!r} (YAML read it as {type(key).__name__}, not as a name)"


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(_key_name(key) for key in raw if key not in names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} in {cls.__name__}; "
            f"allowed: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name], f"{where}: {name}")
        else:
            kwargs[name] = _check_value(hint, raw[name], f"{where}: {cls.__name__}.{name}")
            _check_range(name, kwargs[name], f"{where}: {cls.__name__}.{name}")
    return cls(**kwargs)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _check_value(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r}; allowed: {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}; expected a list")
        return tuple(_check_value(args[0], v, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}; expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}; expected an integer")
        return value
    if hint is float:  # YAML 1.1 reads 1e-4 (no dot) as a string
        number = _float_or_none(value) if isinstance(value, str) else value
        if (isinstance(number, bool) or not isinstance(number, (int, float))
                or not math.isfinite(number)):
            raise ConfigError(f"{where} = {value!r}; expected a finite number")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}; expected a string")
        return value
    raise ConfigError(f"{where}: unsupported type {hint!r}")  # pragma: no cover
