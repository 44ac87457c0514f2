"""Pure parts of the fetch stage: object URLs and how S3's answers map to errors."""

from __future__ import annotations

import pytest

from inference.errors import CredentialsRejected, FrameNotFound, StorageUnavailable
from inference.storage import object_url, status_error


def test_object_url_encodes_the_key_like_botocore() -> None:
    assert (
        object_url("http://s3:9000/frames/", "v 1/a+b=c/ü~.jpg") == "http://s3:9000/frames/v%201/a%2Bb%3Dc/%C3%BC~.jpg"
    )


# What AWS S3 and MinIO answer (SeaweedFS answers a subset of the same codes).
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # Final for the task that named the object.
        (404, b"<Error><Code>NoSuchKey</Code></Error>", FrameNotFound),
        (404, b"<Error><Code>NoSuchBucket</Code></Error>", FrameNotFound),
        (404, b"", FrameNotFound),
        (400, b"<Error><Code>InvalidBucketName</Code></Error>", FrameNotFound),
        (400, b"<Error><Code>KeyTooLongError</Code></Error>", FrameNotFound),
        (403, b"<Error><Code>AccessDenied</Code></Error>", FrameNotFound),  # also a missing key without ListBucket
        (403, b"", FrameNotFound),
        (403, b"<Error><Code>InvalidObjectState</Code></Error>", FrameNotFound),
        (301, b"<Error><Code>PermanentRedirect</Code></Error>", FrameNotFound),  # the bucket is in another region
        (307, b"<Error><Code>TemporaryRedirect</Code></Error>", FrameNotFound),
        (400, b"<Error><Code>AuthorizationHeaderMalformed</Code></Error>", FrameNotFound),  # wrong region (SigV4)
        # The replica's credentials or clock: retried until fixed.
        (403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", CredentialsRejected),
        (403, b"<Error><Code>InvalidAccessKeyId</Code></Error>", CredentialsRejected),
        (400, b"<Error><Code>ExpiredToken</Code></Error>", CredentialsRejected),
        (403, b"<Error><Code>RequestTimeTooSkewed</Code></Error>", CredentialsRejected),
        # The store's own trouble: retried.
        (503, b"<Error><Code>SlowDown</Code></Error>", StorageUnavailable),
        (500, b"<Error><Code>InternalError</Code></Error>", StorageUnavailable),
        (500, b"not xml", StorageUnavailable),
        (429, b"", StorageUnavailable),
    ],
)
def test_status_error_is_final_only_when_no_retry_can_change_it_for_the_task(
    status: int, body: bytes, expected: type
) -> None:
    error = status_error(status, body, "s3://frames/k")
    assert type(error) is expected
    assert str(error).startswith(f"s3://frames/k: HTTP {status}")


def test_status_error_names_the_code() -> None:
    assert str(status_error(403, b"<Code>AccessDenied</Code>", "s3://b/k")) == "s3://b/k: HTTP 403 AccessDenied"
