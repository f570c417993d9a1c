"""The protobuf text-format reader: syntax, values, typed messages, and located errors."""

from __future__ import annotations

import math

import pytest

from netspec.caffe import textformat as tf
from netspec.errors import ErrorList, SpecError


def net(text: str) -> tf.Msg:
    return tf.load(text, "NetParameter", "t.prototxt")


def layer(text: str) -> tf.Msg:
    return net(f"layer {{ {text} }}")["layer"][0]


def error(text: str, message: str = "NetParameter") -> SpecError:
    with pytest.raises(SpecError) as e:
        tf.load(text, message, "bad.prototxt")
    err = e.value
    return err.errors[0] if isinstance(err, ErrorList) else err


# ---- syntax ---------------------------------------------------------------------------------

def test_messages_with_and_without_colon_and_angle_brackets():
    m = net('layer { name: "a" type: "ReLU" } layer: { name: "b" type: "ReLU" } layer < name: "c" type: "TanH" >')
    assert [x["name"] for x in m["layer"]] == ["a", "b", "c"]
    assert m["layer"][2]["type"] == "TanH"


def test_repeated_fields_in_both_forms_and_separators():
    m = layer('name: "x"; type: "Concat", bottom: "a" bottom: "b" top: "c" loss_weight: [1, 0.5]')
    assert m["bottom"] == ["a", "b"]
    assert m["top"] == ["c"]
    assert m["loss_weight"] == [1, 0.5]


def test_comments_are_kept_with_the_field_they_describe():
    text = ("# header line\n\n# about the name\nname: \"n\"  # after the name\n"
            "layer {  # head of the layer\n  # inside\n  name: \"a\"\n  type: \"ReLU\"\n  # before the brace\n}\n"
            "# the end\n")
    m = net(text)
    meta = m.meta["name"][0]
    assert [c.text for c in meta.comments] == [" header line", " about the name"]
    assert meta.comments[0].line == 1 and meta.comments[1].line == 3
    assert meta.trailing.text == " after the name"
    lm = m.meta["layer"][0]
    assert lm.head.text == " head of the layer"
    lay = m["layer"][0]
    assert [c.text for c in lay.meta["name"][0].comments] == [" inside"]
    assert [c.text for c in lay.end_comments] == [" before the brace"]
    assert [c.text for c in m.end_comments] == [" the end"]


def test_numbers_ints_floats_exponents_specials():
    m = tf.load("base_lr: 1e-3 gamma: -2.5E+2 power: .5 momentum: 3f weight_decay: inf clip_gradients: -inf "
                "delta: nan max_iter: 0x10 stepsize: 010 test_iter: -3 random_seed: 12",
                "SolverParameter")
    assert m["base_lr"] == 1e-3 and m["gamma"] == -250.0 and m["power"] == 0.5 and m["momentum"] == 3.0
    assert m["weight_decay"] == math.inf and m["clip_gradients"] == -math.inf and math.isnan(m["delta"])
    assert m["max_iter"] == 16 and m["stepsize"] == 8          # hex, and protobuf's octal
    assert m["test_iter"] == [-3] and m["random_seed"] == 12
    assert isinstance(tf.load("base_lr: 1", "SolverParameter")["base_lr"], int)   # kept as written


def test_strings_both_quotes_escapes_and_adjacent_literals():
    m = layer(r"""name: 'it\'s' type: "a\tb\n\x41\101\"\\" top: "con" 'cat'""")
    assert m["name"] == "it's"
    assert m["type"] == 'a\tb\nAA"\\'
    assert m["top"] == ["concat"]


def test_enums_by_name_or_number_and_bools():
    m = layer('name: "p" type: "Pooling" pooling_param { pool: 1 global_pooling: true round_mode: FLOOR }')
    assert m["pooling_param"]["pool"] == "AVE" and m["pooling_param"]["round_mode"] == "FLOOR"
    assert m["pooling_param"]["global_pooling"] is True
    assert layer('name: "r" type: "Convolution" convolution_param { bias_term: f }')["convolution_param"][
        "bias_term"] is False


def test_v1_layers_and_their_enum_types():
    m = net('layers { name: "c" type: CONVOLUTION blobs_lr: 1 blobs_lr: 2 include: { phase: TEST } }')
    lay = m["layers"][0]
    assert lay["type"] == "CONVOLUTION" and lay["blobs_lr"] == [1, 2]
    assert lay["include"][0]["phase"] == "TEST"


def test_positions_of_values():
    m = net('name: "n"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom: "x"\n  bottom: "y"\n}\n')
    lay = m["layer"][0]
    assert m.where("layer") == (2, 1)
    assert lay.where("bottom", 1) == (6, 3)


# ---- errors: every one located file:line:column --------------------------------------------

@pytest.mark.parametrize("text, line, at, words", [
    ('layer {\n  name: "a"\n  type: "ReLU"\n', 1, "{", ["'{' of 'layer'", "never closed"]),
    ('layer {\n  name: "a\n}\n', 2, '"a', ["no closing"]),
    ('layer {\n  name: "p" type: "Pooling"\n  pooling_param { pool: MAXIMUM }\n}\n', 3, "MAXIMUM",
     ["MAXIMUM", "MAX, AVE, STOCHASTIC"]),
    ('layer {\n  name: "a"\n  botom: "x"\n}\n', 3, "botom", ["unknown field 'botom'", "did you mean 'bottom'"]),
    ('layer {\n  name: "c" type: "Convolution"\n  convolution_param { num_output: "20" }\n}\n', 3, '"20"',
     ["expected an integer", '"20"']),
    ('layer {\n  name: "c" type: "Convolution"\n  convolution_param { num_output: 2.5 }\n}\n', 3, "2.5",
     ["expected an integer", "2.5"]),
    ('layer { name: "c" type: Convolution }\n', 1, "Convolution", ["expected a quoted string", "quoted name"]),
    ('layer { name: "c" type: "ReLU" relu_param { negative_slope: abc } }\n', 1, "abc", ["expected a number"]),
    ('layer { name: "c" type: "Convolution" convolution_param { bias_term: 3 } }\n', 1, "3 }",
     ["expected true or false"]),
    ('layer { name: "c" type: "Convolution" convolution_param { kernel_size: -3 } }\n', 1, "-3",
     ["must not be negative"]),
    ('layer { name "c" }\n', 1, '"c"', ["expected ':' or '{'"]),
    ('layer { name: "a" name: "b" }\n', 1, 'name: "b"', ["given twice"]),
    ('layer { name: "a" weight_filler { } }\n', 1, "weight_filler", ["unknown field 'weight_filler'"]),
    ('layer { name { } }\n', 1, "name", ["takes a value"]),
    ('layer { transform_param: 3 }\n', 1, "3", ["message", "transform_param {"]),
    ('}\n', 1, "}", ["unexpected '}'"]),
    ('layer { name: "a" ]\n', 1, "]", ["expected a field name"]),
    ('layer { name: @ }\n', 1, "@", ["unexpected character"]),
    ('layer { name: "a" type: "R" loss_weight: 12abc }\n', 1, "12abc", ["not a number"]),
    ('layer { name: "x\\q" }\n', 1, "\\q", ["unknown escape"]),
    ('layers { layer { name: "old" } }\n', 1, "layer {", ["V0 layer"]),
])
def test_malformed_prototxt_errors_are_located(text, line, at, words):
    err = error(text)
    col = text.splitlines()[line - 1].index(at) + 1
    assert err.file == "bad.prototxt"
    assert (err.line, err.column) == (line, col), str(err)
    for w in words:
        assert w in str(err), str(err)
    assert str(err).startswith(f"bad.prototxt:{line}:{col}:")


def test_all_type_errors_of_a_file_are_reported_together():
    with pytest.raises(ErrorList) as e:
        net('layer { nme: "a" }\nlayer { name: "b" type: "Pooling" pooling_param { pool: MEAN } }\n')
    assert [(x.line, x.column) for x in e.value.errors] == [(1, 9), (2, 57)]


def test_generic_tree_needs_no_message_type():
    tree = tf.parse('a { b: 1 c: [x, y] } d: "s"')
    assert [e.name for e in tree.entries] == ["a", "d"]
    inner = tree.entries[0].value
    assert [e.name for e in inner.entries] == ["b", "c"]
    assert [v.text for v in inner.entries[1].value] == ["x", "y"]


def test_mangled_files_give_located_errors_never_a_crash():
    """Random edits of real prototxts: every outcome is a result or a located NetspecError."""
    import random
    from pathlib import Path

    from netspec.caffe.convert_net import NetOptions, convert_net_text
    from netspec.errors import NetspecError

    files = sorted((Path(__file__).parent / "fixtures" / "caffe").glob("*.prototxt"))
    pieces = ["{", "}", ":", '"', "'", "-", "1e5", "nan", "layer", "layers", "name", "type", "top", "param",
              "include", "phase: TEST", "#", "\n", "[", "]", ",", "0", "-1", "99999999999999999999", "x",
              "blobs_lr: 2", 'input: "q"', "input_dim: 1", "kernel_size: 0", "engine: CUDNN", "concat_dim: 5",
              "normalize: true", '"Python"']
    rng = random.Random(0)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(150):
        text = rng.choice(files).read_text()
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(text) + 1)
            if rng.random() < 0.6:
                text = text[:pos] + " " + rng.choice(pieces) + " " + text[pos:]
            else:
                text = text[:pos] + text[pos + rng.randint(1, 15):]
        try:
            convert_net_text(text, "m.prototxt", NetOptions())
            outcomes["ok"] += 1
        except NetspecError as e:
            assert str(e) and (e.file == "m.prototxt" or "m.prototxt" in str(e))
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0
