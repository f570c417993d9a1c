"""Random damage to the shipped model files: ``netspec.api.check`` either passes or raises a
``NetspecError`` whose every error names a file and a line.  Never another exception.

The mutations are the slips people make while editing: a line deleted or duplicated (a key
given twice), a value of the wrong type, a field or type name off by one character, bottoms
swapped or renamed, a stray tab or bracket, a file cut short.  Derandomized, so the examples
are the same on every run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from netspec import api  # noqa: E402
from netspec.errors import NetspecError  # noqa: E402
from netspec.spec.load import load_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*/train_val.yaml"))
TEXTS = {p: p.read_text() for p in MODELS}

KEY = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<sep>\s*)(?P<value>[^,{}\[\]\n#]*)")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BOTTOM = re.compile(r"bottom: *\[([^\]\n]*)\]|bottom: *([A-Za-z0-9_]+)")
WRONG_VALUES = ["abc", "3.5", "-1", "0", "[1, 2]", "{a: 1}", "true", "null", "''", "1e-4", "[]", "{}",
                "\"7\"", "[[1]]", "99999999999"]
ALPHABET = "abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _lines(text: str) -> list[str]:
    return text.split("\n")


def delete_line(text: str, data) -> str:
    lines = _lines(text)
    i = data.draw(st.integers(0, len(lines) - 1), label="deleted line")
    return "\n".join(lines[:i] + lines[i + 1:])


def duplicate_line(text: str, data) -> str:
    lines = _lines(text)
    i = data.draw(st.integers(0, len(lines) - 1), label="duplicated line")
    return "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])


def change_value_type(text: str, data) -> str:
    matches = list(KEY.finditer(text))
    if not matches:
        return text
    m = data.draw(st.sampled_from(matches), label="key")
    value = data.draw(st.sampled_from(WRONG_VALUES), label="new value")
    start, end = m.span("value")
    if not m.group("sep"):
        value = " " + value
    return text[:start] + value + text[end:]


def rename_by_one_char(text: str, data) -> str:
    names = list(NAME.finditer(text))
    if not names:
        return text
    m = data.draw(st.sampled_from(names), label="name")
    word = m.group()
    k = data.draw(st.integers(0, len(word)), label="position")
    how = data.draw(st.sampled_from(["insert", "delete", "replace", "swap", "case"]), label="edit")
    ch = data.draw(st.sampled_from(ALPHABET), label="char")
    if how == "insert":
        new = word[:k] + ch + word[k:]
    elif how == "delete" and len(word) > 1:
        k = min(k, len(word) - 1)
        new = word[:k] + word[k + 1:]
    elif how == "swap" and len(word) > 1:
        k = min(k, len(word) - 2)
        new = word[:k] + word[k + 1] + word[k] + word[k + 2:]
    elif how == "case":
        new = word.swapcase()
    else:
        k = min(k, len(word) - 1)
        new = word[:k] + ch + word[k + 1:]
    return text[: m.start()] + new + text[m.end():]


def swap_bottoms(text: str, data) -> str:
    matches = list(BOTTOM.finditer(text))
    if not matches:
        return text
    m = data.draw(st.sampled_from(matches), label="bottom")
    blobs = re.findall(r"[A-Za-z0-9_]+", text[m.start(): m.end()][len("bottom:"):])
    if len(blobs) > 1 and data.draw(st.booleans(), label="reverse"):
        new = "bottom: [" + ", ".join(reversed(blobs)) + "]"
    else:
        names = sorted(set(re.findall(r"(?:top|name): *\[?([A-Za-z0-9_]+)", text)))
        if not names:
            return text
        other = data.draw(st.sampled_from(names), label="other blob")
        new = f"bottom: {other}"
    return text[: m.start()] + new + text[m.end():]


def insert_char(text: str, data) -> str:
    k = data.draw(st.integers(0, len(text)), label="position")
    ch = data.draw(st.sampled_from(["\t", "[", "]", "{", "}", ",", ":", "\"", "'", "- ", "#", "&a ", "*a",
                                    "\n", "  "]), label="inserted")
    return text[:k] + ch + text[k:]


def truncate(text: str, data) -> str:
    k = data.draw(st.integers(0, len(text)), label="cut at")
    return text[:k]


MUTATIONS = [delete_line, duplicate_line, change_value_type, rename_by_one_char, swap_bottoms, insert_char,
             truncate]


def assert_located(text: str, model: Path) -> None:
    """check passes, or every error it raises has a file and a line."""
    shown = f"models/{model.parent.name}/train_val.yaml"
    try:
        api.check(load_text(text, file=shown, base_dir=model.parent))
    except NetspecError as e:
        errors = getattr(e, "errors", None) or [e]
        for err in errors:
            assert err.file == shown, str(err)
            assert isinstance(err.line, int) and err.line >= 1, str(err)
            assert "Traceback" not in str(err)
            n_lines = text.count("\n") + 1
            assert err.line <= n_lines + 1, f"line {err.line} beyond the {n_lines}-line file: {err}"


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(model=st.sampled_from(MODELS), kinds=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3),
       data=st.data())
def test_damaged_models_give_located_errors(model, kinds, data):
    text = TEXTS[model]
    for mutate in kinds:
        if not text:
            break
        text = mutate(text, data)
    assert_located(text, model)


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.parent.name)
def test_undamaged_models_pass(model):
    assert_located(TEXTS[model], model)
    api.check(load_text(TEXTS[model], file="m.yaml", base_dir=model.parent))
