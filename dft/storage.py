"""Every path is a URI: a local path, ``file://`` or ``s3://``. This module is the only one that
touches filesystem APIs.

Credentials and the endpoint come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ...) and are never read from our configs nor logged.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import fsspec

from dft.errors import InputError

log = logging.getLogger(__name__)


def is_s3(uri: str) -> bool:
    return str(uri).startswith(("s3://", "s3a://"))


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def _strip_file(uri: str) -> str:
    uri = str(uri)
    return uri[len("file://") :] if uri.startswith("file://") else uri


def normalize(uri: str) -> str:
    """Absolute local paths, ``s3://bucket/key`` with no trailing slash."""
    uri = str(uri)
    if is_s3(uri):
        return "s3://" + uri.split("://", 1)[1].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise InputError(f"unsupported URI scheme in {uri!r}: use a local path, file:// or s3://")
    return os.path.abspath(os.path.expanduser(_strip_file(uri)))


def join(uri: str, *parts: str) -> str:
    uri = str(uri)
    if is_s3(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(_strip_file(uri), *parts)


def _s3_kwargs() -> dict[str, Any]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URI and the path within it."""
    uri = str(uri)
    if is_s3(uri):
        fs = fsspec.filesystem("s3", **_s3_kwargs())
        return fs, uri.split("://", 1)[1].rstrip("/")
    return fsspec.filesystem("file"), normalize(uri)


def pyarrow_filesystem(uri: str):
    """The pyarrow filesystem and path for a URI (what Ray Data's readers and writers take).

    S3 goes through s3fs wrapped for pyarrow, so Ray Data, pyarrow and fsspec share one client
    setup and one credential chain. (Arrow's native S3 client is faster on huge files, but it rejects
    the CompleteMultipartUpload answer of some S3-compatible servers, moto 5.2 among them.)
    Always pass this filesystem to Ray Data: given a bare ``s3://`` path Ray builds its own client."""
    import pyarrow.fs as pafs

    uri = str(uri)
    if is_s3(uri):
        fs, path = filesystem(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    return pafs.LocalFileSystem(), normalize(uri)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def isdir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.isdir(path)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_s3(uri):
        fs.makedirs(path, exist_ok=True)


def listdir(uri: str) -> list[str]:
    """Names (not paths) directly under ``uri``; empty when it does not exist."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def glob(uri: str, pattern: str) -> list[str]:
    """URIs under ``uri`` matching a glob pattern (relative), sorted."""
    fs, path = filesystem(uri)
    found = fs.glob(posixpath.join(path, pattern))
    prefix = "s3://" if is_s3(uri) else ""
    return sorted(prefix + p for p in found)


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(fs.size(path))


def modified(uri: str):
    """When a file was last written (an aware UTC datetime), or None when the store cannot say."""
    import datetime as dt

    fs, path = filesystem(uri)
    try:
        when = fs.modified(path)
    except (OSError, NotImplementedError):
        return None
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: readers see the old content or the new, never a torn file.

    Locally: a temporary name in the same folder, then ``os.replace``. On S3 a PUT is atomic.
    """
    fs, path = filesystem(uri)
    if is_s3(uri):
        with fs.open(path, "wb") as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def atomic_local_path(uri: str) -> Iterator[str]:
    """A local file path to write; on success it is moved to ``uri`` whole (local rename or S3 upload)."""
    import tempfile

    if is_s3(uri):
        fd, tmp = tempfile.mkstemp(prefix="dft-", suffix=posixpath.basename(uri))
        os.close(fd)
        try:
            yield tmp
            fs, path = filesystem(uri)
            fs.put_file(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    path = normalize(uri)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def download_folder(uri: str, local_dir: str) -> None:
    """Copy a (possibly remote) folder's files into ``local_dir``."""
    fs, path = filesystem(uri)
    os.makedirs(local_dir, exist_ok=True)
    for src in fs.find(path):
        rel = posixpath.relpath(src, path)
        dst = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        fs.get_file(src, dst)


def upload_folder(local_dir: str, uri: str) -> None:
    """Copy a local folder's files to ``uri`` (local or S3), file by file, each atomically."""
    for root, _dirs, files in os.walk(local_dir):
        for name in files:
            src = os.path.join(root, name)
            rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
            dst = join(uri, *rel.split("/"))
            if is_s3(uri):
                fs, path = filesystem(dst)
                fs.put_file(src, path)
            else:
                with open(src, "rb") as f:
                    write_bytes(dst, f.read())
