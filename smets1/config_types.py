"""Field types shared by the config models: numbers in decimal or 0x hex, EUI-64 ids."""

from __future__ import annotations

from pathlib import Path
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


def _file_name(value: Any) -> Any:
    if isinstance(value, str) and ("\x00" in value or not value):
        raise ValueError("expected a file name (not empty, no NUL character)")
    return value


Number = Annotated[int, BeforeValidator(_int_or_hex)]
U16 = Annotated[int, BeforeValidator(_int_or_hex), Field(ge=0, le=0xFFFF)]
U32 = Annotated[int, BeforeValidator(_int_or_hex), Field(ge=0, le=0xFFFF_FFFF)]
Eui64 = Annotated[int, BeforeValidator(_eui64), Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]
#: A path in a config: a name the operating system can open.
FilePath = Annotated[Path, BeforeValidator(_file_name)]


class FieldError(ValueError):
    """A check across fields that finds one field wrong: `loc` is that field's path from
    the model that raised it, so the error is reported at the field (and its line in the
    file), not at the model."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{'.'.join(str(p) for p in loc)}: {message}")
        self.loc = loc
        self.message = message


class Strict(BaseModel):
    """Every config model: unknown keys are errors, values are frozen, and a float is a
    finite number (`.inf` or `.nan` in YAML is an error, not a trap for the scheduler)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
