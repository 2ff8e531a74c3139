"""Clinical databases as a source: one parameterised query, streamed with a server-side cursor.

Hospitals keep cohorts in OMOP, PCORnet CDM or i2b2 schemas, mostly on PostgreSQL. The mapping
declares one ``SELECT`` whose *values* arrive only as bound parameters (``:name`` placeholders,
SQLAlchemy ``text()``), never by string formatting, so a mapping cannot be turned into SQL
injection by its inputs. The statement is checked to be a single read query, and on
PostgreSQL it runs in a ``READ ONLY`` transaction.

Rows are streamed with ``AsyncConnection.stream()``: on PostgreSQL (asyncpg) a server-side
cursor fetched ``batch_size`` rows at a time, so memory is bounded by one batch however large
the result (see ``benchmarks/sources.py`` for 10^6 rows); SQLite (aiosqlite) is read
incrementally likewise. Rows are yielded as ``dict`` keyed by column label, with the driver's
Python types (``int``, ``Decimal``, ``date``, ``str``, ...) mapped directly to the typed columns.

Errors name the database (host, port, database; never the password), the SQLSTATE and, for
errors about the query itself (syntax, missing table, permissions), the driver's message; for
data errors the message is left out, since it may quote a row value.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from dic_connector.errors import SourceError
from dic_connector.sources.base import Item, ProgressCallback, Source

_READ_QUERY = re.compile(r"^\s*(\(\s*)*(SELECT|WITH|VALUES|TABLE)\b", re.IGNORECASE)
#: SQLSTATE classes whose driver messages describe the query or connection, not row data
_SAFE_CLASSES = ("08", "25", "28", "3D", "3F", "42", "57")


@dataclass(frozen=True)
class SqlConfig:
    """Database URL (``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``), query, parameters."""

    url: str = field(repr=False)
    query: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    batch_size: int = 5000

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def check_query(query: str) -> None:
    """Refuse anything but a single read statement."""
    body = query.strip().rstrip(";")
    if not _READ_QUERY.match(body):
        raise SourceError("SQL source query must be a single SELECT/WITH statement")
    if ";" in re.sub(r"'(?:[^']|'')*'", "''", body):
        raise SourceError("SQL source query must be a single statement (found ';')")


class SqlSource(Source):
    """Streams the rows of the mapping's query as dicts."""

    kind: ClassVar[str] = "sql"

    def __init__(self, config: SqlConfig, *, engine: AsyncEngine | None = None,
                 on_progress: ProgressCallback | None = None) -> None:
        super().__init__(on_progress)
        check_query(config.query)
        self.config = config
        self._own_engine = engine is None
        self.engine = engine or create_async_engine(config.url, poolclass=NullPool)
        self._label = _describe(config.url)
        #: column labels of the result, known once streaming has started
        self.columns: tuple[str, ...] = ()

    async def aclose(self) -> None:
        if self._own_engine:
            await self.engine.dispose()

    async def stream(self) -> AsyncIterator[Item]:
        batch = self.config.batch_size
        statement = text(self.config.query)
        try:
            async with self.engine.connect() as conn:
                options: dict[str, Any] = {"yield_per": batch}
                if self.engine.dialect.name == "postgresql":
                    options["postgresql_readonly"] = True
                conn = await conn.execution_options(**options)
                result = await conn.stream(statement, dict(self.config.parameters))
                self.columns = tuple(result.keys())
                async for partition in result.mappings().partitions(batch):
                    for row in partition:
                        self._tracker.item("row")
                        yield dict(row)
                    self._tracker.update(units=1)
        except sa_exc.DBAPIError as exc:
            raise SourceError(f"SQL source {self._label}: {_explain(exc)}") from None
        except (sa_exc.ArgumentError, sa_exc.StatementError) as exc:
            raise SourceError(f"SQL source {self._label}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}") from None
        except OSError as exc:
            raise SourceError(f"SQL source {self._label}: cannot connect "
                              f"({type(exc).__name__}: {exc.strerror or exc})") from None
        except sqlite3.Error as exc:
            raise SourceError(f"SQL source {self._label}: {_explain_driver(exc)}") from None
        except Exception as exc:
            # asyncpg errors raised while fetching from a cursor are not wrapped by SQLAlchemy
            if getattr(exc, "sqlstate", None) is None:
                raise
            raise SourceError(f"SQL source {self._label}: {_explain_driver(exc)}") from None


def _describe(url: str) -> str:
    u = make_url(url)
    where = f"{u.host}:{u.port}/{u.database}" if u.host else str(u.database)
    return f"{u.get_backend_name()} {where}"


def _explain(exc: sa_exc.DBAPIError) -> str:
    orig = exc.orig
    cause = getattr(orig, "__cause__", None) or orig
    return _explain_driver(cause if cause is not None else exc)


def _explain_driver(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    kind = type(exc).__name__
    first_line = (str(exc).splitlines() or [""])[0][:300]
    if sqlstate is None:  # SQLite: no SQLSTATE; its messages name the statement, not values
        return f"{kind}: {first_line}"
    if str(sqlstate)[:2] in _SAFE_CLASSES:
        return f"{kind} (SQLSTATE {sqlstate}): {first_line}"
    return f"{kind} (SQLSTATE {sqlstate}); the message is withheld as it may contain row data"
