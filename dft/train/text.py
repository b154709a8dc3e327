"""Caption conditioning per model family: tokenize with every tokenizer, encode with every text encoder.

Pure torch/transformers. The same functions tokenize in the data pipeline, encode in the training
step, and encode once up front when ``train.precompute_text_embeddings`` is set, so the three paths
cannot drift apart. What each family feeds its denoiser, as diffusers' pipelines and recipes do:

- sd: CLIP's last hidden state;
- sdxl: the penultimate hidden states of CLIP-L and CLIP-G side by side, CLIP-G's projected pooled
  embedding (train_text_to_image_sdxl.py ``encode_prompt``);
- sd3: the same two CLIP hidden states side by side, zero-padded to T5's width, then T5's tokens after
  them along the sequence; both CLIPs' pooled embeddings side by side;
- flux: T5's tokens, CLIP-L's pooled output.

Column names: ``ids`` (first tokenizer), ``ids_2``, ``ids_3``; precomputed: ``embeds`` and ``pooled``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from dft.models.families import Family

ID_COLUMNS = ("ids", "ids_2", "ids_3")


def id_columns(family: Family) -> tuple[str, ...]:
    return ID_COLUMNS[: len(family.tokenizers)]


def sequence_lengths(family: Family, tokenizers, max_sequence_length: int | None) -> list[int]:
    """Tokens per caption for each tokenizer: CLIP's model_max_length (77); T5 as the pipeline does it
    (the configured length, else the pipeline default capped at the tokenizer's model_max_length)."""
    out = []
    for i, tok in enumerate(tokenizers):
        if i == family.t5_index:
            out.append(int(max_sequence_length or min(family.default_max_sequence_length, tok.model_max_length)))
        else:
            out.append(int(tok.model_max_length))
    return out


@functools.lru_cache(maxsize=4)
def caption_tokenizers(folder: str):
    """The family and its tokenizers of a pipeline folder (cached per process)."""
    import transformers

    from dft.models.families import family_of_folder
    from dft.models.pipeline_index import component_class

    family = family_of_folder(folder)
    toks = [getattr(transformers, component_class(folder, name)).from_pretrained(folder, subfolder=name)
            for name in family.tokenizers]
    return family, toks


def tokenize_captions(family: Family, tokenizers, texts: list[str], max_sequence_length: int | None = None) -> dict:
    """{"ids": (B, L1) int64, "ids_2": ...}: each tokenizer padded to its length, as the pipelines pad."""
    out = {}
    for col, tok, length in zip(id_columns(family), tokenizers, sequence_lengths(family, tokenizers, max_sequence_length)):
        enc = tok(list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="np")
        out[col] = enc["input_ids"].astype(np.int64)
    return out


def encode_captions(family: Family, encoders, ids: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embeds, pooled) for the denoiser from token ids; ``encoders`` in the family's order."""
    if family.name == "sd":
        return encoders[0](ids["ids"], return_dict=False)[0], None
    if family.name == "sdxl":
        hidden, pooled = [], None
        for enc, col in zip(encoders, id_columns(family)):
            out = enc(ids[col], output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's (CLIP-G's) projected text embedding
        return torch.cat(hidden, dim=-1), pooled
    if family.name == "sd3":
        hidden, pooled = [], []
        for enc, col in zip(encoders[:2], ("ids", "ids_2")):
            out = enc(ids[col], output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled.append(out.text_embeds)
        t5 = encoders[2](ids["ids_3"])[0]
        clip = torch.cat(hidden, dim=-1)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5.to(clip.dtype)], dim=-2), torch.cat(pooled, dim=-1)
    if family.name == "flux":
        pooled = encoders[0](ids["ids"], output_hidden_states=False).pooler_output
        return encoders[1](ids["ids_2"])[0], pooled
    raise ValueError(f"no caption encoding for family {family.name!r}")


def load_text_encoders(folder: str, family: Family, dtype=torch.float32) -> list:
    import transformers

    from dft.models.pipeline_index import component_class

    return [getattr(transformers, component_class(folder, name)).from_pretrained(folder, subfolder=name, dtype=dtype)
            for name in family.text_encoders]


def embed_captions(family: Family, encoders, tokenizers, texts: list[str], max_sequence_length: int | None,
                   device="cpu") -> dict:
    """Captions -> {"embeds", "pooled"?} as float32 numpy (the precomputed columns)."""
    tokens = tokenize_captions(family, tokenizers, texts, max_sequence_length)
    ids = {k: torch.from_numpy(v).to(device) for k, v in tokens.items()}
    with torch.no_grad():
        embeds, pooled = encode_captions(family, encoders, ids)
    out = {"embeds": embeds.float().cpu().numpy()}
    if pooled is not None:
        out["pooled"] = pooled.float().cpu().numpy()
    return out


def empty_caption_inputs(folder: str, train_cfg) -> dict:
    """The empty caption (classifier-free guidance's unconditional input) in the trainers' columns:
    token ids per tokenizer, or, with precomputed embeddings, the frozen encoders' embedding of ""."""
    family, toks = caption_tokenizers(folder)
    if train_cfg.precompute_text_embeddings:
        encoders = load_text_encoders(folder, family)
        out = embed_captions(family, [e.eval() for e in encoders], toks, [""], train_cfg.max_sequence_length)
        del encoders
    else:
        out = tokenize_captions(family, toks, [""], train_cfg.max_sequence_length)
    return {k: torch.from_numpy(v)[0] for k, v in out.items()}
