"""Cases for the data layers: Input, DummyData, Data, ImageData, HDF5Data.

They have no bottoms and no gradient; the contract test checks their schema, that forward
gives the planned shapes, and that float32 and float64 runs read the same batch.  The files
they read are written once, at import, into a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import gzip
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from . import Case

DIR = Path(tempfile.mkdtemp(prefix="netspec-data-cases-"))
atexit.register(shutil.rmtree, DIR, True)


def _files() -> dict[str, str]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 3, 6, 6), dtype=np.uint8)
    y = np.arange(10) % 4
    np.savez(DIR / "toy.npz", data=x, label=y)
    # IDX, gzipped: 7 grey 5x5 images and their labels
    g = rng.integers(0, 256, size=(7, 5, 5), dtype=np.uint8)
    with gzip.open(DIR / "toy-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 7, 5, 5) + g.tobytes())
    with gzip.open(DIR / "toy-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 7) + (np.arange(7) % 3).astype(np.uint8).tobytes())
    (DIR / "toy.csv").write_text("a,b,c,label\n" + "\n".join(f"{i},{i * 2},{i % 5},{i % 2}" for i in range(9)) + "\n")
    from PIL import Image

    lines = []
    for c in ("cat", "dog"):
        (DIR / "folder" / c).mkdir(parents=True)
        for i in range(3):
            img = rng.integers(0, 256, size=(8, 7, 3), dtype=np.uint8)
            Image.fromarray(img).save(DIR / "folder" / c / f"{i}.png")
            lines.append(f"folder/{c}/{i}.png {int(c == 'dog')}")
    (DIR / "list.txt").write_text("\n".join(lines) + "\n")
    try:
        import h5py
    except ImportError:
        return {}
    names = []
    for k, n in enumerate((4, 3)):
        with h5py.File(DIR / f"part{k}.h5", "w") as f:
            f["data"] = rng.normal(size=(n, 2, 3)).astype(np.float32)
            f["label"] = (np.arange(n) % 2).astype(np.float32)
        names.append(f"part{k}.h5")
    (DIR / "h5.txt").write_text("\n".join(names) + "\n")
    return {"h5": str(DIR / "h5.txt")}


_EXTRA = _files()
NPZ, IDX, CSV = str(DIR / "toy.npz"), str(DIR / "toy-images-idx3-ubyte.gz"), str(DIR / "toy.csv")
FOLDER, LIST = str(DIR / "folder"), str(DIR / "list.txt")


def none(rng):
    return []


def data(fields: dict, phase: str = "TRAIN", id: str = "") -> Case:
    return Case(fields, none, phase=phase, grad=False, id=id)


CASES = [
    data({"type": "Input", "top": ["data", "label"], "shape": [[2, 3, 4, 4], [2]]}),
    data({"type": "DummyData", "top": ["data", "label"], "shape": [[2, 3, 4], [2]],
          "data_filler": [{"type": "gaussian", "std": 1.0}, {"type": "constant", "value": 1.0}]}),
    data({"type": "Data", "top": ["data", "label"], "source": NPZ, "batch_size": 4,
          "transform": {"crop_size": 4, "mirror": True, "mean_value": [10, 20, 30], "scale": 0.5}}, id="npz-train"),
    data({"type": "Data", "top": ["data", "label"], "source": NPZ, "batch_size": 3, "prefetch": 0,
          "transform": {"crop_size": 5, "mean_value": 100, "scale": 0.25}}, phase="TEST", id="npz-test-sync"),
    data({"type": "Data", "top": ["data", "label"], "source": NPZ, "batch_size": 4,
          "transform": {"crop_size": 4, "crop_scale": [0.3, 1.0], "rotate": 20, "brightness": 0.3,
                        "contrast": 0.3, "mirror": True, "scale": 0.01}}, id="augment"),
    data({"type": "Data", "top": ["data", "label"], "source": IDX, "batch_size": 5,
          "transform": {"scale": 0.00390625}}, id="idx"),
    data({"type": "Data", "top": ["data", "label"], "source": CSV, "batch_size": 4}, id="csv"),
    data({"type": "Data", "top": "data", "source": FOLDER, "batch_size": 4,
          "transform": {"crop_size": 6, "force_gray": True}}, phase="TEST", id="folder"),
    data({"type": "ImageData", "top": ["data", "label"], "source": LIST, "batch_size": 4, "new_height": 10,
          "new_width": 9, "transform": {"crop_size": 8, "mirror": True}}),
]
if _EXTRA:
    CASES.append(data({"type": "HDF5Data", "top": ["data", "label"], "source": _EXTRA["h5"], "batch_size": 5}))
