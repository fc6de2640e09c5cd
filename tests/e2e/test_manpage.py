"""man/tako.1 against the binary: the COMMANDS section lists exactly the
commands of `tako --help`, and marks the same ones "(not yet available)".

When a command is added or becomes available, update its entry in
man/tako.1 (COMMANDS) and this test passes again.
"""
import os
import re
import subprocess

from conftest import ROOT, run_tako

MAN = os.path.join(ROOT, "man", "tako.1")


def man_commands():
    """{name: planned?} from the COMMANDS section of the roff source."""
    with open(MAN) as f:
        lines = f.read().splitlines()
    start = lines.index(".SH COMMANDS")
    out = {}
    i = start + 1
    while i < len(lines) and not lines[i].startswith(".SH"):
        if lines[i] == ".TP":
            head = re.sub(r"^\.B[IR]?\s+", "", lines[i + 1])
            head = re.sub(r"\\f[BIRP]", "", head).strip('"')
            name = head.split()[0].strip('"')
            j = i + 2
            body = []
            while j < len(lines) and lines[j] != ".TP" and not lines[j].startswith(".SH"):
                body.append(lines[j])
                j += 1
            out[name] = "(not yet available)" in "\n".join(body)
            i = j
        else:
            i += 1
    return out


def help_commands():
    r = run_tako(["--help"])
    assert r.returncode == 0, r.stderr
    out = {}
    section = r.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    for line in section.splitlines():
        m = re.match(r"^  (\S+)\s+(.*)$", line)
        assert m, line
        out[m.group(1)] = m.group(2).endswith("(not yet available)")
    return out


def test_man_page_lists_every_command_as_tako_help_does():
    man, cli = man_commands(), help_commands()
    assert sorted(man) == sorted(cli), "man/tako.1 COMMANDS differ from `tako --help`"
    wrong = [n for n in cli if man[n] != cli[n]]
    assert not wrong, "'(not yet available)' differs in man/tako.1 for: %s" % wrong


def test_every_command_has_help():
    for name in help_commands():
        r = run_tako(["help", name])
        assert r.returncode == 0 and r.stdout.startswith("Usage: tako " + name), (name, r)


def test_man_page_renders_without_warnings():
    # groff ships with man-db on Debian; render the page as man(1) would.
    r = subprocess.run(["groff", "-man", "-Tutf8", "-wall", "-z", MAN],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
