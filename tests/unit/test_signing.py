"""The fetch stage's SigV4 signer gives the headers botocore's signer gives for the same GET."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore import auth
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from inference.signing import GetSigner
from inference.storage import object_url

NOW = dt.datetime(2026, 12, 6, 23, 59, 58, tzinfo=dt.UTC)


def botocore_headers(
    url: str, credentials: ReadOnlyCredentials, region: str, when: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.setattr(auth, "get_current_datetime", lambda: when.replace(tzinfo=None))
    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8333/frames/bench/a/000001.jpg",
        object_url("http://Minio.Local:9000/frames/", "v 1/a+b=c/ü~(x)!.jpg"),  # encoded key, upper-case host
        "http://frames.s3.eu-west-1.amazonaws.com/cam-7/000042.jpg",  # virtual-hosted, default port
        "http://[::1]:9000/frames/f.jpg",
    ],
)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////wEaDA+session/token=="])
def test_the_headers_are_botocores(url: str, token: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = ReadOnlyCredentials("AKIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token)

    ours = GetSigner("eu-west-1").headers(url, credentials, NOW)

    assert ours == botocore_headers(url, credentials, "eu-west-1", NOW, monkeypatch)


def test_a_new_day_and_a_rotated_secret_sign_with_a_new_key(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:8333/frames/f.jpg"
    signer = GetSigner("us-east-1")
    first = ReadOnlyCredentials("AKIA1", "secret-one", None)
    rotated = ReadOnlyCredentials("AKIA1", "secret-two", None)
    signer.headers(url, first, NOW)

    next_day = NOW + dt.timedelta(seconds=5)
    assert signer.headers(url, first, next_day) == botocore_headers(url, first, "us-east-1", next_day, monkeypatch)
    assert signer.headers(url, rotated, next_day) == botocore_headers(url, rotated, "us-east-1", next_day, monkeypatch)


def test_a_query_is_refused() -> None:
    with pytest.raises(ValueError, match="no query"):
        GetSigner("us-east-1").headers("http://s3/frames/f.jpg?versionId=1", ReadOnlyCredentials("a", "b", None), NOW)
