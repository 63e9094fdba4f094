"""Fashion-MNIST from the official IDX gzip files: images scaled to [0, 1], shape (N, 28, 28).

Two modes, picked by ``data.normal_classes``:

* unset (the seed experiment): train on every training image, score every test image; which
  test images are anomalies is unknown, so ``test_labels`` is None.
* a class or list of classes (one-class mode): train on those classes only; a test image is an
  anomaly (label 1) when its class is not among them.

``data.val_on_test=True`` validates on the test set (the seed's ``validation_data``) instead of a
held-out slice of the training set.

Score mode (``data.score_only``, set by ``research.score`` with new files in ``data.path``): every image
of the IDX image files given (``*-images-idx3-ubyte`` or ``.gz``; a folder gives its image files) in the
test split, in file order, labelled from the labels file beside each (``*-labels-idx1-ubyte[.gz]``)
when the run has normal classes; see :func:`score_files`.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np
from ml_collections.config_dict import placeholder

from research.config import with_defaults
from research.data import Dataset, limit_rows
from research.data.sources import describe, expand
from research.errors import InputError
from research.paths import dataset_dir

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SHORT_NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: pathlib.Path, ndim: int | None = None) -> np.ndarray:
    """The array stored in an IDX file, gzipped when its name ends in ``.gz``; every malformed case is a
    one-line InputError."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 4:
        raise InputError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, type_code, dims = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_TYPES or dims == 0:
        raise InputError(f"{path}: bad IDX magic number 0x{raw[:4].hex()}, not an IDX file (Fashion-MNIST "
                         "images are IDX files such as t10k-images-idx3-ubyte.gz)")
    if ndim is not None and dims != ndim:
        raise InputError(f"{path}: expected a {ndim}-dimensional IDX array, the header says {dims}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise InputError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise InputError(f"{path}: header shape {shape} needs {expected} data bytes, found {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_split(folder: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] as float32 ``(N, 28, 28)`` and integer labels ``(N,)`` of ``train`` or ``test``."""
    image_path, label_path = (pathlib.Path(folder) / name for name in FILES[split])
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise InputError(f"{image_path}: expected 28x28 uint8 images, found {images.shape[1:]} {images.dtype}")
    if len(labels) != len(images):
        raise InputError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path.name}")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise InputError(f"{label_path}: label {int(labels.max())} outside 0..{len(CLASS_NAMES) - 1}")
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


DEFAULTS = {
    "normal_classes": placeholder(tuple),  # class numbers trained as normal; None = all ten (the seed's unlabelled mode)
    "val_on_test": False,  # validate on the test set (the seed's validation_data=(x_test, x_test))
    "classes": tuple(range(10)),  # one_class runner: the classes that each get a one-class model
    "val_rows": 500,  # one_class runner with val_fraction 0: training images per class monitored as validation
}

def folder_of(cfg) -> pathlib.Path:
    return pathlib.Path(cfg.path or dataset_dir("fashion_mnist", cfg.root))


def normal_classes(cfg) -> tuple[int, ...] | None:
    """The configured normal classes (None = seed mode), validated."""
    value = cfg.normal_classes
    if value is None:
        return None
    classes = (int(value),) if np.isscalar(value) else tuple(int(c) for c in value)
    bad = [c for c in classes if not 0 <= c < len(CLASS_NAMES)]
    if not classes or bad:
        raise InputError(f"config key data.normal_classes: {value!r} must name classes in 0..{len(CLASS_NAMES) - 1}")
    return classes


IMAGE_SUFFIXES = ("idx3-ubyte", "idx3-ubyte.gz")  # what a folder in data.path gives in score mode
SPLIT_PREFIXES = {"t10k": "test", "train": "train"}  # file-name prefix -> the id prefix a run writes


def labels_file(image_path: pathlib.Path) -> pathlib.Path | None:
    """The labels file beside an image file (``X-images-idx3-ubyte[.gz]`` -> ``X-labels-idx1-ubyte[.gz]``,
    compressed or not), or None."""
    name = image_path.name
    if "images-idx3" not in name:
        return None
    stem = name.replace("images-idx3", "labels-idx1").removesuffix(".gz")
    return next((image_path.with_name(n) for n in (stem + ".gz", stem) if image_path.with_name(n).is_file()), None)


def id_prefix(image_path: pathlib.Path) -> str:
    """``test`` for ``t10k-images-…``, ``train`` for ``train-images-…`` (the run's own ids), else the
    file's name before ``-images``/``-idx3`` and an underscore."""
    stem = image_path.name.split("-images")[0].split("-idx3")[0]
    return SPLIT_PREFIXES.get(stem, stem + "_")


def score_files(cfg) -> Dataset:
    """``research.score``: every image of the IDX image files of ``data.path`` (files, folders or globs),
    in file order, into the test split, scaled to [0, 1] as in training. The ids are the run's own
    (``test00042_boot`` for the 43rd image of ``t10k-images-idx3-ubyte``; ``<split><index>`` with the class
    name when a labels file lies beside the images). Labels (1 = a class not among the run's
    ``data.normal_classes``) when the run has normal classes and every file has its labels file. Images of
    another size are read as they are: scoring names both shapes."""
    classes = normal_classes(cfg)
    xs, ys, ids = [], [], []
    for path in expand(cfg.path, IMAGE_SUFFIXES):
        images = read_idx(path, ndim=3)
        if images.dtype != np.uint8:
            raise InputError(f"{path}: expected uint8 pixels (0..255) as in Fashion-MNIST, found {images.dtype}")
        label_path = labels_file(path)
        labels = None
        if label_path is not None:
            labels = read_idx(label_path, ndim=1)
            if len(labels) != len(images):
                raise InputError(f"{label_path}: {len(labels)} labels for {len(images)} images in {path.name}")
            if labels.size and labels.max() >= len(CLASS_NAMES):
                raise InputError(f"{label_path}: label {int(labels.max())} outside 0..{len(CLASS_NAMES) - 1}")
        prefix = id_prefix(path)
        ids += [f"{prefix}{i:05d}" + ("" if labels is None else f"_{SHORT_NAMES[labels[i]]}")
                for i in range(len(images))]
        xs.append(images.astype(np.float32) / 255.0)
        ys.append(labels)
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        raise InputError(f"{describe(cfg.path)}: images of several sizes {sorted(shapes)}; score one size at a time")
    x = np.concatenate(xs)
    labelled = classes is not None and all(y is not None for y in ys)
    test_labels = (~np.isin(np.concatenate(ys), classes)).astype(np.int32) if labelled else None
    return Dataset(train={"x": np.zeros((0, *x.shape[1:]), np.float32)}, test={"x": x}, test_labels=test_labels,
                   test_ids=ids, kind="image", axis_label="pixel",
                   meta={"path": describe(cfg.path), "class_names": list(CLASS_NAMES), "n_test": len(ids),
                         "normal_classes": None if classes is None else list(classes), "score_only": True})


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    if cfg.score_only and cfg.path:
        return score_files(cfg)
    folder = folder_of(cfg)
    train_x, train_y = read_split(folder, "train")
    test_x, test_y = read_split(folder, "test")
    classes = normal_classes(cfg)
    if classes is not None:
        keep = np.isin(train_y, classes)
        train_x, train_y = train_x[keep], train_y[keep]
    limit = cfg.limit or 0
    train = limit_rows({"x": train_x, "y": train_y}, limit)
    test = limit_rows({"x": test_x, "y": test_y, "i": np.arange(len(test_x))}, limit)
    test_labels = None if classes is None else (~np.isin(test["y"], classes)).astype(np.int32)
    ds = Dataset(
        train={"x": train["x"]},
        test={"x": test["x"]},
        test_labels=test_labels,
        test_ids=[f"test{i:05d}_{SHORT_NAMES[y]}" for i, y in zip(test["i"], test["y"])],
        kind="image",
        axis_label="pixel",
        meta={"folder": str(folder), "class_names": list(CLASS_NAMES),
              "normal_classes": None if classes is None else list(classes),
              "n_train": int(len(train["x"])), "n_test": int(len(test["x"])),
              "test_class_counts": np.bincount(test["y"], minlength=len(CLASS_NAMES)).tolist()},
    )
    if cfg.val_on_test:
        ds.val = dict(ds.test)
    return ds
