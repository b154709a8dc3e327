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
        "pgc = 'ray.train.v2._internal.execution.controller.placement_group_cleaner'\n"
        "keeps = lambda msg: bool(logging.getLogger(pgc).filter(logging.makeLogRecord({'msg': msg})))\n"
        "print('KEEPS', ray.get(ray.remote(num_cpus=0)(lambda: [keeps('Failed to query Ray Train Controller "
        "actor state. State API may be temporarily unavailable.'), keeps('other')]).remote()))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "CPUS 1.0" in res.stdout
    assert "NICE 0" in res.stdout  # an embedded Ray's workers at niceness 0, not Ray's 15 (prefer_local_worker_niceness)
    assert "embedded local Ray with 1 CPUs" in res.stderr
    # workers drop the once-a-second state-API warning of Ray Train's placement-group cleaner, only it
    assert "KEEPS [False, True]" in res.stdout
