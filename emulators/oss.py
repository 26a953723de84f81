"""Alibaba Cloud OSS for tests: buckets and objects in memory, every request V4-verified.

:class:`OssEmulator` serves path-style requests (``http://127.0.0.1:<port>/<bucket>/<key>``,
what alibabacloud-oss-v2 1.4.1 sends to an IP endpoint or with ``use_path_style``):
PutBucket, PutObject, HeadObject (``?objectMeta`` too), GetObject, DeleteObject, ListObjects
(v1) and ListObjectsV2 (``list-type=2``), and multipart upload (InitiateMultipartUpload,
UploadPart, CompleteMultipartUpload checking each part's ETag, AbortMultipartUpload). Every
request's ``OSS4-HMAC-SHA256`` signature is verified (:func:`emulators.acs3.verify_oss4`):
a wrong secret is 403 ``SignatureDoesNotMatch`` with OSS's XML error body.

Gaps from OSS: path-style only (no ``<bucket>.<host>`` virtual hosting); no ACLs, RAM or
bucket policies (a valid signature may do anything); no versioning, storage classes,
lifecycle, CRC64 answers (``x-oss-hash-crc64ecma`` is not sent, so the SDK skips its
check), ranges, conditional requests or copy; presigned URLs and V1 signatures are refused;
the multipart ETag follows S3's ``md5(part md5s)-N`` form (OSS's is similar but not
documented); error messages are assumed texts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from emulators.acs3 import verify_oss4
from emulators.faults import CallLog
from emulators.httpserver import HttpServer, KeepAliveHandler

XML = "application/xml"


@dataclass(frozen=True)
class OssCall:
    """One OSS request as the emulator answered it."""

    method: str
    bucket: str
    key: str
    query: str
    status: int
    error: str | None = None  # OSS's error code, when refused


@dataclass
class OssObject:
    """One stored object."""

    data: bytes
    etag: str
    content_type: str
    modified: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class OssError(Exception):
    """An error OSS answers (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest().upper() + '"'


def _http_date(when: dt.datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


class OssEmulator:
    """OSS on 127.0.0.1 (see the module's text)."""

    def __init__(
        self,
        *,
        region: str = "cn-hangzhou",
        secrets: Mapping[str, str] | None = None,
        buckets: tuple[str, ...] = (),
    ) -> None:
        self.region = region
        self.secrets = dict(secrets or {})
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, OssObject]] = {b: {} for b in buckets}
        self._uploads: dict[str, tuple[str, str, dict[int, bytes]]] = {}
        self._calls: CallLog[OssCall] = CallLog()
        emulator = self

        class Handler(_OssHandler):
            owner = emulator

        self._http = HttpServer(Handler, name="oss-emulator")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Serve on a free port of 127.0.0.1."""
        self._http.start()

    def stop(self) -> None:
        """Stop serving."""
        self._http.stop()

    def __enter__(self) -> OssEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the SDK's ``endpoint``."""
        return self._http.url

    # -- records and direct access -------------------------------------------------------------
    def calls(self) -> list[OssCall]:
        """Every request, in order."""
        return self._calls.all()

    def writes(self) -> list[str]:
        """``"<METHOD> /<bucket>/<key>"`` of every write that was carried out."""
        return [
            f"{c.method} /{c.bucket}/{c.key}"
            for c in self._calls.all()
            if c.method in ("PUT", "POST", "DELETE") and c.status < 300
        ]

    def clear_calls(self) -> None:
        """Forget the recorded calls."""
        self._calls.clear()

    def create_bucket(self, bucket: str) -> None:
        """Make ``bucket`` (no-op when it exists)."""
        with self._lock:
            self._buckets.setdefault(bucket, {})

    def get(self, bucket: str, key: str) -> bytes | None:
        """An object's bytes (None: absent)."""
        with self._lock:
            obj = self._buckets.get(bucket, {}).get(key)
            return None if obj is None else obj.data

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object of ``bucket`` under ``prefix``: key -> bytes."""
        with self._lock:
            items = self._buckets.get(bucket, {}).items()
            return {k: o.data for k, o in items if k.startswith(prefix)}

    # -- one request ---------------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request (``target``: the raw request target)."""
        split = urlsplit(target)
        bucket, _, raw_key = split.path.lstrip("/").partition("/")
        key = unquote(raw_key)
        out: dict[str, str] = {}
        status, data, error = 200, b"", None
        try:
            why = verify_oss4(method, split.path, split.query, headers, self.region, self.secrets)
            if why is not None:
                message = {
                    "AccessDenied": "AccessDenied: the request is not signed (V4 header form).",
                    "InvalidAccessKeyId": "The OSS Access Key Id you provided does not exist.",
                    "RequestTimeTooSkewed": "The difference between the request time and the "
                    "current time is too large.",
                }.get(
                    why,
                    "The request signature we calculated does not match the signature "
                    "you provided. Check your key and signing method.",
                )
                raise OssError(403, why, message)
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            status, out, data = self._route(method, bucket, key, query, headers, body)
        except OssError as err:
            status, error = err.status, err.code
            out = {"Content-Type": XML}
            data = (
                "<?xml version='1.0' encoding='UTF-8'?><Error>"
                f"<Code>{err.code}</Code><Message>{_esc(err.message)}</Message>"
                f"<RequestId>{uuid.uuid4().hex.upper()[:24]}</RequestId>"
                "<HostId>127.0.0.1</HostId></Error>"
            ).encode()
        self._calls.add(OssCall(method, bucket, key, split.query, status, error))
        out.setdefault("x-oss-request-id", uuid.uuid4().hex.upper()[:24])
        return status, out, data

    def _bucket(self, bucket: str) -> dict[str, OssObject]:
        found = self._buckets.get(bucket)
        if found is None:
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
        return found

    def _route(
        self,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        if not bucket:
            raise OssError(400, "NotImplemented", "ListBuckets is not emulated.")  # gap
        with self._lock:
            if not key:
                if method == "PUT":
                    self._buckets.setdefault(bucket, {})
                    return 200, {}, b""
                if method == "GET":
                    return self._list(bucket, query)
                raise OssError(400, "NotImplemented", f"{method} on a bucket is not emulated.")
            objects = self._bucket(bucket)
            if "uploadId" in query:
                return self._multipart(method, bucket, key, query, body)
            if method == "POST" and "uploads" in query:
                upload_id = uuid.uuid4().hex.upper()
                self._uploads[upload_id] = (bucket, key, {})
                xml = (
                    "<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult>"
                    f"<Bucket>{bucket}</Bucket><Key>{_key_out(key, query)}</Key>"
                    f"{_encoding(query)}<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
                )
                return 200, {"Content-Type": XML}, xml.encode()
            if method == "PUT":
                low = {k.lower(): v for k, v in headers.items()}
                ctype = low.get("content-type") or "application/octet-stream"
                obj = OssObject(body, _etag(body), ctype)
                objects[key] = obj
                return 200, {"ETag": obj.etag}, b""
            if method == "DELETE":
                objects.pop(key, None)
                return 204, {}, b""
            found = objects.get(key)
            if method in ("HEAD", "GET"):
                if found is None:
                    raise OssError(404, "NoSuchKey", "The specified key does not exist.")
                out = {
                    "ETag": found.etag,
                    "Content-Type": found.content_type,
                    "Last-Modified": _http_date(found.modified),
                    "x-oss-object-type": "Normal",
                    "x-oss-storage-class": "Standard",
                }
                return 200, out, found.data
        raise OssError(400, "NotImplemented", f"{method} is not emulated here.")

    def _multipart(
        self, method: str, bucket: str, key: str, query: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        upload = self._uploads.get(query["uploadId"])
        if upload is None or upload[:2] != (bucket, key):
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.")
        parts = upload[2]
        if method == "PUT":
            try:
                number = int(query.get("partNumber", ""))
            except ValueError:
                number = 0
            if not 1 <= number <= 10000:
                raise OssError(400, "InvalidArgument", "Part number must be 1 to 10000.")
            parts[number] = body
            return 200, {"ETag": _etag(body)}, b""
        if method == "DELETE":
            del self._uploads[query["uploadId"]]
            return 204, {}, b""
        if method != "POST":
            raise OssError(400, "NotImplemented", "ListParts is not emulated.")  # gap
        try:
            listed = [
                (int(p.findtext("PartNumber") or 0), (p.findtext("ETag") or "").strip())
                for p in ET.fromstring(body or b"<x/>").iter("Part")
            ]
        except ET.ParseError as err:
            raise OssError(
                400, "MalformedXML", "The XML you provided was not well-formed."
            ) from err
        if not listed or [n for n, _ in listed] != sorted({n for n, _ in listed}):
            raise OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        for number, etag in listed:
            if number not in parts or etag.strip('"').upper() != _etag(parts[number]).strip('"'):
                raise OssError(
                    400, "InvalidPart", f"Part {number} was not found or its ETag differs."
                )
        data = b"".join(parts[n] for n, _ in listed)
        digest = hashlib.md5(b"".join(hashlib.md5(parts[n]).digest() for n, _ in listed))
        etag = f'"{digest.hexdigest().upper()}-{len(listed)}"'
        self._buckets[bucket][key] = OssObject(data, etag, "application/octet-stream")
        del self._uploads[query["uploadId"]]
        xml = (
            "<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult>"
            f"<Location>/{bucket}/{quote(key)}</Location><Bucket>{bucket}</Bucket>"
            f"<Key>{_key_out(key, query)}</Key><ETag>{_esc(etag)}</ETag>{_encoding(query)}"
            "</CompleteMultipartUploadResult>"
        )
        return 200, {"Content-Type": XML, "ETag": etag}, xml.encode()

    def _list(self, bucket: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        objects = self._bucket(bucket)
        prefix = query.get("prefix", "")
        v2 = query.get("list-type") == "2"
        after = query.get("continuation-token" if v2 else "marker", "") or query.get(
            "start-after", ""
        )
        limit = max(1, min(1000, int(query.get("max-keys") or 100)))
        keys = sorted(k for k in objects if k.startswith(prefix) and k > after)
        page, truncated = keys[:limit], len(keys) > limit
        items = "".join(
            f"<Contents><Key>{_key_out(k, query)}</Key>"
            f"<LastModified>{objects[k].modified.strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
            f"</LastModified><ETag>{_esc(objects[k].etag)}</ETag><Type>Normal</Type>"
            f"<Size>{len(objects[k].data)}</Size><StorageClass>Standard</StorageClass>"
            "</Contents>"
            for k in page
        )
        more = ""
        if truncated:
            tag = "NextContinuationToken" if v2 else "NextMarker"
            more = f"<{tag}>{_key_out(page[-1], query)}</{tag}>"
        count = f"<KeyCount>{len(page)}</KeyCount>" if v2 else ""
        xml = (
            "<?xml version='1.0' encoding='UTF-8'?><ListBucketResult>"
            f"<Name>{bucket}</Name><Prefix>{_key_out(prefix, query)}</Prefix>"
            f"<MaxKeys>{limit}</MaxKeys>{_encoding(query)}"
            f"{count}<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{more}"
            f"{items}</ListBucketResult>"
        )
        return 200, {"Content-Type": XML}, xml.encode()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _encoding(query: Mapping[str, str]) -> str:
    """``<EncodingType>url</EncodingType>`` when the request asked for it (the SDK decodes
    the keys only then)."""
    return "<EncodingType>url</EncodingType>" if query.get("encoding-type") == "url" else ""


def _key_out(key: str, query: Mapping[str, str]) -> str:
    """A key as OSS writes it in XML: URL-encoded when the request asked
    ``encoding-type=url``."""
    return quote(key, safe="/") if query.get("encoding-type") == "url" else _esc(key)


class _OssHandler(KeepAliveHandler):
    owner: OssEmulator

    def _any(self) -> None:
        data = self.body()
        status, out, body = self.owner.handle(self.command, self.path, dict(self.headers), data)
        if self.command != "HEAD":
            self.send(status, out, body)
            return
        with contextlib.suppress(OSError):  # HEAD: the object's length, no body
            self.send_response(status)
            for name, value in out.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any
