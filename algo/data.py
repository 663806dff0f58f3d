"""scikit-learn's bundled 8x8 digits, with one fixed, documented split.

Images are 8x8 with integer pixel values 0..16; terwin scales them to [0, 1] as x = pixel / 16, so
the integer model's input quantization (scale 1/16) is exact: q = pixel.
Split: `train_test_split(test_size=0.25, stratify=labels, random_state=0)` -> 1347 train / 450 test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

PIXEL_MAX = 16
INPUT_SCALE = 1.0 / PIXEL_MAX
SPLIT_SEED = 0
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray  # float32 [N, 1, 8, 8] in [0, 1]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> int:
        return 10


def load_digits_split() -> Split:
    digits = load_digits()
    x = (digits.images.astype(np.float32) / PIXEL_MAX)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED)
    return Split(x_tr, y_tr, x_te, y_te)
