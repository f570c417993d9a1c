"""Errors said where they start: data that breaks while a net runs, shapes made far from the layer
that finds them wrong, and a top-level key of the wrong kind that YAML reports further down.

A record that cannot be read mid-run (an image truncated or deleted after the net was built) is
a ``DataError`` naming the net file's line, the data layer, the file and the record's index,
raised in ``forward`` whether the batch was made by the prefetch thread or inline, and raised
again (not a hang) on the next call.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from netspec import api
from netspec.errors import DataError, NetspecError, ShapeError, SpecError
from netspec.spec.load import load_text

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _images(folder: Path, n: int = 6) -> list[Path]:
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(p)
        paths.append(p)
    (folder / "list.txt").write_text("".join(f"{p.name} {i % 2}\n" for i, p in enumerate(paths)))
    return paths


def _image_net(folder: Path, prefetch: int):
    text = ("layers:\n"
            f"  - {{name: img, type: ImageData, top: [data, label], source: list.txt, batch_size: 2, is_color: false, "
            f"shuffle: false, prefetch: {prefetch}}}\n"
            "  - {name: ip, type: InnerProduct, num_output: 2}\n"
            "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}\n")
    net = api.load_net_text(text, file=str(folder / "net.yaml"), base_dir=folder)
    return api.build_net(net, "TRAIN")


def _close(n) -> None:
    for lp in n.layers:
        lp.layer.close()


@pytest.mark.parametrize("prefetch", [0, 2], ids=["inline", "thread"])
@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_an_image_broken_mid_run_is_a_located_error_with_its_record(tmp_path, prefetch, damage):
    paths = _images(tmp_path)
    n = _image_net(tmp_path, prefetch)
    n.forward()                                   # records 0 and 1 read fine
    victim = paths[4]
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:30])
    else:
        victim.unlink()
    with pytest.raises(DataError) as e:
        for _ in range(10):                       # the thread may hold batches made before the damage;
            n.forward()                           # the next epoch reads record 4 again
    msg = str(e.value)
    assert "net.yaml:2" in msg and "layer 'img' (ImageData)" in msg, msg
    assert "4.png" in msg and "record 4" in msg and "line 5 of" in msg, msg
    assert "does not exist" in msg if damage == "deleted" else "cannot" in msg, msg
    assert "Traceback" not in msg
    with pytest.raises(DataError):                 # again, not a hang
        n.forward()
    _close(n)


def test_a_truncated_idx_file_names_the_record_where_it_ends(tmp_path):
    head = bytes([0, 0, 8, 3]) + struct.pack(">III", 5, 4, 4)
    (tmp_path / "t-images-idx3-ubyte").write_bytes(head + bytes(16 * 3 + 7))   # record 3 is cut short
    net = api.load_net_text(
        "layers:\n"
        "  - {name: d, type: Data, top: data, source: t-images-idx3-ubyte, batch_size: 2}\n"
        "  - {name: ip, type: InnerProduct, num_output: 2}\n", file=str(tmp_path / "net.yaml"), base_dir=tmp_path)
    with pytest.raises(DataError) as e:
        api.build_net(net, "TRAIN").forward()
    msg = str(e.value)
    assert "net.yaml:2" in msg and "layer 'd' (Data)" in msg and "inside record 3" in msg, msg


def test_a_missing_image_in_a_folder_names_its_record_and_class(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "set" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "set" / c / f"{i}.png")
    from netspec.data.sources import Options, clear_cache, open_source

    clear_cache()
    src = open_source(str(tmp_path / "set"), None, Options())
    (tmp_path / "set" / "dog" / "0.png").unlink()
    outs = [np.empty((4,) + s, d) for s, d in zip(src.shapes, src.dtypes)]
    with pytest.raises(DataError) as e:
        src.read(np.arange(4), outs)
    assert "record 2, class 'dog'" in str(e.value) and "does not exist" in str(e.value)


# ---- shape errors name where the shape was made ------------------------------------------------
def _check(text: str) -> NetspecError:
    """The one error ``check`` raises (unwrapped from its list), or the list when there are several."""
    with pytest.raises(NetspecError) as e:
        api.check(load_text(text, file="net.yaml"))
    errors = getattr(e.value, "errors", None)
    return errors[0] if errors and len(errors) == 1 else e.value


def test_a_rank_error_names_the_input_layer_that_made_the_shape():
    err = _check("name: x\n"
                 "layers:\n"
                 "  - name: data\n"
                 "    type: Input\n"
                 "    shape: [4, 10]\n"
                 "  - {name: relu, type: ReLU, top: data}\n"
                 "  - {name: conv, type: Convolution, num_output: 3, kernel_size: 3}\n")
    assert isinstance(err, ShapeError)
    text = str(err)
    assert text.startswith("net.yaml:7:") and "layer 'conv' (Convolution)" in text, text
    # the in-place ReLU keeps the shape; the Input's shape line is where it was made
    assert "bottom 'data' [4, 10] is made by layer 'data' (Input) at line 5" in text, text


def test_a_size_error_names_the_layer_whose_output_has_the_wrong_size():
    err = _check("name: x\n"
                 "layers:\n"
                 "  - {name: data, type: Input, shape: [2, 1, 12, 12]}\n"
                 "  - {name: pool, type: Pooling, pool: MAX, kernel_size: 4, stride: 4}\n"
                 "  - {name: split_me, type: ReLU, bottom: pool, top: r}\n"
                 "  - {name: conv, type: Convolution, bottom: r, num_output: 2, kernel_size: 5}\n"
                 "  - {name: conv_b, type: Convolution, bottom: r, num_output: 2, kernel_size: 1}\n")
    text = str(err)
    assert text.startswith("net.yaml:6:") and "layer 'conv' (Convolution)" in text, text
    # r is used twice, so a Split sits between; the origin is still the ReLU that made r
    assert "bottom 'r' [2, 1, 3, 3] is made by layer 'split_me' (ReLU) at line 5" in text, text


def test_a_concat_mismatch_names_both_producers():
    err = _check("name: x\n"
                 "layers:\n"
                 "  - {name: data, type: Input, shape: [2, 3, 8, 8]}\n"
                 "  - {name: conv1, type: Convolution, bottom: data, num_output: 4, kernel_size: 3}\n"
                 "  - {name: cat, type: Concat, bottom: [data, conv1]}\n")
    text = str(err)
    assert text.startswith("net.yaml:5:"), text
    assert "made by layer 'data' (Input) at line 3" in text and "made by layer 'conv1' (Convolution) at line 4" in text


# ---- wrongly typed keys point at their own line ------------------------------------------------
@pytest.mark.parametrize("text, line, fragment", [
    ("name: x\nlayers:\n  name: a\n  type: Input\n", 2, "expected a list"),
    ("name: x\n\nlayers: 3\n", 3, "expected a list"),
    ("name: x\nstate: [TRAIN]\nlayers:\n  - {name: d, type: Input, shape: [1, 2]}\n", 2, "expected a mapping"),
    ("name: x\nlayers:\n  - name: d\n    type: Input\n    shape: [1, 2]\n    include: TRAIN\n", 6, "include"),
    ("name: x\nlayers:\n  - {name: d, type: Input, shape: [1, 2], include: [TRAIN]}\n", 3, "include"),
    # YAML finds the problem on line 6; the key whose value is both a mapping and a list is line 2
    ("name: x\nlayers:\n  name: a\n  type: Input\n\n  - {name: b, type: ReLU}\n", 2,
     "the value of 'layers' is a mapping"),
    ("name: x\nsolver:\n  base_lr: 0.1\n  - max_iter: 3\nlayers: []\n", 2, "the value of 'solver' is a mapping"),
], ids=["layers-map", "layers-int", "state-list", "include-string", "include-list", "yaml-below", "solver-below"])
def test_a_wrongly_typed_key_points_at_its_line(text, line, fragment):
    err = _check(text)
    errors = getattr(err, "errors", None) or [err]
    assert any(e.line == line and fragment in str(e) for e in errors), [str(e) for e in errors]


def test_yaml_problems_below_a_list_item_still_point_where_yaml_found_them():
    # a key misaligned with the '-' of its list item is an indentation slip, not a wrong type
    with pytest.raises(SpecError) as e:
        load_text("layers:\n  - name: a\n  type: ReLU\n", file="net.yaml")
    assert e.value.line == 3
