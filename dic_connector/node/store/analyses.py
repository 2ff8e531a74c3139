"""Studies, analysis requests, data owners' signed approvals and standing policies, results.

Signed objects are stored *with the exact bytes that were signed*: the canonical JSON of the
payload, the Ed25519 signature (RFC 8032) and the signer's public key, so any node can
re-verify them later (:mod:`dic_connector.trust.payloads` says what each payload holds and
verifies them). The stored columns are taken *from* the signed payload, so what is queried
is what was signed.

Results hold opened aggregates only (the output of disclosure control), never shares.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.errors import AuthorizationError, ConflictError, NotFoundError, SignatureError
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.conflicts import insert
from dic_connector.node.store.models import (
    AnalysisRequest,
    AnalysisRequestDataset,
    Approval,
    Dataset,
    Principal,
    Result,
    StandingPolicy,
    Study,
)
from dic_connector.trust.payloads import (
    WILDCARD,
    approval_decision,
    owner_key,
    policy_terms,
    verify_signed,
)
from dic_connector.vocabulary import REQUEST_TRANSITIONS, RequestStatus


class StudyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, title: str, created_by: uuid.UUID, description: str = "",
                     study_id: uuid.UUID | None = None) -> Study:
        """A study; ``study_id`` lets the three nodes share one id for it."""
        study = Study(id=study_id or uuid.uuid4(), title=title, description=description,
                      created_by=created_by)
        await insert(self._session, f"study '{title}'", study)
        return study

    async def find(self, study_id: uuid.UUID) -> Study | None:
        return await self._session.get(Study, study_id)

    async def get(self, study_id: uuid.UUID) -> Study:
        study = await self._session.get(Study, study_id)
        if study is None:
            raise NotFoundError(f"study {study_id} not found")
        return study

    async def all(self, created_by: uuid.UUID | None = None) -> list[Study]:
        query = select(Study)
        if created_by is not None:
            query = query.where(Study.created_by == created_by)
        return list(await self._session.scalars(query.order_by(Study.created_at)))


class AnalysisRequestRepository:
    """Requests and their status machine (``enums.REQUEST_TRANSITIONS``)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, study_id: uuid.UUID, submitted_by: uuid.UUID, analysis: str,
                     analysis_version: str, parameters: dict[str, Any],
                     dataset_ids: Iterable[uuid.UUID], canonical_payload: str,
                     signature: bytes | None = None,
                     request_id: uuid.UUID | None = None) -> AnalysisRequest:
        """A ``submitted`` request; ``request_id`` lets the three nodes share one id."""
        datasets = sorted(set(dataset_ids))
        if not datasets:
            raise ConflictError("analysis request: at least one dataset is required")
        request = AnalysisRequest(
            id=request_id or uuid.uuid4(), study_id=study_id, submitted_by=submitted_by,
            analysis=analysis, analysis_version=analysis_version, parameters=parameters,
            canonical_payload=canonical_payload, signature=signature,
            status=RequestStatus.SUBMITTED,
        )
        links = [AnalysisRequestDataset(request_id=request.id, dataset_id=d) for d in datasets]
        await insert(self._session, f"analysis request {request.id}", request, links)
        return request

    async def find(self, request_id: uuid.UUID) -> AnalysisRequest | None:
        return await self._session.get(AnalysisRequest, request_id)

    async def pinned_versions(self, request_id: uuid.UUID) -> dict[uuid.UUID, uuid.UUID]:
        links = await self._session.scalars(
            select(AnalysisRequestDataset).where(AnalysisRequestDataset.request_id == request_id))
        return {link.dataset_id: link.version_id for link in links if link.version_id}

    async def get(self, request_id: uuid.UUID, lock: bool = False) -> AnalysisRequest:
        """The request; ``lock`` takes its row lock first (``FOR UPDATE``), which every
        transaction that will change a request or add to it (an approval) does before
        anything else, so two of them queue instead of deadlocking on a lock upgrade."""
        if lock:
            request = await self._session.scalar(
                select(AnalysisRequest).where(AnalysisRequest.id == request_id)
                .with_for_update().execution_options(populate_existing=True))
        else:
            request = await self._session.get(AnalysisRequest, request_id)
        if request is None:
            raise NotFoundError(f"analysis request {request_id} not found")
        return request

    async def all(self, study_id: uuid.UUID | None = None,
                   status: RequestStatus | None = None,
                   statuses: Collection[RequestStatus] | None = None
                   ) -> list[AnalysisRequest]:
        """The requests (oldest first), of ``study_id``, in ``status`` or in one of
        ``statuses`` (filtered in SQL: the coordination loop asks every tick for the few
        startable ones among every request the node ever held)."""
        query = select(AnalysisRequest)
        if study_id is not None:
            query = query.where(AnalysisRequest.study_id == study_id)
        if status is not None:
            query = query.where(AnalysisRequest.status == status)
        if statuses is not None:
            query = query.where(AnalysisRequest.status.in_(sorted(statuses)))
        return list(await self._session.scalars(query.order_by(AnalysisRequest.created_at)))

    async def dataset_ids(self, request_id: uuid.UUID) -> list[uuid.UUID]:
        return list(await self._session.scalars(
            select(AnalysisRequestDataset.dataset_id)
            .where(AnalysisRequestDataset.request_id == request_id)
            .order_by(AnalysisRequestDataset.dataset_id)
        ))

    async def datasets_and_sites(self, request_id: uuid.UUID
                                 ) -> tuple[list[uuid.UUID], list[str]]:
        """:meth:`dataset_ids` and :meth:`sites` in one statement (a status read shows
        both)."""
        rows = (await self._session.execute(
            select(AnalysisRequestDataset.dataset_id, Dataset.site_id)
            .outerjoin(Dataset, AnalysisRequestDataset.dataset_id == Dataset.id)
            .where(AnalysisRequestDataset.request_id == request_id)
            .order_by(AnalysisRequestDataset.dataset_id))).all()
        return ([dataset_id for dataset_id, _ in rows],
                sorted({site for _, site in rows if site is not None}))

    async def sites(self, request_id: uuid.UUID) -> list[str]:
        """The sites whose data the request touches: each must approve."""
        return list(await self._session.scalars(
            select(Dataset.site_id).distinct()
            .join(AnalysisRequestDataset, AnalysisRequestDataset.dataset_id == Dataset.id)
            .where(AnalysisRequestDataset.request_id == request_id).order_by(Dataset.site_id)
        ))

    async def pin_versions(self, request_id: uuid.UUID,
                           versions: dict[uuid.UUID, uuid.UUID]) -> None:
        """Record which dataset version each dataset was computed on."""
        links = await self._session.scalars(
            select(AnalysisRequestDataset).where(AnalysisRequestDataset.request_id == request_id)
        )
        for link in links:
            if link.dataset_id in versions:
                link.version_id = versions[link.dataset_id]
        await self._session.flush()

    async def set_status(self, request_id: uuid.UUID, status: RequestStatus,
                         reason: str | None = None) -> AnalysisRequest:
        """Move to ``status`` if the transition is allowed, else :class:`ConflictError`."""
        request = await self._session.scalar(
            select(AnalysisRequest).where(AnalysisRequest.id == request_id)
            .with_for_update().execution_options(populate_existing=True)
        )
        if request is None:
            raise NotFoundError(f"analysis request {request_id} not found")
        if status is not request.status and status not in REQUEST_TRANSITIONS[request.status]:
            raise ConflictError(f"analysis request {request_id}: cannot go from "
                             f"{request.status.value} to {status.value}")
        request.status, request.status_reason = status, reason
        await self._session.flush()
        return request


class ApprovalRepository:
    """Data owners' signed decisions on requests; verified before they are stored."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, request_id: uuid.UUID, signer: Principal, canonical_payload: str,
                  signature: bytes) -> Approval:
        """Verify and store; the same signed approval arriving again is returned, not
        stored twice (approvals reach every node more than once)."""
        public_key = owner_key(signer, "approval")
        await AnalysisRequestRepository(self._session).get(request_id, lock=True)
        same = await self._session.scalar(select(Approval).where(
            Approval.request_id == request_id, Approval.principal_id == signer.id,
            Approval.signature == signature))
        if same is not None:
            return same
        payload = verify_signed(public_key, canonical_payload, signature, "approval")
        decision = approval_decision(payload, request_id, signer.site_id)
        if signer.site_id not in await AnalysisRequestRepository(self._session).sites(request_id):
            raise AuthorizationError(
                f"approval: site '{signer.site_id}' has no data in request {request_id}")
        approval = Approval(
            request_id=request_id, site_id=signer.site_id, principal_id=signer.id,
            decision=decision, canonical_payload=canonical_payload, signature=signature,
            signer_public_key=public_key,
        )
        await insert(self._session, f"approval of request {request_id} by '{signer.name}'",
                     approval)
        return approval

    async def for_request(self, request_id: uuid.UUID) -> list[Approval]:
        return list(await self._session.scalars(
            select(Approval).where(Approval.request_id == request_id)
            .order_by(Approval.site_id, Approval.created_at)
        ))


class PolicyRepository:
    """Standing policies: a data owner's signed, expiring approval of a class of analyses."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, signer: Principal, canonical_payload: str,
                  signature: bytes) -> StandingPolicy:
        public_key = owner_key(signer, "policy")
        same = await self.by_signature(signature)
        if same is not None and same.principal_id == signer.id:
            return same
        terms = policy_terms(verify_signed(public_key, canonical_payload, signature, "policy"))
        if terms.site != signer.site_id:
            raise SignatureError("policy: payload names another site")
        site = terms.site
        policy = StandingPolicy(
            site_id=site, principal_id=signer.id, analyses=terms.analyses,
            columns=terms.columns, min_cell_count=terms.min_cell_count,
            expires_at=terms.expires_at,
            canonical_payload=canonical_payload, signature=signature,
            signer_public_key=public_key,
        )
        await insert(self._session, f"policy of site '{site}'", policy)
        return policy

    async def by_signature(self, signature: bytes) -> StandingPolicy | None:
        """The policy with this signature: how nodes name one policy to each other."""
        return await self._session.scalar(
            select(StandingPolicy).where(StandingPolicy.signature == signature))

    async def revoke(self, policy_id: uuid.UUID) -> None:
        policy = await self._session.get(StandingPolicy, policy_id)
        if policy is None:
            raise NotFoundError(f"policy {policy_id} not found")
        policy.revoked_at = policy.revoked_at or utcnow()
        await self._session.flush()

    async def active(self, site_id: str, now: dt.datetime | None = None) -> list[StandingPolicy]:
        now = now or utcnow()
        return list(await self._session.scalars(
            select(StandingPolicy).where(StandingPolicy.site_id == site_id,
                                         StandingPolicy.revoked_at.is_(None),
                                         StandingPolicy.expires_at > now)
            .order_by(StandingPolicy.created_at)
        ))

    async def matching(self, site_id: str, analysis: str, columns: Iterable[str],
                       now: dt.datetime | None = None) -> list[StandingPolicy]:
        """Active policies of ``site_id`` that cover ``analysis`` on all of ``columns``.

        ``analysis`` is a request's policy scope
        (:meth:`~dic_connector.node.analyses.base.Analysis.policy_scope`): a scope with a
        qualifier (``quantiles:extremes``) is covered only by a policy that names it, never
        by ``*``."""
        wanted = set(columns)
        blanket = ":" not in analysis
        return [
            p for p in await self.active(site_id, now)
            if ((blanket and WILDCARD in p.analyses) or analysis in p.analyses)
            and (WILDCARD in p.columns or wanted <= set(p.columns))
        ]


class ResultRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def store(self, request_id: uuid.UUID, aggregates: dict[str, Any]) -> Result:
        result = Result(request_id=request_id, aggregates=aggregates)
        await insert(self._session, f"result of request {request_id}", result,
                     savepoint=False)  # a second result: the computation's end fails
        return result

    async def for_request(self, request_id: uuid.UUID) -> Result:
        result = await self._session.scalar(select(Result).where(Result.request_id == request_id))
        if result is None:
            raise NotFoundError(f"no result for analysis request {request_id}")
        return result
