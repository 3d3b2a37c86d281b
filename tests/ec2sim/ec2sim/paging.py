"""MaxResults / NextToken the way EC2's Describe calls do it (moto ignores both).

A driver that lists volumes or snapshots (CSI ListVolumes / ListSnapshots)
must follow NextToken; against moto it always gets everything in one page and
would never notice that it stops after the first. EC2's rules, as documented
for DescribeVolumes and DescribeSnapshots:
  * MaxResults may not be combined with explicit ids
    (InvalidParameterCombination);
  * MaxResults below 5 is refused (InvalidParameterValue); above the action's
    cap (500 volumes, 1000 snapshots) it is clamped;
  * NextToken is opaque; an unknown one is refused.

A token is a server-side cursor: the ids that were still to come when the
first page was served. Later pages walk that list and skip items deleted in
between, so nothing repeats or gets skipped; items created after the listing
started do not join it. Cursors are kept in a bounded LRU and may be reused
(a retried page gets the same answer).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from moto.ec2.exceptions import EC2ClientError

T = TypeVar("T")


_CURSORS: "OrderedDict[str, list[str]]" = OrderedDict()
_CURSORS_MAX = 4096
_cursor_lock = threading.Lock()


def _store(ids: list[str]) -> str:
    token = secrets.token_urlsafe(24)
    with _cursor_lock:
        _CURSORS[token] = ids
        while len(_CURSORS) > _CURSORS_MAX:
            _CURSORS.popitem(last=False)
    return token


def _load(token: str) -> list[str]:
    with _cursor_lock:
        ids = _CURSORS.get(token)
        if ids is not None:
            _CURSORS.move_to_end(token)  # a retried page may reuse its token
    if ids is None:
        raise EC2ClientError(
            "InvalidParameterValue", f"Invalid value '{token}' for nextToken: unknown or expired pagination token"
        )
    return ids


def validate(params: dict[str, Any], *, ids_param: str | None = None, ids_name: str = "",
             minimum: int = 5) -> None:
    """EC2 checks MaxResults before it looks anything up; call this first."""
    max_results = params.get("MaxResults")
    if max_results is None:
        return
    if ids_param and params.get(ids_param):
        raise EC2ClientError(
            "InvalidParameterCombination",
            f"The parameter {ids_name} cannot be used with the parameter maxResults",
        )
    if int(max_results) < minimum:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Value ( {max_results} ) for parameter maxResults is invalid. "
            f"Expecting a value greater than {minimum}.",
        )


def paginate(
    items: Sequence[T],
    params: dict[str, Any],
    *,
    key: Callable[[T], str],
    cap: int,
    ids_param: str | None = None,
    ids_name: str = "",
    minimum: int = 5,
) -> tuple[list[T], str | None]:
    """Return (page, next_token) for a Describe call's MaxResults/NextToken."""
    validate(params, ids_param=ids_param, ids_name=ids_name, minimum=minimum)
    max_results = params.get("MaxResults")
    token = params.get("NextToken") or None
    if max_results is None and token is None:
        return list(items), None
    limit = cap if max_results is None else min(int(max_results), cap)
    by_id = {key(x): x for x in items}
    order = _load(token) if token else list(by_id)
    page: list[T] = []
    i = 0
    while i < len(order) and len(page) < limit:
        item = by_id.get(order[i])
        if item is not None:
            page.append(item)
        i += 1
    rest = [x for x in order[i:] if x in by_id]
    return page, (_store(rest) if rest else None)
