"""Vocabularies: shipped data files (``default``, ``world``) or a folder URI with the same files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dft import storage
from dft.errors import InputError

FILES = {
    "ethnicity": "ethnicities.txt",
    "gender": "genders.txt",
    "age": "age_groups.txt",
    "profession": "professions.txt",
}
SHIPPED = {"default": "vocab", "world": "vocab_world"}


@dataclass(frozen=True)
class Vocabulary:
    name: str
    values: dict[str, list[str]]  # attribute -> values, in file order
    templates: list[str]
    neutral: list[str]


def _lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def load_vocabulary(name: str) -> Vocabulary:
    if name in SHIPPED:
        folder = str(Path(__file__).resolve().parent / SHIPPED[name])
    else:
        folder = name
    if not storage.isdir(folder):
        raise InputError(
            f"prompts.vocab: {name!r} is neither a shipped vocabulary ({', '.join(SHIPPED)}) nor a folder"
        )

    def read(fname: str) -> list[str]:
        uri = storage.join(folder, fname)
        if not storage.exists(uri):
            raise InputError(f"prompts.vocab: {name!r} has no {fname}")
        values = _lines(storage.read_text(uri))
        if not values:
            raise InputError(f"prompts.vocab: {uri} lists no values")
        if len(set(values)) != len(values):
            dup = sorted({v for v in values if values.count(v) > 1})
            raise InputError(f"prompts.vocab: {uri} repeats {dup}")
        return values

    values = {attr: read(fname) for attr, fname in FILES.items()}
    templates = read("templates.txt")
    for t in templates:
        for field in ("{age}", "{ethnicity}", "{gender}", "{profession}"):
            if field not in t:
                raise InputError(f"prompts.vocab: template {t!r} lacks {field}")
    return Vocabulary(name=name, values=values, templates=templates, neutral=read("neutral.txt"))
