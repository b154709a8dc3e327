"""Built-in tiny reader models, ``tiny-clip`` and ``tiny-vqa``, made from config with a fixed seed.

They exist so the CLIP and VQA readers' code paths (resolve a source, ``from_pretrained``, batch,
score, write labels) run offline in tests and the demo. Their weights are random: what they
"perceive" is noise, deterministic noise. A real reader is a real model source (see
docs/evaluate.md). Both are entry points of the ``dft.model_sources`` group (pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

from dft.models.sources import BuiltinModel

SEED = 0
IMAGE_SIZE = 32
NUM_QUERY_TOKENS = 4


def reader_texts() -> list[str]:
    """Every word the default reader prompts and questions use, plus the prompt vocabularies."""
    from dft.evaluate.class_texts import DEFAULT_CLIP_CLASSES, DEFAULT_VQA_CLASSES, DEFAULT_VQA_QUESTIONS
    from dft.models.tiny import vocabulary_texts

    texts = list(vocabulary_texts())
    for classes in (DEFAULT_CLIP_CLASSES, DEFAULT_VQA_CLASSES):
        for per_attr in classes.values():
            texts += list(per_attr.values()) + list(per_attr)
    texts += list(DEFAULT_VQA_QUESTIONS.values()) + ["question answer yes no"]
    return texts


def _describe(kind: str):
    def describe() -> dict:
        import hashlib

        import transformers

        words = hashlib.sha256("\n".join(reader_texts()).encode()).hexdigest()[:12]
        return {"kind": kind, "seed": SEED, "size": IMAGE_SIZE, "q": NUM_QUERY_TOKENS, "words": words,
                "transformers": transformers.__version__, "v": 1}

    return describe


def build_tiny_clip(folder: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from dft.models.tokenizer import write_tokenizer

    tok_dir = write_tokenizer(Path(folder) / "_tok", reader_texts())
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    vocab = len(tokenizer)
    torch.manual_seed(SEED)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=8,
        ),
        projection_dim=32,
    )
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
        tokenizer=tokenizer,
    )
    model.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))
    import shutil

    shutil.rmtree(tok_dir)


def build_tiny_vqa(folder: Path) -> None:
    """A tiny BLIP-2 (ViT, Q-Former, OPT decoder), the architecture the method's authors used."""
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        CLIPTokenizer,
        OPTConfig,
    )

    from dft.models.tokenizer import write_tokenizer

    tok_dir = write_tokenizer(Path(folder) / "_tok", reader_texts())
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        num_query_tokens=NUM_QUERY_TOKENS,
    )  # adds the "<image>" token to the tokenizer
    vocab = len(processor.tokenizer)
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token.content)
    eos = processor.tokenizer.eos_token_id
    torch.manual_seed(SEED)
    config = Blip2Config(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=8,
        ),
        qformer_config=dict(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            encoder_hidden_size=32, max_position_embeddings=64,
        ),
        text_config=OPTConfig(
            vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
            word_embed_proj_dim=32, max_position_embeddings=128, bos_token_id=vocab - 3, eos_token_id=eos,
            pad_token_id=eos,
        ),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=image_token,
    )
    model = Blip2ForConditionalGeneration(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))
    import shutil

    shutil.rmtree(tok_dir)


# Declared in pyproject.toml's ``dft.model_sources`` entry point group.
TINY_CLIP = BuiltinModel(_describe("tiny-clip"), build_tiny_clip)
TINY_VQA = BuiltinModel(_describe("tiny-vqa"), build_tiny_vqa)
