"""sha256 digests of written files: SHA256SUMS as `sha256sum -c` reads it, and the verdicts on
files damaged in place, truncated or missing."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from prefalign.integrity import (
    CHECKSUMS,
    CorruptStateError,
    check_checksums,
    file_problem,
    require_checksums,
    sha256_file,
    write_checksums,
)


@pytest.fixture
def directory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "sub" / "config.json").write_text('{"a": 1}')
    write_checksums(tmp_path)
    return tmp_path


def test_sha256_file_is_hashlib_s_digest_of_the_bytes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == hashlib.sha256(b"abc").hexdigest()
    assert sha256_file(path).startswith("ba7816bf")  # FIPS 180-2's example for "abc"


def test_sha256sums_lists_every_other_file_and_passes(directory):
    lines = (directory / CHECKSUMS).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["model.safetensors", "sub/config.json"]
    check = check_checksums(directory)
    assert check.ok and check.detail == f"2 files match {CHECKSUMS}"


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils' sha256sum")
def test_sha256sum_reads_the_file(directory):
    done = subprocess.run(["sha256sum", "-c", CHECKSUMS], cwd=directory, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_byte_changed_in_place_fails_and_is_refused(directory):
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    check = check_checksums(directory)
    assert not check.ok and check.detail == ("model.safetensors fails its sha256 check (damaged "
                                             "in place; the size is unchanged)")
    with pytest.raises(CorruptStateError, match="so it is not used"):
        require_checksums(directory)


def test_missing_truncated_and_unlisted_states(directory):
    (directory / "sub" / "config.json").unlink()
    assert check_checksums(directory).detail == "sub/config.json is missing"
    (directory / CHECKSUMS).write_text("not a checksum line\n")
    assert "is unreadable (line 1 is not" in check_checksums(directory).detail
    (directory / CHECKSUMS).unlink()
    assert check_checksums(directory).ok  # written before checksums: passes, unverified
    assert "not verified" in check_checksums(directory).detail
    path = directory / "model.safetensors"
    assert file_problem(path, 10, None) == ("model.safetensors is 16384 bytes, 10 when written "
                                            "(truncated or replaced)")
