"""Loading net files: line maps, YAML quirks, syntax errors, JSON, anchors and merges.

Every malformed text must become one located ``SpecError`` (file, line, and column where the
parser knows it), never a PyYAML or json exception.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netspec import api
from netspec.errors import SpecError
from netspec.spec.load import load_file, load_text
from netspec.spec.model import to_plain

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "models" / "lenet" / "train_val.yaml"


def _error(text: str, name: str = "net.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        load_text(text, file=name)
    return info.value


def _file_error(tmp_path: Path, name: str, content: str | bytes) -> SpecError:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    with pytest.raises(SpecError) as info:
        load_file(p)
    return info.value


# ---- line maps --------------------------------------------------------------------------

BLOCK = """\
netspec: 1
name: demo
layers:
  - name: data
    type: Input
    top: data
    shape: [1, 3, 8, 8]
  - name: conv
    type: Convolution
    num_output: 4
    kernel_size: 3
    weight_filler:
      type: gaussian
      std: 0.01
    param:
      weight:
        lr_mult: 1
"""


def test_block_style_lines_point_at_keys():
    doc = load_text(BLOCK, file="b.yaml")
    assert doc.line(("name",)) == 2
    assert doc.line(("layers",)) == 3
    assert doc.line(("layers", 0)) == 4
    assert doc.line(("layers", 0, "shape")) == 7
    assert doc.line(("layers", 1)) == 8
    assert doc.line(("layers", 1, "kernel_size")) == 11
    # nested mappings: the key's own line, and the lines of the keys inside it
    assert doc.line(("layers", 1, "weight_filler")) == 12
    assert doc.line(("layers", 1, "weight_filler", "std")) == 14
    assert doc.line(("layers", 1, "param", "weight", "lr_mult")) == 17


def test_missing_path_falls_back_to_nearest_ancestor():
    doc = load_text(BLOCK, file="b.yaml")
    assert doc.line(("layers", 1, "no_such_field")) == 8
    assert doc.line(("layers", 1, "weight_filler", "sparse")) == 12


FLOW = """\
layers:
  - {name: data, type: Input, top: data, shape: [1, 3, 8, 8]}
  - {name: conv, type: Convolution, num_output: 4,
     kernel_size: 3, weight_filler: {type: gaussian,
                                     std: 0.01}}
"""


def test_flow_style_lines_follow_each_key():
    doc = load_text(FLOW, file="f.yaml")
    assert doc.line(("layers", 0)) == 2
    assert doc.line(("layers", 0, "shape")) == 2
    assert doc.line(("layers", 1)) == 3
    assert doc.line(("layers", 1, "num_output")) == 3
    assert doc.line(("layers", 1, "kernel_size")) == 4
    assert doc.line(("layers", 1, "weight_filler", "type")) == 4
    assert doc.line(("layers", 1, "weight_filler", "std")) == 5


def test_sequence_items_have_lines():
    doc = load_text("layers:\n  - a\n  -\n    b\n  - [c,\n     d]\n", file="s.yaml")
    assert doc.line(("layers", 0)) == 2
    assert doc.line(("layers", 1)) == 4
    assert doc.line(("layers", 2, 1)) == 6


def test_schema_error_reports_line_of_nested_field():
    text = BLOCK.replace("std: 0.01", "sdt: 0.01")
    with pytest.raises(SpecError) as info:
        api.load_net_text(text, file="b.yaml")
    err = info.value
    assert err.line == 14
    assert err.layer == "conv" and err.layer_type == "Convolution"
    assert err.field == "weight_filler.sdt"
    assert "did you mean 'std'" in str(err)


# ---- scalars ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("1E5", 1e5), ("-2e+3", -2000.0), ("1.5e-3", 1.5e-3), ("5e0", 5.0),
    ("1.0e-4", 1e-4), (".5", 0.5), ("3", 3), ("0.1", 0.1),
])
def test_exponent_floats_without_a_dot_are_floats(text, value):
    data = load_text(f"a: {text}\n").data
    assert data["a"] == value
    assert type(data["a"]) is type(value)


def test_quoted_exponent_stays_a_string():
    assert load_text("a: '1e-4'\n").data["a"] == "1e-4"


def test_exponent_float_reaches_the_schema_as_a_number():
    text = ("layers:\n  - {name: d, type: Input, top: data, shape: [2, 4]}\n"
            "  - {name: ip, type: InnerProduct, num_output: 2,\n"
            "     weight_filler: {type: gaussian, std: 1e-2}}\n")
    net = api.load_net_text(text)
    assert net.layers[1]["weight_filler"]["std"] == pytest.approx(0.01)


# ---- duplicate keys ---------------------------------------------------------------------

def test_duplicate_top_level_key():
    err = _error("name: a\nlayers: []\nname: b\n")
    assert err.line == 3
    assert "'name' appears twice" in err.message and "line 1" in err.message


def test_duplicate_key_inside_a_layer():
    err = _error("layers:\n  - name: a\n    type: ReLU\n    type: Sigmoid\n")
    assert err.line == 4
    assert "'type' appears twice" in err.message and "line 3" in err.message


def test_duplicate_key_in_flow_mapping():
    err = _error("layers:\n  - {name: a, type: ReLU,\n     name: b}\n")
    assert err.line == 3
    assert "'name' appears twice" in err.message


# ---- syntax errors ----------------------------------------------------------------------

def test_tab_indentation():
    err = _error("layers:\n\t- {name: a}\n")
    assert err.line == 2
    assert "tab" in err.message and "spaces" in str(err)


def test_tab_inside_a_block():
    err = _error("layers:\n  - name: a\n  \ttype: ReLU\n")
    assert err.line == 3
    assert "tab" in err.message


def test_unclosed_flow_mapping_points_at_the_opening_brace():
    err = _error("layers:\n  - {name: a, type: ReLU\n  - {name: b, type: ReLU}\n")
    assert (err.line, err.column) == (2, 5)
    assert "'{' opened here is never closed" in err.message


def test_unclosed_flow_sequence_points_at_the_opening_bracket():
    err = _error("layers:\n  - name: a\n    top: [a, b\n  - name: c\n")
    assert (err.line, err.column) == (3, 10)
    assert "'[' opened here is never closed" in err.message


def test_extra_closing_bracket():
    err = _error("shape: [1, 2]]\n")
    assert err.line == 1
    assert "']' that closes nothing" in err.message


@pytest.mark.parametrize("quote", ['"', "'"])
def test_unclosed_quote_points_at_the_opening_quote(quote):
    err = _error(f"name: {quote}abc\nlayers: []\n")
    assert (err.line, err.column) == (1, 7)
    assert "quoted string opened here is never closed" in err.message


def test_over_indented_key():
    err = _error("layers:\n  - name: a\n     type: ReLU\n")
    assert err.line == 3
    assert "indented more than the line above" in err.message


def test_under_indented_key():
    err = _error("layers:\n  - name: a\n   type: ReLU\n")
    assert err.line == 3
    assert "bad indentation" in err.message


def test_key_at_the_column_of_the_dash():
    err = _error("layers:\n  - name: a\n  type: ReLU\n")
    assert err.line == 3
    assert "column of the '-'" in err.message and "column 5" in err.message


def test_colon_inside_a_value():
    err = _error("name: a: b\n")
    assert err.line == 1
    assert "':'" in err.message and "quotes" in str(err)


def test_undefined_alias():
    err = _error("a: *nope\n")
    assert err.line == 1 and "*nope" in err.message and "&nope" in err.message


def test_python_tags_are_refused():
    err = _error("a: !!python/object/apply:os.system [ls]\n")
    assert "!!python/object/apply:os.system" in err.message and "not allowed" in err.message


def test_two_documents():
    err = _error("name: a\n---\nname: b\n")
    assert err.line == 2 and "second YAML document" in err.message


def test_bad_escape_in_double_quotes():
    err = _error('source: "C:\\data\\x"\n')
    assert err.line == 1 and "escape" in err.message


def test_syntax_errors_name_the_file():
    err = _error("a: [\n", name="models/x/train_val.yaml")
    assert str(err).startswith("models/x/train_val.yaml:1:")


# ---- empty, binary, encodings ----------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_empty_file(tmp_path, text):
    err = _file_error(tmp_path, "empty.yaml", text)
    assert err.line == 1 and "empty" in err.message
    assert err.file.endswith("empty.yaml")


def test_only_comments(tmp_path):
    err = _file_error(tmp_path, "c.yaml", "# nothing here\n# still nothing\n")
    assert "no data" in err.message


def test_binary_file(tmp_path):
    err = _file_error(tmp_path, "model.caffemodel", b"\x12\x05LeNet\xff\xfe\x01\x80\x81\x0a" * 8)
    assert "not UTF-8" in err.message and "binary" in err.message
    assert err.line == 1


def test_file_with_nul_bytes_is_binary(tmp_path):
    err = _file_error(tmp_path, "weights.yaml", b"name: a\n\x00\x00\x01\x02")
    assert "not a text file" in err.message and "--weights" in err.message
    assert err.line == 2


def test_binary_error_counts_lines_before_the_bad_byte(tmp_path):
    err = _file_error(tmp_path, "x.yaml", b"name: a\nlayers:\n  - \xff\n")
    assert err.line == 3


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + LENET.read_bytes())
    doc = load_file(p)
    assert doc.data["name"] == "LeNet"
    assert doc.line(("name",)) == load_file(LENET).line(("name",))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_file(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a folder"):
        load_file(tmp_path)


def test_non_ascii_text_is_fine():
    doc = load_text("name: Réseau — ü\nlayers: []\n")
    assert doc.data["name"] == "Réseau — ü"


# ---- JSON -------------------------------------------------------------------------------

def test_json_file_gives_the_same_net_as_yaml(tmp_path):
    yaml_net = api.load_net(LENET)
    raw = load_file(LENET).data
    p = tmp_path / "train_val.json"
    p.write_text(json.dumps(raw, indent=2))
    json_net = api.load_net(p)
    assert to_plain(json_net) == to_plain(yaml_net)
    # and it checks the same way, with the same parameter count
    assert api.check(p).plans["TRAIN"].num_params == 431080


def test_json_lines_are_mapped(tmp_path):
    p = tmp_path / "n.json"
    p.write_text('{\n  "layers": [\n    {"name": "d", "type": "Input",\n     "top": "data", "shape": [2, 3]},\n'
                 '    {"name": "ip", "type": "InnerProduct", "num_ouput": 3}\n  ]\n}\n')
    with pytest.raises(SpecError) as info:
        api.load_net(p)
    assert info.value.line == 5 and "did you mean 'num_output'" in str(info.value)


@pytest.mark.parametrize("text, line, column, fragment", [
    ('{"layers": [1,]}', 1, 14, "a ',' before ']' (JSON allows no trailing comma)"),
    ('{\n  "name": "a",\n}', 2, 14, "a ',' before '}'"),
    ('{\n  "name": "a"\n  "layers": []\n}', 3, 3, "Expecting ',' delimiter"),
    ('{\n  "name": \'a\'\n}', 2, 11, "JSON strings take double quotes"),
    ('{"layers": [', 1, 13, "JSON syntax error"),
])
def test_json_syntax_errors_have_line_and_column(tmp_path, text, line, column, fragment):
    err = _file_error(tmp_path, "n.json", text)
    assert (err.line, err.column) == (line, column)
    assert fragment in err.message
    assert str(err).startswith(f"{err.file}:{line}:{column}:")


def test_json_duplicate_keys_are_caught(tmp_path):
    err = _file_error(tmp_path, "n.json", '{"name": "a",\n "name": "b", "layers": []}')
    assert err.line == 2 and "appears twice" in err.message


# ---- anchors and merges -----------------------------------------------------------------

ANCHORS = """\
layers:
  - {name: data, type: Input, top: data, shape: [2, 4]}
  - name: ip1
    type: InnerProduct
    num_output: 3
    weight_filler: &w {type: gaussian, std: 0.1}
    param: &p {weight: {lr_mult: 1}, bias: {lr_mult: 2}}
  - {name: ip2, type: InnerProduct, num_output: 2, weight_filler: *w, param: *p}
"""


def test_aliases_repeat_the_anchored_value():
    net = api.load_net_text(ANCHORS)
    ip1, ip2 = net.layers[1], net.layers[2]
    assert ip2["weight_filler"] == ip1["weight_filler"]
    assert ip2["param"] == {"weight": {"lr_mult": 1}, "bias": {"lr_mult": 2}}
    ip2["param"]["weight"]["lr_mult"] = 5  # separate copies, not one shared object
    assert ip1["param"]["weight"]["lr_mult"] == 1


MERGE = """\
defaults: &ip {type: InnerProduct, weight_filler: {type: xavier}, num_output: 8}
layers:
  - {name: data, type: Input, top: data, shape: [2, 4]}
  - <<: *ip
    name: ip1
  - <<: *ip
    name: ip2
    num_output: 2
"""


def test_merge_keys_may_be_overridden():
    doc = load_text(MERGE, file="m.yaml")
    ip1, ip2 = doc.data["layers"][1], doc.data["layers"][2]
    assert ip1 == {"type": "InnerProduct", "weight_filler": {"type": "xavier"}, "num_output": 8, "name": "ip1"}
    assert ip2["num_output"] == 2
    # the overriding key's line, not the anchor's
    assert doc.line(("layers", 2, "num_output")) == 8
    assert doc.line(("layers", 1, "name")) == 5


def test_merge_of_a_list_of_mappings_first_wins():
    doc = load_text("a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nc: {<<: [*a, *b], w: 3}\n")
    assert doc.data["c"] == {"x": 1, "y": 1, "z": 2, "w": 3}


def test_anchored_mapping_with_merge_used_twice():
    doc = load_text("a: &a {x: 1}\nb: &b {<<: *a, x: 2}\nc: *b\nd: *b\n")
    assert doc.data["c"] == {"x": 2} and doc.data["d"] == {"x": 2}


def test_duplicate_key_next_to_a_merge_is_still_an_error():
    err = _error("a: &a {x: 1}\nb: {<<: *a, y: 2, y: 3}\n")
    assert err.line == 2 and "'y' appears twice" in err.message


def test_merged_net_with_top_level_anchor_key_is_rejected_by_the_schema():
    """A ``defaults:`` key to hold anchors is not a net field: the schema says so, located."""
    with pytest.raises(SpecError) as info:
        api.load_net_text(MERGE, file="m.yaml")
    assert info.value.line == 1 and "unknown top-level key 'defaults'" in str(info.value)


@pytest.mark.parametrize("text, line, fragment", [
    ("a: &x 1\nb: &x 2\n", 2, "anchor &x is defined twice (first on line 1)"),
    ("abc\nname: 1\n", 2, "the line above this one ('abc') is not 'key: value'"),
    ("layers:\n  - name: a\n    transf\n", 3, "'transf' has no ':'"),
    (",a: 1\n", 1, "',' where a key or a value was expected"),
    ("a: *\n", 1, "'*' must be followed by a name"),
    ("name: a\n- b\n", 2, "a '-' list item among the keys of a mapping"),
    ("# a comment\nstray# text\nnetspec: 1\n", 3, "the line above this one ('stray# text')"),
    ("stray\n# a comment\nlayers:\n  - a\n", 3, "after a value that ends above it ('stray')"),
])
def test_stray_text_and_symbols(text, line, fragment):
    err = _error(text)
    assert err.line == line and fragment in err.message, str(err)


# ---- what render writes reads back as the same data ------------------------------------

def test_dump_quotes_strings_the_loader_would_read_as_numbers():
    from netspec.spec.dump import dump

    data = {"a": "1e-4", "b": 1e-4, "c": "yes", "d": "null", "e": "", "f": "a: b", "g": "#x", "h": 1e20}
    assert load_text(dump(data)).data == data


def test_dump_round_trips_any_plain_data():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    from netspec.spec.dump import dump

    # text as people write it: no control characters or exotic line breaks (PyYAML itself does
    # not round-trip U+0085)
    chars = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))
    scalars = (st.none() | st.booleans() | st.integers(-2**62, 2**62)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(chars, max_size=12))
    keys = st.text(chars, min_size=1, max_size=10).filter(lambda k: k != "<<")
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(keys, inner, max_size=4), max_leaves=12)

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(st.dictionaries(keys, values, min_size=1, max_size=5))
    def round_trip(data):
        assert load_text(dump(data)).data == data

    round_trip()
