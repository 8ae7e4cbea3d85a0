"""The fleet config: device models, devices, images, campaigns, and the knobs of each role.

Validated with pydantic at the edge; an unknown or mistyped key is an error that names the
file and the field (`ConfigError`), never silently ignored. The models live beside this
module: `config_fleet` (device side), `config_dcc` (DCC side), `config_types` (fields).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from smets1.clock import DEFAULT_EPOCH_SECONDS
from smets1.config_dcc import (
    CampaignConfig,
    DcoConfig,
    DeviceSelection,
    ImageConfig,
    SchedulerConfig,
)
from smets1.config_fleet import DeviceGroup, DeviceModelConfig, LinkProfile
from smets1.config_types import Strict
from smets1.errors import ConfigError
from smets1.eui64 import format_eui64

__all__ = [
    "CampaignConfig",
    "DcoConfig",
    "DeviceGroup",
    "DeviceModelConfig",
    "DeviceSelection",
    "FleetConfig",
    "ImageConfig",
    "LinkProfile",
    "SchedulerConfig",
    "load_config",
]

#: Where automatically numbered devices start: the first id is this plus one.
DEVICE_ID_BASE = 0x00DB_1200_0000_0000


class FleetConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    epoch: datetime = datetime.fromtimestamp(DEFAULT_EPOCH_SECONDS, tz=UTC)
    block_size_bytes: int = Field(1024, gt=0, le=65_535)
    models: list[DeviceModelConfig] = Field(min_length=1)
    devices: list[DeviceGroup] = Field(min_length=1)
    images: list[ImageConfig] = []
    campaigns: list[CampaignConfig] = []
    scheduler: SchedulerConfig = SchedulerConfig()
    dco: DcoConfig = DcoConfig()

    @field_validator("epoch")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _references(self) -> FleetConfig:
        models = {m.name for m in self.models}
        if len(models) != len(self.models):
            raise ValueError("models: two models share a name")
        images = {i.name for i in self.images}
        if len(images) != len(self.images):
            raise ValueError("images: two images share a name")
        for n, group in enumerate(self.devices):
            if group.model not in models:
                raise ValueError(f"devices.{n}.model: unknown model {group.model!r}")
        self._suppliers()
        for n, campaign in enumerate(self.campaigns):
            if campaign.image not in images:
                raise ValueError(f"campaigns.{n}.image: unknown image {campaign.image!r}")
            if campaign.devices.model not in models:
                raise ValueError(
                    f"campaigns.{n}.devices.model: unknown model {campaign.devices.model!r}"
                )
        return self

    def _suppliers(self) -> None:
        """Every supplier is a User that may supply; with several such Users, every group
        names its own, so no device is left open to all of them."""
        desk = {u.id for u in self.scheduler.users if u.service_desk}
        suppliers = {u.id for u in self.scheduler.users if not u.service_desk}
        suppliers |= {c.user for c in self.campaigns if c.user not in desk}
        for n, group in enumerate(self.devices):
            if group.supplier is None:
                if len(suppliers) > 1:
                    raise ValueError(
                        f"devices.{n}.supplier: required when the config has more than one "
                        f"supplying User ({len(suppliers)}): name the User that supplies "
                        "these devices"
                    )
            elif group.supplier in desk:
                raise ValueError(
                    f"devices.{n}.supplier: {format_eui64(group.supplier)} is a Service Desk "
                    "User, not a supplier"
                )
            elif group.supplier not in suppliers:
                raise ValueError(
                    f"devices.{n}.supplier: {format_eui64(group.supplier)} is neither a "
                    "scheduler User nor the User of a campaign"
                )

    @property
    def epoch_seconds(self) -> float:
        return self.epoch.timestamp()

    def supplier_of(self) -> Callable[[int], int | None]:
        """device id → the User that supplies it (None: no one), by bisecting the groups'
        id ranges rather than holding a dict entry per device."""
        ranges: list[tuple[int, int, int | None]] = []
        next_id = DEVICE_ID_BASE + 1
        for group in self.devices:
            start = group.first_id if group.first_id is not None else next_id
            ranges.append((start, start + group.count, group.supplier))
            next_id = start + group.count
        ranges.sort(key=lambda r: r[0])
        starts = [r[0] for r in ranges]

        def supplier(device_id: int) -> int | None:
            i = bisect.bisect_right(starts, device_id) - 1
            if i < 0:
                return None
            start, end, who = ranges[i]
            return who if start <= device_id < end else None

        return supplier

    def device_ids(self) -> list[tuple[int, DeviceGroup]]:
        """Every device id with its group, in config order."""
        out: list[tuple[int, DeviceGroup]] = []
        next_id = DEVICE_ID_BASE + 1
        for group in self.devices:
            start = group.first_id if group.first_id is not None else next_id
            out.extend((start + i, group) for i in range(group.count))
            next_id = start + group.count
        return out


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the fleet config"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        got = err.get("input")
        shown = (
            "" if isinstance(got, dict | list) or err["type"] == "missing" else f" (got {got!r})"
        )
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def load_config(path: str | Path) -> FleetConfig:
    """Read and validate a YAML fleet config; relative paths inside it are resolved
    against the file's folder. Raises ConfigError with the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fleet config: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of fleet settings at the top level")
    try:
        config = FleetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from exc
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: FleetConfig, base: Path) -> FleetConfig:
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    models = [m.model_copy(update={"public_key": fix(m.public_key)}) for m in config.models]
    images = [i.model_copy(update={"file": fix(i.file), "key": fix(i.key)}) for i in config.images]
    return config.model_copy(update={"models": models, "images": images})
