"""AWS's errors as one line that says what to fix (issue 16, item 28): the mapping of
``adapters/sagemaker/errors.py`` and ``aws.py`` fed the real boto3 errors the AWS emulators
answer (a missing bucket at upload, an unknown region's page, refused credentials), and
the one-line text of XML and HTML bodies."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import ClientError
from conformance.harnesses.sagemaker import BUCKET
from sagemaker_emulated import emulated_aws_with_bucket

from adapters.sagemaker import aws as aws_facts
from adapters.sagemaker.errors import aws_error, bucket_problem, region_problem
from aiaas.errors import ConfigError, ProviderError
from emulators.aws import AwsEmulator


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    with emulated_aws_with_bucket(tmp_path_factory.mktemp("aws")) as emulator:
        yield emulator


def test_a_missing_bucket_is_named_with_how_to_fix_it(aws: AwsEmulator, tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"x")
    with contextlib.closing(aws.client("s3")) as s3:
        with pytest.raises(S3UploadFailedError) as raised:  # what boto3 raises at upload
            s3.upload_file(str(archive), "no-such-bucket", "aiaas/model.tar.gz")
        error = aws_error(raised.value, "upload", region="us-east-1", bucket="no-such-bucket")
        # ... and found before anything is written, at plan time
        found = bucket_problem(s3, "no-such-bucket", "us-east-1")
        assert bucket_problem(s3, BUCKET, "us-east-1") is None
    expected = (
        "sagemaker.bucket 'no-such-bucket': no such S3 bucket: create it (`aws s3 mb "
        "s3://no-such-bucket --region us-east-1`) or name one that exists"
    )
    assert isinstance(error, ConfigError) and error.message == expected
    assert isinstance(found, ConfigError) and found.message == expected


def test_a_region_that_does_not_exist_is_the_error_not_the_page_it_got(aws: AwsEmulator) -> None:
    env = aws.env()
    client = boto3.client(
        "sagemaker", region_name="us-north-9", endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    with contextlib.closing(client), pytest.raises(ClientError) as raised:
        client.list_endpoints()  # the emulator answers an HTML error page
    error = aws_error(raised.value, "list endpoints", region="us-north-9")
    assert isinstance(error, ConfigError)
    assert error.message.startswith("sagemaker.region 'us-north-9' is not a region SageMaker ")
    assert error.message.endswith("check sagemaker.region, AWS_REGION and AWS_DEFAULT_REGION")
    # Without a region to blame, the page is still one line, not its HTML.
    unknown = aws_error(raised.value, "list endpoints")
    assert "<" not in unknown.message and "\n" not in unknown.message
    assert "HTML page titled '500 Internal Server Error'" in unknown.message
    assert region_problem("eu-west-1") is None and region_problem("cn-north-1") is None


def test_a_refused_call_says_which_credential_or_permission_to_fix(aws: AwsEmulator) -> None:
    aws.refuse_next(
        "sagemaker", "ListEndpoints", "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
        "sagemaker:ListEndpoints", status=403,
    )  # fmt: skip
    with contextlib.closing(aws.client("sagemaker")) as sm, pytest.raises(ClientError) as raised:
        sm.list_endpoints()
    error = aws_error(raised.value, "list endpoints", region="us-east-1")
    assert isinstance(error, ProviderError)
    assert error.message == (
        "list endpoints: AWS refused the credentials (AccessDeniedException): the principal "
        "is not allowed to list endpoints: see docs/providers/sagemaker.md for the IAM policy "
        "aiaas needs (AWS: User: arn:aws:iam::123456789012:user/ci is not authorized to "
        "perform: sagemaker:ListEndpoints)"
    )
    wrong_secret = aws_facts.refused_credentials("InvalidSignatureException", "to invoke")
    assert "does not match the access key id" in wrong_secret
    assert "AWS_SECRET_ACCESS_KEY" in wrong_secret and "allowed" not in wrong_secret
    assert "AWS_ACCESS_KEY_ID" in aws_facts.refused_credentials("InvalidClientTokenId", "x")
    assert "expired" in aws_facts.refused_credentials("ExpiredTokenException", "x")


def test_an_xml_error_body_is_one_line_of_code_and_message() -> None:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>\n'
        "<Message>Access Denied</Message><RequestId>1</RequestId></Error>"
    )
    assert aws_facts.brief_message(xml) == "AccessDenied: Access Denied"
    assert aws_facts.brief_message("a\n  b") == "a b"
    assert aws_facts.brief_message("x" * 300).endswith("...")
