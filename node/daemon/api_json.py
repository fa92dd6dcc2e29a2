"""Decoding a control API request body: JSON, bounded before the decoder sees it.

The standard ``json`` decoder recurses once per nesting level, so a body of 60,000 ``[`` raises
``RecursionError`` (not a ``ValueError``) from deep inside it. :func:`parse_object` therefore measures the
nesting with a linear scan first and refuses anything deeper than :data:`MAX_DEPTH` before ``json.loads``
runs. It also refuses what a second decoder could read differently: a repeated key in any object (the
standard decoder keeps the last value silently), ``NaN`` / ``Infinity`` (not JSON), and text that is not
UTF-8. Every refusal is an :class:`node.daemon.errors.ApiError` (400) with one line that quotes nothing
of the body.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from node.daemon.errors import ApiError

MAX_DEPTH = 32  # nesting levels of arrays and objects; the API's bodies use two


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deeply arrays and objects nest in ``text`` (brackets inside strings do not count); the scan
    stops as soon as the depth passes ``limit``. Linear in ``len(text)``, no recursion. Text that is not
    JSON gets some number: the decoder refuses it afterwards."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif ch in "]}":
            depth -= 1
    return deepest


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ApiError("the request body repeats a key in an object")
    return out


def _constant(_name: str) -> NoReturn:
    raise ApiError("the request body is not JSON (NaN and Infinity are not numbers in JSON)")


def parse_object(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body`` (an empty body is ``{}``); :class:`ApiError` for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("the request body is not UTF-8 JSON") from None
    if not text.strip():
        return {}
    if nesting_depth(text) > MAX_DEPTH:
        raise ApiError(f"the request body nests deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except ValueError:  # JSONDecodeError, and an integer of more than 4300 digits
        raise ApiError("the request body is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError("the request body must be a JSON object")
    return value
