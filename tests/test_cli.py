"""pihc.cli: errors without tracebacks; ``pihc bench`` runs the checkout's scripts."""

import subprocess
import sys


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pihc.cli", *args], capture_output=True, text=True)


def test_cli_reports_bad_configs_without_a_traceback(tmp_path):
    r = _cli("train", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "neither a file nor a built-in config" in r.stderr
    r = _cli("train", "--config", "diffusion-sorption/moe-small", "--set", "optim.bogus=1",
             "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "unknown key(s) ['bogus']" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
    r = _cli("bench", "nope")
    assert r.returncode != 0 and "unknown benchmark" in r.stderr


def test_cli_bench_runs_the_checkouts_script_or_says_where_the_benchmarks_are(monkeypatch, capsys):
    from pihc import cli

    r = _cli("bench", "generator", "--help")  # the script's own options, found in this checkout
    assert r.returncode == 0 and "--reference-samples" in r.stdout
    monkeypatch.setattr(cli, "find_benchmark", lambda script: None)  # an installed package, no checkout
    assert cli.main(["bench", "generator"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ship with the source repository" in err
