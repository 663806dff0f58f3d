"""Data sets: scikit-learn's bundled 8x8 digits with one fixed, documented split, its 32x32 version,
and a user's images from a `.npz` file. NumPy only (`terwin verify` imports it without torch).

Digits: images are 8x8 with integer pixel values 0..16; terwin scales them to [0, 1] as x = pixel / 16,
so the integer model's input quantization (scale 1/16) is exact: q = pixel — when the activations have
at least 5 bits. Narrower activations cannot hold 0..16, so the input scale widens to 1/(2^act_bits - 1)
(`digits_input_scale`): every pixel is rounded onto the narrower grid instead of the bright ones being
clamped, and the flows' input quantizer trains the net on exactly that grid.
Split: `train_test_split(test_size=0.25, stratify=labels, random_state=0)` -> 1347 train / 450 test.

`digits32`: the same images and split, upsampled 4x to 32x32 by nearest neighbour (every pixel
repeated in a 4x4 block; deterministic, and the pixels stay on the 1/16 grid, so q = pixel still).

`FILE.npz` (`load_npz`): arrays `x_train`, `y_train`, `x_test`, `y_test`; images N×H×W or N×C×H×W,
uint8 (0–255, x = v / 255) or float (0–1), labels integers 0..K-1. Read strictly (`np.load` rules:
no pickles; every array's header — dtype and shape — is checked against the limits below before its
data are read); a malformed file is one line naming the array.

`validation_split`: the images every choice made during training is judged on (checkpoint
selection), carved from the training images — stratified, seeded — never the test images.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, replace

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from terwin.errors import TerwinError
from terwin.safeio import open_regular

PIXEL_MAX = 16
INPUT_SCALE = 1.0 / PIXEL_MAX
SPLIT_SEED = 0
TEST_FRACTION = 0.25
DIGITS32_FACTOR = 4
BUILTIN = ("digits", "digits32")

# limits of a user's .npz (checked on each array's header, before its data are read)
MAX_NPZ_BYTES = 2 << 30          # the file
MAX_IMAGES = 1 << 20             # per array
MAX_IMAGE_ELEMENTS = 1 << 22     # C·H·W of one image (the model file's limit on a map)
MAX_DATA_ELEMENTS = 1 << 29      # all images of one array (512 Mi values)
MAX_CLASSES = 1024
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray  # float32 [N, C, H, W] in [0, 1]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    input_scale: float = INPUT_SCALE   # the float value of one input unit: q = x / input_scale exactly
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))
    name: str = "digits"

    @property
    def classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x_train.shape[1:])


def digits_input_scale(act_bits: int = 8) -> float:
    """The digits' input scale for `act_bits`-bit activations: 1/16 (q = pixel exactly) when 0..16
    fits, else 1/(2^act_bits - 1), so that x = 1 (pixel 16) is the largest input code, not clamped."""
    levels = (1 << act_bits) - 1
    return INPUT_SCALE if levels >= PIXEL_MAX else 1.0 / levels


def load_digits_split(act_bits: int = 8) -> Split:
    """The digits split; its input scale is `digits_input_scale(act_bits)`."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / PIXEL_MAX)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED)
    return Split(x_tr, y_tr, x_te, y_te, input_scale=digits_input_scale(act_bits))


def upsample_nearest(x: np.ndarray, factor: int) -> np.ndarray:
    """[N, C, H, W] -> [N, C, H·factor, W·factor], each pixel repeated in a factor x factor block."""
    return np.ascontiguousarray(x.repeat(factor, axis=2).repeat(factor, axis=3))


def load_digits32_split(act_bits: int = 8) -> Split:
    """The digits split upsampled to 32x32 (nearest neighbour, `DIGITS32_FACTOR`)."""
    s = load_digits_split(act_bits)
    return replace(s, x_train=upsample_nearest(s.x_train, DIGITS32_FACTOR),
                   x_test=upsample_nearest(s.x_test, DIGITS32_FACTOR), name="digits32")


BUILTIN_SHAPES = {(1, 8, 8): "digits", (1, 32, 32): "digits32"}


def builtin_for(shape) -> str | None:
    """The built-in data set whose images have this (C, H, W) shape, or None."""
    return BUILTIN_SHAPES.get(tuple(int(v) for v in shape))


def load_data(ref: str, *, act_bits: int = 8) -> Split:
    """`digits`, `digits32` or a `.npz` file (`load_npz`)."""
    if ref == "digits":
        return load_digits_split(act_bits)
    if ref == "digits32":
        return load_digits32_split(act_bits)
    return load_npz(ref, act_bits=act_bits)


# -- a user's .npz ---------------------------------------------------------------------------------


def load_npz(path, *, act_bits: int = 8) -> Split:
    """A user's data set; every problem is a one-line TerwinError naming the file and the array.

    uint8 images: x = v / 255, input scale 1/255 (q = v exactly) when act_bits >= 8, else
    1/(2^act_bits − 1). Float images in [0, 1]: input scale 1/(2^act_bits − 1)."""
    where = str(path)
    arrays = {}
    with open_regular(path, what=".npz file") as (f, size):
        if size > MAX_NPZ_BYTES:
            raise TerwinError(f"{where}: {size:,} bytes, more than the limit of {MAX_NPZ_BYTES:,} for a data file")
        try:
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise TerwinError(f"{where}: not an .npz file (a zip of .npy arrays): {e}") from None
        with archive:
            members = {info.filename: info for info in archive.infolist()}
            names = sorted(n[:-4] if n.endswith(".npy") else n for n in members)
            extra = [n for n in names if n not in NPZ_ARRAYS]
            if extra:
                raise TerwinError(f"{where}: unexpected array {extra[0]!r} (an .npz holds exactly "
                                  f"{', '.join(NPZ_ARRAYS)})")
            for name in NPZ_ARRAYS:
                if f"{name}.npy" not in members:
                    raise TerwinError(f"{where}: no array {name!r} (an .npz holds exactly {', '.join(NPZ_ARRAYS)})")
                arrays[name] = _read_member(archive, f"{name}.npy", f"{where}: {name}")
    return split_from_arrays(arrays, where=where, act_bits=act_bits)


def _read_member(archive: zipfile.ZipFile, member: str, where: str) -> np.ndarray:
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            if dtype.hasobject:
                raise TerwinError(f"{where}: holds Python objects (pickles are never loaded); give numbers")
            if dtype.kind not in "uif" or dtype.itemsize > 8:
                raise TerwinError(f"{where}: dtype {dtype} is not an integer or float type")
            if not 1 <= len(shape) <= 4:
                raise TerwinError(f"{where}: {len(shape)} dimensions (shape {shape})")
            if shape[0] > MAX_IMAGES or math.prod(shape) > MAX_DATA_ELEMENTS:
                raise TerwinError(f"{where}: shape {shape} is larger than the limits ({MAX_IMAGES:,} images, "
                                  f"{MAX_DATA_ELEMENTS:,} values)")
            count = math.prod(shape)
            data = f.read(count * dtype.itemsize + 1)
    except TerwinError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise TerwinError(f"{where}: not a valid .npy array: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if len(data) != count * dtype.itemsize:
        raise TerwinError(f"{where}: {len(data):,} bytes of data, but shape {shape} of {dtype} needs "
                          f"{count * dtype.itemsize:,}")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def split_from_arrays(arrays, *, where: str = "data", act_bits: int = 8) -> Split:
    """A Split from the four arrays (a mapping with `NPZ_ARRAYS`' names, or a tuple in that order),
    checked like an .npz's (`load_npz`)."""
    if isinstance(arrays, (tuple, list)):
        if len(arrays) != len(NPZ_ARRAYS):
            raise TerwinError(f"{where}: give {len(NPZ_ARRAYS)} arrays ({', '.join(NPZ_ARRAYS)}), not {len(arrays)}")
        arrays = dict(zip(NPZ_ARRAYS, arrays))
    missing = [n for n in NPZ_ARRAYS if n not in arrays]
    if missing:
        raise TerwinError(f"{where}: no array {missing[0]!r} ({', '.join(NPZ_ARRAYS)} are needed)")
    arrays = {n: np.asarray(arrays[n]) for n in NPZ_ARRAYS}
    for name, a in arrays.items():
        if a.dtype.kind not in "uif":
            raise TerwinError(f"{where}: {name}: dtype {a.dtype} is not an integer or float type")

    xs = {}
    for name in ("x_train", "x_test"):
        x = arrays[name]
        at = f"{where}: {name}"
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise TerwinError(f"{at}: images must be N×H×W or N×C×H×W, not shape {x.shape}")
        if min(x.shape) < 1:
            raise TerwinError(f"{at}: empty (shape {x.shape})")
        if math.prod(x.shape[1:]) > MAX_IMAGE_ELEMENTS:
            raise TerwinError(f"{at}: one image has {math.prod(x.shape[1:]):,} values, more than {MAX_IMAGE_ELEMENTS:,}")
        if x.dtype == np.uint8:
            pass
        elif x.dtype.kind == "f":
            if not np.all(np.isfinite(x)):
                raise TerwinError(f"{at}: holds NaN or infinite values")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 1:
                raise TerwinError(f"{at}: float images must lie in [0, 1], not [{lo:g}, {hi:g}]")
        else:
            raise TerwinError(f"{at}: images must be uint8 (0-255) or float (0-1), not {x.dtype}")
        xs[name] = x
    if xs["x_train"].dtype != xs["x_test"].dtype:
        raise TerwinError(f"{where}: x_test: dtype {xs['x_test'].dtype} differs from x_train's {xs['x_train'].dtype}")
    if xs["x_train"].shape[1:] != xs["x_test"].shape[1:]:
        raise TerwinError(f"{where}: x_test: images of shape {xs['x_test'].shape[1:]} differ from x_train's "
                          f"{xs['x_train'].shape[1:]}")
    ys = {}
    for name, xname in (("y_train", "x_train"), ("y_test", "x_test")):
        y = arrays[name]
        at = f"{where}: {name}"
        if y.dtype.kind not in "iu":
            raise TerwinError(f"{at}: labels must be integers, not {y.dtype}")
        if y.ndim != 1 or len(y) != len(xs[xname]):
            raise TerwinError(f"{at}: shape {y.shape} must be ({len(xs[xname])},), one label per image of {xname}")
        if y.min() < 0 or y.max() >= MAX_CLASSES:
            raise TerwinError(f"{at}: labels must lie in 0..{MAX_CLASSES - 1}, not {int(y.min())}..{int(y.max())}")
        ys[name] = y.astype(np.int64)
    classes = int(max(ys["y_train"].max(), ys["y_test"].max())) + 1
    counts = np.bincount(ys["y_train"], minlength=classes)
    if classes < 2:
        raise TerwinError(f"{where}: y_train: a classifier needs at least 2 classes")
    if counts.min() < 2:
        c = int(np.argmin(counts))
        raise TerwinError(f"{where}: y_train: class {c} has {int(counts[c])} image(s); every class 0..{classes - 1} "
                          f"needs at least 2 (one may go to the validation split)")
    if xs["x_train"].dtype == np.uint8:
        scale = 1.0 / 255 if act_bits >= 8 else 1.0 / ((1 << act_bits) - 1)
        convert = lambda x: x.astype(np.float32) / np.float32(255)  # noqa: E731
    else:
        scale = 1.0 / ((1 << act_bits) - 1)
        convert = lambda x: x.astype(np.float32)  # noqa: E731
    return Split(np.ascontiguousarray(convert(xs["x_train"])), ys["y_train"],
                 np.ascontiguousarray(convert(xs["x_test"])), ys["y_test"], input_scale=scale,
                 class_names=tuple(str(i) for i in range(classes)), name=str(where))


# -- validation --------------------------------------------------------------------------------------

VALIDATION_FRACTION = 0.1


def validation_split(split: Split, *, fraction: float = VALIDATION_FRACTION, seed: int = 0) -> tuple[Split, tuple]:
    """(`split` with the validation images taken out of its training images, (x_val, y_val)):
    `fraction` of the training images, stratified by label, chosen by `seed`. The test images are
    untouched."""
    n = len(split.y_train)
    present = np.unique(split.y_train)
    n_val = max(len(present), int(round(fraction * n)))
    counts = np.bincount(split.y_train)
    if n - n_val < len(present) or counts[present].min() < 2:
        raise TerwinError(f"{split.name}: {n} training images are too few to set {n_val} aside for validation "
                          f"with every class on both sides (each class needs 2 or more)")
    x_tr, x_val, y_tr, y_val = train_test_split(split.x_train, split.y_train, test_size=n_val,
                                                stratify=split.y_train, random_state=seed)
    return replace(split, x_train=x_tr, y_train=y_tr), (x_val, y_val)


def first(split: Split, n: int | None) -> Split:
    """The first `n` training and the first `n` test images of `split` (all for None): small runs."""
    if n is None:
        return split
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise TerwinError(f"limit must be a positive number of images, not {n!r}")
    return replace(split, x_train=split.x_train[:n], y_train=split.y_train[:n], x_test=split.x_test[:n],
                   y_test=split.y_test[:n])


__all__ = ["Split", "INPUT_SCALE", "PIXEL_MAX", "BUILTIN", "NPZ_ARRAYS", "digits_input_scale", "load_digits_split", "load_digits32_split",
           "load_data", "load_npz", "split_from_arrays", "first", "upsample_nearest", "validation_split",
           "VALIDATION_FRACTION"]
