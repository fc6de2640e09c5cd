"""The Docker Engine API client (src/runtime/docker_api.c) against a real,
private dockerd: each call through build/*/tests/dk_tool, checked with the
`docker` CLI pointed at the same daemon.
"""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import ROOT, free_port, http_json, wait_for, wait_port
from dockerd import dk, dockerd  # noqa: F401  (fixtures)

TAKO = os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako"))
DK_TOOL = os.path.join(os.path.dirname(TAKO), "build", "rel", "tests", "dk_tool") \
    if os.path.dirname(TAKO) == ROOT else os.path.join(os.path.dirname(TAKO), "tests", "dk_tool")


def tool(dk, *args, timeout=120):
    """Run dk_tool: (result dict from the last line, the lines before it)."""
    env = dict(os.environ)
    env.update(dk.env)
    r = subprocess.run([DK_TOOL] + [str(a) for a in args], env=env, capture_output=True,
                       text=True, timeout=timeout)
    lines = r.stdout.splitlines()
    assert lines, "dk_tool %s printed nothing: %s" % (args, r.stderr)
    res = json.loads(lines[-1])
    assert (r.returncode == 0) == res["ok"], r.stdout
    return res, lines[:-1]


def whoami_image(dk, tmp_path, tag):
    d = dk.app_dir(str(tmp_path))
    res, _ = tool(dk, "build", d, tag)
    assert res["ok"], res
    return d


def test_version_is_negotiated_with_the_daemon(dk):
    res, _ = tool(dk, "ping")
    assert res["ok"]
    daemon = dk.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    assert res["version"] == daemon == "1.41"
    assert res["socket"] == dk.sock


def test_unreachable_socket_is_named_with_how_to_start_docker(dk, tmp_path):
    env = dict(os.environ)
    env["DOCKER_HOST"] = "unix://%s/nothing.sock" % tmp_path
    r = subprocess.run([DK_TOOL, "ping"], env=env, capture_output=True, text=True, timeout=30)
    res = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 1 and not res["ok"]
    assert "unix://%s/nothing.sock" % tmp_path in res["error"]
    assert "dockerd" in res["error"] and "DOCKER_HOST" in res["error"]


def test_build_streams_progress_and_honours_dockerignore(dk, tmp_path):
    d = dk.app_dir(str(tmp_path), body="FROM %s\nCOPY . /ctx\nCMD [\"ls\", \"-R\", \"/ctx\"]\n" % dk.base_image,
                   files={".dockerignore": "secret.txt\nlogs/\n!logs/keep.log\nDockerfile\n",
                          "secret.txt": "s\n", "logs/a.log": "a\n", "logs/keep.log": "k\n",
                          "src/app.txt": "app\n"})
    res, progress = tool(dk, "build", d, "dkapi-ctx:1")
    assert res["ok"], res
    assert res["id"].startswith("sha256:")
    assert any(re.match(r"\| Step 1/\d+ : FROM", l) for l in progress), progress
    labels = dk.docker("image", "inspect", "--format", "{{json .Config.Labels}}", "dkapi-ctx:1").stdout
    assert json.loads(labels) == {"tako.test": "1"}
    out = dk.docker("run", "--rm", "--network", "host", "dkapi-ctx:1").stdout.split()
    assert "app.txt" in out and "keep.log" in out and "whoami" in out
    assert "secret.txt" not in out and "a.log" not in out
    # The Dockerfile is ignored too, yet the build ran: it was sent anyway
    # (the engine itself keeps it out of COPY, as with `docker build`).
    assert "Dockerfile" not in out


def test_failed_build_carries_the_builders_last_lines(dk, tmp_path):
    d = dk.app_dir(str(tmp_path), body="FROM %s\nCOPY whoami /whoami\nCOPY does-not-exist /x\n" % dk.base_image)
    res, progress = tool(dk, "build", d, "dkapi-bad:1")
    assert not res["ok"]
    assert "docker build of dkapi-bad:1 failed" in res["error"]
    assert "does-not-exist" in res["error"]
    assert "last lines of the build:" in res["error"]
    assert re.search(r"Step 3/\d+ : COPY does-not-exist /x", res["error"])
    assert any(re.match(r"\| Step 2/\d+ : COPY whoami", l) for l in progress), progress
    assert dk.docker("image", "inspect", "dkapi-bad:1", check=False).returncode != 0


def test_container_lifecycle_with_host_network_labels_logs_and_stats(dk, tmp_path):
    whoami_image(dk, tmp_path, "dkapi-who:1")
    port = free_port()
    spec = {"name": "dkapi-web-1", "hostname": "dkapi-web-1", "image": "dkapi-who:1",
            "env": ["PORT=%d" % port], "host_network": True, "stop_timeout": 5,
            "labels": {"tako.project": "dkapi", "tako.env": "production", "tako.service": "web",
                       "tako.revision": "r1", "tako.slot": "1"}}
    res, _ = tool(dk, "create", json.dumps(spec))
    assert res["ok"] and len(res["id"]) == 64
    res, _ = tool(dk, "create", json.dumps(spec))
    assert not res["ok"] and res["errno"] == 17  # EEXIST: the name is taken
    res, _ = tool(dk, "start", "dkapi-web-1")
    assert res["ok"]
    wait_port(port)
    st, body = http_json(port, "/api/instance")
    assert st == 200 and body["hostname"] == "dkapi-web-1"
    # The docker CLI sees what the API made.
    ps = dk.docker("ps", "--filter", "label=tako.project=dkapi", "--format",
                   "{{.Names}} {{.Label \"tako.slot\"}} {{.Label \"tako.revision\"}}").stdout.split("\n")
    assert ps[0] == "dkapi-web-1 1 r1"
    ins, _ = tool(dk, "inspect", "dkapi-web-1")
    c = ins["inspect"]
    assert c["HostConfig"]["NetworkMode"] == "host"
    assert c["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert c["Config"]["Hostname"] == "dkapi-web-1"
    assert c["State"]["Running"] is True
    res, lines = tool(dk, "logs", "dkapi-web-1")
    assert "1|whoami dkapi-web-1 listening on port %d" % port in lines
    res, _ = tool(dk, "stats", "dkapi-web-1")
    assert res["ok"] and res["has_pre"] and res["mem"] > 0 and res["pids"] == 1
    res, _ = tool(dk, "stop", "dkapi-web-1", 5)
    assert res["ok"]
    ins, _ = tool(dk, "inspect", "dkapi-web-1")
    assert ins["inspect"]["State"]["Running"] is False
    assert ins["inspect"]["State"]["ExitCode"] == 0  # whoami exits 0 on SIGTERM
    res, lines = tool(dk, "logs", "dkapi-web-1")
    assert any(l.startswith("1|whoami dkapi-web-1: stopped") for l in lines), lines
    res, _ = tool(dk, "stop", "dkapi-web-1", 5)
    assert res["ok"]  # 304: already stopped
    res, _ = tool(dk, "rm", "dkapi-web-1")
    assert res["ok"]
    res, _ = tool(dk, "inspect", "dkapi-web-1")
    assert not res["ok"] and res["errno"] == 2  # ENOENT


def test_stop_kills_after_the_timeout_and_logs_are_demultiplexed(dk, tmp_path):
    spec = {"name": "dkapi-stubborn", "image": dk.base_image, "host_network": True,
            "cmd": ["sh", "-c", "trap '' TERM; echo to-out; echo to-err >&2; "
                    "while true; do sleep 1; done"]}
    res, _ = tool(dk, "create", json.dumps(spec))
    assert res["ok"], res
    tool(dk, "start", "dkapi-stubborn")
    wait_for(lambda: len(tool(dk, "logs", "dkapi-stubborn")[1]) == 2, what="two log lines")
    _, lines = tool(dk, "logs", "dkapi-stubborn")
    assert sorted(lines) == ["1|to-out", "2|to-err"]
    _, lines = tool(dk, "logs", "dkapi-stubborn", 1)
    assert len(lines) == 1
    res, _ = tool(dk, "stop", "dkapi-stubborn", 1)
    assert res["ok"]
    ins, _ = tool(dk, "inspect", "dkapi-stubborn")
    assert ins["inspect"]["State"]["ExitCode"] == 137  # SIGKILL after the grace period
    tool(dk, "rm", "dkapi-stubborn")


def test_follow_streams_until_cancelled(dk):
    spec = {"name": "dkapi-ticker", "image": dk.base_image, "host_network": True,
            "cmd": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]}
    assert tool(dk, "create", json.dumps(spec))[0]["ok"]
    tool(dk, "start", "dkapi-ticker")
    res, lines = tool(dk, "follow", "dkapi-ticker", 2)
    assert res["ok"] and res["cancelled"]
    ticks = [int(l.split()[-1]) for l in lines if l.startswith("1|tick")]
    assert len(ticks) >= 3 and ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    tool(dk, "rmf", "dkapi-ticker")


def test_events_are_filtered_by_label(dk):
    env = dict(os.environ)
    env.update(dk.env)
    listener = subprocess.Popen([DK_TOOL, "events", "tako.project=dkev", "4", "60"], env=env,
                                stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # the stream must be open before the events happen
        other = {"name": "dkapi-other", "image": dk.base_image, "host_network": True,
                 "cmd": ["sleep", "60"], "labels": {"tako.project": "someone-else"}}
        mine = {"name": "dkapi-ev", "image": dk.base_image, "host_network": True,
                "cmd": ["sleep", "60"], "labels": {"tako.project": "dkev"}}
        for s in (other, mine):
            assert tool(dk, "create", json.dumps(s))[0]["ok"]
            tool(dk, "start", s["name"])
        tool(dk, "kill", "dkapi-other")
        tool(dk, "kill", "dkapi-ev")
        out, _ = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    lines = [json.loads(l) for l in out.splitlines()]
    events = [(e["status"], e["name"]) for e in lines if e.get("type") == "event"]
    assert events == [("create", "dkapi-ev"), ("start", "dkapi-ev"), ("kill", "dkapi-ev"),
                      ("die", "dkapi-ev")], events
    assert lines[-1]["ok"] and lines[-1]["events"] == 4


def test_images_tag_list_and_remove(dk, tmp_path):
    whoami_image(dk, tmp_path, "dkapi-img:r1")
    assert tool(dk, "image-tag", "dkapi-img:r1", "dkapi-img", "r2")[0]["ok"]
    res, _ = tool(dk, "image-list", "dkapi-img")
    tags = sorted(t for i in res["list"] for t in i["RepoTags"])
    assert tags == ["dkapi-img:r1", "dkapi-img:r2"]
    res, _ = tool(dk, "image-inspect", "dkapi-img:r2")
    assert res["ok"] and res["inspect"]["Config"]["Cmd"] == ["/whoami"]
    assert tool(dk, "image-rm", "dkapi-img:r1")[0]["ok"]
    assert tool(dk, "image-rm", "dkapi-img:r2")[0]["ok"]
    res, _ = tool(dk, "image-inspect", "dkapi-img:r2")
    assert not res["ok"] and res["errno"] == 2
    res, _ = tool(dk, "image-rm", "dkapi-img:r2")
    assert not res["ok"] and res["errno"] == 2
