"""Files: checksummed checkpoints, atomic writes with normal permissions, stale temporary files,
the metrics log after a kill, output paths checked before compute."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from pihc.files import PathError, atomic_write_text, check_writable, remove_stale_temps, temp_sibling
from pihc.training.io import (CHECKPOINT_VERSION, CheckpointError, MetricsError, MetricsLog, finite_json,
                              load_checkpoint, read_checkpoint_meta, save_checkpoint, upgrade_checkpoint)

TREE = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(4)}


def _saved(tmp_path, meta=None):
    path = tmp_path / "checkpoint.eqx"
    save_checkpoint(path, TREE, meta or {"step": 7})
    return path


def test_checkpoint_round_trip_carries_its_version_and_metadata(tmp_path):
    path = _saved(tmp_path, {"step": 7, "config": {"optim": {"lr": 0.001}}})
    tree, meta = load_checkpoint(path, {"w": jnp.zeros((2, 3)), "b": jnp.zeros(4)})
    assert meta == {"step": 7, "config": {"optim": {"lr": 0.001}}} == read_checkpoint_meta(path)
    np.testing.assert_array_equal(np.asarray(tree["w"]), np.arange(6.0).reshape(2, 3))
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert header["version"] == CHECKPOINT_VERSION == 2 and header["format"] == "pihc-checkpoint"


def _flip(raw: bytes, i: int) -> bytes:
    return raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:]


@pytest.mark.parametrize("damage", ["flip a parameter byte", "flip the step", "truncate", "header length",
                                    "empty", "append"])
def test_a_damaged_checkpoint_is_refused_by_name(tmp_path, damage):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    bad = {"flip a parameter byte": lambda: _flip(raw, len(raw) - 40),
           "flip the step": lambda: raw.replace(b'"step": 7', b'"step": 9'),
           "truncate": lambda: raw[: len(raw) // 2],
           "header length": lambda: (n + 3).to_bytes(8, "little") + raw[8:],
           "empty": lambda: b"",
           "append": lambda: raw + b"\0"}[damage]()
    assert bad != raw
    path.write_bytes(bad)
    for read in (lambda: load_checkpoint(path, TREE), lambda: read_checkpoint_meta(path)):
        with pytest.raises(CheckpointError, match=f"{path} is damaged .*SHA-256"):
            read()


def test_a_checkpoint_of_the_first_format_is_refused_and_can_be_upgraded_by_hand(tmp_path):
    import io

    import equinox as eqx

    path = tmp_path / "checkpoint.eqx"
    header = json.dumps({"step": 3}).encode()
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, TREE)
    path.write_bytes(len(header).to_bytes(8, "little") + header + buf.getvalue())  # what pihc wrote before
    with pytest.raises(CheckpointError, match="written by an older pihc, without a checksum.*upgrade_checkpoint"):
        load_checkpoint(path, TREE)
    assert upgrade_checkpoint(path) == {"step": 3}
    tree, meta = load_checkpoint(path, TREE)
    assert meta == {"step": 3} and np.array_equal(np.asarray(tree["b"]), np.ones(4))
    with pytest.raises(CheckpointError, match="not a checkpoint of the first format"):
        upgrade_checkpoint(path)


def test_a_checkpoint_of_another_shape_or_version_is_refused(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="does not hold the arrays of this model"):
        load_checkpoint(path, {"w": jnp.zeros((3, 3)), "b": jnp.zeros(4)})
    import hashlib

    raw = path.read_bytes()[:-32].replace(b'"version": 2', b'"version": 9')
    path.write_bytes(raw + hashlib.sha256(raw).digest())
    with pytest.raises(CheckpointError, match="format version 9; this pihc reads version 2"):
        load_checkpoint(path, TREE)
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*; a directory is in its place"):
        load_checkpoint(tmp_path / "d", TREE)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_have_the_permissions_of_any_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        save_checkpoint(tmp_path / "c.eqx", TREE, {"step": 1})
        with temp_sibling(tmp_path / "h.bin") as tmp:
            tmp.write_bytes(b"y")
    finally:
        os.umask(old)
    for name in ("a.txt", "c.eqx", "h.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_temporary_files_of_dead_writers_are_removed_and_those_of_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".checkpoint.eqx.pid{dead}.abc123.tmp"
    mine = tmp_path / f".checkpoint.eqx.pid{os.getpid()}.def456.tmp"
    other = tmp_path / f".data.h5.pid{dead}.ghi789.tmp"
    keep = tmp_path / "notes.tmp"
    for p in (stale, mine, other, keep):
        p.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path, "checkpoint.eqx") == [stale]
    assert remove_stale_temps(tmp_path) == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, keep.name])


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(KeyboardInterrupt):
        with temp_sibling(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_metrics_log_tolerates_a_torn_last_line_and_refuses_a_damaged_one(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for s in (1, 2, 3):
        log.append({"step": s, "loss": 1.0 / s})
    text = log.path.read_text()
    log.path.write_text(text + '{"step": 4, "lo')  # killed while appending step 4
    assert [r["step"] for r in log.read()] == [1, 2, 3]
    assert log.truncate_after(2) is True
    assert log.path.read_text().splitlines() == text.splitlines()[:2]
    lines = text.splitlines()
    log.path.write_text("\n".join([lines[0], lines[1][:9], lines[2]]) + "\n")
    with pytest.raises(MetricsError, match="line 2 is not a JSON object"):
        log.read()


def test_non_finite_numbers_are_written_as_null_never_as_nan(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "loss": float("nan"), "grad_norm": np.float32("inf"), "ok": 1})
    line = log.path.read_text()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"step": 1, "loss": None, "grad_norm": None, "ok": 1}
    assert finite_json({"a": [1.0, float("-inf")], "b": np.array([np.nan, 2.0])}) == {"a": [1.0, None],
                                                                                   "b": [None, 2.0]}


def test_output_paths_are_checked_before_compute(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    check_writable(tmp_path / "new" / "deeper" / "out.json", "out")  # creatable: fine, and nothing made
    assert not (tmp_path / "new").exists()
    with pytest.raises(PathError, match="is a directory; give a file name"):
        check_writable(tmp_path, "--json")
    with pytest.raises(PathError, match="is a file, not a directory"):
        check_writable(f, "run directory", directory=True)
    with pytest.raises(PathError, match=f"cannot be created: {f} is a file"):
        check_writable(f / "out.json", "--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe file is gone


def test_an_output_under_a_broken_symbolic_link_is_refused_naming_the_link(tmp_path):
    (tmp_path / "data").symlink_to(tmp_path / "gone")
    with pytest.raises(PathError, match=r"data is a symbolic link to .*gone, which does not exist; fix or remove"):
        check_writable(tmp_path / "data" / "ds.h5", "data.path")
    (tmp_path / "gone").mkdir()  # the link mended: the path is writable
    check_writable(tmp_path / "data" / "ds.h5", "data.path")
