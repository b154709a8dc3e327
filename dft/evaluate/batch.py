"""Helpers every reader uses on a Ray Data numpy batch: decode its images, build its object columns."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def decode_batch(images: np.ndarray) -> tuple[list[Any], list[str | None]]:
    """PIL RGB images (None where decoding failed) and the failure reason per image."""
    from PIL import Image

    out, reasons = [], []
    for data in images:
        try:
            with Image.open(io.BytesIO(bytes(data))) as im:
                out.append(im.convert("RGB"))
            reasons.append(None)
        except Exception:  # one broken file must not fail the batch: it is unreadable
            out.append(None)
            reasons.append("decode_error")
    return out, reasons


def object_column(values) -> np.ndarray:
    col = np.empty(len(values), dtype=object)
    col[:] = list(values)
    return col
