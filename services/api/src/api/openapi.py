"""The served OpenAPI document, adjusted so client generators build working clients.

FastAPI (OpenAPI 3.1) declares upload parts as ``contentMediaType: application/octet-stream``
strings; openapi-python-client and others then send them as text fields and the API answers
422. Declaring them ``format: binary`` (the OpenAPI 3.0 spelling every generator knows) makes
them file parts. Two pydantic models with one class name are keyed ``module__path__Name`` by
FastAPI but keep the same ``title``, and generators that name classes by title drop one; each
such schema gets a unique key and title here, so new routes stay generator-friendly without
each author having to remember it (tests/api/test_openapi_spec.py walks the whole document).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_REF_PREFIX = "#/components/schemas/"


def install(app: FastAPI) -> None:
    """Serve the adjusted document at /openapi.json (built once, like FastAPI's own)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = generator_friendly(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def generator_friendly(spec: dict[str, Any]) -> dict[str, Any]:
    """Binary file parts and unique schema names, in place; returns ``spec``."""
    _binary_file_parts(spec)
    schemas = spec.get("components", {}).get("schemas", {})
    renames = {key: _unique_name(key) for key in schemas if "__" in key}
    taken = [key for key in schemas if key not in renames] + list(renames.values())
    for old, new in renames.items():
        if taken.count(new) > 1:  # e.g. two modules' classes reduce to one name
            raise RuntimeError(f"OpenAPI schema name {new!r} (from {old!r}) is not unique")
    for old, new in renames.items():
        schemas[new] = schemas.pop(old)
        schemas[new]["title"] = new
    if renames:
        _rewrite_refs(spec, {_REF_PREFIX + o: _REF_PREFIX + n for o, n in renames.items()})
    return spec


def _unique_name(key: str) -> str:
    """``shared__schemas__training__ArtifactPublic`` -> ``TrainingArtifactPublic``.

    The module's last segment prefixes the class name unless the class already starts with
    it (``artifacts`` + ``ArtifactPublic`` stays ``ArtifactPublic``).
    """
    *modules, name = key.split("__")
    prefix = modules[-1].title().replace("_", "") if modules else ""
    if name.lower().startswith(prefix.lower().rstrip("s")):
        return name
    return prefix + name


def _binary_file_parts(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("contentMediaType") == (
            "application/octet-stream"
        ):
            del node["contentMediaType"]
            node["format"] = "binary"
        for value in node.values():
            _binary_file_parts(value)
    elif isinstance(node, list):
        for value in node:
            _binary_file_parts(value)


def _rewrite_refs(node: Any, refs: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref in refs:
            node["$ref"] = refs[ref]
        for value in node.values():
            _rewrite_refs(value, refs)
    elif isinstance(node, list):
        for value in node:
            _rewrite_refs(value, refs)
