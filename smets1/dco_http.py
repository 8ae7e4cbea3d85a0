"""The DCO's HTTP API as data: routes and the JSON of SRV 11.1, 11.3 and 11.2.

Both sides use this module: `dco_mock.http_api` serves it, `smets1.dco_client` calls it.

    POST /v1/images                      body: the OTA file (application/octet-stream)
                                         → 200 StoredImage                        (SRV 11.1)
    POST /v1/activations                 {"device_id", "firmware_hash", "execution_time"}
                                         → 200 ActivationOutcome, once the device answered
                                                                                  (SRV 11.3)
    GET  /v1/devices/{device_id}/version → 200 VersionReading                     (SRV 11.2)
    GET  /health                         → 200 {"ok": true, ...} or 503 when lagging / offline
    GET  /metrics                        → Prometheus text

Errors answer `{"error": <code>, "message": <text>}` with 400 (bad request, image
rejected) or 404 (unknown image). Device ids are EUI-64 text (`00-DB-12-...`), hashes
are hex, states and reasons their wire codes (so a code a newer DCO sends still decodes).
"""

from __future__ import annotations

from typing import Any

from smets1.codes import DeviceState, Reason
from smets1.eui64 import format_eui64, parse_eui64
from smets1.services import ActivationOutcome, StoredImage, VersionReading

IMAGES_PATH = "/v1/images"
ACTIVATIONS_PATH = "/v1/activations"
VERSION_PATH = "/v1/devices/{device_id}/version"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"


def stored_image_to_json(s: StoredImage) -> dict[str, Any]:
    return {
        "firmware_hash": s.firmware_hash.hex(),
        "size_bytes": s.size_bytes,
        "file_version": s.file_version,
        "manufacturer_code": s.manufacturer_code,
        "image_type": s.image_type,
        "blocks": s.blocks,
        "stored_at": s.stored_at,
    }


def stored_image_from_json(d: dict[str, Any]) -> StoredImage:
    return StoredImage(
        firmware_hash=bytes.fromhex(d["firmware_hash"]),
        size_bytes=int(d["size_bytes"]),
        file_version=int(d["file_version"]),
        manufacturer_code=int(d["manufacturer_code"]),
        image_type=int(d["image_type"]),
        blocks=int(d["blocks"]),
        stored_at=float(d["stored_at"]),
    )


def activation_request_to_json(
    device_id: int, firmware_hash: bytes, execution_time: float
) -> dict[str, Any]:
    return {
        "device_id": format_eui64(device_id),
        "firmware_hash": firmware_hash.hex(),
        "execution_time": execution_time,
    }


def activation_request_from_json(d: dict[str, Any]) -> tuple[int, bytes, float]:
    """(device id, firmware hash, execution time); ValueError/KeyError on a bad body."""
    firmware_hash = bytes.fromhex(d["firmware_hash"])
    if len(firmware_hash) != 32:
        raise ValueError(f"firmware_hash: expected 64 hex digits, got {len(firmware_hash) * 2}")
    return parse_eui64(d["device_id"]), firmware_hash, float(d.get("execution_time", 0.0))


def outcome_to_json(o: ActivationOutcome) -> dict[str, Any]:
    return {
        "device_id": format_eui64(o.device_id),
        "ok": o.ok,
        "state": int(o.state),
        "reason": int(o.reason),
        "running_version": o.running_version,
        "blocks_sent": o.blocks_sent,
        "bytes_sent": o.bytes_sent,
        "started_at": o.started_at,
        "finished_at": o.finished_at,
        "rounds": o.rounds,
    }


def outcome_from_json(d: dict[str, Any]) -> ActivationOutcome:
    return ActivationOutcome(
        device_id=parse_eui64(d["device_id"]),
        ok=bool(d["ok"]),
        state=DeviceState(int(d["state"])),
        reason=Reason(int(d["reason"])),
        running_version=int(d["running_version"]),
        blocks_sent=int(d["blocks_sent"]),
        bytes_sent=int(d["bytes_sent"]),
        started_at=float(d["started_at"]),
        finished_at=float(d["finished_at"]),
        rounds=int(d["rounds"]),
    )


def reading_to_json(r: VersionReading) -> dict[str, Any]:
    return {
        "device_id": format_eui64(r.device_id),
        "ok": r.ok,
        "running_version": r.running_version,
        "pending_version": r.pending_version,
        "state": int(r.state),
        "reason": int(r.reason),
        "read_at": r.read_at,
    }


def reading_from_json(d: dict[str, Any]) -> VersionReading:
    pending = d.get("pending_version")
    return VersionReading(
        device_id=parse_eui64(d["device_id"]),
        ok=bool(d["ok"]),
        running_version=int(d["running_version"]),
        pending_version=None if pending is None else int(pending),
        state=DeviceState(int(d["state"])),
        reason=Reason(int(d["reason"])),
        read_at=float(d["read_at"]),
    )
