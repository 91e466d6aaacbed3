"""The data layer: one loader per dataset key of SPEC section 3, label 1 = anomalous.

    splits = load_dataset("pneumonia")                 # uint8 (N, 3, 28, 28) tensors
    splits = load_for_config(cfg)                      # the profile's image size and caps
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from dia.data.registry import (SPECS, DataError, DataMissing, DataOffline, DatasetSpec,
                               get_spec, resolve_data_root)
from dia.data.splits import DatasetSplits

__all__ = [
    "SPECS", "DataError", "DataMissing", "DataOffline", "DatasetSpec", "DatasetSplits", "get_spec",
    "load_dataset", "load_for_config", "resolve_data_root",
]

DEFAULT_MAX_POOL = 2000  # DDAD draws its unlabeled set from at most this many pool images


def load_dataset(
    key: str,
    *,
    data_root: str | Path | None = None,
    results_root: str | Path = "results",
    image_size: int | None = None,
    max_pool: int | None = DEFAULT_MAX_POOL,
) -> DatasetSplits:
    """Load one dataset as uint8 tensors.

    Args:
        key: a dataset key (`dia.data.SPECS`).
        data_root: folder holding the datasets; default `$DIA_DATA_ROOT`, else `data/`.
        results_root: where seeded splits are written (`<results_root>/splits/<key>.csv`).
        image_size: square size of the returned images; default the dataset's native size.
        max_pool: cap on the pool of extra training images (seeded subsample).

    Raises:
        DataError: unknown key, missing folder/file, corrupt image or npz, empty class.
    """
    spec = get_spec(key)
    size = image_size or spec.native_size
    if key == "synthetic":
        from dia.data.synthetic import load_synthetic

        return load_synthetic(size)
    root = resolve_data_root(data_root)
    if not root.is_dir():
        what = ("is a file, not a folder; move it away or set DIA_DATA_ROOT to a folder"
                if root.exists() else "does not exist; set DIA_DATA_ROOT or create it")
        raise DataMissing(
            f"data root {root} {what}, then put "
            f"{spec.layout} under it (`dia data check` lists every dataset)"
        )
    if spec.split == "official" and spec.is_small:
        from dia.data.medmnist_files import load_medmnist

        return load_medmnist(key, root, size)
    from dia.data.folders import load_folder_dataset

    return load_folder_dataset(key, root, size, Path(results_root), max_pool=max_pool)


def image_size_for(cfg) -> int:  # cfg: dia.config.ExperimentConfig
    """The size a dataset is used at under a profile: 28 stays 28, 224 becomes large_image_size."""
    spec = get_spec(cfg.dataset)
    return spec.native_size if spec.is_small else cfg.data.large_image_size


def load_for_config(
    cfg,
    *,
    data_root: str | Path | None = None,
    results_root: str | Path = "results",
    image_size: int | None = None,
) -> DatasetSplits:
    """`load_dataset` at the profile's image size, with the profile's seeded caps applied."""
    splits = load_dataset(
        cfg.dataset, data_root=data_root, results_root=results_root,
        image_size=image_size or image_size_for(cfg),
    )
    return subsample(splits, max_train=cfg.data.max_train, max_test_per_class=cfg.data.max_test_per_class)


def subsample(
    splits: DatasetSplits, *, max_train: int | None, max_test_per_class: int | None, seed: int = 0
) -> DatasetSplits:
    """Seeded caps on the training normals and on each test (and validation) class (smoke only).

    The subsample depends on the data and `seed` (fixed), never on the run's seed, so every
    method and seed sees the same images.
    """
    rng = np.random.default_rng(seed)
    train_idx = np.arange(splits.train.shape[0])
    if max_train is not None and train_idx.size > max_train:
        train_idx = np.sort(rng.permutation(train_idx.size)[:max_train])
    test_idx = _per_class(splits.test_labels.numpy(), max_test_per_class, rng)
    val_idx = _per_class(splits.val_labels.numpy(), max_test_per_class, rng)
    return replace(
        splits,
        train=splits.train[train_idx],
        train_ids=[splits.train_ids[i] for i in train_idx],
        test=splits.test[test_idx],
        test_labels=splits.test_labels[test_idx],
        test_ids=[splits.test_ids[i] for i in test_idx],
        val=splits.val[val_idx],
        val_labels=splits.val_labels[val_idx],
        val_ids=[splits.val_ids[i] for i in val_idx],
    )


def _per_class(labels: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most `cap` images per class (0, then 1), each class sorted; all if no cap."""
    if cap is None:
        return np.arange(labels.size)
    parts = [np.sort(rng.permutation(np.flatnonzero(labels == label))[:cap]) for label in (0, 1)]
    return np.concatenate(parts)
