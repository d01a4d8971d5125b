"""Property-based fuzzing of the whole OpenAPI schema (schemathesis) against the real stack.

Every operation gets generated requests, valid and invalid, with an admin key of a tenant
of its own (so generated jobs stay out of other tests' way). No response may be a 5xx,
and every response must match the schema's documented shape and content type.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)

from cli.stack import Stack
from tests.conftest import KeyFactory


@pytest.fixture(scope="module")
def fuzz_key(make_key: KeyFactory) -> str:
    return make_key(tenant="fuzz", scopes=("admin",))


CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
# Generated, not shrunk: a failure is reported as found, which keeps the run to a minute.
FUZZ = settings(
    max_examples=10,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,
)


def _fuzz(operation: APIOperation, mode: GenerationMode, base_url: str, key: str) -> str | None:
    """Run generated cases against one operation; the first failure as text, or None."""

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {key}"})
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
        return None
    except (Exception, BaseExceptionGroup) as exc:  # check failure(s): report, keep fuzzing
        return f"{operation.label} [{mode.value}]: {str(exc).strip()[:1500]}"
    return None


def test_api_conforms_to_its_schema_and_never_answers_5xx(stack: Stack, fuzz_key: str) -> None:
    raw = httpx.get(stack.api_url + "/openapi.json", timeout=30).raise_for_status().json()
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := _fuzz(operation, mode, stack.api_url, fuzz_key))
    ]
    print(f"fuzzed {len(operations)} operations; {len(failures)} failing")
    assert not failures, "\n\n".join(failures)
