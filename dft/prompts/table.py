"""The combinatorial prompt table: the product of the vocabularies, filtered and sub-sampled
deterministically, expanded to one row per image with a stable id and its own seed.

Combinations are few (tens of thousands) and held as integer index arrays; the expansion to images
(up to millions of rows) is streamed in chunks of ``chunk_rows`` so memory stays flat.

With ``prompts.targets`` the images per combination are no longer all ``images_per_prompt``: the
same total is shared out by weights fitted so that each targeted attribute's share of rows follows
its target (raking, i.e. iterative proportional fitting), rounded by largest remainders.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import Counter
from typing import Iterator

import numpy as np
import pyarrow as pa

from dft.errors import InputError
from dft.prompts.config import PromptsConfig
from dft.prompts.vocab import Vocabulary, load_vocabulary
from dft.schema import PROMPT_SCHEMA

log = logging.getLogger(__name__)

ORDER = ("ethnicity", "gender", "age", "profession")


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def prompt_id(fields: dict[str, str]) -> str:
    """Stable id of a combination: a hash of its fields (never a row number)."""
    blob = "|".join(f"{k}={fields.get(k) or ''}" for k in sorted(fields))
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def image_seed(pid: str, image_index: int, salt: int) -> int:
    """Each image's own seed, in [0, 2**63): depends only on the combination, index and salt."""
    return _h64(f"{pid}/{image_index}/{salt}") >> 1


def _filtered_values(vocab: Vocabulary, cfg: PromptsConfig) -> dict[str, list[str]]:
    out = {}
    for attr in ORDER:
        values = vocab.values[attr]
        inc, exc = cfg.include.get(attr), cfg.exclude.get(attr, [])
        for v in (inc or []) + exc:
            if v not in values:
                raise InputError(
                    f"prompts.{'include' if inc and v in inc else 'exclude'}.{attr}: {v!r} is not in "
                    f"vocabulary {vocab.name!r} (first values: {values[:5]})"
                )
        if inc:
            values = [v for v in values if v in inc]
        values = [v for v in values if v not in exc]
        if not values:
            raise InputError(f"prompts: no {attr} values left after include/exclude")
        out[attr] = values
    return out


def article(text: str) -> str:
    return "an" if text[:1].lower() in "aeiou" else "a"


def render(template: str, fields: dict[str, str]) -> str:
    text = template.format(**fields)
    # "a elderly" -> "an elderly": fix the article in front of each filled field.
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "an") and words[i + 1]:
            words[i] = article(words[i + 1])
    return " ".join(words)


class PromptTable:
    """The diverse prompt table of a config; iterate it as Arrow record batches."""

    def __init__(self, cfg: PromptsConfig, vocab: Vocabulary | None = None):
        self.cfg = cfg
        self.vocab = vocab or load_vocabulary(cfg.vocab)
        self.values = _filtered_values(self.vocab, cfg)
        self.combos = self._combinations()
        self.images = self._images_per_combination()

    def _combinations(self) -> list[tuple[str, dict[str, str], str]]:
        """(prompt_id, fields, template) for each kept combination, in a canonical order."""
        cfg = self.cfg
        templates = self.vocab.templates
        out = []
        for values in itertools.product(*(self.values[a] for a in ORDER)):
            fields = dict(zip(ORDER, values))
            if cfg.template_policy == "all":
                chosen = templates
            else:
                chosen = [templates[_h64("template|" + prompt_id(fields)) % len(templates)]]
            for t in chosen:
                key = dict(fields, template=t)
                out.append((prompt_id(key), fields, t))
        if cfg.sample_fraction < 1.0:
            cut = int(cfg.sample_fraction * 2**64)
            out = [c for c in out if _h64("sample|" + c[0]) < cut]
        if cfg.max_combinations is not None and len(out) > cfg.max_combinations:
            out = sorted(out, key=lambda c: _h64("sample|" + c[0]))[: cfg.max_combinations]
        out.sort(key=lambda c: c[0])
        return out

    def _images_per_combination(self) -> list[int]:
        """Images of each combination: ``images_per_prompt``, or weighted by ``prompts.targets``."""
        cfg = self.cfg
        n = len(self.combos)
        if not cfg.targets or n == 0:
            return [cfg.images_per_prompt] * n
        for attr, shares in cfg.targets.items():
            unknown = sorted(set(shares) - set(self.values[attr]))
            if unknown:
                raise InputError(
                    f"prompts.targets.{attr}: {unknown} are not values of {attr} in vocabulary {self.vocab.name!r} "
                    f"after include/exclude (values: {self.values[attr][:8]})"
                )
        w = np.ones(n)
        codes = {a: np.array([self.values[a].index(f[a]) for _, f, _ in self.combos]) for a in cfg.targets}
        goal = {a: np.array([cfg.targets[a].get(v, 0.0) for v in self.values[a]]) for a in cfg.targets}
        for _ in range(200):  # raking: match each attribute's weighted shares to its target in turn
            for a, c in codes.items():
                have = np.bincount(c, weights=w, minlength=len(goal[a])) / max(w.sum(), 1e-300)
                with np.errstate(divide="ignore", invalid="ignore"):
                    w = w * np.where(have > 0, goal[a] / np.where(have > 0, have, 1.0), 0.0)[c]
            if all(np.allclose(np.bincount(c, weights=w, minlength=len(goal[a])) / max(w.sum(), 1e-300), goal[a], atol=1e-9)
                   for a, c in codes.items()):
                break
        if w.sum() <= 0:
            raise InputError(f"prompts.targets: no combination left with a positive weight ({dict(cfg.targets)})")
        total = n * cfg.images_per_prompt
        exact = total * w / w.sum()
        out = np.floor(exact).astype(np.int64)
        short = total - int(out.sum())
        order = sorted(range(n), key=lambda i: (-(exact[i] - out[i]), self.combos[i][0]))  # ties by id: stable
        for i in order[:short]:
            out[i] += 1
        return out.tolist()

    @property
    def num_rows(self) -> int:
        return int(sum(self.images))

    def batches(self) -> Iterator[pa.RecordBatch]:
        per = max(1, self.cfg.images_per_prompt)
        chunk = max(1, self.cfg.chunk_rows // per)
        for start in range(0, len(self.combos), chunk):
            part = self.combos[start : start + chunk]
            cols: dict[str, list] = {f.name: [] for f in PROMPT_SCHEMA}
            for (pid, fields, template), n_img in zip(part, self.images[start : start + chunk]):
                prompt = render(template, fields)
                neutral = render("a photo of a {profession}", {"profession": fields["profession"]})
                for i in range(n_img):
                    cols["prompt_id"].append(pid)
                    cols["image_index"].append(i)
                    cols["seed"].append(image_seed(pid, i, self.cfg.seed))
                    cols["prompt"].append(prompt)
                    cols["neutral_prompt"].append(neutral)
                    cols["template"].append(template)
                    cols["prompt_set"].append("diverse")
                    for a in ORDER:
                        cols[a].append(fields[a])
            yield pa.RecordBatch.from_pydict(cols, schema=PROMPT_SCHEMA)

    def counts(self) -> dict[str, Counter]:
        out: dict[str, Counter] = {a: Counter() for a in ORDER}
        for (_, fields, _), n in zip(self.combos, self.images):
            for a in ORDER:
                out[a][fields[a]] += n
        return out


def neutral_table(
    cfg: PromptsConfig, images_per_prompt: int | None = None, seed_offset: int = 0, vocab: Vocabulary | None = None
) -> pa.Table:
    """The neutral evaluation prompts ("a photo of a doctor", "a photo of a person", ...)."""
    vocab = vocab or load_vocabulary(cfg.vocab)
    professions = _filtered_values(vocab, cfg)["profession"]
    if cfg.neutral_max_professions:
        professions = sorted(professions)[: cfg.neutral_max_professions]
    n = images_per_prompt or cfg.neutral_images_per_prompt
    cols: dict[str, list] = {f.name: [] for f in PROMPT_SCHEMA}
    for template in vocab.neutral:
        subjects = professions if "{profession}" in template else [None]
        for prof in subjects:
            text = render(template, {"profession": prof}) if prof else template
            pid = prompt_id({"neutral": text})
            for i in range(n):
                cols["prompt_id"].append(pid)
                cols["image_index"].append(i)
                cols["seed"].append(image_seed(pid, i, cfg.seed + seed_offset))
                cols["prompt"].append(text)
                cols["neutral_prompt"].append(text)
                cols["template"].append(template)
                cols["prompt_set"].append("neutral")
                cols["ethnicity"].append(None)
                cols["gender"].append(None)
                cols["age"].append(None)
                cols["profession"].append(prof)
    return pa.Table.from_pydict(cols, schema=PROMPT_SCHEMA)


def write_table(batches: Iterator[pa.RecordBatch], folder_uri: str, rows_per_file: int = 262_144) -> list[str]:
    """Stream record batches into ``part-NNNNN.parquet`` files of about ``rows_per_file`` rows (so
    Ray Data reads them in parallel). Batches go to disk as they come; each file appears whole."""
    import contextlib

    import pyarrow.parquet as pq

    from dft import storage

    files: list[str] = []
    batches = iter(batches)
    batch = next(batches, None)
    while batch is not None:
        uri = storage.join(folder_uri, f"part-{len(files):05d}.parquet")
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(storage.atomic_local_path(uri))
            writer = stack.enter_context(pq.ParquetWriter(tmp, PROMPT_SCHEMA, compression="zstd"))
            rows = 0
            while batch is not None and (rows == 0 or rows + batch.num_rows <= rows_per_file):
                writer.write_batch(batch)
                rows += batch.num_rows
                batch = next(batches, None)
        files.append(uri)
    return files


def seeds_array(table: pa.Table) -> np.ndarray:
    return table.column("seed").to_numpy()
