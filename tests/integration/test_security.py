"""The pipeline on a Kafka that speaks SASL_SSL only, as principals holding only their ACLs.

One secured stack serves the session (`secure_stack`): users admin, worker and runner, a CA of
its own. Every case below gets fresh topic and group names, and all their ACLs are granted in
one go at the start (each AclCommand call is a JVM start). A case that leaves one ACL out shows
that the program needs it: the program ends with the clear exit and names the permission.
After every test, no password appears in anything it captured, nor in the broker's logs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from scripts import devstack
from scripts.devstack import Acl, runner_acls, worker_acls
from scripts.synthetic import write_demo_video
from tests.stack import SecuredStack
from tests.support import MODEL_PATH, REPO_ROOT, Topics, WorkerProcess

WORKER, RUNNER = "worker", "runner"
FRAMES = 8
WORKER_EXIT_S = 60.0  # model load included
RUNNER_EXIT_S = 60.0
DENIED = 3  # the worker's exit code for a missing ACL
WRONG_PASSWORD = f"not-the-password-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Names:
    """One case's topics, worker group and collector group."""

    topics: Topics
    collector: str

    @classmethod
    def unique(cls) -> Names:
        topics = Topics.unique()
        return cls(topics, topics.group.replace("group-", "collector-"))

    def acls(self) -> list[Acl]:
        """Everything the worker and the runner need for these names."""
        t = self.topics
        return worker_acls(t.tasks, t.results, t.dlq, t.group, models=t.models) + runner_acls(
            t.tasks, t.results, [self.collector], models=t.models, status=t.status
        )

    def without(self, missing: Acl) -> list[Acl]:
        granted = self.acls()
        assert missing in granted, f"{missing} is not one of the ACLs these names need"
        return [acl for acl in granted if acl != missing]


# What each case is granted: the full set, or the full set less one ACL.
CASES: dict[str, Callable[[Names], list[Acl]]] = {
    "at_least_once": Names.acls,
    "exactly_once": Names.acls,
    "worker-tasks-read": lambda n: n.without(Acl(WORKER, "Read", "topic", n.topics.tasks)),
    "worker-group-read": lambda n: n.without(Acl(WORKER, "Read", "group", n.topics.group)),
    "worker-results-write": lambda n: n.without(Acl(WORKER, "Write", "topic", n.topics.results)),
    "worker-dlq-write": lambda n: n.without(Acl(WORKER, "Write", "topic", n.topics.dlq)),
    "worker-transactions": lambda n: n.without(
        Acl(WORKER, "Write", "transactional-id", f"{n.topics.group}-", prefixed=True)
    ),
    "runner-tasks-write": lambda n: n.without(Acl(RUNNER, "Write", "topic", n.topics.tasks)),
    "runner-results-read": lambda n: n.without(Acl(RUNNER, "Read", "topic", n.topics.results)),
    "runner-collector-group": lambda n: n.without(Acl(RUNNER, "Read", "group", n.collector)),
    # `worker` writing tasks: all a split needs but runner's transactional-id prefix.
    "split-transactions": lambda n: [Acl(WORKER, "Write", "topic", n.topics.tasks)],
}


async def create_topics(stack: SecuredStack, topics: list[Topics]) -> None:
    admin = AIOKafkaAdminClient(**stack.kafka_options())
    await admin.start()
    try:
        partitions = {name: 3 for t in topics for name in (t.tasks, t.high, t.low, t.results)}
        partitions |= {name: 1 for t in topics for name in (t.dlq, t.models, t.status)}
        await admin.create_topics([NewTopic(name, n, 1) for name, n in partitions.items()])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def names(secure_stack: SecuredStack) -> dict[str, Names]:
    """Fresh names per case, their topics made and every case's ACLs granted at once."""
    chosen = {case: Names.unique() for case in CASES}
    asyncio.run(create_topics(secure_stack, [n.topics for n in chosen.values()]))
    secure_stack.grant(acl for case, n in chosen.items() for acl in CASES[case](n))
    return chosen


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    write_demo_video(folder / "demo.mp4", folder / "truth.json", FRAMES, 320, 192, 10.0)
    return folder / "demo.mp4"


@pytest.fixture(autouse=True)
def no_secret_in_output(secure_stack: SecuredStack, tmp_path: Path) -> Iterator[None]:
    """After the test: no password (nor the wrong one tried) in what it captured or the broker logged."""
    yield
    secrets = [*secure_stack.passwords().values(), WRONG_PASSWORD, devstack.S3_SECRET_KEY]
    kafka_dir = Path(secure_stack.info.state_dir) / "kafka"
    captured = [p for p in tmp_path.rglob("*") if p.is_file()] + [kafka_dir / "kafka.log", secure_stack.authorizer_log]
    leaks = [(str(p), s[:4] + "...") for p in captured for s in secrets if s.encode() in p.read_bytes()]
    assert not leaks, f"secrets in captured output: {leaks}"


class Programs:
    """The worker and the runner as subprocesses, their output kept in files under the test's tmp_path."""

    def __init__(self, stack: SecuredStack, tmp_path: Path) -> None:
        self._stack = stack
        self._tmp = tmp_path
        self._workers: list[WorkerProcess] = []
        self._runs = 0

    def env(self, user: str, names: Names, **overrides: str) -> dict[str, str]:
        return {**self._stack.env(user), **names.topics.env(), "LOG_FORMAT": "json", "YOLO_OFFLINE": "1",
                **overrides}  # fmt: skip

    def worker(self, names: Names, user: str = WORKER, **overrides: str) -> WorkerProcess:
        env = {**self.env(user, names), "MODEL_PATH": str(MODEL_PATH), "WORKER_PROCESSES": "1",
               "WORKER_DRAIN_TIMEOUT_S": "30", **overrides}  # fmt: skip
        worker = WorkerProcess(env, self._tmp / f"worker-{len(self._workers)}.log")
        self._workers.append(worker)
        return worker

    def runner(
        self, names: Names, *args: str, user: str = RUNNER, timeout_s: float = RUNNER_EXIT_S, **overrides: str
    ) -> subprocess.CompletedProcess[str]:
        """`python -m runner ARGS` as `user`, ended within `timeout_s`; stdout and stderr are kept in files."""
        done = subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=REPO_ROOT,
            env={**_inherited(), **self.env(user, names, **overrides)},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        self._runs += 1
        (self._tmp / f"runner-{self._runs}.stdout").write_text(done.stdout)
        (self._tmp / f"runner-{self._runs}.stderr").write_text(done.stderr)
        return done

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


def _inherited() -> dict[str, str]:
    """This process's environment without Kafka settings, which would reach the other stack."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}


@pytest.fixture
def programs(secure_stack: SecuredStack, tmp_path: Path) -> Iterator[Programs]:
    started = Programs(secure_stack, tmp_path)
    yield started
    started.close()


def exit_code(worker: WorkerProcess, timeout_s: float = WORKER_EXIT_S) -> int:
    try:
        return worker.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker still runs after {timeout_s}s (log: {worker.log_path})") from None


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert lines, "no output at all"
    return lines[-1]


def names_permission(line: str, *words: str) -> bool:
    return all(word in line for word in words)


async def produce_as_admin(stack: SecuredStack, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**stack.kafka_options(), acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_results(stack: SecuredStack, topic: str, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every committed result of `topic` once `count` are there, up to its end then, read as admin."""
    consumer = AIOKafkaConsumer(topic, **stack.kafka_options(), enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    values: list[dict[str, Any]] = []
    end: dict[Any, int] | None = None
    try:
        deadline = time.monotonic() + timeout_s
        while end is None or any([await consumer.position(tp) < offset for tp, offset in end.items()]):
            assert time.monotonic() < deadline, f"{topic}: {len(values)}/{count} results after {timeout_s}s"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                values += [orjson.loads(r.value) for r in records]
            if end is None and len(values) >= count:
                end = await consumer.end_offsets(list(consumer.assignment()))
    finally:
        await consumer.stop()
    return values


def denials_since(stack: SecuredStack, offset: int) -> list[str]:
    return stack.authorizer_log.read_bytes()[offset:].decode().splitlines()


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


# --------------------------------------------------------------------------- the whole path


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_the_whole_path_runs_as_worker_and_runner_with_only_their_acls(
    secure_stack: SecuredStack, names: dict[str, Names], programs: Programs, video: Path, tmp_path: Path, delivery: str
) -> None:
    n = names[delivery]
    denials_from = secure_stack.authorizer_log.stat().st_size
    worker = programs.worker(n, KAFKA_DELIVERY=delivery)
    collected, ran = f"split-{uuid.uuid4().hex[:6]}", f"run-{uuid.uuid4().hex[:6]}"

    split = programs.runner(n, "split", str(video), "--video-id", collected)
    assert split.returncode == 0, split.stderr
    out = tmp_path / "out"
    collect = programs.runner(n, "collect", "--out", str(out), "--video-id", collected, "--group", n.collector,
                              "--timeout", "120", timeout_s=180)  # fmt: skip
    assert collect.returncode == 0, collect.stderr
    run = programs.runner(n, "run", str(video), "--out", str(tmp_path / "run.json"), "--video-id", ran,
                          "--timeout", "120", timeout_s=180)  # fmt: skip
    assert run.returncode == 0, run.stderr

    for document in (load(out / f"{collected}.json"), load(tmp_path / "run.json")):
        assert document["complete"] is True
        assert [f["frame_id"] for f in document["frames"]] == list(range(FRAMES))
        assert (document["error_count"], document["duplicate_count"]) == (0, 0)
    results = asyncio.run(read_results(secure_stack, n.topics.results, 2 * FRAMES))
    answers = Counter((r["video_id"], r["frame_id"]) for r in results)
    assert answers == Counter({(v, i): 1 for v in (collected, ran) for i in range(FRAMES)})
    worker.proc.terminate()
    assert exit_code(worker, 60) == 0
    assert denials_since(secure_stack, denials_from) == [], "the full set of ACLs was not enough"


# --------------------------------------------------------------------------- one ACL missing: the worker


WORKER_CASES = {
    # case: (settings, a record to produce first, the words its line must hold)
    "worker-tasks-read": ({}, None, lambda n: ("Read", n.topics.tasks)),
    "worker-group-read": ({}, None, lambda n: ("Read", n.topics.group)),
    "worker-transactions": ({"KAFKA_DELIVERY": "exactly_once"}, None, lambda n: ("Write", f"{n.topics.group}-")),
    "worker-results-write": ({}, "task", lambda n: ("Write", n.topics.results)),
    "worker-dlq-write": ({}, "garbage", lambda n: ("Write", n.topics.dlq)),
}


@pytest.mark.parametrize("case", list(WORKER_CASES))
def test_a_worker_missing_an_acl_exits_3_naming_the_permission(
    secure_stack: SecuredStack, names: dict[str, Names], programs: Programs, case: str
) -> None:
    n = names[case]
    settings, record, words = WORKER_CASES[case]
    if record == "task":  # any task is answered, a missing frame with an error result
        task = {"video_id": "v", "frame_id": 0, "s3_key": f"{n.topics.group}/missing.jpg"}
        asyncio.run(produce_as_admin(secure_stack, n.topics.tasks, [(b"v", orjson.dumps(task))]))
    elif record == "garbage":  # goes to the DLQ
        asyncio.run(produce_as_admin(secure_stack, n.topics.tasks, [(b"v", b"not a task")]))
    worker = programs.worker(n, **settings)
    assert exit_code(worker) == DENIED, worker.log_path.read_text()[-2000:]
    line = last_line(worker.log_path.read_text())
    assert names_permission(line, *words(n)), line


# --------------------------------------------------------------------------- one ACL missing: the runner


def test_split_without_write_on_tasks_exits_1_naming_it(
    names: dict[str, Names], programs: Programs, video: Path
) -> None:
    n = names["runner-tasks-write"]
    done = programs.runner(n, "split", str(video), "--video-id", "no-write")
    assert done.returncode == 1
    assert names_permission(last_line(done.stderr), "Write", n.topics.tasks), done.stderr


def test_split_without_its_transactional_id_prefix_exits_1_naming_it(
    names: dict[str, Names], programs: Programs, video: Path
) -> None:
    n = names["split-transactions"]
    done = programs.runner(n, "split", str(video), "--video-id", "no-txn", user=WORKER)
    assert done.returncode == 1
    assert names_permission(last_line(done.stderr), "Write", "runner-split-no-txn"), done.stderr


def test_collect_and_run_without_read_on_results_exit_1_naming_it(
    names: dict[str, Names], programs: Programs, video: Path, tmp_path: Path
) -> None:
    n = names["runner-results-read"]
    collect = programs.runner(n, "collect", "--out", str(tmp_path), "--group", n.collector, "--timeout", "30")
    assert collect.returncode == 1
    assert names_permission(last_line(collect.stderr), "Read", n.topics.results), collect.stderr
    run = programs.runner(n, "run", str(video), "--out", str(tmp_path / "r.json"), "--timeout", "30")
    assert run.returncode == 1
    assert names_permission(last_line(run.stderr), "Read", n.topics.results), run.stderr


def test_collect_without_its_group_exits_1_naming_it(
    names: dict[str, Names], programs: Programs, tmp_path: Path
) -> None:
    n = names["runner-collector-group"]
    done = programs.runner(n, "collect", "--out", str(tmp_path), "--group", n.collector, "--timeout", "30")
    assert done.returncode == 1
    assert names_permission(last_line(done.stderr), "Read", n.collector), done.stderr


# --------------------------------------------------------------------------- wrong password, untrusted CA


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing of the stack's."""
    return devstack.make_ca(tmp_path_factory.mktemp("other-ca"), "other-ca")


def refusal(other_ca: Path, case: str) -> tuple[dict[str, str], str]:
    """The setting that makes the broker refuse the client, and a word its line must hold."""
    return {
        "wrong-password": ({"KAFKA_SASL_PLAIN_PASSWORD": WRONG_PASSWORD}, "authentication"),
        "untrusted-ca": ({"KAFKA_SSL_CAFILE": str(other_ca)}, "certificate"),
    }[case]


@pytest.mark.parametrize("case", ["wrong-password", "untrusted-ca"])
def test_the_runner_refused_a_connection_fails_with_one_line(
    names: dict[str, Names], programs: Programs, video: Path, other_ca: Path, case: str
) -> None:
    settings, word = refusal(other_ca, case)
    done = programs.runner(names["at_least_once"], "split", str(video), "--video-id", case, **settings)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert word in lines[0].lower(), lines[0]
    print(f"runner, {case}: exit {done.returncode}: {lines[0]}")  # noqa: T201 - recorded in the report


@pytest.mark.parametrize("case", ["wrong-password", "untrusted-ca"])
def test_the_worker_refused_a_connection_fails_with_one_line(
    names: dict[str, Names], programs: Programs, other_ca: Path, case: str
) -> None:
    settings, word = refusal(other_ca, case)
    worker = programs.worker(names["at_least_once"], **settings)
    code = exit_code(worker)
    assert code != 0
    failures = [line for line in worker.log_lines() if line["level"] == "critical"]
    assert len(failures) == 1, worker.log_path.read_text()
    assert word in orjson.dumps(failures[0]).decode().lower(), failures[0]
    print(f"worker, {case}: exit {code}: {failures[0]}")  # noqa: T201 - recorded in the report
    assert orjson.loads(last_line(worker.log_path.read_text())) == failures[0], "more was logged after it"
