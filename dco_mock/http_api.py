"""The DCO's SRV 11.1, 11.3 and 11.2 over HTTP (aiohttp), for a scheduler in another process.

Routes and documents are in `smets1.dco_http`. An 11.3 answers when the device has: the
request stays open for the whole transfer and activation, as the in-process call does.
The call channel (/v1/calls, `dco_mock.call_channel`) carries 11.3s and 11.2s as
messages on one WebSocket instead, with the same answers.

Two guards stand before every route but /health and /metrics (`_guard`): the bearer
token the scheduler shares with the DCO (401 without it, compared in constant time), and
a bound on the requests served at once (503 with Retry-After beyond it, the connection
closed so that its file descriptor is free again at once). Each 11.3 in flight holds a
socket for its whole transfer, so without the bound a burst of them would take every
file descriptor the process has. A call channel is let in by the same guards, but counts
for nothing itself while open: each call on it counts one while it is served
(`dco_mock.gate.Gate`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from dco_mock.call_channel import CLOSE_TIMEOUT_SECONDS, CallChannel, Channels, RoomFn
from dco_mock.errors import ImageRejected, UnknownImage
from dco_mock.gate import HTTP_METRICS, Gate
from smets1.dco_http import (
    ACTIVATION_ORDER,
    ACTIVATION_OUTCOME,
    ACTIVATIONS_PATH,
    CALLS_PATH,
    ERROR,
    HEALTH_PATH,
    IMAGES_PATH,
    METRICS_PATH,
    PUBLIC_PATHS,
    RETRY_AFTER_SECONDS,
    STORED_IMAGE,
    UNAUTHORIZED_MESSAGE,
    VERSION_PATH,
    VERSION_READING,
    Document,
    ErrorDoc,
    check_token,
)
from smets1.eui64 import parse_eui64
from smets1.metrics import CONTENT_TYPE, RoleCollector, exposition, sampler
from smets1.services import DcoApi

#: The largest 11.1 image accepted, bytes (a large image is 750 kB and up).
MAX_IMAGE_BYTES = 64 * 2**20

#: (healthy, details) for /health.
HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]

DCO_KEY = web.AppKey("dco", DcoApi)
HEALTH_KEY: web.AppKey[HealthFn] = web.AppKey("health")
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
GATE_KEY = web.AppKey("gate", Gate)
ROOM_KEY: web.AppKey[RoomFn] = web.AppKey("room")
CHANNELS_KEY = web.AppKey("channels", Channels)

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
        resp = _error(401, "unauthorized", UNAUTHORIZED_MESSAGE)
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    if gate.full():
        gate.refused_busy += 1
        resp = _error(503, "busy", gate.busy_message())
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        resp.force_close()  # its file descriptor is what a busy DCO is short of
        return resp
    if request.path == CALLS_PATH:
        return await handler(request)  # its calls are counted, each while it runs
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


@routes.get(CALLS_PATH)
async def calls(request: web.Request) -> web.WebSocketResponse:
    # No compression: the messages are small, and deflate would cost more CPU than the
    # bytes it saves on a local network.
    ws = web.WebSocketResponse(compress=False, timeout=CLOSE_TIMEOUT_SECONDS)
    await ws.prepare(request)
    app = request.app
    channel = CallChannel(ws, app[DCO_KEY], app[GATE_KEY], app[ROOM_KEY])
    await app[CHANNELS_KEY].serve(channel)
    return ws


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
    `room` says why a new 11.3 must wait (answered 503 with Retry-After), None if never.
    Stopping the app (its on_shutdown) closes its call channels once their calls are
    answered (dco_mock.call_channel)."""
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
    channels = app[CHANNELS_KEY] = Channels()

    async def stop_channels(_: web.Application) -> None:
        await channels.stop()

    app.on_shutdown.append(stop_channels)
    app.add_routes(routes)
    return app
