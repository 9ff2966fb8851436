"""The data set type every loader returns, and its error."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A data file that cannot be used; the message names the file and the problem."""


@dataclass
class Dataset:
    """Images as float32 (N, C, H, W) scaled to [0, 1], labels int32. ``groups`` (natural clients, e.g. LEAF
    users) are index arrays into the training set; the test split is optional."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    num_classes: int
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    groups: list[np.ndarray] | None = None
    group_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_pair(self.name, self.x_train, self.y_train, self.num_classes)
        if self.x_test is not None:
            check_pair(self.name + " (test)", self.x_test, self.y_test, self.num_classes)
            if self.x_test.shape[1:] != self.x_train.shape[1:]:
                raise DatasetError(f"{self.name}: test images {self.x_test.shape[1:]} differ from training images "
                                   f"{self.x_train.shape[1:]}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]


def check_pair(name: str, x: np.ndarray | None, y: np.ndarray | None, num_classes: int) -> None:
    if x is None or y is None:
        raise DatasetError(f"{name}: images and labels are both needed")
    if x.ndim != 4 or x.dtype != np.float32:
        raise DatasetError(f"{name}: images must be float32 (N, C, H, W), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{name}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(f"{name}: labels must be in [0, {num_classes}), found [{y.min()}, {y.max()}]")
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"{name}: images hold NaN or Inf")


def images_from_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W) or (N, C, H, W) as float32 (N, C, H, W) in [0, 1]."""
    x = x[:, None] if x.ndim == 3 else x
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
