"""The one place that connects to Ray.

``ray.address`` in the config, else ``RAY_ADDRESS`` (a cluster, or a local ``ray start --head``),
else an embedded local Ray sized to the machine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from dft.errors import DftError

log = logging.getLogger(__name__)


def prefer_local_worker_niceness() -> None:
    """Run an embedded local Ray's workers at niceness 0, unless ``RAY_worker_niceness`` is set.

    Ray starts workers at niceness 15 so its daemons stay responsive on busy nodes. On a small CPU
    machine the daemons (raylet, GCS, Ray Data's executor and stats actors) then preempt a CPU-bound
    actor at every wake-up, and each preemption stalls both of its OpenMP threads: generation on 2
    cores ran ~10% slower per batch than the same loop outside Ray (docs/generate.md). At equal
    niceness they share the cores fairly. Set ``RAY_worker_niceness=15`` to get Ray's default back."""
    os.environ.setdefault("RAY_worker_niceness", "0")


def in_submitted_job() -> bool:
    """Whether this process is the driver of a job submitted with ``ray job submit`` (or a RayJob).

    Ray's job supervisor hands the job's runtime environment (its ``--working-dir`` copy, the
    ``--runtime-env-json`` env_vars) to the driver in this variable; ``ray.init`` then applies it to
    every task and actor of the job by itself."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


@dataclass
class RayOutput:
    """Where Ray's own output goes (set by the command line through ``route_ray_output``).

    ``console=True`` (the library default) leaves Ray as it is. ``console=False``: Ray Data draws no
    progress bars (in the driver and, through RAY_DATA_DISABLE_PROGRESS_BARS, in every worker), the
    workers' stdout/stderr stays in Ray's session logs instead of being forwarded to the driver
    (``log_to_driver``), and the "ray" loggers show warnings only on the console. With ``log_dir`` set,
    the "ray" loggers' records also go to ``log_dir/ray.log`` and ``log_dir/ray-session`` links to the
    Ray session's own log folder (workers, raylet, Ray Data's ray-data.log)."""

    console: bool = True
    log_dir: str | None = None


RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air")
_output = RayOutput()


def route_ray_output(console: bool, log_dir: str | None = None) -> None:
    """Choose where Ray's output goes (see ``RayOutput``); before ``connect``, or after to re-route
    the loggers of an already connected Ray (its workers keep their ``log_to_driver``)."""
    global _output
    _output = RayOutput(console, log_dir)
    if not console:
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        _apply_output()


# Warnings of Ray's that tell how to undo what the quiet console chose.
HINTS = ("Progress bars disabled",)


def _drop_hints(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(HINTS)


def _apply_output() -> None:
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = _output.console
    handler = None
    if _output.log_dir:
        os.makedirs(_output.log_dir, exist_ok=True)
        path = os.path.join(_output.log_dir, "ray.log")
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.set_name("dft-ray-log")
        try:
            session = ray._private.worker._global_node.get_session_dir_path()  # no public getter in Ray 2.60
            link = os.path.join(_output.log_dir, "ray-session")
            if os.path.islink(link):
                os.remove(link)
            if not os.path.exists(link):
                os.symlink(os.path.join(session, "logs"), link)
        except Exception as exc:  # noqa: BLE001 - a remote cluster's driver, an odd platform: the log file still works
            log.debug("no link to Ray's session logs: %s", exc)
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if h.get_name() == "dft-ray-log":
                logger.removeHandler(h)
                h.close()
            elif not isinstance(h, logging.FileHandler) and type(h).__name__ != "SessionFileHandler":
                # A console handler: warnings only when quiet, its own level back otherwise.
                own = getattr(h, "_dft_own_level", h.level)
                h._dft_own_level = own
                h.setLevel(own if _output.console else max(own, logging.WARNING))
                h.removeFilter(_drop_hints)
                if not _output.console:
                    h.addFilter(_drop_hints)
        if handler and (logger.handlers or not logger.propagate or name == "ray"):
            logger.addHandler(handler)


def connect(ray_cfg=None):
    """Connect once per process; returns the Ray context. Safe to call again.

    Inside a submitted job no ``runtime_env`` is passed: the job's own (working dir, env_vars) is
    already in force, and a second one would replace it (Ray then deletes the job's working-dir copy
    under the running driver) or be refused when the job set env_vars. Outside a job the driver's
    FORWARDED_ENV values travel to the workers. An embedded Ray is always a new one (``address="local"``),
    never a ``ray start`` cluster that Ray happens to find recorded in its temp dir."""
    import ray

    global _placement_timeout_s
    _placement_timeout_s = float(getattr(ray_cfg, "placement_timeout_s", None) or _placement_timeout_s)
    if ray.is_initialized():
        return ray.get_runtime_context()
    address = getattr(ray_cfg, "address", None) or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"log_to_driver": _output.console, "logging_level": logging.WARNING}
    env_vars = worker_env_vars()
    if env_vars and not in_submitted_job():
        kwargs["runtime_env"] = {"env_vars": env_vars}
    if address:
        log.info("connecting to Ray at %s%s", address, " (submitted job)" if in_submitted_job() else "")
        ctx = ray.init(address=address, **kwargs)
    else:
        num_cpus = getattr(ray_cfg, "num_cpus", None) or os.cpu_count() or 1
        kwargs.update(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=bool(getattr(ray_cfg, "include_dashboard", False)),
        )
        if getattr(ray_cfg, "num_gpus", None) is not None:
            kwargs["num_gpus"] = ray_cfg.num_gpus
        if getattr(ray_cfg, "object_store_memory", None):
            kwargs["object_store_memory"] = ray_cfg.object_store_memory
        log.info("starting an embedded local Ray with %s CPUs", num_cpus)
        prefer_local_worker_niceness()
        ctx = ray.init(**kwargs)
    _apply_output()
    dashboard = getattr(ctx, "dashboard_url", None)
    if dashboard:
        log.info("Ray dashboard: http://%s", dashboard)
    return ray.get_runtime_context()


_placement_timeout_s = 600.0  # ray.placement_timeout_s of the last connect()


class RunLocationError(DftError, ValueError):
    """A run folder that would not outlive the job that writes it."""


def check_run_uri(uri: str) -> None:
    """Refuse a relative local run folder inside a submitted job: the driver's working directory there is
    Ray's temporary copy of ``--working-dir`` (deleted with the job, and different on every node), not the
    directory the job was submitted from, which the job cannot know."""
    scheme, sep, rest = uri.partition("://")
    path = rest if sep else uri
    if (not sep or scheme == "file") and not os.path.isabs(path) and in_submitted_job():
        raise RunLocationError(
            f"run.uri: {uri!r} is a relative path, and this is a submitted Ray job, whose working directory is "
            f"Ray's temporary copy of --working-dir ({os.getcwd()}), deleted when the job ends. Pass an absolute "
            f"path on storage every node shares (--set run.uri=$PWD/{path} from the submitting shell) or s3://."
        )


class PlacementTimeout(DftError, RuntimeError):
    """The cluster could not give a stage the resources it asked for within ``ray.placement_timeout_s``."""


def _fits(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> bool:
    """Whether every bundle fits on some node's total resources (first fit, largest bundles first)."""
    free = [dict(n) for n in nodes]
    for b in sorted(bundles, key=lambda b: (-b.get("GPU", 0), -b.get("CPU", 0))):
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in b.items() if v):
                for k, v in b.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            return False
    return True


def _describe(resources: dict[str, float]) -> str:
    resources = {"CPU": 0.0, **resources}
    keys = [k for k in ("CPU", "GPU") if k in resources] + sorted(
        k for k in resources if k not in ("CPU", "GPU", "memory", "object_store_memory")
        and not k.startswith("node:") and "accelerator_type" not in k)
    return "{" + ", ".join(f"{k}: {resources[k]:g}" for k in keys) + "}"


def node_resources() -> list[dict[str, float]]:
    """Total resources of each alive node (what could ever be placed there)."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def wait_for_resources(bundles: list[dict[str, float]], what: str, timeout_s: float | None = None,
                       poll_s: float = 2.0) -> None:
    """Wait until the cluster's nodes could hold ``bundles`` (nodes may still be joining, e.g. an
    autoscaler's); fail after ``timeout_s`` naming what was asked for and what the cluster has, instead
    of leaving a job pending forever. Checks totals, not what is free now: other jobs come and go."""
    import time

    timeout_s = _placement_timeout_s if timeout_s is None else timeout_s
    t0 = time.monotonic()
    bundles = [{k: float(v) for k, v in b.items() if v} for b in bundles]
    warned = False
    while True:
        nodes = node_resources()
        if _fits(bundles, nodes):
            return
        waited = time.monotonic() - t0
        if waited >= timeout_s:
            asked = f"{len(bundles)} x {_describe(bundles[0])}" if bundles else "nothing"
            have = ", ".join(_describe(n) for n in nodes) or "no alive nodes"
            raise PlacementTimeout(
                f"{what}: asked for {asked}, and in {timeout_s:g}s the cluster never had room for it; its nodes "
                f"have {have}. Add nodes with those resources (worker nodes with CPUs: the head of "
                "cluster/local has none), lower the request, or raise ray.placement_timeout_s."
            )
        if not warned:
            log.warning("%s: waiting up to %gs for room for %d x %s (nodes now: %s)", what, timeout_s,
                        len(bundles), _describe(bundles[0]), ", ".join(_describe(n) for n in nodes))
            warned = True
        time.sleep(min(poll_s, max(0.1, timeout_s - waited)))


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
    "RAY_DATA_DISABLE_PROGRESS_BARS",
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
