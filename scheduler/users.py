"""The registered Users, and who may act for whom.

The scheduler keeps one dict of `UserConfig` by User id (the config's Users and any
registered later); these checks read it. A User acts for itself; a Service Desk User may
act for any User. With no Users registered at all, anyone may submit (tests, demos).
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.errors import Forbidden
from smets1.config_dcc import UserConfig
from smets1.eui64 import format_eui64 as _eui


def user_for_token(users: Mapping[int, UserConfig], token: str) -> UserConfig | None:
    for u in users.values():
        if u.token and u.token == token:
            return u
    return None


def check_user(users: Mapping[int, UserConfig], user: int) -> None:
    if users and user not in users:
        raise Forbidden(f"User {_eui(user)} is not registered with the scheduler")


def may_act_for(users: Mapping[int, UserConfig], actor: int, user: int) -> None:
    if actor == user:
        return
    cfg = users.get(actor)
    if cfg is None or not cfg.service_desk:
        raise Forbidden(f"User {_eui(actor)} may not act for User {_eui(user)}")
