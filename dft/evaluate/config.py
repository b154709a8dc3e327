"""Config of evaluation, curation and the report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dft.config.base import Section, check_shares


class ReaderConfig(Section):
    kind: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Which reader: skin_tone, clip, vqa, clip_score, or a kind a plugin declares (e.g. world); "
        "see dft.evaluate.registry.",
    )
    module: str | None = Field(
        None, description="Python module to import before looking the kind up (a plugin's registration)."
    )
    attributes: list[str] = Field(default_factory=list, description="Attributes it reads (clip/vqa).")
    model: str | None = Field(None, description="Model source for clip/vqa readers ('tiny-clip', folder, s3://, hub id).")
    classes: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Per attribute: class -> text prompt (clip) or answer word (vqa)."
    )
    questions: dict[str, str] = Field(default_factory=dict, description="Per attribute: the VQA question.")
    vqa_mode: Literal["score", "generate"] = Field(
        "score",
        description="vqa: 'score' picks the class whose answer the model finds most likely; 'generate' "
        "generates an answer and matches it to a class (no match: unreadable).",
    )
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="clip/vqa: below this probability of the top class, unreadable."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per reader actor (Ray Data).")
    batch_size: int = Field(16, ge=1)
    options: dict[str, Any] = Field(
        default_factory=dict, description="Free-form settings for the reader (skin_tone: cascade, min_face...)."
    )


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
    targets: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per attribute (or joint attribute 'a+b'), the shares it should have, e.g. "
        "{age: {young: 0.75, elderly: 0.25}}; imbalance_target and kl_target measure against them. "
        "Default uniform. Shares are >= 0 and sum to 1; groups a target leaves out get 0.",
    )
    intersections: list[list[str]] = Field(
        default_factory=list,
        description="Attributes scored jointly, e.g. [[gender, skin_tone_group]] adds 'gender+skin_tone_group' "
        "with groups 'man+lighter'...; unreadable in any part is unreadable in the joint.",
    )
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per attribute, its full list of groups, over what the label table declares (for tables "
        "that declare none: a group nobody was read as still counts in K).",
    )

    @model_validator(mode="after")
    def _targets_fit(self):
        from dft.evaluate.attributes import JOINT, KNOWN_GROUPS, LENIENT_KNOWN

        declared = {a: list(g) for a, g in KNOWN_GROUPS.items() if a not in LENIENT_KNOWN}
        for r in self.readers:
            declared.update({a: list(c) for a, c in r.classes.items()})
        declared.update(self.groups)
        for attr, gs in self.groups.items():
            if len(gs) < 2 or len(set(gs)) != len(gs):
                raise ValueError(f"evaluate.groups.{attr}: needs at least 2 distinct groups; got {gs!r}")
        for i, parts in enumerate(self.intersections):
            if len(parts) < 2 or len(set(parts)) != len(parts):
                raise ValueError(f"evaluate.intersections[{i}]: needs at least 2 distinct attributes; got {parts!r}")
        for attr, shares in self.targets.items():
            field = f"evaluate.targets.{attr}"
            check_shares(field, shares)
            parts = attr.split(JOINT)
            known = declared.get(attr)
            if known is None and len(parts) > 1 and all(p in declared for p in parts):
                import itertools

                known = [JOINT.join(c) for c in itertools.product(*(declared[p] for p in parts))]
            unknown = [g for g in shares if known is not None and g not in known]
            if unknown:
                raise ValueError(f"{field}: groups {unknown} are not among the declared groups {known}")
        return self


class CurateConfig(Section):
    enabled: bool = Field(False)
    readers: list[ReaderConfig] = Field(default_factory=_default_readers)
    mode: Literal["filter", "keep_list"] = Field("filter")
    expect: dict[str, dict[str, list[str]]] = Field(
        default_factory=lambda: {"gender": {"man": ["man"], "woman": ["woman"]}},
        description="Per perceived attribute: prompt value -> perceived groups that agree with it. An image "
        "whose prompt value is listed and whose perceived group is not is dropped; the prompt column is the "
        "attribute's own (gender, age, ethnicity) or prompt_column[attribute].",
    )
    prompt_column: dict[str, str] = Field(
        default_factory=dict, description="Perceived attribute -> prompt column it is checked against (default: same name)."
    )
    skin_tone_by_prompt: dict[str, int] = Field(
        default_factory=dict,
        description="Prompt ethnicity value -> expected Monk tone (1-10); empty: skin tone is not checked. Only "
        "sensible for vocabularies that name tones (the demo world), not for ethnicity terms.",
    )
    skin_tone_tolerance: int = Field(2, ge=0, le=9, description="Allowed Monk-tone distance from the prompt's.")
    drop_unreadable: bool = Field(False, description="Also drop images whose checked attributes are unreadable.")
    keep_per_prompt: int | None = Field(
        None, ge=1,
        description="Keep at most this many passing images per prompt, the lowest image_index first, so that "
        "every prompt trains with the same count although some are dropped more often than others; make "
        "prompts.images_per_prompt larger to leave room. null: keep every passing image.",
    )
    num_actors: int = Field(1, ge=1)


class ReportConfig(Section):
    contact_sheet_images: int = Field(16, ge=1, le=256)
    title: str = Field("dft fairness report")
    thumb_size: int = Field(96, ge=16, le=512, description="Contact-sheet thumbnail side in pixels.")
    max_prompts: int = Field(24, ge=1, description="Prompts shown with charts and contact sheets (the rest in tables).")
