"""Small learnable synthetic shards in the generation stage's layout, for the training tests.

Each image is a solid colour with a square whose colour depends on the prompt's gender word, so a
UNet can learn the mapping from caption to image in a few steps."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dft.generate.shards import write_webdataset_shard
from dft.schema import SAMPLE_SCHEMA, sample_key

COLOURS = {"man": (200, 40, 40), "woman": (40, 40, 200)}
BACKGROUNDS = {"doctor": (230, 230, 230), "nurse": (30, 30, 30)}
ETHNICITIES = ["Black", "White", "East Asian", "Hispanic"]


def _png(gender: str, profession: str, size: int, jitter: int) -> bytes:
    from PIL import Image

    img = np.zeros((size, size, 3), np.uint8)
    img[:] = BACKGROUNDS[profession]
    a, b = size // 4 + jitter, 3 * size // 4 + jitter
    img[a:b, a:b] = COLOURS[gender]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def rows(n: int, size: int = 32) -> list[dict]:
    out = []
    for i in range(n):
        gender = ("man", "woman")[i % 2]
        profession = ("doctor", "nurse")[(i // 2) % 2]
        eth = ETHNICITIES[(i // 4) % len(ETHNICITIES)]
        pid = f"p{i // 4:04d}"
        seed = 1000 + i
        row = {
            "prompt_id": pid, "image_index": i % 4, "seed": seed,
            "prompt": f"a photo of a {eth} {gender} {profession}",
            "neutral_prompt": f"a photo of a {profession}", "template": "a photo of a {ethnicity} {gender} {profession}",
            "prompt_set": "diverse", "ethnicity": eth, "gender": gender, "age": None, "profession": profession,
            "model": "tiny-sd", "settings_hash": "test", "image_format": "png", "width": size, "height": size,
            "image": _png(gender, profession, size, jitter=(i // 8) % 3 - 1),
        }
        row["key"] = sample_key(pid, row["image_index"], seed, row["model"], row["settings_hash"])
        out.append(row)
    return out


def write_shards(
    out_dir: str, n: int = 32, shard_size: int = 16, size: int = 32, formats=("parquet", "webdataset")
) -> list[dict]:
    """Write RUN/synthetic-style shards (parquet/, webdataset/, manifest.json last) into a local folder."""
    all_rows = rows(n, size)
    shards = []
    for index, start in enumerate(range(0, n, shard_size)):
        chunk = all_rows[start:start + shard_size]
        files = {}
        if "parquet" in formats:
            rel = f"parquet/shard-{index:05d}.parquet"
            os.makedirs(os.path.join(out_dir, "parquet"), exist_ok=True)
            table = pa.Table.from_pylist(chunk, schema=SAMPLE_SCHEMA)
            pq.write_table(table, os.path.join(out_dir, rel))
            files["parquet"] = {"path": rel}
        if "webdataset" in formats:
            rel = f"webdataset/shard-{index:05d}.tar"
            os.makedirs(os.path.join(out_dir, "webdataset"), exist_ok=True)
            write_webdataset_shard(os.path.join(out_dir, rel), pa.Table.from_pylist(chunk, schema=SAMPLE_SCHEMA))
            files["webdataset"] = {"path": rel}
        shards.append({"index": index, "images": len(chunk), "files": files})
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"shards": shards}, f)
    return all_rows
