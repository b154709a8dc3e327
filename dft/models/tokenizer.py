"""An offline CLIP tokenizer for the built-in tiny models.

Real models ship their own tokenizer files. The tiny ones are built here, so their tokenizer must
be too: a byte-level BPE vocabulary (every byte is a token, so any text encodes) plus merges that
make each word of our vocabularies a single token, so that a small text encoder sees one token per
attribute word instead of a run of characters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2/CLIP convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _words(texts: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for text in texts:
        for word in re.findall(r"[a-z]+", text.lower()):
            found.add(word)
    return sorted(found)


def build_vocab(texts: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merge list covering every byte plus each word of ``texts`` as one token."""
    alphabet = byte_alphabet()
    tokens: list[str] = list(alphabet) + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    seen_merges: set[tuple[str, str]] = set()
    known = set(tokens)
    for word in _words(texts):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        # Merge left to right: ((w o) r) d</w>; each prefix becomes a token of its own.
        current = symbols[0]
        for nxt in symbols[1:]:
            pair = (current, nxt)
            merged = current + nxt
            if pair not in seen_merges:
                seen_merges.add(pair)
                merges.append(pair)
            if merged not in known:
                known.add(merged)
                tokens.append(merged)
            current = merged
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_tokenizer(folder: str | Path, texts: Iterable[str], max_length: int = 77) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and configs so ``CLIPTokenizer.from_pretrained`` loads it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(texts)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": max_length,
                "bos_token": BOS,
                "eos_token": EOS,
                "unk_token": EOS,
                "pad_token": EOS,
                "do_lower_case": True,
            }
        )
    )
    return folder
