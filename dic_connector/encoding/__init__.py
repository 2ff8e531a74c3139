"""From raw cohort rows to the integer matrix that is secret-shared.

Modules, in dependency order:

- ``convert``   the column rules applied a whole column at a time (the hot loop)
- ``validate``  ``validate_rows``: typed clean rows + report, per-column policies
- ``encode``    ``encode_table``: int64 matrix (fixed point, one-hot indicators, day/month
                offsets) + manifest, ready for secret sharing

Nothing here logs or reports a value: failures name the row position, the column and the
rule.
"""

from __future__ import annotations

from dic_connector.encoding.encode import EncodedTable, encode_table
from dic_connector.encoding.validate import ValidationReport, validate_rows

__all__ = ["EncodedTable", "ValidationReport", "encode_table", "validate_rows"]
