"""Config of the prompt table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dft.config.base import Section, check_shares

ATTRIBUTES = ("ethnicity", "gender", "age", "profession")


class PromptsConfig(Section):
    vocab: str = Field(
        "default",
        description="Vocabulary set: 'default' (shipped), 'world' (the demo world), or a folder URI holding "
        "professions.txt, ethnicities.txt, genders.txt, age_groups.txt, templates.txt, neutral.txt.",
    )
    include: dict[Literal["ethnicity", "gender", "age", "profession"], list[str]] = Field(
        default_factory=dict, description="Keep only these values of an attribute."
    )
    exclude: dict[Literal["ethnicity", "gender", "age", "profession"], list[str]] = Field(
        default_factory=dict, description="Drop these values of an attribute."
    )
    template_policy: Literal["one", "all"] = Field(
        "one", description="'one': each combination gets one template (chosen by hash); 'all': product over templates."
    )
    sample_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="Keep this share of combinations, chosen deterministically by hash."
    )
    max_combinations: int | None = Field(
        None, ge=1, description="Keep at most this many combinations (those with the smallest hashes)."
    )
    images_per_prompt: int = Field(4, ge=1, le=100_000, description="Images per combination.")
    seed: int = Field(0, ge=0, description="Salt mixed into every image seed.")
    neutral_images_per_prompt: int = Field(8, ge=1, description="Images per neutral evaluation prompt.")
    neutral_max_professions: int | None = Field(
        None, ge=1, description="Neutral '{profession}' prompts for at most this many professions (sorted)."
    )
    chunk_rows: int = Field(65_536, ge=1, description="Rows per written Parquet row group (memory bound).")
    targets: dict[Literal["ethnicity", "gender", "age", "profession"], dict[str, float]] = Field(
        default_factory=dict,
        description="Share of the table's rows (images) per attribute value, e.g. {age: {young: 0.75, "
        "elderly: 0.25}}: images per combination are weighted (raking over the attributes) so that each "
        "attribute's row shares follow its target; values left out get no rows. Default: every "
        "combination gets images_per_prompt images. Use the same shares as evaluate.targets to train "
        "towards what is measured.",
    )

    @model_validator(mode="after")
    def _targets_are_shares(self):
        for attr, shares in self.targets.items():
            check_shares(f"prompts.targets.{attr}", shares)
        return self

    @model_validator(mode="after")
    def _include_exclude_disjoint(self):
        for attr, values in self.include.items():
            both = set(values) & set(self.exclude.get(attr, []))
            if both:
                raise ValueError(f"prompts.include.{attr} and prompts.exclude.{attr} both name {sorted(both)}")
        return self
