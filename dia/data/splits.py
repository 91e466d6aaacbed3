"""What every dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
    """

    key: str
    image_size: int
    train: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    test_ids: list[str]
    train_ids: list[str]
    pool: torch.Tensor = field(default_factory=lambda: torch.empty(0, 3, 0, 0, dtype=torch.uint8))
    pool_labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    pool_ids: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Counts per split and class, for `dia data check` and the notebooks."""
        return {
            "train_normal": int(self.train.shape[0]),
            "test_normal": int((self.test_labels == 0).sum()),
            "test_anomalous": int((self.test_labels == 1).sum()),
            "pool_normal": int((self.pool_labels == 0).sum()),
            "pool_anomalous": int((self.pool_labels == 1).sum()),
        }

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"DatasetSplits({self.key}, {self.image_size}px, {parts})"
