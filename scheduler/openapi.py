"""The OpenAPI 3.1 document of the scheduler's HTTP API (served at /openapi.json).

The operations are data (`_OPS`); their request and response schemas come from the
pydantic models in models.py. `PUBLIC_PATHS` are the routes that need no bearer token:
api.py's auth middleware reads the same set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from scheduler.models import (
    CAPACITY_REACH_DAYS,
    MAX_CAPACITY_DAYS,
    MAX_ID,
    MAX_OFFSET,
    MAX_PAGE,
    ActivationIn,
    ActivationOut,
    CapacityDay,
    ErrorOut,
    Health,
    ImageIn,
    ImageOut,
    NotificationOut,
    ReadIn,
    ReadOut,
    RequestList,
    RequestOut,
    ScheduleIn,
    ScheduleOut,
)
from scheduler.requests import Priority, RequestState

PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/dashboard", "/dashboard/data"})

_INTEGER_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_AFTER = {
    "name": "after",
    "in": "query",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
}


@dataclass(frozen=True)
class _Op:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    ok: type[BaseModel] | None = None
    many: bool = False
    status: int = 200
    #: Error statuses this operation answers with (besides 401 on every non-public path).
    errors: tuple[int, ...] = (400,)
    query: tuple[dict[str, Any], ...] = ()
    #: Media type of the success body when not JSON (DUIS is XML, metrics text).
    media: str | None = None
    #: Further success statuses and the model each answers with.
    also: tuple[tuple[int, type[BaseModel]], ...] = ()


_OPS: list[_Op] = [
    _Op("post", "/v1/images", "SRV 11.1: store a firmware image", ImageIn, ImageOut,
        status=201, errors=(400, 403, 502)),
    _Op("post", "/v1/activations", "SRV 11.3 per device", ActivationIn, ActivationOut,
        status=202, errors=(400, 403, 404, 409), also=((409, ActivationOut),)),
    _Op("post", "/v1/reads", "SRV 11.2: read the firmware version", ReadIn, ReadOut,
        errors=(400, 403, 502)),
    _Op("post", "/v1/schedules", "Ask for a delivery schedule", ScheduleIn, ScheduleOut,
        status=201, errors=(400, 403, 409)),
    _Op("post", "/v1/schedules/{schedule_id}/accept", "Agree a schedule", None, ScheduleOut,
        errors=(404, 409)),
    _Op("get", "/v1/schedules", "Your schedules", None, ScheduleOut, many=True, errors=()),
    _Op("get", "/v1/schedules/{schedule_id}", "A schedule and its batches", None, ScheduleOut,
        errors=(404,)),
    _Op("get", "/v1/requests", "Your requests, a page at a time", None, RequestList,
        query=(
            {"name": "state", "in": "query",
             "schema": {"type": "string", "enum": [s.value for s in RequestState]}},
            {"name": "offset", "in": "query",
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
        )),
    _Op("get", "/v1/requests/{request_id}", "One request", None, RequestOut, errors=(404,)),
    _Op("get", "/v1/capacity", "Capacity per day", None, CapacityDay, many=True,
        query=(
            {"name": "from", "in": "query", "description": "first day (default today), "
             f"at most {CAPACITY_REACH_DAYS} days from today either way",
             "schema": {"type": "string", "format": "date"}},
            {"name": "days", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CAPACITY_DAYS}},
        )),
    _Op("get", "/v1/notifications", "Notifications after an id", None, NotificationOut,
        many=True, query=(_AFTER,)),
    _Op("post", "/duis", "A DUIS sr:Request (XML): I99 sr:Response, or one with an E-code",
        None, None, media="application/xml", errors=(400, 403, 404, 409, 502),
        query=(
            {"name": "priority", "in": "query", "description": "11.3 only",
             "schema": {"type": "string", "enum": [p.value for p in Priority]}},
            {"name": "schedule", "in": "query", "description": "11.3 only: an agreed schedule",
             "schema": _INTEGER_ID},
        )),
    _Op("post", "/api/v1/serviceS", "DCC Boxed's path for a DUIS sr:Request (as /duis)",
        None, None, media="application/xml", errors=(400, 403, 404, 409, 502),
        query=(
            {"name": "priority", "in": "query", "description": "11.3 only",
             "schema": {"type": "string", "enum": [p.value for p in Priority]}},
            {"name": "schedule", "in": "query", "description": "11.3 only: an agreed schedule",
             "schema": _INTEGER_ID},
        )),
    _Op("get", "/duis/responses", "Poll: the next DUIS response after `after` (204: none)",
        None, None, media="application/xml", query=(_AFTER,)),
    _Op("get", "/healthz", "Health (503 with the reason while the DCO is unreachable)", None,
        Health, errors=(), also=((503, Health),)),
    _Op("get", "/metrics", "Prometheus metrics", None, None, media="text/plain", errors=()),
    _Op("get", "/openapi.json", "This document", None, None, media="application/json",
        errors=()),
]  # fmt: skip


#: (method, path) → the query parameters the operation takes; api.py refuses any other.
QUERY_PARAMETERS: dict[tuple[str, str], frozenset[str]] = {
    (op.method.upper(), op.path): frozenset(q["name"] for q in op.query) for op in _OPS
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op: _Op) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary}
    xml = op.path.startswith("/duis") or op.path == "/api/v1/serviceS"
    params = [
        {"name": p[1:-1], "in": "path", "required": True, "schema": _INTEGER_ID}
        for p in op.path.split("/")
        if p.startswith("{")
    ]
    params += list(op.query)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    elif xml and op.method == "post":
        out["requestBody"] = {
            "required": True,
            "content": {"application/xml": {"schema": {"type": "string"}}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    if op.ok is not None:
        listed = {"type": "array", "items": _ref(op.ok)} if op.many else _ref(op.ok)
        ok["content"] = {"application/json": {"schema": listed}}
    elif op.media == "application/json":
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif op.media is not None:
        ok["content"] = {op.media: {"schema": {"type": "string"}}}
    last_id = {
        "X-Last-Id": {
            "description": "the id of the notification returned, or scanned to (poll after it)",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
    if op.path == "/duis/responses":
        ok["headers"] = last_id
    responses: dict[str, Any] = {str(op.status): ok}
    if op.path == "/duis/responses":
        responses["204"] = {"description": "no DUIS response after `after`", "headers": last_id}
    err_media = "application/xml" if xml else "application/json"
    err_schema: dict[str, Any] = {"type": "string"} if xml else dict(_ref(ErrorOut))
    errors = set(op.errors) | (set() if op.path in PUBLIC_PATHS else {401})
    for code in sorted(errors):
        schema: dict[str, Any] = err_schema
        also = [m for c, m in op.also if c == code]
        if also and not xml:
            schema = {"anyOf": [_ref(m) for m in also] + [err_schema]}
        responses[str(code)] = {"description": "Error", "content": {err_media: {"schema": schema}}}
    out["responses"] = responses
    if op.path not in PUBLIC_PATHS:
        out["security"] = [{"bearer": []}]
    return out


def openapi_document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorOut}
    for op in _OPS:
        models.update(m for m in (op.body, op.ok) if m is not None)
    _, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, Any] = {}
    for op in _OPS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "smets1-fleet DCC scheduler", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
