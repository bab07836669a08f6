"""The JSON Schema (draft 2020-12) of the ``--format json`` report, shipped as ``schema.json`` in the package."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_FILE = "schema.json"


def schema_text() -> str:
    """The schema as shipped, e.g. to hand to a validator in another language."""
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """The schema as a dict, ready for ``jsonschema.Draft202012Validator``."""
    return json.loads(schema_text())
