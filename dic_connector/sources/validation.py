"""Optional strict validation of FHIR resources against the ``fhir.resources`` R4B models.

Sources parse with plain :mod:`json` for speed (model construction costs ~100x more); when a
mapping asks for strict validation each resource is additionally checked against the R4B
pydantic model of its type (R4B is the closest to R4 in ``fhir.resources`` 8, which ships no
R4 package; see https://hl7.org/fhir/R4B/diff.html for the differences). The resource itself is
still passed on as the plain ``dict``.

A failure names the resource type and id and the element path (``Observation.valueQuantity.value``)
with pydantic's description of the rule, never the offending value.
"""

from __future__ import annotations

from typing import Any

from dic_connector.errors import SourceError


def validate_resource(resource: dict[str, Any], origin: str = "") -> None:
    """Raise :class:`SourceError` if ``resource`` does not conform to its R4B model."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    rtype = resource.get("resourceType")
    label = f"{rtype}/{resource.get('id', '?')}"
    where = f" (from {origin})" if origin else ""
    if not isinstance(rtype, str):
        raise SourceError(f"resource without resourceType{where}")
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError, ImportError):
        raise SourceError(f"{label}{where}: unknown resource type") from None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False)[:5]:
            path = ".".join(str(p) for p in (rtype, *err["loc"]) if not str(p).startswith("__"))
            problems.append(f"element {path}: {err['msg']}")
        raise SourceError(f"{label}{where} fails R4B validation: " + "; ".join(problems)) from None
