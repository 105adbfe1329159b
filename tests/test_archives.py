"""Safe extraction: hostile archives are refused with the member named, and nothing lands outside."""
import errno
import gzip
import io
import os
import tarfile
import zipfile

import pytest

from fastbase import archives
from fastbase.archives import (
    ArchiveError,
    UnsafeArchiveError,
    extract_archive,
    strip_archive_extension,
)
from fastbase.core import Path


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.fixture
def box(tmp_path):
    """A sandbox: archives are extracted to box/out/dest; box/out must hold nothing else afterwards."""
    (tmp_path / "out").mkdir()
    return tmp_path


def write(box, name: str, data: bytes) -> Path:
    path = Path(box) / name
    path.write_bytes(data)
    return path


def assert_nothing_written(box):
    assert list((box / "out").iterdir()) == []
    assert not (box / "evil").exists() and not (box / "evil.txt").exists()


def test_single_top_folder_becomes_the_destination(box):
    archive = write(box, "a.tgz", tar_bytes((member("pets/images/cat.jpg"), b"meow"), (member("pets/x.csv"), b"1")))
    dest = extract_archive(archive, box / "out" / "dest")
    assert isinstance(dest, Path) and sorted(p.name for p in dest.ls()) == ["images", "x.csv"]
    assert (dest / "images" / "cat.jpg").read_bytes() == b"meow"


def test_several_top_level_entries_are_kept_as_they_are(box):
    archive = write(box, "a.tar", tar_bytes((member("a.txt"), b"a"), (member("b/c.txt"), b"c"), mode="w"))
    dest = extract_archive(archive, box / "out" / "dest")
    assert sorted(p.name for p in dest.ls()) == ["a.txt", "b"]


def test_links_inside_the_destination_are_allowed(box):
    archive = write(box, "a.tgz", tar_bytes((member("d/real.txt"), b"r"), (member("d/sym", tarfile.SYMTYPE, "real.txt"), None),
                                            (member("d/hard", tarfile.LNKTYPE, "d/real.txt"), None)))
    dest = extract_archive(archive, box / "out" / "dest")
    assert (dest / "sym").read_bytes() == b"r" and (dest / "hard").read_bytes() == b"r"


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "..\\evil.txt"])
def test_path_traversal_is_refused(box, name):
    archive = write(box, "a.tgz", tar_bytes((member("fine.txt"), b"ok"), (member(name), b"pwned")))
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_absolute_path_is_refused(box):
    target = box / "evil.txt"
    archive = write(box, "a.tgz", tar_bytes((member(str(target)), b"pwned")))
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_symlink_escaping_the_destination_is_refused(box):
    archive = write(box, "a.tgz", tar_bytes((member("link", tarfile.SYMTYPE, "../.."), None),
                                            (member("link/evil.txt"), b"pwned")))
    with pytest.raises(UnsafeArchiveError, match="'link' is a symbolic link"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_symlink_chain_through_an_earlier_link_is_refused(box):
    # 'd' -> '.' is harmless alone; 'd/up' -> '../evil' looks inside on paper but escapes on disk
    archive = write(box, "a.tgz", tar_bytes((member("top/d", tarfile.SYMTYPE, "."), None),
                                            (member("top/x", tarfile.SYMTYPE, "d/../.."), None),
                                            (member("top/x/evil.txt"), b"pwned")))
    with pytest.raises(UnsafeArchiveError, match="top/x"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_hardlink_escaping_the_destination_is_refused(box):
    secret = write(box, "secret.txt", b"do not touch")
    archive = write(box, "a.tgz", tar_bytes((member("hard", tarfile.LNKTYPE, "../../secret.txt"), None)))
    with pytest.raises(UnsafeArchiveError, match="'hard' is a hard link"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)
    assert secret.read_bytes() == b"do not touch"


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_files_and_fifos_are_refused(box, kind):
    archive = write(box, "a.tgz", tar_bytes((member("ok.txt"), b"ok"), (member("dev/node", kind), None)))
    with pytest.raises(UnsafeArchiveError, match="'dev/node' is a device file or fifo"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_tar_bomb_is_refused_by_ratio(box):
    archive = write(box, "bomb.tgz", tar_bytes((member("zeros.bin"), bytes(20 * 2**20))))
    assert archive.stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError, match="'zeros.bin'.*archive bomb"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_total_size_cap_is_configurable(box):
    archive = write(box, "a.tgz", tar_bytes((member("a.bin"), os.urandom(600)), (member("b.bin"), os.urandom(600))))
    with pytest.raises(UnsafeArchiveError, match="'b.bin'.*1,000 bytes"):
        extract_archive(archive, box / "out" / "dest", max_size=1000)
    assert_nothing_written(box)
    assert extract_archive(archive, box / "out" / "dest", max_size=2000).is_dir()


def test_lying_size_header_is_refused_before_anything_is_written(box):
    info = member("huge.bin")
    info.size = 2**40  # a header claiming a terabyte, with no data behind it
    raw = io.BytesIO()
    raw.write(info.tobuf(format=tarfile.PAX_FORMAT))
    archive = write(box, "a.tar", raw.getvalue() + bytes(1024))
    with pytest.raises(UnsafeArchiveError, match="huge.bin"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_extracts(box):
    archive = write(box, "a.zip", zip_bytes({"data/x.txt": b"x", "data/sub/y.txt": b"y"}))
    dest = extract_archive(archive, box / "out" / "dest")
    assert (dest / "sub" / "y.txt").read_bytes() == b"y"


def test_zip_traversal_is_refused(box):
    archive = write(box, "a.zip", zip_bytes({"ok.txt": b"ok", "../evil.txt": b"pwned"}))
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_zip_bomb_is_refused(box):
    archive = write(box, "bomb.zip", zip_bytes({"zeros.bin": bytes(20 * 2**20)}))
    with pytest.raises(UnsafeArchiveError, match="zeros.bin"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_plain_gz_becomes_one_file(box):
    archive = write(box, "table.csv.gz", gzip.compress(b"a,b\n1,2\n"))
    dest = extract_archive(archive, box / "out" / "table")
    assert (dest / "table.csv").read_bytes() == b"a,b\n1,2\n"


def test_truncated_archive_raises_and_leaves_no_folder(box):
    data = tar_bytes((member("t/a.bin"), os.urandom(200_000)), (member("t/b.bin"), os.urandom(200_000)))
    archive = write(box, "cut.tgz", data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_not_an_archive_is_refused(box):
    archive = write(box, "page.tgz", b"<html>Access denied</html>")
    with pytest.raises(ArchiveError, match="not a tar, zip or gzip archive"):
        extract_archive(archive, box / "out" / "dest")


def test_existing_destination_is_replaced_only_when_asked(box):
    archive = write(box, "a.tgz", tar_bytes((member("t/new.txt"), b"new")))
    dest = box / "out" / "dest"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(ArchiveError, match="replace=True"):
        extract_archive(archive, dest)
    extract_archive(archive, dest, replace=True)
    assert [p.name for p in Path(dest).ls()] == ["new.txt"]
    assert [p.name for p in (box / "out").iterdir()] == ["dest"]


def test_temporary_folder_of_a_killed_run_is_cleaned_up(box):
    stale = box / "out" / ".dest.999999999.abcd.extracting"  # a pid no process has
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"half")
    archive = write(box, "a.tgz", tar_bytes((member("t/x.txt"), b"x")))
    extract_archive(archive, box / "out" / "dest")
    assert [p.name for p in (box / "out").iterdir()] == ["dest"]


def test_failure_midway_removes_the_temporary_folder(box, monkeypatch):
    archive = write(box, "a.tgz", tar_bytes(*[(member(f"t/{i}.txt"), b"x") for i in range(5)]))
    real, seen = archives._check_tar_member, []

    def fail_on_fourth(*args):
        seen.append(args[1].name)
        if len(seen) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)
    monkeypatch.setattr(archives, "_check_tar_member", fail_on_fourth)
    with pytest.raises(OSError, match="No space"):
        extract_archive(archive, box / "out" / "dest")
    assert_nothing_written(box)


def test_strip_archive_extension():
    assert [strip_archive_extension(n) for n in ("pets.tgz", "a.tar.gz", "b.zip", "c.csv.gz", "plain", ".tgz")] == \
        ["pets", "a", "b", "c.csv", "plain", ".tgz"]
