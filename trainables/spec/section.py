"""The base of every spec section: unknown keys refused, values taken as YAML typed them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # strict: YAML has already typed every value, so `true` where a number is expected (or
    # "3" where an int is) is a mistake to name, not to convert (lax pydantic reads true as 1).
    model_config = ConfigDict(extra="forbid", strict=True)
