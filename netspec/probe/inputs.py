"""Inputs for probing, read and preprocessed the way the net reads them.

An input is named as
- an image file (PNG, JPEG, ...): decoded to the net's channels and resized to its input size;
- ``SOURCE:INDEX``: record INDEX of a data source (a built-in dataset split such as
  ``fashion-mnist:test``, or a file or folder a Data layer could read);
- ``test:INDEX`` / ``train:INDEX``: record INDEX of the source the net's own TEST (TRAIN) data
  layer reads.
A set of inputs (``netspec adversarial --images``) is ``SOURCE[:N]``, ``test[:N]`` or
``train[:N]``: the first N records, in order.  Records go through the net's preprocessing
(a centred crop, then ``(raw - mean) * scale``), so the arrays returned are what the net reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netspec.errors import DataError, NetspecError, SpecError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_INDEXED = re.compile(r"^(.*):(\d+)$")


@dataclass
class Inputs:
    """Preprocessed samples with their labels (-1 where none) and where each came from."""

    x: np.ndarray             # (n, *sample_shape), float32, in the net's input units
    labels: np.ndarray        # (n,) int64
    names: list[str]


def open_records(model, source: str | None = None, option: str = "--input"):
    """The Source of ``source`` (default: the net's TEST data source), read with the data
    layer's options (channels, image size, CSV label column)."""
    from dataclasses import replace

    from netspec.data.sources import Options, open_source

    if source is None:
        source = model.source
        if source is None:
            raise SpecError(f"{option}: the net has no TEST data layer to take records from; name a dataset "
                            f"(fashion-mnist:test:0) or an image file", file=model.spec.file)
    opts = model.source_options if source == model.source and model.source_options is not None else Options()
    opts = replace(opts, need_labels=False)
    base = model.source_base if model.source_base is not None else model.spec.base_dir
    return open_source(source, base, opts)


def _phase_source(model, phase: str, option: str) -> str:
    if phase == "test":
        if model.source is None:
            raise SpecError(f"{option}: the net has no TEST data layer with a source", file=model.spec.file)
        return model.source
    from netspec.core.layer import layer_class
    from netspec.graph.state import filter_net, stage_sets

    train = filter_net(model.spec, "TRAIN", None, stage_sets(model.spec, "TRAIN")[0])
    for l in train.layers:
        if layer_class(l["type"]).is_data and model.input in l["top"] and "source" in l:
            return l["source"]
    raise SpecError(f"{option}: the net has no TRAIN data layer with a source", file=model.spec.file)


def _source_of(model, name: str, option: str) -> str:
    """The source an argument names; a file path given on the command line is relative to the
    working folder (the net's own sources are relative to the net file, as in the net)."""
    if name in ("test", "train"):
        return _phase_source(model, name, option)
    from netspec.data import catalog

    if name.partition(":")[0] in catalog.BUILTINS or name.startswith("memory:"):
        return name
    return str(Path(name).expanduser().absolute())


def read(model, source: str, index: np.ndarray, option: str) -> Inputs:
    """Records ``index`` of ``source``, preprocessed."""
    try:
        src = open_records(model, source, option)
    except NetspecError as e:
        raise type(e)(f"{option}: {e.message}", file=e.file, line=e.line) from None
    if len(index) and (index.max() >= src.size or index.min() < 0):
        raise DataError(f"{option}: '{source}' has {src.size} records (0..{src.size - 1}); record "
                        f"{int(index.max())} does not exist")
    data = np.empty((len(index),) + tuple(src.shapes[0]), dtype=src.dtypes[0])
    outs = [data]
    labels = np.full(len(index), -1, dtype=np.int64)
    if "label" in src.fields:
        lab = np.empty((len(index),) + tuple(src.shapes[1]), dtype=src.dtypes[1])
        outs.append(lab)
    src.read(index, outs)
    if len(outs) > 1:
        labels = outs[1].reshape(len(index), -1)[:, 0].astype(np.int64)
    x = prepare(model, data.astype(np.float32), option, source)
    return Inputs(x, labels, [f"{source}:{int(i)}" for i in index])


def prepare(model, raw: np.ndarray, option: str, where: str) -> np.ndarray:
    """Raw samples (n, ...) -> the net's input: centred crop, then mean and scale."""
    c = model.prep.crop
    if c and raw.ndim == 4 and (raw.shape[2] > c or raw.shape[3] > c):
        h0, w0 = (raw.shape[2] - c) // 2, (raw.shape[3] - c) // 2
        raw = raw[:, :, h0:h0 + c, w0:w0 + c]
    want = tuple(model.sample_shape)
    if raw[0].size != int(np.prod(want)):
        raise DataError(f"{option}: the samples of '{where}' have shape {list(raw.shape[1:])}, but the net "
                        f"reads {list(want)}")
    return model.prep.apply(raw.reshape((len(raw),) + want))


def load_input(model, text: str, option: str = "--input") -> Inputs:
    """One input: an image file, ``SOURCE:INDEX``, ``test:INDEX`` or ``train:INDEX``."""
    p = Path(text).expanduser()
    if p.suffix.lower() in IMAGE_SUFFIXES or (p.is_file() and not _INDEXED.match(text)):
        return _image(model, p, option)
    m = _INDEXED.match(text)
    if not m:
        raise SpecError(f"{option} '{text}': give an image file, SOURCE:INDEX (fashion-mnist:test:7) or "
                        f"test:INDEX (the net's own TEST data)")
    return read(model, _source_of(model, m.group(1), option), np.array([int(m.group(2))]), option)


def load_set(model, text: str, default: int, option: str = "--images") -> Inputs:
    """The first N records of ``SOURCE[:N]`` (``test[:N]``, ``train[:N]``); N defaults to ``default``."""
    m = _INDEXED.match(text)
    source, n = (m.group(1), int(m.group(2))) if m else (text, default)
    if n < 1:
        raise SpecError(f"{option} '{text}': the number of images must be at least 1")
    source = _source_of(model, source, option)
    src = open_records(model, source, option)
    n = min(n, src.size)
    return read(model, source, np.arange(n), option)


def _image(model, path: Path, option: str) -> Inputs:
    from netspec.data.images import decode

    shape = model.sample_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise SpecError(f"{option}: an image file needs a net that reads images (1 or 3 channels, H, W); this "
                        f"one reads {list(shape)}", file=str(path))
    raw = decode(path, shape[0], (shape[1], shape[2]), where=option)
    if raw.shape != tuple(shape):    # pragma: no cover - decode resizes to the size asked for
        raise DataError(f"{option}: image '{path}' decodes to {list(raw.shape)}, the net reads {list(shape)}")
    # the crop is for records larger than the net's input; a file is resized to the input itself
    x = model.prep.apply(raw[None].astype(np.float32))
    return Inputs(x, np.array([-1]), [str(path)])


def mean_image(model, count: int = 1000) -> np.ndarray:
    """The mean of the first ``count`` records of the TEST source (the start of 'mean' ascents);
    the middle of the data range when the net has no source."""
    if model.source is None:
        mid = 0.0 if not model.has_range else (model.lo + model.hi) / 2
        return np.full(model.sample_shape, mid, dtype=np.float32)
    src = open_records(model)
    k = min(count, src.size)
    return read(model, model.source, np.arange(k), "--start mean").x.mean(axis=0)
