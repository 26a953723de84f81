"""The control plane's AWS errors, each as one line that says what to fix.

:func:`aws_error` is the one mapping of a boto3 failure (:mod:`adapters.sagemaker.provider`
raises what it returns); :func:`bucket_problem` checks the bucket before anything is
written (plan and deploy), so a missing bucket is named at plan time, not at upload. The
invoke path (no boto3) shares :func:`adapters.sagemaker.aws.refused_credentials` and
:func:`adapters.sagemaker.aws.brief_message` with this module.

What each case looked like before (issue 16, item 28): boto3's ``S3UploadFailedError ...
NoSuchBucket`` at upload; for a region that does not exist, whatever page the endpoint URL
answered (moto's HTML); a refused call's XML; a wrong secret blamed on the role's
permissions.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from adapters.sagemaker import aws
from aiaas.errors import (
    AccessDenied,
    AiaasError,
    ConfigError,
    DeployFailed,
    ProviderError,
    Throttled,
)

_BOTO_CODE = re.compile(r"An error occurred \((\w+)\)")


@functools.cache
def known_regions() -> frozenset[str]:
    """The regions botocore's endpoint data lists SageMaker in, every partition (read from
    the installed botocore's files: no call)."""
    import botocore.session

    session = botocore.session.get_session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("sagemaker", partition_name=partition)
    )


def region_problem(region: str) -> str | None:
    """Why ``region`` cannot be SageMaker's (None: it can, or botocore lists no regions)."""
    regions = known_regions()
    if not regions or region in regions:
        return None
    import botocore

    return (
        f"sagemaker.region {region!r} is not a region SageMaker runs in (botocore "
        f"{botocore.__version__} lists {len(regions)}, e.g. us-east-1, eu-west-1): check "
        "sagemaker.region, AWS_REGION and AWS_DEFAULT_REGION"
    )


def missing_bucket(bucket: str, region: str) -> ConfigError:
    """The error for a ``sagemaker.bucket`` that does not exist."""
    return ConfigError(
        f"sagemaker.bucket {bucket!r}: no such S3 bucket: create it (`aws s3 mb "
        f"s3://{bucket} --region {region}`) or name one that exists"
    )


def _code_of(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    found = _BOTO_CODE.search(str(exc))  # boto3's S3UploadFailedError wraps a ClientError's text
    return found.group(1) if found else ""


def aws_error(
    exc: Exception, doing: str, *, region: str | None = None, bucket: str | None = None
) -> AiaasError:
    """The typed error, on one line, for an AWS failure while ``doing`` something.

    ``region`` (the provider's): when it is not one SageMaker runs in, that is the error,
    whatever the endpoint answered. ``bucket``: a ``NoSuchBucket`` names it and how to fix
    it. Refused credentials say which (secret, key id, session) or which permission.
    """
    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            "sagemaker: no AWS credentials (boto3's chain: environment, profile, SSO, role)"
        )
    problem = region_problem(region) if region else None
    if problem:
        return ConfigError(problem)
    code = _code_of(exc)
    if code == "NoSuchBucket":
        return missing_bucket(bucket or "?", region or "?")
    if isinstance(exc, EndpointConnectionError):
        return ProviderError(
            f"{doing}: cannot reach AWS at {exc.kwargs.get('endpoint_url', '?')}: check the "
            "network, the region and any AWS_ENDPOINT_URL"
        )
    if not isinstance(exc, ClientError):
        return ProviderError(f"{doing}: {aws.brief_message(str(exc))}")
    message = aws.brief_message(str(exc.response.get("Error", {}).get("Message", "")))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    said = code or str(status or "error")
    text = f"{doing}: AWS said {said}: {message}" if message else f"{doing}: AWS said {said}"
    if code in aws.THROTTLING_ERROR_CODES:
        return Throttled(text, retry_after=1.0)
    if code in aws.AUTH_ERROR_CODES or status in (401, 403):
        # AccessDenied's own text names the principal and the action: kept. A signature or
        # token failure's may quote the canonical request (the session token): left out.
        quoted = f" (AWS: {message})" if message and code.startswith("AccessDenied") else ""
        return AccessDenied(
            f"{doing}: AWS refused the credentials ({said}): "
            f"{aws.refused_credentials(code, f'to {doing}')}{quoted}"
        )
    if code == "ResourceLimitExceeded":
        return DeployFailed(
            f"{text} (an update starts the new fleet beside the serving one, blue/green: "
            "the instance type's endpoint-usage quota must cover twice the instance "
            "count; ask AWS for an increase in Service Quotas)"
        )
    return ProviderError(text)


def bucket_problem(s3: Any, bucket: str, region: str) -> AiaasError | None:
    """Whether ``bucket`` can take the bundles, asked once before anything is written
    (HeadBucket): None where it can, or where the principal may not ask (a policy scoped to
    the bundles' prefix does not allow HeadBucket: the upload will tell); the missing
    bucket, or the one in another region (SageMaker reads the bundle from the endpoint's),
    as the error."""
    try:
        answer = s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404 or _code_of(exc) in {"404", "NoSuchBucket"}:
            return missing_bucket(bucket, region)
        if status == 301:
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return _other_region(bucket, headers.get("x-amz-bucket-region", "?"), region)
        if status == 403:
            return None
        return aws_error(exc, f"look for bucket {bucket}", region=region, bucket=bucket)
    except BotoCoreError as exc:
        return aws_error(exc, f"look for bucket {bucket}", region=region, bucket=bucket)
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    found = headers.get("x-amz-bucket-region")
    return _other_region(bucket, found, region) if found and found != region else None


def _other_region(bucket: str, found: str, region: str) -> ConfigError:
    return ConfigError(
        f"sagemaker.bucket {bucket!r} is in {found}, the endpoint in {region}: SageMaker "
        "reads the bundle from the endpoint's region; use a bucket there"
    )
