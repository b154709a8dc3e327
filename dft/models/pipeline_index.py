"""What a diffusers pipeline folder's model_index.json says about its components (no weights loaded)."""

from __future__ import annotations

import json
import os


def read_index(folder: str) -> dict:
    with open(os.path.join(folder, "model_index.json")) as f:
        return json.load(f)


def component_class(folder: str, name: str) -> str:
    """The class name of component ``name`` (e.g. "T5EncoderModel" for text_encoder_3)."""
    entry = read_index(folder).get(name)
    if not entry or entry[1] is None:
        raise KeyError(f"{folder}/model_index.json has no component {name!r}")
    return entry[1]
