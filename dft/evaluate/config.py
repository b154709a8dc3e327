"""Config of evaluation, curation and the report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dft.config.base import Section


class ReaderConfig(Section):
    kind: Literal["skin_tone", "clip", "vqa", "world"] = Field(..., description="Which reader.")
    attributes: list[str] = Field(default_factory=list, description="Attributes it reads (clip/vqa).")
    model: str | None = Field(None, description="Model source for clip/vqa readers ('tiny-clip', folder, s3://, hub id).")
    classes: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Per attribute: class -> text prompt (clip) or answer word (vqa)."
    )
    questions: dict[str, str] = Field(default_factory=dict, description="Per attribute: the VQA question.")
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)


def _default_readers() -> list[ReaderConfig]:
    return [ReaderConfig(kind="skin_tone")]


class EvaluateConfig(Section):
    models: list[str] = Field(
        default_factory=lambda: ["base", "finetuned"],
        description="Model sources to compare; 'base' and 'finetuned' name the run's base and exported model.",
    )
    prompt_set: Literal["neutral", "explicit"] = Field("neutral")
    images_per_prompt: int | None = Field(None, ge=1, description="Default: prompts.neutral_images_per_prompt.")
    readers: list[ReaderConfig] = Field(default_factory=_default_readers)
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for intervals (0: none).")
    clip_score_model: str | None = Field(None, description="CLIP model source for the quality guard.")
    num_actors: int = Field(1, ge=1)
    seed_offset: int = Field(0, ge=0, description="Shift every evaluation seed (a re-sampling control).")


class CurateConfig(Section):
    enabled: bool = Field(False)
    readers: list[ReaderConfig] = Field(default_factory=_default_readers)
    mode: Literal["filter", "keep_list"] = Field("filter")
    skin_tone_tolerance: int = Field(2, ge=0, le=9, description="Allowed Monk-tone distance from the prompt's.")


class ReportConfig(Section):
    contact_sheet_images: int = Field(16, ge=1, le=256)
    title: str = Field("dft fairness report")
