"""The compiled manifests to validate; the validate tests and tests/support/validate_broken.py share
them. No tests here.
"""

from __future__ import annotations

from typing import Any

from pipelines.validate import load_documents
from tests.conftest import REPO

COMPILED = REPO / "pipelines" / "compiled"


def compiled(name: str = "sweep.yaml") -> dict[str, Any]:
    """A compiled golden manifest (the lead's ``make compile`` output), freshly loaded."""
    path = COMPILED / name
    assert path.is_file(), f"{path} missing: run `make compile`"
    (doc,) = load_documents(path)
    assert isinstance(doc, dict)
    return doc
