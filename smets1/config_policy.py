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
* `spare_capacity`: MP230, with each day's capacity released only where the background
  traffic leaves room. Admission is MP230's (the User's daily allowance, schedules, holds,
  refusals, at most `scheduler.large_images_per_day` a day); the release loop gives each
  hour of the day (local time, `scheduler.peak_timezone`) a budget of its own, in
  proportion to the room the background's daily profile (`background.hourly_weights`)
  leaves in it, nothing in an hour that touches a peak window. Parameter: `headroom`.
  The config must have a `background:` section (FleetConfig checks it).

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
    SPARE_CAPACITY = "spare_capacity"


#: The kinds a config may choose.
BUILT_KINDS = (
    PolicyKind.MP230,
    PolicyKind.NO_LIMIT,
    PolicyKind.EQUAL_SHARE,
    PolicyKind.SPARE_CAPACITY,
)
#: The kinds `smets1 compare` runs when given no --policy: spare_capacity needs a
#: config with background traffic, so it is asked for by name.
COMPARED_BY_DEFAULT = (PolicyKind.MP230, PolicyKind.NO_LIMIT, PolicyKind.EQUAL_SHARE)


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


class SpareCapacityPolicy(Strict):
    """MP230, each hour's releases held to the room the background traffic leaves.

    The room of an hour is `busiest / (1 - headroom) - weight`, the weights being
    `background.hourly_weights`: what the network could carry if the background's
    busiest hour left `headroom` of it spare, less what the background takes that hour.
    Each hour's budget is the day's capacity shared in proportion to the rooms (hours
    that touch a peak window: none)."""

    kind: Literal["spare_capacity"] = "spare_capacity"
    #: The share of the network the background leaves spare in its busiest hour, in
    #: (0, 1]. Small: the busiest hours get almost nothing and the quiet ones the most;
    #: 1: the background takes nothing worth counting, every open hour gets the same.
    headroom: float = Field(0.2, gt=0, le=1)


AnyPolicy = Mp230Policy | NoLimitPolicy | EqualSharePolicy | SpareCapacityPolicy
PolicyConfig = Annotated[AnyPolicy, Field(discriminator="kind")]

_ADAPTER: TypeAdapter[AnyPolicy] = TypeAdapter(PolicyConfig)


def known_kind(value: Any) -> Any:
    """Check a policy's `kind` before the union picks a model: name the kinds there are
    (a FieldError at `kind`)."""
    if isinstance(value, str):
        # `policy: no_limit` is short for `policy: {kind: no_limit}`.
        value = {"kind": value}
    if not isinstance(value, dict):
        return value
    kind = value.get("kind", PolicyKind.MP230.value)
    expected = ", ".join(k.value for k in BUILT_KINDS)
    if not isinstance(kind, str) or kind not in {k.value for k in BUILT_KINDS}:
        shown = repr(kind)[:40]
        raise FieldError(("kind",), f"expected one of {expected}, got {shown}")
    return {**value, "kind": kind}


def parse_policy(value: Any) -> AnyPolicy:
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
