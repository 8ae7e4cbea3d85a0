"""One way to build a config's images and scheduler and to submit its campaigns.

`smets1 run` (orchestrator.runner) and the scheduler role (orchestrator.roles) both use
these, so an in-process run and a distributed one submit exactly the same work.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.preflight import read_image_file
from scheduler.errors import AdmissionRefused, SchedulerError
from scheduler.requests import Priority
from scheduler.service import Scheduler
from scheduler.summary import SchedulerSummary, summarize
from smets1.clock import Clock
from smets1.config import CampaignConfig, FleetConfig, ImageConfig
from smets1.config_dcc import UserConfig
from smets1.errors import ConfigError
from smets1.image import ImageError, build_image, parse_image, seeded_body
from smets1.services import DcoApi
from smets1.signing import demo_private_key, load_private_key


def make_image(cfg: ImageConfig) -> bytes:
    """The OTA file a config image names: read from `file`, or built to `size_bytes`."""
    if cfg.file is not None:
        data = read_image_file(cfg.file, f"images.{cfg.name}.file")
        try:
            parse_image(data)
        except ImageError as exc:
            raise ConfigError(f"images.{cfg.name}.file: {cfg.file}: {exc}") from exc
        return data
    assert cfg.size_bytes is not None
    key = load_private_key(cfg.key) if cfg.key else demo_private_key(cfg.manufacturer_code)

    def build(body: bytes) -> bytes:
        return build_image(
            manufacturer_code=cfg.manufacturer_code,
            image_type=cfg.image_type,
            file_version=cfg.file_version,
            body=body,
            private_key=key,
            hardware_versions=cfg.hardware_versions,
            header_string=f"smets1-fleet {cfg.name}"[:32],
        )

    overhead = len(build(b""))
    if cfg.size_bytes < overhead:
        raise ConfigError(
            f"images.{cfg.name}.size_bytes: at least {overhead} bytes are needed for the "
            f"header and signature, got {cfg.size_bytes}"
        )
    data = build(seeded_body(cfg.size_bytes - overhead, cfg.seed))
    assert len(data) == cfg.size_bytes
    return data


def make_images(config: FleetConfig) -> dict[str, bytes]:
    """Every image of the config, by name."""
    return {i.name: make_image(i) for i in config.images}


def devices_by_model(config: FleetConfig) -> dict[str, list[int]]:
    """Every device id of the config, by model, in config order."""
    by_model: dict[str, list[int]] = {}
    for device_id, group in config.device_ids():
        by_model.setdefault(group.model, []).append(device_id)
    return by_model


def campaign_devices(
    c: CampaignConfig, by_model: dict[str, list[int]], config: FleetConfig
) -> list[int]:
    """The devices a campaign selects: of its model's devices that its User supplies (or
    that no one does), `count` from `offset` on."""
    supplier = config.supplier_of()
    ids = [d for d in by_model.get(c.devices.model, []) if supplier(d) in (None, c.user)]
    ids = ids[c.devices.offset :]
    return ids if c.devices.count is None else ids[: c.devices.count]


def campaign_batches(
    c: CampaignConfig, ids: list[int]
) -> list[tuple[float, CampaignConfig, list[int]]]:
    """When each part of a campaign is submitted (seconds from the start of the run), as
    what campaign, with which devices: the campaign whole at `submit_after_seconds`, or,
    with `batch_size`, batch k (from 1) as the campaign `name#k`, `batch_every_seconds`
    after the one before."""
    if c.batch_size is None:
        return [(c.submit_after_seconds, c, ids)] if ids else []
    out = []
    for k, start in enumerate(range(0, len(ids), c.batch_size)):
        batch = c.model_copy(update={"name": f"{c.name}#{k + 1}", "batch_size": None})
        at = c.submit_after_seconds + k * c.batch_every_seconds
        out.append((at, batch, ids[start : start + c.batch_size]))
    return out


def build_scheduler(
    config: FleetConfig,
    clock: Clock,
    dco: DcoApi,
    state_dir: Path,
    by_model: dict[str, list[int]],
) -> Scheduler:
    """The scheduler of a config, the same for `smets1 run` and `smets1 scheduler`."""
    # Campaign Users not listed under scheduler.users are registered without a token.
    listed = {u.id for u in config.scheduler.users}
    extra = [UserConfig(id=c.user) for c in config.campaigns if c.user not in listed]
    devices = {d for ids in by_model.values() for d in ids}
    return Scheduler(
        clock,
        dco,
        config.scheduler,
        state_dir=state_dir,
        devices=devices,
        users=extra,
        suppliers=config.supplier_of(),
        background_weights=(
            None if config.background is None else config.background.hourly_weights
        ),
    )


async def submit_campaign(
    scheduler: Scheduler, c: CampaignConfig, image: bytes, ids: list[int]
) -> bool:
    """11.1 for the image, an agreed schedule if the campaign has one (and the release
    policy asks for schedules: MP230 only), then the 11.3s.

    The schedule is asked for the campaign's devices and the User's held requests,
    which join it when it is agreed. Whatever the scheduler refuses is recorded as a
    refusal of the campaign, as a User's system would see it, not a crash of the run.

    Idempotent per campaign name, across restarts: the scheduler's store records the
    schedule agreed for the campaign and that it was submitted, so a scheduler killed at
    any point and started again submits each campaign exactly once and never asks twice
    for its schedule. False when the campaign had already been submitted.
    """
    schedule_id, submitted = scheduler.campaign_progress(c.name)
    if submitted:
        return False
    try:
        stored = await scheduler.store_image(c.user, image)
        if (
            c.schedule == "agreed"
            and scheduler.limits.policy.asks_for_schedules
            and scheduler.is_large(stored)
            and schedule_id is None
        ):
            devices = len(ids) + scheduler.held_count(c.user)
            proposed, _ = scheduler.request_schedule(c.user, devices, max_per_day=c.max_per_day)
            schedule_id = scheduler.accept_schedule(c.user, proposed.schedule_id).schedule_id
            scheduler.mark_campaign(c.name, c.user, schedule_id=schedule_id)
        scheduler.submit_activations(
            c.user,
            stored.firmware_hash,
            ids,
            campaign=c.name,
            priority=Priority(c.priority),
            schedule_id=schedule_id,
        )
    except SchedulerError as exc:
        earliest = exc.earliest_day if isinstance(exc, AdmissionRefused) else None
        scheduler.record_refusal(c.user, c.name, len(ids), exc.reason, earliest)
    scheduler.mark_campaign(c.name, c.user, submitted=True)
    return True


def campaign_summary(
    scheduler: Scheduler, config: FleetConfig, simulated_seconds: float, images: dict[str, bytes]
) -> SchedulerSummary:
    """The scheduler's summary of a config's campaigns (scheduler.summary)."""
    return summarize(
        scheduler,
        name=config.name,
        seed=config.seed,
        devices=sum(g.count for g in config.devices),
        simulated_seconds=simulated_seconds,
        images=images,
    )
