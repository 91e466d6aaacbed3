"""Config: strict loading, profiles, overrides, round trip and hash stability."""

from __future__ import annotations

import re

import pytest

from dia.config import (
    PROFILES, ConfigError, build_config, config_hash, load_config, replace, to_dict, to_yaml,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile):
    cfg = load_config(profile, dataset="pneumonia", seed=1)
    assert cfg.profile == profile and cfg.dataset == "pneumonia" and cfg.seed == 1


def test_profile_values_override_defaults():
    smoke = load_config("smoke")
    paper = load_config("paper")
    assert smoke.diffusion.steps < paper.diffusion.steps
    assert paper.amplify.epochs == 1000 and paper.diffusion.steps == 156_250


def test_dotted_and_nested_overrides():
    cfg = load_config("smoke", overrides={"amplify.epochs": 7, "score": {"num_samples": 3}})
    assert cfg.amplify.epochs == 7 and cfg.score.num_samples == 3


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"amplify.epochz": 1}, "epochz"),
        ({"amplfy.epochs": 1}, "amplfy"),
        ({"amplify.epochs": "ten"}, "expected an integer"),
        ({"amplify.epochs": 2.5}, "expected an integer"),
        ({"amplify.lr": "fast"}, "lr = 'fast'; expected a finite number"),
        ({"amplify.lr": "nan"}, "expected a finite number"),
        ({"amplify.lr": float("inf")}, "expected a finite number"),
        ({"amplify.lr": -0.1}, "lr = -0.1; must be > 0"),
        ({"amplify.temperature": 0}, "temperature = 0.0; must be > 0"),
        ({"amplify.warmup_epochs": -5}, "must be >= 0"),
        ({"score.crop_scale": 2.0}, r"must lie in \(0, 1\]"),
        ({"ddad.anomaly_rate": 1.5}, r"must lie in \[0, 1\]"),
        ({"diffusion.ema_decay": 5}, r"must lie in \[0, 1\]"),
        ({"dissolve.t_min": 200}, "dissolve.t_min = 200, dissolve.t_max = 100; need dissolve.t_min"),
        ({"dissolve.t_max": 5000}, "need dissolve.t_min < dissolve.t_max <= 1000"),
        ({"device": "tpu"}, "device = 'tpu'; use auto, cpu, cuda, cuda:N or mps"),
        ({"amplify.epochs": 0}, "AmplifyConfig.epochs = 0; must be >= 1"),
        ({"peers.ganomaly_epochs": -1}, "must be >= 1"),
        ({"data.max_train": 0}, "must be >= 1"),
        ({"seed": 3}, "overrides: seed would be ignored there; it is load_config's own"),
        ({"dataset": "pneumonia"}, "--dataset"),
        ({"amplify.exclude_own_dissolved": 1}, "true or false"),
        ({"dissolve.value_range": "other"}, "'reference'"),
        ({"diffusion.seed": 2**32}, f"seed = {2**32}; must be at most {2**32 - 1}"),
        ({"dissolve.resolution": 33}, "dissolve.resolution = 33; must be a multiple of 8"),
        ({"diffusion.width": 12}, "diffusion.width = 12; must be a multiple of 8 .the U-Net"),
        ({"peers.ganomaly_image_size": 8}, "ganomaly_image_size = 8; must be a multiple of 16"),
        ({"ddad.image_size": 8}, "ddad.image_size = 8; must be a multiple of 16 .the DDAD"),
        ({"ddad.num_models": 1}, "ddad.num_models = 1; the intra-discrepancy .* at least 2"),
        ({"peers.patchcore_layers": []}, r"patchcore_layers = \[\]; give one or more"),
        ({"peers.patchcore_layers": [6, 99]}, "block indices from 0 to 18"),
    ],
)
def test_bad_keys_and_types_list_what_is_allowed(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("smoke", overrides=overrides)


@pytest.mark.parametrize("seed", [-1, "abc", 1.5, True, 2**32, 2**64])
def test_a_seed_is_a_whole_number_from_zero(seed):
    with pytest.raises(ConfigError, match=f"seed {seed!r}: must be a whole number from 0 to "
                                          f"{2**32 - 1}"):
        load_config("smoke", seed=seed)
    assert load_config("smoke", seed=2**32 - 1).seed == 2**32 - 1


def test_a_profile_file_with_a_repeated_key_or_bad_yaml_is_refused_by_name(tmp_path):
    import shutil

    from dia.config import CONFIGS_DIR, read_yaml

    path = tmp_path / "smoke.yaml"
    shutil.copy(CONFIGS_DIR / "smoke.yaml", path)
    assert load_config("smoke", configs_dir=tmp_path) == load_config("smoke")
    good = path.read_text()
    path.write_text(good + "amplify:\n  epochs: 3\n")  # YAML would keep this one silently
    with pytest.raises(ConfigError, match=r"smoke.yaml is not valid YAML: .*key 'amplify' given twice.*remove one"):
        load_config("smoke", configs_dir=tmp_path)
    for first, second in (("true", "True"), ("1", "true")):  # one key to a Python dict
        path.write_text(good + f"diffusion_extra:\n  {first}: 1\n  {second}: 2\n")
        twice = f"key '{second}' given twice \\(first as '{first}'\\)"
        with pytest.raises(ConfigError, match=twice):
            load_config("smoke", configs_dir=tmp_path)
    for key, shown in (("1", "1 (YAML read it as int"), ("null", "None (YAML read it as NoneType")):
        path.write_text(good.replace("amplify:\n", f"amplify:\n  {key}: 3\n  colour: 2\n", 1))
        with pytest.raises(ConfigError, match=re.escape(f"unknown key(s) {shown}, not as a name), "
                                                        "colour in AmplifyConfig")):
            load_config("smoke", configs_dir=tmp_path)
    merged = tmp_path / "merged.yaml"  # merge keys (`<<`) are no repeats
    merged.write_text("a: &a {x: 1}\nb:\n  <<: *a\n  y: 2\nc:\n  <<: *a\n")
    assert read_yaml(merged) == {"a": {"x": 1}, "b": {"x": 1, "y": 2}, "c": {"x": 1}}
    for empty in ("", "# all commented out\n"):
        path.write_text(empty)
        with pytest.raises(ConfigError, match="smoke.yaml is empty"):
            load_config("smoke", configs_dir=tmp_path)
    path.write_text(good + "data: [unclosed\n")
    with pytest.raises(ConfigError, match="smoke.yaml is not valid YAML"):
        load_config("smoke", configs_dir=tmp_path)
    for line in ("seed: 5", "dataset: breast", "profile: paper"):  # the arguments' to set
        path.write_text(good + line + "\n")
        with pytest.raises(ConfigError, match=rf"smoke.yaml: {line.split(':')[0]} would be "
                                              r"ignored there; it is load_config's own .*--seed"):
            load_config("smoke", configs_dir=tmp_path)


def test_every_ranged_field_exists_and_the_profiles_satisfy_the_ranges():
    import dataclasses

    from dia.config import FRACTIONS, NON_NEGATIVE, POSITIVE, SHARES, ExperimentConfig

    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    for section in dataclasses.fields(ExperimentConfig):
        if isinstance(section.default_factory, type):  # a section: DataConfig, ...
            names |= {f.name for f in dataclasses.fields(section.default_factory())}
    assert NON_NEGATIVE | POSITIVE | FRACTIONS | SHARES <= names  # no typo in the lists
    for profile in ("smoke", "quick", "paper"):
        load_config(profile, dataset="pneumonia")


def test_a_float_written_without_a_dot_is_a_number():
    import yaml

    assert yaml.safe_load("1e-4") == "1e-4"  # YAML 1.1: a string, not a float
    assert load_config("smoke", overrides={"amplify.lr": yaml.safe_load("1e-4")}).amplify.lr == 1e-4


def test_every_count_is_an_integer_field_and_zero_stays_allowed_elsewhere():
    import dataclasses
    import typing

    from dia.config import COUNTS, ExperimentConfig

    ints = set()
    for section in dataclasses.fields(ExperimentConfig):
        hint = typing.get_type_hints(ExperimentConfig)[section.name]
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint)
            ints |= {name for name, h in hints.items() if int in (h, *typing.get_args(h))}
    assert COUNTS <= ints  # no typo in the list
    cfg = load_config("smoke", overrides={"amplify.warmup_epochs": 0, "diffusion.seed": 0})
    assert cfg.amplify.warmup_epochs == 0


def test_an_override_error_names_the_overrides():
    with pytest.raises(ConfigError, match="with overrides"):
        load_config("smoke", overrides={"peers.foo": 1})


def test_unknown_key_message_lists_allowed_keys():
    with pytest.raises(ConfigError, match="allowed: .*epochs"):
        load_config("smoke", overrides={"amplify.nope": 1})


def test_unknown_profile_and_dataset():
    with pytest.raises(ConfigError, match="smoke, quick, paper"):
        load_config("fast")
    with pytest.raises(ConfigError, match="pneumonia"):
        load_config("smoke", dataset="mnist")


def test_yaml_round_trip_and_hash_stability():
    import yaml

    cfg = load_config("quick", dataset="braintumor", seed=2)
    again = build_config(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert len(config_hash(cfg)) == 8


def test_hash_depends_only_on_named_sections():
    cfg = load_config("smoke")
    longer = replace(cfg, {"amplify.epochs": cfg.amplify.epochs + 1})
    assert config_hash(cfg, ("data", "diffusion")) == config_hash(longer, ("data", "diffusion"))
    assert config_hash(cfg, ("data", "amplify")) != config_hash(longer, ("data", "amplify"))
    assert config_hash(cfg) != config_hash(replace(cfg, {"seed": 1}))


def test_fields_added_later_enter_the_hash_only_when_changed():
    import hashlib
    import json

    from dia.config import ADDED_FIELDS

    cfg = load_config("quick", dataset="pneumonia")
    for name, added in ADDED_FIELDS.items():
        # the hash the code had before the fields existed: the section without them
        section = {k: v for k, v in to_dict(cfg)[name].items() if k not in added}
        blob = json.dumps({"dataset": "pneumonia", "seed": 0, name: section},
                          sort_keys=True, separators=(",", ":")).encode()
        assert config_hash(cfg, (name,)) == hashlib.sha256(blob).hexdigest()[:8], name
    for key, value in (("diffusion.focus_fraction", 0.5), ("diffusion.cpu_bf16", True),
                       ("dissolve.cpu_bf16", True), ("amplify.replay_epoch_draws", True),
                       ("amplify.cpu_bf16", True)):
        section = (key.split(".")[0],)
        assert config_hash(replace(cfg, {key: value}), section) != config_hash(cfg, section), key


def test_device_is_not_semantic():
    cfg = load_config("smoke")
    assert config_hash(cfg) == config_hash(replace(cfg, {"device": "cpu"}))


def test_to_dict_is_plain_data():
    data = to_dict(load_config("smoke"))
    assert isinstance(data["amplify"], dict) and data["dataset"] == "synthetic"


def test_config_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, dia.config, dia.results; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_device_torch_does_not_know_is_a_config_error():
    from dia.runtime import resolve_device

    with pytest.raises(ConfigError, match="'tpu' is not a device: use auto, cpu, cuda"):
        resolve_device("tpu")
