"""The ``pihc`` command's re-execution with glibc's huge-page tunable (pihc.huge_pages)."""

import os
import subprocess
import sys

import pytest

from pihc import huge_pages


@pytest.fixture
def madvise(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    return f


def _glibc_235():
    libc, version = __import__("platform").libc_ver()
    return sys.platform == "linux" and libc == "glibc" and tuple(int(x) for x in version.split(".")[:2]) >= (2, 35)


@pytest.mark.skipif(not _glibc_235(), reason="needs Linux with glibc 2.35 or later")
def test_wanted_only_in_madvise_mode_and_never_over_a_users_setting(tmp_path, madvise):
    assert huge_pages.wanted({}, madvise)
    assert huge_pages.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, madvise)
    assert not huge_pages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, madvise)
    for mode in ("[always] madvise never\n", "always madvise [never]\n"):
        (tmp_path / "other").write_text(mode)
        assert not huge_pages.wanted({}, tmp_path / "other")
    assert not huge_pages.wanted({}, tmp_path / "missing")


def test_the_tunable_is_added_to_the_users_others():
    assert huge_pages.with_tunable({"A": "1"})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    env = huge_pages.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "1"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "1"}


def test_reexec_runs_the_same_command_with_the_tunable(monkeypatch):
    calls = []
    monkeypatch.setattr(huge_pages, "wanted", lambda: True)
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    huge_pages.reexec_with_huge_pages(["train", "--config", "x"])
    (path, args, env), = calls
    assert path == sys.executable and args == [sys.executable, "-m", "pihc.cli", "train", "--config", "x"]
    assert "glibc.malloc.hugetlb=1" in env["GLIBC_TUNABLES"]

    def fail(*a):
        raise OSError("cannot execute")

    monkeypatch.setattr(os, "execve", fail)
    huge_pages.reexec_with_huge_pages(["configs"])  # a failed re-execution runs on, as before


@pytest.mark.skipif(not (_glibc_235() and huge_pages.wanted({})),
                    reason="needs glibc 2.35+ and transparent huge pages in madvise mode")
def test_the_program_replaces_itself_once_and_runs_the_command():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    code = ("import sys; from pihc import huge_pages; sys.stdout.write('before\\n');"
            "huge_pages.reexec_with_huge_pages(['configs']); print('not replaced')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("before\n") and "not replaced" not in out.stdout
    assert "navier-stokes/moe-small" in out.stdout  # the re-executed `pihc configs`
