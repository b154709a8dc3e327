import pytest

pytestmark = pytest.mark.integration


def test_connect_reuses_running_session(ray_session):
    from dft.cluster import connect

    ctx = connect(None)
    assert ray_session.is_initialized()
    assert ctx.get_node_id() == ray_session.get_runtime_context().get_node_id()
    assert ray_session.cluster_resources()["CPU"] >= 1


def test_connect_embedded_then_address(monkeypatch, tmp_path):
    """An embedded Ray when nothing is set; RAY_ADDRESS reaches an existing one."""
    import subprocess
    import sys

    code = (
        "import os, ray, logging; logging.basicConfig(level=logging.INFO)\n"
        "from dft.cluster import connect\n"
        "from dft.config.schema import RaySection\n"
        "connect(RaySection(num_cpus=1))\n"
        "print('CPUS', ray.cluster_resources()['CPU'])\n"
        "print('NICE', ray.get(ray.remote(num_cpus=0)(lambda: os.nice(0)).remote()))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "CPUS 1.0" in res.stdout
    assert "NICE 0" in res.stdout  # an embedded Ray's workers at niceness 0, not Ray's 15 (prefer_local_worker_niceness)
    assert "embedded local Ray with 1 CPUs" in res.stderr


def test_a_stage_that_cannot_be_placed_fails_naming_what_it_asked_for(ray_session):
    from dft.cluster import PlacementTimeout, wait_for_resources

    wait_for_resources([{"CPU": 1}], "fits", timeout_s=1)  # returns at once
    with pytest.raises(PlacementTimeout, match=r"train: asked for 3 x \{CPU: 1, GPU: 1\}.*nodes have \{CPU: 2") as err:
        wait_for_resources([{"CPU": 1, "GPU": 1}] * 3, "train", timeout_s=1, poll_s=0.2)
    assert "ray.placement_timeout_s" in str(err.value)


def test_the_gcs_tells_a_live_actor_from_a_dead_one(ray_session):
    from dft.train.controller_watch import controller_state

    actor = ray_session.remote(num_cpus=0)(type("Alive", (), {"ping": lambda self: 1})).remote()
    ray_session.get(actor.ping.remote())
    actor_id = actor._actor_id.hex()
    assert controller_state(actor_id) == "ALIVE"
    ray_session.kill(actor)
    import time

    deadline = time.time() + 20
    while controller_state(actor_id) != "DEAD" and time.time() < deadline:
        time.sleep(0.2)
    assert controller_state(actor_id) == "DEAD"
    assert controller_state("ff" * 16) is None  # unknown: not known, not dead
