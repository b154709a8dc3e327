"""The run config: one section per stage, composed here and nowhere else."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field, field_validator, model_validator

from dft.config.base import Section
from dft.evaluate.config import CurateConfig, EvaluateConfig, ReportConfig
from dft.generate.config import GenerateConfig
from dft.prompts.config import PromptsConfig
from dft.train.config import TrainConfig


class RunSection(Section):
    """Where the run lives: a local folder or an ``s3://`` prefix."""

    uri: str = Field("runs/demo", min_length=1, description="Run folder (local path, file:// or s3://).")
    name: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (Ray Train run name).")


class RaySection(Section):
    """How to reach Ray. ``address`` wins over ``RAY_ADDRESS``; neither means an embedded local Ray."""

    address: str | None = Field(None, description="Ray address ('auto', 'ray://host:10001', ...).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for an embedded local Ray (default: all).")
    num_gpus: int | None = Field(None, ge=0, description="GPUs for an embedded local Ray (default: detect).")
    object_store_memory: int | None = Field(None, ge=78643200, description="Bytes for the embedded object store.")
    include_dashboard: bool = Field(False, description="Start the dashboard with an embedded Ray.")
    placement_timeout_s: float = Field(
        600.0, gt=0, description="How long a stage waits for the cluster to have room for its actors or "
        "training workers (nodes may still be joining) before failing with what it asked for and what the "
        "cluster has.")


class ModelSection(Section):
    """The base text-to-image model: a hub id, a local folder, an s3:// folder or a built-in tiny model."""

    source: str = Field("tiny-sd", min_length=1, description="Model source string (see README: Model sources).")
    revision: str | None = Field(None, description="Hub revision, for hub ids only.")
    cache_dir: str | None = Field(
        None, description="Local cache for s3:// copies and built-in models (default ~/.cache/dft)."
    )
    @field_validator("source")
    @classmethod
    def _no_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()


class RunConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    ray: RaySection = Field(default_factory=RaySection)
    model: ModelSection = Field(default_factory=ModelSection)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _curation_quota(self):
        quota = self.curate.keep_per_prompt
        if not self.curate.enabled or quota is None:
            return self
        if self.prompts.targets:
            raise ValueError(
                f"curate.keep_per_prompt={quota} cannot be used with prompts.targets: the same count for every "
                "prompt would undo the targets' weighting"
            )
        if quota > self.prompts.images_per_prompt:
            raise ValueError(
                f"curate.keep_per_prompt={quota} is more than prompts.images_per_prompt="
                f"{self.prompts.images_per_prompt}: a prompt cannot keep more images than it generates"
            )
        return self

    @model_validator(mode="after")
    def _family_options(self):
        """Settings that do not fit the model's family fail here, before any work, when the family is
        knowable without a download (a built-in name or a local folder); stages check the others."""
        from dft.models.families import family_hint

        family = family_hint(self.model.source)
        if family is not None:
            problems = self.generate.family_problems(family) + self.train.family_problems(family)
            if problems:
                raise ValueError(f"model.source {self.model.source!r} is a {family.name} model: " + "; ".join(problems))
        return self

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections: what a stage's marker records to detect changes."""
        payload = {n: getattr(self, n).model_dump(mode="json") for n in names}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
