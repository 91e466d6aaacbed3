"""Decode image files into uint8 RGB tensors, with errors that name the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dia.data.registry import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; an error if none."""
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


# The first bytes of each format IMAGE_SUFFIXES names (PNG, JPEG, BMP, TIFF little / big endian).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")


def unreadable_images(paths: Sequence[Path]) -> list[Path]:
    """The files among `paths` that cannot be images: absent, empty, or not starting as a PNG,
    JPEG, BMP or TIFF does. Reads 8 bytes of each (about 20 µs a file); a file cut short
    further on is found only when decoded (`read_image`)."""
    bad = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
        except OSError:
            head = b""
        if not head.startswith(SIGNATURES):
            bad.append(path)
    return bad


def read_image(path: Path, size: int) -> np.ndarray:
    """One file as uint8 (3, size, size): RGB, bilinear resize, aspect ratio not kept."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError as err:
        raise DataError(f"image {path} does not exist") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"cannot decode image {path}: {err}; expected a whole PNG, JPEG, BMP or "
                        "TIFF file: replace it from the dataset's archive and run the same "
                        "command again (`dia data check` reads only the files' headers)") from err
    return array.transpose(2, 0, 1)


def read_images(paths: Sequence[Path], size: int, *, desc: str = "images") -> torch.Tensor:
    """Many files as uint8 (N, 3, size, size), with a progress bar."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=f"decode {desc}", unit="img", leave=False)):
        out[i] = read_image(path, size)
    return torch.from_numpy(out)


def check_uint8_images(images: np.ndarray, source: str) -> None:
    """A DataError unless `images` is uint8 (N, H, W), (N, H, W, 1) or (N, H, W, 3) with H = W."""
    if (images.dtype != np.uint8 or images.ndim not in (3, 4)
            or (images.ndim == 4 and images.shape[-1] not in (1, 3))):
        raise DataError(
            f"{source}: expected uint8 images of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), "
            f"got {images.dtype} {images.shape}"
        )
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{source}: expected square images (MedMNIST's are), got "
                        f"{images.shape[1]}×{images.shape[2]} in shape {images.shape}")
    if images.shape[1] == 0:
        raise DataError(f"{source}: expected images of at least 1×1 pixels, got shape "
                        f"{images.shape}")


def to_rgb_uint8(images: np.ndarray, size: int, source: str) -> torch.Tensor:
    """MedMNIST-style arrays (`check_uint8_images`) as uint8 (N, 3, size, size)."""
    check_uint8_images(images, source)
    if images.ndim == 4 and images.shape[-1] == 1:  # gray with its channel axis kept
        images = images[..., 0]
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.unsqueeze(1).expand(-1, 3, -1, -1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    if tensor.shape[-1] != size:
        resized = torch.nn.functional.interpolate(
            tensor.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        tensor = resized.round().clamp(0, 255).to(torch.uint8)
    return tensor.contiguous()
