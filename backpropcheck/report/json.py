"""``--format json``: one object, exactly the SPEC §4 layout."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from .. import __version__
from ..results import FileResult
from . import Summary


def to_dict(results: list[FileResult], seed: int) -> dict[str, Any]:
    files = []
    for r in results:
        claims = []
        for c in r.claims:
            claims.append({
                "name": c.name, "expr": c.expr, "verdict": c.verdict, "expected": c.expected, "ok": c.ok,
                "message": c.message, "symbolic": c.symbolic, "numeric": c.numeric,
                "counterexample": asdict(c.counterexample) if c.counterexample else None,
                "diagnosis": c.diagnosis, "depends_on_refuted": c.depends_on_refuted,
            })
        files.append({"path": r.path, "title": r.title, "status": r.status, "error": r.error, "claims": claims})
    return {"backpropcheck": __version__, "seed": seed, "files": files, "summary": asdict(Summary.of(results))}


def render(results: list[FileResult], seed: int) -> str:
    return json.dumps(_clean(to_dict(results, seed)), indent=2, allow_nan=False) + "\n"


def _clean(value: Any) -> Any:
    """JSON has no NaN or Infinity: a value that is not finite becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
