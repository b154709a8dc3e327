#!/usr/bin/env python3
"""A local multi-node Ray cluster on one machine: a head and N worker nodes, each its own `ray start`
process with its own ports and temp dir, token authentication on, the project's venv on PATH.

    python cluster/local/raylocal.py up --head-cpus 0 --workers 2 --worker-cpus 1
    eval "$(python cluster/local/raylocal.py env)"        # RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH
    ray job submit --working-dir . -- python jobs/run.py --config jobs/configs/local_tiny.yaml
    python cluster/local/raylocal.py add-node --cpus 2     # prints the new node's name
    python cluster/local/raylocal.py kill-node worker-1    # SIGKILL: a node lost without notice
    python cluster/local/raylocal.py status
    python cluster/local/raylocal.py down                  # stops exactly the processes it started

Each node is `ray start --block` in its own session, so stopping a node is a signal to that one process
(Ray's --block mode stops the node's daemons when it ends) and nothing else on the machine is touched:
never `ray stop`, which ends every Ray of the user. State lives in ``--dir`` (default
``/tmp/dft-ray/local``; kept short because Ray's socket paths must fit in 107 bytes): cluster.json, the
auth token, one temp dir and one log per node. Standard library only, so it runs before anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = os.environ.get("DFT_LOCAL_CLUSTER_DIR", "/tmp/dft-ray/local")
HOST = "127.0.0.1"  # every node, the dashboard and the job API listen on loopback only
WORKER_PORTS = 40  # worker processes per node (each Ray worker needs a port)
PORT_FLAGS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


class ClusterError(RuntimeError):
    pass


def _bin_dir() -> Path:
    """The venv whose python runs this script: its `ray` starts the nodes and its `python` runs the jobs."""
    return Path(sys.executable).parent


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


class Cluster:
    def __init__(self, root: str | os.PathLike = DEFAULT_DIR):
        self.root = Path(root).resolve()
        self.state_file = self.root / "cluster.json"
        self.token_file = self.root / "auth_token"

    # -- state -------------------------------------------------------------------------------------
    def load(self) -> dict:
        if not self.state_file.exists():
            raise ClusterError(f"no local cluster in {self.root} (start one with `up`)")
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def env(self, state: dict | None = None) -> dict[str, str]:
        """What a shell, a node or a test needs to reach this cluster."""
        state = state or self.load()
        return {
            "RAY_ADDRESS": state["job_api"],
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
            "PATH": f"{_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _node_env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file),
                   RAY_USAGE_STATS_ENABLED=env.get("RAY_USAGE_STATS_ENABLED", "0"),
                   # Workers at niceness 0 as dft.cluster.connect does for an embedded Ray (docs/generate.md).
                   RAY_worker_niceness=env.get("RAY_worker_niceness", "0"))
        env["PATH"] = f"{_bin_dir()}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra or {})
        return env

    def _ports(self, state: dict, n: int) -> list[int]:
        """n free ports, none already given to a node of this cluster."""
        taken = {p for node in state["nodes"].values() for p in node["ports"]}
        out: list[int] = []
        port = 20000 + secrets.randbelow(30000)
        while len(out) < n:
            port = 20000 if port > 60000 else port + 1
            if port not in taken and _port_free(port):
                out.append(port)
        return out

    def _worker_range(self, state: dict) -> tuple[int, int]:
        taken = {p for node in state["nodes"].values() for p in node["ports"]}
        while True:
            lo = 20000 + secrets.randbelow(40000)
            span = range(lo, lo + WORKER_PORTS)
            if not taken.intersection(span) and all(_port_free(p) for p in span):
                return lo, lo + WORKER_PORTS - 1

    # -- nodes -------------------------------------------------------------------------------------
    def _start_node(self, state: dict, name: str, *, head: bool, cpus: float, gpus: int,
                    resources: dict | None, env: dict | None, timeout: float) -> dict:
        ports = self._ports(state, len(PORT_FLAGS))
        lo, hi = self._worker_range(state)
        temp = self.root / name
        log = self.root / f"{name}.log"
        cmd = [str(_bin_dir() / "ray"), "start", "--block", "--node-ip-address", HOST,
               "--num-cpus", str(int(cpus)), "--num-gpus", str(gpus), "--temp-dir", str(temp),
               "--min-worker-port", str(lo), "--max-worker-port", str(hi), "--disable-usage-stats"]
        cmd += [a for flag, p in zip(PORT_FLAGS, ports) for a in (f"--{flag}", str(p))]
        if resources:
            cmd += ["--resources", json.dumps(resources)]
        if head:
            cmd += ["--head", "--port", str(state["gcs_port"]), "--include-dashboard", "true",
                    "--dashboard-host", HOST, "--dashboard-port", str(state["dashboard_port"]),
                    "--ray-client-server-port", str(self._ports(state, 1)[0])]
        else:
            cmd += ["--address", state["gcs"]]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self._node_env(env), start_new_session=True)
        node = {"name": name, "pid": proc.pid, "head": head, "cpus": cpus, "gpus": gpus,
                "resources": resources or {}, "ports": ports + list(range(lo, hi + 1)), "temp_dir": str(temp),
                "log": str(log), "started": time.time()}
        self._wait_started(proc, log, timeout)
        node["node_id"] = self._node_id(temp, timeout)
        return node

    @staticmethod
    def _wait_started(proc: subprocess.Popen, log: Path, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"`ray start` exited with {proc.returncode}; see {log}:\n"
                                   + log.read_text(errors="replace")[-2000:])
            if "Ray runtime started" in log.read_text(errors="replace"):
                return
            time.sleep(0.3)
        raise ClusterError(f"`ray start` did not come up in {timeout:.0f}s; see {log}")

    @staticmethod
    def _node_id(temp: Path, timeout: float) -> str:
        """The node's id, from the port files its raylet writes into its own session dir."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for f in (temp / "session_latest").glob("metrics_export_port_*"):
                return f.name.rsplit("_", 1)[1]
            time.sleep(0.3)
        raise ClusterError(f"no node id under {temp}/session_latest")

    def up(self, *, head_cpus: float = 0, head_gpus: int = 0, workers: int = 0, worker_cpus: float = 1,
           worker_gpus: int = 0, worker_resources: dict | None = None, port: int | None = None,
           dashboard_port: int | None = None, env: dict | None = None, timeout: float = 90) -> dict:
        if self.state_file.exists() and self.alive_nodes(self.load()):
            raise ClusterError(f"a local cluster is already running from {self.root}; `down` it first")
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.token_file.exists():
            self.token_file.write_text(secrets.token_hex(32))
            self.token_file.chmod(0o600)
        state: dict = {"nodes": {}, "env": env or {}}
        gcs_port, dash_port = self._ports(state, 2)
        state.update(gcs_port=port or gcs_port, dashboard_port=dashboard_port or dash_port)
        state.update(gcs=f"{HOST}:{state['gcs_port']}", job_api=f"http://{HOST}:{state['dashboard_port']}")
        try:
            state["nodes"]["head"] = self._start_node(state, "head", head=True, cpus=head_cpus, gpus=head_gpus,
                                                      resources=None, env=env, timeout=timeout)
            self.save(state)
            for _ in range(workers):
                self.add_node(cpus=worker_cpus, gpus=worker_gpus, resources=worker_resources, timeout=timeout)
        except Exception:
            self.down()
            raise
        return self.load()

    def add_node(self, *, cpus: float = 1, gpus: int = 0, resources: dict | None = None,
                 name: str | None = None, timeout: float = 90) -> dict:
        state = self.load()
        if name is None:
            n = 1 + sum(1 for k in state["nodes"] if k.startswith("worker-"))
            while f"worker-{n}" in state["nodes"]:
                n += 1
            name = f"worker-{n}"
        if name in state["nodes"] and _alive(state["nodes"][name]["pid"]):
            raise ClusterError(f"node {name} is already running")
        node = self._start_node(state, name, head=False, cpus=cpus, gpus=gpus, resources=resources,
                                env=state.get("env"), timeout=timeout)
        state = self.load()
        state["nodes"][name] = node
        self.save(state)
        return node

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> None:
        """SIGKILL the node's `ray start` and every process under it (raylet, agents, workers): the node
        is lost without notice, as when a machine dies. Ray workers run in sessions of their own, so
        they are found by parentage, not by process group."""
        node = self._node(name)
        for pid in reversed(_descendants(node["pid"])):
            _signal(pid, sig)
        _signal(node["pid"], sig)

    def stop_node(self, name: str, timeout: float = 30) -> None:
        """Stop one node gracefully (SIGTERM to its `ray start --block`, which stops its daemons)."""
        node = self._node(name)
        procs = [node["pid"], *_descendants(node["pid"])]
        _signal(node["pid"], signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and any(_alive(p) for p in procs):
            time.sleep(0.2)
        for pid in procs:  # whatever did not stop in time
            _signal(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in procs):
            time.sleep(0.1)

    def down(self, timeout: float = 30) -> None:
        """Stop every node, workers first: each gets ``timeout`` seconds to stop gracefully, then SIGKILL."""
        if not self.state_file.exists():
            return
        state = self.load()
        workers = [n for n, v in state["nodes"].items() if not v["head"]]
        for name in workers + [n for n in state["nodes"] if n not in workers]:
            self.stop_node(name, timeout=timeout)
        self.state_file.unlink(missing_ok=True)

    def _node(self, name: str) -> dict:
        state = self.load()
        if name not in state["nodes"]:
            raise ClusterError(f"no node {name!r}; nodes: {', '.join(state['nodes'])}")
        return state["nodes"][name]

    @staticmethod
    def alive_nodes(state: dict) -> list[str]:
        return [n for n, v in state["nodes"].items() if _alive(v["pid"])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _descendants(pid: int) -> list[int]:
    """Every live process under ``pid``, parents before children (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _parse_resources(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterError(f"--resources: not JSON ({exc}); e.g. '{{\"trainer\": 1}}'") from None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        raise ClusterError(f"--resources: a JSON object of numbers, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"cluster state folder (default {DEFAULT_DIR})")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a head and N worker nodes")
    up.add_argument("--head-cpus", type=float, default=0, help="CPUs of the head (default 0: drivers only)")
    up.add_argument("--head-gpus", type=int, default=0)
    up.add_argument("--workers", type=int, default=1, help="worker nodes (default 1)")
    up.add_argument("--worker-cpus", type=float, default=os.cpu_count() or 1, help="CPUs per worker node")
    up.add_argument("--worker-gpus", type=int, default=0)
    up.add_argument("--worker-resources", help="custom resources per worker node, JSON")
    up.add_argument("--port", type=int, help="GCS port of the head (default: a free one)")
    up.add_argument("--dashboard-port", type=int, help="dashboard / job API port (default: a free one)")
    add = sub.add_parser("add-node", help="start one more worker node; prints its name")
    add.add_argument("--cpus", type=float, default=1)
    add.add_argument("--gpus", type=int, default=0)
    add.add_argument("--resources", help="custom resources, JSON")
    add.add_argument("--name")
    kill = sub.add_parser("kill-node", help="SIGKILL a node and everything under it (lost without notice)")
    kill.add_argument("name")
    stop = sub.add_parser("stop-node", help="stop one node gracefully")
    stop.add_argument("name")
    sub.add_parser("down", help="stop every node this tool started, workers first")
    sub.add_parser("env", help="print the exports a shell needs (eval \"$(... env)\")")
    sub.add_parser("status", help="nodes, pids, liveness")
    args = p.parse_args(argv)
    c = Cluster(args.dir)
    try:
        if args.cmd == "up":
            state = c.up(head_cpus=args.head_cpus, head_gpus=args.head_gpus, workers=args.workers,
                         worker_cpus=args.worker_cpus, worker_gpus=args.worker_gpus,
                         worker_resources=_parse_resources(args.worker_resources), port=args.port,
                         dashboard_port=args.dashboard_port)
            print(f"local Ray cluster up: {len(state['nodes'])} node(s), GCS {state['gcs']}, "
                  f"dashboard and job API {state['job_api']}")
            print(f'submit jobs after:  eval "$({sys.executable} {Path(__file__).resolve()} --dir {c.root} env)"')
            print(f"RAY_ADDRESS={state['job_api']}")
        elif args.cmd == "add-node":
            print(c.add_node(cpus=args.cpus, gpus=args.gpus, resources=_parse_resources(args.resources),
                             name=args.name)["name"])
        elif args.cmd == "kill-node":
            c.kill_node(args.name)
        elif args.cmd == "stop-node":
            c.stop_node(args.name)
        elif args.cmd == "down":
            c.down()
        elif args.cmd == "env":
            for k, v in c.env().items():
                print(f"export {k}={shlex.quote(v)}")
        elif args.cmd == "status":
            state = c.load()
            for name, n in state["nodes"].items():
                print(f"{name:10s} pid {n['pid']:<8d} {'up  ' if _alive(n['pid']) else 'down'} "
                      f"CPU {n['cpus']:g} GPU {n['gpus']} {json.dumps(n['resources'])} node {n['node_id'][:12]}")
            print(f"job API {state['job_api']}  GCS {state['gcs']}")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
