"""The one error hierarchy of the service, grouped by who must act.

Every exception raised on purpose by ``dic_connector`` derives from :class:`DicError`.
Messages name the *place* of a problem (file, JSON path, record position, column, rule) and
never a row-level value: errors end up in logs, and nothing row-level may be logged.

::

    DicError
    ├── ConfigError                 operator: a config key is missing or malformed
    ├── CanonicalJSONError          caller: a value has no canonical JSON form (a float, a
    │                               lone surrogate, an integer beyond 2**53 - 1)
    ├── MappingError                mapping author: the declarative mapping is wrong
    │   ├── MappingFileError            file/line/path and the rule broken
    │   ├── ViewDefinitionError         JSON path of the bad ViewDefinition element
    │   └── FhirPathError               expression that cannot be parsed or evaluated
    ├── DataValidationError         data owner: a value breaks its declared type or range
    ├── SourceError                 data owner's IT: the FHIR server / database misbehaved
    │   ├── SourceAuthError             credentials or token endpoint refused us
    │   └── SourceTimeoutError          the server did not answer in time
    ├── PipelineError               data owner: a connector run cannot produce a dataset
    │                               version (e.g. no row passed validation)
    ├── ConflictError               caller: the stored state or the store's rules refuse the
    │                               action: a duplicate, a transition the state machine
    │                               forbids, a malformed manifest or principal (HTTP 409)
    ├── NotFoundError               caller: the object does not exist or is not theirs (404)
    ├── StoreError                  node or connector operator: storage, migration or
    │   │                           audit-log failure
    │   └── EncryptionError             a blob or key at rest does not decrypt (wrong key,
    │                                   unknown key id, blob moved or tampered with)
    ├── AuthorizationError          caller: not allowed (HTTP 403)
    │   ├── AuthenticationError         no valid credentials (HTTP 401)
    │   └── SignatureError              an approval or request signature does not verify
    ├── PolicyError                 researcher: disclosure control refuses the analysis;
    │                               data owner: a policy would loosen the deployment's rules
    ├── AnalysisError               researcher: an analysis request's parameters are invalid
    │                               for the analysis or the dataset (unknown analysis,
    │                               unknown column, wrong column kind)
    ├── ClientError                 researcher, data owner, admin: the nodes did not answer
    │   │                           what was asked for
    │   ├── ApiError                    a node's control API refused a call or could not be
    │   │                               reached (``status``, None when nothing answered;
    │   │                               ``detail``, the node's problem detail)
    │   ├── UnexpectedStatus            a request ended in another status than the one
    │   │                               awaited (``status``, ``reason``): waiting cannot help
    │   ├── WaitTimeout                 a request did not reach the awaited status in time
    │   └── ResultMismatch              nodes hold different results for one request: trust
    │                                   none of them
    ├── PlotError                   researcher: a result cannot be drawn as asked (an analysis
    │                               without a plot, nothing released, a file type other than
    │                               PNG or SVG, matplotlib not installed)
    ├── CoordinationError           node operator: the three nodes could not agree / reach
    │   │                           each other
    │   ├── NotReady                    this node will not (yet) compute a request
    │   ├── PeerUnavailable             a peer could not be reached or failed (retried;
    │   │                               ``status``, its 5xx, None when nothing answered;
    │   │                               ``connected``, False when no connection was made)
    │   ├── PeerRefused                 a peer's own checks refused a call (``status``, 4xx;
    │   │                               ``title``, its problem title)
    │   ├── UploadError                 connector: a node refused or could not be reached;
    │   │                               the upload was aborted everywhere (``status``)
    │   │   └── DeltaRefused            a node would not build a delta version on its base
    │   │                               (gone, or other columns): upload in full instead
    │   └── NodeProcessError            a local node process did not start, answer or stop
    └── DemoError                   the embedded demo: a step failed (the message names it)

HTTP status codes for these are mapped in one place
(:mod:`dic_connector.node.api.problems`), not here.
"""

from __future__ import annotations


class DicError(Exception):
    """Base of every error raised on purpose by dic_connector."""


class ConfigError(DicError):
    """A configuration key is missing or has an invalid value."""


class CanonicalJSONError(DicError):
    """The value cannot be canonicalised (float, non-string key, unsupported type)."""


class MappingError(DicError):
    """A declarative mapping (file, ViewDefinition, FHIRPath) is invalid."""


class MappingFileError(MappingError):
    """A mapping file breaks its schema; the message names file, path and rule."""


class ViewDefinitionError(MappingError):
    """A SQL-on-FHIR ViewDefinition is invalid; ``path`` is the JSON path of the element."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class FhirPathError(MappingError):
    """A FHIRPath expression cannot be parsed or evaluated.

    ``expected`` says, for a failure on the data (an operand of the wrong type), what the
    expression needed (``"number"``); it is None for a broken expression.
    """

    def __init__(self, message: str, expected: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected


class DataValidationError(DicError):
    """A source value breaks its declared column type or range.

    Names the row by position (never by identifier), the column and the rule; the value
    itself is not part of the message.
    """


class SourceError(DicError):
    """A data source (FHIR server, Bulk export, NDJSON directory, database) failed."""


class SourceAuthError(SourceError):
    """The source refused our credentials, or the token endpoint failed."""


class SourceTimeoutError(SourceError):
    """The source did not answer within the configured time."""


class PipelineError(DicError):
    """The connector run cannot produce a dataset version (e.g. no row passed validation)."""


class ConflictError(DicError):
    """The stored state or the store's rules refuse the action (HTTP 409).

    A duplicate, a status change the state machine forbids, shares for a committed version,
    a malformed manifest or principal: the caller must change what it asks, not the operator
    what runs.
    """


class NotFoundError(DicError):
    """The requested object does not exist or is not visible to the caller."""


class StoreError(DicError):
    """Storage failed: database, migrations, the audit log, encryption at rest."""


class EncryptionError(StoreError):
    """Encryption at rest failed: unknown key id, or a blob/key that does not authenticate."""


class AuthorizationError(DicError):
    """The caller is not authenticated, or not allowed to do this."""


class AuthenticationError(AuthorizationError):
    """No credentials, or credentials that do not verify (one message for every cause)."""


class SignatureError(AuthorizationError):
    """A signature (approval, request, policy) does not verify."""


class PolicyError(DicError):
    """Disclosure control or an owner's policy refuses the analysis."""


class AnalysisError(DicError):
    """An analysis request's parameters are invalid for the analysis or the dataset.

    Names the parameter and what was expected (an unknown analysis or version, an unknown
    column, a column of the wrong kind); never a row-level value.
    """


class ClientError(DicError):
    """What the nodes answered a researcher, data owner or admin is not what was asked for."""


class ApiError(ClientError):
    """A node's control API refused a call, or could not be reached.

    ``status`` is the HTTP status the node answered, or None when nothing answered; ``detail``
    is the ``detail`` of the node's problem document (None when there was none). The message
    names the caller, the node, the call and the detail, never a credential.
    """

    def __init__(self, message: str, status: int | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class UnexpectedStatus(ClientError):
    """A request ended in a terminal status other than the one awaited (e.g. ``failed``
    while waiting for ``completed``); ``status`` and ``reason`` are the node's."""

    def __init__(self, message: str, status: str, reason: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class WaitTimeout(ClientError):
    """A request did not reach the awaited status on every node asked within the time."""


class ResultMismatch(ClientError):
    """Nodes hold different results for one request: one of them is broken or lying, so
    none of the results may be used."""


class PlotError(DicError):
    """A result cannot be drawn as asked: its analysis has no plot, it releases nothing to
    draw, the file is neither PNG nor SVG, or matplotlib (the ``plots`` extra) is absent."""


class CoordinationError(DicError):
    """The three nodes could not reach each other or did not agree."""


class NotReady(CoordinationError):
    """This node will not (yet) compute the request; the message says why."""


class PeerUnavailable(CoordinationError):
    """The peer could not be reached or failed; the call may be retried.

    ``status`` is the peer's 5xx (or 408/429) status, or None when nothing answered;
    ``connected`` is False when not even a connection could be made (refused, DNS, TLS
    handshake), True when the peer took the call and then failed or timed out.
    """

    def __init__(self, message: str, status: int | None = None,
                 connected: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.connected = connected


class PeerRefused(CoordinationError):
    """The peer answered with a 4xx problem: its own checks refused the call.

    ``status`` is the 4xx status and ``title`` the problem document's title (empty if none).
    """

    def __init__(self, message: str, status: int, title: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.title = title


class UploadError(CoordinationError):
    """A node refused or could not be reached; the upload was aborted everywhere.

    ``status`` is the node's HTTP status, or None when it did not answer.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether asking the node again may succeed (no answer, 5xx, 408, 429)."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


class DeltaRefused(UploadError):
    """A node refused to begin a delta version on the named base (the base is not committed
    there, or its columns differ); aborted everywhere, the version is to be sent in full."""


class NodeProcessError(CoordinationError):
    """A local node process did not start, answer or stop as expected."""


class DemoError(DicError):
    """A step of the demo failed; the message names the step."""


class FhirServerMissing(DemoError):
    """The local FHIR server (sekmet-fhir in ``.venv-fhir``) is not installed."""
