"""The Ray Train trainer dft fits: Ray's TorchTrainer with a placement-group cleaner that cannot mistake
a live training controller for a dead one.

Ray Train 2.60 starts a detached cleaner actor per run that removes the worker group's placement group
when the controller dies ungracefully. It asks the *state API* (served by the dashboard) once a second
whether the controller lives, and reads an empty answer as "dead" (``is_actor_alive`` returns
``actor_state and ...``). On a busy machine the state API can answer nothing for a moment; the cleaner
then removes the placement group of a live run, which kills every worker ("Destroying worker since its
placement group was removed") and costs a restart from the last checkpoint. Without a dashboard every
ask fails and logs a warning instead, once a second.

Here the cleaner asks the GCS directly (the actor table, the source the state API itself reads), and
only the GCS's own word DEAD counts as dead: no answer, an error or an unknown actor mean "not known",
and it asks again. A controller that really died still has its placement group removed.
"""

from __future__ import annotations

import logging
import os
import queue

import ray
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.controller.placement_group_cleaner import PlacementGroupCleaner

log = logging.getLogger(__name__)

FAULT_ENV = "DFT_FAULT_INJECT"
SILENT = "controller_state=silent"  # the test switch: every liveness query answers nothing


def controller_state(actor_id: str) -> str | None:
    """The GCS's state of an actor ('ALIVE', 'RESTARTING', 'DEAD', ...), or None when it gives none."""
    if SILENT in os.environ.get(FAULT_ENV, ""):
        return None
    try:
        import ray._private.state as gcs_state

        info = gcs_state.actors(actor_id=actor_id)
    except Exception as exc:  # the GCS unreachable for a moment: not known, not dead
        log.debug("actor table query for %s failed: %s", actor_id, exc)
        return None
    return (info or {}).get("State")


def watch(actor_id: str, next_pg, stopped, state=controller_state):
    """The cleaner's loop, apart from Ray so it can be tested: poll ``state(actor_id)`` until it says
    DEAD (returns the latest placement group to remove) or ``stopped()`` (returns None).
    ``next_pg()`` waits one interval for a newer placement group and returns it, or None."""
    current, warned = None, False
    while not stopped():
        pg = next_pg()
        if pg is not None:
            current = pg
        answer = state(actor_id)
        if answer is None and not warned:
            log.warning("training controller %s: the GCS gave no answer about it; its workers are kept "
                        "(asking again every interval)", actor_id)
            warned = True
        if answer == "DEAD":
            while (pg := next_pg(block=False)) is not None:
                current = pg
            return current
    return None


class GcsPlacementGroupCleaner(PlacementGroupCleaner):
    """Ray's cleaner with the liveness question asked of the GCS (see the module docstring)."""

    def _next_pg(self, block: bool = True):
        try:
            return self._pg_queue.get(timeout=self._check_interval_s) if block else self._pg_queue.get_nowait()
        except queue.Empty:
            return None

    def _monitor_loop(self):
        pg = watch(self._controller_actor_id, self._next_pg, self._stop_event.is_set)
        if pg is not None:
            self._cleanup_placement_group(pg)
        self._exit()
        self._monitor_thread = None


class GcsPlacementGroupCleanerCallback(PlacementGroupCleanerCallback):
    """Ray's callback, launching the GCS-asking cleaner instead of Ray's."""

    def after_controller_start(self, train_run_context):
        from ray._common.constants import HEAD_NODE_RESOURCE_NAME

        self._controller_actor_id = ray.get_runtime_context().get_actor_id()
        try:
            self._cleaner = ray.remote(num_cpus=0)(GcsPlacementGroupCleaner).options(
                lifetime="detached", get_if_exists=False, resources={HEAD_NODE_RESOURCE_NAME: 0.001},
                scheduling_strategy="DEFAULT",
            ).remote(controller_actor_id=self._controller_actor_id, check_interval_s=self._check_interval_s,
                     get_actor_timeout_s=self._get_actor_timeout_s, stop_timeout=self._stop_timeout)
        except Exception as exc:
            log.warning("could not start the placement-group cleaner: %s", exc)
            self._cleaner = None
            return
        self._cleaner.start_monitoring.remote()


class DftTorchTrainer(TorchTrainer):
    """TorchTrainer whose placement-group cleaner asks the GCS (GcsPlacementGroupCleanerCallback)."""

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        swapped = [GcsPlacementGroupCleanerCallback() if type(c) is PlacementGroupCleanerCallback else c
                   for c in callbacks]
        if not any(isinstance(c, GcsPlacementGroupCleanerCallback) for c in swapped):
            # Ray moved its cleaner: fail loudly here rather than train with the false-death bug back.
            raise RuntimeError("Ray Train's PlacementGroupCleanerCallback was not among its default callbacks; "
                               "dft.train.controller_watch needs updating for this Ray version")
        return swapped
