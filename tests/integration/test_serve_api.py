"""`runner serve` against real Kafka and S3, without workers: keys, limits, media check, ids that
look like paths, the answers of unknown and unfinished videos, and a contract fuzz of /openapi.json."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from scripts.synthetic import write_demo_video
from tests.stack import Endpoints
from tests.support import ServeProcess, Topics, create_topics, s3_session, wait_for

KEY, OTHER_KEY = "key-one", "key-two"
UPLOAD_LIMIT = 200_000
RATE_LIMIT = 5
EXAMPLES = 6


@pytest.fixture(scope="module")
def module_topics(stack: Endpoints) -> Topics:
    names = Topics.unique()
    partitions = {names.tasks: 2, names.high: 2, names.low: 2, names.results: 2, names.dlq: 1, names.models: 1,
                  names.status: 1}  # fmt: skip
    asyncio.run(create_topics(stack.bootstrap_servers, partitions, names.compacted))
    return names


def _env(stack: Endpoints, topics: Topics, **extra: str) -> dict[str, str]:
    return {**stack.env(), **topics.env(), "LOG_FORMAT": "json", "API_KEYS": f"{KEY},{OTHER_KEY}",
            "API_COLLECTOR_GROUP": f"serve-{topics.group}", **extra}  # fmt: skip


@pytest.fixture(scope="module")
def servers(
    stack: Endpoints, module_topics: Topics, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two servers on the same topics: one with a small upload limit, one with a small rate limit."""
    logs = tmp_path_factory.mktemp("serve")
    main = ServeProcess(_env(stack, module_topics, API_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT)), logs / "main.log")
    limited = ServeProcess(_env(stack, module_topics, API_RATE_LIMIT=str(RATE_LIMIT)), logs / "limited.log")
    try:
        yield main.wait_ready(), limited.wait_ready()
    finally:
        for server in (main, limited):
            server.close()
        for server in (main, limited):
            assert KEY not in server.log_text() and OTHER_KEY not in server.log_text(), "an API key was logged"


@pytest.fixture(scope="module")
def server(servers: tuple[ServeProcess, ServeProcess]) -> ServeProcess:
    return servers[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("clip")
    write_demo_video(folder / "clip.mp4", folder / "truth.json", 6, 160, 96, 10.0)
    return (folder / "clip.mp4").read_bytes()


@pytest.fixture(autouse=True)
def clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    CLIENTS.append(opened)
    yield opened
    CLIENTS.pop()
    for made in opened:
        made.close()


CLIENTS: list[list[httpx.Client]] = []


def client(server: ServeProcess, key: str | None = KEY) -> httpx.Client:
    """A client closed at the end of the test."""
    made = httpx.Client(base_url=server.url, headers={"X-API-Key": key} if key else {}, timeout=30)
    CLIENTS[-1].append(made)
    return made


def test_every_v1_call_needs_a_valid_key_and_the_rest_needs_none(server: ServeProcess) -> None:
    for path in ("/v1/videos", "/v1/videos/some-id", "/v1/models"):
        assert client(server, None).get(path).status_code == 401
        assert client(server, "wrong").get(path).status_code == 403
    assert client(server, None).post("/v1/videos", files={"file": ("a.mp4", b"x")}).status_code == 401
    assert client(server).get("/v1/videos").status_code == 200
    assert client(server, OTHER_KEY).get("/v1/models").json() == []
    anonymous = client(server, None)
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert "runner_api_requests_total" in anonymous.get("/metrics").text
    page = anonymous.get("/")
    assert page.status_code == 200 and "upload-form" in page.text
    assert anonymous.get("/static/console.js").status_code == 200


def test_an_upload_over_the_limit_is_refused_with_413_declared_or_streamed(server: ServeProcess) -> None:
    body = b"\0" * (2 * UPLOAD_LIMIT)
    declared = client(server).post("/v1/videos", files={"file": ("big.mp4", body)})
    assert declared.status_code == 413, declared.text

    def chunks() -> Iterator[bytes]:
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
        for _ in range(8):
            yield b"\0" * (UPLOAD_LIMIT // 4)
        yield b"\r\n" + boundary + b"--\r\n"

    streamed = client(server).post("/v1/videos", content=chunks(),
                                   headers={"Content-Type": "multipart/form-data; boundary=b0undary"})  # fmt: skip
    assert streamed.status_code == 413, streamed.text


def test_a_file_that_is_not_a_video_is_refused_with_415(server: ServeProcess) -> None:
    answer = client(server).post("/v1/videos", files={"file": ("notes.mp4", b"these are not frames\n" * 50)})
    assert answer.status_code == 415, answer.text


def test_the_rate_limit_is_per_key_and_answers_429(servers: tuple[ServeProcess, ServeProcess]) -> None:
    limited = servers[1]
    answers = [client(limited, OTHER_KEY).get("/v1/videos").status_code for _ in range(RATE_LIMIT + 1)]
    assert answers == [200] * RATE_LIMIT + [429]
    refused = client(limited, OTHER_KEY).get("/v1/videos")
    assert int(refused.headers["Retry-After"]) >= 1
    assert client(limited, KEY).get("/v1/videos").status_code == 200


def test_ids_and_file_names_like_paths_stay_inside_their_prefix(
    server: ServeProcess, clip: bytes, stack: Endpoints
) -> None:
    api = client(server)
    for bad in ("..", ".hidden", "../up", "a/b", "x" * 201):
        answer = api.post("/v1/videos", files={"file": ("clip.mp4", clip)}, data={"video_id": bad})
        assert answer.status_code == 422, (bad, answer.text)
    accepted = api.post("/v1/videos", files={"file": ("../../../etc/passwd.mp4", clip)})
    assert accepted.status_code == 202, accepted.text
    video_id = accepted.json()["video_id"]
    assert video_id.startswith("passwd-") and "/" not in video_id
    assert accepted.json()["status_url"] == f"/v1/videos/{video_id}"
    assert api.get("/v1/videos/..").status_code in (404, 422)

    async def keys(bucket: str, prefix: str) -> list[str]:
        async with s3_session(stack).client("s3", endpoint_url=stack.s3_endpoint_url) as s3:
            listing = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
            return [o["Key"] for o in listing.get("Contents", [])]

    uploads = [k for k in asyncio.run(keys("results", "uploads/")) if k.startswith("uploads/")]
    assert f"uploads/{video_id}" in uploads
    assert all(k.count("/") == 1 and ".." not in k for k in uploads)
    wait_for(lambda: api.get(f"/v1/videos/{video_id}").json()["state"] == "running", 60, "the split")
    assert sorted(k for k in asyncio.run(keys("frames", f"{video_id}/")) if k.startswith(f"{video_id}/")) == [
        f"{video_id}/{i:06d}.jpg" for i in range(6)
    ]


def test_unknown_and_unfinished_videos(server: ServeProcess, clip: bytes) -> None:
    api = client(server)
    assert api.get("/v1/videos/no-such-video").status_code == 404
    assert api.get("/v1/videos/no-such-video/result").status_code == 404
    assert api.get("/v1/videos/no-such-video/annotated.mp4").status_code == 404
    fields = {"video_id": "unfinished-1", "every": "2", "priority": "high", "model": "shapes@3"}
    accepted = api.post("/v1/videos", files={"file": ("clip.mp4", clip)}, data=fields)
    assert accepted.status_code == 202, accepted.text
    status = api.get("/v1/videos/unfinished-1").json()
    assert (status["priority"], status["model"], status["state"]) == ("high", "shapes@3", status["state"])
    assert status["state"] in ("queued", "running")
    assert api.get("/v1/videos/unfinished-1/result").status_code == 409
    assert api.get("/v1/videos/unfinished-1/annotated.mp4").status_code == 409
    again = api.post("/v1/videos", files={"file": ("clip.mp4", clip)}, data={"video_id": "unfinished-1"})
    assert again.status_code == 409
    listed = api.get("/v1/videos", params={"state": status["state"]}).json()
    assert "unfinished-1" in [v["video_id"] for v in listed]
    assert api.get("/v1/videos", params={"state": "bogus"}).status_code == 422


def test_the_api_keeps_its_openapi_contract(server: ServeProcess) -> None:
    """A few examples per operation from /openapi.json: no 5xx, every answer as its schema says."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    answers: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=server.url, headers={"X-API-Key": KEY},
                                              checks=[not_a_server_error, response_schema_conformance])  # fmt: skip
            answers.append(response.status_code)

        check()
    print(f"contract fuzz: {len(answers)} requests, statuses {sorted(set(answers))}")  # noqa: T201
    assert len(answers) >= 3 * len(operations)
