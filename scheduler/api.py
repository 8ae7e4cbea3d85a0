"""The scheduler over HTTP (aiohttp): DUIS XML, a JSON API, /openapi.json, /healthz, /metrics.

    app = make_app(scheduler, users)        # users: extra UserConfigs beyond the config's
    web.run_app(app, port=8080)             # or an AppRunner/TCPSite beside scheduler.run()

Every route but /healthz, /metrics, /openapi.json and the dashboard (/dashboard and
the aggregate figures it polls, /dashboard/data) wants `Authorization: Bearer <token>`
(a DUIS request signed with a User's certificate needs none: duis_security.py); the token
names the User, who sees and changes only its own requests and schedules (the
Service Desk may ask for and accept schedules for others). Errors are JSON
(`{"error", "code", "field", "earliest_date"}`) on /v1 and a DUIS `sr:Response` with a
DUIS E-code on /api/v1/serviceS and /duis; nothing of a refused document is stored. Every
DUIS document the scheduler sends goes through `Scheduler.duis_security.seal`. What
/metrics reports is in metrics.py, the /openapi.json document in openapi.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram
from pydantic import BaseModel, ValidationError

from scheduler import duis
from scheduler.dashboard import dashboard_data
from scheduler.dashboard_page import PAGE
from scheduler.errors import (
    AdmissionRefused,
    BadDocument,
    DuisRefused,
    DuisSchemaInvalid,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    SchedulerError,
    Unauthenticated,
    UnknownDevice,
)
from scheduler.metrics import SchedulerCollector
from scheduler.models import (
    CAPACITY_REACH_DAYS,
    MAX_CAPACITY_DAYS,
    MAX_ID,
    MAX_OFFSET,
    MAX_PAGE,
    ActivationIn,
    ActivationOut,
    ErrorOut,
    Health,
    ImageIn,
    ImageOut,
    MoveOut,
    NotificationOut,
    ReadIn,
    ReadOut,
    RequestList,
    RequestOut,
    ScheduleIn,
    ScheduleOut,
)
from scheduler.notify import Renderer, render_json
from scheduler.openapi import PUBLIC_PATHS, QUERY_PARAMETERS, openapi_document
from scheduler.policy import Proposal
from scheduler.requests import ActivationRequest, Priority, RequestState, Schedule
from scheduler.service import Scheduler
from smets1.config_dcc import UserConfig
from smets1.eui64 import format_eui64, parse_eui64
from smets1.image import ImageError, parse_image
from smets1.metrics import CONTENT_TYPE

log = logging.getLogger("scheduler.api")

#: Why the scheduler cannot do its work now, in one line (None: healthy). /healthz
#: answers 503 with it; the scheduler role says so while the DCO is unreachable.
ProblemFn = Callable[[], str | None]

SCHEDULER = web.AppKey("scheduler", Scheduler)
PROBLEM: web.AppKey[ProblemFn] = web.AppKey("problem")
#: The clock /healthz shows (the distributed scheduler's speed; None: nothing to show).
CLOCK: web.AppKey[Callable[[], dict[str, Any] | None]] = web.AppKey("clock")
REGISTRY = web.AppKey("registry", CollectorRegistry)
DOCUMENTS = web.AppKey("documents", PromCounter)
LATENCY = web.AppKey("latency", PromHistogram)
#: Wall seconds an HTTP request takes, from a millisecond to a minute.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    60.0,
)
USER = web.RequestKey("user", int)
DUIS_REQUEST_ID = web.RequestKey("duis_request_id", duis.RequestId)
DUIS_SERVICE = web.RequestKey("duis_service_reference", str)
DUIS_VARIANT = web.RequestKey("duis_service_reference_variant", str)
#: DCC Boxed's path for DUIS requests; `/duis` is the same route under its older name.
DUIS_PATH = "/api/v1/serviceS"
#: Where DUIS requests are POSTed: a signed one needs no bearer token.
DUIS_POST_PATHS = frozenset({"/duis", DUIS_PATH})
#: Every error body is shorter than this; the reason is cut to fit (field: ERROR_FIELD_CHARS).
ERROR_BODY_BYTES = 1_024
ERROR_REASON_CHARS = 400
ERROR_FIELD_CHARS = 80
#: Bodies over this are parsed in a worker thread, so the event loop keeps serving.
PARSE_ON_LOOP_BYTES = 64 * 1024

routes = web.RouteTableDef()
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- plumbing -----------------------------------------------------------------------


def _json(model: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(model, BaseModel):
        text = model.model_dump_json()
    else:
        text = json.dumps(
            [m.model_dump(mode="json") if isinstance(m, BaseModel) else m for m in model]
            if isinstance(model, list)
            else model
        )
    return web.Response(text=text, status=status, content_type="application/json")


def _xml(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/xml")


def _printable(text: str) -> str:
    """Control characters escaped: an error text may quote hostile input, and must stay
    readable (and well-formed inside XML)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _is_duis(request: web.Request) -> bool:
    return request.path.startswith("/duis") or request.path == DUIS_PATH


def _error_response(request: web.Request, exc: SchedulerError) -> web.Response:
    """The error as JSON, or on the DUIS routes as a DUIS `sr:Response` with the DUIS
    ResponseCode (`exc.duis_code`), always under ERROR_BODY_BYTES (a DUIS document
    before its signature): a reason that quotes much of the input is cut, never the code.

    DUIS has no element for the reason, so a DUIS refusal says it in an XML comment
    and in the `X-Reason` header (and `X-Earliest-Date` for an admission refusal); the
    document itself is what the DUIS schema allows, and is sealed like every other
    (`_sealed_refusal`: a refusal never turns into a 500)."""
    sched = request.app[SCHEDULER]
    field = getattr(exc, "field", None)
    field = None if field is None else _printable(field[:ERROR_FIELD_CHARS])
    earliest = sched.date_of(exc.earliest_day) if isinstance(exc, AdmissionRefused) else None
    reason = _printable(exc.reason[:ERROR_REASON_CHARS])
    while True:
        if _is_duis(request):
            # Measured before sealing: the signature adds its own fixed size.
            body = duis.acknowledgement(
                request.get(DUIS_REQUEST_ID),
                getattr(exc, "duis_code", exc.code),
                sched.clock.now(),
                request.get(DUIS_SERVICE, "11.1"),
                request.get(DUIS_VARIANT),
                comment=reason,
            )
            if len(body) >= ERROR_BODY_BYTES and len(reason) > 2:
                reason = reason[: len(reason) // 2] + "…"
                continue
            resp = _xml(_sealed_refusal(sched, body), exc.status)
            resp.headers["X-Reason"] = reason.encode("ascii", "backslashreplace").decode()
            if earliest is not None:
                resp.headers["X-Earliest-Date"] = earliest
            return resp
        out = ErrorOut(error=reason, code=exc.code, field=field, earliest_date=earliest)
        resp = _json(out, exc.status)
        assert isinstance(resp.body, bytes)
        if len(resp.body) < ERROR_BODY_BYTES or len(reason) <= 2:
            return resp
        reason = reason[: len(reason) // 2] + "…"


def _sealed_refusal(sched: Scheduler, document: bytes) -> bytes:
    """A refusal, signed like every DUIS document sent. One the schema refuses is sent
    signed all the same (and the fault logged): a refusal must not turn into a 500."""
    try:
        return sched.duis_security.seal(document)
    except DuisSchemaInvalid as exc:
        log.error("sending a DUIS refusal the schema refuses: %s", exc.reason)
        return sched.duis_security.seal(document, check_schema=False)


def _api_of(request: web.Request) -> str:
    """Which interface a request is to: `duis`, `json` (/v1) or `other` (health, metrics)."""
    if _is_duis(request):
        return "duis"
    return "json" if request.path.startswith("/v1/") else "other"


@web.middleware
async def _timed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's wall time, by interface: smets1_scheduler_http_request_seconds."""
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        request.app[LATENCY].labels(_api_of(request)).observe(time.perf_counter() - started)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SchedulerError as exc:
        return _error_response(request, exc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        return _error_response(request, BadDocument(where, err["msg"]))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SCHEDULER].config.max_document_bytes
        return _error_response(request, BadDocument("document", f"over the {limit}-byte limit"))
    except web.HTTPNotFound:
        return _error_response(request, NotFound(f"no route {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        resp = _error_response(
            request,
            MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}; "
                f"allowed: {', '.join(sorted(exc.allowed_methods))}"
            ),
        )
        resp.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return resp


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    if (
        request.method == "POST"
        and request.path in DUIS_POST_PATHS
        and "Authorization" not in request.headers
    ):
        # A DUIS request may prove its User by its XML signature alone: the route
        # authenticates it (duis_security), and refuses it if it is not signed.
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    user = request.app[SCHEDULER].user_for_token(token.strip()) if scheme == "Bearer" else None
    if user is None:
        return _error_response(
            request,
            Unauthenticated("a valid bearer token is needed (Authorization: Bearer <token>)"),
        )
    request[USER] = user.id
    return await handler(request)


@web.middleware
async def _known_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A query parameter the operation does not declare is refused, by name (a typo such
    as `?limt=5` would otherwise be ignored without a word)."""
    info = request.match_info.route.resource
    known = QUERY_PARAMETERS.get((request.method, info.canonical)) if info else None
    if known is not None:
        unknown = sorted(set(request.query) - known)
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise BadDocument(
                unknown[0][:40], f"unknown query parameter (this operation takes: {allowed})"
            )
    return await handler(request)


async def _body_bytes(request: web.Request) -> bytes:
    limit = request.app[SCHEDULER].config.max_document_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadDocument(
            "document", f"{request.content_length} bytes is over the {limit}-byte limit"
        )
    return await request.read()


async def _off_loop(data: bytes, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread if `data` is big enough to stall the event loop."""
    if len(data) <= PARSE_ON_LOOP_BYTES:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _load_json(data: bytes, model: type[BaseModel]) -> Any:
    """Strictly, in JSON mode: a string where the schema wants a number, or a number
    where it wants a date, is refused rather than converted."""
    try:
        return model.model_validate_json(data, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise BadDocument("body", f"not JSON: {err['msg']}") from None
        raise


async def _parse(request: web.Request, model: type[BaseModel]) -> Any:
    data = await _body_bytes(request)
    return await _off_loop(data, _load_json, data, model)


def _path_id(request: web.Request, name: str) -> int:
    """A numeric id from the path (the route's pattern admits only digits)."""
    text = request.match_info[name]
    value = int(text) if len(text) <= 19 else MAX_ID + 1
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"no {name.removesuffix('_id')} {text[:20]}")
    return value


def _eui(text: str, where: str) -> int:
    try:
        return parse_eui64(text)
    except ValueError as exc:
        raise BadDocument(where, str(exc)) from None


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadDocument(name, f"expected a whole number, got {text[:20]!r}") from None
    if not lo <= value <= hi:
        raise BadDocument(name, f"expected {lo} to {hi}, got {value}")
    return value


def _date_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """A `YYYY-MM-DD` query parameter as a day index of the calendar, within [lo, hi]."""
    text = request.query.get(name)
    if text is None:
        return default
    cal = request.app[SCHEDULER].calendar
    try:
        if len(text) != 10:
            raise ValueError(text)
        d = date.fromisoformat(text)
    except ValueError:
        raise BadDocument(name, f"expected a date like 2025-03-01, got {text[:20]!r}") from None
    day = cal.day_of(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())
    if not lo <= day <= hi:
        raise BadDocument(
            name, f"expected a date from {cal.date_of(lo)} to {cal.date_of(hi)}, got {text}"
        )
    return day


# -- views --------------------------------------------------------------------------


def _request_out(s: Scheduler, r: ActivationRequest) -> RequestOut:
    return RequestOut(
        request_id=r.request_id,
        campaign=r.campaign,
        device_id=format_eui64(r.device_id),
        state=r.state.value,
        priority=r.priority.value,
        large=r.large,
        planned_date=s.date_of(r.planned_day),
        schedule_id=r.schedule_id,
        submitted_at=r.submitted_at,
        released_at=r.released_at,
        completed_at=r.completed_at,
        trt_met=r.trt_met,
        overdue=r.overdue,
        failure=r.failure,
        held_reason=s.held_reason(r),
        duis_request_id=r.duis_request_id,
    )


def _schedule_out(s: Scheduler, sch: Schedule, proposal: Proposal | None = None) -> ScheduleOut:
    return ScheduleOut(
        schedule_id=sch.schedule_id,
        user=format_eui64(sch.user),
        state=sch.state.value,
        devices=sch.devices,
        assigned=sch.assigned,
        moves=sch.moves,
        batches=s.batch_status(sch),
        would_move=[
            MoveOut(schedule_id=m.schedule_id, date=s.date_of(m.day) or "", devices=m.count)
            for m in (proposal.moves if proposal else [])
        ],
    )


def _check_image(data: bytes, version: int | None, where: str) -> None:
    try:
        parsed = parse_image(data)
    except ImageError as exc:
        raise BadDocument(where, f"not a firmware image: {exc}") from None
    if version is not None and parsed.header.file_version != version:
        raise BadDocument(
            "FirmwareVersion",
            f"{version:08X} does not match the image's file version "
            f"{parsed.header.file_version:08X}",
        )


# -- JSON API -----------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    problem = request.app[PROBLEM]()
    clock = request.app[CLOCK]()
    if problem is not None:
        return _json(Health(status="unhealthy", reason=problem, clock=clock), 503)
    return _json(Health(status="ok", clock=clock).model_dump(exclude_none=True))


@routes.get("/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    """The live dashboard (dashboard_page.py): one page that polls /dashboard/data."""
    return web.Response(text=PAGE, content_type="text/html")


@routes.get("/dashboard/data")
async def dashboard_figures(request: web.Request) -> web.Response:
    return _json(dashboard_data(request.app[SCHEDULER], request.app[CLOCK]))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


@routes.post("/v1/images")
async def post_image(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    body: ImageIn = await _parse(request, ImageIn)
    try:
        data = base64.b64decode(body.image_base64, validate=True)
    except (binascii.Error, ValueError):
        raise BadDocument("image_base64", "not valid base64") from None
    version = None if body.firmware_version is None else int(body.firmware_version, 16)
    _check_image(data, version, "image_base64")
    s.check_devices([_eui(d, "device_ids") for d in body.device_ids], request[USER])
    stored = await s.store_image(request[USER], data)
    return _json(
        ImageOut(
            firmware_hash=stored.firmware_hash.hex(),
            size_bytes=stored.size_bytes,
            large=s.is_large(stored),
            file_version=f"{stored.file_version:08X}",
            blocks=stored.blocks,
        ),
        201,
    )


@routes.post("/v1/activations")
async def post_activations(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    body: ActivationIn = await _parse(request, ActivationIn)
    when = 0.0
    if body.execution_time is not None:
        dt = body.execution_time
        when = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    sub = s.submit_activations(
        request[USER],
        bytes.fromhex(body.firmware_hash),
        [_eui(d, "device_ids") for d in body.device_ids],
        campaign=body.campaign,
        priority=Priority(body.priority),
        schedule_id=body.schedule_id,
        execution_time=when,
    )
    out = ActivationOut(
        accepted=len(sub.accepted),
        held=sub.held,
        refused=sub.refused,
        request_ids=[r.request_id for r in sub.accepted],
        planned={s.date_of(d) or "": n for d, n in sorted(sub.planned.items())},
        held_reason=next((s.held_reason(r) for r in sub.accepted if r.held_day is not None), None),
        reason=sub.reason or None,
        earliest_date=s.date_of(sub.earliest_day),
        cancelled=len(sub.cancelled),
        cancelling=len(sub.cancelling),
    )
    status = 409 if sub.refused and not sub.accepted else 202
    return _json(out, status)


@routes.post("/v1/reads")
async def post_read(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    body: ReadIn = await _parse(request, ReadIn)
    reading = await s.read_version(request[USER], _eui(body.device_id, "device_id"))
    return _json(
        ReadOut(
            device_id=format_eui64(reading.device_id),
            ok=reading.ok,
            running_version=f"{reading.running_version:08X}",
            pending_version=None
            if reading.pending_version is None
            else f"{reading.pending_version:08X}",
            state=reading.state.name.lower(),
            reason=reading.reason.name.lower(),
        )
    )


@routes.post("/v1/schedules")
async def post_schedule(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    body: ScheduleIn = await _parse(request, ScheduleIn)
    start = None
    if body.start_date is not None:
        start = s.calendar.day_of(
            datetime(
                body.start_date.year, body.start_date.month, body.start_date.day, tzinfo=UTC
            ).timestamp()
        )
    sch, proposal = s.request_schedule(
        request[USER],
        body.devices,
        user=None if body.user is None else _eui(body.user, "user"),
        start_day=start,
        max_per_day=body.max_per_day,
    )
    return _json(_schedule_out(s, sch, proposal), 201)


@routes.post("/v1/schedules/{schedule_id:\\d+}/accept")
async def accept_schedule(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    sch = s.accept_schedule(request[USER], _path_id(request, "schedule_id"))
    return _json(_schedule_out(s, sch))


@routes.get("/v1/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    return _json([_schedule_out(s, sch) for sch in s.schedules_of(request[USER])])


@routes.get("/v1/schedules/{schedule_id:\\d+}")
async def get_schedule(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    return _json(_schedule_out(s, s.schedule(request[USER], _path_id(request, "schedule_id"))))


@routes.get("/v1/requests")
async def list_requests(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    reqs = s.requests_of(request[USER])
    state = request.query.get("state")
    if state is not None:
        if state not in {st.value for st in RequestState}:
            raise BadDocument("state", f"unknown state {state[:20]!r}")
        reqs = [r for r in reqs if r.state.value == state]
    offset = _int_query(request, "offset", 0, 0, MAX_OFFSET)
    limit = _int_query(request, "limit", 100, 1, MAX_PAGE)
    page = reqs[offset : offset + limit]
    return _json(RequestList(requests=[_request_out(s, r) for r in page], total=len(reqs)))


@routes.get("/v1/requests/{request_id:\\d+}")
async def get_request(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    r = s.request(request[USER], _path_id(request, "request_id"))
    return _json(_request_out(s, r))


@routes.get("/v1/capacity")
async def get_capacity(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    today = s.calendar.day_of(s.clock.now())
    first = _date_query(
        request, "from", today, today - CAPACITY_REACH_DAYS, today + CAPACITY_REACH_DAYS
    )
    days = _int_query(request, "days", 7, 1, MAX_CAPACITY_DAYS)
    return _json(s.capacity(first, days))


@routes.get("/v1/notifications")
async def get_notifications(request: web.Request) -> web.Response:
    s = request.app[SCHEDULER]
    after = _int_query(request, "after", 0, 0, MAX_ID)
    items = s.store.notifications(request[USER], after)
    return _json([NotificationOut(id=i, at=at, kind=kind, payload=p) for i, at, kind, p in items])


# -- DUIS ---------------------------------------------------------------------------


async def _duis_user(request: web.Request, data: bytes) -> int | None:
    """The User a DUIS request's signature names (None: unsigned, and signatures are not
    required). Without a bearer token the signature is the only proof: an unsigned or
    unreadable document is then refused as unauthenticated."""
    security = request.app[SCHEDULER].duis_security
    try:
        signer = await _off_loop(data, security.verify, data)
        if signer is not None:
            security.check_replay(signer)  # the store: on the loop, never in a thread
            if USER in request and request[USER] != signer.user:
                raise DuisRefused(
                    f"the bearer token's User {format_eui64(request[USER])} is not the "
                    f"signer {format_eui64(signer.user)}",
                    status=403,
                    request_id=signer.request_id,
                )
    except DuisRefused as exc:
        if exc.request_id:
            with contextlib.suppress(BadDocument):  # echoed if it reads as a RequestID
                request[DUIS_REQUEST_ID] = duis.split_request_id(exc.request_id)
        raise
    except BadDocument:
        if USER not in request:
            raise Unauthenticated(
                "a valid bearer token or a DUIS request signed with a User's certificate is needed"
            ) from None
        raise
    if signer is None and USER not in request:
        raise Unauthenticated(
            "a valid bearer token (Authorization: Bearer <token>) or a DUIS request signed "
            "with a User's certificate is needed"
        )
    await _off_loop(data, security.check_schema, data)  # authenticated: now validated
    return None if signer is None else signer.user


@routes.post(DUIS_PATH)
@routes.post("/duis")
async def post_duis(request: web.Request) -> web.Response:
    """A DUIS request: refused at once with an E-code, or acknowledged `I99` and
    answered later (callback and polling) by a response of its own."""
    s = request.app[SCHEDULER]
    counter = request.app[DOCUMENTS]
    try:
        data = await _body_bytes(request)
        signer = None if USER in request else await _duis_user(request, data)
        doc = await _off_loop(data, duis.parse_request, data, s.config.max_document_bytes)
        if signer is None and USER in request:
            signer = await _duis_user(request, data)
    except SchedulerError as exc:
        counter.labels("unknown", "rejected").inc()
        context = getattr(exc, "duis_context", None)
        if context is not None:
            rid, ref, variant = context
            if rid is not None:
                request[DUIS_REQUEST_ID] = rid
            if ref is not None:
                request[DUIS_SERVICE] = ref
                request[DUIS_VARIANT] = variant or ref
        raise
    h = doc.header
    rid = duis.RequestId(h.sender, h.target, h.counter)
    request[DUIS_REQUEST_ID] = rid
    request[DUIS_SERVICE] = h.service_reference
    request[DUIS_VARIANT] = h.service_reference_variant
    user = signer if signer is not None else request[USER]
    if h.sender != user:
        counter.labels(h.service_reference, "rejected").inc()
        raise Forbidden(
            f"RequestID sender {format_eui64(h.sender)} is not the authenticated User "
            f"{format_eui64(user)}",
            duis_code="E1",
        )
    # Sealed before anything is stored: an acknowledgement that could not be sent (a
    # schema fault) must not leave an accepted request behind.
    ack = s.duis_security.seal(
        duis.acknowledgement(
            rid, "I99", s.clock.now(), h.service_reference, h.service_reference_variant
        )
    )
    # Claimed before the first await: of documents that share a RequestID and arrive
    # together, exactly one goes on; the claim is given back if this one is refused.
    if not s.store.claim_duis_id(rid.text):
        counter.labels(h.service_reference, "rejected").inc()
        raise BadDocument("sr:Header/sr:RequestID", f"{rid.text} was already used")
    try:
        await _serve_duis(request, doc, rid, user)
    except BaseException as exc:
        s.store.release_duis_id(rid.text)
        if isinstance(exc, SchedulerError):
            counter.labels(h.service_reference, "rejected").inc()
        raise
    s.store.record_duis_id(rid.text, h.service_reference, s.clock.now())
    counter.labels(h.service_reference, "accepted").inc()
    return _xml(ack)


def _check_known(s: Scheduler, device_ids: Iterable[int]) -> None:
    """DUIS E19 for a device the fleet does not hold (before ownership, E4)."""
    if s.devices is None:
        return
    for d in device_ids:
        if d not in s.devices:
            raise UnknownDevice("DeviceID", f"unknown device {format_eui64(d)}")


async def _serve_duis(
    request: web.Request, doc: duis.DuisRequest, rid: duis.RequestId, user: int
) -> None:
    """Carry out one parsed DUIS request; its outcome is posted as a notification
    (rendered as DUIS for the callback and for polling). What DUIS has no element for
    (the planned date, a held request's reason) is on the JSON API."""
    s = request.app[SCHEDULER]
    h = doc.header
    if isinstance(doc.body, duis.UpdateFirmware):
        image = doc.body.image
        await _off_loop(image, _check_image, image, None, "sr:FirmwareImage")
        _check_known(s, doc.body.device_ids)
        s.check_devices(doc.body.device_ids, user)
        # Answered (a "response" notification) when the DCO reports it stored; a failure
        # to store is a DCC alert naming the meters (FirmwareDistributionFailure).
        s.update_firmware_later(user, image, rid.text, doc.body.device_ids)
        return
    _check_known(s, [h.target])
    if isinstance(doc.body, duis.ActivateFirmware):
        text = request.query.get("priority", "routine")
        if text not in {p.value for p in Priority}:
            raise BadDocument("priority", f"expected routine or security, got {text[:20]!r}")
        sub = s.submit_activations(
            user,
            doc.body.firmware_hash,
            [h.target],
            priority=Priority(text),
            schedule_id=_int_query(request, "schedule", 0, 1, MAX_ID) or None,
            execution_time=doc.body.execution_time or 0.0,
            duis_request_ids=[rid.text],
            all_or_nothing=True,
        )
        if not sub.accepted:
            # A cancellation: it gets a response of its own (the withdrawn 11.3 gets
            # one too, as cancelled). Nothing found to cancel is said on the JSON API.
            found = len(sub.cancelled) + len(sub.cancelling)
            s.notifier.post(
                user,
                "response",
                {
                    "duis_request_id": rid.text,
                    "service_reference": "11.3",
                    "device_id": format_eui64(h.target),
                    "firmware_hash": doc.body.firmware_hash.hex(),
                    "response_code": "I0" if found else "E99",
                    "state": "cancellation" if found else "not_cancelled",
                    "cancelled": len(sub.cancelled),
                    "cancellation_sent": len(sub.cancelling),
                    "failure": None if found else "cancellation: nothing pending to cancel",
                },
            )
        return
    s.read_version_later(user, h.target, rid.text)


@routes.get("/duis/responses")
async def get_duis_responses(request: web.Request) -> web.Response:
    """Poll: the first DUIS document after notification `after`, as the body (the same
    sealed `sr:Response` the callback receives), with `X-Last-Id` its id: poll again
    with `?after=` that id. 204 when there is none (`X-Last-Id` then says how far the
    scan went, past notifications DUIS has no element for)."""
    s = request.app[SCHEDULER]
    after = _int_query(request, "after", 0, 0, MAX_ID)
    last = after
    while True:
        items = s.store.notifications(request[USER], last)
        for nid, at, kind, payload in items:
            last = nid
            doc = duis.render_notification(kind, at, payload, s.duis_security.seal)
            if doc is not None:
                resp = _xml(doc)
                resp.headers["X-Last-Id"] = str(nid)
                return resp
        if not items:
            break
    return web.Response(status=204, headers={"X-Last-Id": str(last)})


# -- the app ------------------------------------------------------------------------


def make_app(
    scheduler: Scheduler,
    users: Iterable[UserConfig] = (),
    problem: ProblemFn | None = None,
    clock: Callable[[], dict[str, Any] | None] | None = None,
) -> web.Application:
    """The HTTP face of `scheduler`; `users` are registered beside the config's Users;
    `problem` is what /healthz reports (healthy while it returns None)."""
    for u in users:
        scheduler.users.setdefault(u.id, u)
    scheduler.notifier.render = _renderer(scheduler)
    app = web.Application(
        client_max_size=scheduler.config.max_document_bytes,
        middlewares=[_timed, _errors, _auth, _known_query],
    )
    app[SCHEDULER] = scheduler
    app[PROBLEM] = problem or (lambda: None)
    app[CLOCK] = clock or (lambda: None)
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(scheduler))
    app[REGISTRY] = registry
    app[DOCUMENTS] = PromCounter(
        "smets1_scheduler_duis_documents",
        "DUIS documents received",
        ["service_reference", "outcome"],
        registry=registry,
    )
    app[LATENCY] = PromHistogram(
        "smets1_scheduler_http_request_seconds",
        "Wall seconds from a request's arrival to its answer, by interface (duis, json, other)",
        ["api"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    )
    app.add_routes(routes)
    return app


def _renderer(scheduler: Scheduler) -> Renderer:
    def render(nid: int, at: float, kind: str, payload: dict[str, Any]) -> tuple[str, bytes] | None:
        # A notification about a DUIS request goes back as DUIS, or not at all where
        # DUIS has no element for it (the JSON API has it); everything else as JSON.
        if payload.get("duis_request_id"):
            doc = duis.render_notification(kind, at, payload, scheduler.duis_security.seal)
            return None if doc is None else ("application/xml", doc)
        return render_json(nid, at, kind, payload)

    return render
