"""What a run leaves beside its summary for its report: `DIR/run.json`.

The config (its text, file name and SHA-256), the seed, the version of smets1-fleet, and
what the report needs of the config to read the scheduler's store: the MP230 figures, the
peak windows, the Users' names and which model each device is. `smets1 report DIR`
rebuilds the report from this, `summary.json` and the scheduler's SQLite, without the
config file (which may have moved).
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from smets1.config import FleetConfig
from smets1.eui64 import format_eui64

RUN_INFO_FILE = "run.json"
#: A bearer token in a config (a User's `token`, `dco.token`): never copied into a report.
_TOKEN = re.compile(r"""(\btoken\s*:\s*)("[^"]*"|'[^']*'|[^\s,}#]+)""")
#: The config's text is kept up to this many bytes (the report shows it).
CONFIG_TEXT_BYTES = 64 * 1024


class DeviceRange(BaseModel):
    """`count` consecutive device ids from `first_id`, all of `model`."""

    model: str
    first_id: int
    count: int


class RunInfo(BaseModel):
    config_name: str
    config_file: str
    config_sha256: str
    #: The config's text, cut to CONFIG_TEXT_BYTES.
    config_text: str
    config_truncated: bool
    seed: int
    version: str
    epoch_seconds: float
    trt_seconds: float
    large_images_per_day: int
    user_daily_limit: int
    peak_windows: list[tuple[float, float]]
    peak_timezone: str
    #: EUI-64 text → the User's name in the config.
    users: dict[str, str]
    models: list[DeviceRange]
    mode: str = "run"
    #: The release policy (scheduler.policy): `smets1 compare` puts one in place of the
    #: config's own, so the config's text alone does not say which ran.
    policy: dict[str, Any] = {"kind": "mp230"}

    def model_of(self, device_id: int) -> str | None:
        """The model of a device, by the ranges (no table of every device: an estate has
        670,000); None for an id in none of them."""
        for r in self.models:
            if r.first_id <= device_id < r.first_id + r.count:
                return r.model
        return None


def redact(config_text: str) -> str:
    """The config's text with every token's value replaced: a report is forwarded."""
    return _TOKEN.sub(r"\1<redacted>", config_text)


def package_version() -> str:
    try:
        return metadata.version("smets1-fleet")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_info(config: FleetConfig, config_file: Path | None, mode: str = "run") -> RunInfo:
    raw = config_file.read_bytes() if config_file is not None else b""
    ranges: list[DeviceRange] = []
    for device_id, group in config.device_ids():
        last = ranges[-1] if ranges else None
        if last and last.model == group.model and last.first_id + last.count == device_id:
            last.count += 1
        else:
            ranges.append(DeviceRange(model=group.model, first_id=device_id, count=1))
    s = config.scheduler
    return RunInfo(
        config_name=config.name,
        config_file=str(config_file) if config_file is not None else "",
        config_sha256=hashlib.sha256(raw).hexdigest() if raw else "",
        config_text=redact(raw[:CONFIG_TEXT_BYTES].decode("utf-8", "replace")),
        config_truncated=len(raw) > CONFIG_TEXT_BYTES,
        seed=config.seed,
        version=package_version(),
        epoch_seconds=config.epoch.timestamp(),
        trt_seconds=s.trt_seconds,
        large_images_per_day=s.large_images_per_day,
        user_daily_limit=s.user_daily_limit,
        peak_windows=[(w.start_hour, w.end_hour) for w in s.peak_windows],
        peak_timezone=s.peak_timezone,
        users={format_eui64(u.id): u.name for u in s.users},
        models=ranges,
        mode=mode,
        policy=s.policy.model_dump(),
    )


def write_run_info(out_dir: Path, info: RunInfo) -> None:
    (out_dir / RUN_INFO_FILE).write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_run_info(out_dir: Path) -> RunInfo | None:
    path = out_dir / RUN_INFO_FILE
    if not path.is_file():
        return None
    return RunInfo.model_validate_json(path.read_bytes())
