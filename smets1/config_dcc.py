"""Config of the DCC side: images, campaigns, the scheduler and the DCO."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from smets1.config_types import U16, U32, Eui64, Number, Strict


class ImageConfig(Strict):
    name: str
    manufacturer_code: U16
    image_type: U16
    file_version: U32
    #: Size of the whole OTA file; the body is padded with seeded bytes to fit.
    size_bytes: Number | None = Field(None, gt=0)
    #: Or an existing OTA file, used as it is.
    file: Path | None = None
    hardware_versions: tuple[U16, U16] | None = None
    #: PEM private key; default: the demo key of the manufacturer code.
    key: Path | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> ImageConfig:
        if (self.size_bytes is None) == (self.file is None):
            raise ValueError("give exactly one of size_bytes or file")
        return self


class DeviceSelection(Strict):
    """Which devices a campaign targets: every device of a model, or the first `count`."""

    model: str
    count: int | None = Field(None, gt=0)


class CampaignConfig(Strict):
    name: str
    user: Eui64
    image: str
    devices: DeviceSelection
    #: Seconds after the start of the run at which the User submits.
    submit_after_seconds: float = Field(0.0, ge=0)


class SchedulerConfig(Strict):
    large_image_threshold_bytes: int = Field(750_000, gt=0)
    large_images_per_day: int = Field(12_000, gt=0)


class DcoConfig(Strict):
    #: Consecutive blocks sent in one frame.
    run_blocks: int = Field(64, gt=0, le=4096)
    max_concurrent_transfers: int = Field(5_000, gt=0)
    #: How long the DCO waits for a device to answer a query before asking again.
    reply_timeout_seconds: float = Field(7_200.0, gt=0)
    max_rounds: int = Field(8, gt=0)
