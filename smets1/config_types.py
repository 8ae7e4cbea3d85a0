"""Field types shared by the config models: numbers in decimal or 0x hex, EUI-64 ids."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from smets1.eui64 import parse_eui64


def _int_or_hex(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(
                f"expected a whole number (decimal or 0x hex), got {value!r}"
            ) from None
    return value


def _eui64(value: Any) -> Any:
    if isinstance(value, str):
        return parse_eui64(value)
    return value


Number = Annotated[int, BeforeValidator(_int_or_hex)]
U16 = Annotated[int, BeforeValidator(_int_or_hex), Field(ge=0, le=0xFFFF)]
U32 = Annotated[int, BeforeValidator(_int_or_hex), Field(ge=0, le=0xFFFF_FFFF)]
Eui64 = Annotated[int, BeforeValidator(_eui64), Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]


class Strict(BaseModel):
    """Every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
