"""One delivery attempt to one destination: STOW-RS (confirmed by QIDO-RS) or C-STORE.

A STOW-RS answer alone proves nothing (a server may answer 200 to a chunked request and
keep nothing, dicomweb-client #42): a STOW counts only once QIDO-RS finds every SOP
Instance UID sent. C-STORE success is the SCP's 0x0000 (or a warning status) per object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from shared.db.dicom_models import DicomDestination, PacsEndpoint
from shared.dicomweb import client_for

ASSOCIATION_TIMEOUT = 30.0
_WARNING_STATUSES = {0xB000, 0xB006, 0xB007}


class DeliveryError(Exception):
    """A retryable failure of one attempt (the receiver is down or refused)."""


@dataclass(frozen=True)
class Sent:
    sop_instance_uids: list[str]


def with_file_meta(ds: Dataset) -> Dataset:
    """Part 10 file meta for a dataset made in memory (STOW and C-STORE both encode it)."""
    if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta:
        return ds
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def stow(endpoint: PacsEndpoint, datasets: Sequence[Dataset]) -> Sent:
    """STOW-RS the objects, then confirm each by a QIDO-RS instance query."""
    client = client_for(endpoint)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    try:
        client.store_instances([with_file_meta(ds) for ds in datasets])
        missing = [
            ds.SOPInstanceUID
            for ds in datasets
            if not client.search_for_instances(
                study_instance_uid=str(ds.StudyInstanceUID),
                search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)},
            )
        ]
    except requests.RequestException as exc:
        raise DeliveryError(f"{type(exc).__name__} from {endpoint.base_url}: {exc}") from exc
    if missing:
        raise DeliveryError(
            f"STOW-RS was answered but QIDO-RS does not find {len(missing)} of {len(uids)} "
            f"instances (e.g. {missing[0]}): not counted as delivered"
        )
    return Sent(uids)


def c_store(destination: DicomDestination, datasets: Sequence[Dataset], calling_ae: str) -> Sent:
    """C-STORE every object over one association to the destination AE."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ASSOCIATION_TIMEOUT
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        destination.host or "", int(destination.port or 104), ae_title=destination.ae_title or ""
    )
    if not assoc.is_established:
        raise DeliveryError(
            f"no association with {destination.ae_title}@{destination.host}:{destination.port}"
        )
    try:
        for ds in datasets:
            status = assoc.send_c_store(with_file_meta(ds))
            code = int(getattr(status, "Status", -1)) if status else -1
            if code != 0x0000 and code not in _WARNING_STATUSES:
                raise DeliveryError(
                    f"C-STORE of {ds.SOPInstanceUID} answered status 0x{code & 0xFFFF:04X}"
                    if code >= 0
                    else f"C-STORE of {ds.SOPInstanceUID} got no answer"
                )
    finally:
        assoc.release()
    return Sent([str(ds.SOPInstanceUID) for ds in datasets])
