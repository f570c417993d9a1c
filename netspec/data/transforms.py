"""The declarative ``transform`` of a data layer, applied to a whole batch at once.

Caffe's order (``data_transformer.cpp``), reproduced exactly when only its fields are used:

1. crop ``crop_size``: a random offset in TRAIN, the centred offset ``((H-c)//2, (W-c)//2)``
   in TEST;
2. mirror: a horizontal flip with probability 1/2 whenever ``mirror`` is on, in any phase;
3. ``out = (x - mean) * scale``, the mean (``mean_value`` per channel or one for all, or a
   ``mean_file`` image) taken at the uncropped position.

Cropping and flipping only move values, so ``crop(mirror(x - mean))`` equals Caffe's per-pixel
loop bit for bit; netspec subtracts the mean on the full image and then moves values.

Augmentations Caffe lacks (off unless given; TRAIN only, since evaluation should see the
images themselves):

- ``brightness: b`` multiplies each image by a factor drawn from U[1-b, 1+b], ``contrast: c``
  scales each image's deviation from its own mean by U[1-c, 1+c]; both act on the raw pixel
  values, before the mean, and clip to 0..255 when the records are 8-bit;
- ``crop_scale: [lo, hi]`` (with ``crop_ratio``, default [3/4, 4/3]) is the random resized
  crop: a box of that fraction of the image area and aspect ratio, resampled to ``crop_size``
  (or the image size); in TEST it is the plain centre crop;
- ``rotate: d`` turns each image by an angle from U[-d, d] degrees (positive: counter-clockwise)
  about the crop's centre.

With either of the last two, the crop, flip and rotation become one affine map per image,
resampled bilinearly (``netspec.kernels.cpu.data.warp_affine_forward``); positions outside
the image get the mean (0 after subtracting it).  Every random number of a batch comes from
the Generator the caller passes, drawn in a fixed order, so a batch depends only on it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from netspec.errors import DataError

FIELDS = ("scale", "mean_value", "mean_file", "crop_size", "mirror", "force_color", "force_gray",
          "brightness", "contrast", "crop_scale", "crop_ratio", "rotate")


def load_mean(path: Path) -> np.ndarray:
    """A mean image from ``.npy`` or Caffe's ``.binaryproto``; a leading axis of 1 is dropped."""
    if not Path(path).is_file():
        raise DataError(f"mean file '{path}' does not exist")
    if str(path).lower().endswith(".npy"):
        try:
            m = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read mean file '{path}': {e}") from None
    else:
        from netspec.data.blobproto import read_blobproto

        m = read_blobproto(path)
    m = np.asarray(m, dtype=np.float32)
    while m.ndim > 3 and m.shape[0] == 1:
        m = m[0]
    return m


class Transform:
    """One data layer's preprocessing, for records of ``in_shape`` (one sample, before the crop)."""

    def __init__(self, params: dict | None, phase: str, in_shape: tuple[int, ...],
                 base_dir: Path | None = None, raw_uint8: bool = False):
        p = dict(params or {})
        self.train = phase == "TRAIN"
        self.in_shape = tuple(in_shape)
        self.scale = float(p.get("scale", 1.0))
        self.crop = int(p.get("crop_size", 0) or 0)
        self.mirror = bool(p.get("mirror", False))
        self.brightness = float(p.get("brightness", 0.0)) if self.train else 0.0
        self.contrast = float(p.get("contrast", 0.0)) if self.train else 0.0
        self.rotate = float(p.get("rotate", 0.0)) if self.train else 0.0
        cs = p.get("crop_scale")
        self.crop_scale = tuple(float(v) for v in cs) if cs is not None and self.train else None
        self.crop_ratio = tuple(float(v) for v in p.get("crop_ratio", (3 / 4, 4 / 3)))
        self.clip = raw_uint8
        spatial = self.crop or self.mirror or self.rotate or self.crop_scale is not None
        if spatial and len(self.in_shape) != 3:
            raise DataError(f"crop, mirror and rotation need image records (C, H, W), got records of shape "
                            f"{list(self.in_shape)}")
        if self.crop and (self.crop > self.in_shape[1] or self.crop > self.in_shape[2]):
            raise DataError(f"crop_size {self.crop} is larger than the images ({self.in_shape[1]}x{self.in_shape[2]})")
        self.mean = self._mean(p, base_dir)
        self.warp = self.rotate > 0 or self.crop_scale is not None
        self.out_shape = (self.in_shape[0], self.crop, self.crop) if self.crop else self.in_shape
        self.photometric = self.brightness > 0 or self.contrast > 0
        self.K = None
        if self.warp:
            # host-side preprocessing: always the CPU kernel, whatever device runs the net
            from netspec.kernels.cpu import data as K

            self.K = K

    def _mean(self, p: dict, base_dir: Path | None) -> np.ndarray | None:
        if "mean_file" in p:
            from netspec.data.catalog import resolve_path

            m = load_mean(resolve_path(p["mean_file"], base_dir))
            if m.shape != self.in_shape:
                raise DataError(f"mean file '{p['mean_file']}' holds an image of shape {list(m.shape)}, but the "
                                f"records are {list(self.in_shape)} (the mean is taken before cropping)")
            return m
        if "mean_value" in p:
            v = p["mean_value"]
            vals = np.asarray(v if isinstance(v, list) else [v], dtype=np.float32)
            c = self.in_shape[0] if self.in_shape else 1
            if vals.size == 1:
                return vals.reshape((1,) * len(self.in_shape))
            if vals.size != c:
                raise DataError(f"mean_value gives {vals.size} values for {c} channels; give one value, or one "
                                f"per channel")
            return vals.reshape((c,) + (1,) * (len(self.in_shape) - 1))
        return None

    @property
    def random(self) -> bool:
        """Whether a batch draws random numbers (else ``apply`` needs no Generator)."""
        return bool((self.crop and self.train) or self.mirror or self.warp or self.photometric)

    @property
    def is_identity(self) -> bool:
        return (self.scale == 1.0 and self.mean is None and not self.crop and not self.mirror
                and not self.warp and not self.photometric)

    # ---- randomness: every draw of a batch, in a fixed order -----------------------------
    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        d: dict[str, np.ndarray] = {}
        if len(self.in_shape) == 3:
            _, H, W = self.in_shape
        if self.crop_scale is not None:
            area = rng.uniform(self.crop_scale[0], self.crop_scale[1], n) * H * W
            ratio = np.exp(rng.uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), n))
            bw = np.minimum(np.sqrt(area * ratio), W)
            bh = np.minimum(np.sqrt(area / ratio), H)
            d["box"] = np.stack([rng.uniform(0, 1, n) * (H - bh), rng.uniform(0, 1, n) * (W - bw), bh, bw], 1)
        elif self.crop:
            if self.train:
                d["oh"] = rng.integers(0, H - self.crop + 1, n)
                d["ow"] = rng.integers(0, W - self.crop + 1, n)
            else:
                d["oh"] = np.full(n, (H - self.crop) // 2)
                d["ow"] = np.full(n, (W - self.crop) // 2)
        if self.rotate > 0:
            d["angle"] = rng.uniform(-self.rotate, self.rotate, n)
        if self.mirror:
            d["flip"] = rng.random(n) < 0.5
        if self.brightness > 0:
            d["brightness"] = rng.uniform(1 - self.brightness, 1 + self.brightness, n)
        if self.contrast > 0:
            d["contrast"] = rng.uniform(1 - self.contrast, 1 + self.contrast, n)
        return d

    def affine(self, d: dict[str, np.ndarray], n: int) -> np.ndarray:
        """(n, 2, 3): output pixel (i, j) -> input (y, x), crop box, flip and rotation combined."""
        _, H, W = self.in_shape
        oh, ow = self.out_shape[1:]
        if "box" in d:
            top, left, bh, bw = d["box"].T
        elif "oh" in d:
            top, left = d["oh"].astype(np.float64), d["ow"].astype(np.float64)
            bh = bw = np.full(n, float(self.crop))
        else:
            top = left = np.zeros(n)
            bh, bw = np.full(n, float(H)), np.full(n, float(W))
        theta = np.deg2rad(d["angle"]) if "angle" in d else np.zeros(n)
        f = np.where(d["flip"], -1.0, 1.0) if "flip" in d else np.ones(n)
        sy, sx = bh / oh, bw / ow
        cos, sin = np.cos(theta), np.sin(theta)
        # box-centred coordinates: v = sy*i + v0, u = f*(sx*j + u0), rotated, then shifted to the box centre
        v0, u0 = 0.5 * sy - bh / 2, 0.5 * sx - bw / 2
        cy, cx = top + bh / 2 - 0.5, left + bw / 2 - 0.5
        m = np.empty((n, 2, 3))
        m[:, 0, 0] = cos * sy
        m[:, 0, 1] = sin * f * sx
        m[:, 0, 2] = cy + sin * f * u0 + cos * v0
        m[:, 1, 0] = -sin * sy
        m[:, 1, 1] = cos * f * sx
        m[:, 1, 2] = cx + cos * f * u0 - sin * v0
        return m

    # ---- the batch ------------------------------------------------------------------------
    def apply(self, raw: np.ndarray, out: np.ndarray, rng: np.random.Generator | None,
              work: np.ndarray | None = None, part: tuple[int, int] | None = None) -> None:
        """Transform ``raw`` (n, *in_shape) into ``out`` (n, *out_shape) in ``out``'s dtype.

        ``work`` (n, *in_shape) of ``out``'s dtype is scratch space (allocated when not given).
        ``part=(offset, total)``: ``raw`` holds records ``[offset, offset + n)`` of a batch of
        ``total`` (one rank's share of a global batch): they get the draws the whole batch would
        give them.
        """
        n = raw.shape[0]
        if part is None or (part[0] == 0 and part[1] == n):
            d = self.draw(rng, n)       # rng may be None when nothing is random (see ``random``)
        else:
            off, total = part
            d = {k: v[off:off + n] for k, v in self.draw(rng, total).items()}
        dt = out.dtype.type
        if not (self.crop or self.warp or self.photometric):
            # values stay in place: write straight into the output
            np.copyto(out, raw, casting="unsafe")
            if self.mean is not None:
                out -= self.mean
            if "flip" in d:
                out[d["flip"]] = out[d["flip"]][..., ::-1]
            if self.scale != 1.0:
                out *= dt(self.scale)
            return
        x = work if work is not None else np.empty(raw.shape, dtype=out.dtype)
        np.copyto(x, raw, casting="unsafe")
        if self.photometric:
            axes = tuple(range(1, x.ndim))
            shape = (n,) + (1,) * (x.ndim - 1)
            if "brightness" in d:
                x *= d["brightness"].astype(x.dtype).reshape(shape)
            if "contrast" in d:
                m = x.mean(axis=axes, keepdims=True)
                x -= m
                x *= d["contrast"].astype(x.dtype).reshape(shape)
                x += m
            if self.clip:
                np.clip(x, 0, 255, out=x)
        if self.mean is not None:
            x -= self.mean
        if self.warp:
            self.K.warp_affine_forward(out, x, self.affine(d, n), 0.0)
        else:
            if self.crop:
                c = self.crop
                win = np.lib.stride_tricks.sliding_window_view(x, (c, c), axis=(2, 3))
                out[...] = win[np.arange(n), :, d["oh"], d["ow"]]
            else:
                out[...] = x
            if "flip" in d:
                out[d["flip"]] = out[d["flip"]][..., ::-1]
        if self.scale != 1.0:
            out *= dt(self.scale)
