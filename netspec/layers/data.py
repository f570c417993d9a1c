"""Layers without bottoms that bring data into the net: Input, DummyData, Data, ImageData, HDF5Data.

Shape inference reads only metadata (``netspec.data.catalog.probe``): a built-in dataset's
table or a file's header.  Loading records is the data pipeline's job (``netspec.data``).
"""

from __future__ import annotations

from netspec.core.layer import Layer, register
from netspec.errors import NetspecError, SpecError
from netspec.spec import types as T

TRANSFORM = {
    "type": "object",
    "description": "preprocessing, in Caffe's order: crop, mirror, subtract mean, scale",
    "properties": {
        "scale": T.number(desc="multiply after subtracting the mean (e.g. 0.00390625 = 1/256)"),
        "mean_value": T.numbers(desc="one mean, or one per channel"),
        "mean_file": T.string(desc="a mean image (.npy, or Caffe .binaryproto)"),
        "crop_size": T.integer(0, desc="square crop: random in TRAIN, centred in TEST"),
        "mirror": T.boolean(desc="random horizontal flips (in any phase, as in Caffe)"),
        "force_color": T.boolean(desc="decode images with 3 channels"),
        "force_gray": T.boolean(desc="decode images with 1 channel"),
    },
    "additionalProperties": False,
    "allOf": [{"not": {"required": ["mean_value", "mean_file"]}}],
}

DATA_PROPS = {
    "source": T.string(desc="a built-in dataset (fashion-mnist:train) or a file or folder"),
    "batch_size": T.integer(1, desc="records per batch"),
    "shuffle": T.boolean(desc="reshuffle every epoch (default: true in TRAIN, false in TEST)"),
    "shape": T.shape("the shape of one sample, when it cannot be read from the source's header"),
    "transform": TRANSFORM,
    "rand_skip": T.integer(0, desc="skip a random number (up to this) of records at the start"),
    "prefetch": T.integer(0, default=4, desc="batches prepared ahead in the background"),
    "backend": T.enum(("LEVELDB", "LMDB"), desc="accepted for Caffe files; the source decides the format"),
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
        for t, f in zip(top, self.fillers_by_top):
            fill(t.data, f, self.rng)

    def forward(self, bottom, top):
        from netspec.core.fillers import fill

        for t, f, again in zip(top, self.fillers_by_top, self.refill):
            if again:
                fill(t.data, f, self.rng)

    def backward(self, top, propagate_down, bottom):
        """Nothing: generated data has no producer."""


class _DataBase(Layer):
    """A dataset reader: tops (data, optional label); shapes from the source's metadata."""

    num_bottom = 0
    num_top = (1, 2)
    is_data = True

    def sample_shape(self):
        """(sample shape, label shape) before the transform."""
        from netspec.data.catalog import probe

        if "shape" in self.p:
            return tuple(self.p["shape"]), ()
        try:
            info = probe(self.p["source"], self.base_dir)
        except NetspecError as e:
            raise self.error(e.message, "source", cls=type(e)) from None
        return info.sample_shape, info.label_shape

    def transformed(self, shape):
        crop = (self.p.get("transform") or {}).get("crop_size", 0)
        if crop:
            if len(shape) != 3:
                raise self.error(f"crop_size needs image samples (C, H, W), got {list(shape)}", "transform")
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


@register("Data")
class Data(_DataBase):
    """Reads a dataset in batches: a built-in name or a file (IDX, NPZ, HDF5, CSV, image folder).

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

    def sample_shape(self):
        nh, nw = self.p.get("new_height", 0), self.p.get("new_width", 0)
        if bool(nh) != bool(nw):
            raise self.error("give both new_height and new_width, or neither", "new_height", cls=SpecError)
        if nh and "shape" not in self.p:
            return (3 if self.p.get("is_color", True) else 1, nh, nw), ()
        return super().sample_shape()


@register("HDF5Data")
class HDF5Data(_DataBase):
    """Reads HDF5 files listed in a text file; each top is the dataset of the same name.

    Example::

        {name: data, type: HDF5Data, top: [data, label], source: train.txt, batch_size: 10}
    """

    num_top = (1, None)
    schema = {"properties": {
        "source": DATA_PROPS["source"],
        "batch_size": DATA_PROPS["batch_size"],
        "shuffle": DATA_PROPS["shuffle"],
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
