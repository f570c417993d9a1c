"""Layers without bottoms that bring data into the net: Input, DummyData, Data, ImageData, HDF5Data.

Shape inference reads only metadata (``netspec.data.catalog.probe``): a built-in dataset's
table or a file's header.  Loading records is the data pipeline's job (``netspec.data``): the
readers here open a source in ``setup``, make batches (records, transform) in a background
thread and copy them into their tops in ``forward``.
"""

from __future__ import annotations

import time
import weakref

import numpy as np

from netspec.core.layer import Layer, register
from netspec.errors import DataError, NetspecError, SpecError
from netspec.spec import types as T

def _pair(minimum: float, maximum: float | None, desc: str) -> dict:
    item = {"type": "number", "exclusiveMinimum": minimum}
    if maximum is not None:
        item["maximum"] = maximum
    return {"type": "array", "items": item, "minItems": 2, "maxItems": 2, "description": desc}


TRANSFORM = {
    "type": "object",
    "description": "preprocessing, in Caffe's order: crop, mirror, subtract mean, scale "
                   "(plus optional TRAIN-only augmentations: brightness, contrast, crop_scale, rotate)",
    "properties": {
        "scale": T.number(desc="multiply after subtracting the mean (e.g. 0.00390625 = 1/256)"),
        "mean_value": T.numbers(desc="one mean, or one per channel"),
        "mean_file": T.string(desc="a mean image (.npy, or Caffe .binaryproto) of the uncropped records"),
        "crop_size": T.integer(0, desc="square crop: random in TRAIN, centred in TEST"),
        "mirror": T.boolean(desc="random horizontal flips (in any phase, as in Caffe)"),
        "force_color": T.boolean(desc="decode images with 3 channels"),
        "force_gray": T.boolean(desc="decode images with 1 channel"),
        "brightness": T.number(0, 1, desc="TRAIN: multiply each image by U[1-b, 1+b] (default 0: off)"),
        "contrast": T.number(0, 1, desc="TRAIN: scale each image's deviation from its mean by U[1-c, 1+c] "
                                        "(default 0: off)"),
        "crop_scale": _pair(0, 1, "TRAIN: random resized crop, the box's share of the image area drawn from "
                                  "[lo, hi], resampled to crop_size (default: off; TEST: the centre crop)"),
        "crop_ratio": _pair(0, None, "aspect ratios (width/height) of crop_scale's box (default [0.75, 1.333])"),
        "rotate": T.number(0, 180, desc="TRAIN: rotate by an angle drawn from [-rotate, rotate] degrees "
                                        "(default 0: off)"),
    },
    "additionalProperties": False,
    "dependentRequired": {"crop_ratio": ["crop_scale"]},
    "allOf": [{"not": {"required": ["mean_value", "mean_file"]}},
              {"not": {"required": ["force_color", "force_gray"]}}],
}

DATA_PROPS = {
    "source": T.string(desc="a built-in dataset (fashion-mnist:train), memory:NAME, or a file or folder"),
    "batch_size": T.integer(1, desc="records per batch"),
    "shuffle": T.boolean(desc="reshuffle every epoch (default: true in TRAIN, false in TEST)"),
    "shape": T.shape("the shape of one sample (records of the same size are reshaped to it)"),
    "transform": TRANSFORM,
    "rand_skip": T.integer(0, desc="skip a random number (below this) of records at the start"),
    "prefetch": T.integer(0, default=4, desc="batches prepared ahead in a background thread (0: none; "
                                             "batches that take under 0.25 ms are made inline)"),
    "backend": T.enum(("LEVELDB", "LMDB"), desc="accepted for Caffe files; the source decides the format"),
    "label_column": {"type": ["integer", "string", "null"],
                     "description": "CSV: the label's column, an index or a header name (default -1, the last; "
                                    "null: no labels)"},
    "channel_order": T.enum(("RGB", "BGR"), desc="colour images: channel order (default RGB; Caffe's OpenCV "
                                                 "gives BGR)"),
}


def _shape_list(layer, field: str, ntop: int):
    """Caffe's 'one shape for all tops, or one per top' rule."""
    v = layer.p.get(field)
    if v is None:
        return None
    if all(isinstance(d, int) for d in v):
        shapes = [tuple(v)] * ntop
    elif all(isinstance(d, list) for d in v):
        shapes = [tuple(s) for s in v]
        if len(shapes) == 1:
            shapes = shapes * ntop
    else:
        raise layer.error("give one shape (a list of ints) or a list of shapes", field, cls=SpecError)
    if len(shapes) != ntop:
        raise layer.error(f"gives {len(shapes)} shapes for {ntop} tops; give one shape or one per top", field)
    for s in shapes:
        if any(d < 1 for d in s):
            raise layer.error(f"shape {list(s)} has a dimension below 1", field)
    return shapes


@register("Input")
class Input(Layer):
    """Net inputs fed by the caller (the deploy net's entry point).

    Example::

        {name: data, type: Input, top: data, shape: [64, 1, 28, 28]}
    """

    num_bottom = 0
    num_top = (1, None)
    schema = {"properties": {"shape": T.shapes("one shape for every top, or one per top")},
              "required": ["shape"]}

    def reshape(self, bottom_shapes):
        return _shape_list(self, "shape", len(self.p["top"]))

    def forward(self, bottom, top):
        """Nothing: the caller writes the input blobs (``Net.set_input``)."""

    def backward(self, top, propagate_down, bottom):
        """Nothing: inputs have no producer."""


@register("DummyData")
class DummyData(Layer):
    """Tops filled by fillers: constant ones once, random ones on every forward.

    Example::

        {name: data, type: DummyData, top: [data, label], shape: [[64, 3, 32, 32], [64]],
         data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
    """

    num_bottom = 0
    num_top = (1, None)
    schema = {"properties": {
        "shape": T.shapes("one shape for every top, or one per top"),
        "data_filler": {"type": ["object", "array"], "items": T.ref("filler"),
                        "properties": T.DEFS["filler"]["properties"], "additionalProperties": False,
                        "description": "one filler for every top, or one per top (default constant 0)"},
    }, "required": ["shape"]}

    @classmethod
    def normalize(cls, fields):
        f = dict(fields)
        if isinstance(f.get("data_filler"), dict):
            f["data_filler"] = [f["data_filler"]]
        return f

    def reshape(self, bottom_shapes):
        n = len(self.p["top"])
        fills = self.p.get("data_filler", [])
        if len(fills) not in (0, 1, n):
            raise self.error(f"gives {len(fills)} fillers for {n} tops; give none, one, or one per top",
                             "data_filler")
        return _shape_list(self, "shape", n)

    def setup(self, bottom, top):
        from netspec.core.fillers import fill

        fills = list(self.p.get("data_filler", []))
        if len(fills) == 1:
            fills = fills * len(top)
        self.fillers_by_top = fills or [{"type": "constant", "value": 0.0}] * len(top)
        # constant fillers are filled once; the others are drawn again on every forward
        self.refill = [f.get("type", "constant") != "constant" for f in self.fillers_by_top]
        self._staging = _Staging()
        for t, f in zip(top, self.fillers_by_top):
            self._fill(t, f)

    def _fill(self, t, f) -> None:
        """Fill top ``t`` by filler ``f`` on the host (the same draws whatever the device)."""
        from netspec.core.fillers import fill

        buf = self._staging.host(t.data)
        fill(buf, f, self.rng)
        self._staging.put(t.data, buf)

    def forward(self, bottom, top):
        for t, f, again in zip(top, self.fillers_by_top, self.refill):
            if again:
                self._fill(t, f)

    def backward(self, top, propagate_down, bottom):
        """Nothing: generated data has no producer."""


class _Staging:
    """Host arrays for tops that live on a device: batches are made on the host (NumPy, in
    pinned memory on a GPU) and copied in with ``copy_in``, one synchronous copy per top and
    batch.  A NumPy top is written directly, with no copy."""

    def __init__(self) -> None:
        self._bufs: dict[int, np.ndarray] = {}

    @staticmethod
    def is_host(a) -> bool:
        return type(a) is np.ndarray

    def host(self, a) -> np.ndarray:
        if self.is_host(a):
            return a
        key = id(a)
        buf = self._bufs.get(key)
        if buf is None or buf.shape != tuple(a.shape) or buf.dtype != a.dtype:
            from netspec.core.device import host_empty

            buf = self._bufs[key] = host_empty(tuple(a.shape), dtype=a.dtype)
        return buf

    def put(self, a, buf: np.ndarray) -> None:
        if buf is not a:
            from netspec.core.device import copy_in

            copy_in(a, buf)


#: a batch made in less than this many seconds is made inline in forward, not by the prefetch
#: thread: handing a batch over costs about that much (0.1 ms on a quiet machine, several ms
#: when the cores are oversubscribed and the woken thread holds the GIL)
INLINE_BELOW = 0.25e-3
TRIAL_BATCHES = 8   # batches taken from the thread before choosing between thread and inline


class _DataBase(Layer):
    """A dataset reader: tops (data, optional label); shapes from the source's metadata.

    Running: ``setup`` opens the source (a located DataError when it is missing or corrupt) and
    derives private seeds from the net's Generator; ``forward`` copies the next batch into the
    tops, made ahead by a background thread when ``prefetch`` > 0 (unless batches turn out
    cheaper to make than to hand over: then ``inline`` becomes true and forward makes them).  ``get_state``/``set_state``
    hold the cursor as of the last batch *consumed*; ``wait_seconds`` adds up the time forward
    waited for data; ``num_records`` is the epoch size; ``rewind()`` restarts the epoch.
    """

    num_bottom = 0
    num_top = (1, 2)
    is_data = True
    differentiable = False
    transforms = True       # the layer takes a ``transform`` field

    # ---- shape inference (no records read) ----------------------------------------------
    def sample_shape(self):
        """(sample shape, label shape) before the transform."""
        from netspec.data.catalog import probe

        if "shape" in self.p:
            return tuple(self.p["shape"]), ()
        try:
            info = probe(self.p["source"], self.base_dir, self.p.get("label_column", -1), self.p.get("root_folder"))
        except NetspecError as e:
            raise self.error(e.message, "source", cls=type(e)) from None
        shape = tuple(info.sample_shape)
        if info.extra.get("images"):
            size = self.image_size()
            shape = (self.image_channels(shape[0]),) + (size or shape[1:])
        return shape, info.label_shape

    def image_channels(self, native: int) -> int:
        t = self.p.get("transform") or {}
        if t.get("force_gray"):
            return 1
        if t.get("force_color"):
            return 3
        return native

    def image_size(self) -> tuple[int, int] | None:
        return None

    def transformed(self, shape):
        t = self.p.get("transform") or {}
        crop = t.get("crop_size", 0)
        spatial = [k for k in ("crop_size", "mirror", "rotate", "crop_scale") if t.get(k)]
        if spatial and len(shape) != 3:
            raise self.error(f"{spatial[0]} needs image samples (C, H, W), got {list(shape)}", "transform")
        if crop:
            if crop > shape[1] or crop > shape[2]:
                raise self.error(f"crop_size {crop} is larger than the images ({shape[1]}x{shape[2]})", "transform")
            shape = (shape[0], crop, crop)
        return tuple(shape)

    def reshape(self, bottom_shapes):
        sample, label = self.sample_shape()
        n = self.p["batch_size"]
        tops = [(n,) + self.transformed(sample)]
        if len(self.p["top"]) > 1:
            tops.append((n,) + tuple(label))
        return tops

    # ---- running ------------------------------------------------------------------------
    def source_options(self, ntop: int):
        from netspec.data.sources import Options

        return Options(need_labels=ntop > 1, label_column=self.p.get("label_column", -1),
                       shape=tuple(self.p["shape"]) if "shape" in self.p else None,
                       channels=self._decode_channels(), size=self.image_size(),
                       bgr=self.p.get("channel_order", "RGB") == "BGR", root_folder=self.p.get("root_folder"))

    def _decode_channels(self) -> int | None:
        t = self.p.get("transform") or {}
        return 1 if t.get("force_gray") else 3 if t.get("force_color") else None

    def open(self, ntop: int):
        """The Source (files are read here); errors carry this layer's location."""
        from netspec.data.sources import open_source

        return open_source(self.p["source"], self.base_dir, self.source_options(ntop))

    def setup(self, bottom, top):
        from netspec.data.reader import Cursor
        from netspec.data.transforms import Transform

        try:
            self.source = self.open(len(top))
        except DataError as e:
            raise self.error(e.message, "source", cls=DataError) from None
        self.transform = None
        if self.transforms:
            try:
                self.transform = Transform(self.p.get("transform"), self.phase, self.source.shapes[0],
                                           self.base_dir, self.source.dtypes[0] == np.uint8)
            except DataError as e:
                raise self.error(e.message, "transform", cls=DataError) from None
        self._check_shapes(top)
        self.num_records = self.source.size
        self.batch_size = self.p["batch_size"]
        self.shuffle = bool(self.p.get("shuffle", self.phase == "TRAIN"))
        self.depth = int(self.p.get("prefetch", 4))
        self.inline = self.depth == 0     # batches made in forward itself (see INLINE_BELOW)
        self._handed = 0                  # batches taken from the thread so far
        self.dtype = top[0].data.dtype
        # private seeds: prefetching never moves the net's Generator, which other layers share
        seeds = (self.rng if self.rng is not None else np.random.default_rng(0)).integers(0, 2**63 - 1, size=3)
        self.shuffle_seed, self.transform_seed = int(seeds[0]), int(seeds[1])
        skip = self.p.get("rand_skip", 0)
        # Caffe: skip = rand() % rand_skip records before the first batch
        start = int(np.random.Generator(np.random.PCG64(int(seeds[2]))).integers(0, skip)) if skip else 0
        self.part = (0, 1)                # (rank, ranks): this process's share of each batch
        self.reader = self._reader()
        self._cursor = Cursor(start // self.num_records, start % self.num_records, 0)
        self.wait_seconds = 0.0
        self._pipe = None
        self._finalizer = None
        self._staging = _Staging()

    def _reader(self):
        from netspec.data.reader import Reader

        return Reader(self.source, self.batch_size, self.shuffle, self.shuffle_seed, self.transform_seed,
                      self.transform, self.dtype, self.part)

    def shard(self, rank: int, size: int) -> None:
        """Data-parallel training: read part ``rank`` of ``size`` of every global batch of
        ``size * batch_size`` records (the cursor stays global; see ``netspec.data.reader``).
        Called before the first forward, and again after ``set_state``."""
        if (rank, size) == self.part:
            return
        self.close()
        self.part = (int(rank), int(size))
        self.reader = self._reader()

    def _check_shapes(self, top) -> None:
        want = [tuple(t.data.shape[1:]) for t in top]
        have = [self.transform.out_shape if self.transform is not None and k == 0 else tuple(s)
                for k, s in enumerate(self.source.shapes[:len(top)])]
        for k, (w, h) in enumerate(zip(want, have)):
            if w != h:
                raise self.error(f"the records of '{self.source.name}' give top '{self.p['top'][k]}' samples of shape "
                                 f"{list(h)}, but the net was planned with {list(w)}; give 'shape' to match",
                                 "source", cls=DataError)

    def forward(self, bottom, top):
        t0 = time.perf_counter()
        try:
            if self.inline:
                bufs = [self._staging.host(t.data) for t in top]
                self._cursor = self.reader.fill(bufs, self._cursor)
                for t, b in zip(top, bufs):
                    self._staging.put(t.data, b)
            else:
                self._take(top)
        except DataError as e:
            raise self.error(e.message, "source", cls=DataError) from None
        finally:
            self.wait_seconds += time.perf_counter() - t0
        if not self.inline and self._handed == TRIAL_BATCHES:
            self._trial()

    def _take(self, top) -> None:
        """Copy the thread's next batch into the tops (starting the thread when there is none)."""
        from netspec.data.prefetch import Prefetcher

        if self._pipe is None:
            from netspec.core.device import CPU, current

            shapes = [(t.data.shape, t.data.dtype) for t in top]
            # the thread makes batches in pinned memory when the tops are on a GPU
            dev = CPU if all(self._staging.is_host(t.data) for t in top) else current()
            self._pipe = Prefetcher(self._reader(), self._cursor, self.depth,
                                    lambda: [dev.host_empty(s, d) for s, d in shapes])
            # stops the thread if the layer is dropped without close()
            self._finalizer = weakref.finalize(self, self._pipe.stop)
        slot, bufs, cursor = self._pipe.get()
        for t, b in zip(top, bufs):
            if self._staging.is_host(t.data):
                np.copyto(t.data, b)
            else:
                from netspec.core.device import copy_in

                copy_in(t.data, b)
        self._pipe.release(slot)
        self._cursor = cursor
        self._handed += 1

    def _trial(self) -> None:
        """After TRIAL_BATCHES from the thread, keep it only for batches that take long to make:
        a cheap batch costs less to make than to take from the thread (waking a thread that
        then holds the GIL can stall the step for milliseconds on busy cores).  Inline reading
        starts from the consumed cursor; the batches made ahead are dropped; the stream stays
        the same.  The rule uses the batch cost alone, which a busy machine distorts less than
        it distorts timings of the hand-over."""
        if self._handed < TRIAL_BATCHES:
            return
        if float(np.median(self._pipe.fill_times[:TRIAL_BATCHES])) < INLINE_BELOW:
            self.close()
            self.inline = True

    def backward(self, top, propagate_down, bottom):
        """Nothing: data has no producer."""

    # ---- resumable state ----------------------------------------------------------------
    def get_state(self) -> dict:
        c = self._cursor
        return {"epoch": c.epoch, "pos": c.pos, "batch": c.batch, "num_records": self.num_records,
                "shuffle": self.shuffle, "shuffle_seed": self.shuffle_seed, "transform_seed": self.transform_seed}

    def set_state(self, state: dict) -> None:
        from netspec.data.reader import Cursor

        if int(state["num_records"]) != self.num_records:
            raise self.error(f"the saved data cursor is for {state['num_records']} records, but "
                             f"'{self.source.name}' now holds {self.num_records}: the dataset changed",
                             "source", cls=DataError)
        self.close()
        self.shuffle = bool(state.get("shuffle", self.shuffle))
        self.shuffle_seed = int(state["shuffle_seed"])
        self.transform_seed = int(state["transform_seed"])
        self.reader = self._reader()
        self._cursor = Cursor(int(state["epoch"]), int(state["pos"]), int(state["batch"]))

    def rewind(self) -> None:
        """Start the current epoch again (a test pass that covers the set once: ``full_pass``)."""
        from netspec.data.reader import Cursor

        c = self._cursor
        self.close()
        self._cursor = Cursor(c.epoch, 0, c.batch)

    def close(self) -> None:
        pipe = getattr(self, "_pipe", None)
        if pipe is not None:
            pipe.stop()
            self._finalizer.detach()
            self._pipe = self._finalizer = None


@register("Data")
class Data(_DataBase):
    """Reads a dataset in batches: a built-in name, ``memory:NAME``, or a file (IDX, NPZ, HDF5, CSV,
    image folder, image list).  Records in order (wrapping around at the end, as Caffe), or
    reshuffled every epoch (``shuffle``, on by default in TRAIN).

    Example::

        {name: mnist, type: Data, top: [data, label], include: {phase: TRAIN},
         source: "fashion-mnist:train", batch_size: 64, transform: {scale: 0.00390625}}
    """

    schema = {"properties": DATA_PROPS, "required": ["source", "batch_size"]}


@register("ImageData")
class ImageData(_DataBase):
    """Reads images listed in a text file (``path label`` per line), decoded with Pillow.

    Example::

        {name: data, type: ImageData, top: [data, label], source: train.txt, batch_size: 50,
         new_height: 256, new_width: 256, transform: {crop_size: 227, mirror: true}}
    """

    num_top = 2
    schema = {"properties": {
        **DATA_PROPS,
        "batch_size": T.integer(1, default=1, desc="records per batch"),
        "new_height": T.integer(0, default=0, desc="resize to this height (with new_width)"),
        "new_width": T.integer(0, default=0, desc="resize to this width (with new_height)"),
        "is_color": T.boolean(True, "decode with 3 channels"),
        "root_folder": T.string(desc="prefix of the listed paths", min_length=None),
    }, "required": ["source"]}

    def image_size(self):
        nh, nw = self.p.get("new_height", 0), self.p.get("new_width", 0)
        if bool(nh) != bool(nw):
            raise self.error("give both new_height and new_width, or neither", "new_height", cls=SpecError)
        return (nh, nw) if nh else None

    def image_channels(self, native):
        t = self.p.get("transform") or {}
        if t.get("force_gray") or t.get("force_color"):
            return super().image_channels(native)
        return 3 if self.p.get("is_color", True) else 1

    def _decode_channels(self):
        return super()._decode_channels() or (3 if self.p.get("is_color", True) else 1)

    def sample_shape(self):
        size = self.image_size()
        if size and "shape" not in self.p:
            return (self.image_channels(3),) + size, ()
        return super().sample_shape()


@register("HDF5Data")
class HDF5Data(_DataBase):
    """Reads HDF5 files listed in a text file; each top is the dataset of the same name.

    All listed files are loaded into memory once.  With ``shuffle`` the files' order and the
    rows within each file are shuffled every epoch (Caffe's rule).  No transform (as in Caffe).

    Example::

        {name: data, type: HDF5Data, top: [data, label], source: train.txt, batch_size: 10}
    """

    num_top = (1, None)
    transforms = False
    schema = {"properties": {
        "source": T.string(desc="a text file listing .h5 files (relative to its folder), one per line"),
        "batch_size": DATA_PROPS["batch_size"],
        "shuffle": DATA_PROPS["shuffle"],
        "prefetch": DATA_PROPS["prefetch"],
        "shape": T.shapes("per top: the shape of one record, when the files cannot be read"),
    }, "required": ["source", "batch_size"]}

    def reshape(self, bottom_shapes):
        n = self.p["batch_size"]
        ntop = len(self.p["top"])
        given = _shape_list(self, "shape", ntop)
        if given is not None:
            return [(n,) + s for s in given]
        from netspec.data.catalog import probe_hdf5

        try:
            shapes = probe_hdf5(self.p["source"], self.base_dir, self.p["top"])
        except NetspecError as e:
            raise self.error(e.message, "source", cls=type(e)) from None
        return [(n,) + tuple(shapes[t]) for t in self.p["top"]]

    def open(self, ntop):
        from netspec.data.sources import open_hdf5_list

        return open_hdf5_list(self.p["source"], self.base_dir, self.p["top"])

    def _check_shapes(self, top):
        for k, t in enumerate(top):
            if int(np.prod(t.data.shape[1:])) != int(np.prod(self.source.shapes[k])):
                raise self.error(f"dataset '{self.p['top'][k]}' has records of shape {list(self.source.shapes[k])}, "
                                 f"but the net was planned with {list(t.data.shape[1:])}", "source", cls=DataError)
