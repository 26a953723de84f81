"""Alibaba Cloud request signatures, checked as the server does: pure functions.

- :func:`verify_acs3`: ``ACS3-HMAC-SHA256`` (the OpenAPI gateway's V3 signature, what
  alibabacloud-tea-openapi 0.4.x sends to PAI-EAS): the canonical request is the method, the
  raw (already encoded) path, the sorted query with values encoded as ``quote(v, safe='~')``,
  every header named in ``SignedHeaders`` (lower-case, trimmed), the signed header list and
  the body's SHA-256, which must also equal ``x-acs-content-sha256``; the signature is
  ``HMAC-SHA256(secret, "ACS3-HMAC-SHA256\\n" + sha256(canonical request))``.
- :func:`verify_oss4`: ``OSS4-HMAC-SHA256`` (OSS's V4 header signature, alibabacloud-oss-v2):
  the canonical URI ``/bucket/key``, the sorted raw query, every ``x-oss-*``,
  ``content-type`` and ``content-md5`` header plus the ``AdditionalHeaders``, the payload
  hash header; the key is an HMAC chain over ``"aliyun_v4" + secret`` -> date -> region ->
  ``oss`` -> ``aliyun_v4_request``.

Each returns ``None`` when the request is signed right, else the error code the cloud
answers. Gaps from Alibaba Cloud: one secret per access key id and no RAM policy; the STS
token (``x-acs-security-token`` / ``x-oss-security-token``) is signed over but not checked
against an issuer; OSS presigned URLs (the query form of V4) and V1 signatures are refused;
the signature nonce is not checked for reuse; the clock-skew limits (15 minutes) are the
documented ones, the error texts are assumed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote

ACS3 = "ACS3-HMAC-SHA256"
OSS4 = "OSS4-HMAC-SHA256"
MAX_SKEW = dt.timedelta(minutes=15)
"""Both gateways refuse a request whose date is further than this from their clock."""


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _skewed(stamp: str | None, fmt: str, now: dt.datetime | None) -> bool:
    """True when ``stamp`` (UTC, ``fmt``) is missing, malformed, or too far from now."""
    if not stamp:
        return True
    try:
        when = dt.datetime.strptime(stamp, fmt).replace(tzinfo=dt.UTC)
    except ValueError:
        return True
    return abs((now or dt.datetime.now(dt.UTC)) - when) > MAX_SKEW


def _fields(auth: str, scheme: str) -> dict[str, str] | None:
    """``Name=value`` pairs of an ``Authorization: <scheme> a=1,b=2`` header (None: not
    that scheme, or malformed)."""
    if not auth.startswith(scheme + " "):
        return None
    out: dict[str, str] = {}
    for part in auth[len(scheme) + 1 :].split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return None
        out[name] = value
    return out


def acs3_canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed: list[str],
    body: bytes,
) -> str:
    """The ACS3 canonical request (``headers``: any case)."""
    low = _lower(headers)
    pairs = sorted(parse_qsl(raw_query, keep_blank_values=True))
    canon_q = "&".join(f"{k}={quote(v, safe='~')}" for k, v in pairs)
    canon_h = "".join(f"{k}:{(low.get(k) or '').strip()}\n" for k in signed)
    return "\n".join([method, raw_path, canon_q, canon_h, ";".join(signed), _sha256(body)])


def verify_acs3(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    *,
    now: dt.datetime | None = None,
) -> str | None:
    """None when the request carries a valid ACS3-HMAC-SHA256 signature by one of
    ``secrets`` (access key id: secret); else EAS's error code (``MissingAuthorization``,
    ``InvalidAccessKeyId.NotFound``, ``SignatureDoesNotMatch``, ``InvalidTimeStamp.Expired``)."""
    low = _lower(headers)
    fields = _fields(low.get("authorization") or "", ACS3)
    if fields is None:
        return "MissingAuthorization"
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return "SignatureDoesNotMatch"
    secret = secrets.get(fields["Credential"])
    if secret is None:
        return "InvalidAccessKeyId.NotFound"
    if _skewed(low.get("x-acs-date"), "%Y-%m-%dT%H:%M:%SZ", now):
        return "InvalidTimeStamp.Expired"
    signed = fields["SignedHeaders"].split(";")
    required = {"host", "x-acs-date", "x-acs-content-sha256", "x-acs-signature-nonce"}
    if not required <= set(signed) or low.get("x-acs-content-sha256") != _sha256(body):
        return "SignatureDoesNotMatch"
    canonical = acs3_canonical_request(method, raw_path, raw_query, low, signed, body)
    to_sign = f"{ACS3}\n{_sha256(canonical.encode())}"
    want = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, fields["Signature"]) else "SignatureDoesNotMatch"


def oss4_signing_key(secret: str, date: str, region: str, product: str = "oss") -> bytes:
    """The V4 signing key: ``"aliyun_v4" + secret`` -> date -> region -> product ->
    ``aliyun_v4_request``."""
    key = hmac.new(("aliyun_v4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, product, "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def oss4_canonical_request(
    method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], additional: str
) -> str:
    """The OSS V4 canonical request (``raw_path``: ``/bucket/key`` as sent)."""
    extra = set(filter(None, additional.split(";")))
    signed = sorted(
        (k, v)
        for k, v in _lower(headers).items()
        if k.startswith("x-oss-") or k in ("content-type", "content-md5") or k in extra
    )
    canon_h = "".join(f"{k}:{v}\n" for k, v in signed)
    pairs = sorted(p.partition("=")[::2] for p in raw_query.split("&") if p)
    canon_q = "&".join(f"{k}={v}" if v else k for k, v in pairs)
    payload = _lower(headers).get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    uri = quote(unquote(raw_path), safe="/")
    return f"{method}\n{uri}\n{canon_q}\n{canon_h}\n{additional}\n{payload}"


def verify_oss4(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    region: str,
    secrets: Mapping[str, str],
    *,
    now: dt.datetime | None = None,
) -> str | None:
    """None when the request carries a valid OSS4-HMAC-SHA256 header signature by one of
    ``secrets`` for ``region``; else OSS's error code (``AccessDenied`` when unsigned,
    ``InvalidAccessKeyId``, ``RequestTimeTooSkewed``, ``SignatureDoesNotMatch``)."""
    low = _lower(headers)
    fields = _fields(low.get("authorization") or "", OSS4)
    if fields is None or not {"Credential", "Signature"} <= fields.keys():
        return "AccessDenied"
    scope = fields["Credential"].split("/")
    if len(scope) != 5:
        return "SignatureDoesNotMatch"
    access_key, date, scope_region, product, terminator = scope
    secret = secrets.get(access_key)
    if secret is None:
        return "InvalidAccessKeyId"
    stamp = low.get("x-oss-date") or ""
    if _skewed(stamp, "%Y%m%dT%H%M%SZ", now):
        return "RequestTimeTooSkewed"
    if (scope_region, product, terminator) != (region, "oss", "aliyun_v4_request"):
        return "SignatureDoesNotMatch"
    if not stamp.startswith(date):
        return "SignatureDoesNotMatch"
    additional = fields.get("AdditionalHeaders", "")
    canonical = oss4_canonical_request(method, raw_path, raw_query, low, additional)
    to_sign = "\n".join(
        [OSS4, stamp, f"{date}/{region}/oss/aliyun_v4_request", _sha256(canonical.encode())]
    )
    key = oss4_signing_key(secret, date, region)
    want = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, fields["Signature"]) else "SignatureDoesNotMatch"
