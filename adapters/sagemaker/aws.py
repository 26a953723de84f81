"""AWS facts the invoke path needs without boto3: credentials, region and endpoint URLs.

A Lambda function gets its role's credentials in ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN`` and its region in ``AWS_REGION``; those
are read here, once, at build. Where the variables are absent (a developer's ``aiaas
invoke`` with a profile or SSO), botocore's default chain is asked instead, imported only
then. Endpoint URLs follow boto3's rules: ``AWS_ENDPOINT_URL_<SERVICE>``, then
``AWS_ENDPOINT_URL``, then the service's regional host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiaas.errors import ConfigError

# AWS error codes, the same across its services (both halves map them: aws_error, _answer).
AUTH_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
# Which credential is wrong, by AWS's error code (its "Common Errors" for every API): the
# secret does not sign as AWS expects, AWS does not know the key id, or the session expired.
_WRONG_SECRET = frozenset({"InvalidSignatureException", "SignatureDoesNotMatch"})
_UNKNOWN_KEY = frozenset({"InvalidClientTokenId", "UnrecognizedClientException"})
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException"})
_UNSIGNED = frozenset({"MissingAuthenticationToken", "IncompleteSignature"})
# Throttling arrives as HTTP 400 with one of these codes (botocore's _retry.json), not 429.
THROTTLING_ERROR_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)


@dataclass(frozen=True)
class Credentials:
    """One set of AWS credentials (the secret never reaches a log: see ``__repr__``)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=***)"


CredentialSource = Callable[[], Credentials]
"""Gives the credentials to sign the next request with (refreshed ones where they expire)."""


def credential_source(env: Mapping[str, str]) -> CredentialSource:
    """Static credentials from the ``AWS_*`` variables, else botocore's refreshing chain."""
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        static = Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
        return lambda: static
    return _botocore_chain()


def _botocore_chain() -> CredentialSource:
    try:
        import botocore.session
    except ImportError:
        raise ConfigError(
            "sagemaker: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(a Lambda function has them from its role), or install boto3 for profiles and SSO"
        ) from None
    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise ConfigError(
            "sagemaker: no AWS credentials found (environment, profile, SSO or instance role)"
        )

    def fresh() -> Credentials:
        frozen = found.get_frozen_credentials()  # refreshes credentials about to expire
        return Credentials(frozen.access_key or "", frozen.secret_key or "", frozen.token)

    return fresh


def region(configured: str | None, env: Mapping[str, str]) -> str:
    """``sagemaker.region``, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``."""
    found = configured or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not found:
        raise ConfigError(
            "sagemaker.region: not set, and neither is AWS_REGION nor AWS_DEFAULT_REGION"
        )
    return found


def endpoint_url(service_id: str, host: str, region_name: str, env: Mapping[str, str]) -> str:
    """The URL of service ``service_id`` (boto3's id, e.g. ``SAGEMAKER_RUNTIME``) at
    ``host`` (e.g. ``runtime.sagemaker``) in ``region_name``, honouring the overrides."""
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        configured = env.get(f"AWS_ENDPOINT_URL_{service_id}") or env.get("AWS_ENDPOINT_URL")
        if configured:
            return configured.rstrip("/")
    suffix = "amazonaws.com.cn" if region_name.startswith("cn-") else "amazonaws.com"
    return f"https://{host}.{region_name}.{suffix}"


def refused_credentials(code: str, permission: str) -> str:
    """What to fix when AWS refused a call with ``code`` (one of :data:`AUTH_ERROR_CODES`, or
    a bare 401/403): the secret, the key id or the session where it names one, else the
    ``permission`` the principal lacks (``sagemaker:InvokeEndpoint on endpoint 'x'``)."""
    if code in _WRONG_SECRET:
        return (
            "the secret access key does not match the access key id: check "
            "AWS_SECRET_ACCESS_KEY (or the profile's aws_secret_access_key)"
        )
    if code in _UNKNOWN_KEY:
        return "AWS does not know this access key id: check AWS_ACCESS_KEY_ID (or the profile)"
    if code in _EXPIRED:
        return (
            "the session token has expired: get fresh credentials (aws sso login, or new STS "
            "credentials in AWS_SESSION_TOKEN)"
        )
    if code in _UNSIGNED:
        return "the request carried no complete signature: check the AWS credentials are set"
    return (
        f"the principal is not allowed {permission}: see docs/providers/sagemaker.md for the "
        "IAM policy aiaas needs"
    )


_TITLE = re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)
_XML_FIELD = r"<{0}>\s*(.*?)\s*</{0}>"


def brief_message(message: str, limit: int = 200) -> str:
    """An AWS error message on one line: an HTML page (a proxy's, an emulator's) as its
    title, an XML error body as its ``Code: Message``, anything else with its whitespace
    folded; at most ``limit`` characters."""
    text = message.strip()
    if text.startswith("<"):
        title = _TITLE.search(text)
        code = re.search(_XML_FIELD.format("Code"), text, re.DOTALL)
        said = re.search(_XML_FIELD.format("Message"), text, re.DOTALL)
        if code or said:
            text = ": ".join(m.group(1) for m in (code, said) if m)
        elif title:
            text = f"an HTML page titled {title.group(1)!r}, not an AWS answer"
        else:
            text = "an answer that is not AWS's (markup)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
