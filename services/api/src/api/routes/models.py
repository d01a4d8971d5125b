"""Model registry: upload versions, aliases, deprecation and deletion, cards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api import audit, views
from api.auth import JobsRead, Principal, require
from api.crud import models as crud
from api.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from api.enqueue import submit_guard, submit_guard_quietly
from api.model_uploads import ModelUpload, register_upload
from shared import model_lifecycle
from shared.auth import Scope
from shared.db.models import Model
from shared.errors import Conflict, Forbidden
from shared.model_lifecycle import delete_version, deprecate, remove_alias
from shared.registry import set_alias
from shared.schemas.models import (
    AliasPublic,
    AliasUpdate,
    DeprecationCreate,
    ModelPublic,
    ModelsPublic,
    ModelVersionPublic,
)

router = APIRouter(prefix="/models", tags=["models"])
ModelsAdmin = Annotated[Principal, Depends(require(Scope.MODELS_ADMIN))]
_WRITE_ERRORS: dict[int | str, dict[str, str]] = {403: {}, 404: {}, 409: {}, 422: {}}


async def _writable(session: AsyncSession, principal: Principal, name: str) -> Model:
    """A model this key may change: its tenant's own, or a shared one for a platform operator.

    A tenant's `admin` cannot alias, deprecate or delete what every other tenant runs.
    """
    model = await crud.get_model(session=session, tenant_id=principal.tenant_id, name=name)
    if model.tenant_id is None and not principal.is_operator:
        raise Forbidden(
            f"model {name!r} is shared by every tenant: only a platform operator "
            "(`platform:admin`) may change it",
            required_scope=Scope.PLATFORM_ADMIN.value,
        )
    if model.deleted_at is not None:
        raise Conflict(f"model {name!r} is deleted", model=name)
    return model


async def _model_public(session: AsyncSession, model: Model) -> ModelPublic:
    aliases = await crud.aliases_of(session=session, model_ids=[model.id])
    return views.model_public(model, aliases.get(model.id, {}))


@router.get("", response_model=ModelsPublic)
async def read_models(
    principal: JobsRead, session: SessionDep, include_deleted: bool = False
) -> ModelsPublic:
    """Registered models with task, labels, input spec, aliases and latest version."""
    models = await crud.list_models(
        session=session, tenant_id=principal.tenant_id, include_deleted=include_deleted
    )
    aliases = await crud.aliases_of(session=session, model_ids=[m.id for m in models])
    return ModelsPublic(items=[views.model_public(m, aliases.get(m.id, {})) for m in models])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelVersionPublic,
    responses={200: {"description": "These weights were already registered"}, 413: {}, 415: {}}
    | _WRITE_ERRORS,
)
async def create_model_version(
    principal: ModelsAdmin,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    celery: CeleryDep,
    card: Annotated[str | None, Form(description="Model card JSON")] = None,
    weights: Annotated[UploadFile | None, File(description="state_dict (torch.save)")] = None,
    package: Annotated[
        UploadFile | None, File(description=".zip or .tar.gz with card.json and weights.pt")
    ] = None,
    sha256: Annotated[str | None, Form(description="SHA-256 of weights.pt")] = None,
    shared: Annotated[
        bool, Form(description="New model for every tenant (platform operator)")
    ] = False,
) -> ModelVersionPublic:
    """Upload a model version (or an ensemble card); same weights again return it (200)."""
    upload = ModelUpload(card, weights, package, sha256, shared)
    try:
        registered = await register_upload(
            upload, principal=principal, session=session, settings=settings, store=store
        )
        version = registered.version
        await audit.record(
            session,
            principal,
            "model.register",
            "model_version",
            version.ref,
            {"created": registered.created, "sha256": version.weights_sha256},
        )
        await session.commit()
    except IntegrityError:
        raise Conflict("the model was registered concurrently; retry the upload") from None
    if not registered.created:
        response.status_code = status.HTTP_200_OK
    else:
        await submit_guard_quietly(celery, version_id=version.id)
    response.headers["Location"] = f"/v1/models/{version.model.name}/versions/{version.version}"
    return views.model_version_public(version, version.model)


@router.get("/{name}", response_model=ModelPublic, responses={404: {}})
async def read_model(name: str, principal: JobsRead, session: SessionDep) -> ModelPublic:
    """One model, its aliases, deprecation state and its latest version's card."""
    model = await crud.get_model(session=session, tenant_id=principal.tenant_id, name=name)
    return await _model_public(session, model)


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic, responses={404: {}})
async def read_model_version(
    name: str, version: int, principal: JobsRead, session: SessionDep
) -> ModelVersionPublic:
    """One exact model version and its full card, also once deprecated or deleted."""
    model = await crud.get_model(session=session, tenant_id=principal.tenant_id, name=name)
    aliases = (await crud.aliases_of(session=session, model_ids=[model.id])).get(model.id, {})
    picked = crud.pick_version(model, version)
    names = [a for a, n in aliases.items() if n == picked.version]
    return views.model_version_public(picked, model, names)


@router.put("/{name}/aliases/{alias}", response_model=AliasPublic, responses=_WRITE_ERRORS)
async def update_alias(
    name: str,
    alias: str,
    body: AliasUpdate,
    principal: ModelsAdmin,
    session: SessionDep,
    celery: CeleryDep,
) -> AliasPublic:
    """Point an alias (`production`, `staging`, any name) at a version; later jobs follow."""
    model = await _writable(session, principal, name)
    version = crud.pick_version(model, body.version)
    await session.run_sync(lambda s: set_alias(s, version, alias))
    await audit.record(session, principal, "model.alias", "model", name, {alias: version.ref})
    await session.commit()
    if alias == "production":  # a promotion: guard the runtime plans on the new target
        await submit_guard_quietly(celery, version_id=version.id)
    return AliasPublic(alias=alias, version=version.version, ref=version.ref)


@router.post(
    "/{name}/versions/{version}/guard",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ModelVersionPublic,
    responses=_WRITE_ERRORS | {503: {}},
)
async def guard_model_version(
    name: str, version: int, principal: ModelsAdmin, session: SessionDep, celery: CeleryDep
) -> ModelVersionPublic:
    """Run the runtime-plan accuracy guard now; results appear in `runtime_plans`."""
    model = await _writable(session, principal, name)
    picked = crud.pick_version(model, version)
    await audit.record(session, principal, "model.guard", "model_version", picked.ref)
    await session.commit()
    await submit_guard(celery, version_id=picked.id)
    return views.model_version_public(picked, model)


@router.delete(
    "/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT, responses=_WRITE_ERRORS
)
async def delete_alias(name: str, alias: str, principal: ModelsAdmin, session: SessionDep) -> None:
    """Remove an alias; jobs naming it are refused from then on (404)."""
    model = await _writable(session, principal, name)
    await session.run_sync(lambda s: remove_alias(s, model, alias))
    await audit.record(session, principal, "model.unalias", "model", name, {"alias": alias})
    await session.commit()


@router.post("/{name}/deprecate", response_model=ModelPublic, responses=_WRITE_ERRORS)
async def deprecate_model(
    name: str, body: DeprecationCreate, principal: ModelsAdmin, session: SessionDep
) -> ModelPublic:
    """Deprecate every version of a model: still served, flagged in listings and results."""
    model = await _writable(session, principal, name)
    await session.run_sync(lambda s: deprecate(s, model, body.reason))
    await audit.record(session, principal, "model.deprecate", "model", name, body.model_dump())
    await session.commit()
    return await _model_public(session, model)


@router.post(
    "/{name}/versions/{version}/deprecate",
    response_model=ModelVersionPublic,
    responses=_WRITE_ERRORS,
)
async def deprecate_model_version(
    name: str, version: int, body: DeprecationCreate, principal: ModelsAdmin, session: SessionDep
) -> ModelVersionPublic:
    """Deprecate one version: `name:version` still runs, plain `name` prefers others."""
    model = await _writable(session, principal, name)
    picked = crud.pick_version(model, version)
    await session.run_sync(lambda s: deprecate(s, picked, body.reason))
    await audit.record(
        session, principal, "model.deprecate", "model_version", picked.ref, body.model_dump()
    )
    await session.commit()
    return views.model_version_public(picked, model)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=_WRITE_ERRORS)
async def delete_model(name: str, principal: ModelsAdmin, session: SessionDep) -> None:
    """Soft-delete a model: no new jobs; old results and `GET .../versions/{v}` still read.

    409 while a live ensemble of another model has one of its versions as a member.
    """
    model = await _writable(session, principal, name)
    await session.run_sync(lambda s: model_lifecycle.delete_model(s, model))
    await audit.record(session, principal, "model.delete", "model", name)
    await session.commit()


@router.delete(
    "/{name}/versions/{version}", status_code=status.HTTP_204_NO_CONTENT, responses=_WRITE_ERRORS
)
async def delete_model_version(
    name: str, version: int, principal: ModelsAdmin, session: SessionDep
) -> None:
    """Soft-delete one version (409 while an alias points at it or a live ensemble pins it)."""
    model = await _writable(session, principal, name)
    picked = crud.pick_version(model, version)
    if picked.deleted_at is not None:
        return
    await session.run_sync(lambda s: delete_version(s, picked))
    await audit.record(session, principal, "model.delete", "model_version", picked.ref)
    await session.commit()
