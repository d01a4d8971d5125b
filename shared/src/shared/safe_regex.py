"""Regular expressions that users supply, compiled with RE2: linear time, bounded memory.

Python's `re` backtracks, so a pattern such as ``(a+)+$`` takes exponential time on
``"a" * 50 + "b"`` and would hold a worker process (or the API's event loop) for hours.
RE2 matches in time linear in the input and refuses the constructs that need
backtracking (backreferences, lookaround), so every pattern a tenant sends (dataset
`group_pattern`, DICOM routing rules) goes through here, and nowhere else.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from shared.errors import InvalidRequest

MAX_PATTERN_LENGTH = 256
_MAX_MEM = 1 << 20  # 1 MiB of compiled program per pattern


def _message(exc: Exception) -> str:
    text = exc.args[0] if exc.args else exc
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


@lru_cache(maxsize=512)
def compile_pattern(
    pattern: str, *, field: str = "pattern", case_sensitive: bool = True, max_groups: int = 99
) -> Any:
    """Compile a user's pattern with RE2 (the compiled object has `search`, `groups`).

    Args:
        pattern: the pattern as the user sent it.
        field: the request field it came from, named in the error.
        case_sensitive: False for case-insensitive matching.
        max_groups: the most capture groups the caller can use.

    Returns:
        The compiled RE2 pattern (cached: the same pattern compiles once per process).

    Raises:
        InvalidRequest: too long, more groups than allowed, or not RE2 syntax (e.g. a
            backreference or lookahead), with RE2's own message (422).
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequest(
            f"`{field}` is longer than {MAX_PATTERN_LENGTH} characters", field=field
        )
    options = re2.Options()
    options.max_mem = _MAX_MEM
    options.case_sensitive = case_sensitive
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        raise InvalidRequest(
            f"`{field}` is not a valid RE2 expression (linear-time syntax: no backreferences "
            f"or lookaround): {_message(exc)}",
            field=field,
        ) from None
    if compiled.groups > max_groups:
        raise InvalidRequest(
            f"`{field}` may have at most {max_groups} capture group(s)", field=field
        )
    return compiled
