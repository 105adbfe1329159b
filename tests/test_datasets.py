"""untar_data/download_data against a local server that drops, fails, lies and stalls. No internet."""
import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from http_server import FileServer

from fastbase import archives, datasets, download
from fastbase.core import Path
from fastbase.datasets import (
    CatalogueError,
    ChecksumError,
    DownloadError,
    OfflineError,
    URLs,
    download_data,
    untar_data,
)

FAST = {"backoff": 0.0, "timeout": 5.0}  # no sleeping between retries in tests


def make_tgz(files: dict[str, bytes], top: str = "tiny") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ~1.2 MB of incompressible bytes: several 256 KiB download chunks, so a drop half-way keeps some
ARCHIVE = make_tgz({"train/a.bin": os.urandom(600_000), "valid/b.bin": os.urandom(600_000), "labels.csv": b"x,y\n"})
SHA = hashlib.sha256(ARCHIVE).hexdigest()
PATH = "/fast-ai-sample/tiny.tgz"


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.stop()


@pytest.fixture
def catalogue(monkeypatch, server):
    """Add a TINY entry (served by `server`, with its size and sha256) to the catalogue."""
    real = datasets.load_catalogue()
    entries = dict(real, TINY={"url": server.add(PATH, ARCHIVE), "folder": "tiny", "size": len(ARCHIVE),
                               "sha256": SHA})
    monkeypatch.setattr(datasets, "load_catalogue", lambda: entries)
    return entries


def data_dir(home) -> Path:
    return Path(home) / "data"


def test_untar_data_downloads_checks_and_extracts(server, catalogue, fastbase_home):
    path = untar_data("TINY", **FAST)
    assert path == data_dir(fastbase_home) / "tiny" and isinstance(path, Path)
    assert [p.name for p in path.ls()] == ["labels.csv", "train", "valid"]
    assert isinstance(path / "train", Path)
    assert (Path(fastbase_home) / "archive" / "tiny.tgz").read_bytes() == ARCHIVE
    assert not list((Path(fastbase_home) / "archive").glob("*.part"))
    assert server.count(PATH) == 1


def test_catalogue_url_without_extension_and_lower_case_name_resolve_to_the_entry(server, catalogue):
    no_ext = catalogue["TINY"]["url"][: -len(".tgz")]
    assert untar_data(no_ext, **FAST) == untar_data("tiny", **FAST)
    assert server.count(PATH) == 1


def test_resume_after_dropped_connection_uses_range(server, catalogue):
    server.behaviour.drop_after = len(ARCHIVE) // 2
    path = untar_data("TINY", **FAST)
    assert (path / "labels.csv").read_bytes() == b"x,y\n"
    first, second = server.requests
    assert "Range" not in first.headers
    resumed_at = int(second.headers["Range"][len("bytes="):-1])
    assert 0 < resumed_at <= len(ARCHIVE) // 2 and second.status == 206
    assert server.bytes_sent < 2 * len(ARCHIVE)


def test_partial_file_from_an_earlier_run_is_resumed(server, catalogue, fastbase_home):
    part = Path(fastbase_home) / "archive" / "tiny.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ARCHIVE[:1000])
    download_data("TINY", **FAST)
    assert server.requests[0].headers["Range"] == "bytes=1000-"
    assert server.bytes_sent == len(ARCHIVE) - 1000


def test_server_ignoring_range_gets_a_fresh_download(server, catalogue, fastbase_home):
    part = Path(fastbase_home) / "archive" / "tiny.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another version")
    server.behaviour.ignore_range = True
    archive = download_data("TINY", **FAST)
    assert archive.read_bytes() == ARCHIVE  # not the stale prefix + the whole file
    assert server.requests[0].status == 200


def test_retry_after_server_errors(server, catalogue):
    server.behaviour.statuses = [500, 503]
    untar_data("TINY", **FAST)
    assert [r.status for r in server.requests] == [500, 503, 200]


def test_retries_are_bounded(server, catalogue, fastbase_home):
    server.behaviour.status = 500
    with pytest.raises(DownloadError, match="after 3 attempts"):
        untar_data("TINY", retries=2, **FAST)
    assert server.count() == 3
    assert not (data_dir(fastbase_home) / "tiny").exists()


def test_404_fails_at_once_naming_the_url(server):
    url = server.url + "/nowhere/missing.tgz"
    with pytest.raises(DownloadError, match=f"{url}.*404"):
        untar_data(url, **FAST)
    assert server.count() == 1


def test_slow_server_times_out_and_is_retried(server, catalogue):
    server.behaviour.stall = 1.0
    path = untar_data("TINY", backoff=0.0, timeout=0.2)
    assert (path / "labels.csv").exists()
    assert server.count() == 2


def test_checksum_mismatch_removes_the_archive_and_extracts_nothing(server, catalogue, fastbase_home):
    server.behaviour.corrupt = True
    with pytest.raises(ChecksumError, match="sha256.*deleted"):
        untar_data("TINY", **FAST)
    archive_dir = Path(fastbase_home) / "archive"
    assert not list(archive_dir.glob("tiny.tgz*"))
    assert not (data_dir(fastbase_home) / "tiny").exists()


def test_size_from_the_catalogue_is_checked_before_reading_the_body(server, catalogue, fastbase_home):
    catalogue["TINY"]["size"] = len(ARCHIVE) + 1
    with pytest.raises(ChecksumError, match="bytes where"):
        download_data("TINY", **FAST)
    assert not list((Path(fastbase_home) / "archive").glob("tiny.tgz*"))


def test_expected_sha256_checks_urls_outside_the_catalogue(server):
    url = server.add("/other/thing.tgz", ARCHIVE)
    with pytest.raises(ChecksumError):
        untar_data(url, expected_sha256="0" * 64, **FAST)
    assert (untar_data(url, expected_sha256=SHA, **FAST) / "labels.csv").exists()


def test_url_without_extension_fetches_the_tgz_like_fastai_v1(server, fastbase_home):
    server.add("/other/thing.tgz", ARCHIVE)
    path = untar_data(server.url + "/other/thing", **FAST)
    assert path == data_dir(fastbase_home) / "thing"
    assert server.requests[0].path == "/other/thing.tgz"


def test_second_call_touches_no_network(server, catalogue):
    first = untar_data("TINY", **FAST)
    server.stop()
    assert untar_data("TINY", **FAST) == first
    assert download_data("TINY", **FAST).read_bytes() == ARCHIVE  # the archive is checked from disk
    assert server.count() == 1


def test_archive_present_but_folder_missing_is_extracted_without_network(server, catalogue, fastbase_home):
    first = untar_data("TINY", **FAST)
    archives.shutil.rmtree(first)
    server.stop()
    assert (untar_data("TINY", **FAST) / "labels.csv").exists()


def test_force_download_downloads_and_extracts_again(server, catalogue):
    path = untar_data("TINY", **FAST)
    (path / "mine.txt").write_text("added after extraction")
    assert untar_data("TINY", force_download=True, **FAST) == path
    assert server.count(PATH) == 2
    assert not (path / "mine.txt").exists() and (path / "labels.csv").exists()


@pytest.mark.skipif(datasets.fcntl is None, reason="no file locks on this platform")
def test_concurrent_calls_download_once(server, catalogue):
    server.behaviour.stall = 0.3  # keeps the first download busy while the second call arrives
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: untar_data("TINY", **FAST), range(2)))
    assert paths[0] == paths[1] and (paths[0] / "labels.csv").exists()
    assert server.count(PATH) == 1


def test_interrupted_extraction_leaves_no_folder(server, catalogue, fastbase_home, monkeypatch):
    calls = []

    def interrupt(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(archives, "_check_tar_member", interrupt)
    with pytest.raises(KeyboardInterrupt):
        untar_data("TINY", **FAST)
    assert list(data_dir(fastbase_home).iterdir()) == []  # neither the folder nor a temporary one
    monkeypatch.undo()


def test_mirror_from_environment_replaces_the_host(server, monkeypatch, fastbase_home):
    real = datasets.load_catalogue()
    entry = {"url": "https://datasets.invalid/fast-ai-sample/tiny.tgz", "folder": "tiny", "sha256": SHA}
    monkeypatch.setattr(datasets, "load_catalogue", lambda: dict(real, TINY=entry))
    server.add("/mirror/fast-ai-sample/tiny.tgz", ARCHIVE)
    monkeypatch.setenv("FASTBASE_MIRROR", server.url + "/mirror/")
    assert (untar_data("TINY", **FAST) / "labels.csv").exists()
    assert [r.path for r in server.requests] == ["/mirror/fast-ai-sample/tiny.tgz"]


def test_mirror_from_config_file(server, monkeypatch, fastbase_home):
    real = datasets.load_catalogue()
    entry = {"url": "https://datasets.invalid/fast-ai-sample/tiny.tgz", "folder": "tiny", "sha256": SHA}
    monkeypatch.setattr(datasets, "load_catalogue", lambda: dict(real, TINY=entry))
    server.add("/m/fast-ai-sample/tiny.tgz", ARCHIVE)
    (Path(fastbase_home) / "config.ini").write_text(f"[network]\nmirror = {server.url}/m\n")
    download_data("TINY", **FAST)
    assert server.requests[0].path == "/m/fast-ai-sample/tiny.tgz"


def test_offline_mode_names_where_to_put_the_archive(server, catalogue, monkeypatch, fastbase_home):
    monkeypatch.setenv("FASTBASE_OFFLINE", "1")
    where = Path(fastbase_home) / "archive" / "tiny.tgz"
    with pytest.raises(OfflineError, match=f"put it at {where}"):
        untar_data("TINY", **FAST)
    assert server.count() == 0
    where.write_bytes(ARCHIVE)  # as the message says
    assert (untar_data("TINY", **FAST) / "labels.csv").exists()
    assert server.count() == 0


def test_offline_mode_refuses_a_bad_archive_instead_of_downloading(catalogue, monkeypatch, fastbase_home):
    monkeypatch.setenv("FASTBASE_OFFLINE", "1")
    where = Path(fastbase_home) / "archive" / "tiny.tgz"
    where.parent.mkdir(parents=True)
    where.write_bytes(ARCHIVE[:-1])
    with pytest.raises(ChecksumError):
        untar_data("TINY", **FAST)


def test_file_url_and_local_path(tmp_path, fastbase_home):
    archive = tmp_path / "local.tar.gz"
    archive.write_bytes(ARCHIVE)
    from_path = untar_data(str(archive))
    assert from_path == data_dir(fastbase_home) / "local" and (from_path / "labels.csv").exists()
    from_url = untar_data(archive.as_uri(), dest=tmp_path / "elsewhere")
    assert from_url == tmp_path / "elsewhere" / "local" and (from_url / "train" / "a.bin").exists()
    assert archive.exists()  # used where it is, not moved


def test_digits_works_offline(monkeypatch, fastbase_home):
    monkeypatch.setenv("FASTBASE_OFFLINE", "1")
    path = untar_data(URLs.DIGITS)
    assert path == data_dir(fastbase_home) / "digits"
    assert {p.name for p in path.ls()} == {"train", "valid", "labels.csv"}
    assert len((path / "train").ls()) == 10 and isinstance((path / "train").ls()[0], Path)
    assert (path / "labels.csv").read_text().startswith("name,label\n")


def test_urls_mirror_the_catalogue_without_extension():
    catalogue = datasets.load_catalogue()
    assert URLs.PETS == "https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet"
    assert URLs.DIGITS == "packaged:digits"
    assert set(URLs.names()) == set(catalogue)
    assert URLs.DATA_PATH.name == "data" and URLs.ARCHIVE_PATH.name == "archive"
    with pytest.raises(AttributeError, match="URLs.PETS"):
        getattr(URLs, "PET")  # noqa: B009 (the attribute access is what is tested)


def test_adult_sample_is_in_the_catalogue_with_fastais_size():
    entry = datasets.load_catalogue()["ADULT_SAMPLE"]
    assert URLs.ADULT_SAMPLE == "https://s3.amazonaws.com/fast-ai-sample/adult_sample"
    assert entry["folder"] == "adult_sample" and entry["size"] == 968212 and "sha256" not in entry


def test_camvid_tiny_is_catalogued_with_fastais_url_and_size_and_a_sha256():
    entry = datasets.load_catalogue()["CAMVID_TINY"]
    assert URLs.CAMVID_TINY == "https://s3.amazonaws.com/fast-ai-sample/camvid_tiny"
    assert entry["url"] == URLs.CAMVID_TINY + ".tgz" and entry["folder"] == "camvid_tiny"
    assert entry["size"] == 2314212  # as fastai/data/checks.txt publishes it
    assert len(entry["sha256"]) == 64 and int(entry["sha256"], 16) >= 0


def test_unknown_name_raises_with_a_suggestion():
    with pytest.raises(CatalogueError, match="Did you mean PETS"):
        untar_data("petz")


def test_progress_bar_reports_megabytes_and_speed(server, monkeypatch, tmp_path):
    drawn = []

    class Bar:  # stands in for fastprogress's bar, recording what it is told
        def __init__(self, gen, leave):
            self.total, self.last_v, self.comment = len(gen), None, ""

        def update(self, val):
            self.last_v = None if val >= self.total else val
            drawn.append((val, self.comment))

        def on_interrupt(self):
            pass
    monkeypatch.setattr(download, "progress_bar", Bar)
    url = server.add("/other/thing.tgz", ARCHIVE)
    download.download_url(url, tmp_path / "thing.tgz", progress=True, **FAST)
    assert drawn[0][0] == 0 and drawn[-1][0] == 2  # the 1.2 MB file is two MiB steps
    assert drawn[-1][1].startswith(f"{len(ARCHIVE) / 1e6:.1f}/{len(ARCHIVE) / 1e6:.1f} MB") and "MB/s" in drawn[-1][1]
