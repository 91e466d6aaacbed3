"""MedMNIST `.npz` files (PneumoniaMNIST, BreastMNIST): read with numpy, fetched on request.

Reading never needs the medmnist package. `fetch_medmnist` takes the file's URL and MD5 from
`medmnist.INFO` and downloads it itself (medmnist's own downloader needs torchvision).
"""

from __future__ import annotations

import contextlib
import hashlib
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dia.data.images import check_uint8_images, to_rgb_uint8
from dia.data.registry import DataError, DataMissing, DataOffline, get_spec
from dia.data.splits import DatasetSplits

FLAGS = {"pneumonia": "pneumoniamnist", "breast": "breastmnist"}
NORMAL_LABEL = {"pneumonia": 0, "breast": 1}  # BreastMNIST: 0 = malignant, 1 = normal + benign
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
VAL_KEYS = ("val_images", "val_labels")  # optional: read when the file has both


def npz_path(key: str, root: Path) -> Path:
    return root / "medmnist" / f"{FLAGS[key]}.npz"


def _refuse_non_file(path: Path, then: str) -> None:
    """A DataError when something that is not a file (a folder?) stands where `path` goes:
    BROKEN, not MISSING, for `dia data check`, and refused by fetching too."""
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a file (a folder?): move it away, then {then}")


def read_npz(key: str, root: Path) -> dict[str, np.ndarray]:
    """The arrays of one MedMNIST file, checked for the expected keys."""
    path = npz_path(key, root)
    _refuse_non_file(path, f"put the .npz there or run `dia data fetch`: {get_spec(key).source}")
    if not path.is_file():
        spec = get_spec(key)
        raise DataMissing(
            f"missing {path}; expected {spec.layout} under {root}. Get it: {spec.source}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot read {path}: not a zip archive, as a .npz file is; "
                        f"delete it and get it again: {get_spec(key).source}")
    try:
        with np.load(path) as npz:
            missing = [name for name in KEYS if name not in npz.files]
            if missing:
                raise DataError(
                    f"{path} lacks the key(s) {', '.join(missing)}; a MedMNIST file has "
                    f"{', '.join(KEYS)} (and val_*); it holds {', '.join(npz.files)}"
                )
            has_val = all(name in npz.files for name in VAL_KEYS)
            arrays = {name: npz[name] for name in KEYS + (VAL_KEYS if has_val else ())}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as err:
        # zlib.error: a whole zip whose compressed bytes are damaged (a bad copy or download)
        raise DataError(f"cannot read {path}: {err}; expected a MedMNIST .npz file: delete it "
                        f"and get it again: {get_spec(key).source}") from err
    for split in ("train", "test", "val") if has_val else ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
        check_uint8_images(images, f"{path}: {split}_images")
        if len(labels) != len(images):
            raise DataError(f"{path}: {split}_images and {split}_labels counts differ "
                            f"({len(images)} against {len(labels)}); a MedMNIST file has one "
                            "label per image")
        others = np.setdiff1d(labels, (0, 1))  # else they would count as anomalous, silently
        if others.size:
            raise DataError(f"{path}: {split}_labels hold {', '.join(map(str, others[:5]))}, "
                            "besides 0 and 1 of a two-class MedMNIST file: delete it and get it "
                            f"again: {get_spec(key).source}")
    return arrays


def load_medmnist(key: str, root: Path, size: int = 28) -> DatasetSplits:
    """Official splits; train = training-split normals, pool = training anomalies, val = val."""
    arrays = read_npz(key, root)
    path = npz_path(key, root)
    normal = NORMAL_LABEL[key]
    train_images, train_labels = _split(arrays, "train", size, path)
    test_images, test_labels = _split(arrays, "test", size, path)
    is_normal = train_labels == normal
    anomalous_test = (test_labels != normal).astype(np.int64)
    train_idx, pool_idx = np.flatnonzero(is_normal), np.flatnonzero(~is_normal)
    import torch

    val = {}
    if "val_images" in arrays:
        val_images, val_labels = _split(arrays, "val", size, path)
        val = dict(val=val_images,
                   val_labels=torch.from_numpy((val_labels != normal).astype(np.int64)),
                   val_ids=[f"val_{i}" for i in range(len(val_labels))])
    return DatasetSplits(
        key=key,
        image_size=size,
        train=train_images[train_idx],
        train_ids=[f"train_{i}" for i in train_idx],
        test=test_images,
        test_labels=torch.from_numpy(anomalous_test),
        test_ids=[f"test_{i}" for i in range(len(test_labels))],
        pool=train_images[pool_idx],
        pool_labels=torch.ones(len(pool_idx), dtype=torch.int64),
        pool_ids=[f"train_{i}" for i in pool_idx],
        **val,
    )


def _split(arrays: dict[str, np.ndarray], name: str, size: int, path: Path):
    """(uint8 RGB images, int64 labels) of one split (`read_npz` checked their counts)."""
    labels = arrays[f"{name}_labels"].reshape(-1).astype(np.int64)
    return to_rgb_uint8(arrays[f"{name}_images"], size, f"{path}: {name}_images"), labels


def count_medmnist(key: str, root: Path) -> dict[str, int]:
    arrays = read_npz(key, root)
    normal = NORMAL_LABEL[key]
    train = arrays["train_labels"].reshape(-1)
    test = arrays["test_labels"].reshape(-1)
    val = arrays["val_labels"].reshape(-1) if "val_labels" in arrays else np.empty(0)
    return {
        "train_normal": int((train == normal).sum()),
        "test_normal": int((test == normal).sum()),
        "test_anomalous": int((test != normal).sum()),
        "pool_anomalous": int((train != normal).sum()),
        "val_normal": int((val == normal).sum()),
        "val_anomalous": int((val != normal).sum()),
    }


def fetch_medmnist(key: str, root: Path, *, timeout: float = 30.0) -> Path:
    """Download the 28x28 `.npz` of `key` into `<root>/medmnist/` unless present, checking its MD5.

    Raises:
        DataError: when medmnist is not installed, the machine is offline, or the MD5 differs.
    """
    if key not in FLAGS:
        raise DataError(f"only {', '.join(FLAGS)} can be downloaded; {key!r} cannot (see `dia data check`)")
    try:
        from medmnist import INFO
    except ImportError as err:
        raise DataError("medmnist is not installed: pip install --no-deps medmnist==3.0.2") from err
    info = INFO[FLAGS[key]]
    target = npz_path(key, root)
    if target.is_file():  # never overwrite a file the user put there (it may be a rebuilt copy)
        return target
    _refuse_non_file(target, "fetch again")
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as err:
        raise DataError(f"cannot make the folder {target.parent} for {target.name} ({err}): "
                        "give a data root you can write to") from err
    except OSError as err:  # a file where the folder or the data root should be
        raise DataError(f"cannot make the folder {target.parent} for {target.name} ({err}): "
                        "a file stands in its way, or the data root is not a folder") from err
    tmp = target.with_suffix(".npz.part")
    try:
        with urllib.request.urlopen(info["url"], timeout=timeout) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        tmp.unlink(missing_ok=True)
        for folder in made:  # leave none of the folders made for it (rmdir keeps a non-empty one)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise DataOffline(
            f"cannot download {info['url']} ({err}); this machine looks offline. Copy "
            f"{FLAGS[key]}.npz (MD5 {info['MD5']}) to {target} by hand."
        ) from err
    if _md5(tmp) != info["MD5"]:
        tmp.unlink(missing_ok=True)
        raise DataError(f"the download of {info['url']} has the wrong MD5; try again")
    tmp.replace(target)
    return target


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
