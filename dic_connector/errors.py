"""The one error hierarchy of the service, grouped by who must act.

Every exception raised on purpose by ``dic_connector`` derives from :class:`DicError`.
Messages name the *place* of a problem (file, JSON path, record position, column, rule) and
never a row-level value: errors end up in logs, and nothing row-level may be logged.

::

    DicError
    ├── ConfigError                 operator: a config key is missing or malformed
    ├── MappingError                mapping author: the declarative mapping is wrong
    │   ├── MappingFileError            file/line/path and the rule broken
    │   ├── ViewDefinitionError         JSON path of the bad ViewDefinition element
    │   └── FhirPathError               expression that cannot be parsed or evaluated
    ├── DataValidationError         data owner: a value breaks its declared type or range
    ├── SourceError                 data owner's IT: the FHIR server / database misbehaved
    │   ├── SourceAuthError             credentials or token endpoint refused us
    │   └── SourceTimeoutError          the server did not answer in time
    ├── StoreError                  node operator: storage or migration failure
    │   ├── NotFoundError               an object that does not exist (or is not yours)
    │   └── EncryptionError             a blob or key at rest does not decrypt (wrong key,
    │                                   unknown key id, blob moved or tampered with)
    ├── AuthorizationError          caller: not allowed (HTTP 403)
    │   ├── AuthenticationError         no valid credentials (HTTP 401)
    │   └── SignatureError              an approval or request signature does not verify
    ├── PolicyError                 researcher: disclosure control refuses the analysis
    ├── AnalysisError               researcher: an analysis request's parameters are invalid
    │                               for the analysis or the dataset (unknown analysis,
    │                               unknown column, wrong column kind)
    └── CoordinationError           node operator: the three nodes could not agree / reach
                                    each other

HTTP status codes for these are mapped in one place (the API layer), not here.
"""

from __future__ import annotations


class DicError(Exception):
    """Base of every error raised on purpose by dic_connector."""


class ConfigError(DicError):
    """A configuration key is missing or has an invalid value."""


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
    """A FHIRPath expression cannot be parsed or evaluated."""


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


class StoreError(DicError):
    """Storage failed (database, migrations, encryption at rest)."""


class NotFoundError(StoreError):
    """The requested object does not exist or is not visible to the caller."""


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


class CoordinationError(DicError):
    """The three nodes could not reach each other or did not agree."""
