"""driptag.files.write_file: how every output (-o, --manifest, each file of --batch) is written.

A regular file is replaced atomically and keeps its mode; a symlink is followed and stays a link; a device
or a FIFO is written in place, never replaced by a rename."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from driptag.files import write_file


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def no_renames(monkeypatch) -> list:
    """os.replace refused (and recorded): a device must never be replaced by a rename."""
    attempts: list = []

    def refuse(src, dst):
        attempts.append((src, dst))
        raise AssertionError(f"rename of {src} over {dst}")

    monkeypatch.setattr(os, "replace", refuse)
    return attempts


def test_a_new_file_gets_the_data_and_the_usual_mode_and_nothing_else_is_left(tmp_path):
    write_file(tmp_path / "drip.js", b"new\x00\xff")
    assert (tmp_path / "drip.js").read_bytes() == b"new\x00\xff"
    assert mode_of(tmp_path / "drip.js") == 0o666 & ~umask(), oct(mode_of(tmp_path / "drip.js"))
    assert os.listdir(tmp_path) == ["drip.js"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755, 0o444])
def test_an_existing_regular_file_keeps_its_mode(tmp_path, mode):
    target = tmp_path / "drip.js"
    target.write_bytes(b"old")
    os.chmod(target, mode)
    inode = os.stat(target).st_ino
    write_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode_of(target) == mode, f"mode {oct(mode)} became {oct(mode_of(target))}"
    assert os.stat(target).st_ino != inode, "a regular file was not replaced by a rename"
    assert os.listdir(tmp_path) == ["drip.js"]


def test_a_regular_file_is_replaced_by_a_rename_of_a_temporary_file_beside_it(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append((Path(src), Path(dst))) or real_replace(src, dst))
    write_file(tmp_path / "drip.js", b"new")
    [(temporary, target)] = renames
    assert target == tmp_path / "drip.js" and temporary.parent == tmp_path, renames
    assert temporary.name.startswith(".drip.js.") and temporary.name.endswith(".tmp"), temporary


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "drip.js").write_bytes(b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as caught:
        write_file(tmp_path / "drip.js", b"new")
    assert caught.value.errno == errno.ENOSPC
    assert (tmp_path / "drip.js").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["drip.js"], f"left behind: {os.listdir(tmp_path)}"


def test_a_symlink_is_followed_the_target_is_written_and_the_link_stays(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "drip.js").write_bytes(b"old")
    os.chmod(tmp_path / "real" / "drip.js", 0o640)
    (tmp_path / "site").mkdir()
    link = tmp_path / "site" / "drip.js"
    link.symlink_to("../real/drip.js")
    write_file(link, b"new")
    assert link.is_symlink() and os.readlink(link) == "../real/drip.js", "the link was replaced"
    assert (tmp_path / "real" / "drip.js").read_bytes() == b"new"
    assert mode_of(tmp_path / "real" / "drip.js") == 0o640
    assert sorted(os.listdir(tmp_path / "real")) == ["drip.js"] and sorted(os.listdir(tmp_path / "site")) == ["drip.js"]


def test_a_chain_of_symlinks_is_followed_to_the_end(tmp_path):
    (tmp_path / "drip.js").write_bytes(b"old")
    (tmp_path / "one").symlink_to("drip.js")
    (tmp_path / "two").symlink_to("one")
    write_file(tmp_path / "two", b"new")
    assert (tmp_path / "drip.js").read_bytes() == b"new"
    assert os.readlink(tmp_path / "two") == "one" and os.readlink(tmp_path / "one") == "drip.js"


def test_a_dangling_symlink_creates_its_target(tmp_path):
    (tmp_path / "link.js").symlink_to("drip.js")
    write_file(tmp_path / "link.js", b"new")
    assert (tmp_path / "link.js").is_symlink()
    assert (tmp_path / "drip.js").read_bytes() == b"new"
    assert mode_of(tmp_path / "drip.js") == 0o666 & ~umask()


def test_dev_null_is_written_in_place_never_renamed_over(monkeypatch):
    attempts = no_renames(monkeypatch)
    write_file("/dev/null", b"anything")
    assert attempts == []
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null is no longer a character device"


def test_a_device_that_fails_the_write_gives_its_error(monkeypatch):
    no_renames(monkeypatch)
    with pytest.raises(OSError) as caught:
        write_file("/dev/full", b"x" * 100_000)
    assert caught.value.errno == errno.ENOSPC, caught.value


def test_a_fifo_is_written_in_place_for_its_reader(tmp_path, monkeypatch):
    attempts = no_renames(monkeypatch)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    failures: list[BaseException] = []

    def read() -> None:
        with open(fifo, "rb") as stream:
            received.append(stream.read())

    def write() -> None:
        try:
            write_file(fifo, b"through the pipe")
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    reader, writer = threading.Thread(target=read, daemon=True), threading.Thread(target=write, daemon=True)
    reader.start()
    writer.start()
    writer.join(timeout=30)
    reader.join(timeout=30)
    assert not writer.is_alive() and not reader.is_alive(), "the write to the FIFO did not finish within 30 s"
    assert failures == [] and attempts == [], (failures, attempts)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced"
    assert os.listdir(tmp_path) == ["pipe"]


def test_errors_name_the_path_the_caller_gave_not_a_temporary_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as caught:
        write_file("missing/drip.js", b"x")
    assert caught.value.filename == "missing/drip.js", caught.value
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError) as caught:
        write_file("loop", b"x")
    assert (caught.value.errno, caught.value.filename) == (errno.ELOOP, "loop"), caught.value
