"""Declarative base of the node's service database.

Its metadata uses the project's constraint naming convention; the column types every table
uses (:class:`UTCDateTime`, :class:`EnumText`) and :func:`utcnow` live in
:mod:`dic_connector.database.columns`, shared with the connector's state database, and are
re-exported here for the node's modules.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from dic_connector.database.columns import NAMING_CONVENTION, EnumText, UTCDateTime, utcnow

__all__ = ["NAMING_CONVENTION", "Base", "EnumText", "UTCDateTime", "utcnow"]


class Base(DeclarativeBase):
    """Declarative base of every table of the service database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
