"""Pure parts of the cluster layer: bin packing of resource requests, the run-folder rule inside a
submitted job, and the placement-group cleaner's decision (no Ray started)."""

from __future__ import annotations

import queue

import pytest


def test_bundles_fit_per_node_not_in_sum():
    from dft.cluster import _fits

    nodes = [{"CPU": 0.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert _fits([{"CPU": 4, "GPU": 1}] * 2, nodes)
    assert not _fits([{"CPU": 4, "GPU": 1}] * 3, nodes)
    assert not _fits([{"CPU": 6, "GPU": 1}], nodes)  # 8 CPUs in all, but no node has 6
    assert not _fits([{"CPU": 1}], [{"CPU": 0.0}])  # a head with no CPUs runs drivers only
    assert _fits([{"CPU": 1, "GPU": 0}], [{"CPU": 1.0}])  # a zero request is no request


def test_relative_run_folder_is_refused_only_inside_a_submitted_job(monkeypatch):
    from dft.cluster import RunLocationError, check_run_uri

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    check_run_uri("runs/demo")  # a plain driver: relative to where you are
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    for ok in ("/data/runs/x", "s3://bucket/runs/x", "file:///data/runs/x"):
        check_run_uri(ok)
    with pytest.raises(RunLocationError, match=r"run.uri: 'runs/local-tiny' is a relative path.*absolute"):
        check_run_uri("runs/local-tiny")


def _feeder(pgs):
    q = queue.Queue()
    for pg in pgs:
        q.put(pg)

    def next_pg(block=True):
        try:
            return q.get_nowait()
        except queue.Empty:
            return None

    return next_pg


def test_the_cleaner_removes_the_group_only_when_the_gcs_says_dead():
    from dft.train.controller_watch import watch

    answers = iter(["ALIVE", None, None, "RESTARTING", "ALIVE", "DEAD"])
    assert watch("c", _feeder(["pg1", "pg2"]), lambda: False, state=lambda _id: next(answers)) == "pg2"

    # No answer at all, for as long as the run lasts: the group stays.
    calls = {"n": 0}

    def stopped():
        calls["n"] += 1
        return calls["n"] > 50

    assert watch("c", _feeder(["pg1"]), stopped, state=lambda _id: None) is None


def test_rays_own_liveness_check_reads_no_answer_as_dead(monkeypatch):
    """The cause of the false controller death: Ray 2.60's is_actor_alive on an empty state-API answer."""
    import ray.train.v2._internal.state.util as util

    monkeypatch.setattr(util, "get_actor", lambda actor_id, timeout: None)
    assert not util.is_actor_alive("c", timeout=1)


def test_silent_fault_switch(monkeypatch):
    from dft.train.controller_watch import FAULT_ENV, SILENT, controller_state

    monkeypatch.setenv(FAULT_ENV, SILENT)
    assert controller_state("00" * 16) is None
