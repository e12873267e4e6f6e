"""Where data lives: a local folder or S3-compatible object storage, spelled once.

A configured location is either a local path or `s3://bucket/prefix`. `Location` carries the
URI together with the S3 settings, and hands each client the form it needs:

    loc.uri               "s3://lake/prod/meta_embeddings"  (or an absolute local path)
    loc.spark_uri         "s3a://lake/prod/meta_embeddings" (Hadoop's S3A connector)
    loc.delta_options()   storage_options for delta-rs (endpoint, region, timeouts, retries)
    loc.filesystem()      a pyarrow.fs filesystem and the path inside it (inputs, checkpoints)

Credentials never come from config: every client reads AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (or the SDK's usual chain) from the environment. Connect and request
timeouts and a small attempt count are always set, so an endpoint that is down, a missing
bucket or refused credentials fail in seconds with a StorageError naming the URI, instead of
minutes of SDK retries.

Location also offers the few Path methods the checkpoint code uses (`/`, is_file, read_bytes,
write_bytes_atomic ...), so models/ stays free of storage code.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

S3_SCHEMES = ("s3://", "s3a://")


class StorageError(RuntimeError):
    """A location that cannot be read or written: names the URI and the cause."""


@dataclass(frozen=True)
class S3Settings:
    """The resolved S3 client settings (config first, then the standard AWS variables)."""

    endpoint_url: str  # "" = AWS itself
    region: str
    path_style: bool
    connect_timeout_s: float
    request_timeout_s: float
    transfer_timeout_s: float
    max_attempts: int

    @classmethod
    def resolve(cls, s3: Any) -> "S3Settings":
        endpoint = s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")
        region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(endpoint.rstrip("/"), region, s3.path_style, s3.connect_timeout_s, s3.request_timeout_s,
                   s3.transfer_timeout_s, s3.max_attempts)

    @property
    def plain_http(self) -> bool:
        return self.endpoint_url.startswith("http://")

    def spark_conf(self) -> dict[str, str]:
        """Hadoop S3A settings (as spark.hadoop.* keys)."""
        conf = {
            "fs.s3a.endpoint.region": self.region,
            "fs.s3a.path.style.access": str(self.path_style).lower(),
            "fs.s3a.connection.establish.timeout": f"{int(self.connect_timeout_s * 1000)}ms",
            "fs.s3a.connection.timeout": f"{int(self.request_timeout_s * 1000)}ms",
            "fs.s3a.attempts.maximum": str(self.max_attempts),
            "fs.s3a.retry.limit": str(self.max_attempts),
            "fs.s3a.retry.throttle.limit": str(self.max_attempts),
            # Without this, S3A asks for the bucket's region and location before the first read.
            "fs.s3a.bucket.probe": "0",
        }
        if self.endpoint_url:
            conf["fs.s3a.endpoint"] = self.endpoint_url
            conf["fs.s3a.connection.ssl.enabled"] = str(not self.plain_http).lower()
        return {f"spark.hadoop.{k}": v for k, v in conf.items()}

    def delta_options(self) -> dict[str, str]:
        """object_store (delta-rs) options; credentials come from the environment."""
        opts = {
            "AWS_REGION": self.region,
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": str(not self.path_style).lower(),
            "connect_timeout": f"{self.connect_timeout_s}s",
            # object_store's timeout bounds a whole request, body included (it has no idle timeout)
            "timeout": f"{self.transfer_timeout_s}s",
            "max_retries": str(max(0, self.max_attempts - 1)),
            "retry_timeout": f"{self.transfer_timeout_s}s",
        }
        if self.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.endpoint_url
            opts["AWS_ALLOW_HTTP"] = str(self.plain_http).lower()
        return opts

    def filesystem(self):
        from pyarrow import fs

        host = re.sub(r"^https?://", "", self.endpoint_url)
        return fs.S3FileSystem(
            region=self.region, endpoint_override=host or None, scheme="http" if self.plain_http else "https",
            force_virtual_addressing=not self.path_style,
            connect_timeout=self.connect_timeout_s, request_timeout=self.request_timeout_s,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts))


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith(S3_SCHEMES)


def normalize_s3(uri: str) -> str:
    """One spelling: s3://bucket/key without a trailing slash (s3a:// is accepted on input)."""
    rest = re.sub(r"^s3a?://", "", str(uri)).strip("/")
    if not rest or rest.startswith("/"):
        raise StorageError(f"{uri}: an S3 location needs a bucket: s3://bucket/prefix")
    return "s3://" + re.sub(r"/+", "/", rest)


def as_location(where: "Location | str | Path") -> "Location":
    """A Location as given, or a local one for a plain path (what tests and notebooks pass)."""
    return where if isinstance(where, Location) else Location.local(where)


def missing_bucket(uri: str, endpoint: str = "") -> str:
    bucket = re.sub(r"^s3a?://", "", uri).split("/", 1)[0]
    return f"{uri}: bucket {bucket!r} does not exist at {endpoint or 'AWS'} (create it or fix the URI)"


def explain(uri: str, error: BaseException, endpoint: str = "") -> str:
    """A one-line cause for an S3 client error (the SDKs' texts are long and differ by client)."""
    text = str(error)
    where = endpoint or "AWS"
    if re.search(r"no_?such_?bucket|bucket does not exist", text, re.I):
        return missing_bucket(uri, endpoint)
    if re.search(r"invalid_?access_?key|signature_?does_?not_?match|access_?denied|forbidden|\b403\b|credentials",
                 text, re.I):
        return (f"{uri}: {where} refused the credentials (403): check AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY in the environment")
    if re.search(r"error sending request|connect|timed? ?out|Connection refused|curlCode|unreachable", text, re.I):
        return (f"{uri}: the S3 endpoint {where} does not answer (is it running? check [s3] endpoint_url "
                f"or AWS_ENDPOINT_URL)")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return f"{uri}: {first}"


@dataclass(frozen=True)
class Location:
    """A local path or an S3 URI, with the settings every client needs to reach it."""

    uri: str
    s3: S3Settings | None = None  # None: a local path

    @classmethod
    def local(cls, path: str | Path) -> "Location":
        return cls(str(Path(path).expanduser().resolve()))

    @property
    def is_s3(self) -> bool:
        return self.s3 is not None

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        if self.is_s3:
            raise StorageError(f"{self.uri}: an S3 location has no local path")
        return self.uri

    def __truediv__(self, name: str) -> "Location":
        if not self.is_s3:
            return Location(str(Path(self.uri) / name))
        return Location(f"{self.uri}/{name.strip('/')}", self.s3)

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def spark_uri(self) -> str:
        return "s3a://" + self.uri[len("s3://"):] if self.is_s3 else self.uri

    def delta_options(self) -> dict[str, str] | None:
        return self.s3.delta_options() if self.is_s3 else None

    def filesystem(self):
        """(pyarrow filesystem, path inside it)."""
        if self.is_s3:
            return self.s3.filesystem(), self.uri[len("s3://"):]
        from pyarrow import fs

        return fs.LocalFileSystem(), self.uri

    def error(self, e: BaseException) -> StorageError:
        return StorageError(explain(self.uri, e, self.s3.endpoint_url if self.s3 else ""))

    def _info(self):
        fs, path = self.filesystem()
        try:
            return fs.get_file_info(path)
        except OSError as e:
            raise self.error(e) from e

    def exists(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type != FileType.NotFound

    def is_file(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type == FileType.File

    def is_dir(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type == FileType.Directory

    def children(self) -> list["Location"]:
        """Direct children (files and folders); [] when there is nothing here."""
        from pyarrow.fs import FileSelector

        fs, path = self.filesystem()
        try:
            infos = fs.get_file_info(FileSelector(path, allow_not_found=True))
        except OSError as e:
            raise self.error(e) from e
        return [self / info.base_name for info in infos]

    def read_bytes(self) -> bytes:
        fs, path = self.filesystem()
        try:
            with fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{self.uri}: no such file") from e
        except OSError as e:
            raise self.error(e) from e

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        if not self.is_s3:  # object storage has no folders to make
            Path(self.uri).mkdir(parents=parents, exist_ok=exist_ok)

    def write_bytes_atomic(self, data: bytes) -> None:
        """Readers see the old object or the whole new one, never part of it.

        Local: write a temp file beside it, then rename. S3: one PUT (or a multipart upload,
        completed in one call) only becomes visible once complete.
        """
        fs, path = self.filesystem()
        if self.is_s3:
            try:
                with fs.open_output_stream(path) as f:
                    f.write(data)
            except OSError as e:
                raise self.error(e) from e
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete_tree(self) -> None:
        """Remove everything under this location (nothing to do when absent)."""
        fs, path = self.filesystem()
        try:
            if self.is_s3:
                fs.delete_dir_contents(path, missing_dir_ok=True)
            elif self.exists():
                fs.delete_dir(path)
        except OSError as e:
            raise self.error(e) from e

    def check_access(self) -> None:
        """List the location once: a missing bucket, refused credentials or a silent endpoint
        raise StorageError now, before any job starts."""
        if not self.is_s3:
            return
        from pyarrow.fs import FileType

        fs, path = self.filesystem()
        try:
            bucket = fs.get_file_info(path.split("/", 1)[0])
        except OSError as e:
            raise self.error(e) from e
        if bucket.type != FileType.Directory:
            raise StorageError(missing_bucket(self.uri, self.s3.endpoint_url))
        self.children()
