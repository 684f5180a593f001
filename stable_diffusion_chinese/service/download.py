"""Fetch a model archive (tar or zip holding a model folder), verify it, and install it atomically.

- The archive is downloaded to ``models/.downloads/<sha256>.part``; an interrupted download resumes from
  there with an HTTP ``Range`` request (a server that ignores Range is read again from the start).
- Nothing is installed unless the whole file has the expected sha256; a mismatching file is deleted.
- The archive is unpacked into a hidden staging folder beside ``models/NAME`` (tar members that would land
  outside it, links included, are refused), checked to hold a model (``model_index.json``), and renamed
  into place: ``models/NAME`` is either absent, the old model, or the complete new one.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

from .settings import Settings

CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(OSError):
    """The archive could not be fetched, verified or installed; the message says which and why."""


class ChecksumError(DownloadError, ValueError):
    """The downloaded file is not the archive the sha256 names."""


def download_model(url: str | None = None, sha256: str | None = None, *, name: str | None = None,
                   settings: Settings | None = None, overwrite: bool = False, progress: bool = True,
                   timeout: float = 60.0) -> Path:
    """Download, verify and install a model archive as ``models/NAME``; returns that folder.

    ``url`` and ``sha256`` default to ``download_url`` / ``download_sha256`` in config.json. ``name``
    defaults to the archive's file name without its extension.
    """
    settings = settings or Settings.from_environ()
    url, sha256 = _source(url, sha256, settings)
    name = _name(name, url)
    destination = settings.models_dir / name
    if destination.exists() and not overwrite:
        raise DownloadError(f"a model named {name!r} is already installed at {destination} "
                            "(pass overwrite=True / --overwrite to replace it, or choose another --name)")
    partial = settings.models_dir / ".downloads" / f"{sha256}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    _fetch(url, partial, progress and name, timeout)
    actual = file_sha256(partial)
    if actual != sha256:
        partial.unlink()
        raise ChecksumError(f"sha256 mismatch for {url}: expected {sha256}, got {actual}; the download was "
                            "deleted and nothing was installed")
    _install(partial, destination, overwrite)
    partial.unlink()
    return destination


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ arguments

def _source(url: str | None, sha256: str | None, settings: Settings) -> tuple[str, str]:
    if url is None:
        config = settings.config()
        url = config.get("download_url")
        if url is None:
            raise ValueError(f"no URL: give one, or set 'download_url' (and 'download_sha256') in "
                             f"{settings.config_file}")
        sha256 = sha256 or config.get("download_sha256")  # the configured hash belongs to the configured URL only
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"the URL must start with http:// or https://, got {url!r}")
    if sha256 is None:
        raise ValueError(f"no sha256 for {url}: pass --sha256 HEX (64 hex digits) so the archive can be verified")
    if not isinstance(sha256, str) or not _SHA256.match(sha256.strip().lower()):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return url, sha256.strip().lower()


def _name(name: str | None, url: str) -> str:
    if name is None:
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
        for suffix in ARCHIVE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"the model name must be a plain folder name (no '/', not starting with '.'), got {name!r}"
                         " (pass --name)")
    return name


# ----------------------------------------------------------------------------------------- download

def _fetch(url: str, partial: Path, progress: str | None, timeout: float) -> None:
    """Bring ``partial`` up to the whole file, resuming from its current size; ``progress`` labels the bar."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing after our bytes: the file is complete; the hash decides
            return
        raise DownloadError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot download {url}: {reason}") from None
    with response:
        resumed = have and response.status == 206 and _range_start(response.headers.get("Content-Range")) == have
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        _copy(response, partial, "ab" if resumed else "wb", start, total, progress, url)


def _range_start(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match(header or "")
    return int(match.group(1)) if match else None


def _copy(response, partial: Path, mode: str, start: int, total: int | None, progress: str | None,
          url: str) -> None:
    from tqdm.auto import tqdm

    written = start
    with open(partial, mode) as out, tqdm(total=total, initial=start, unit="B", unit_scale=True, file=sys.stderr,
                                          desc=f"download {progress}", disable=not progress) as bar:
        try:
            while block := response.read(CHUNK):
                out.write(block)
                written += len(block)
                bar.update(len(block))
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
            if isinstance(error, http.client.IncompleteRead):
                out.write(error.partial)
                written += len(error.partial)
            raise DownloadError(f"the download of {url} was interrupted after {written} of {total or '?'} bytes "
                                f"(kept in {partial}); run the same command again to resume") from None
    if total is not None and written < total:
        raise DownloadError(f"the download of {url} was interrupted after {written} of {total} bytes (kept in "
                            f"{partial}); run the same command again to resume")


# ------------------------------------------------------------------------------------------ install

def _install(archive: Path, destination: Path, overwrite: bool) -> None:
    staging = destination.with_name(f".{destination.name}.installing-{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        _extract(archive, staging)
        root = _model_root(staging)
        if destination.exists():
            if not overwrite:
                raise DownloadError(f"{destination} appeared while downloading; nothing was installed")
            old = destination.with_name(f".{destination.name}.old-{uuid.uuid4().hex}")
            os.rename(destination, old)
            os.rename(root, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(root, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(archive: Path, folder: Path) -> None:
    if tarfile.is_tarfile(archive):
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")  # refuses absolute paths, "..", links leaving the folder
        except (tarfile.TarError, EOFError) as error:
            raise DownloadError(f"cannot unpack the archive ({error}); nothing was installed") from None
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                parts = Path(member).parts
                if Path(member).is_absolute() or ".." in parts:
                    raise DownloadError(f"the archive holds an unsafe path {member!r}; nothing was installed")
            zipped.extractall(folder)
    else:
        raise DownloadError("the download is neither a tar nor a zip archive; nothing was installed")


def _model_root(folder: Path) -> Path:
    """The folder holding model_index.json: the archive's top level or its single top folder."""
    if (folder / "model_index.json").is_file():
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and (entries[0] / "model_index.json").is_file():
        return entries[0]
    raise DownloadError("the archive holds no model: expected model_index.json at its top level or in its single "
                        "top folder; nothing was installed")
