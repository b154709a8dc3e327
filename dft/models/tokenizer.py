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


def _encode(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merge the lowest-ranked adjacent pair."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), 1 << 62), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        rank, _ = min(pairs)
        if rank == 1 << 62:
            break
        a_b = [p for p in pairs if p[0] == rank]
        out, i = [], 0
        first = symbols[a_b[0][1]], symbols[a_b[0][1] + 1]
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == first:
                out.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def build_vocab(texts: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merge list covering every byte plus each word of ``texts`` as one token.

    Merges are added word by word, after simulating BPE with the merges so far: a word's new merges
    join the pieces it would otherwise end with, and rank after every earlier merge, so they cannot
    change how an earlier word encodes."""
    alphabet = byte_alphabet()
    tokens: list[str] = list(alphabet) + [c + "</w>" for c in alphabet]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    words = _words(texts)
    for word in words:
        pieces = _encode(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        current = pieces[0]
        for nxt in pieces[1:]:
            pair = (current, nxt)
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            current = current + nxt
            if current not in known:
                known.add(current)
                tokens.append(current)
    for word in words:  # the construction guarantees this; check it rather than trust it
        if len(_encode(list(word[:-1]) + [word[-1] + "</w>"], ranks)) != 1:
            raise AssertionError(f"tokenizer construction left {word!r} in several tokens")
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


T5_PAD, T5_EOS, T5_UNK, T5_SPACE = "<pad>", "</s>", "<unk>", "\u2581"


def write_t5_tokenizer(folder: str | Path, texts: Iterable[str], max_length: int = 32) -> Path:
    """A tiny T5 (SentencePiece-unigram) tokenizer, saved with ``save_pretrained``.

    transformers 5's ``T5Tokenizer`` is the ``tokenizers``-backed unigram model; built from a vocabulary
    of scored pieces it needs no ``spiece.model`` and no download. Each word of ``texts`` (as written and
    lower-cased) is one piece, so words outrank any spelling out; single characters stay as a fallback."""
    from transformers import T5Tokenizer

    words: set[str] = set()
    for text in texts:
        for word in re.findall(r"[A-Za-z]+", text):
            words.update((word, word.lower()))
    pieces: dict[str, float] = {T5_SPACE: -2.0}
    for w in sorted(words):
        pieces[T5_SPACE + w] = -1.0
    for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        pieces.setdefault(c, -10.0)
        pieces.setdefault(T5_SPACE + c, -10.0)
    vocab = [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0)] + sorted(pieces.items())
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)
    folder = Path(folder)
    tok.save_pretrained(str(folder))
    return folder
