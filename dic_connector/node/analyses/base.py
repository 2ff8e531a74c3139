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
against the manifest, refuse a table or grouping with more levels than the rules'
``max_levels`` (:meth:`Analysis.table_size`: frequency levels, contingency and prevalence
cells, groups of ``by``, histogram bins; public, from the parameters and the manifest),
refuse a release that would difference two **versions** of one
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

import dataclasses
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jsonschema
import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.disclosure import (
    Complement,
    Disclosure,
    QuerySet,
    Release,
    Rules,
    public_share,
)
from dic_connector.node.analyses.filters import (
    FILTER_DEFS,
    Filter,
    cell_key,
    check_filter_shape,
    evaluate,
    parse_filter,
    referenced_columns,
)
from dic_connector.node.analyses.ledger import Ledger, missing_cell
from dic_connector.node.analyses.lineage import Differences, version_refusal
from dic_connector.node.analyses.manifest import (
    TYPED_KINDS,
    ColumnInfo,
    one_hot_columns,
    present_column,
)
from mpc import ring
from mpc.protocols import arith
from mpc.session import Session
from mpc.sharing import AShare

#: What the gate of a query set of present rows opens (the start of a ``discloses`` text).
QUERY_SET_GATE = (
    "To the three nodes: one bit per contributing dataset version, whether it has at least "
    "min_subset_size rows in the query set (the rows where the column is present and the "
    "filter, if any, holds); one bit, whether their number n is >= k, the min_cell_count; "
    "one bit, whether the rows outside it are 0 or >= k; with a filter, two bits more: "
    "whether the present rows that fail the filter, and the rows that pass it but lack the "
    "column, are each 0 or >= k. If one fails, nothing else is opened and the researcher "
    "sees which rule refused. ")
#: What a filter adds to a ``discloses`` text.
FILTER_DISCLOSES = (
    " A filter opens nothing itself: it is computed under MPC as a 0/1 share per row (its "
    "comparisons with public constants included), and only the gate bits above depend "
    "on it.")


#: Kinds of typed column a statistic of numbers reads (dates as days since the epoch).
NUMERIC_KINDS: frozenset[str] = frozenset({"numeric", "date"})
#: The alternative hypotheses of the tests (scipy's names: fisher_exact, ttest_ind, pearsonr).
ALTERNATIVES = ("two-sided", "less", "greater")


def present_query(column: str, also: Sequence[str], parameters: dict[str, Any],
                  manifest: Mapping[str, ColumnInfo]) -> dict[str, Any]:
    """The base template's parameters for the rows where ``column`` and each of ``also`` is
    present and the request's ``"filter"`` holds: ``column``, and a filter joining
    ``is_present`` of each of ``also`` that has missing values to the request's filter."""
    parts: list[dict[str, Any]] = [{"op": "is_present", "column": name} for name in also
                                   if present_column(manifest, name) is not None]
    if "filter" in parameters:
        parts.append(parameters["filter"])
    out: dict[str, Any] = {"column": column}
    if len(parts) == 1:
        out["filter"] = parts[0]
    elif parts:
        out["filter"] = {"op": "&", "args": parts}
    return out


def named_column(analysis: str, key: str, column: str, kinds: frozenset[str],
                 manifest: Mapping[str, ColumnInfo]) -> ColumnInfo:
    """The manifest entry of the typed column ``column`` that parameter ``key`` names,
    checked to be of one of ``kinds``; :class:`AnalysisError` naming the parameter."""
    info = manifest.get(column)
    if info is None or info.kind not in TYPED_KINDS:
        typed = sorted(n for n, i in manifest.items() if i.kind in TYPED_KINDS)
        raise AnalysisError(
            f"{analysis}: parameter '{key}': unknown column '{column}'; "
            "expected one of the dataset's typed columns: "
            f"{', '.join(typed) or '(none)'}"
        )
    if info.kind not in kinds:
        raise AnalysisError(
            f"{analysis}: parameter '{key}': '{column}' is {info.kind}; "
            f"expected a {' or '.join(sorted(kinds))} column"
        )
    return info


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
    #: this node's shares of a record key per row, when the rules perturb counts
    #: (:func:`~dic_connector.node.analyses.perturbation.record_keys`; None: not derived)
    record_keys: AShare | None = None

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
        lengths = [count for _, count in self.segments]
        return AShare(x.party, ring.segment_sums(x.a, lengths), ring.segment_sums(x.b, lengths))

    def share(self, name: str) -> AShare:
        """The share vector of matrix column ``name``, checked to hold one value per row."""
        x = self.columns.get(name)
        if x is None:
            raise AnalysisError(f"input column '{name}' was not loaded for this analysis")
        if x.shape != (self.row_count,):
            raise AnalysisError(f"input column '{name}' has shape {x.shape}; the pinned "
                                f"versions hold {self.row_count} rows")
        return x


#: :attr:`Analysis.memory_per_row` of a recipe of sums and comparisons: its column shares,
#: the query set and a comparison circuit's words, chunked (prevalence at 2.2 x 10^6 rows:
#: 814 MiB per node, ~300 bytes a row above the idle node).
MEMORY_PER_ROW = 384
#: :attr:`Analysis.memory_per_row` of a recipe that sorts: the median's and quartiles'
#: sample selection at 2.2 x 10^6 rows takes 0.39 GiB per party (~170 bytes a row); a full
#: sort (survival, Spearman) keeps the shuffled rows and their comparisons in batches of
#: 2^18, about three times that.
SORT_MEMORY_PER_ROW = 512


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
    #: Whether the recipe takes a ``"filter"`` (:mod:`.filters`): it then computes over
    #: ``query.rows`` only, the rows :meth:`gate` admitted.
    filterable: ClassVar[bool] = False
    #: Whether every count it opens is perturbed when the rules ask for cell-key
    #: perturbation (:mod:`.perturbation`); a recipe that does not is refused then, unless
    #: the setting allows exact statistics.
    perturbs: ClassVar[bool] = False
    #: Peak memory a node needs per pooled row of the request's datasets (bytes), for
    #: :meth:`memory_estimate`: measured by ``benchmarks/analyses.py`` and
    #: ``benchmarks/mpc_nonlinear.py`` (peak RSS per node less the idle node's), rounded up.
    #: A sort (order statistics, survival, ranks) keeps several words per row and level.
    memory_per_row: ClassVar[int] = MEMORY_PER_ROW

    def memory_estimate(self, parameters: dict[str, Any], rows: int) -> int:
        """The memory (bytes) computing this request needs on a node, at most, over
        ``rows`` pooled rows: what the node's memory admission reserves for it while it
        runs (``memory_budget_mib``). Recipes whose cost depends on the parameters
        override it."""
        return rows * self.memory_per_row

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the parameters: ``parameters_schema``, with ``"filter"`` for a
        filterable recipe."""
        if not self.filterable:
            return self.parameters_schema
        schema = dict(self.parameters_schema)
        schema["properties"] = {**schema.get("properties", {}),
                                "filter": {"$ref": "#/$defs/filter"}}
        schema["$defs"] = {**schema.get("$defs", {}), **FILTER_DEFS}
        return schema

    # -- parameters --------------------------------------------------------------------

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        """Schema check alone (no dataset needed)."""
        if not isinstance(parameters, dict):
            raise AnalysisError(f"{self.name}: parameters must be a JSON object")
        validator = _parameters_validator(
            json.dumps(self.schema(), sort_keys=True), self.filterable)
        schema = validator.schema
        error = jsonschema.exceptions.best_match(validator.iter_errors(parameters))
        if error is None:
            if self.filterable and "filter" in parameters:
                try:
                    check_filter_shape(parameters["filter"])
                except AnalysisError as exc:
                    raise AnalysisError(f"{self.name}: parameter {exc}") from None
            return
        if error.validator == "additionalProperties":
            allowed = ", ".join(sorted(schema.get("properties", {})))
            unknown = sorted(set(parameters) - set(schema.get("properties", {})))
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
        self.filter_of(parameters, manifest)

    def filter_of(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                  ) -> Filter | None:
        """The request's filter checked against the manifest (None: no filter)."""
        if "filter" not in parameters:
            return None
        try:
            return parse_filter(parameters["filter"], manifest)
        except AnalysisError as exc:
            raise AnalysisError(f"{self.name}: parameter {exc}") from None

    def cell(self, cell: str, parameters: dict[str, Any],
             manifest: Mapping[str, ColumnInfo]) -> str:
        """The release-ledger name of ``cell`` in this request: keyed by its filter, so that
        filtered and unfiltered counts are never taken for the same sum."""
        return cell_key(cell, self.filter_of(parameters, manifest))

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
        if manifest is None:
            named = [] if column is None else [column]
            return list(dict.fromkeys(named + referenced_columns(parameters.get("filter"))))
        out: list[str] = []
        if column is not None:
            info = self.typed_column(parameters, manifest)
            present = present_column(manifest, info.name)
            out = self.value_columns(info, manifest) + ([present] if present else [])
        f = self.filter_of(parameters, manifest)
        return list(dict.fromkeys(out + (list(f.columns) if f is not None else [])))

    def typed_columns(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                      ) -> list[str]:
        """The typed columns the request reads (what the release ledger records it by)."""
        names = self.columns(parameters, manifest)
        typed = {manifest[n].column if n in manifest else n for n in names}
        if parameters.get("column") is not None:
            typed.add(parameters["column"])  # also when only its present flag is read
        f = self.filter_of(parameters, manifest)
        return sorted(typed | set(f.typed_columns if f is not None else ()))

    def table_size(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> tuple[str, int] | None:
        """What the request's table or grouping is and how many levels (cells, groups,
        bins) it has, as the ``max_levels`` rule counts them, e.g. ``("the table of
        'gender'", 3)``; None: the request opens no table (parameters already valid)."""
        return None

    def max_levels_refusal(self, parameters: dict[str, Any],
                           manifest: Mapping[str, ColumnInfo], rules: Rules) -> str | None:
        """Why the request is refused by ``max_levels`` (None: it is not)."""
        size = self.table_size(parameters, manifest)
        if rules.max_levels is None or size is None or size[1] <= rules.max_levels:
            return None
        return (f"{self.name}: {size[0]} has {size[1]} levels, more than the "
                f"{rules.max_levels} allowed (max_levels)")

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
                "discloses": self.discloses, "parameters_schema": self.schema()}

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
            too_many = self.max_levels_refusal(parameters, inputs.manifest, rules)
            if too_many is not None:
                return d.refused(too_many)
            exact = rules.perturbation is not None and not rules.perturbation.allow_exact
            if exact and not self.perturbs:
                return d.refused(f"this deployment perturbs counts (cell-key method) and "
                                 f"{self.name} v{self.version} would open exact counts or "
                                 "sums of the same rows, which it does not perturb yet "
                                 "(setting 'perturbation.allow_exact')")
            query = await self.gate(d, inputs, parameters)
            if query.refusal is not None:
                return d.refused(query.refusal)
            result = await self.compute(d, inputs, parameters, query)
            return result if isinstance(result, Release) else d.release(result)

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]
                   ) -> QuerySet:
        """Check the query set: the rows where ``parameters["column"]`` is present and the
        filter holds (all rows without either, whose sizes are then public). The query set
        that passes carries them as ``rows`` (0/1 shares), which :meth:`compute` weighs
        every row by.

        With a filter, two more counts are complements that a researcher can form from this
        release and the same request without the filter (or with the filter and no
        column), so each must be 0 or >= k too (:class:`.Complement`): the present rows
        that fail the filter, and the rows that pass it where the column is missing."""
        column = parameters.get("column")
        present = present_column(inputs.manifest, column) if column is not None else None
        flag = inputs.share(present) if present is not None else None
        segment_rows = [count for _, count in inputs.segments]
        f = self.filter_of(parameters, inputs.manifest)
        cell = missing_cell("*" if column is None else column)
        if f is None:
            sizes: AShare | list[int] = (segment_rows if flag is None
                                         else inputs.segment_sums(flag))
            query = await d.query_set(sizes, inputs.sites, inputs.row_count,
                                      complement=self.complement_rule,
                                      missing_cell=None if column is None else cell,
                                      segment_rows=segment_rows)
            return dataclasses.replace(query, rows=flag)
        passes = await evaluate(d.session, f, inputs.share, inputs.row_count)
        rows = passes if flag is None else await arith.mul(d.session, passes, flag)
        shared = inputs.segment_sums(rows)
        complements: list[Complement] = []
        if self.complement_rule and flag is not None:
            complements = [
                Complement(f"rows where '{column}' is present fail the filter",
                           inputs.segment_sums(flag) - shared,
                           cell_key(f"{column}__present", f)),
                Complement(f"rows that pass the filter lack '{column}'",
                           inputs.segment_sums(passes) - shared,
                           cell_key(f"{column}__missing_passing", f))]
        query = await d.query_set(shared, inputs.sites, inputs.row_count,
                                  complement=self.complement_rule,
                                  missing_cell=cell_key(cell, f), segment_rows=segment_rows,
                                  complements=complements)
        return dataclasses.replace(query, rows=rows)

    def rows_in(self, d: Disclosure, inputs: Inputs, query: QuerySet) -> AShare:
        """Shares of the query set's size n (shape (1,); local)."""
        if query.rows is None:
            return public_share(d.session.party, [inputs.row_count])
        return query.rows.sum().reshape(1)

    async def gate_true(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                        query: QuerySet, info: ColumnInfo) -> QuerySet:
        """The rows of a passed query set where the boolean ``info`` is true, gated as a
        query set of their own: each contributor >= min_subset_size, their number >= k,
        and the rows of the query set where it is false (the same request's n minus it)
        0 or >= k, on the ledger as ``<column>=false``. One multiplication round (none
        without a filter or missing values), one batched circuit; opens one bit per
        contributor, one for the count, one for the false rows."""
        x = inputs.share(info.name)
        true_rows = x if query.rows is None else await arith.mul(d.session, x, query.rows)
        true_sizes = inputs.segment_sums(true_rows)
        sizes = np.array([count for _, count in inputs.segments], dtype=np.int64)
        totals = (public_share(d.session.party, sizes) if query.rows is None
                  else inputs.segment_sums(query.rows))
        false = Complement(f"rows of the query set where '{info.name}' is false",
                           totals - true_sizes,
                           self.cell(f"{info.name}=false", parameters, inputs.manifest))
        true = await d.query_set(true_sizes, inputs.sites, inputs.row_count, complement=False,
                                 complements=[false])
        if true.refusal is not None:
            return dataclasses.replace(true, refusal=f"{true.refusal}, counting the rows "
                                       f"where '{info.name}' is true")
        return dataclasses.replace(true, rows=true_rows)

    @abstractmethod
    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any] | Release:
        """JSON-safe aggregates, the same on all three parties, opened through ``d`` only;
        ``query`` passed its gate (``query.gate`` opens the query set's size n). A gate
        checked later that refuses returns ``d.refused(reason)``."""


@functools.lru_cache(maxsize=256)
def _parameters_validator(schema_json: str, filterable: bool) -> Any:
    """The validator of a recipe's parameters schema (its :meth:`~Analysis.schema` as
    canonical JSON, the filter left to its own checks, which name the place in its tree),
    built once per schema: each node checks a request's parameters at submission and in
    every plan check. Keyed by the schema itself, not the class, so a recipe whose schema
    depends on how it was built gets its own."""
    schema = json.loads(schema_json)
    if filterable:
        schema = {**schema, "properties": {**schema["properties"], "filter": {}}}
    return jsonschema.Draft202012Validator(schema)
