"""Reading the roles of a distributed run while it goes on: their HTTP documents."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from typing import Any

from orchestrator.distributed import Service


def get_json(url: str, token: str | None = None) -> dict[str, Any]:
    """The JSON document at `url`, or {} while the role cannot answer it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(request, timeout=2.0) as resp:
            return dict(json.loads(resp.read()))
    return {}


def health(svc: Service) -> dict[str, Any]:
    """A DCO worker's or fleet shard's /health document ({} while it cannot answer)."""
    return get_json(f"http://127.0.0.1:{svc.port}/health")
