"""Shared base of the strict, frozen pydantic models that describe profiles and labs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

SCHEMA_VERSION = 1

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A name that other entries refer to: a letter, then letters, digits, ``_ . -``."""

_NAME_RE = re.compile(NAME_PATTERN)


def is_name(text: str) -> bool:
    return bool(_NAME_RE.match(text))


class StrictModel(BaseModel):
    """Unknown keys are errors, values are not coerced across types, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
