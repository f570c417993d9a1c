"""Asking a trained net about one's own files: ``netspec predict``.

A ``Predictor`` is the derived deploy net of a net file or a zoo entry, with trained weights,
and what its input expects: the raw record shape (before the crop), the channels, and the
preprocessing.  The preprocessing is the data layer's own ``Transform`` (the zoo manifest's
``input.preprocessing`` when it gives one, else the TEST data layer's ``transform``), applied
in the TEST phase, so an input is seen exactly as a test record is: a centred crop, no mirror.

Inputs (``read_inputs``), each one record or a file of records:

- image files (PNG, JPEG, ...; a folder stands for the image files in it) are decoded with the
  net's channels (grey or RGB, in the data layer's ``channel_order``) and resized (bilinear) to
  the records' height and width, as ImageData's ``new_height``/``new_width`` do;
- IDX, NPZ and CSV files and Caffe image lists give one input per record, with their labels
  when they have them (a CSV has a label column only if it has one value more than a record);
- a dataset slice ``fashion-mnist:test:100`` (any data source, optionally ``:N`` first records).

An input that cannot be read becomes a ``Failure`` naming its file; the others are predicted.
Nothing here imports numba until ``load_predictor`` builds the net.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from netspec.errors import DataError, GraphError, NetspecError, SpecError, WeightsError

DEFAULT_BATCH = 64
DEFAULT_TOP_K = 3
# a zoo entry whose task is one of these has outputs that are not class scores
_NOT_CLASSES = ("reconstruction", "regression")


@dataclass
class Predictor:
    """A deploy net with trained weights, and how raw inputs become its input blob."""

    name: str                              # the model as the user named it
    net: object                            # netspec.core.net.Net (batch ``batch``)
    input_blob: str
    output_blob: str
    probabilities: bool                    # the output is a Softmax/Sigmoid (else raw scores)
    raw_shape: tuple[int, ...]             # one record before the transform, e.g. (1, 28, 28)
    transform: object | None               # netspec.data.transforms.Transform (TEST phase), or None
    classes: list[str] | None
    bgr: bool = False
    batch: int = DEFAULT_BATCH
    weights: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int | None:
        return self.raw_shape[0] if len(self.raw_shape) == 3 else None

    def class_name(self, k: int) -> str:
        return self.classes[k] if self.classes is not None and k < len(self.classes) else str(k)

    def run(self, raw: np.ndarray) -> np.ndarray:
        """Scores (n, K) of ``n <= batch`` raw records (n, *raw_shape)."""
        from netspec.core.device import to_host

        n = raw.shape[0]
        blob = self.net.blobs[self.input_blob].data
        x = np.zeros(tuple(blob.shape), dtype=np.float32)
        if self.transform is not None:
            # TEST phase without mirror: nothing is random, so no Generator is needed
            self.transform.apply(raw, x[:n], None)
        else:
            x[:n] = raw.reshape((n,) + x.shape[1:])
        self.net.set_input(self.input_blob, x)
        self.net.forward()
        out = to_host(self.net.blobs[self.output_blob].data)
        return np.array(out[:n].reshape(n, -1), dtype=np.float64)

    def close(self) -> None:
        for lp in self.net.layers:
            lp.layer.close()


@dataclass
class Item:
    """One input: its name in the output, how to read its raw record, and its label if known."""

    name: str
    read: Callable[[], np.ndarray]
    label: int | None = None


@dataclass
class Failure:
    name: str
    error: NetspecError


@dataclass
class Prediction:
    name: str
    top: list[tuple[int, str, float]]      # (class index, class name, probability or score)
    label: int | None = None
    label_name: str | None = None

    def as_json(self, probabilities: bool) -> dict:
        key = "prob" if probabilities else "score"
        d: dict = {"input": self.name,
                   "top": [{"class": k, "name": name, key: round(v, 6)} for k, name, v in self.top]}
        if self.label is not None:
            d["label"] = self.label
            d["label_name"] = self.label_name
        return d


# ---- the model -------------------------------------------------------------------------------

def load_predictor(model: str, weights: str | None = None, *, batch: int = DEFAULT_BATCH,
                   device: str | None = None, stages: Sequence[str] | None = None, level: int | None = None,
                   output: str | None = None) -> Predictor:
    """The deploy net of ``model`` (a net file, or ``zoo:NAME``) with its weights loaded.

    A zoo entry brings its weights (sha256 checked), its classes and its preprocessing;
    ``weights`` replaces the entry's.  A net file needs ``weights``.
    """
    from netspec import zoo_registry as zoo

    manifest_input: dict = {}
    if zoo.is_zoo_ref(model):
        entry = zoo.load_entry(zoo.ref_name(model))
        task = entry.get("task")
        if task in _NOT_CLASSES:
            raise entry.error(f"zoo entry '{entry.name}' is a {task} model: its output is not class scores, "
                              f"so there are no labels to predict", "task")
        net_file = entry.path("net")
        if not net_file.is_file():
            raise entry.error(f"the net file {entry.data['net']} of zoo entry '{entry.name}' is missing", "net")
        refs = _refs(weights) if weights else [model]
        manifest_input = dict(entry.get("input") or {})
        ev = entry.evaluation
        if stages is None and ev.get("stage") is not None:
            from netspec.spec.model import as_list

            stages = as_list(ev["stage"])
        if level is None:
            level = ev.get("level")
    else:
        net_file = Path(model)
        if not weights:
            raise SpecError("a net file needs trained weights: give --weights W (a .safetensors file or "
                            "zoo:<name>), or name a zoo entry (zoo:<name>) instead of the net", file=model)
        refs = _refs(weights)
    spec, file_stages, file_level = _net_spec(net_file)
    stages = stages if stages is not None else file_stages
    level = level if level is not None else file_level
    info = _input_info(spec, stages, level)
    if manifest_input.get("preprocessing") is not None:
        info.transform = dict(manifest_input["preprocessing"])
    if manifest_input.get("classes"):
        info.classes = [str(c) for c in manifest_input["classes"]]
    net = _build(spec, info, batch, device, stages, level)
    try:
        out_blob, probs = _output(net, output, model)
        _load_weights(net, refs)
        transform = _transform(info)
    except BaseException:
        for lp in net.layers:
            lp.layer.close()
        raise
    return Predictor(model, net, info.blob, out_blob, probs, info.raw_shape, transform, info.classes,
                     info.bgr, batch, refs)


def _refs(weights: str) -> list[str]:
    """Weights references, comma-separated, applied in order (as ``netspec test`` takes them)."""
    return [w.strip() for w in weights.split(",") if w.strip()]


def _net_spec(path: Path):
    """(net, stages, level) of a net file, or of a solver file's first test net."""
    from netspec.api import net_from_doc
    from netspec.solvers.config import is_solver_doc
    from netspec.spec.load import load_file

    doc = load_file(path)
    if is_solver_doc(doc):
        from netspec.solvers.run import resolve_training

        tr = resolve_training(path)
        use = tr.tests[0] if tr.tests else tr.train
        return use.spec, use.stages, use.level
    return net_from_doc(doc), None, None


@dataclass
class _InputInfo:
    blob: str
    raw_shape: tuple[int, ...]
    transform: dict | None
    base_dir: Path | None
    classes: list[str] | None
    bgr: bool
    shape: tuple[int, ...]            # the input blob's sample shape (after the transform)


def _input_info(spec, stages, level) -> _InputInfo:
    """The deploy net's single input, and the TEST data layer that feeds it in training."""
    from netspec.api import compile_net
    from netspec.graph.deploy import derive_deploy, is_source

    from netspec.graph.state import filter_net, stage_sets

    if not filter_net(spec, "TEST", level, stages if stages is not None else stage_sets(spec, "TEST")[0]).layers:
        raise spec.error(GraphError, "this net has no deploy form: its rules leave every layer out of the TEST "
                                     "net, which the deploy net is derived from", field="layers")
    deploy = derive_deploy(spec, level=level, stages=stages)
    inputs = [l for l in deploy.layers if l["type"] == "Input"]
    if not inputs:
        raise spec.error(GraphError, "this net has no deploy form: no data layer or Input layer feeds it, so "
                               "there is nothing to give an input to", field="layers")
    tops = [t for l in inputs for t in l["top"]]
    if len(tops) != 1:
        raise spec.error(GraphError, f"the deploy net reads {len(tops)} input blobs ({', '.join(tops)}); predict "
                                     f"feeds a net with one input", field="layers")
    blob = tops[0]
    shape = tuple(inputs[0]["shape"] if isinstance(inputs[0]["shape"][0], int) else inputs[0]["shape"][0])[1:]
    test = compile_net(spec, "TEST", level, stages)
    feeder = next((lp for lp in test.layers if blob in lp.tops and is_source(type(lp.layer))), None)
    info = _InputInfo(blob, shape, None, spec.base_dir, None, False, shape)
    if feeder is None or not hasattr(feeder.layer, "sample_shape"):
        return info
    layer = feeder.layer
    info.raw_shape = tuple(layer.sample_shape()[0])
    info.transform = dict(layer.p.get("transform") or {}) or None
    info.base_dir = layer.base_dir
    info.bgr = layer.p.get("channel_order", "RGB") == "BGR"
    source = layer.p.get("source")
    if source:
        from netspec.data.catalog import probe

        try:
            names = probe(source, layer.base_dir, layer.p.get("label_column", -1),
                          layer.p.get("root_folder")).extra.get("class_names")
        except NetspecError:
            names = None
        info.classes = list(names) if names else None
    return info


def _build(spec, info: _InputInfo, batch: int, device, stages, level):
    from netspec.core.device import env_device, resolve
    from netspec.core.net import Net
    from netspec.graph.deploy import derive_deploy
    from netspec.graph.plan import plan
    from netspec.graph.splits import insert_splits

    deploy = derive_deploy(spec, batch=batch, level=level, stages=stages)
    return Net(plan(insert_splits(deploy)), np.float32, seed=0, device=resolve(device or env_device()))


def _output(net, output: str | None, model: str) -> tuple[str, bool]:
    """The blob to rank, and whether it holds probabilities."""
    from netspec.errors import suggestion

    producer = {}
    for lp in net.layers:
        for t in lp.tops:
            producer[t] = lp.type
    if output is not None:
        if output not in net.blobs:
            raise SpecError(f"--output: the deploy net has no blob '{output}'" + suggestion(output, net.blobs)
                            + f" (its outputs: {', '.join(net.plan.outputs)})", file=model)
        name = output
    else:
        outs = list(net.plan.outputs)
        probs = [o for o in outs if producer.get(o) in ("Softmax", "Sigmoid")]
        if len(probs) == 1:
            name = probs[0]
        elif len(outs) == 1:
            name = outs[0]
        else:
            raise SpecError(f"the deploy net has {len(outs)} outputs ({', '.join(outs)}); choose the one to rank "
                            f"with --output BLOB", file=model)
    return name, producer.get(name) in ("Softmax", "Sigmoid")


def _load_weights(net, refs: list[str]) -> None:
    from netspec.io.weights import copy_weights, load_weights
    from netspec.solvers.run import weight_refs

    missing: set[str] = {p.key for p in net.learnable}
    for shown, path in weight_refs(refs, None):
        if not Path(path).is_file():
            raise WeightsError("no such weights file", file=shown)
        report = copy_weights(net, load_weights(path), shown)
        missing -= {r.key for r in report.rows if r.status == "copied"}
    if missing:
        keys = sorted(missing)
        raise WeightsError(f"{len(keys)} param(s) of the deploy net are not in the weights, so it would predict "
                           f"with untrained values: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}",
                           file=", ".join(refs))


def _transform(info: _InputInfo):
    from netspec.data.transforms import Transform

    params = dict(info.transform or {})
    # mirror flips at random in any phase (Caffe's rule); a prediction shows the image itself
    params.pop("mirror", None)
    # raw_uint8 (clipping after brightness and contrast) matters in TRAIN only
    t = Transform(params, "TEST", info.raw_shape, info.base_dir)
    if tuple(t.out_shape) != tuple(info.shape):
        raise DataError(f"the preprocessing turns records of shape {list(info.raw_shape)} into {list(t.out_shape)}, "
                        f"but the net's input '{info.blob}' is {list(info.shape)}")
    return None if t.is_identity else t


# ---- inputs ----------------------------------------------------------------------------------

def parse_slice(text: str) -> tuple[str, int | None]:
    """``fashion-mnist:test:100`` -> ("fashion-mnist:test", 100); no count -> None (every record)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and tail.isdigit():
        n = int(tail)
        if n < 1:
            raise SpecError(f"--images {text}: the record count must be at least 1")
        return head, n
    return text, None


def read_inputs(files: Iterable[str], predictor: Predictor, images: str | None = None
                ) -> tuple[list[Item | Failure], int]:
    """Every input, in the order given: an ``Item`` per record, a ``Failure`` per file that
    cannot be opened.  Returns (inputs, number of files)."""
    from netspec.data.images import IMAGE_EXTS

    out: list[Item | Failure] = []
    nfiles = 0
    for f in files:
        p = Path(os.path.expanduser(f))
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not found:
                out.append(Failure(f, DataError(f"the folder holds no image files ({', '.join(IMAGE_EXTS)})",
                                                file=f)))
            for q in found:
                nfiles += 1
                out.append(_image_item(str(q), predictor))
            continue
        nfiles += 1
        if p.suffix.lower() in IMAGE_EXTS:
            out.append(_image_item(f, predictor))
            continue
        try:
            out.extend(_record_items(f, predictor))
        except NetspecError as e:
            out.append(Failure(f, _located(e, f)))
    if images:
        source, n = parse_slice(images)
        nfiles += 1
        try:
            out.extend(_record_items(source, predictor, n, from_option=True))
        except NetspecError as e:
            out.append(Failure(images, _located(e, images)))
    return out, nfiles


def _located(e: NetspecError, name: str) -> NetspecError:
    if e.file is None and name not in e.message:
        e.file = name
    return e


def _image_item(path: str, predictor: Predictor) -> Item | Failure:
    from netspec.data.images import decode

    c = predictor.channels
    if c is None:
        return Failure(path, DataError(f"the net reads records of shape {list(predictor.raw_shape)}, not images "
                                       f"(channels, height, width); give it IDX, NPZ or CSV records", file=path))
    if c not in (1, 3):
        return Failure(path, DataError(f"the net reads {c}-channel records; an image decodes to 1 (grey) or 3 "
                                       f"(RGB) channels, so give this net NPZ or IDX records instead", file=path))
    size = tuple(predictor.raw_shape[1:])
    if not Path(path).is_file():
        return Failure(path, DataError("no such image file", file=path))
    return Item(path, lambda: decode(Path(path), c, size, predictor.bgr))


def _record_items(source: str, predictor: Predictor, limit: int | None = None,
                  from_option: bool = False) -> list[Item]:
    """One item per record of a data file or dataset (its first ``limit`` records)."""
    from netspec.data import catalog
    from netspec.data.sources import ImageSource, Options, open_source

    is_file = catalog.parse_builtin(source) is None and not source.startswith("memory:")
    want = int(np.prod(predictor.raw_shape))
    label_column: int | None = -1
    if is_file:
        path = Path(os.path.expanduser(source))
        if not path.exists():
            raise DataError("no such file", file=source)
        kind = catalog.file_kind(path)
        if kind == "unknown":
            raise DataError("cannot tell what this file holds from its name: predict reads images (PNG, JPEG, "
                            "...), IDX (*-ubyte[.gz]), .npz and .csv files, image lists (.txt) and datasets "
                            "(--images fashion-mnist:test)", file=source)
        if kind == "csv":
            # a label column only when a row has one value more than a record
            _, ncols, _ = catalog.csv_layout(path)
            if ncols == want:
                label_column = None
            elif ncols != want + 1:
                raise DataError(f"its rows have {ncols} values, but the net reads records of "
                                f"{want} values {list(predictor.raw_shape)} (plus an optional label in the "
                                f"last column)", file=source)
    c = predictor.channels
    size = tuple(predictor.raw_shape[1:]) if c is not None else None
    opts = Options(need_labels=False, label_column=label_column, channels=c if c in (1, 3) else None, size=size,
                   bgr=predictor.bgr)
    src = open_source(source, None, opts)
    shape = tuple(src.shapes[0])
    if int(np.prod(shape)) != want:
        raise DataError(f"its records have shape {list(shape)} ({int(np.prod(shape))} values), but the net reads "
                        f"{list(predictor.raw_shape)} ({want} values)", file=source)
    n = src.size if limit is None else min(limit, src.size)
    labels = src.labels()
    remap = _label_map(src.class_names, predictor.classes)
    if remap is False:
        labels = None           # the source's classes are not the net's: its labels say nothing here
    lines = getattr(src, "lines", None)
    show = source if not is_file else _short(source)
    items = []
    for i in range(n):
        if isinstance(src, ImageSource):
            name = str(src.paths[i])
        elif lines is not None:
            name = f"{show}:{int(lines[i])}"
        else:
            name = f"{show}[{i}]"
        label = None
        if labels is not None:
            v = float(labels[i])
            label = int(v) if v == int(v) and v >= 0 else None
            if label is not None and isinstance(remap, dict):
                label = remap.get(label)
        items.append(Item(name, _reader(src, i, predictor.raw_shape), label))
    return items


def _label_map(source_names: list[str] | None, net_names: list[str] | None) -> dict[int, int] | bool:
    """How a source's labels become the net's class indices: True (as they are), a mapping by
    class name (an image folder whose sub-folders are some of the net's classes), or False."""
    if not source_names or not net_names or list(source_names) == list(net_names)[:len(source_names)]:
        return True
    if all(n in net_names for n in source_names):
        return {k: net_names.index(n) for k, n in enumerate(source_names)}
    return False


def _short(source: str) -> str:
    from netspec.spec.load import display_name

    return display_name(source)


def _reader(src, i: int, raw_shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        buf = np.empty((1,) + tuple(src.shapes[0]), dtype=src.dtypes[0])
        src.read(np.array([i]), [buf])
        return buf[0].reshape(raw_shape)
    return read


# ---- predicting ------------------------------------------------------------------------------

def top_k(scores: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """The ``k`` best (class, score) of each row, best first; ties go to the lower class index."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[(int(j), float(row[j])) for j in idx] for row, idx in zip(scores, order)]


def predict(predictor: Predictor, inputs: Sequence[Item | Failure], k: int = DEFAULT_TOP_K,
            progress: Callable[[int], None] | None = None) -> list[Prediction | Failure]:
    """Top-``k`` classes of every item, in batches of the predictor's batch size; an item whose
    record cannot be read or has the wrong shape becomes a Failure, the rest are predicted."""
    if k < 1:
        raise SpecError("--top-k must be at least 1")
    results: list[Prediction | Failure | None] = [x if isinstance(x, Failure) else None for x in inputs]
    pending = [i for i, x in enumerate(inputs) if isinstance(x, Item)]
    raw = np.zeros((predictor.batch,) + tuple(predictor.raw_shape), dtype=np.float32)
    pos = 0
    while pos < len(pending):
        slots: list[int] = []
        while pos < len(pending) and len(slots) < predictor.batch:
            i = pending[pos]
            pos += 1
            item = inputs[i]
            try:
                rec = np.asarray(item.read())
                if rec.shape != tuple(predictor.raw_shape):
                    raise DataError(f"the record has shape {list(rec.shape)}, the net reads "
                                    f"{list(predictor.raw_shape)}", file=item.name)
            except NetspecError as e:
                results[i] = Failure(item.name, _located(e, item.name))
                continue
            raw[len(slots)] = rec
            slots.append(i)
        if not slots:
            continue
        scores = predictor.run(raw[:len(slots)])
        for i, best in zip(slots, top_k(scores, k)):
            item = inputs[i]
            results[i] = Prediction(item.name, [(j, predictor.class_name(j), v) for j, v in best], item.label,
                                    predictor.class_name(item.label) if item.label is not None else None)
        if progress is not None:
            progress(len(slots))
    return [r for r in results if r is not None]


# ---- output ----------------------------------------------------------------------------------

def table(predictor: Predictor, results: Sequence[Prediction | Failure]) -> list[str]:
    """The predictions as text: one row per input, the top classes with their probabilities (or
    scores), the label where the input has one; then the top-1 accuracy over labelled inputs."""
    preds = [r for r in results if isinstance(r, Prediction)]
    if not preds:
        return []
    k = max(len(p.top) for p in preds)
    labelled = [p for p in preds if p.label is not None]
    head = ["input"] + (["label"] if labelled else []) + [f"top-{j + 1}" for j in range(k)]
    rows = [head]
    fmt = "{:.3f}" if predictor.probabilities else "{:.4g}"
    for p in preds:
        row = [p.name]
        if labelled:
            row.append(p.label_name if p.label is not None else "")
        row += [f"{name} ({fmt.format(v)})" for _, name, v in p.top]
        rows.append(row)
    widths = [max(len(r[j]) for r in rows if j < len(r)) for j in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if labelled:
        right = sum(p.top[0][0] == p.label for p in labelled)
        lines.append(f"top-1 accuracy over the {len(labelled)} labelled inputs: {right}/{len(labelled)} = "
                     f"{100.0 * right / len(labelled):.2f}%")
    return lines


def as_json(predictor: Predictor, results: Sequence[Prediction | Failure]) -> dict:
    preds = [r for r in results if isinstance(r, Prediction)]
    labelled = [p for p in preds if p.label is not None]
    doc: dict = {"model": predictor.name, "weights": predictor.weights, "output": predictor.output_blob,
                 "values": "probabilities" if predictor.probabilities else "scores",
                 "predictions": [p.as_json(predictor.probabilities) for p in preds],
                 "failed": [{"input": r.name, "error": str(r.error)} for r in results if isinstance(r, Failure)]}
    if labelled:
        doc["top1_accuracy"] = sum(p.top[0][0] == p.label for p in labelled) / len(labelled)
    return doc
