"""The one place that connects to Ray.

``ray.address`` in the config, else ``RAY_ADDRESS`` (a cluster, or a local ``ray start --head``),
else an embedded local Ray sized to the machine.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def prefer_local_worker_niceness() -> None:
    """Run an embedded local Ray's workers at niceness 0, unless ``RAY_worker_niceness`` is set.

    Ray starts workers at niceness 15 so its daemons stay responsive on busy nodes. On a small CPU
    machine the daemons (raylet, GCS, Ray Data's executor and stats actors) then preempt a CPU-bound
    actor at every wake-up, and each preemption stalls both of its OpenMP threads: generation on 2
    cores ran ~10% slower per batch than the same loop outside Ray (docs/generate.md). At equal
    niceness they share the cores fairly. Set ``RAY_worker_niceness=15`` to get Ray's default back."""
    os.environ.setdefault("RAY_worker_niceness", "0")


STATE_API_WARNING = "Failed to query Ray Train Controller actor state"


class _DropStateApiWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(STATE_API_WARNING)


def quiet_state_api_warnings() -> None:
    """A worker-process setup hook for an embedded Ray without its dashboard.

    Ray Train's placement-group cleaner asks the state API (served by the dashboard) every second
    whether the training controller still lives; without a dashboard each ask fails and logs a
    warning, about one line a second for the whole run. The cleaner only matters when a controller
    dies ungracefully, and the embedded Ray ends with the driver, so the warning is dropped (from
    that one logger, that one message)."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").addFilter(
        _DropStateApiWarning()
    )


def connect(ray_cfg=None):
    """Connect once per process; returns the Ray context. Safe to call again."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = getattr(ray_cfg, "address", None) or os.environ.get("RAY_ADDRESS")
    # Our library code lives in the driver's working tree; ship the environment to workers only on clusters.
    kwargs: dict = {"log_to_driver": True, "logging_level": logging.WARNING}
    env_vars = worker_env_vars()
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": env_vars}
    if address:
        log.info("connecting to Ray at %s", address)
        ctx = ray.init(address=address, **kwargs)
    else:
        num_cpus = getattr(ray_cfg, "num_cpus", None) or os.cpu_count() or 1
        kwargs.update(
            num_cpus=num_cpus,
            include_dashboard=bool(getattr(ray_cfg, "include_dashboard", False)),
        )
        if getattr(ray_cfg, "num_gpus", None) is not None:
            kwargs["num_gpus"] = ray_cfg.num_gpus
        if getattr(ray_cfg, "object_store_memory", None):
            kwargs["object_store_memory"] = ray_cfg.object_store_memory
        if not kwargs["include_dashboard"]:
            kwargs.setdefault("runtime_env", {})["worker_process_setup_hook"] = "dft.cluster.quiet_state_api_warnings"
        log.info("starting an embedded local Ray with %s CPUs", num_cpus)
        prefer_local_worker_niceness()
        ctx = ray.init(**kwargs)
    dashboard = getattr(ctx, "dashboard_url", None)
    if dashboard:
        log.info("Ray dashboard: http://%s", dashboard)
    return ray.get_runtime_context()


# Variables workers need to see the same world as the driver (offline hub, S3 endpoint, caches, fault
# switches). Never credentials: workers take theirs from their own environment or instance role.
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "DFT_CACHE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "DFT_FAULT_INJECT",
    "DS_ACCELERATOR",
    "TORCH_EXTENSIONS_DIR",
)


def worker_env_vars(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's values of FORWARDED_ENV, plus ``extra`` (e.g. credentials a test passes explicitly)."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env.update(extra or {})
    return env


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
