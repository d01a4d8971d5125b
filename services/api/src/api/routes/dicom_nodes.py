"""DICOM integration, per tenant (scope `admin`): calling AEs, PACS, destinations, rules,
received studies (routed or unmatched) and pull requests. Every change is audited."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import Admin
from api.deps import SessionDep, SettingsDep
from shared.callbacks.outbox import FINAL
from shared.db.dicom_models import (
    DestinationKind,
    DicomCallingAe,
    DicomDestination,
    DicomStudy,
    PacsEndpoint,
    RoutingRule,
    StudySource,
    StudyStatus,
)
from shared.db.models import Job
from shared.delivery import deliveries_for_job
from shared.dicom_routing import validate_match
from shared.dicomweb import validate_pacs_url
from shared.errors import Conflict, InvalidRequest, NotFound
from shared.fhir_results.post import validate_fhir_url
from shared.job_intake import check_params
from shared.registry import resolve_model_version
from shared.schemas.dicom import (
    CallingAeCreate,
    CallingAePublic,
    DestinationCreate,
    DestinationPublic,
    PacsCreate,
    PacsPublic,
    PullCreate,
    RuleCreate,
    RulePublic,
    StudiesPublic,
    StudyPublic,
)
from shared.schemas.jobs import DicomDeliveryPublic, JobParams

router = APIRouter(prefix="/dicom", tags=["dicom"])
Row = TypeVar("Row", DicomCallingAe, PacsEndpoint, DicomDestination, RoutingRule, DicomStudy)


async def _commit(session: SessionDep, what: str) -> None:
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"{what} already exists") from None


async def _owned(session: SessionDep, cls: type[Row], tenant_id: uuid.UUID, id_: uuid.UUID) -> Row:
    row = await session.get(cls, id_)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"no {cls.__tablename__.replace('_', ' ')} with id {id_}")
    return row


async def _by_name(session: SessionDep, cls: type[Any], tenant_id: uuid.UUID, name: str) -> Any:
    row = await session.scalar(select(cls).where(cls.tenant_id == tenant_id, cls.name == name))
    if row is None:
        raise InvalidRequest(f"no {cls.__tablename__.replace('_', ' ')} named {name!r}")
    return row


async def _delete(session: SessionDep, principal: Admin, cls: type[Row], id_: uuid.UUID) -> None:
    row = await _owned(session, cls, principal.tenant_id, id_)
    await session.delete(row)
    await audit.record(
        session, principal, f"{cls.__tablename__}.delete", cls.__tablename__, str(id_)
    )
    try:
        await session.commit()
    except IntegrityError:
        raise Conflict(f"{cls.__tablename__} {id_} is still in use") from None


# Calling AE titles ------------------------------------------------------------------


def _ae(row: DicomCallingAe) -> CallingAePublic:
    return CallingAePublic(
        id=row.id, ae_title=row.ae_title, description=row.description, created_at=row.created_at
    )


@router.post("/calling-aes", status_code=status.HTTP_201_CREATED, response_model=CallingAePublic)
async def create_calling_ae(
    body: CallingAeCreate, principal: Admin, session: SessionDep
) -> CallingAePublic:
    """Allow a calling AE title to send studies to the listener (they belong to this tenant)."""
    row = DicomCallingAe(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        ae_title=body.ae_title.strip(),
        description=body.description,
    )
    session.add(row)
    await audit.record(
        session, principal, "dicom_ae.create", "dicom_calling_ae", str(row.id), {"ae": row.ae_title}
    )
    await _commit(session, f"calling AE title {row.ae_title!r} (in this or another tenant)")
    return _ae(row)


@router.get("/calling-aes", response_model=list[CallingAePublic])
async def read_calling_aes(principal: Admin, session: SessionDep) -> list[CallingAePublic]:
    """Calling AE titles allowed for this tenant."""
    rows = await session.scalars(
        select(DicomCallingAe).where(DicomCallingAe.tenant_id == principal.tenant_id)
    )
    return [_ae(r) for r in rows]


@router.delete("/calling-aes/{ae_id}", status_code=204, response_class=Response)
async def delete_calling_ae(ae_id: uuid.UUID, principal: Admin, session: SessionDep) -> None:
    """Stop accepting associations from this AE title."""
    await _delete(session, principal, DicomCallingAe, ae_id)


# PACS endpoints (DICOMweb) ------------------------------------------------------------


def _pacs(row: PacsEndpoint) -> PacsPublic:
    return PacsPublic(
        id=row.id,
        name=row.name,
        base_url=row.base_url,
        auth=row.auth,
        username=row.username,
        has_secret=bool(row.secret),
        verify_tls=row.verify_tls,
        created_at=row.created_at,
    )


@router.post("/pacs", status_code=status.HTTP_201_CREATED, response_model=PacsPublic)
async def create_pacs(
    body: PacsCreate, principal: Admin, session: SessionDep, settings: SettingsDep
) -> PacsPublic:
    """Register a DICOMweb PACS (host must be in MEDIMG_DICOMWEB_ALLOWED_HOSTS)."""
    base_url = await run_in_threadpool(validate_pacs_url, body.base_url, settings)
    if body.auth != "none" and not body.secret:
        raise InvalidRequest(f"auth={body.auth} needs a `secret`")
    row = PacsEndpoint(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        name=body.name,
        base_url=base_url,
        auth=body.auth,
        username=body.username,
        secret=body.secret,
        verify_tls=body.verify_tls,
    )
    session.add(row)
    await audit.record(
        session, principal, "pacs.create", "pacs_endpoint", str(row.id),
        {"name": row.name, "auth": row.auth, "verify_tls": row.verify_tls},
    )  # fmt: skip
    await _commit(session, f"a PACS named {body.name!r}")
    return _pacs(row)


@router.get("/pacs", response_model=list[PacsPublic])
async def read_pacs(principal: Admin, session: SessionDep) -> list[PacsPublic]:
    """Registered PACS endpoints (credentials are never returned)."""
    rows = await session.scalars(
        select(PacsEndpoint).where(PacsEndpoint.tenant_id == principal.tenant_id)
    )
    return [_pacs(r) for r in rows]


@router.delete("/pacs/{pacs_id}", status_code=204, response_class=Response)
async def delete_pacs(pacs_id: uuid.UUID, principal: Admin, session: SessionDep) -> None:
    """Remove a PACS endpoint (409 while a destination or study refers to it)."""
    await _delete(session, principal, PacsEndpoint, pacs_id)


# Destinations -------------------------------------------------------------------------


def _destination(row: DicomDestination) -> DestinationPublic:
    return DestinationPublic(
        id=row.id,
        name=row.name,
        kind=row.kind,
        pacs_id=row.pacs_id,
        ae_title=row.ae_title,
        host=row.host,
        port=row.port,
        base_url=row.base_url,
        auth=row.auth,
        has_secret=bool(row.secret),
        verify_tls=row.verify_tls,
        created_at=row.created_at,
    )


@router.post("/destinations", status_code=201, response_model=DestinationPublic)
async def create_destination(
    body: DestinationCreate, principal: Admin, session: SessionDep, settings: SettingsDep
) -> DestinationPublic:
    """Where results go: `stow` to a registered PACS, `cstore` to an AE (host, port), or
    `fhir` to a FHIR R4 server (base_url in MEDIMG_FHIR_ALLOWED_HOSTS; a transaction)."""
    pacs_id, base_url = None, None
    if body.kind == DestinationKind.STOW:
        if not body.pacs:
            raise InvalidRequest("a stow destination names a registered `pacs`")
        pacs_id = (await _by_name(session, PacsEndpoint, principal.tenant_id, body.pacs)).id
    elif body.kind == DestinationKind.FHIR:
        if not body.base_url:
            raise InvalidRequest("a fhir destination needs the server's `base_url`")
        if body.auth != "none" and not body.secret:
            raise InvalidRequest(f"auth={body.auth} needs a `secret`")
        base_url = await run_in_threadpool(validate_fhir_url, body.base_url, settings)
    elif not (body.ae_title and body.host and body.port):
        raise InvalidRequest("a cstore destination needs `ae_title`, `host` and `port`")
    fhir = body.kind == DestinationKind.FHIR
    row = DicomDestination(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        name=body.name,
        kind=body.kind,
        pacs_id=pacs_id,
        ae_title=body.ae_title,
        host=body.host,
        port=body.port,
        base_url=base_url,
        auth=body.auth if fhir else None,
        username=body.username if fhir else None,
        secret=body.secret if fhir else None,
        verify_tls=body.verify_tls,
    )
    session.add(row)
    await audit.record(
        session, principal, "destination.create", "dicom_destination", str(row.id),
        {"name": row.name, "kind": row.kind},
    )  # fmt: skip
    await _commit(session, f"a destination named {body.name!r}")
    return _destination(row)


@router.get("/destinations", response_model=list[DestinationPublic])
async def read_destinations(principal: Admin, session: SessionDep) -> list[DestinationPublic]:
    """Result destinations of this tenant."""
    rows = await session.scalars(
        select(DicomDestination).where(DicomDestination.tenant_id == principal.tenant_id)
    )
    return [_destination(r) for r in rows]


@router.delete("/destinations/{destination_id}", status_code=204, response_class=Response)
async def delete_destination(
    destination_id: uuid.UUID, principal: Admin, session: SessionDep
) -> None:
    """Remove a destination (pending deliveries to it then fail, results stay)."""
    await _delete(session, principal, DicomDestination, destination_id)


# Routing rules ------------------------------------------------------------------------


async def _destination_ids(
    session: SessionDep, tenant_id: uuid.UUID, names: list[str]
) -> list[str]:
    return [str((await _by_name(session, DicomDestination, tenant_id, n)).id) for n in names]


async def _check_model(
    session: SessionDep, ref: str, tenant_id: uuid.UUID, params: dict[str, Any]
) -> None:
    try:
        job_params = JobParams.model_validate(params)
    except ValueError as exc:
        raise InvalidRequest(f"invalid job parameters: {exc}") from None
    version = await session.run_sync(resolve_model_version, ref, tenant_id)
    check_params(version, job_params)


def _rule(row: RoutingRule) -> RulePublic:
    return RulePublic(
        id=row.id,
        name=row.name,
        position=row.position,
        enabled=row.enabled,
        match=row.match,
        model=row.model_ref,
        params=row.params,
        priority=row.priority,
        destinations=[uuid.UUID(d) for d in row.destination_ids],
        created_at=row.created_at,
    )


@router.post("/rules", status_code=201, response_model=RulePublic)
async def create_rule(body: RuleCreate, principal: Admin, session: SessionDep) -> RulePublic:
    """Route matching studies to a model with job parameters and result destinations."""
    match = validate_match(body.match)
    await _check_model(session, body.model, principal.tenant_id, body.params)
    row = RoutingRule(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        name=body.name,
        position=body.position,
        enabled=body.enabled,
        match=match,
        model_ref=body.model,
        params=body.params,
        priority=body.priority,
        destination_ids=await _destination_ids(session, principal.tenant_id, body.destinations),
    )
    session.add(row)
    await audit.record(
        session, principal, "rule.create", "dicom_routing_rule", str(row.id),
        {"name": row.name, "model": row.model_ref},
    )  # fmt: skip
    await _commit(session, f"a rule named {body.name!r}")
    return _rule(row)


@router.get("/rules", response_model=list[RulePublic])
async def read_rules(principal: Admin, session: SessionDep) -> list[RulePublic]:
    """Routing rules in the order they are tried."""
    rows = await session.scalars(
        select(RoutingRule)
        .where(RoutingRule.tenant_id == principal.tenant_id)
        .order_by(RoutingRule.position, RoutingRule.name)
    )
    return [_rule(r) for r in rows]


@router.delete("/rules/{rule_id}", status_code=204, response_class=Response)
async def delete_rule(rule_id: uuid.UUID, principal: Admin, session: SessionDep) -> None:
    """Remove a routing rule."""
    row = await _owned(session, RoutingRule, principal.tenant_id, rule_id)
    row.enabled = False  # studies keep pointing at it: disable, keep the row
    await audit.record(session, principal, "rule.delete", "dicom_routing_rule", str(rule_id))
    await session.commit()


# Studies and pulls --------------------------------------------------------------------


def _study(row: DicomStudy) -> StudyPublic:
    return StudyPublic.model_validate(row, from_attributes=True)


@router.get("/studies", response_model=StudiesPublic)
async def read_studies(
    principal: Admin,
    session: SessionDep,
    status_: Annotated[list[StudyStatus] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> StudiesPublic:
    """Received and pulled studies, newest first (`status=unmatched` for the unrouted ones)."""
    query = (
        select(DicomStudy)
        .where(DicomStudy.tenant_id == principal.tenant_id)
        .order_by(DicomStudy.created_at.desc())
        .limit(limit)
    )
    if status_:
        query = query.where(DicomStudy.status.in_([s.value for s in status_]))
    return StudiesPublic(items=[_study(r) for r in await session.scalars(query)])


@router.get("/studies/{study_id}", response_model=StudyPublic)
async def read_study(study_id: uuid.UUID, principal: Admin, session: SessionDep) -> StudyPublic:
    """One study: routed (with its job), unmatched (why), failed, or a pull in progress."""
    return _study(await _owned(session, DicomStudy, principal.tenant_id, study_id))


@router.post("/pulls", status_code=status.HTTP_202_ACCEPTED, response_model=StudyPublic)
async def create_pull(
    body: PullCreate, principal: Admin, session: SessionDep, response: Response
) -> StudyPublic:
    """Pull a study from a registered PACS (QIDO-RS + WADO-RS, by the gateway) into a job."""
    pacs = await _by_name(session, PacsEndpoint, principal.tenant_id, body.pacs)
    if body.model:
        await _check_model(session, body.model, principal.tenant_id, body.params)
    requested: dict[str, Any] = {
        "series_instance_uids": body.series_instance_uids,
        "destination_ids": await _destination_ids(session, principal.tenant_id, body.destinations),
    }
    if body.model:
        requested |= {"model": body.model, "params": body.params, "priority": body.priority}
    row = DicomStudy(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        source=StudySource.DICOMWEB,
        status=StudyStatus.PENDING,
        pacs_id=pacs.id,
        study_instance_uid=body.study_instance_uid,
        requested=requested,
        summary={},
    )
    session.add(row)
    await audit.record(
        session, principal, "pull.create", "dicom_study", str(row.id), {"pacs": pacs.name}
    )
    await session.commit()
    await session.refresh(row)
    response.headers["Location"] = f"/v1/dicom/studies/{row.id}"
    return _study(row)


async def job_deliveries(session: SessionDep, job: Job) -> list[DicomDeliveryPublic]:
    """A job's DICOM result deliveries, for the job view (`waiting` until the job is final)."""
    rows = await session.run_sync(lambda s: deliveries_for_job(s, job.id))
    final = job.status in FINAL
    return [
        DicomDeliveryPublic(
            destination=r.payload.get("destination", ""),
            kind=r.payload.get("kind", ""),
            status=r.status if final or r.status != "pending" else "waiting",  # type: ignore[arg-type]
            attempts=r.attempts,
            last_error=r.last_error,
            next_attempt_at=r.next_attempt_at if final else None,
            delivered_at=r.delivered_at,
            sop_instance_uids=r.payload.get("sop_instance_uids", []),
        )
        for r in rows
    ]
