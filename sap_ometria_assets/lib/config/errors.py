"""How a configuration file or the environment is reported when pydantic rejects it.

One line per problem, for the person who edits the file: the key (a dotted path in the file, or
the environment variable), pydantic's message, and the value found, shortened so a huge or
deeply nested value cannot flood the log. A secret's value is never echoed back.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from sap_ometria_assets.lib.config.safe_yaml import short_repr


def key_path(loc: tuple) -> str:
    """The dotted path of a value in a YAML file ('recon.stale_after_hours')."""
    return ".".join(str(p) for p in loc if p not in ("function-after",)) or "(top level)"


def validation_problems(
    exc: ValidationError,
    key: Callable[[tuple], str] = key_path,
    hide_value: Callable[[str], bool] = lambda key: False,
) -> list[str]:
    """'<key>: <message> (got <value>)' for each error; the value is left out where
    `hide_value(key)` says so (secrets)."""
    problems = []
    for err in exc.errors():
        name = key(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        shown = "" if hide_value(name) else f" (got {short_repr(err.get('input'))})"
        problems.append(f"{name}: {msg}{shown}")
    return problems
