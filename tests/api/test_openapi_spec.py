"""The served OpenAPI document stays generator-friendly as routes are added.

Walks the whole document (no stack needed: the spec is built from the routes), then builds a
Python client from it with openapi-python-client and checks that upload parts are files.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from api.main import create_app

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app().openapi()


def _multipart_schemas(spec: dict[str, Any]) -> list[dict[str, Any]]:
    schemas = spec["components"]["schemas"]
    found = []
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            body = operation.get("requestBody", {}).get("content", {})
            schema = body.get("multipart/form-data", {}).get("schema")
            if schema:
                found.append(schemas[schema["$ref"].rsplit("/", 1)[1]])
    return found


def _file_fields(schema: Any) -> list[dict[str, Any]]:
    """Every string subschema that carries a media type or a binary format."""
    if isinstance(schema, list):
        return [f for item in schema for f in _file_fields(item)]
    if not isinstance(schema, dict):
        return []
    own = [schema] if schema.get("type") == "string" and (
        "contentMediaType" in schema or schema.get("format") == "binary"
    ) else []  # fmt: skip
    return own + [f for value in schema.values() for f in _file_fields(value)]


def test_every_multipart_file_part_is_binary(spec: dict[str, Any]) -> None:
    bodies = _multipart_schemas(spec)
    assert len(bodies) >= 3  # jobs, dataset versions, model versions at least
    fields = [f for body in bodies for f in _file_fields(body)]
    assert fields, "no file parts found in multipart bodies"
    for field in fields:
        assert field.get("format") == "binary" and "contentMediaType" not in field, field
    assert "contentMediaType" not in json.dumps(spec)


def test_schema_names_and_titles_are_unique(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert not [key for key in schemas if "__" in key]  # FastAPI's clash-disambiguated keys
    titles = Counter(s.get("title", key) for key, s in schemas.items())
    assert [t for t, n in titles.items() if n > 1] == []
    for key, schema in schemas.items():
        assert schema.get("title", key) == key


def test_every_ref_resolves(spec: dict[str, Any]) -> None:
    names = set(spec["components"]["schemas"])
    refs = {r.rsplit("/", 1)[1] for r in _refs(spec)}
    assert refs <= names, refs - names


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_generated_python_client_sends_files(
    spec: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not GENERATOR.exists():
        pytest.fail("openapi-python-client missing: `uv sync` installs it (dev dependency)")
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    run = subprocess.run(
        [str(GENERATOR), "generate", "--path", "openapi.json", "--meta", "none",
         "--output-path", "medimg_client"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    log = run.stdout + run.stderr
    # The only thing the generator may leave out is typing binary bodies it has no type for
    # (PNG previews and artifacts, the DICOM SR): the raw response of those operations is
    # still there. A dropped schema or operation fails here.
    binary = ("Unsupported content_type image/png", "Unsupported content_type application/dicom")
    problems = [
        line for line in log.splitlines()
        if line.startswith(("Cannot parse", "Unable to", "Failed"))
        and not any(kind in line for kind in binary)
    ]  # fmt: skip
    assert problems == [], log
    monkeypatch.syspath_prepend(str(tmp_path))
    models = importlib.import_module("medimg_client.models")
    body = models.BodyCreateJobV1JobsPost
    types = importlib.import_module("medimg_client.types")
    # A file part must be a File (multipart file), not a str text field.
    annotation = str(body.__annotations__["files"])
    assert "File" in annotation and "str" not in annotation, annotation
    item = body(files=[types.File(payload=b"\x89PNG", file_name="x.png")], model="m")
    parts = item.to_multipart()
    assert any(isinstance(p, tuple) and p[1][0] == "x.png" for p in parts), parts
    assert hasattr(models, "TrainingArtifactPublic") and hasattr(models, "ArtifactPublic")
