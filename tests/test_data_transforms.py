"""Transforms against hand computations and plain-loop references: Caffe's crop / mirror /
mean / scale (bit for bit), mean files (.npy and .binaryproto), brightness and contrast, and
the bilinear affine warp behind rotation and random resized crops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netspec.data.blobproto import parse_blobproto, read_blobproto, write_blobproto
from netspec.data.transforms import Transform
from netspec.errors import DataError


def batch(n=4, c=3, h=7, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def run(params, x, phase="TRAIN", seed=5, dtype=np.float32, base_dir=None):
    t = Transform(params, phase, x.shape[1:], base_dir, x.dtype == np.uint8)
    out = np.empty((x.shape[0],) + t.out_shape, dtype=dtype)
    t.apply(x, out, np.random.default_rng(seed))
    draws = t.draw(np.random.default_rng(seed), x.shape[0])
    return out, draws, t


def caffe_loop(x, mean, scale, crop, oh, ow, flip, dtype=np.float32):
    """DataTransformer::Transform's loop: top[top_index] = (datum[data_index] - mean[data_index]) * scale."""
    n, c, h, w = x.shape
    ch, cw = (crop, crop) if crop else (h, w)
    out = np.empty((n, c, ch, cw), dtype=dtype)
    for b in range(n):
        for k in range(c):
            for i in range(ch):
                for j in range(cw):
                    jj = cw - 1 - j if flip[b] else j
                    v = dtype(x[b, k, oh[b] + i, ow[b] + j])
                    m = dtype(mean[k, oh[b] + i, ow[b] + j]) if mean is not None else dtype(0)
                    out[b, k, i, jj] = (v - m) * dtype(scale)
    return out


def test_scale_only_is_exact():
    x = batch()
    out, _, _ = run({"scale": 0.00390625}, x)
    np.testing.assert_array_equal(out, x.astype(np.float32) * np.float32(0.00390625))


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_crop_mirror_mean_file_scale_match_caffe_loop(phase):
    x = batch(n=6)
    mean = np.random.default_rng(1).uniform(0, 255, size=x.shape[1:]).astype(np.float32)
    t = Transform({"crop_size": 4, "mirror": True, "scale": 0.3}, phase, x.shape[1:])
    t.mean = mean
    out = np.empty((6, 3, 4, 4), np.float32)
    t.apply(x, out, np.random.default_rng(9))
    d = t.draw(np.random.default_rng(9), 6)
    if phase == "TEST":
        assert list(d["oh"]) == [(7 - 4) // 2] * 6 and list(d["ow"]) == [(6 - 4) // 2] * 6
    else:
        assert len(set(zip(d["oh"], d["ow"]))) > 1
    assert d["flip"].any() and not d["flip"].all()      # mirror acts in TEST too (Caffe's quirk)
    ref = caffe_loop(x, mean, 0.3, 4, d["oh"], d["ow"], d["flip"])
    np.testing.assert_array_equal(out, ref)


def test_mean_value_per_channel_and_single():
    x = batch()
    out, d, _ = run({"mean_value": [10, 20, 30], "scale": 2.0}, x)
    ref = (x.astype(np.float32) - np.array([10, 20, 30], np.float32)[:, None, None]) * np.float32(2)
    np.testing.assert_array_equal(out, ref)
    out, _, _ = run({"mean_value": 128}, x)
    np.testing.assert_array_equal(out, x.astype(np.float32) - 128)
    with pytest.raises(DataError, match="2 values for 3 channels"):
        run({"mean_value": [1, 2]}, x)


def test_mean_file_npy_and_wrong_shape(tmp_path):
    x = batch(n=2)
    mean = np.arange(np.prod(x.shape[1:]), dtype=np.float32).reshape(x.shape[1:])
    np.save(tmp_path / "mean.npy", mean[None])          # (1, C, H, W) is accepted too
    out, d, _ = run({"mean_file": "mean.npy", "crop_size": 3}, x, phase="TEST", base_dir=tmp_path)
    ref = caffe_loop(x, mean, 1.0, 3, d["oh"], d["ow"], [False, False])
    np.testing.assert_array_equal(out, ref)
    np.save(tmp_path / "small.npy", mean[:, :3, :3])
    with pytest.raises(DataError, match="taken before cropping"):
        run({"mean_file": str(tmp_path / "small.npy"), "crop_size": 3}, x)


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_binaryproto_hand_encoded_legacy_dims_unpacked_floats(tmp_path):
    # num=1 (field 1), channels=2, height=1, width=2 as varints; data (field 5) as four single fixed32s
    vals = [1.5, -2.0, 3.25, 4.0]
    buf = b"".join(bytes([k << 3]) + _varint(v) for k, v in ((1, 1), (2, 2), (3, 1), (4, 2)))
    buf += b"".join(bytes([(5 << 3) | 5]) + np.float32(v).tobytes() for v in vals)
    a = parse_blobproto(buf)
    assert a.shape == (1, 2, 1, 2)
    np.testing.assert_array_equal(a.reshape(-1), vals)
    (tmp_path / "m.binaryproto").write_bytes(buf)
    x = np.zeros((1, 2, 1, 2), np.uint8)
    out, _, _ = run({"mean_file": str(tmp_path / "m.binaryproto")}, x)
    np.testing.assert_array_equal(out.reshape(-1), -np.array(vals, np.float32))


def test_binaryproto_packed_shape_roundtrip_and_corrupt(tmp_path):
    m = np.random.default_rng(2).normal(size=(1, 3, 4, 5)).astype(np.float32)
    write_blobproto(tmp_path / "m.binaryproto", m)
    np.testing.assert_array_equal(read_blobproto(tmp_path / "m.binaryproto"), m)
    (tmp_path / "bad.binaryproto").write_bytes((tmp_path / "m.binaryproto").read_bytes()[:-7])
    with pytest.raises(DataError, match="not a valid Caffe BlobProto"):
        read_blobproto(tmp_path / "bad.binaryproto")


def test_binaryproto_matches_a_real_protobuf_encoder():
    """Encode a BlobProto with the protobuf library itself (declared from caffe.proto's fields)."""
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="blob_test.proto", package="t", syntax="proto2")
    shape = f.message_type.add(name="BlobShape")
    shape.field.add(name="dim", number=1, type=3, label=3).options.packed = True
    blob = f.message_type.add(name="BlobProto")
    blob.field.add(name="shape", number=7, type=11, label=1, type_name=".t.BlobShape")
    blob.field.add(name="data", number=5, type=2, label=3).options.packed = True
    blob.field.add(name="double_data", number=8, type=1, label=3).options.packed = True
    for k, n in enumerate(("num", "channels", "height", "width"), 1):
        blob.field.add(name=n, number=k, type=5, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.BlobProto"))
    m = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) / 7
    msg = cls()
    msg.shape.dim.extend(m.shape)
    msg.data.extend(m.reshape(-1).tolist())
    np.testing.assert_array_equal(parse_blobproto(msg.SerializeToString()), m)
    legacy = cls(num=1, channels=2, height=3, width=4)
    legacy.double_data.extend(m.reshape(-1).astype(np.float64).tolist())
    np.testing.assert_allclose(parse_blobproto(legacy.SerializeToString()), m, rtol=1e-7)


def test_brightness_and_contrast_by_hand():
    x = batch(n=3)
    out, d, _ = run({"brightness": 0.5, "contrast": 0.5, "scale": 0.5}, x, dtype=np.float64)
    ref = np.empty(out.shape)
    for b in range(3):
        v = x[b].astype(np.float64) * d["brightness"][b]
        m = v.mean()
        v = (v - m) * d["contrast"][b] + m
        ref[b] = np.clip(v, 0, 255) * 0.5
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert (0.5 <= d["brightness"]).all() and (d["brightness"] <= 1.5).all()


def test_augmentations_are_off_in_test():
    x = batch()
    params = {"brightness": 0.5, "contrast": 0.5, "rotate": 30, "crop_scale": [0.2, 1.0], "crop_size": 5,
              "scale": 0.1}
    out, d, t = run(params, x, phase="TEST")
    assert not t.warp and not t.photometric and set(d) == {"oh", "ow"}
    ref = caffe_loop(x, None, 0.1, 5, d["oh"], d["ow"], [False] * 4)
    np.testing.assert_array_equal(out, ref)


def bilinear_ref(img, mats, oh, ow, fill=0.0):
    """Plain loops: each output pixel samples its affine source point bilinearly."""
    n, c, h, w = img.shape
    out = np.empty((n, c, oh, ow))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                y = mats[b, 0, 0] * i + mats[b, 0, 1] * j + mats[b, 0, 2]
                x = mats[b, 1, 0] * i + mats[b, 1, 1] * j + mats[b, 1, 2]
                y0, x0 = math.floor(y), math.floor(x)
                for k in range(c):
                    acc = 0.0
                    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                            v = img[b, k, yy, xx] if 0 <= yy < h and 0 <= xx < w else fill
                            acc += wy * wx * v
                    out[b, k, i, j] = acc
    return out


def test_warp_kernel_matches_loop_reference():
    from netspec.kernels.cpu.data import warp_affine_forward

    rng = np.random.default_rng(3)
    img = rng.normal(size=(3, 2, 6, 5))
    mats = rng.normal(size=(3, 2, 3)) * [[[0.7, 0.7, 2]]]
    for dtype in (np.float64, np.float32):
        out = np.empty((3, 2, 4, 7), dtype)
        warp_affine_forward(out, img.astype(dtype), mats, -1.5)
        np.testing.assert_allclose(out, bilinear_ref(img, mats, 4, 7, -1.5), rtol=1e-5, atol=1e-5)


def test_rotation_by_90_degrees_turns_the_image():
    x = batch(n=2, c=1, h=5, w=5)
    t = Transform({"rotate": 90}, "TRAIN", x.shape[1:], raw_uint8=True)
    d = {"angle": np.array([90.0, -90.0])}
    out = np.empty((2, 1, 5, 5))
    t.K.warp_affine_forward(out, x.astype(np.float64), t.affine(d, 2), 0.0)
    # positive angles turn counter-clockwise (as torchvision's rotate)
    np.testing.assert_allclose(out[0, 0], np.rot90(x[0, 0], 1), atol=1e-9)
    np.testing.assert_allclose(out[1, 0], np.rot90(x[1, 0], -1), atol=1e-9)


def test_warp_with_identity_box_and_flip_is_exact():
    x = batch(n=4)
    t = Transform({"rotate": 10, "mirror": True, "crop_size": 4}, "TRAIN", x.shape[1:], raw_uint8=True)
    d = {"oh": np.array([0, 1, 3, 2]), "ow": np.array([2, 0, 1, 2]), "angle": np.zeros(4),
         "flip": np.array([True, False, True, False])}
    out = np.empty((4, 3, 4, 4), np.float32)
    t.K.warp_affine_forward(out, x.astype(np.float32), t.affine(d, 4), 0.0)
    ref = caffe_loop(x, None, 1.0, 4, d["oh"], d["ow"], d["flip"])
    np.testing.assert_array_equal(out, ref)


def test_random_resized_crop_box_and_resampling():
    x = batch(n=5, h=12, w=10)
    params = {"crop_scale": [0.25, 0.5], "crop_ratio": [0.5, 2.0], "crop_size": 6, "mean_value": 100}
    out, d, t = run(params, x, dtype=np.float64)
    top, left, bh, bw = d["box"].T
    area = bh * bw / (12 * 10)
    assert ((area > 0.25 - 1e-9) & (area < 0.5 + 1e-9)).all()
    assert ((bw / bh >= 0.5 - 1e-9) & (bw / bh <= 2 + 1e-9)).all()
    assert (top >= 0).all() and (top + bh <= 12 + 1e-9).all() and (left + bw <= 10 + 1e-9).all()
    ref = bilinear_ref(x.astype(np.float64) - 100, t.affine(d, 5), 6, 6)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-9)


def test_transform_config_errors():
    with pytest.raises(DataError, match="larger than the images"):
        Transform({"crop_size": 9}, "TRAIN", (1, 8, 8))
    with pytest.raises(DataError, match=r"need image records \(C, H, W\)"):
        Transform({"mirror": True}, "TRAIN", (5,))


@pytest.mark.parametrize("transform, match", [
    ({"rotate": 200}, "must be <= 180"),
    ({"crop_ratio": [0.5, 2.0]}, "crop_scale"),
    ({"crop_scale": [0.0, 1.0]}, "must be > 0"),
    ({"brigthness": 0.1}, "did you mean 'brightness'"),
    ({"force_color": True, "force_gray": True}, "force_gray"),
])
def test_transform_schema(transform, match):
    from netspec.errors import SpecError
    from netspec.testing import validate_layer

    with pytest.raises(SpecError, match=match):
        validate_layer({"name": "d", "type": "Data", "source": "x.npz", "batch_size": 1, "transform": transform})
