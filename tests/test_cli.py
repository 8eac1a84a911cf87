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


def test_configs_lists_every_builtin_config(capsys):
    from pihc import cli
    from pihc.training.config import builtin_configs

    assert cli.main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == builtin_configs()
    assert any(line.startswith("diffusion-sorption/demo ") and "moe, 51 x 128, 1000 steps" in line for line in lines)


def test_every_option_shows_its_default_and_a_help_line():
    import argparse

    from pihc import cli

    parser = cli.build_parser()
    parsers = [parser]
    while parsers:
        p = parsers.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
            elif action.option_strings and action.dest != "help":
                assert action.help, f"{p.prog} {action.option_strings} has no help line"
        text = p.format_help()
        for action in p._actions:
            if action.option_strings and action.dest != "help" and not isinstance(action, argparse._SubParsersAction):
                assert action.option_strings[-1] in text
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "(default: unset)" in train_help and "(default: off)" in train_help
    demo_help = parser._subparsers._group_actions[0].choices["demo"].format_help()
    assert "(default: runs/demo)" in demo_help


def test_bench_help_lists_the_benchmarks(capsys):
    from pihc import cli

    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name, script in cli.BENCHMARKS.items():
        assert f"  {name} " in out and f"benchmarks/{script}.py" in out
    assert cli.main(["bench"]) == 2 and "step-cost" in capsys.readouterr().err


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    """``pihc configs | head -1``: the output's reader is gone before the command writes. No message,
    no traceback, and the exit status of a process ended by SIGPIPE (128 + 13)."""
    proc = subprocess.Popen([sys.executable, "-m", "pihc.cli", "configs"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
    full = _cli("configs")  # with a reader, the list as before
    assert full.returncode == 0 and "navier-stokes/moe-small" in full.stdout
