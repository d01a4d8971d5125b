"""Posting a transaction to a FHIR server (shared.fhir_results.post) against a real local
receiver: re-posting updates, TLS is verified, redirects and failed entries are not
"delivered", the allow-list is checked again before sending."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.db.dicom_models import DicomDestination
from shared.errors import InvalidRequest
from shared.fhir_results import build_bundle
from shared.fhir_results.post import FhirDeliveryError, post_transaction
from tests.fhir_server import FhirServer, serve
from tests.shared.test_fhir_results import DETECTION, _facts

SETTINGS = Settings(fhir_allowed_hosts=["127.0.0.1"], fhir_allow_http=True)


def _destination(url: str, **kw: Any) -> DicomDestination:
    return DicomDestination(
        kind="fhir", base_url=url, auth=kw.pop("auth", "none"), verify_tls=True, **kw
    )


@pytest.fixture
def server() -> Iterator[FhirServer]:
    with serve() as state:
        yield state


def _bundle() -> dict[str, Any]:
    return build_bundle(_facts("detection", DETECTION), bundle_type="transaction")


def test_posting_twice_updates_instead_of_adding(server: FhirServer) -> None:
    bundle = _bundle()
    refs = post_transaction(_destination(server.url), bundle, SETTINGS)
    assert refs == [
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]
    ]
    assert set(server.resources) == set(refs) and server.errors == [[]]
    assert post_transaction(_destination(server.url), _bundle(), SETTINGS) == refs
    assert server.statuses[0] == ["201 Created"] * len(refs)
    assert server.statuses[1] == ["200 OK"] * len(refs)  # same ids: updated, not duplicated
    assert len(server.resources) == len(refs)


def test_credentials_are_sent(server: FhirServer) -> None:
    dest = _destination(server.url, auth="basic", username="medimg", secret="pw")
    post_transaction(dest, _bundle(), SETTINGS)
    assert server.headers[0]["Authorization"].startswith("Basic ")


def test_tls_is_verified(tmp_path: Path) -> None:
    with serve(tls_dir=tmp_path) as tls:
        assert tls.url.startswith("https://")
        with pytest.raises(FhirDeliveryError, match="SSL"):
            post_transaction(_destination(tls.url), _bundle(), SETTINGS)
        assert tls.posts == []  # nothing left the client unverified
        unverified = _destination(tls.url)
        unverified.verify_tls = False  # the operator's explicit choice for this destination
        post_transaction(unverified, _bundle(), SETTINGS)
        assert len(tls.resources) == len(_bundle()["entry"])


def test_down_redirected_or_failed_entries_are_not_delivered(server: FhirServer) -> None:
    server.fail_next = 1
    with pytest.raises(FhirDeliveryError, match="503.*down for maintenance"):
        post_transaction(_destination(server.url), _bundle(), SETTINGS)
    with serve() as elsewhere:
        server.redirect_to = elsewhere.url
        with pytest.raises(FhirDeliveryError, match="307"):
            post_transaction(_destination(server.url), _bundle(), SETTINGS)
        assert elsewhere.posts == []  # the redirect was not followed
    server.redirect_to = None
    server.fail_entry = True
    with pytest.raises(FhirDeliveryError, match="422"):
        post_transaction(_destination(server.url), _bundle(), SETTINGS)


def test_schema_invalid_bundle_is_refused_by_the_receiver(server: FhirServer) -> None:
    bundle = _bundle()
    bundle["entry"][0]["resource"]["status"] = "draft"
    with pytest.raises(FhirDeliveryError, match="400.*status"):
        post_transaction(_destination(server.url), bundle, SETTINGS)


def test_allow_list_is_checked_before_sending(server: FhirServer) -> None:
    closed = Settings(fhir_allowed_hosts=["fhir.example.org"], fhir_allow_http=True)
    with pytest.raises(InvalidRequest, match="MEDIMG_FHIR_ALLOWED_HOSTS"):
        post_transaction(_destination(server.url), _bundle(), closed)
    no_http = Settings(fhir_allowed_hosts=["127.0.0.1"])
    with pytest.raises(InvalidRequest, match="https"):
        post_transaction(_destination(server.url), _bundle(), no_http)
    assert server.posts == []
