"""Full disks and denied writes as one-line StorageErrors, from the errors the libraries raise
(real ones: /dev/full reports ENOSPC to every write, as a full disk does)."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import safetensors
import torch
from safetensors.torch import save_file

from prefalign.storage import StorageError, human_bytes, reporting_storage, storage_error


def _is_dev_full() -> bool:
    """Whether /dev/full is the character device (1, 7), never a file a write would create."""
    try:
        return stat.S_ISCHR(os.stat("/dev/full").st_mode)
    except OSError:
        return False


needs_dev_full = pytest.mark.skipif(not _is_dev_full(), reason="needs the /dev/full device")
# From 0.8, safetensors' save_file writes a temporary file beside the target and renames it over
# the target: given /dev/full it would replace the device node with a regular file.
SAVES_BY_RENAME = tuple(int(part) for part in safetensors.__version__.split(".")[:2]) >= (0, 8)


def test_bytes_are_shown_exactly_and_in_binary_units():
    assert human_bytes(532) == "532 bytes"
    assert human_bytes(11_456) == "11,456 bytes (11.2 KiB)"  # 11456 / 1024 = 11.19
    assert human_bytes(1_288_490_188) == "1,288,490,188 bytes (1.2 GiB)"  # / 1024**3 = 1.20


def test_an_enospc_names_the_path_and_the_bytes_it_needed(tmp_path):
    error = storage_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "x", 2048)
    assert isinstance(error, StorageError) and error.disk_full and error.errno == errno.ENOSPC
    assert str(error).startswith(f"no space left on device writing {tmp_path / 'x'}: "
                                 "needed about 2,048 bytes (2.0 KiB), ")
    assert str(error).endswith(" free")


@needs_dev_full
@pytest.mark.skipif(SAVES_BY_RENAME, reason="safetensors >= 0.8 would rename its file over /dev/full")
def test_safetensors_own_error_for_a_full_disk_is_recognised():
    with pytest.raises(Exception) as raised:
        save_file({"a": torch.zeros(4096)}, "/dev/full")
    assert type(raised.value).__name__ == "SafetensorError"
    found = storage_error(raised.value, "model.safetensors")
    assert found is not None and found.disk_full


@needs_dev_full
def test_torch_s_writer_error_is_recognised_by_the_oserror_in_its_context():
    """torch.save reports a failed write as RuntimeError("... unexpected pos ...") or as the
    OSError itself, depending on where the write fails; written through a Python file, the
    OSError with its errno is the error or stays in its context."""
    with pytest.raises((RuntimeError, OSError)) as raised, \
            open("/dev/full", "wb", buffering=0) as handle:
        torch.save({"a": torch.zeros(4096)}, handle)
    found = storage_error(raised.value, "optimizer.pt")
    assert found is not None and found.disk_full


def test_denied_and_read_only_writes_are_told_apart_from_a_full_disk(tmp_path):
    denied = storage_error(PermissionError(errno.EACCES, "Permission denied"), tmp_path)
    assert str(denied) == f"permission denied writing {tmp_path}" and not denied.disk_full
    read_only = storage_error(OSError(errno.EROFS, "Read-only file system"), tmp_path)
    assert str(read_only) == f"read-only file system writing {tmp_path}"


def test_other_errors_are_left_alone(tmp_path):
    assert storage_error(ValueError("bad value"), tmp_path, 10) is None
    assert storage_error(OSError(errno.EIO, "Input/output error"), tmp_path) is None
    with pytest.raises(KeyError), reporting_storage(tmp_path, lambda: 1):
        raise KeyError("not about storage")


def test_the_byte_count_is_taken_only_when_a_write_fails(tmp_path):
    counted = []
    with reporting_storage(tmp_path, lambda: counted.append(1) or 10):
        pass
    assert counted == []
    with pytest.raises(StorageError, match="needed about 10 bytes"), \
            reporting_storage(tmp_path, lambda: counted.append(1) or 10):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert counted == [1]
