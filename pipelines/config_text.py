"""A config file's text: YAML read with every key once, and pydantic's errors as the key paths a
user wrote (secrets in them redacted)."""

from __future__ import annotations

import re
from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not the last wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def redact(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://user:***@host`` anywhere in ``text``."""
    return re.sub(r"(://[^/@\s:]*):[^/@\s]*@", r"\1:***@", text)


def describe_error(err: Any) -> tuple[str, str]:
    path = ""
    loc = list(err["loc"])
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {"uniform", "loguniform", "choice", "int"} and (
            err["type"] == "distribution" or loc[i + 1 : i + 2] == [part]
        ):
            continue  # the tag of the distribution union, not a key the user wrote
        elif isinstance(part, str) and (
            part[:1].isupper() or part.startswith(("function-", "tagged-union"))
        ):
            continue  # pydantic's union-branch labels, not keys the user wrote
        else:
            path += f".{part}" if path else str(part)
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        shown = repr(err.get("input"))
        if "input" in err and not isinstance(err["input"], dict | list) and shown not in msg:
            msg += f" (got {shown})"
    return path, redact(msg)
