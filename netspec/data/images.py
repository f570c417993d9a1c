"""Image files as records: class folders, Caffe image lists, headers and decoding (Pillow).

An image folder holds one sub-folder per class; the sorted sub-folder names are the class
indices and each class's files are read in sorted order.  An image list is Caffe's ImageData
text file: ``path label`` per line, the label after the last run of whitespace (paths may
contain spaces).  Decoding gives (C, H, W) uint8 arrays, C = 1 (grey) or 3 (RGB, or BGR as
Caffe's OpenCV decodes when asked).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from netspec.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")

_LIST_LINE = re.compile(r"^(.*\S)\s+(\S+)$")


def list_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image path, class index)]) of an image folder, class by class."""
    if (root / "data.mdb").exists():
        raise DataError(f"'{root}' is an LMDB database, which netspec does not read; export the records "
                        f"to an .npz file (arrays data and label) or an image folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"image folder '{root}' has no class sub-folders (one folder per class, e.g. "
                        f"{root}/cat/1.png)")
    items: list[tuple[Path, int]] = []
    for k, c in enumerate(classes):
        files = sorted(f for f in (root / c).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
        items.extend((f, k) for f in files)
    if not items:
        raise DataError(f"image folder '{root}' has class folders but no images ({', '.join(IMAGE_EXTS)})")
    return classes, items


def parse_list(path: Path, root: Path) -> list[tuple[Path, int, int]]:
    """[(image path, label, line number)] of an image list; paths are relative to ``root``."""
    if not path.is_file():
        raise DataError(f"image list '{path}' does not exist")
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = _LIST_LINE.match(line)
            if m is None:
                raise DataError(f"{path}:{lineno}: expected 'path label', got '{line}'")
            name, label = m.group(1), m.group(2)
            try:
                value = int(label)
            except ValueError:
                raise DataError(f"{path}:{lineno}: the label '{label}' is not an integer class index") from None
            if value > 2**31 - 1:
                raise DataError(f"{path}:{lineno}: the label {label} is too large for a class index")
            if value < 0:
                raise DataError(f"{path}:{lineno}: the label {value} is negative; labels are class indices 0, 1, ...")
            p = Path(name)
            out.append((p if p.is_absolute() else root / p, value, lineno))
    if not out:
        raise DataError(f"image list '{path}' lists no images")
    return out


# Pillow's decoders raise many kinds of exception for a damaged file (SyntaxError, struct.error,
# IndexError, ...); every one of them means "this image cannot be read", said with its path.
MAX_DEFLATE_RATIO = 1100   # no image codec packs pixels tighter than deflate's ~1032:1 on flat areas


def _open(path: Path, where: str | None):
    from PIL import Image

    at = f" ({where})" if where else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"image '{path}'{at} does not exist") from None
    except (Exception, Image.DecompressionBombWarning) as e:  # noqa: BLE001 - see above
        raise DataError(f"cannot read image '{path}'{at}: {e}") from None
    # refuse a header that declares more pixels than the file's bytes can encode, before the
    # pixels are allocated (a 100-byte PNG can declare 60000 x 60000)
    try:
        w, h = im.size
        raw = w * h * max(1, len(im.getbands()))
        size = path.stat().st_size
    except Exception as e:  # noqa: BLE001
        im.close()
        raise DataError(f"cannot read image '{path}'{at}: {e}") from None
    if raw > MAX_DEFLATE_RATIO * size + (1 << 20) or w <= 0 or h <= 0:
        im.close()
        raise DataError(f"image '{path}'{at} declares {w}x{h} pixels, which its {size} bytes cannot hold: the file "
                        f"is truncated or corrupt")
    return im


def image_header(path: Path, where: str | None = None) -> tuple[str, tuple[int, int]]:
    """(Pillow mode, (width, height)) without decoding the pixels."""
    with _open(path, where) as im:
        return im.mode, im.size


def decode(path: Path, channels: int, size: tuple[int, int] | None = None, bgr: bool = False,
           where: str | None = None):
    """The image as a (channels, H, W) uint8 array; resized (bilinear) to ``size`` = (H, W) if given."""
    import numpy as np
    from PIL import Image

    at = f" ({where})" if where else ""
    with _open(path, where) as im, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)    # Pillow's notes on damaged metadata: errors raise below
        try:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and (im.height, im.width) != tuple(size):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many kinds (see _open)
            raise DataError(f"cannot decode image '{path}'{at}: {e}") from None
    if a.ndim == 2:
        return a[None]
    a = a.transpose(2, 0, 1)
    return a[::-1] if bgr else a
