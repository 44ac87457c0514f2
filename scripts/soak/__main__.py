"""`python -m scripts.soak [--minutes N] [--seed S]` (`make soak`): the pipeline under random faults.

It starts its own 3-node cluster and S3 in a temporary folder, 2 exactly_once worker replicas,
and a steady task stream; faults drawn with the seed (kind and quiet time before each) land
until the time is up; then the stream stops and every task must have exactly one result. The
report is appended to docs/reliability.md; exit 0 when nothing is missing or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scripts import devstack
from scripts.devstack import cluster
from scripts.devstack.ports import wait_until
from scripts.devstack.processes import pid_alive
from scripts.devstack.state import REPO_ROOT
from scripts.soak.faults import CLUSTER_FAULTS, DOWN_S, TASK_PARTITIONS, Target
from scripts.soak.replicas import Replicas
from scripts.soak.report import Fault, Run, append_report
from scripts.soak.traffic import ProgressWatch, TaskStream
from scripts.soak.verify import all_committed, judge, read_results

TASKS_TOPIC, RESULTS_TOPIC, GROUP = "inference_tasks", "inference_results", "inference-group"
# Quiet time before each fault, drawn uniformly: the pipeline is seen to recover between faults.
QUIET_S = (20.0, 60.0)
FRAME_KEYS = [f"soak/{i:03d}.jpg" for i in range(24)]
REPORT = REPO_ROOT / "docs" / "reliability.md"
# Once the stream stops, the backlog of the last fault is answered and committed within this.
COMMIT_TIMEOUT_S = 600.0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 30))
    seed = os.environ.get("SOAK_SEED")
    parser.add_argument("--seed", type=int, default=int(seed) if seed else None, help="replays a schedule")
    parser.add_argument("--rate", type=float, default=15.0, help="tasks per second (default 15)")
    parser.add_argument("--report", type=Path, default=REPORT)
    return parser.parse_args(argv)


@dataclass
class Soak:
    state_dir: Path
    replicas: Replicas
    watch: ProgressWatch
    faults: list[Fault] = field(default_factory=list)

    def target(self) -> Target:
        return Target(self.state_dir, TASKS_TOPIC, RESULTS_TOPIC, GROUP, self.watch, self.replicas.replace_dead)

    def catalogue(self) -> dict[str, Callable[[Target], str]]:
        return {**CLUSTER_FAULTS, "replica_kill": self._kill_replica, "s3_stop": self._stop_s3}

    def _kill_replica(self, target: Target) -> str:
        return self.replicas.kill(len(self.faults) % self.replicas.count)

    def _stop_s3(self, target: Target) -> str:
        devstack.stop_server(self.state_dir, "s3")
        stopped_at = time.monotonic()
        try:
            target.hold(DOWN_S, stopped_at)
        finally:
            devstack.start_server(self.state_dir, "s3")
        return f"S3 stopped for {DOWN_S:.0f}s"

    def _restore(self) -> None:
        """Every server running again after a fault step that failed half-way."""
        info = self.target().info
        for node in info.nodes:
            if pid_alive(node.pid):
                cluster.freeze_node(self.state_dir, node.node_id, False)
            else:
                cluster.start_node(self.state_dir, node.node_id)
        if not pid_alive(info.s3_pid):
            devstack.start_server(self.state_dir, "s3")

    def inject(self, kind: str, started: float) -> None:
        at = time.monotonic()
        print(f"[{at - started:7.1f}s] {kind} ...", flush=True)  # noqa: T201
        target = self.target()
        try:
            outcome = self.catalogue()[kind](target)
        except Exception as exc:  # noqa: BLE001 - a step that failed is reported; the soak restores and goes on
            outcome = f"FAILED: {exc!r}"
            self._restore()
        cluster.wait_in_sync(target.info.bootstrap_servers)
        self.faults.append(Fault(kind, at - started, time.monotonic() - at, outcome))
        print(f"[{time.monotonic() - started:7.1f}s] {kind}: {outcome}", flush=True)  # noqa: T201


def soak(state_dir: Path, minutes: float, seed: int, rate: float, logs: Path) -> Run:
    info = devstack.read_state(state_dir)
    assert info is not None
    asyncio.run(_upload_frames(info))
    rng = random.Random(seed)  # noqa: S311 - a replayable schedule, not a secret
    env = {
        **info.env(),
        "KAFKA_DELIVERY": "exactly_once",
        "WORKER_PROCESSES": "1",
        "YOLO_OFFLINE": "1",
        "LOG_FORMAT": "json",
    }
    replicas = Replicas(env, logs)
    watch = ProgressWatch(info.bootstrap_servers, RESULTS_TOPIC)
    stream = TaskStream(info.bootstrap_servers, TASKS_TOPIC, FRAME_KEYS, rate, f"soak-{seed}", TASK_PARTITIONS)
    run = Soak(state_dir, replicas, watch)
    replicas.start()
    watch.start()
    stream.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < minutes * 60:
            quiet_until = time.monotonic() + rng.uniform(*QUIET_S)
            kind = rng.choice(sorted(run.catalogue()))
            while time.monotonic() < quiet_until:
                replicas.replace_dead()
                time.sleep(1.0)
            if time.monotonic() - started >= minutes * 60:
                break
            run.inject(kind, started)
    finally:
        expected = stream.stop()
    everything = functools.partial(all_committed, info.bootstrap_servers, GROUP, TASKS_TOPIC, TASK_PARTITIONS)
    wait_until(everything, COMMIT_TIMEOUT_S, "every task committed")
    watch.stop()
    replicas.stop()
    stall, stall_began = watch.longest_gap()
    verdict = judge(expected, asyncio.run(read_results(info.bootstrap_servers, RESULTS_TOPIC)))
    return Run(
        seed=seed,
        minutes=minutes,
        took_minutes=(time.monotonic() - started) / 60,
        rate=rate,
        verdict=verdict,
        longest_stall_s=stall,
        longest_stall_at_s=stall_began - started,
        faults=run.faults,
        unacknowledged=len(stream.failures),
        replica_exits=replicas.unexpected_exits,
        load=os.getloadavg(),
    )


async def _upload_frames(info: devstack.StackInfo) -> None:
    import aioboto3
    import cv2
    import numpy as np

    from scripts.synthetic import make_frame

    session = aioboto3.Session(aws_access_key_id=devstack.S3_ACCESS_KEY, aws_secret_access_key=devstack.S3_SECRET_KEY,
                               region_name=devstack.S3_REGION)  # fmt: skip
    async with session.client("s3", endpoint_url=info.s3_endpoint_url) as s3:
        for i, key in enumerate(FRAME_KEYS):
            image, _ = make_frame(np.random.default_rng(i), 320, 192)
            ok, data = cv2.imencode(".jpg", image)
            assert ok
            await s3.put_object(Bucket=devstack.FRAMES_BUCKET, Key=key, Body=bytes(data))


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    # The soak's own clients ride out every fault by design; their complaints would bury its report.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"soak: seed {seed}, {args.minutes:g} min; replay with SOAK_SEED={seed}", flush=True)  # noqa: T201
    logs = REPO_ROOT / "out" / f"soak-{seed}"
    logs.mkdir(parents=True, exist_ok=True)
    begun = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="soak-stack-") as tmp:
        state_dir = Path(tmp)
        devstack.up(state_dir, devstack.free_port_run(3), devstack.free_port(), brokers=3,
                    broker_settings=cluster.FAULT_SETTINGS)  # fmt: skip
        try:
            run = soak(state_dir, args.minutes, seed, args.rate, logs)
        finally:
            devstack.down(state_dir)
    append_report(args.report, run, begun, logs)
    kinds = collections.Counter(f.kind for f in run.faults)
    print(f"soak: {run.verdict}, faults {dict(kinds)}, longest stall {run.longest_stall_s:.1f}s", flush=True)  # noqa: T201
    return 0 if run.verdict.missing == run.verdict.duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
