"""A seeded, fine-grained synthetic anomaly dataset, so the whole suite runs with no download.

Normal images are smooth grey textures (a few low-frequency sinusoids under a soft vignette,
like an organ on a scan). Anomalous images are the same kind of texture with one to three
small, faint lesions (Gaussian spots of a few percent of the image width and 0.1-0.2 of the
intensity range). Image i is a function of (seed, split, i) only and is drawn analytically, so
it is the same picture at 28x28 and at 224x224.
"""

from __future__ import annotations

import numpy as np
import torch

from dia.data.splits import DatasetSplits

COUNTS = {"train": 600, "test_normal": 150, "test_anomalous": 150, "pool_anomalous": 150,
          "val_normal": 75, "val_anomalous": 75}
SPLIT_CODES = {"train": 1, "test_normal": 2, "test_anomalous": 3, "pool_anomalous": 4,
               "val_normal": 5, "val_anomalous": 6}


def make_images(num: int, size: int, *, seed: int, split: str, anomalous: bool) -> torch.Tensor:
    """Draw `num` images as uint8 (num, 3, size, size)."""
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    out = np.empty((num, 3, size, size), dtype=np.uint8)
    for i in range(num):
        rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
        image = _texture(rng, yy, xx)
        if anomalous:
            image = image + _lesions(rng, yy, xx)
        out[i] = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)[None]
    return torch.from_numpy(out)


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    image = np.zeros_like(yy)
    for _ in range(6):
        freq = rng.uniform(0.5, 3.0, size=2) * rng.choice([-1, 1], size=2)
        phase = rng.uniform(0, 2 * np.pi)
        image += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (freq[0] * yy + freq[1] * xx) + phase)
    image = 0.5 + 0.12 * image / 3.0
    centre = rng.uniform(0.4, 0.6, size=2)
    radius = rng.uniform(0.45, 0.6)
    vignette = np.exp(-(((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / radius**2) ** 2)
    return 0.15 + image * (0.3 + 0.7 * vignette)


def _lesions(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    spots = np.zeros_like(yy)
    for _ in range(rng.integers(1, 4)):
        centre = rng.uniform(0.25, 0.75, size=2)
        sigma = rng.uniform(0.03, 0.06)
        amplitude = rng.uniform(0.10, 0.20) * rng.choice([-1, 1])
        spots += amplitude * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))
    return spots


def load_synthetic(size: int = 28, *, seed: int = 0) -> DatasetSplits:
    """The synthetic dataset at `size` (28 by default; any size draws the same pictures)."""
    def draw(split: str) -> torch.Tensor:
        return make_images(COUNTS[split], size, seed=seed, split=split,
                           anomalous=split.endswith("_anomalous"))

    def labelled(name: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        normal, anomalous = draw(f"{name}_normal"), draw(f"{name}_anomalous")
        labels = torch.cat([torch.zeros(len(normal)), torch.ones(len(anomalous))]).long()
        ids = ([f"{name}_normal_{i}" for i in range(len(normal))]
               + [f"{name}_anomalous_{i}" for i in range(len(anomalous))])
        return torch.cat([normal, anomalous]), labels, ids

    train, pool = draw("train"), draw("pool_anomalous")
    test, test_labels, test_ids = labelled("test")
    val, val_labels, val_ids = labelled("val")
    return DatasetSplits(
        key="synthetic", image_size=size,
        train=train, train_ids=[f"train_{i}" for i in range(len(train))],
        test=test, test_labels=test_labels, test_ids=test_ids,
        pool=pool, pool_labels=torch.ones(len(pool), dtype=torch.int64),
        pool_ids=[f"pool_{i}" for i in range(len(pool))],
        val=val, val_labels=val_labels, val_ids=val_ids,
    )
