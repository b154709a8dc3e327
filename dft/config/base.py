"""Base class for every config section: unknown keys fail, values are checked on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def check_shares(field: str, shares: dict[str, float]) -> None:
    """Target shares of one attribute: each >= 0, summing to 1 (within 1e-6); errors name the field."""
    for group, share in shares.items():
        if not share >= 0:
            raise ValueError(f"{field}.{group}: a share must be >= 0; got {share!r}")
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{field}: shares must sum to 1 (within 1e-6); got {total:.6g} from {shares!r}")
