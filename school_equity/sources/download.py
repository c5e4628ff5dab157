"""Fetch a publisher's file over HTTP(S) into a local temporary file. No Dagster.

The file is streamed (the SVI national file is ~100 MB), hashed on the way, and
only returned when it is complete: HTTP status checked, byte count checked against
Content-Length, chunked bodies checked by http.client. On any failure the partial
file is deleted and :class:`DownloadError` says what went wrong, so a caller that
lands only what this returns can never land half a file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

USER_AGENT = "school_equity-batch-sources/0.1"
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """The download failed or was incomplete; nothing was kept."""


@dataclass(frozen=True)
class LocalFile:
    path: Path
    sha256: str
    size: int
    source_uri: str


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def is_url(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def download(url: str, dest_dir: str | os.PathLike, *, timeout: float = 120.0) -> LocalFile:
    """GET ``url`` into a new file under ``dest_dir``; raise :class:`DownloadError` on a
    non-200 status, a connection error, or fewer/more bytes than announced."""
    if not is_url(url):
        raise DownloadError(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=dest_dir)
    received = 0
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, OSError) as exc:
                raise DownloadError(f"GET {url}: {exc}") from exc
            with resp:
                if resp.status != 200:
                    raise DownloadError(f"GET {url}: HTTP {resp.status} {resp.reason}, expected 200")
                length = resp.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                try:
                    while chunk := resp.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                except http.client.IncompleteRead as exc:
                    received += len(exc.partial)
                    raise DownloadError(
                        f"GET {url}: truncated, connection closed after {received} of "
                        f"{expected if expected is not None else 'unknown'} bytes"
                    ) from exc
                except OSError as exc:
                    raise DownloadError(f"GET {url}: connection failed after {received} bytes: {exc}") from exc
            if expected is not None and received != expected:
                raise DownloadError(f"GET {url}: truncated, received {received} of {expected} bytes")
            if received == 0:
                raise DownloadError(f"GET {url}: empty response body")
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return LocalFile(Path(tmp), digest.hexdigest(), received, url)
