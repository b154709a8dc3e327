"""The one declared schema of a sample, shared by the Parquet writer, the WebDataset writer and
every reader. A prompt row (the table) becomes a sample (the table's columns plus the image)."""

from __future__ import annotations

import hashlib

import pyarrow as pa

ATTRIBUTE_COLUMNS = ("ethnicity", "gender", "age", "profession")

# One row of the prompt table: one image to make.
PROMPT_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),  # hash of the combination's fields
        pa.field("image_index", pa.int32(), nullable=False),  # 0..images_per_prompt-1
        pa.field("seed", pa.int64(), nullable=False),  # this image's own seed
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("neutral_prompt", pa.string(), nullable=False),  # the same subject, attributes removed
        pa.field("template", pa.string(), nullable=False),
        pa.field("prompt_set", pa.string(), nullable=False),  # "diverse" | "neutral" | "explicit"
        pa.field("ethnicity", pa.string()),
        pa.field("gender", pa.string()),
        pa.field("age", pa.string()),
        pa.field("profession", pa.string()),
    ]
)

# A generated sample: the prompt row, the model and settings, and the encoded image.
SAMPLE_SCHEMA = pa.schema(
    [pa.field("key", pa.string(), nullable=False)]
    + list(PROMPT_SCHEMA)
    + [
        pa.field("model", pa.string(), nullable=False),
        pa.field("settings_hash", pa.string(), nullable=False),
        pa.field("image_format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
    ]
)

METADATA_COLUMNS = [f.name for f in SAMPLE_SCHEMA if f.name != "image"]


def sample_key(prompt_id: str, image_index: int, seed: int, model: str, settings_hash: str) -> str:
    """The stable id of an image: derived from its content's causes, never random.

    WebDataset treats dots in keys as extension separators, so the key is plain hex."""
    blob = f"{prompt_id}|{image_index}|{seed}|{model}|{settings_hash}".encode()
    return hashlib.sha256(blob).hexdigest()[:24]
