"""The DCO's SRV 11.1, 11.3 and 11.2 over HTTP (aiohttp), for a scheduler in another process.

Routes and documents are in `smets1.dco_http`. An 11.3 answers when the device has: the
request stays open for the whole transfer and activation, as the in-process call does.

Two guards stand before every route but /health and /metrics (`_guard`): the bearer
token the scheduler shares with the DCO (401 without it, compared in constant time), and
a bound on the requests served at once (503 with Retry-After beyond it, the connection
closed so that its file descriptor is free again at once). Each 11.3 in flight holds a
socket for its whole transfer, so without the bound a burst of them would take every
file descriptor the process has.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from dco_mock.errors import ImageRejected, UnknownImage
from smets1.dco_http import (
    ACTIVATION_ORDER,
    ACTIVATION_OUTCOME,
    ACTIVATIONS_PATH,
    ERROR,
    HEALTH_PATH,
    IMAGES_PATH,
    METRICS_PATH,
    PUBLIC_PATHS,
    RETRY_AFTER_SECONDS,
    STORED_IMAGE,
    VERSION_PATH,
    VERSION_READING,
    Document,
    ErrorDoc,
    check_token,
)
from smets1.eui64 import parse_eui64
from smets1.metrics import CONTENT_TYPE, Metric, RoleCollector, exposition, sampler
from smets1.services import DcoApi

#: The largest 11.1 image accepted, bytes (a large image is 750 kB and up).
MAX_IMAGE_BYTES = 64 * 2**20

#: (healthy, details) for /health.
HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]
#: Given an 11.3's execution time, why the DCO has no room for it now (None: it has).
RoomFn = Callable[[float], str | None]


@dataclass(slots=True)
class Gate:
    """What `_guard` checks and counts: the shared token and the requests in flight."""

    #: The token as bytes, for hmac.compare_digest.
    token: bytes
    #: Requests served at once; more are answered 503.
    max_in_flight: int
    in_flight: int = 0
    refused_busy: int = 0
    refused_unauthenticated: int = 0
    #: 11.3s answered 503 because the DCO had no room for them (slots, outbound bytes).
    refused_no_room: int = 0

    def admits(self, authorization: str) -> bool:
        scheme, _, given = authorization.partition(" ")
        # compare_digest takes as long whatever the token sent: a wrong guess tells an
        # attacker nothing about how much of it was right.
        ok = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self.token)
        return ok and scheme == "Bearer"


#: What /metrics tells of the guard, beside the DCO's own (dco_mock.metrics).
HTTP_METRICS: tuple[Metric[Gate], ...] = (
    Metric("gauge", "dco_http_requests_in_flight", "HTTP requests being served",
           lambda g: g.in_flight),
    Metric("gauge", "dco_http_requests_max_in_flight", "HTTP requests served at most at once",
           lambda g: g.max_in_flight),
    Metric("counter", "dco_http_refused_busy",
           "HTTP requests answered 503 (Retry-After): too many in flight",
           lambda g: g.refused_busy),
    Metric("counter", "dco_http_refused_unauthenticated",
           "HTTP requests answered 401: no valid bearer token",
           lambda g: g.refused_unauthenticated),
    Metric("counter", "dco_http_refused_no_room",
           "11.3s answered 503 (Retry-After): no free transfer slot or outbound queue full",
           lambda g: g.refused_no_room),
)  # fmt: skip

DCO_KEY = web.AppKey("dco", DcoApi)
HEALTH_KEY: web.AppKey[HealthFn] = web.AppKey("health")
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
GATE_KEY = web.AppKey("gate", Gate)
ROOM_KEY: web.AppKey[RoomFn] = web.AppKey("room")

routes = web.RouteTableDef()
T = TypeVar("T")


def _json(doc: Document[T], value: T, status: int = 200) -> web.Response:
    return web.Response(body=doc.to_json(value), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(ERROR, ErrorDoc(code, message), status)


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    gate = request.app[GATE_KEY]
    if not gate.admits(request.headers.get("Authorization", "")):
        gate.refused_unauthenticated += 1
        resp = _error(401, "unauthorized", "a valid bearer token is needed")
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    if gate.in_flight >= gate.max_in_flight:
        gate.refused_busy += 1
        resp = _error(
            503,
            "busy",
            f"{gate.in_flight} requests in flight, the most this DCO serves at once; "
            f"send again after {RETRY_AFTER_SECONDS} s",
        )
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        resp.force_close()  # its file descriptor is what a busy DCO is short of
        return resp
    gate.in_flight += 1
    try:
        return await handler(request)
    finally:
        gate.in_flight -= 1


@routes.post(IMAGES_PATH)
async def update_firmware(request: web.Request) -> web.Response:
    image = await request.read()
    if not image:
        return _error(400, "bad_request", "the body must be the OTA image file")
    try:
        stored = await request.app[DCO_KEY].update_firmware(image)
    except ImageRejected as exc:
        return _error(400, "image_rejected", str(exc))
    return _json(STORED_IMAGE, stored)


@routes.post(ACTIVATIONS_PATH)
async def activate_firmware(request: web.Request) -> web.Response:
    try:
        ask = ACTIVATION_ORDER.from_json(await request.read())
    except ValueError as exc:
        return _error(400, "bad_request", f"activation request: {exc}")
    no_room = request.app[ROOM_KEY](ask.execution_time)
    if no_room is not None:
        # Backpressure: the scheduler holds its releases while 11.3s are turned away, so
        # neither side piles up work it cannot move yet.
        request.app[GATE_KEY].refused_no_room += 1
        resp = _error(503, "no_room", f"{no_room}; send again after {RETRY_AFTER_SECONDS} s")
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp
    try:
        outcome = await request.app[DCO_KEY].activate_firmware(
            ask.device_id, ask.firmware_hash, ask.execution_time, ask.originator
        )
    except UnknownImage as exc:
        return _error(404, "unknown_image", str(exc))
    return _json(ACTIVATION_OUTCOME, outcome)


@routes.get(VERSION_PATH)
async def read_firmware_version(request: web.Request) -> web.Response:
    try:
        device_id = parse_eui64(request.match_info["device_id"])
    except ValueError as exc:
        return _error(400, "bad_request", str(exc))
    reading = await request.app[DCO_KEY].read_firmware_version(device_id)
    return _json(VERSION_READING, reading)


@routes.get(HEALTH_PATH)
async def health(request: web.Request) -> web.Response:
    ok, details = request.app[HEALTH_KEY]()
    return web.json_response({"ok": ok, **details}, status=200 if ok else 503)


@routes.get(METRICS_PATH)
async def metrics(request: web.Request) -> web.Response:
    body = exposition(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def make_app(
    dco: DcoApi,
    health: HealthFn | None = None,
    registry: CollectorRegistry | None = None,
    *,
    token: str,
    max_in_flight: int = 1_000,
    room: RoomFn | None = None,
) -> web.Application:
    """The HTTP face of `dco`; `registry` is what /metrics exposes (prometheus-client),
    with the HTTP guard's counters added. `token` is the bearer token every call but
    /health and /metrics must carry; `max_in_flight` the requests served at once (see
    smets1.dco_http.in_flight_limit for a bound the process's file descriptors allow);
    `room` says why a new 11.3 must wait (answered 503 with Retry-After), None if never."""
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    app = web.Application(client_max_size=MAX_IMAGE_BYTES, middlewares=[_guard])
    gate = Gate(check_token(token, "dco.token").encode(), max_in_flight)
    app[DCO_KEY] = dco
    app[HEALTH_KEY] = health or (lambda: (True, {}))
    app[REGISTRY_KEY] = registry if registry is not None else CollectorRegistry()
    app[REGISTRY_KEY].register(RoleCollector("dco", [sampler(gate, HTTP_METRICS)]))
    app[GATE_KEY] = gate
    app[ROOM_KEY] = room or (lambda _execution_time: None)
    app.add_routes(routes)
    return app
