"""What an analysis is: its inputs (share vectors + manifest), parameters and MPC program.

An :class:`Analysis` is a named, versioned recipe (DESIGN.md §5): the matrix columns a
request reads (:meth:`Analysis.columns`, used to load shares and to match data owners'
policies), a check of the request's parameters against the dataset's manifest
(:meth:`Analysis.validate`), and the MPC program (:meth:`Analysis.run`) that all three nodes
execute in one :class:`~mpc.session.Session` on their replicated shares (Araki et al.,
CCS 2016; ABY3). ``discloses`` states exactly what the program opens, to whom; the program
opens nothing else, and disclosure control (:mod:`dic_connector.node.analyses.disclosure`) runs
under MPC before any aggregate is opened.

:meth:`Analysis.run` is a template every analysis follows: **validate** the parameters
against the manifest, refuse a release that would difference two **versions** of one
dataset (:mod:`~dic_connector.node.analyses.lineage`, on public information only), **gate**
the query set (the rows the analysis counts: where its column is present) per contributing
dataset version, pooled and by its complement, **compute** under MPC, and **open** what the
gates allow, all inside one :class:`~dic_connector.node.analyses.disclosure.Disclosure`,
which refuses any other opening and returns the
:class:`~dic_connector.node.analyses.disclosure.Release`: the aggregates, the transcript of
what was opened, the rules applied. Subclasses write :meth:`Analysis.compute`.

:class:`Inputs` is what one node holds for one computation: the share pairs of the matrix
columns the request reads, pooled over every pinned dataset version (rows concatenated in
the order of ``segments``), and the manifest (:class:`ColumnInfo` per matrix column, from
:meth:`dic_connector.encoding.encode.EncodedColumn.as_dict`) that says how to decode them.

Parameter conventions: ``{"column": "<typed column>"}`` names a typed column of the mapping
(``age``, ``gender``), never a matrix column (``gender=male``, ``age__present``); the analysis
finds the matrix columns it needs in the manifest. When the manifest has ``<col>__present``
(``missing: indicator``), a row counts only where that flag is 1: every analysis multiplies
by it under MPC, so the pooled statistics are over the rows where the column is present.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar

import jsonschema
import numpy as np
import numpy.typing as npt

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release, Rules
from dic_connector.node.analyses.ledger import Ledger, missing_cell
from dic_connector.node.analyses.lineage import Differences, version_refusal
from mpc.session import Session
from mpc.sharing import AShare

#: Kinds of manifest entries (:mod:`dic_connector.encoding.encode`).
KINDS = frozenset({"numeric", "date", "boolean", "categorical", "one_hot", "present"})
#: Kinds of the entry that carries a typed column's own name.
TYPED_KINDS = frozenset({"numeric", "date", "boolean", "categorical"})
#: Suffix of the missing-value indicator column.
PRESENT_SUFFIX = "__present"
#: What the gate of a query set of present rows opens (the start of a ``discloses`` text).
QUERY_SET_GATE = (
    "To the three nodes: one bit per contributing dataset version, whether it has at least "
    "min_subset_size rows where the column is present; one bit, whether their number n "
    "is >= k, the min_cell_count; one bit, whether the missing values are 0 or >= k. If "
    "one fails, nothing else is opened and the researcher sees which rule refused. ")


#: Kinds of typed column a statistic of numbers reads (dates as days since the epoch).
NUMERIC_KINDS: frozenset[str] = frozenset({"numeric", "date"})


def column_parameters(description: str, required: bool = True) -> dict[str, Any]:
    """The parameters schema of a one-column analysis: ``{"column": <typed column>}``."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"column": {"type": "string", "minLength": 1,
                                  "description": description}},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = ["column"]
    return schema


def numeric_column_parameters() -> dict[str, Any]:
    """The parameters schema of an analysis of one numeric or date column."""
    return column_parameters("a numeric or date typed column")


def _optional_str(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise AnalysisError(f"{where}: '{key}' must be a string")
    return value


def _optional_number(entry: Mapping[str, Any], key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnalysisError(f"{where}: '{key}' must be a number")
    return float(value)


@dataclass(frozen=True)
class ColumnInfo:
    """One manifest entry of a stored dataset version (see mapping.encode.EncodedColumn.as_dict).

    ``minimum``/``maximum`` (optional, in the column's unit, not scaled) are the declared
    range of a numeric or date column when the manifest carries it; analyses that need a
    bound (median: sort key width; mean: no overflow of the 64-bit sum) then rely on it, as
    the data owner's encoder enforces it, and otherwise check a safe bound under MPC.
    """

    name: str
    kind: str
    column: str
    scale: int = 0
    unit: str | None = None
    levels: tuple[str, ...] = ()
    level: str | None = None
    minimum: float | None = None
    maximum: float | None = None

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> ColumnInfo:
        """Parse and check one entry; :class:`AnalysisError` naming the entry and field."""
        if not isinstance(entry, Mapping):
            raise AnalysisError("dataset manifest: a column entry must be an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise AnalysisError("dataset manifest: a column entry has no 'name'")
        where = f"dataset manifest, column '{name}'"
        kind = entry.get("kind")
        if kind not in KINDS:
            raise AnalysisError(f"{where}: 'kind' must be one of {', '.join(sorted(KINDS))}")
        column = entry.get("column", name)
        if not isinstance(column, str) or not column:
            raise AnalysisError(f"{where}: 'column' must be a non-empty string")
        scale = entry.get("scale", 0)
        if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 18:
            raise AnalysisError(f"{where}: 'scale' must be an integer in 0..18")
        levels = entry.get("levels", ())
        if not isinstance(levels, list | tuple) or not all(isinstance(v, str) for v in levels):
            raise AnalysisError(f"{where}: 'levels' must be a list of strings")
        if len(set(levels)) != len(levels):
            raise AnalysisError(f"{where}: 'levels' must be distinct")
        minimum = _optional_number(entry, "minimum", where)
        maximum = _optional_number(entry, "maximum", where)
        if minimum is not None and maximum is not None and minimum > maximum:
            raise AnalysisError(f"{where}: 'minimum' is above 'maximum'")
        return cls(name=name, kind=kind, column=column, scale=scale,
                   unit=_optional_str(entry, "unit", where), levels=tuple(levels),
                   level=_optional_str(entry, "level", where), minimum=minimum,
                   maximum=maximum)

    def encoded_bounds(self) -> tuple[int | None, int | None]:
        """The declared range as ring integers (value * 10^scale), widened outwards so that
        every value the encoder accepts (it rounds half to even) lies inside."""
        low = high = None
        if self.minimum is not None:
            low = int(Decimal(repr(self.minimum)).scaleb(self.scale)
                      .to_integral_value(rounding=ROUND_FLOOR))
        if self.maximum is not None:
            high = int(Decimal(repr(self.maximum)).scaleb(self.scale)
                       .to_integral_value(rounding=ROUND_CEILING))
        return low, high


def parse_manifest(entries: Iterable[dict[str, Any]]) -> dict[str, ColumnInfo]:
    """Matrix column name -> :class:`ColumnInfo` for a manifest's ``columns`` list."""
    out: dict[str, ColumnInfo] = {}
    for entry in entries:
        info = ColumnInfo.from_manifest(entry)
        if info.name in out:
            raise AnalysisError(f"dataset manifest: column '{info.name}' is declared twice")
        out[info.name] = info
    return out


@dataclass(frozen=True)
class Inputs:
    """What one node holds for one computation: pooled share vectors (rows of every pinned dataset version, concatenated in the order of `segments`)."""

    #: matrix column name -> this node's share pair vector; the columns of
    #: :meth:`Analysis.columns` (with the manifest) are all an analysis reads
    columns: dict[str, AShare]
    #: matrix column name -> how to decode it; the *whole* manifest (the typed column's own
    #: entry is needed even when only its ``__present`` flag is loaded)
    manifest: dict[str, ColumnInfo]
    #: (site, row count) per pinned version, in row order (public metadata)
    segments: tuple[tuple[str, int], ...]
    #: ``"<dataset id>/<version id>"`` per pinned version, in row order (the release
    #: ledger's contributors; empty outside a node, e.g. in unit tests)
    contributors: tuple[str, ...] = ()
    #: how versions of the contributors' datasets differ, as their connectors declared
    #: (:mod:`~dic_connector.node.analyses.lineage`; empty outside a node)
    differences: Differences = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        return sum(count for _, count in self.segments)

    @property
    def sites(self) -> list[str]:
        """The site of each pinned version, in row order."""
        return [site for site, _ in self.segments]

    def segment_sums(self, x: AShare) -> AShare:
        """Shares of the sums of ``x`` over each pinned version's rows (the last axis), shape
        ``x.shape[:-1] + (segments,)``; local (sums of replicated shares need no
        communication)."""
        ends = np.cumsum([0, *(count for _, count in self.segments)])

        def sums(part: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
            running = np.concatenate([np.zeros((*part.shape[:-1], 1), dtype=np.uint64),
                                      np.cumsum(part, axis=-1, dtype=np.uint64)], axis=-1)
            return np.asarray(running[..., ends[1:]] - running[..., ends[:-1]], dtype=np.uint64)

        return AShare(x.party, sums(x.a), sums(x.b))

    def share(self, name: str) -> AShare:
        """The share vector of matrix column ``name``, checked to hold one value per row."""
        x = self.columns.get(name)
        if x is None:
            raise AnalysisError(f"input column '{name}' was not loaded for this analysis")
        if x.shape != (self.row_count,):
            raise AnalysisError(f"input column '{name}' has shape {x.shape}; the pinned "
                                f"versions hold {self.row_count} rows")
        return x


def present_column(manifest: Mapping[str, ColumnInfo], column: str) -> str | None:
    """``<column>__present`` when the manifest has that missing-value indicator."""
    name = column + PRESENT_SUFFIX
    info = manifest.get(name)
    return name if info is not None and info.kind == "present" else None


def one_hot_columns(info: ColumnInfo) -> list[str]:
    """The one-hot matrix columns ``<column>=<level>`` of a categorical, in level order."""
    return [f"{info.name}={level}" for level in info.levels]


class Analysis(ABC):
    """A named, versioned analysis: parameters, columns read, what it opens, MPC program.

    Subclasses set the class attributes and implement :meth:`run`; the base class validates
    parameters against ``parameters_schema`` (JSON Schema 2020-12) and the ``column``
    parameter against ``column_kinds``.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    summary: ClassVar[str]
    #: Human text: exactly what is opened, to whom (the three nodes, then the researcher).
    discloses: ClassVar[str]
    #: JSON Schema of the request's "parameters".
    parameters_schema: ClassVar[dict[str, Any]]
    #: Kinds of typed column the "column" parameter may name.
    column_kinds: ClassVar[frozenset[str]] = TYPED_KINDS

    # -- parameters --------------------------------------------------------------------

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        """Schema check alone (no dataset needed)."""
        if not isinstance(parameters, dict):
            raise AnalysisError(f"{self.name}: parameters must be a JSON object")
        validator = jsonschema.Draft202012Validator(self.parameters_schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(parameters))
        if error is None:
            return
        if error.validator == "additionalProperties":
            allowed = ", ".join(sorted(self.parameters_schema.get("properties", {})))
            unknown = sorted(set(parameters) - set(self.parameters_schema.get("properties", {})))
            raise AnalysisError(f"{self.name}: unknown parameter(s) "
                                f"{', '.join(repr(u) for u in unknown)}; expected "
                                f"{allowed or 'none'}")
        where = "/".join(str(p) for p in error.absolute_path)
        subject = f"parameter '{where}'" if where else "parameters"
        raise AnalysisError(f"{self.name}: {subject}: {error.message}"[:500])

    def typed_column(self, parameters: dict[str, Any],
                     manifest: Mapping[str, ColumnInfo]) -> ColumnInfo:
        """The manifest entry of the typed column named by ``parameters["column"]``."""
        column = parameters["column"]
        info = manifest.get(column)
        if info is None or info.kind not in TYPED_KINDS:
            typed = sorted(n for n, i in manifest.items() if i.kind in TYPED_KINDS)
            hint = (f"; matrix column '{column}' belongs to typed column '{info.column}'"
                    if info is not None else "")
            raise AnalysisError(f"{self.name}: parameter 'column': unknown column "
                                f"'{column}'{hint}; expected one of the dataset's typed "
                                f"columns: {', '.join(typed) or '(none)'}")
        if info.kind not in self.column_kinds:
            raise AnalysisError(f"{self.name}: parameter 'column': '{column}' is "
                                f"{info.kind}; expected a "
                                f"{' or '.join(sorted(self.column_kinds))} column")
        if info.kind == "categorical":
            for name in one_hot_columns(info):
                entry = manifest.get(name)
                if entry is None or entry.kind != "one_hot":
                    raise AnalysisError(f"{self.name}: parameter 'column': categorical "
                                        f"'{column}' lacks its one-hot column '{name}' in "
                                        "the dataset manifest")
        return info

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        """:class:`AnalysisError` naming the parameter and what was expected."""
        self.check_parameters(parameters)
        if "column" in parameters:
            self.typed_column(parameters, manifest)

    # -- columns read ------------------------------------------------------------------

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        """Matrix columns holding the values this analysis reads (before ``__present``)."""
        return [info.name]

    def columns(self, parameters: dict[str, Any],
                manifest: Mapping[str, ColumnInfo] | None = None) -> list[str]:
        """Matrix columns the request reads: used to load shares and to match data owners'
        policies (map them to typed columns with ``manifest[name].column``).

        Without a manifest the exact matrix columns are unknown, so this returns the typed
        column names the parameters reference.
        """
        self.check_parameters(parameters)
        column = parameters.get("column")
        if column is None:
            return []
        if manifest is None:
            return [column]
        info = self.typed_column(parameters, manifest)
        present = present_column(manifest, info.name)
        return self.value_columns(info, manifest) + ([present] if present else [])

    def typed_columns(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                      ) -> list[str]:
        """The typed columns the request reads (what the release ledger records it by)."""
        names = self.columns(parameters, manifest)
        return sorted({manifest[n].column if n in manifest else n for n in names})

    def policy_scope(self, parameters: dict[str, Any]) -> str:
        """The analysis name a data owner's standing policy must list to cover a request.

        Normally the analysis' own name (a ``*`` policy covers it too). A request that opens
        something a blanket policy must not cover (the minimum of a column, say) returns a
        scope ``"<name>:<what>"``, which only a policy naming it explicitly covers."""
        return self.name

    # -- the program -------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The catalogue entry as JSON (name, version, summary, discloses, schema)."""
        return {"name": self.name, "version": self.version, "summary": self.summary,
                "discloses": self.discloses, "parameters_schema": self.parameters_schema}

    #: Whether the query set's complement (rows where the column is missing) must be 0 or
    #: >= k: analyses that open n do; a table that opens cells checks what it leaves
    #: unopened itself.
    complement_rule: ClassVar[bool] = True

    async def run(self, session: Session, inputs: Inputs, parameters: dict[str, Any],
                  rules: Rules, ledger: Ledger | None = None) -> Release:
        """Validate -> gate -> compute -> open (see the module doc). The SAME release on
        all three parties; nothing is opened but through the disclosure layer. With a
        ``ledger``, sums that this release and earlier ones would together expose are
        checked too, and the release says what to add to the ledger."""
        self.validate(parameters, inputs.manifest)
        with Disclosure(session, rules, ledger, inputs.contributors, inputs.sites) as d:
            lineage = version_refusal(ledger, inputs.contributors,
                                      self.typed_columns(parameters, inputs.manifest),
                                      inputs.differences, rules.min_subset_size,
                                      dict(zip(inputs.contributors, inputs.sites, strict=False)))
            if lineage is not None:
                return d.refused(lineage)
            query = await self.gate(d, inputs, parameters)
            if query.refusal is not None:
                return d.refused(query.refusal)
            return d.release(await self.compute(d, inputs, parameters, query))

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]
                   ) -> QuerySet:
        """Check the query set: the rows where ``parameters["column"]`` is present (all
        rows without a column or a missing-value indicator, whose sizes are then public)."""
        column = parameters.get("column")
        present = present_column(inputs.manifest, column) if column is not None else None
        sizes: AShare | list[int] = ([count for _, count in inputs.segments] if present is None
                                     else inputs.segment_sums(inputs.share(present)))
        return await d.query_set(sizes, inputs.sites, inputs.row_count,
                                 complement=self.complement_rule,
                                 missing_cell=None if column is None else missing_cell(column),
                                 segment_rows=[count for _, count in inputs.segments])

    @abstractmethod
    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        """JSON-safe aggregates, the same on all three parties, opened through ``d`` only;
        ``query`` passed its gate (``query.gate`` opens the query set's size n)."""
