"""Column types and constraint names that every table of the project's databases uses.

- A fixed naming convention gives every index and constraint a deterministic name, which
  Alembic needs to drop or alter them (SQLite batch mode recreates tables by name):
  https://alembic.sqlalchemy.org/en/latest/naming.html
- :class:`UTCDateTime` stores timezone-aware UTC instants. SQLite has no time zone type and
  hands back naive values; PostgreSQL ``timestamptz`` hands back aware ones. Both come out aware
  and in UTC, and naive input is refused rather than guessed.
- :class:`EnumText` stores a ``str`` Enum as its value in a ``VARCHAR`` (no native PostgreSQL
  enum type, so adding a member is not a schema migration).

Each database keeps its own declarative base (``MetaData(naming_convention=NAMING_CONVENTION)``),
so the node's tables and the connector's never mix in one metadata.
"""


from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, Generic, TypeVar

from sqlalchemy import DateTime, Dialect, String
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC ``datetime`` on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


E = TypeVar("E", bound=Enum)


class EnumText(TypeDecorator[E], Generic[E]):
    """A ``str`` Enum stored by value in ``VARCHAR(length)``."""

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int = 32) -> None:
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self.enum_class(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_class(value)

