"""``download``: a model archive fetched from a local HTTP server the test starts (and stops) on 127.0.0.1,
verified by sha256, resumed with HTTP Range after an interrupted transfer, and installed atomically."""
import hashlib
import http.server
import io
import json
import os
import re
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stable_diffusion_chinese.service import Settings, choose_model
from stable_diffusion_chinese.service.download import ChecksumError, DownloadError, download_model


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes) with ``Range: bytes=N-`` support; ``server.cut`` makes the next
    full response stop half way (the connection closes early); ``server.ignore_range`` answers 200 always."""

    def do_GET(self):
        name = self.path.lstrip("/")
        server = self.server
        server.log.append((name, self.headers.get("Range")))
        if name not in server.files:
            self.send_error(404, "Not Found")
            return
        data = server.files[name]
        start = 0
        if self.headers.get("Range") and not server.ignore_range:
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut:
            server.cut = False
            body = body[: len(body) // 2]
        self.wfile.write(body)
        server.sent.append(len(body))

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.files, httpd.log, httpd.sent, httpd.cut, httpd.ignore_range = {}, [], [], False, False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def url(server, name):
    return f"http://127.0.0.1:{server.server_address[1]}/{name}"


@pytest.fixture
def settings(tmp_path):
    return Settings(tmp_path / "sd_home", {})


def model_files(seed=0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {"model_index.json": json.dumps({"_class_name": "StableDiffusionPipeline"}).encode(),
            "unet/config.json": b"{}",
            "unet/model.pdparams": rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()}


def tar_gz(files: dict[str, bytes], top: str | None = "tiny") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_installed(folder: Path, files: dict[str, bytes]):
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(files)
    for name, data in files.items():
        assert (folder / name).read_bytes() == data


def leftovers(settings) -> list[str]:
    """Anything but installed models: staging folders, partial downloads."""
    hidden = [p.name for p in settings.models_dir.iterdir() if p.name.startswith(".") and p.name != ".downloads"]
    partials = [p.name for p in (settings.models_dir / ".downloads").iterdir()]
    return hidden + partials


def test_tar_gz_installs_atomically(server, settings):
    files = model_files()
    server.files["tiny.tar.gz"] = archive = tar_gz(files)
    folder = download_model(url(server, "tiny.tar.gz"), sha(archive), settings=settings, progress=False)
    assert folder == settings.models_dir / "tiny"
    assert_installed(folder, files)
    assert leftovers(settings) == []
    assert choose_model("tiny", settings).path == folder.resolve()  # usable by name


def test_zip_with_model_at_top_level(server, settings):
    files = model_files(1)
    server.files["other.zip"] = archive = zipped(files)
    folder = download_model(url(server, "other.zip"), sha(archive).upper(), settings=settings, progress=False)
    assert_installed(folder, files)


def test_wrong_sha256_installs_nothing(server, settings):
    server.files["tiny.tar.gz"] = archive = tar_gz(model_files())
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as caught:
        download_model(url(server, "tiny.tar.gz"), wrong, settings=settings, progress=False)
    message = str(caught.value)
    assert f"sha256 mismatch for {url(server, 'tiny.tar.gz')}: expected {wrong}, got {sha(archive)}" in message
    assert "nothing was installed" in message
    assert not (settings.models_dir / "tiny").exists() and leftovers(settings) == []


def test_interrupted_download_resumes_with_range(server, settings):
    files = model_files()
    server.files["tiny.tar.gz"] = archive = tar_gz(files)
    server.cut = True
    with pytest.raises(DownloadError, match="was interrupted after .* bytes .*run the same command again to resume"):
        download_model(url(server, "tiny.tar.gz"), sha(archive), settings=settings, progress=False)
    partial = settings.models_dir / ".downloads" / f"{sha(archive)}.part"
    kept = partial.stat().st_size
    assert 0 < kept < len(archive) and partial.read_bytes() == archive[:kept]
    assert not (settings.models_dir / "tiny").exists()
    folder = download_model(url(server, "tiny.tar.gz"), sha(archive), settings=settings, progress=False)
    assert server.log[-1] == ("tiny.tar.gz", f"bytes={kept}-")
    assert server.sent[-1] == len(archive) - kept  # only the rest travelled
    assert_installed(folder, files)
    assert leftovers(settings) == []


def test_truncated_partial_and_a_server_without_range(server, settings):
    files = model_files()
    server.files["tiny.tar.gz"] = archive = tar_gz(files)
    server.ignore_range = True
    partial = settings.models_dir / ".downloads" / f"{sha(archive)}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(archive[:1000])
    folder = download_model(url(server, "tiny.tar.gz"), sha(archive), settings=settings, progress=False)
    assert server.sent[-1] == len(archive)  # the server sent everything again; the old part was not appended to
    assert_installed(folder, files)


def test_complete_partial_is_not_fetched_again(server, settings):
    files = model_files()
    server.files["tiny.tar.gz"] = archive = tar_gz(files)
    partial = settings.models_dir / ".downloads" / f"{sha(archive)}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(archive)
    folder = download_model(url(server, "tiny.tar.gz"), sha(archive), settings=settings, progress=False)
    assert server.sent == [] and server.log == [("tiny.tar.gz", f"bytes={len(archive)}-")]  # 416: already whole
    assert_installed(folder, files)


def test_existing_model_needs_overwrite(server, settings):
    server.files["tiny.tar.gz"] = first = tar_gz(model_files(0))
    download_model(url(server, "tiny.tar.gz"), sha(first), settings=settings, progress=False)
    server.log.clear()
    with pytest.raises(DownloadError, match="a model named 'tiny' is already installed at .*--overwrite"):
        download_model(url(server, "tiny.tar.gz"), sha(first), settings=settings, progress=False)
    assert server.log == []  # refused before downloading
    new_files = model_files(5)
    server.files["tiny.tar.gz"] = second = tar_gz(new_files)
    folder = download_model(url(server, "tiny.tar.gz"), sha(second), settings=settings, overwrite=True,
                            progress=False)
    assert_installed(folder, new_files)
    assert leftovers(settings) == []


@pytest.mark.parametrize("archive, message", [
    (tar_gz({"readme.txt": b"no model here"}), "the archive holds no model: expected model_index.json"),
    (tar_gz({"../evil.txt": b"x", "model_index.json": b"{}"}, top=None), "cannot unpack the archive ('../evil.txt' would be extracted to"),
    (zipped({"../evil.txt": b"x", "model_index.json": b"{}"}), "the archive holds an unsafe path '../evil.txt'"),
    (b"just some bytes, not an archive", "the download is neither a tar nor a zip archive"),
])
def test_bad_archives_install_nothing(server, settings, tmp_path, archive, message):
    server.files["bad.tar.gz"] = archive
    with pytest.raises(DownloadError, match=re.escape(message)):
        download_model(url(server, "bad.tar.gz"), sha(archive), settings=settings, progress=False)
    assert not (settings.models_dir / "bad").exists() and not (settings.models_dir / "evil.txt").exists()
    assert not (tmp_path / "sd_home" / "evil.txt").exists()
    assert [p.name for p in settings.models_dir.iterdir() if p.name != ".downloads"] == []


@pytest.mark.parametrize("args, error, message", [
    (dict(url="ftp://example.com/m.tar.gz", sha256="0" * 64), ValueError, "the URL must start with http"),
    (dict(url="http://127.0.0.1:9/m.tar.gz", sha256=None), ValueError, "no sha256 for http://127.0.0.1:9/m.tar.gz"),
    (dict(url="http://127.0.0.1:9/m.tar.gz", sha256="abc"), ValueError, "sha256 must be 64 hexadecimal digits"),
    (dict(url=None, sha256=None), ValueError, "no URL: give one, or set 'download_url'"),
    (dict(url="http://127.0.0.1:9/m.tar.gz", sha256="0" * 64), DownloadError,
     "cannot download http://127.0.0.1:9/m.tar.gz: [Errno 111] Connection refused"),
    (dict(url="http://127.0.0.1:9/.tar.gz", sha256="0" * 64), ValueError, "the model name must be a plain folder name"),
])
def test_bad_download_arguments(settings, args, error, message):
    with pytest.raises(error) as caught:
        download_model(**args, settings=settings, progress=False)
    assert message in str(caught.value)


def test_http_error_is_named(server, settings):
    with pytest.raises(DownloadError, match=r"cannot download .*/missing.tar.gz: HTTP 404 Not Found"):
        download_model(url(server, "missing.tar.gz"), "0" * 64, settings=settings, progress=False)


def test_configured_url_and_cli_use(server, tmp_path, monkeypatch, capsys):
    """`sd-chinese download --use` with the URL and hash from config.json; the model becomes the default."""
    from sdc_sdk.cli import main

    files = model_files()
    server.files["taiyi.tar.gz"] = archive = tar_gz(files, top="taiyi")
    home = tmp_path / "cli_home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"download_url": url(server, "taiyi.tar.gz"),
                                                  "download_sha256": sha(archive)}), encoding="utf-8")
    monkeypatch.setenv("SD_CHINESE_HOME", str(home))  # the environment the CLI reads, not a patch of our code
    assert main(["download", "--use"]) == 0
    assert capsys.readouterr().out.strip() == str(home / "models" / "taiyi")
    assert json.loads((home / "config.json").read_text())["model"] == "taiyi"
    assert choose_model(None, Settings(home, {})).path == (home / "models" / "taiyi").resolve()
    with pytest.raises(SystemExit) as exit_info:
        main(["download", url(server, "taiyi.tar.gz")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (f"sd-chinese download: error: no sha256 for {url(server, 'taiyi.tar.gz')}: "
                                               "pass --sha256 HEX (64 hex digits) so the archive can be verified")
    assert sorted(os.listdir(home / "models")) == [".downloads", "taiyi"]
