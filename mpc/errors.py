"""The engine's error hierarchy, grouped by who must act.

::

    MpcError
    ├── EncodingError       data owner: a value does not fit its declared fixed-point range
    ├── ShareError          programmer: shares of different shapes/parties combined
    ├── PeerError           operator: a peer disconnected, timed out, or sent a replayed,
    │                       out-of-session or malformed message
    ├── TlsConfigError      operator: certificates/keys missing or not from the deployment CA
    └── ProtocolError       programmer/operator: a protocol precondition does not hold

Messages never contain a share or a secret value.
"""

from __future__ import annotations


class MpcError(Exception):
    """Base of every error raised on purpose by the engine."""


class EncodingError(MpcError, ValueError):
    """A value cannot be encoded into the ring under its declared fixed-point format.

    The message names the column, the row position and the declared range, and says what is
    wrong with the value (not finite, below minimum, above maximum) without printing it: the
    encoder runs on row-level data. ``value`` is kept as an attribute for the data owner's own
    code and is deliberately left out of ``str()`` and ``repr()``.
    """

    def __init__(self, column: str, row: int, problem: str, low: float, high: float,
                 value: object = None) -> None:
        super().__init__(
            f"column {column!r}, row {row}: value {problem}; declared range [{low}, {high}]"
        )
        self.column = column
        self.row = row
        self.problem = problem
        self.low = low
        self.high = high
        self.value = value

    def __repr__(self) -> str:
        return f"EncodingError({self.args[0]!r})"


class ShareError(MpcError):
    """Shares that cannot be combined (different parties, shapes or kinds)."""


class PeerError(MpcError):
    """A peer channel failed: disconnect, timeout, replay, wrong session or bad frame."""

    def __init__(self, message: str, peer: int | None = None) -> None:
        super().__init__(message if peer is None else f"party {peer}: {message}")
        self.peer = peer


class TlsConfigError(MpcError):
    """TLS material is missing or invalid for a mutual-TLS peer channel."""


class ProtocolError(MpcError):
    """A protocol precondition does not hold (e.g. empty input where one is required)."""
