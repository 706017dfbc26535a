"""What the broken-manifest tests share: a golden manifest broken one way, and its problems
with stable paths (see :func:`_problems`)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from pipelines.validate import validate_document
from tests.support.validate import compiled

Doc = dict[str, Any]


def _template(doc: Doc, name: str) -> Doc:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return next(t for t in spec["templates"] if t["name"] == name)


def _task(doc: Doc, name: str) -> Doc:
    return next(t for t in _template(doc, "main")["dag"]["tasks"] if t["name"] == name)


def _args(doc: Doc, template: str) -> list[str]:
    args: list[str] = _template(doc, template)["container"]["args"]
    return args


def _problems(base: str, mutate: Callable[[Doc], None]) -> list[str]:
    """The problems of a broken copy of a golden manifest, with stable paths.

    ``templates[3]`` reads ``templates[compare]`` (the golden file may reorder its templates), and
    ``container.args[7]`` reads ``container.args[*]`` once this checks that args[7] really holds
    the ``{{...}}`` the message quotes (the golden file may gain arguments), and the list of
    every template reads ``(templates: <all>)``.
    """
    doc = copy.deepcopy(compiled(base))
    assert validate_document(doc) == []
    mutate(doc)
    return [_stable(doc, str(p)) for p in validate_document(doc)]


def _stable(doc: Doc, line: str) -> str:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    match = re.match(r"^[\w.]*templates\[(\d+)\]\.container\.args\[(\d+)\]: (\{\{.*?\}\})", line)
    if match:
        arg = spec["templates"][int(match[1])]["container"]["args"][int(match[2])]
        assert match[3] in arg, f"{line!r} names args[{match[2]}] = {arg!r}"
        line = re.sub(r"container\.args\[\d+\]", "container.args[*]", line, count=1)
    listed = ", ".join(t["name"] for t in spec.get("templates", []))
    line = line.replace(f"(templates: {listed})", "(templates: <all>)")
    return re.sub(
        r"templates\[(\d+)\]", lambda m: f"templates[{spec['templates'][int(m[1])]['name']}]", line
    )
