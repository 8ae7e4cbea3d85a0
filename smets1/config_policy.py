"""Release policies: how the scheduler lets large-image 11.3s out, as configuration.

`scheduler.policy` in a fleet config, chosen by its `kind` (a pydantic discriminated
union on that tag); the scheduler acts on it in scheduler/release_policy.py:

* `mp230` (the default): the MP230 rules as the DCC applies them. At most
  `scheduler.large_images_per_day` large images a day across all Users, spread over the
  off-peak hours; at most `scheduler.user_daily_limit` a User a day without an agreed
  schedule (the rest is held for one); work that cannot be released within its seven
  days is refused at submission. No parameters of its own.
* `no_limit`: no daily capacity, no per-User limit, no peak windows, no schedules:
  every large 11.3 is released the moment it is submitted. No parameters.
* `equal_share`: each day's capacity (`scheduler.large_images_per_day`) is shared
  equally among the Users with work that day: each may have `capacity // N` released
  that day, N being `users` if given, else the Users with large work waiting or already
  released that day (counted again as work arrives). No per-User limit of 500, no
  schedules, nothing refused or held at submission; work a day cannot take waits for the
  next. Security fixes still go first, outside the shares. Parameter: `users`.
* `spare_capacity` (issue 16): releases only where background traffic leaves room. The
  DCO carries no background traffic yet, so asking for it is a config error.

Under `no_limit` and `equal_share`, `smets1 run` does not ask for a campaign's
`schedule: agreed` (only MP230 needs schedules): its devices are submitted unscheduled.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from smets1.config_types import FieldError, Strict


class PolicyKind(enum.StrEnum):
    MP230 = "mp230"
    NO_LIMIT = "no_limit"
    EQUAL_SHARE = "equal_share"
    #: Named by issue 16, not built: it needs background traffic.
    SPARE_CAPACITY = "spare_capacity"


#: The kinds a config may choose today.
BUILT_KINDS = (PolicyKind.MP230, PolicyKind.NO_LIMIT, PolicyKind.EQUAL_SHARE)


class Mp230Policy(Strict):
    """Today's MP230 rules (capacity and allowance are the scheduler's own keys)."""

    kind: Literal["mp230"] = "mp230"


class NoLimitPolicy(Strict):
    """Everything released as soon as it is submitted."""

    kind: Literal["no_limit"] = "no_limit"


class EqualSharePolicy(Strict):
    """Each day's capacity shared equally among the Users with work that day."""

    kind: Literal["equal_share"] = "equal_share"
    #: Divide each day's capacity by this many Users instead of counting the Users with
    #: work that day (a share left unused by a User without work stays unused).
    users: int | None = Field(None, gt=0, le=100_000)


PolicyConfig = Annotated[
    Mp230Policy | NoLimitPolicy | EqualSharePolicy, Field(discriminator="kind")
]

_ADAPTER: TypeAdapter[Mp230Policy | NoLimitPolicy | EqualSharePolicy] = TypeAdapter(PolicyConfig)


def known_kind(value: Any) -> Any:
    """Check a policy's `kind` before the union picks a model: name the kinds that are
    built, and say why `spare_capacity` is not (a FieldError at `kind`)."""
    if isinstance(value, str):
        # `policy: no_limit` is short for `policy: {kind: no_limit}`.
        value = {"kind": value}
    if not isinstance(value, dict):
        return value
    kind = value.get("kind", PolicyKind.MP230.value)
    expected = ", ".join(k.value for k in BUILT_KINDS)
    if kind == PolicyKind.SPARE_CAPACITY.value:
        raise FieldError(
            ("kind",),
            "spare_capacity needs background traffic, which is not built yet (issue 16);"
            f" expected one of {expected}",
        )
    if not isinstance(kind, str) or kind not in {k.value for k in BUILT_KINDS}:
        shown = repr(kind)[:40]
        raise FieldError(("kind",), f"expected one of {expected}, got {shown}")
    return {**value, "kind": kind}


def parse_policy(value: Any) -> Mp230Policy | NoLimitPolicy | EqualSharePolicy:
    """A policy from a mapping (or a bare kind): pydantic's ValidationError or a
    FieldError if it is not one."""
    return _ADAPTER.validate_python(known_kind(value))


def without_policy_tag(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """An error's path without the tag pydantic puts after `policy` (`policy.equal_share.
    users` is `policy.users` in the file)."""
    for i in range(1, len(loc)):
        if loc[i - 1] == "policy" and loc[i] in _TAGS:
            return loc[:i] + loc[i + 1 :]
    return loc


_TAGS = frozenset(k.value for k in BUILT_KINDS)
