"""The fleet config: device models, devices, images, campaigns, and the knobs of each role.

Validated with pydantic at the edge; an unknown or mistyped key is an error that names the
file and the field (`ConfigError`), never silently ignored. The models live beside this
module: `config_fleet` (device side), `config_dcc` (DCC side), `config_types` (fields).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Annotated

from pydantic import Field, PlainValidator, ValidationError, field_validator, model_validator

from smets1.clock import DEFAULT_EPOCH_SECONDS
from smets1.config_background import BackgroundConfig
from smets1.config_dcc import (
    CampaignConfig,
    DcoConfig,
    DeviceSelection,
    ImageConfig,
    SchedulerConfig,
    duis_file_problems,
)
from smets1.config_fleet import DeviceGroup, DeviceModelConfig, LinkProfile
from smets1.config_policy import without_policy_tag
from smets1.config_types import FieldError, Strict
from smets1.config_yaml import line_of, load_yaml
from smets1.errors import ConfigError
from smets1.eui64 import format_eui64
from smets1.limits import MAX_CONFIG_BYTES, MAX_FLEET_DEVICES
from smets1.thresholds import Threshold, parse_threshold

__all__ = [
    "BackgroundConfig",
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
EUI64_MAX = 0xFFFF_FFFF_FFFF_FFFF
#: Problems listed for one config; the rest are counted.
MAX_PROBLEMS_SHOWN = 20

#: A threshold in a config: 10 (requests) or "2.5%" (of the run's requests).
ThresholdField = Annotated[Threshold, PlainValidator(parse_threshold)]


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
    #: Ordinary service requests the DCO carries beside firmware (issue 16); None: off.
    background: BackgroundConfig | None = None
    #: The worst end-to-end lateness of a frame (simulated seconds) a distributed run may
    #: show and still be valid; default: a tenth of one run of blocks over the fastest
    #: link (smets1.lateness).
    max_lateness_seconds: float | None = Field(None, gt=0)
    #: CI gates (orchestrator.gate): the most failed requests, and the most requests that
    #: missed their TRT, a run may end with and still pass: a count (10) or a share of
    #: the run's requests ("2.5%"). None: not checked.
    max_failed: ThresholdField | None = None
    max_trt_missed: ThresholdField | None = None

    @field_validator("epoch")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _references(self) -> FleetConfig:
        _unique_names("models", [m.name for m in self.models])
        _unique_names("images", [i.name for i in self.images])
        models = {m.name for m in self.models}
        images = {i.name for i in self.images}
        for n, group in enumerate(self.devices):
            if group.model not in models:
                raise FieldError(("devices", n, "model"), f"unknown model {group.model!r}")
        self._suppliers()
        spare_capacity_problem(self)
        for n, campaign in enumerate(self.campaigns):
            if campaign.image not in images:
                raise FieldError(("campaigns", n, "image"), f"unknown image {campaign.image!r}")
            if campaign.devices.model not in models:
                raise FieldError(
                    ("campaigns", n, "devices", "model"),
                    f"unknown model {campaign.devices.model!r}",
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
                    raise FieldError(
                        ("devices", n, "supplier"),
                        f"required when the config has more than one supplying User "
                        f"({len(suppliers)}): name the User that supplies these devices",
                    )
            elif group.supplier in desk:
                raise FieldError(
                    ("devices", n, "supplier"),
                    f"{format_eui64(group.supplier)} is a Service Desk User, not a supplier",
                )
            elif group.supplier not in suppliers:
                raise FieldError(
                    ("devices", n, "supplier"),
                    f"{format_eui64(group.supplier)} is neither a scheduler User nor the "
                    "User of a campaign",
                )

    @model_validator(mode="after")
    def _device_ids_fit(self) -> FleetConfig:
        """Every group's ids are EUI-64s, no two groups share one, and the fleet is not
        larger than a process can number (smets1.limits)."""
        total = 0
        next_id = DEVICE_ID_BASE + 1
        spans: list[tuple[int, int, int]] = []
        for n, group in enumerate(self.devices):
            total += group.count
            if total > MAX_FLEET_DEVICES:
                so_far = "" if total == group.count else f" ({total:,} with the groups before)"
                raise FieldError(
                    ("devices", n, "count"),
                    f"a fleet config holds at most {MAX_FLEET_DEVICES:,} devices, got"
                    f" {group.count:,}{so_far}; every process of a run numbers every device,"
                    " so run several fleet configs side by side for more",
                )
            start = group.first_id if group.first_id is not None else next_id
            last = start + group.count - 1
            if last > EUI64_MAX:
                field = "first_id" if group.first_id is not None else "count"
                raise FieldError(
                    ("devices", n, field),
                    f"{group.count:,} ids from {format_eui64(start)} pass the last EUI-64"
                    f" {format_eui64(EUI64_MAX)}; expected a first_id at most"
                    f" {format_eui64(EUI64_MAX - group.count + 1)}",
                )
            spans.append((start, last, n))
            next_id = last + 1
        spans.sort()
        for (_, last, n), (start, _, m) in pairwise(spans):
            if start <= last:
                field = "first_id" if self.devices[max(n, m)].first_id is not None else "count"
                raise FieldError(
                    ("devices", max(n, m), field),
                    f"ids of devices.{min(n, m)} and devices.{max(n, m)} overlap from"
                    f" {format_eui64(start)}; expected each device id once",
                )
        return self

    @property
    def device_count(self) -> int:
        return sum(g.count for g in self.devices)

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

    def device_spans(self) -> list[tuple[int, int]]:
        """(first id, count) of every group, in config order: the fleet's ids without a
        list entry per device."""
        spans: list[tuple[int, int]] = []
        next_id = DEVICE_ID_BASE + 1
        for group in self.devices:
            start = group.first_id if group.first_id is not None else next_id
            spans.append((start, group.count))
            next_id = start + group.count
        return spans

    def device_ids(self) -> list[tuple[int, DeviceGroup]]:
        """Every device id with its group, in config order."""
        out: list[tuple[int, DeviceGroup]] = []
        next_id = DEVICE_ID_BASE + 1
        for group in self.devices:
            start = group.first_id if group.first_id is not None else next_id
            out.extend((start + i, group) for i in range(group.count))
            next_id = start + group.count
        return out


def spare_capacity_problem(config: FleetConfig) -> None:
    """The spare_capacity policy shapes its releases by the background's daily profile:
    a config choosing it without a `background:` section is refused (FieldError at
    `scheduler.policy.kind`)."""
    if config.scheduler.policy.kind == "spare_capacity" and config.background is None:
        raise FieldError(
            ("scheduler", "policy", "kind"),
            "spare_capacity releases where background traffic leaves room: expected a"
            " background: section (background: {} for the defaults), got none",
        )


def _unique_names(section: str, names: list[str]) -> None:
    first: dict[str, int] = {}
    for n, name in enumerate(names):
        if name in first:
            raise FieldError(
                (section, n, "name"), f"{name!r} is the name of {section}.{first[name]} too"
            )
        first[name] = n


_DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.\w+)+): ")


def _path(dotted: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def _format_error(path: Path, exc: ValidationError, lines: dict[tuple[str | int, ...], int]) -> str:
    """One line a problem: `file:line: field: what is wrong (got what)`."""
    out = []
    errors = exc.errors()
    for err in errors[:MAX_PROBLEMS_SHOWN]:
        loc = without_policy_tag(tuple(err["loc"]))
        msg = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc, msg = loc + cause.loc, cause.message
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            # A plain ValueError worded "devices.3.model: ..." names its field too.
            named = _DOTTED.match(msg)
            if named and line_of(lines, loc + _path(named[1])) is not None:
                loc, msg = loc + _path(named[1]), msg[named.end() :]
        got = err.get("input")
        shown = ""
        # A value error of ours says what it got; pydantic's own messages do not.
        secret = bool(loc) and str(loc[-1]) in ("token", "password")
        if err["type"] not in ("value_error", "missing") and not isinstance(got, dict | list):
            text = "'***'" if secret else repr(got)
            shown = f" (got {text if len(text) <= 60 else text[:57] + '...'})"
        line = line_of(lines, loc)
        where = f"{path}:{line}" if line is not None else f"{path}"
        field = ".".join(str(p) for p in loc) or "(top level)"
        out.append(f"{where}: {field}: {msg}{shown}")
    if len(errors) > MAX_PROBLEMS_SHOWN:
        out.append(f"{path}: {len(errors) - MAX_PROBLEMS_SHOWN} more problem(s) not shown")
    return "\n".join(out)


def load_config(path: str | Path) -> FleetConfig:
    """Read and validate a YAML fleet config; relative paths inside it are resolved
    against the file's folder. Raises ConfigError with the file, the line and the field,
    one line a problem."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw_bytes = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fleet config: {exc.strerror}") from exc
    if len(raw_bytes) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: more than {MAX_CONFIG_BYTES:,} bytes; expected a YAML fleet config"
        )
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw_bytes.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text: byte 0x{raw_bytes[exc.start]:02X} at offset"
            f" {exc.start}"
        ) from None
    raw, lines = load_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of fleet settings at the top level")
    try:
        config = FleetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc, lines)) from None
    config = _resolve_paths(config, path.parent)
    problems = duis_file_problems(config.scheduler)
    if problems:
        out = []
        for loc, message in problems[:MAX_PROBLEMS_SHOWN]:
            full = ("scheduler", *loc)
            at = line_of(lines, full)
            where = f"{path}:{at}" if at is not None else f"{path}"
            out.append(f"{where}: {'.'.join(str(p) for p in full)}: {message}")
        raise ConfigError("\n".join(out))
    return config


def _resolve_paths(config: FleetConfig, base: Path) -> FleetConfig:
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    models = [m.model_copy(update={"public_key": fix(m.public_key)}) for m in config.models]
    images = [i.model_copy(update={"file": fix(i.file), "key": fix(i.key)}) for i in config.images]
    sched = config.scheduler
    users = [u.model_copy(update={"certificate": fix(u.certificate)}) for u in sched.users]
    duis = sched.duis.model_copy(
        update={
            name: fix(getattr(sched.duis, name))
            for name in ("signing_key", "signing_certificate", "schema_dir")
        }
    )
    scheduler = sched.model_copy(update={"users": users, "duis": duis})
    return config.model_copy(update={"models": models, "images": images, "scheduler": scheduler})
