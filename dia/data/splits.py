"""What every dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dia.data.registry import DataError


def _no_images() -> torch.Tensor:
    return torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def _no_labels() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


@dataclass
class DatasetSplits:
    """Images of one dataset as uint8 tensors (N, 3, H, W), label 1 = anomalous.

    Attributes:
        key: dataset key (`dia.config.DATASETS`).
        image_size: H = W of every tensor here.
        train: training-split normal images, the only images DIA, CSI and the DDPM see.
        test: the whole labelled test split.
        test_labels: int64 (M,), 1 = anomalous.
        test_ids: one stable string per test image (file name or split index).
        train_ids: one stable string per training normal image.
        pool: training-split images other than `train` that DDAD may draw an *unlabeled* set
            from (the training split's anomalous images, or DDAD's own unlabeled list for
            braintumor); never test images. Empty when the split has none.
        pool_labels: int64 labels of `pool` (1 = anomalous), used only to draw the set at the
            asked anomaly rate and for bookkeeping, never for training.
        pool_ids: ids of `pool`.
        val: a labelled validation split disjoint from `train` and `test` (MedMNIST's official
            val split; the synthetic set draws one), for comparing settings without looking at
            the test set. Empty where the dataset has none. No method trains on it.
        val_labels: int64 (V,), 1 = anomalous.
        val_ids: one stable string per validation image.
    """

    key: str
    image_size: int
    train: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    test_ids: list[str]
    train_ids: list[str]
    pool: torch.Tensor = field(default_factory=_no_images)
    pool_labels: torch.Tensor = field(default_factory=_no_labels)
    pool_ids: list[str] = field(default_factory=list)
    val: torch.Tensor = field(default_factory=_no_images)
    val_labels: torch.Tensor = field(default_factory=_no_labels)
    val_ids: list[str] = field(default_factory=list)

    def require_training_normals(self, what: str) -> None:
        """A DataError, before `what` (training or scoring) starts, when the training split
        holds no normal image: CSI scoring takes its statistics from them as DIA trains on them."""
        if self.train.shape[0] == 0:
            raise DataError(f"the training split of {self.key} has no normal images, needed for "
                            f"{what}; check the data with `dia data check --data-root <the data "
                            "root you used>`")

    def counts(self) -> dict[str, int]:
        """Counts per split and class, for `dia data check` and the notebooks."""
        return {
            "train_normal": int(self.train.shape[0]),
            "test_normal": int((self.test_labels == 0).sum()),
            "test_anomalous": int((self.test_labels == 1).sum()),
            "pool_normal": int((self.pool_labels == 0).sum()),
            "pool_anomalous": int((self.pool_labels == 1).sum()),
            "val_normal": int((self.val_labels == 0).sum()),
            "val_anomalous": int((self.val_labels == 1).sum()),
        }

    def sizes(self) -> dict[str, int]:
        """Images per split a method trains on or scores, for its logs and DONE summary."""
        return {"train_images": int(self.train.shape[0]), "test_images": int(self.test.shape[0]),
                "val_images": len(self.val_ids)}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"DatasetSplits({self.key}, {self.image_size}px, {parts})"
