"""The command table's contract (src/cli/commands.c, src/main.c): --help,
version, help COMMAND, unknown commands and flags exit 2, planned commands
say so and exit 1."""
import re

from conftest import run_tako


def commands():
    """[(name, available?)] as `tako --help` lists them."""
    r = run_tako(["--help"])
    assert r.returncode == 0
    section = r.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    out = []
    for line in section.splitlines():
        name = line.split()[0]
        out.append((name, not line.endswith("(not yet available)")))
    return out


def test_help_lists_every_command():
    for args in (["--help"], ["-h"], ["help"]):
        r = run_tako(args)
        assert r.returncode == 0, args
        assert r.stdout.startswith("Usage: tako COMMAND [OPTIONS]")
    names = [n for n, _ in commands()]
    for must in ("deploy", "ps", "logs", "stats", "scale", "restart", "stop", "start", "down",
                 "rollback", "history", "validate", "config", "init", "proxy", "daemon",
                 "version", "help"):
        assert must in names
    assert len(names) == len(set(names))


def test_no_command_is_a_usage_error():
    r = run_tako([])
    assert r.returncode == 2
    assert "Usage: tako COMMAND" in r.stderr and r.stdout == ""


def test_version():
    outs = set()
    for args in (["version"], ["--version"], ["-V"]):
        r = run_tako(args)
        assert r.returncode == 0
        assert re.fullmatch(r"tako \d+\.\d+\.\d+ \(build [0-9a-f]{12}\)\n", r.stdout), r.stdout
        outs.add(r.stdout)
    assert len(outs) == 1
    r = run_tako(["version", "extra"])
    assert r.returncode == 2 and "unexpected argument 'extra'" in r.stderr


def test_help_of_each_command():
    for name, _ in commands():
        a = run_tako(["help", name])
        b = run_tako([name, "--help"])
        assert a.returncode == 0 and b.returncode == 0, name
        assert a.stdout == b.stdout, name
        assert a.stdout.startswith("Usage: tako " + name), name
    r = run_tako(["help", "nosuch"])
    assert r.returncode == 2 and "unknown command 'nosuch'" in r.stderr
    r = run_tako(["help", "ps", "logs"])
    assert r.returncode == 2


def test_unknown_command_and_option_exit_2():
    r = run_tako(["nosuch"])
    assert r.returncode == 2
    assert "unknown command 'nosuch'" in r.stderr and "tako --help" in r.stderr
    r = run_tako(["deplyo"])
    assert r.returncode == 2 and "did you mean 'deploy'" in r.stderr
    r = run_tako(["--bogus"])
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr


def test_unknown_flag_of_every_available_command_exits_2(tako_home):
    for name, available in commands():
        if not available or name == "help":
            continue
        r = run_tako([name, "--no-such-flag"], env={"TAKO_HOME": tako_home}, timeout=30)
        assert r.returncode == 2, (name, r.returncode, r.stderr)
        assert "no-such-flag" in r.stderr, (name, r.stderr)


def test_planned_commands_say_so_and_exit_1():
    for name, available in commands():
        if available:
            continue
        r = run_tako([name])
        assert r.returncode == 1, name
        assert "not yet available" in r.stderr, name
