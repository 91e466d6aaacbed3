"""benchmarks/flop_budget.py: the images each stage of a run feeds its networks."""

import numpy as np
import pytest

from dia.config import load_config, replace

COUNTS = {"train_normal": 100, "test_normal": 20, "test_anomalous": 30, "val_normal": 5,
          "val_anomalous": 7}


@pytest.fixture
def budget(load_script):
    return load_script("benchmarks/flop_budget.py")


def _cfg(profile="quick", **amplify):
    overrides = {"diffusion.steps": 7, "diffusion.batch_size": 16, "score.num_samples": 3,
                 **{f"amplify.{k}": v for k, v in amplify.items()}}
    return load_config(profile, dataset="pneumonia", overrides=overrides)


def test_images_per_stage_by_hand(budget):
    images = budget.stage_images(_cfg(epochs=2, batch_size=32, dissolve_cache_gib=0.0), COUNTS)
    # 100 normals: 4 batches (the last of 4) an epoch; DIA 3 views x 4 rotations, CSI 2 x 4
    assert images["dia_train"] == 2 * 100 * 12 and images["csi_train"] == 2 * 100 * 8
    assert images["dissolve"] == 2 * 100 * 4  # no cache: one dissolved image per rotation
    assert images["ddpm_train"] == 7 * 16 and images["table_images"] == 100 * 2 * 70
    assert images["scoring_per_method"] == (100 + 20 + 30 + 5 + 7) * 4 * 3


def test_capped_epochs_and_distinct_cache_keys(budget):
    # at most 2 iterations of 25 an epoch: 50 of the 100 normals, 4 * 3 * 50 / 100 draws each
    images = budget.stage_images(
        _cfg(epochs=3, batch_size=25, max_iters_per_epoch=2, dissolve_cache_gib=1.0), COUNTS)
    assert images["dia_train"] == 3 * 50 * 12
    # the count takes every image as drawn its mean 6 times (capped epochs draw a random half,
    # so in a run the draws vary and give about 1 % fewer keys); then it is the mean of distinct
    # (flip, t) keys over 6 uniform draws
    draws = np.random.default_rng(0).integers(0, 140, size=(20_000, 6))
    distinct = np.mean([len(set(row)) for row in draws])  # (flip, t) keys hit per image
    assert images["dissolve"] == pytest.approx(100 * distinct, rel=0.01)


def test_a_full_cache_dissolves_what_it_cannot_store(budget):
    """The closed form against a simulated `DissolveCache` that stops storing when full."""
    rng = np.random.default_rng(0)
    normals, keys, epochs, capacity = 40, 10, 6, 150  # 400 keys, room for 150

    def simulate():
        store, dissolved = set(), 0
        for _ in range(epochs):  # each image drawn 4 times an epoch, in random order
            for image in rng.permutation(np.repeat(np.arange(normals), 4)):
                key = (image, rng.integers(keys))
                if key not in store:
                    dissolved += 1
                    if len(store) < capacity:
                        store.add(key)
        return dissolved

    expected = np.mean([simulate() for _ in range(100)])
    assert budget.dissolved_images(normals, keys, 4 * epochs, capacity) == pytest.approx(
        expected, rel=0.02)
    assert budget.dissolved_images(normals, keys, 4 * epochs, 0) == normals * 4 * epochs


def test_cuda_dissolves_every_key_when_the_table_fits(budget):
    cfg = load_config("quick", dataset="pneumonia")  # 4 GiB; 1,214 normals of 28 px: 1.6 GB
    assert budget.stage_images(cfg, {**COUNTS, "train_normal": 1214}, "cuda")["dissolve"] == (
        1214 * 140)
    # 224 px: no table (1,000 x 84 MB); the 4 GiB cache holds 7,132 images of 602 KB, so most
    # of the ~69.5 distinct keys per image drawn are dissolved again each time they come up
    large, counts = load_config("quick", dataset="kvasir"), {**COUNTS, "train_normal": 1000}
    on_cuda = budget.stage_images(large, counts, "cuda")["dissolve"]
    assert on_cuda == budget.stage_images(large, counts, "cpu")["dissolve"]
    assert 1000 * 69.5 < on_cuda < 1000 * 4 * 24


def test_a_profile_that_caps_the_data_counts_fewer_images(budget):
    counts = {**COUNTS, "test_anomalous": 50}
    images = budget.stage_images(_cfg("smoke", epochs=1, max_iters_per_epoch=100), counts)
    assert images["dia_train"] == 64 * 12  # smoke trains on at most 64 normals
    assert images["scoring_per_method"] == (64 + 20 + 32 + 5 + 7) * 4 * 3  # <= 32 per test class


def test_matmul_ceiling_times_square_products(budget):
    import torch

    ceiling = budget.matmul_ceiling(torch.device("cpu"), sizes=(64, 128), repeats=1)
    assert set(ceiling) == {"fp32"}  # TF32 and bf16 are measured on CUDA only
    assert np.isfinite(ceiling["fp32"]) and ceiling["fp32"] > 0


def test_each_network_is_held_to_the_ceiling_of_its_precision(budget):
    import torch

    cfg = _cfg(precision="bf16")
    assert set(budget.ceiling_kinds(cfg, torch.device("cpu")).values()) == {"fp32"}
    # CUDA (no GPU needed to ask): the DDPM trains in fp32, which cuDNN runs as TF32; dissolving
    # and the encoder follow dissolve.cuda_bf16 and amplify.precision
    assert budget.ceiling_kinds(cfg, torch.device("cuda")) == {
        "ddpm_train": "tf32", "dissolve": "bf16", "encoder_train": "bf16", "encoder_score": "bf16"}
    fp32 = load_config("quick", dataset="pneumonia", overrides={
        "amplify.precision": "fp32", "dissolve.cuda_bf16": False})
    assert set(budget.ceiling_kinds(fp32, torch.device("cuda")).values()) == {"tf32"}


def test_each_network_is_held_to_the_ceiling_of_the_precision_it_runs_in(budget):
    import torch

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert set(budget.ceiling_kinds(_cfg(), cpu).values()) == {"fp32"}
    both = load_config("quick", dataset="pneumonia",
                       overrides={"diffusion.cpu_bf16": True, "dissolve.cpu_bf16": True})
    assert budget.ceiling_kinds(both, cpu) == {"ddpm_train": "bf16", "dissolve": "bf16",
                                               "encoder_train": "fp32", "encoder_score": "fp32"}
    encoder = replace(both, {"amplify.cpu_bf16": True})
    assert set(budget.ceiling_kinds(encoder, cpu).values()) == {"bf16"}
    assert budget.ceiling_kinds(encoder, cuda)["encoder_train"] == "tf32"  # a CPU switch only
    gpu = budget.ceiling_kinds(load_config("quick", dataset="pneumonia", overrides={
        "diffusion.cuda_bf16": True, "dissolve.cuda_bf16": False}), cuda)
    assert (gpu["ddpm_train"], gpu["dissolve"]) == ("bf16", "tf32")
