"""The biased corpus the demo world's base model learns from.

Two kinds of rows, both rendered with their true attributes known:
- *explicit* rows: attributes drawn uniformly from the world's vocabularies, captioned with a
  template that names them all ("a photo of an adult dark-skinned woman working as a nurse"), so the
  model learns what each word looks like;
- *neutral* rows: captioned with one of several neutral phrasings that name the profession only
  ("a photo of a {profession}", "a portrait of a {profession}", "a candid photo of a {profession}"),
  with images drawn from one skewed distribution, the same for every phrasing: ``light_share`` of
  light-skinned faces (the rest split evenly), and per profession ``gender_share`` of its stereotyped
  gender. This is the bias the pipeline must remove. The fine-tuning's neutral caption (attribute
  dropout) is the first phrasing only, so the others tell whether the change reaches beyond the
  string that was trained.

Written in the generation stage's layout (SAMPLE_SCHEMA Parquet and WebDataset shards, a manifest), so
the fine-tuning stage reads it like any synthetic set, plus ``truth.parquet`` with the
true attributes and painted Monk tone of every row (neutral rows name no attributes in their prompt
columns, as in the prompt table's neutral set).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dft import storage
from dft.prompts.table import image_seed, prompt_id, render
from dft.prompts.vocab import load_vocabulary
from dft.schema import SAMPLE_SCHEMA, sample_key
from dft.world import attributes as A
from dft.world.render import Person, render_batch

log = logging.getLogger(__name__)

CORPUS_MODEL = "dft-world-renderer"
NEUTRAL_TEMPLATE = "a photo of a {profession}"  # the fine-tuning's neutral caption (dft.prompts.table)
# Every neutral phrasing of the world (dft/prompts/vocab_world/neutral.txt lists the same, in this order):
# the trained one first, then the held-out ones the fine-tuning never captions an image with.
NEUTRAL_TEMPLATES = (NEUTRAL_TEMPLATE, "a portrait of a {profession}", "a candid photo of a {profession}")


@dataclass(frozen=True)
class CorpusConfig:
    size: int = 4000
    explicit_share: float = 0.5
    light_share: float = 0.9  # neutral rows: share of light-skinned faces
    gender_share: float = 0.9  # neutral rows: share of the profession's stereotyped gender
    stereotype: dict = field(
        default_factory=lambda: {"doctor": "man", "nurse": "woman", "engineer": "man", "teacher": "woman"}
    )
    neutral_templates: tuple[str, ...] = NEUTRAL_TEMPLATES
    seed: int = 0
    shard_size: int = 1000

    def __post_init__(self):
        if not self.neutral_templates or any("{profession}" not in t for t in self.neutral_templates):
            raise ValueError(f"world corpus: neutral_templates must each contain {{profession}}, got {self.neutral_templates!r}")
        if not 0 <= self.explicit_share <= 1 or not 0 <= self.light_share <= 1 or not 0 <= self.gender_share <= 1:
            raise ValueError("world corpus: shares must lie in [0, 1]")
        if set(self.stereotype) != set(A.PROFESSIONS) or not set(self.stereotype.values()) <= set(A.GENDERS):
            raise ValueError(f"world corpus: stereotype must map every profession {tuple(A.PROFESSIONS)} to a gender")

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class CorpusRows:
    people: list[Person]
    captions: list[str]
    templates: list[str]
    explicit: np.ndarray  # bool per row
    seeds: np.ndarray  # render seeds


def plan_corpus(cfg: CorpusConfig) -> CorpusRows:
    """Who is in each image and how it is captioned (no pixels yet)."""
    vocab = load_vocabulary("world")
    rng = np.random.default_rng(cfg.seed)
    professions = list(A.PROFESSIONS)
    n_explicit = int(round(cfg.size * cfg.explicit_share))
    people, captions, templates = [], [], []
    explicit = np.zeros(cfg.size, bool)
    explicit[:n_explicit] = True
    others = [e for e in A.ETHNICITIES if e != "light-skinned"]
    # The phrasing of each neutral row comes from a stream of its own, so the people and pixels of the
    # corpus do not depend on how many phrasings there are.
    phrasing = np.random.default_rng([cfg.seed, 1]).integers(len(cfg.neutral_templates), size=cfg.size)
    for i in range(cfg.size):
        prof = professions[int(rng.integers(len(professions)))]
        if explicit[i]:
            eth = A.ETHNICITIES[int(rng.integers(len(A.ETHNICITIES)))]
            gender = A.GENDERS[int(rng.integers(len(A.GENDERS)))]
            template = vocab.templates[int(rng.integers(len(vocab.templates)))]
            person = Person(eth, gender, prof)
            caption = render(template, {"age": person.age, "ethnicity": eth, "gender": gender, "profession": prof})
        else:
            eth = "light-skinned" if rng.random() < cfg.light_share else others[int(rng.integers(len(others)))]
            stereo = cfg.stereotype[prof]
            gender = stereo if rng.random() < cfg.gender_share else next(g for g in A.GENDERS if g != stereo)
            template = cfg.neutral_templates[int(phrasing[i])]
            person = Person(eth, gender, prof)
            caption = render(template, {"profession": prof})
        people.append(person)
        captions.append(caption)
        templates.append(template)
    seeds = rng.integers(0, 2**62, size=cfg.size)
    return CorpusRows(people, captions, templates, explicit, seeds)


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def build_corpus(cfg: CorpusConfig, out_uri: str) -> dict:
    """Render the corpus into ``out_uri`` in the generation stage's layout (SAMPLE_SCHEMA Parquet and
    WebDataset shards, manifest.json) plus ``truth.parquet``; a ``_SUCCESS`` marker is written last.
    Returns counts."""
    done = storage.join(out_uri, "_SUCCESS")
    if storage.exists(done) and storage.read_json(done).get("hash") == cfg.hash():
        return storage.read_json(done)["counts"]
    rows = plan_corpus(cfg)
    images, tones = render_batch(rows.people, rows.seeds)
    settings = cfg.hash()
    cols: dict[str, list] = {f.name: [] for f in SAMPLE_SCHEMA}
    truth: dict[str, list] = {"key": [], "explicit": [], "ethnicity": [], "gender": [], "profession": [], "age": [], "mst": []}
    for i, (p, caption, template) in enumerate(zip(rows.people, rows.captions, rows.templates)):
        is_explicit = bool(rows.explicit[i])
        fields = (
            {"ethnicity": p.ethnicity, "gender": p.gender, "age": p.age, "profession": p.profession}
            if is_explicit
            else {"ethnicity": None, "gender": None, "age": None, "profession": p.profession}
        )
        pid = prompt_id(dict({k: v or "" for k, v in fields.items()}, template=template))
        seed = image_seed(pid, i, cfg.seed)
        key = sample_key(pid, i, seed, CORPUS_MODEL, settings)
        row = {
            "key": key,
            "prompt_id": pid,
            "image_index": i,
            "seed": seed,
            "prompt": caption,
            "neutral_prompt": render(NEUTRAL_TEMPLATE, {"profession": p.profession}),
            "template": template,
            "prompt_set": "diverse" if is_explicit else "neutral",
            **fields,
            "model": CORPUS_MODEL,
            "settings_hash": settings,
            "image_format": "png",
            "width": A.SIZE,
            "height": A.SIZE,
            "image": png_bytes(images[i]),
        }
        for k, v in row.items():
            cols[k].append(v)
        for k, v in (("key", key), ("explicit", is_explicit), ("ethnicity", p.ethnicity), ("gender", p.gender),
                     ("profession", p.profession), ("age", p.age), ("mst", int(tones[i]))):
            truth[k].append(v)
    table = pa.Table.from_pydict(cols, schema=SAMPLE_SCHEMA)
    write_shards(table, out_uri, cfg.shard_size, settings)
    with storage.atomic_local_path(storage.join(out_uri, "truth.parquet")) as tmp:
        pq.write_table(pa.Table.from_pydict(truth), tmp)
    counts = corpus_counts(rows)
    storage.write_json(done, {"hash": settings, "config": asdict(cfg), "counts": counts})
    log.info("world corpus: %d images (%d explicit) at %s", cfg.size, int(rows.explicit.sum()), out_uri)
    return counts


def write_shards(table: pa.Table, out_uri: str, shard_size: int, settings: str) -> dict:
    """The generation stage's layout (``parquet/shard-NNNNN.parquet``, ``webdataset/shard-NNNNN.tar``,
    ``manifest.json`` last), so the fine-tuning stage reads the corpus like any synthetic set."""
    from dft.generate.shards import shard_relpath, write_webdataset_shard

    for fmt in ("parquet", "webdataset"):
        storage.remove(storage.join(out_uri, fmt), recursive=True)
    shards = []
    for n, start in enumerate(range(0, table.num_rows, shard_size)):
        part = table.slice(start, shard_size)
        files = {}
        for fmt in ("parquet", "webdataset"):
            rel = shard_relpath(n, fmt)
            with storage.atomic_local_path(storage.join(out_uri, *rel.split("/"))) as tmp:
                if fmt == "parquet":
                    pq.write_table(part, tmp, compression="zstd")
                else:
                    write_webdataset_shard(tmp, part)
                with open(tmp, "rb") as f:
                    data = f.read()
            files[fmt] = {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        stop = start + part.num_rows
        shards.append({"index": n, "start": start, "stop": stop, "rows": part.num_rows, "images": part.num_rows,
                       "files": files, "failures": 0})
    manifest = {
        "version": 1, "rows": table.num_rows, "images": table.num_rows, "keys": table.num_rows, "failures": 0,
        "num_shards": len(shards), "shard_size": shard_size, "formats": ["parquet", "webdataset"],
        "bytes": sum(f["bytes"] for s in shards for f in s["files"].values()), "model": CORPUS_MODEL,
        "settings": {"world_corpus": settings}, "settings_hash": settings, "shards": shards,
    }
    storage.write_json(storage.join(out_uri, "manifest.json"), manifest)
    return manifest


def corpus_counts(rows: CorpusRows) -> dict:
    """Shares of the neutral rows per profession: the bias put into the corpus."""
    out: dict = {"images": len(rows.people), "explicit": int(rows.explicit.sum()), "neutral": {}}
    neutral = [t for t, e in zip(rows.templates, rows.explicit) if not e]
    out["neutral_phrasings"] = {t: neutral.count(t) for t in sorted(set(neutral))}
    for prof in A.PROFESSIONS:
        sel = [p for p, e in zip(rows.people, rows.explicit) if not e and p.profession == prof]
        if sel:
            out["neutral"][prof] = {
                "n": len(sel),
                "light_share": round(sum(p.ethnicity == "light-skinned" for p in sel) / len(sel), 3),
                "man_share": round(sum(p.gender == "man" for p in sel) / len(sel), 3),
            }
    return out


def load_corpus_images(out_uri: str) -> tuple[np.ndarray, pa.Table]:
    """All images [N, 32, 32, 3] and the metadata table, in row order (for the base model's loops)."""
    from dft.generate.shards import shard_files

    files = shard_files(out_uri, "parquet")
    table = pa.concat_tables([pq.read_table(storage.normalize(f)) for f in files])
    images = np.stack([decode_png(b) for b in table.column("image").to_pylist()])
    return images, table.drop(["image"])
