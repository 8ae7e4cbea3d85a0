"""The OpenAPI 3.1 document of the scheduler's HTTP API (served at /openapi.json).

The operations are data (`_OPS`); their request and response schemas come from the
pydantic models in models.py. `PUBLIC_PATHS` are the routes that need no bearer token:
api.py's auth middleware reads the same set.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from scheduler.models import (
    ActivationIn,
    ActivationOut,
    CapacityDay,
    DuisAck,
    ErrorOut,
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

PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json"})
_OPS: list[tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None, bool]] = [
    # method, path, summary, request model, response model, list response
    ("post", "/v1/images", "SRV 11.1: store a firmware image", ImageIn, ImageOut, False),
    ("post", "/v1/activations", "SRV 11.3 per device", ActivationIn, ActivationOut, False),
    ("post", "/v1/reads", "SRV 11.2: read the firmware version", ReadIn, ReadOut, False),
    ("post", "/v1/schedules", "Ask for a delivery schedule", ScheduleIn, ScheduleOut, False),
    ("post", "/v1/schedules/{schedule_id}/accept", "Agree a schedule", None, ScheduleOut, False),
    ("get", "/v1/schedules", "Your schedules", None, ScheduleOut, True),
    ("get", "/v1/schedules/{schedule_id}", "A schedule and its batches", None, ScheduleOut, False),
    ("get", "/v1/requests", "Your requests (state, offset, limit)", None, RequestList, False),
    ("get", "/v1/requests/{request_id}", "One request", None, RequestOut, False),
    ("get", "/v1/capacity", "Capacity per day (from, days)", None, CapacityDay, True),
    ("get", "/v1/notifications", "Notifications after an id", None, NotificationOut, True),
    ("post", "/duis", "A DUIS sr:Request (XML)", None, DuisAck, False),
    ("get", "/duis/responses", "Poll DUIS responses (XML)", None, None, False),
    ("get", "/healthz", "Health", None, None, False),
    ("get", "/metrics", "Prometheus metrics", None, None, False),
]


def openapi_document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorOut}
    for _, _, _, req, resp, _ in _OPS:
        models.update(m for m in (req, resp) if m is not None)
    _, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, Any] = {}
    for method, path, summary, req, resp, many in _OPS:
        op: dict[str, Any] = {"summary": summary, "responses": {}}
        if path not in PUBLIC_PATHS:
            op["security"] = [{"bearer": []}]
        params = [p[1:-1] for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "integer"}}
                for p in params
            ]
        if req is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{req.__name__}"}}
                },
            }
        if path.startswith("/duis"):
            op["requestBody"] = {"content": {"application/xml": {"schema": {"type": "string"}}}}
        ok: dict[str, Any] = {"description": "OK"}
        if resp is not None:
            ref = {"$ref": f"#/components/schemas/{resp.__name__}"}
            ok["content"] = {
                "application/json": {"schema": {"type": "array", "items": ref} if many else ref}
            }
        err = {
            "description": "Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        op["responses"] = {"200": ok, "400": err, "401": err, "404": err, "409": err}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "smets1-fleet DCC scheduler", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
