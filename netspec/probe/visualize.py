"""What a trained net has learnt, as pictures: its filters, its feature maps for an input, the
inputs that excite a class or a neuron most (activation maximization), and which input values a
class score depends on (saliency).

Activation maximization is gradient ascent on the input (Erhan et al. 2009; Simonyan et al.
2013; Yosinski et al. 2015): from the data's mean image (or noise, or zeros), each step follows
the input gradient of the objective (the class's log-probability by default, or its logit; a
channel's mean activation) normalised to a mean magnitude of 1, times ``step`` x the data
range.  The regularizers keep the image natural: L2 decay pulls it towards 0 (the mean when the
transform subtracts one), jitter shifts it by a random offset before each gradient, a Gaussian
blur every few steps removes high frequencies, total variation (its squared form) smooths it,
and clipping keeps it inside the data range.  Every one is a parameter of ``Ascent``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netspec.errors import SpecError, suggestion
from netspec.probe import pictures as P


@dataclass
class Ascent:
    """Settings of activation maximization (the ``netspec visualize`` flags of the same names)."""

    iterations: int = 200
    step: float = 0.01             # per step, in units of the data range, along the normalised gradient
    decay: float = 0.005           # L2 decay: x <- (1 - decay) x after each step
    jitter: int = 1                # random shift of up to this many pixels before each gradient
    blur_every: int = 4            # a Gaussian blur every this many steps (0: never)
    blur_sigma: float = 0.6        # its standard deviation in pixels
    tv: float = 0.0                # weight of the (squared) total-variation penalty
    clip: bool = True              # keep values inside the data range
    start: str = "mean"            # mean, noise or zeros
    objective: str = "logprob"     # class objective: logprob or logit
    seed: int = 0

    def check(self) -> None:
        if self.iterations < 0 or self.step <= 0 or not 0 <= self.decay < 1 or self.jitter < 0:
            raise SpecError("the ascent needs --iterations >= 0, --step > 0, 0 <= --decay < 1 and --jitter >= 0")
        if self.blur_every < 0 or self.blur_sigma < 0 or self.tv < 0:
            raise SpecError("--blur-every, --blur-sigma and --tv must not be negative")
        if self.start not in ("mean", "noise", "zeros"):
            raise SpecError(f"--start {self.start}: one of mean, noise, zeros")
        if self.objective not in ("logprob", "logit"):
            raise SpecError(f"--objective {self.objective}: one of logprob, logit")


@dataclass
class Picture:
    """A picture and the figures it shows (what ``--json`` prints)."""

    image: object                      # a Pillow image
    figures: dict = field(default_factory=dict)
    grid: tuple[int, int] = (0, 0)     # rows, cols of the main grid
    arrays: np.ndarray | None = None   # the generated inputs (activation maximization)


# ---- activation maximization ---------------------------------------------------------------

def start_images(model, n: int, a: Ascent, rng: np.random.Generator) -> np.ndarray:
    shape = (n,) + tuple(model.sample_shape)
    if a.start == "zeros":
        x = np.zeros(shape, np.float32)
    elif a.start == "noise":
        lo = model.lo if model.has_range else -0.5
        x = (lo + rng.random(shape) * model.span).astype(np.float32)
    else:
        from netspec.probe.inputs import mean_image

        x = np.repeat(mean_image(model)[None], n, axis=0).astype(np.float32)
        # a little noise, so that the images of a batch do not start identical
        x += (0.01 * model.span * rng.standard_normal(shape)).astype(np.float32)
    return model.clip(x) if a.clip else x


def tv_gradient(x: np.ndarray) -> np.ndarray:
    """Gradient of sum((x[h+1]-x[h])^2 + (x[w+1]-x[w])^2) over the last two axes."""
    g = np.zeros_like(x)
    dh = np.diff(x, axis=-2)
    dw = np.diff(x, axis=-1)
    g[..., 1:, :] += 2 * dh
    g[..., :-1, :] -= 2 * dh
    g[..., :, 1:] += 2 * dw
    g[..., :, :-1] -= 2 * dw
    return g


def ascend(model, blob: str, seed, x0: np.ndarray, a: Ascent, rng: np.random.Generator,
           until=None) -> tuple[np.ndarray, int]:
    """Gradient ascent of ``sum(seed * blob)`` on the inputs ``x0``; returns (images, steps run).

    ``until(forward results) -> bool`` stops early once it holds (checked before each step).
    """
    from scipy.ndimage import gaussian_filter

    x = x0.astype(np.float32).copy()
    spatial = x.ndim == 4
    axes = (-2, -1)
    done = 0
    for it in range(a.iterations):
        dy = dx = 0
        if a.jitter and spatial:
            dy, dx = (int(v) for v in rng.integers(-a.jitter, a.jitter + 1, 2))
        xs = np.roll(x, (dy, dx), axis=axes) if (dy or dx) else x
        g, out = model.gradient(xs, blob, seed)
        if until is not None and not (dy or dx) and until(out):
            break     # (the forward of a shifted image does not say what the image itself gives)
        if dy or dx:
            g = np.roll(g, (-dy, -dx), axis=axes)
        flat = g.reshape(len(g), -1)
        norm = np.abs(flat).mean(axis=1).reshape((-1,) + (1,) * (g.ndim - 1))
        d = g / (norm + 1e-20)
        if a.tv and spatial:
            d -= a.tv * tv_gradient(x) / model.span
        x += np.float32(a.step * model.span) * d.astype(np.float32)
        if a.decay:
            x *= np.float32(1 - a.decay)
        if a.blur_every and a.blur_sigma and spatial and (it + 1) % a.blur_every == 0:
            x = gaussian_filter(x, sigma=(0,) * (x.ndim - 2) + (a.blur_sigma, a.blur_sigma)).astype(np.float32)
        if a.clip:
            x = model.clip(x).astype(np.float32)
        done = it + 1
    return x, done


def class_seed(classes: np.ndarray, objective: str):
    """The gradient, with respect to the class scores, of each sample's class objective."""
    def seed(out):
        onehot = np.zeros_like(out["scores"])
        onehot[np.arange(len(classes)), classes] = 1.0
        return onehot - out["prob"] if objective == "logprob" else onehot
    return seed


def parse_classes(model, text: str | None, option: str = "--class") -> list[int]:
    """``all`` (the default), ``K`` or ``K1,K2,...``; a class may also be given by its name."""
    if text is None or text.strip().lower() == "all":
        return list(range(model.num_classes))
    out = []
    for part in text.split(","):
        part = part.strip()
        if part.lstrip("-").isdigit():
            k = int(part)
        elif part in model.classes:
            k = model.classes.index(part)
        else:
            raise SpecError(f"{option} '{part}': give class numbers (0..{model.num_classes - 1}), 'all' or class "
                            f"names{suggestion(part, model.classes)}", file=model.spec.file)
        model.check_class(k, option)
        out.append(k)
    return out


def class_images(model, classes: list[int], a: Ascent, zoom: int = 3, cols: int | None = None) -> Picture:
    """One image per class, ascended on the class objective; figures: the final probability."""
    a.check()
    rng = np.random.default_rng(a.seed)
    ks = np.asarray(classes, dtype=np.int64)
    x0 = start_images(model, len(ks), a, rng)
    x, steps = ascend(model, model.scores, class_seed(ks, a.objective), x0, a, rng)
    out = model.forward(x)
    p = out["prob"][np.arange(len(ks)), ks]
    top = out["prob"].argmax(axis=1)
    grid = _sample_grid(model, len(ks), zoom, 2, cols,
                        [f"class visualization ({a.objective}, {steps} steps from {a.start})"])
    for i, k in enumerate(ks):
        grid.add(_show(model, x[i]), [f"{k} {model.class_name(k)}", f"p={p[i]:.4f}"])
    return Picture(grid.image(), {
        "what": "class", "classes": [int(k) for k in ks], "names": [model.class_name(int(k)) for k in ks],
        "probability": float(p[0]) if len(ks) == 1 else [float(v) for v in p],
        "predicted": [int(v) for v in top], "iterations": steps,
        "settings": _settings(a)}, (grid.rows, grid.cols), x)


def neuron_images(model, blob: str, channels: list[int] | None, a: Ascent, position: tuple[int, int] | None = None,
                  zoom: int = 3, cols: int | None = None) -> Picture:
    """One image per channel of ``blob``: ascent on the channel's mean activation (or on the one
    unit at ``position``); figures: the final activation and the start's."""
    a.check()
    model.check_blob(blob)
    shape = model._shape(blob)
    if len(shape) < 2:
        raise SpecError(f"--blob {blob}: the blob has shape {list(shape)}; it needs a channel axis",
                        file=model.spec.file)
    nch = shape[1]
    chans = list(range(nch)) if channels is None else list(channels)
    for c in chans:
        if not 0 <= c < nch:
            raise SpecError(f"--channel {c} is out of range: blob '{blob}' has {nch} channels (0..{nch - 1})",
                            file=model.spec.file)
    spatial = shape[2:]
    if position is not None:
        if len(spatial) != 2 or not (0 <= position[0] < spatial[0] and 0 <= position[1] < spatial[1]):
            raise SpecError(f"--position {position[0]},{position[1]} is outside blob '{blob}' (shape "
                            f"{list(shape)})", file=model.spec.file)
    n = len(chans)
    seed = np.zeros((n,) + tuple(shape[1:]), np.float32)
    for i, c in enumerate(chans):
        if position is not None:
            seed[i, c, position[0], position[1]] = 1.0
        else:
            seed[i, c] = 1.0 / max(1, int(np.prod(spatial)))
    rng = np.random.default_rng(a.seed)
    x0 = start_images(model, n, a, rng)
    before = _activation(model, x0, blob, seed)
    x, steps = ascend(model, blob, seed, x0, a, rng)
    after = _activation(model, x, blob, seed)
    where = f" at {position[0]},{position[1]}" if position is not None else " (mean over positions)"
    grid = _sample_grid(model, n, zoom, 2, cols, [f"{blob}: channels maximized{where}, {steps} steps"])
    for i, c in enumerate(chans):
        grid.add(_show(model, x[i]), [f"{blob}[{c}]", f"a={after[i]:.3g}"])
    return Picture(grid.image(), {
        "what": "neuron", "blob": blob, "channels": chans,
        "position": list(position) if position is not None else None,
        "activation": [float(v) for v in after], "start_activation": [float(v) for v in before],
        "iterations": steps, "settings": _settings(a)}, (grid.rows, grid.cols), x)


def _activation(model, x, blob, seed) -> np.ndarray:
    out = model.forward(x, (blob,))
    v = out[blob].reshape(len(x), -1) * seed.reshape(len(x), -1)
    return v.sum(axis=1)


# ---- filters, features, saliency -----------------------------------------------------------

def filters(model, layer: str | None = None, zoom: int = 4, max_filters: int = 64) -> Picture:
    """A layer's weights as images: one tile per filter (per filter and input channel when the
    layer does not read 1 or 3 channels); an InnerProduct reading the input shows each row as
    an input-shaped image."""
    n = model.net(1)
    with_weights = [lp for lp in n.layers if any(p.name == "weight" for p in lp.params)]
    if not with_weights:
        raise SpecError("the net has no layer with weights to draw", file=model.spec.file)
    if layer is None:
        lp = with_weights[0]
    else:
        named = {lp.name: lp for lp in with_weights}
        if layer not in named:
            raise SpecError(f"--layer: the deploy net has no layer '{layer}' with weights"
                            f"{suggestion(layer, list(named))} (layers with weights: {', '.join(named)})",
                            file=model.spec.file)
        lp = named[layer]
    from netspec.core.device import to_host

    w = to_host(n.params[f"{lp.name}/weight"].data).astype(np.float64)
    shape = list(w.shape)
    if w.ndim == 2:
        if w.shape[1] != int(np.prod(model.sample_shape)) or lp.bottoms[0] != model.input:
            raise lp.spec.error(SpecError, f"the weights {shape} of this {lp.type} are not images: only one "
                                f"reading the input ({'x'.join(map(str, model.sample_shape))}) can be drawn")
        w = w.reshape((w.shape[0],) + tuple(model.sample_shape))
    if w.ndim != 4:
        raise lp.spec.error(SpecError, f"weights of shape {shape} cannot be drawn as image filters")
    o, c, kh, kw = w.shape
    o_shown = min(o, max_filters)
    if c in (1, 3):
        cols = int(np.ceil(np.sqrt(o_shown)))
        grid = P.Grid(cols, kh, kw, zoom, 1, [f"{lp.name}: {o} filters {c}x{kh}x{kw}"
                                                 + (f" (first {o_shown})" if o_shown < o else "")])
        for i in range(o_shown):
            grid.add(P.symmetric(w[i]), str(i))
    else:
        cols = min(c, 32)
        grid = P.Grid(cols, kh, kw, zoom, 0, [f"{lp.name}: {o} filters x {c} input channels, {kh}x{kw}"
                                                 + (f" (first {o_shown} x {cols})" if o_shown < o or cols < c else ""),
                                                 "rows: filters; columns: input channels"])
        for i in range(o_shown):
            for j in range(cols):
                grid.add(P.symmetric(w[i, j]))
    return Picture(grid.image(), {"what": "filters", "layer": lp.name, "shape": shape, "shown": o_shown,
                                  "min": float(w.min()), "max": float(w.max())}, (grid.rows, grid.cols))


def parse_blobs(model, text: str | None) -> list[str]:
    """``a,b,c``; by default every blob with channels and two spatial axes, the input excepted."""
    n = model.net(1)
    if text:
        names = [b.strip() for b in text.split(",") if b.strip()]
        for b in names:
            model.check_blob(b, "--blobs")
        return names
    seen: list[str] = []
    for lp in n.layers:
        for t in lp.tops:
            if (t != model.input and n.blobs[t].data.ndim == 4 and lp.type != "Split" and t not in seen):
                seen.append(t)
    if not seen:
        raise SpecError("the net has no feature maps (blobs with channels, height and width); name blobs with "
                        "--blobs", file=model.spec.file)
    return seen


def features(model, x: np.ndarray, name: str, blobs: list[str], zoom: int = 2, max_channels: int = 64) -> Picture:
    """The input and the feature maps of ``blobs`` for it, one grid per blob (each channel scaled
    to its own range); figures: the prediction and each blob's statistics."""
    out = model.forward(x, tuple(blobs))
    head = P.Grid(1, *model.sample_shape[-2:], zoom=max(zoom, 3), caption_lines=2, title=[f"input {name}"])
    if "prob" in out:
        p = out["prob"][0]
        k = int(p.argmax())
        head.add(_show(model, x[0]), [f"{k} {model.class_name(k)}", f"p={p[k]:.4f}"])
        said = {"predicted": k, "name": model.class_name(k), "probability": float(p[k])}
    else:
        head.add(_show(model, x[0]))
        said = {"predicted": None, "name": None, "probability": None}
    grids = []
    stats = {}
    largest = max(max(out[b].shape[2:] or (int(np.ceil(np.sqrt(out[b][0].size))),)) for b in blobs)
    for b in blobs:
        a = out[b][0]
        if a.ndim == 1:
            # a vector (an InnerProduct's output) is one square tile, its values row by row
            side = int(np.ceil(np.sqrt(a.size)))
            a = np.concatenate([a, np.full(side * side - a.size, a.min())]).reshape(1, side, side)
        elif a.ndim == 2:
            a = a[:, None, :]
        c = a.shape[0]
        shown = min(c, max_channels)
        cols = min(shown, 16)
        # smaller maps are enlarged more, so that every tile is about as large as the largest map's
        z = max(1, zoom * largest // max(a.shape[-2:]))
        grid = P.Grid(cols, a.shape[-2], a.shape[-1], z, 0,
                      [f"{b}: {'x'.join(map(str, out[b].shape[1:]))}"
                       + (f" (first {shown} channels)" if shown < c else "")])
        for j in range(shown):
            grid.add(P.to_rgb(a[j]))
        grids.append(grid)
        v = out[b][0]
        stats[b] = {"shape": list(out[b].shape[1:]), "mean": float(v.mean()), "max": float(v.max()),
                    "active": float((v > 0).mean())}
    head.min_width = max(g.size[0] for g in grids)
    parts = [head.image()] + [g.image() for g in grids]
    rows_cols = (grids[0].rows, grids[0].cols)
    return Picture(P.stack(parts), {"what": "features", "input": name, **said, "blobs": stats}, rows_cols)


def saliency_map(model, x: np.ndarray, k: int, objective: str = "logit") -> tuple[np.ndarray, dict]:
    """d(class k's score) / d input for one input (the objective's gradient through the net)."""
    g, out = model.gradient(x, model.scores, class_seed(np.array([k]), objective))
    return g[0], out


def saliency(model, x: np.ndarray, name: str, k: int | None = None, objective: str = "logit",
             zoom: int = 6) -> Picture:
    """The input, |gradient| of the class score (maximum over channels) and the two overlaid."""
    if objective not in ("logprob", "logit"):
        raise SpecError(f"--objective {objective}: one of logprob, logit")
    model.scores          # a net without class scores has no saliency: say so first
    out = model.forward(x)
    pred = int(out["prob"][0].argmax())
    k = pred if k is None else k
    model.check_class(k)
    g, out = saliency_map(model, x, k, objective)
    s = np.abs(g).max(axis=0) if g.ndim == 3 else np.abs(g).reshape(model.sample_shape[-2:])
    p = out["prob"][0]
    h, w = s.shape
    grid = P.Grid(3, h, w, zoom, 1, [f"saliency of class {k} {model.class_name(k)} ({objective}) for {name}",
                                     f"predicted {pred} {model.class_name(pred)} p={p[pred]:.4f}"])
    grid.add(_show(model, x[0]), "input")
    heat = P.heatmap(s)
    grid.add(heat, "|gradient|")
    base = _show(model, x[0]).astype(np.float64)
    grid.add((0.45 * base + 0.55 * heat).astype(np.uint8), "overlay")
    y, xx = np.unravel_index(int(s.argmax()), s.shape)
    return Picture(grid.image(), {"what": "saliency", "input": name, "class": k, "name": model.class_name(k),
                                  "objective": objective, "probability": float(p[k]), "predicted": pred,
                                  "max_gradient": float(s.max()), "argmax": [int(y), int(xx)]},
                   (grid.rows, grid.cols))


# ---- helpers ---------------------------------------------------------------------------------

def _show(model, x: np.ndarray) -> np.ndarray:
    """One input as RGB, in the data range when it is known (so that images compare)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x.reshape(1, 1, -1)
    if model.has_range:
        return P.to_rgb(x, model.lo, model.hi)
    return P.to_rgb(x)


def _sample_grid(model, n: int, zoom: int, caption_lines: int, cols: int | None, title: list[str]) -> P.Grid:
    shape = model.sample_shape
    h, w = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, shape[-1])
    return P.Grid(cols or min(n, 10 if n <= 10 else int(np.ceil(np.sqrt(n)))), h, w, zoom, caption_lines, title)


def _settings(a: Ascent) -> dict:
    return {k: getattr(a, k) for k in ("iterations", "step", "decay", "jitter", "blur_every", "blur_sigma",
                                       "tv", "clip", "start", "objective", "seed")}
