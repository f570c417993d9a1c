"""The committed net schema (netspec/spec/schemas/net.schema.json) is what the code builds.

Editors and the docs read the committed file; when a layer type's schema changes, the file
must be regenerated with ``python scripts/gen_schemas.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from netspec.spec import schema as S
from netspec.spec.load import load_file

ROOT = Path(__file__).resolve().parent.parent
HOW = "the committed schema is out of date: run `python scripts/gen_schemas.py` and commit the result"


def test_committed_net_schema_is_current():
    path = S.committed_path("net")
    assert path.exists(), HOW
    fresh = S.dump(S.builtin_net_schema())
    committed = path.read_text()
    if committed != fresh:
        old, new = json.loads(committed), json.loads(fresh)
        old_types = set(old["$defs"]["layer"]["properties"]["type"]["enum"])
        new_types = set(new["$defs"]["layer"]["properties"]["type"]["enum"])
        detail = ""
        if old_types != new_types:
            detail = f" (types added: {sorted(new_types - old_types)}, removed: {sorted(old_types - new_types)})"
        else:
            changed = sorted(k for k in new["$defs"] if old["$defs"].get(k) != new["$defs"][k])
            detail = f" (changed definitions: {changed})"
        raise AssertionError(HOW + detail)


def test_committed_schema_is_a_valid_schema_that_accepts_the_models():
    schema = json.loads(S.committed_path("net").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    for path in sorted((ROOT / "models").glob("*/train_val.yaml")):
        errors = [e.message for e in v.iter_errors(load_file(path).data)]
        assert not errors, f"{path}: {errors}"


def test_plugins_do_not_leak_into_the_committed_schema():
    from netspec.core.layer import REGISTRY, Layer, register

    @register("CommittedSchemaProbe")
    class Probe(Layer):
        """A type registered from outside the package."""

    Probe.__module__ = "netspec_plugin_probe"
    try:
        types = json.loads(S.dump(S.builtin_net_schema()))["$defs"]["layer"]["properties"]["type"]["enum"]
        assert "CommittedSchemaProbe" not in types
        assert "CommittedSchemaProbe" in S.build_net_schema()["$defs"]["layer"]["properties"]["type"]["enum"]
    finally:
        REGISTRY.pop("CommittedSchemaProbe", None)


def test_gen_schemas_check_mode(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/gen_schemas.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "net.schema.json: up to date" in proc.stdout


@pytest.mark.parametrize("path", sorted(S.SCHEMA_DIR.glob("*.schema.json")), ids=lambda p: p.name)
def test_every_committed_schema_is_valid_draft_2020_12(path):
    """Validation skips the meta-schema check at run time for speed; it happens here."""
    jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))
