"""Drain this Ray node when EC2 announces a spot interruption.

EC2 posts the notice on the instance metadata service (IMDSv2) about two minutes before it reclaims
a spot instance. Ray's cluster launcher on AWS does not watch for it, so this runs beside `ray start`
on every spot worker (see worker_start_ray_commands in dft-cluster.yaml) and turns the notice into
``ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION``. Ray Train then reports the preemption to the
training loop, which saves a checkpoint to S3 before the node is gone, and the run resumes from it.

Standard library only: it runs in the node's venv before anything else is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("spot_watch")

IMDS = os.environ.get("DFT_IMDS_ENDPOINT", "http://169.254.169.254")
# Used when the notice carries no parsable time.
DEFAULT_DEADLINE_S = 120


def _token(timeout: float) -> str:
    req = urllib.request.Request(
        f"{IMDS}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def interruption_notice(timeout: float = 2.0) -> dict | None:
    """The spot instance-action document ({"action": "terminate", "time": "..."}), or None."""
    req = urllib.request.Request(
        f"{IMDS}/latest/meta-data/spot/instance-action", headers={"X-aws-ec2-metadata-token": _token(timeout)}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        if e.code == 404:  # no interruption scheduled
            return None
        raise


def seconds_left(notice: dict, now: datetime | None = None) -> int:
    try:
        when = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except (KeyError, ValueError):
        return DEFAULT_DEADLINE_S
    now = now or datetime.now(timezone.utc)
    return max(0, int((when - now).total_seconds()))


def drain_command(notice: dict, ray_bin: str, now: datetime | None = None) -> list[str]:
    return [
        ray_bin,
        "drain-node",
        "--reason",
        "DRAIN_NODE_REASON_PREEMPTION",
        "--reason-message",
        f"EC2 spot interruption: {notice.get('action', 'terminate')} at {notice.get('time', '?')}",
        "--deadline-remaining-seconds",
        str(seconds_left(notice, now)),
    ]


def _default_ray_bin() -> str:
    return os.environ.get("DFT_RAY_BIN") or str(Path(sys.executable).parent / "ray")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=5.0, help="Seconds between metadata polls.")
    p.add_argument("--once", action="store_true", help="Poll once; exit 0 after draining, 1 if no notice.")
    p.add_argument("--ray-bin", default=_default_ray_bin())
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    while True:
        try:
            notice = interruption_notice()
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.warning("instance metadata not reachable: %s", e)
            notice = None
        if notice:
            cmd = drain_command(notice, args.ray_bin)
            log.warning("spot interruption notice %s: %s", notice, " ".join(cmd))
            rc = subprocess.run(cmd, check=False).returncode
            if rc != 0:
                log.error("ray drain-node exited %d", rc)
            return 0 if rc == 0 else 2
        if args.once:
            return 1
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
