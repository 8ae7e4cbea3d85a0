"""A fleet config built in memory around one device model, for `smets1 image plan|trial`.

The figures those commands give come from the parts a run is made of (the fleet host and
its link model, the DCO, the scheduler), wired as `smets1 run` wires them, on a virtual
clock; only the config is made here instead of read from a file.
"""

from __future__ import annotations

from smets1.config import FleetConfig
from smets1.config_dcc import DuisConfig, SchedulerConfig, UserConfig
from smets1.config_fleet import DeviceGroup, DeviceModelConfig, FaultConfig, LinkProfile

#: The supplier User of the devices a plan or trial builds.
MAKER_USER = 0x90B3_D51F_3001_0000


def model_fleet(
    name: str,
    model: DeviceModelConfig,
    groups: list[tuple[int, LinkProfile | None, FaultConfig | None]],
    base: FleetConfig | None = None,
    seed: int | None = None,
) -> FleetConfig:
    """A config of `model` alone: one device group per (count, link, faults) of `groups`
    (None: the model's own), supplied by MAKER_USER. Epoch, block size and the scheduler's
    and DCO's settings are `base`'s (a fleet config the model comes from), or the
    defaults; its Users and DUIS signing are not carried over."""
    devices = [
        DeviceGroup(
            model=model.name,
            count=count,
            firmware_version=0,
            link=link,
            faults=faults,
            supplier=MAKER_USER,
        )
        for count, link, faults in groups
    ]
    if base is None:
        return FleetConfig(
            name=name,
            seed=seed or 0,
            models=[model],
            devices=devices,
            scheduler=SchedulerConfig(users=[UserConfig(id=MAKER_USER)]),
        )
    return FleetConfig(
        name=name,
        seed=base.seed if seed is None else seed,
        epoch=base.epoch,
        block_size_bytes=base.block_size_bytes,
        models=[model],
        devices=devices,
        scheduler=base.scheduler.model_copy(
            update={"users": [UserConfig(id=MAKER_USER)], "duis": DuisConfig()}
        ),
        dco=base.dco,
    )
