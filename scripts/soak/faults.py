"""The cluster's fault catalogue: each fault finds the node holding a role, then kills, freezes or restarts it.

A role is always read from the cluster (metadata, FindCoordinator, the metadata quorum), never
guessed. Each fault returns once the cluster has what it needs to serve again (a new leader, a
new coordinator, a new controller), the node is back, and every partition is in sync.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.devstack import cluster
from scripts.devstack.errors import StackError
from scripts.devstack.ports import wait_until
from scripts.devstack.state import StackInfo, read_state
from scripts.soak.traffic import ProgressWatch

# A killed node is started again after this long.
DOWN_S = 10.0
# A dead or frozen node's roles move once the controller fences it (broker.session.timeout.ms,
# 9 s); a bound well past that, for a loaded machine.
FAILOVER_S = 60.0
TASK_PARTITIONS = 6


@dataclass(frozen=True)
class Target:
    """What a fault acts on and watches: the cluster, the pipeline's topics and group, its progress."""

    state_dir: Path
    tasks_topic: str
    results_topic: str
    group: str
    watch: ProgressWatch
    # Raises when something that must ride the fault out (a worker replica) did not.
    check: Callable[[], None]

    @property
    def info(self) -> StackInfo:
        info = read_state(self.state_dir)
        if info is None:
            raise StackError(f"no stack runs in {self.state_dir}")
        return info

    def bootstrap_without(self, node_id: int) -> str:
        """The other nodes' addresses: a probe that asks a dead or frozen node waits for its timeout."""
        return ",".join(n.address for n in self.info.nodes if n.node_id != node_id)

    def transactional_ids(self) -> list[str]:
        """The replicas' transactional ids: one per task partition (docs/exactly-once.md)."""
        return [f"{self.group}-{self.tasks_topic}-{p}" for p in range(TASK_PARTITIONS)]

    def hold(self, seconds: float, since: float) -> None:
        """Keep a fault for its stated duration, counted from `since`, checking all along."""
        while time.monotonic() < since + seconds:
            self.check()
            time.sleep(0.5)

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for a condition of the cluster; a probe that fails mid-failover means "not yet"."""

        def probe() -> bool:
            self.check()
            with contextlib.suppress(Exception):
                return condition()
            return False

        wait_until(probe, FAILOVER_S, what, interval_s=0.5)


def _leader(target: Target, partition: int, without: int) -> int:
    described = asyncio.run(cluster.partitions(target.bootstrap_without(without)))
    return next(
        int(p["leader"]) for p in described if (p["topic"], p["partition"]) == (target.results_topic, partition)
    )


def kill_results_leader(target: Target) -> str:
    """kill -9 the leader of the results partition with the most answers; restart it after DOWN_S."""
    busiest = collections.Counter(p for p, _ in list(target.watch.records)).most_common(1)
    partition = busiest[0][0] if busiest else 0
    info = target.info
    leader = asyncio.run(cluster.partition_leader(info.bootstrap_servers, target.results_topic, partition))
    cluster.kill_node(target.state_dir, leader)
    killed_at = time.monotonic()
    target.wait(lambda: _leader(target, partition, leader) not in (leader, -1),
                f"{target.results_topic}[{partition}] to get a leader other than node {leader}")  # fmt: skip
    target.hold(DOWN_S, killed_at)
    cluster.start_node(target.state_dir, leader)
    return f"node {leader}, leader of {target.results_topic}[{partition}], killed for {DOWN_S:.0f}s"


def kill_transaction_coordinator(target: Target) -> str:
    """kill -9 the node coordinating most of the replicas' transactional ids; restart it after DOWN_S."""
    ids = target.transactional_ids()
    coordinators = asyncio.run(cluster.transaction_coordinators(target.info.bootstrap_servers, ids))
    node, count = collections.Counter(coordinators.values()).most_common(1)[0]
    mine = [tid for tid, n in coordinators.items() if n == node]
    cluster.kill_node(target.state_dir, node)
    killed_at = time.monotonic()

    def moved() -> bool:
        now = asyncio.run(cluster.transaction_coordinators(target.bootstrap_without(node), mine))
        return node not in now.values()

    target.wait(moved, f"the transactional ids of node {node} to get another coordinator")
    target.hold(DOWN_S, killed_at)
    cluster.start_node(target.state_dir, node)
    return f"node {node}, coordinator of {count}/{len(ids)} transactional ids, killed for {DOWN_S:.0f}s"


def _controller_without(target: Target, node: int) -> int:
    return cluster.active_controller(tuple(n for n in target.info.nodes if n.node_id != node))


def kill_active_controller(target: Target) -> str:
    """kill -9 the active controller; restart it after DOWN_S, once another node leads the quorum."""
    controller = cluster.active_controller(target.info.nodes)
    cluster.kill_node(target.state_dir, controller)
    killed_at = time.monotonic()
    target.wait(lambda: _controller_without(target, controller) not in (controller, -1),
                "another node to become the active controller")  # fmt: skip
    target.hold(DOWN_S, killed_at)
    cluster.start_node(target.state_dir, controller)
    return f"node {controller}, the active controller, killed for {DOWN_S:.0f}s"


def freeze_out_of_isr(target: Target) -> str:
    """SIGSTOP a node (not the active controller) until it has left every results partition's ISR; SIGCONT.

    Leaving the ISR takes replica.lag.time.max.ms (the test cluster's 5 s) of silence.
    """
    controller = cluster.active_controller(target.info.nodes)
    node = next(n.node_id for n in reversed(target.info.nodes) if n.node_id != controller)
    cluster.freeze_node(target.state_dir, node, True)
    frozen_at = time.monotonic()
    try:

        def out_of_isr() -> bool:
            described = asyncio.run(cluster.partitions(target.bootstrap_without(node)))
            results = [p for p in described if p["topic"] == target.results_topic]
            return bool(results) and all(node not in p["isr"] for p in results)

        target.wait(out_of_isr, f"node {node} to leave the ISR of every results partition")
    finally:
        cluster.freeze_node(target.state_dir, node, False)
    return f"node {node} frozen {time.monotonic() - frozen_at:.1f}s, until out of every results ISR"


def rolling_restart(target: Target) -> str:
    """Restart every node in turn (SIGTERM: controlled shutdown), the next once all are in sync again."""
    for node in target.info.nodes:
        cluster.stop_node(target.state_dir, node.node_id)
        cluster.start_node(target.state_dir, node.node_id)
        cluster.wait_in_sync(target.info.bootstrap_servers)
        target.check()
    return "nodes " + ", ".join(str(n.node_id) for n in target.info.nodes) + " restarted in turn"


CLUSTER_FAULTS: dict[str, Callable[[Target], str]] = {
    "leader_kill": kill_results_leader,
    "coordinator_kill": kill_transaction_coordinator,
    "controller_kill": kill_active_controller,
    "isr_freeze": freeze_out_of_isr,
    "rolling_restart": rolling_restart,
}
