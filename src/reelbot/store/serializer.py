"""JSON serialization for arq, which pickles jobs and results unless told otherwise."""

from __future__ import annotations

import json
from typing import Any


def _fallback(value: Any) -> Any:
    # arq puts exceptions and datetimes into its result dicts; a result is never read back as
    # an object here (the job record holds the outcome), so a readable form is enough.
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    return str(value)


def dumps(value: Any) -> bytes:
    """Serialize an arq job or result as compact JSON."""
    return json.dumps(value, default=_fallback, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    """Deserialize what ``dumps`` wrote."""
    return json.loads(data)
