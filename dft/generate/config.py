"""Config of the generation stage (used for the synthetic set and for evaluation images)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dft.config.base import Section


class GenerateConfig(Section):
    scheduler: Literal["default", "ddim", "dpm", "euler", "euler_a", "pndm", "lms"] = Field(
        "default", description="Sampler; 'default' keeps the pipeline's own."
    )
    flow_shift: float | None = Field(
        None, gt=0.0, le=100.0,
        description="Flow-matching families (SD3, FLUX): the sigma shift of FlowMatchEulerDiscreteScheduler "
        "(SD3 ships 3.0; FLUX shifts by image size unless this is set). None keeps the model's.",
    )
    max_sequence_length: int | None = Field(
        None, ge=1, le=512,
        description="Flow-matching families: T5 tokens per prompt. None: the pipeline's default (SD3 256, FLUX 512), "
        "capped at the T5 tokenizer's model_max_length.",
    )
    steps: int = Field(20, ge=1, le=1000, description="Denoising steps.")
    guidance_scale: float = Field(
        7.5, ge=0.0, le=50.0,
        description="Classifier-free guidance scale; for FLUX (guidance-distilled) the guidance value it embeds "
        "(FLUX.1-dev's default is 3.5).",
    )
    height: int | None = Field(None, ge=8, multiple_of=8, description="Image height (default: model's).")
    width: int | None = Field(None, ge=8, multiple_of=8, description="Image width (default: model's).")
    negative_prompt: str | None = Field(None, description="Negative prompt for every image.")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="'auto': fp16 on CUDA, fp32 on CPU."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto': CUDA when present.")
    image_format: Literal["png", "jpeg", "webp"] = Field("png", description="Encoded image format.")
    quality: int = Field(95, ge=1, le=100, description="JPEG/WebP quality.")
    compile: bool = Field(False, description="torch.compile the UNet.")
    batch_size: int = Field(8, ge=1, description="Rows per pipeline call (an actor call is a whole shard).")
    num_actors: int = Field(1, ge=1, description="Actors in the pool (one pipeline each).")
    max_actors: int | None = Field(None, ge=1, description="Autoscale the pool up to this many actors.")
    num_gpus_per_actor: float = Field(0.0, ge=0.0, description="GPUs per actor (0 on CPU).")
    num_cpus_per_actor: float = Field(1.0, gt=0.0, description="CPUs per actor.")
    shard_size: int = Field(1000, ge=1, description="Samples per output shard (WebDataset tar and Parquet file).")
    formats: list[Literal["webdataset", "parquet"]] = Field(
        default_factory=lambda: ["webdataset", "parquet"], description="Output formats."
    )
    max_failures_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Job fails when failed rows exceed this share of rows."
    )
    row_retries: int = Field(2, ge=0, description="Retries of a failing row inside an actor.")
    actor_max_restarts: int = Field(
        3, ge=0, description="A dead actor is restarted and its batch redone up to this many times."
    )
    fault_inject_crash_after: int | None = Field(
        None, ge=1, description="Test switch: an actor exits after this many batches (once per output folder)."
    )

    @model_validator(mode="after")
    def _check(self):
        if self.max_actors is not None and self.max_actors < self.num_actors:
            raise ValueError(f"generate.max_actors ({self.max_actors}) < generate.num_actors ({self.num_actors})")
        if not self.formats:
            raise ValueError("generate.formats must name at least one of webdataset, parquet")
        return self

    def family_problems(self, family) -> list[str]:
        """Settings that do not apply to a model family (dft.models.families.Family), each naming the field."""
        problems = []
        if family.flow_matching and self.scheduler != "default":
            problems.append(
                f"generate.scheduler: {self.scheduler!r} is a DDPM-family sampler; {family.name} is a flow-matching "
                "model: use 'default' (FlowMatchEulerDiscreteScheduler) and generate.flow_shift"
            )
        if not family.flow_matching:
            for name in ("flow_shift", "max_sequence_length"):
                if getattr(self, name) is not None:
                    problems.append(f"generate.{name}: applies to flow-matching families (sd3, flux), "
                                    f"not {family.name}; got {getattr(self, name)}")
        return problems
