"""The DCO's SRV 11.1, 11.3 and 11.2 over HTTP (aiohttp), for a scheduler in another process.

Routes and documents are in `smets1.dco_http`. An 11.3 answers when the device has: the
request stays open for the whole transfer and activation, as the in-process call does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    STORED_IMAGE,
    VERSION_PATH,
    VERSION_READING,
    Document,
    ErrorDoc,
)
from smets1.eui64 import parse_eui64
from smets1.metrics import CONTENT_TYPE, exposition
from smets1.services import DcoApi

#: The largest 11.1 image accepted, bytes (a large image is 750 kB and up).
MAX_IMAGE_BYTES = 64 * 2**20

#: (healthy, details) for /health.
HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]

DCO_KEY = web.AppKey("dco", DcoApi)
HEALTH_KEY: web.AppKey[HealthFn] = web.AppKey("health")
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)

routes = web.RouteTableDef()
T = TypeVar("T")


def _json(doc: Document[T], value: T, status: int = 200) -> web.Response:
    return web.Response(body=doc.to_json(value), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(ERROR, ErrorDoc(code, message), status)


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
) -> web.Application:
    """The HTTP face of `dco`; `registry` is what /metrics exposes (prometheus-client)."""
    app = web.Application(client_max_size=MAX_IMAGE_BYTES)
    app[DCO_KEY] = dco
    app[HEALTH_KEY] = health or (lambda: (True, {}))
    app[REGISTRY_KEY] = registry if registry is not None else CollectorRegistry()
    app.add_routes(routes)
    return app
