"""From raw cohort rows to the integer matrix that is secret-shared.

Modules, in dependency order:

- ``convert``   the column rules applied a whole column at a time (the hot loop)
- ``validate``  ``validate_rows``: typed clean rows + report, per-column policies
                (``validate_columns``: the same for a table held by column)
- ``encode``    ``encode_table``: int64 matrix (fixed point, one-hot indicators, day/month
                offsets) + manifest, ready for secret sharing (``encode_columns``: the
                same column by column, the matrix columns produced as they are shared)

Nothing here logs or reports a value: failures name the row position, the column and the
rule.
"""

from __future__ import annotations

from dic_connector.encoding.encode import (
    EncodedColumns,
    EncodedTable,
    encode_columns,
    encode_table,
)
from dic_connector.encoding.validate import ValidationReport, validate_columns, validate_rows

__all__ = ["EncodedColumns", "EncodedTable", "ValidationReport", "encode_columns",
           "encode_table", "validate_columns", "validate_rows"]
