"""Pure parts of the fetch stage: object URLs and how S3's answers map to errors."""

from __future__ import annotations

import pytest

from inference.errors import FrameNotFound, StorageUnavailable
from inference.storage import object_url, status_error


def test_object_url_encodes_the_key_like_botocore() -> None:
    assert (
        object_url("http://s3:9000/frames/", "v 1/a+b=c/ü~.jpg") == "http://s3:9000/frames/v%201/a%2Bb%3Dc/%C3%BC~.jpg"
    )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, b"<Error><Code>NoSuchKey</Code></Error>", FrameNotFound),
        (404, b"", FrameNotFound),
        (400, b"<Error><Code>InvalidBucketName</Code></Error>", FrameNotFound),
        (400, b"<Error><Code>KeyTooLongError</Code></Error>", FrameNotFound),
        (403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", StorageUnavailable),
        (503, b"<Error><Code>SlowDown</Code></Error>", StorageUnavailable),
        (500, b"not xml", StorageUnavailable),
        (301, b"<Error><Code>PermanentRedirect</Code></Error>", StorageUnavailable),
    ],
)
def test_status_error_is_final_only_when_the_object_cannot_exist(status: int, body: bytes, expected: type) -> None:
    error = status_error(status, body, "s3://frames/k")
    assert type(error) is expected
    assert str(error).startswith("s3://frames/k: ")


def test_status_error_names_the_code() -> None:
    assert str(status_error(403, b"<Code>AccessDenied</Code>", "s3://b/k")) == "s3://b/k: HTTP 403 AccessDenied"
