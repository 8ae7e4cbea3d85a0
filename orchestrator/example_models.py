"""The device models `smets1 image validate|plan|trial` know without a fleet config.

They are the models of `fleet_configs/*.yaml` (acme-e1 and zeta-s1, the same in every
config there; a test holds them equal), so a manufacturer can try an image against a
familiar meter before writing a config of their own. `--config` names a fleet config
whose models are used instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UnknownModel
from smets1.config import FleetConfig, load_config
from smets1.config_fleet import DeviceModelConfig, LinkProfile

EXAMPLE_MODELS: dict[str, DeviceModelConfig] = {
    m.name: m
    for m in (
        DeviceModelConfig(
            name="acme-e1",
            manufacturer_code=0x1234,
            image_type=0x0001,
            hardware_version=3,
            slot_capacity_bytes=1_572_864,
            reboot_seconds=90,
            link=LinkProfile(bandwidth_bps=20_000, latency_seconds=1.5),
        ),
        DeviceModelConfig(
            name="zeta-s1",
            manufacturer_code=0x5A45,
            image_type=0x0102,
            hardware_version=1,
            slot_capacity_bytes=2_097_152,
            reboot_seconds=120,
            link=LinkProfile(bandwidth_bps=40_000, latency_seconds=0.8),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """A model, and the fleet config it comes from (None: a built-in example)."""

    model: DeviceModelConfig
    config: FleetConfig | None
    config_path: Path | None

    @property
    def source(self) -> str:
        return "built-in example" if self.config_path is None else str(self.config_path)


def load_models(config_path: str | None) -> tuple[FleetConfig | None, dict[str, DeviceModelConfig]]:
    """The models to choose from: the config's (ConfigError if it cannot be read), or the
    built-in examples."""
    if config_path is None:
        return None, EXAMPLE_MODELS
    config = load_config(config_path)
    return config, {m.name: m for m in config.models}


def choose_model(name: str, config_path: str | None) -> ModelChoice:
    """The model called `name`; UnknownModel, naming those known, if there is none."""
    config, models = load_models(config_path)
    model = models.get(name)
    if model is None:
        where = f"config {config_path}" if config_path is not None else "built-in examples"
        raise UnknownModel(
            f"unknown model {name!r}; the {where} hold{'s' if config_path else ''}: "
            f"{', '.join(sorted(models))}"
        )
    return ModelChoice(model, config, Path(config_path) if config_path is not None else None)


def largest_slot(models: dict[str, DeviceModelConfig]) -> DeviceModelConfig:
    """The model with the largest slot (the first such, by name)."""
    return max(sorted(models.values(), key=lambda m: m.name), key=lambda m: m.slot_capacity_bytes)
