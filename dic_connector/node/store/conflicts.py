"""Inserting rows so that a conflict is a :class:`~dic_connector.errors.ConflictError`, not a crash.

A duplicate key (a site added twice, a forwarded request that already arrived, an approval
sent again) or a reference to a missing row surfaces from the driver as an ``IntegrityError``
whose text holds the SQL parameters — possibly a token digest or a signed payload. We insert
inside a SAVEPOINT (``Session.begin_nested``) so that the caller's transaction stays usable,
and raise a ``ConflictError`` that names only the object; the driver error is not chained
(``from None``), so its parameters do not reach a log through the traceback either.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.errors import ConflictError
from dic_connector.node.store.base import Base


async def insert(session: AsyncSession, what: str, *rows: Base | Iterable[Base],
                 savepoint: bool = True) -> None:
    """Add and flush ``rows`` in a savepoint; a constraint violation becomes ConflictError.

    ``savepoint=False`` for rows whose conflict can only end the caller's transaction (an
    audit entry of a number another writer took, a computation's second result or ledger
    entry): the two statements of the savepoint are saved, the error is the same, and the
    transaction is left to be rolled back."""
    def add() -> None:
        for row in rows:
            if isinstance(row, Base):
                session.add(row)
            else:
                session.add_all(row)

    try:
        if savepoint:
            async with session.begin_nested():
                add()
        else:
            add()
            await session.flush()
    except IntegrityError:
        raise ConflictError(f"{what} already exists or refers to a missing object") from None
