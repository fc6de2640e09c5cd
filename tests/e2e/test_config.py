"""tako validate, tako config explain and tako init, driven through the real binary."""
import json
import os
import subprocess

from conftest import TAKO as _TAKO

TAKO = os.path.abspath(_TAKO)  # tests run tako from other directories

SEED = """\
project:
  name: scaling
  version: 1.0.0
servers:
  prod:
    host: ${SERVER_HOST}
    user: root
    sshKey: ~/.ssh/id_ed25519
environments:
  production:
    servers:
      - prod
    services:
      web:
        build: .
        port: 3000
        replicas: 3
        proxy:
          domain: scaling.${SERVER_HOST}.sslip.io
          email: admin@example.com
        loadBalancer:
          strategy: round_robin
        env:
          NODE_ENV: production
"""


def tako(args, cwd, extra_env=None, drop=("SERVER_HOST",)):
    """Run tako with a controlled environment: DROP removed, EXTRA_ENV added."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra_env or {})
    return subprocess.run([TAKO] + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=30)


def write(d, name, text):
    p = os.path.join(str(d), name)
    with open(p, "w") as f:
        f.write(text)
    return p


def test_seed_example_validates_with_server_host(tmp_path):
    write(tmp_path, "tako.yaml", SEED)
    r = tako(["validate"], tmp_path, {"SERVER_HOST": "203.0.113.7"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "environment production: 1 service, 3 replicas" in lines[0]
    assert "web: 3 replicas, round_robin, port 3000" in lines[0]


def test_unset_variable_is_an_error_at_its_place(tmp_path):
    write(tmp_path, "tako.yaml", SEED)
    r = tako(["validate"], tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "tako.yaml:6:11: servers.prod.host: variable SERVER_HOST is not set" in r.stderr
    assert ("tako.yaml:19:27: environments.production.services.web.proxy.domain: "
            "variable SERVER_HOST is not set") in r.stderr
    assert r.stderr.strip().endswith("tako.yaml: 2 errors")


def test_dotenv_beside_the_file_and_environment_wins(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    write(proj, "tako.yaml", SEED)
    write(proj, ".env", "SERVER_HOST=198.51.100.1\n")
    # Run from elsewhere with -f: .env is found beside the file, not in the cwd.
    r = tako(["config", "explain", "-f", str(proj / "tako.yaml"), "-o", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["servers"][0]["host"] == "198.51.100.1"
    assert cfg["environments"][0]["services"][0]["proxy"]["domains"] == [
        "scaling.198.51.100.1.sslip.io"]
    assert cfg["environments"][0]["services"][0]["build"] == str(proj)
    r = tako(["config", "explain", "-f", str(proj / "tako.yaml"), "-o", "json"], tmp_path,
             {"SERVER_HOST": "192.0.2.9"})
    assert json.loads(r.stdout)["servers"][0]["host"] == "192.0.2.9"


def test_every_problem_in_one_pass(tmp_path):
    write(tmp_path, "tako.yaml", """\
project:
  name: demo
environments:
  production:
    services:
      web:
        port: 3000
        loadBalancr:
          strategy: round_robin
        healthCheck:
          interval: soon
      api:
        port: 3001
        loadBalancer:
          strategy: fastest
""")
    r = tako(["validate"], tmp_path)
    assert r.returncode == 2
    err = r.stderr
    assert ('tako.yaml:8:9: environments.production.services.web.loadBalancr: unknown key '
            '"loadBalancr"; did you mean "loadBalancer"?') in err
    assert ('tako.yaml:11:21: environments.production.services.web.healthCheck.interval: '
            'expected a duration like 500ms, 10s or 2m, got "soon"') in err
    assert ('tako.yaml:15:21: environments.production.services.api.loadBalancer.strategy: '
            'unknown strategy "fastest" (expected round_robin, least_connections, ip_hash, '
            'random, sticky, p2c)') in err
    assert err.strip().endswith("3 errors")


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    write(tmp_path, "tako.yaml", "project:\n  name: x\n   bad: indent\n")
    r = tako(["validate"], tmp_path)
    assert r.returncode == 2
    assert "tako.yaml:3:" in r.stderr and "YAML syntax error" in r.stderr


def test_missing_file_and_usage_errors(tmp_path):
    r = tako(["validate"], tmp_path)
    assert r.returncode == 2
    assert "tako.yaml: cannot read: No such file or directory" in r.stderr
    assert "tako init" in r.stderr
    assert tako(["validate", "--nope"], tmp_path).returncode == 2
    assert tako(["validate", "a", "b"], tmp_path).returncode == 2
    assert tako(["config"], tmp_path).returncode == 2
    assert tako(["config", "show"], tmp_path).returncode == 2
    assert tako(["config", "explain", "-o", "xml"], tmp_path).returncode == 2
    h = tako(["validate", "--help"], tmp_path)
    assert h.returncode == 0 and "Usage: tako validate [-f FILE] [-e ENV]" in h.stdout
    h = tako(["help", "config"], tmp_path)
    assert h.returncode == 0 and "--show-secrets" in h.stdout


MULTI = """\
project: {name: multi}
servers:
  prod: {host: 10.0.0.1}
  stage-box: {host: 10.0.0.2}
environments:
  production:
    servers: [prod]
    services:
      web: {command: ./web, port: 8000, replicas: 4, loadBalancer: {strategy: least_connections}}
      worker: {command: ./work}
  staging:
    servers: [stage-box]
    services:
      web: {command: ./web, port: 8000, replicas: {min: 1, max: 3, cpu: 70%}}
"""


def test_environment_selection(tmp_path):
    write(tmp_path, "tako.yaml", MULTI)
    # No name with two environments: validate checks and summarizes both.
    r = tako(["validate"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 2
    for want, got in (("production", "production"), ("prod", "production"),
                      ("stag", "staging"), ("stage-box", "staging")):
        r = tako(["validate", "-e", want], tmp_path)
        assert r.returncode == 0, r.stderr
        assert "environment %s:" % got in r.stdout
        r = tako(["validate", want], tmp_path)  # positional form
        assert "environment %s:" % got in r.stdout
    r = tako(["validate", "-e", "qa"], tmp_path)
    assert r.returncode == 2
    assert 'unknown environment "qa" (environments: production, staging)' in r.stderr
    r = tako(["validate", "production"], tmp_path)
    assert ("2 services, 5 replicas (web: 4 replicas, least_connections, port 8000; "
            "worker: 1 replica, worker)") in r.stdout
    r = tako(["validate", "staging"], tmp_path)
    assert "web: 1-3 replicas (autoscale cpu 70%)" in r.stdout


SECRETS = """\
project: {name: sec}
environments:
  production:
    services:
      web:
        command: ./web --name "a b"
        port: 8000
        env:
          DB_PASSWORD: hunter2
          API_TOKEN: tok-123
          NODE_ENV: production
          PRICE: "5$$"
"""


def test_explain_masks_secrets_and_reads_back(tmp_path):
    write(tmp_path, "tako.yaml", SECRETS)
    r = tako(["config", "explain"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'DB_PASSWORD: "******"' in out and 'API_TOKEN: "******"' in out
    assert "hunter2" not in out and "tok-123" not in out
    assert "NODE_ENV: production" in out
    assert "interval: 2s" in out and "drainTimeout: 30s" in out and "stopGracePeriod: 10s" in out
    j = json.loads(tako(["config", "explain", "-o", "json"], tmp_path).stdout)
    env = j["environments"][0]["services"][0]["env"]
    assert env == {"DB_PASSWORD": "******", "API_TOKEN": "******", "NODE_ENV": "production",
                   "PRICE": "5$"}
    shown = tako(["config", "explain", "--show-secrets"], tmp_path).stdout
    assert "DB_PASSWORD: hunter2" in shown
    # The text form is a tako.yaml: reading it back gives the same configuration.
    sub = tmp_path / "again"
    sub.mkdir()
    write(sub, "tako.yaml", shown)
    a = tako(["config", "explain", "-o", "json", "--show-secrets"], tmp_path)
    b = tako(["config", "explain", "-o", "json", "--show-secrets"], sub)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["environments"] == jb["environments"]
    assert ja["environments"][0]["services"][0]["command"] == ["./web", "--name", "a b"]


def test_explain_of_invalid_file_exits_2(tmp_path):
    write(tmp_path, "tako.yaml", "project: {name: x}\nenvironments: {p: {services: {w: {port: 0}}}}\n")
    r = tako(["config", "explain"], tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "environments.p.services.w.port: expected an integer from 1 to 65535" in r.stderr


def test_init_writes_files_that_validate_and_refuses_to_overwrite(tmp_path):
    d = tmp_path / "Shop_Front"
    d.mkdir()
    r = tako(["init"], d)
    assert r.returncode == 0, r.stderr
    for name in ("tako.yaml", ".env.example", ".gitignore"):
        assert (d / name).exists()
    assert "name: shop-front" in (d / "tako.yaml").read_text()
    assert ".env" in (d / ".gitignore").read_text().splitlines()
    v = tako(["validate"], d)
    assert v.returncode == 0, v.stderr
    assert "project shop-front" in v.stdout

    (d / "tako.yaml").write_text("# mine\n")
    before = {n: (d / n).read_bytes() for n in ("tako.yaml", ".env.example", ".gitignore")}
    r = tako(["init", "other"], d)
    assert r.returncode == 1
    assert "tako.yaml already exists" in r.stderr and "--force" in r.stderr
    assert {n: (d / n).read_bytes() for n in before} == before

    r = tako(["init", "--force", "other"], d)
    assert r.returncode == 0, r.stderr
    assert "name: other" in (d / "tako.yaml").read_text()
    assert (d / ".gitignore").read_bytes() == before[".gitignore"]  # .env already ignored


def test_init_appends_to_an_existing_gitignore(tmp_path):
    write(tmp_path, ".gitignore", "node_modules")
    r = tako(["init", "app", "--dir", str(tmp_path)], "/")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / ".gitignore").read_text() == "node_modules\n.env\n"
    assert tako(["init", "Bad Name"], tmp_path).returncode == 2
    assert tako(["validate", "-f", str(tmp_path / "tako.yaml")], "/").returncode == 0


def _health_yaml(hc):
    return ("project: {name: x}\nenvironments:\n  p:\n    services:\n      w:\n"
            "        command: [./w]\n        port: 3000\n        healthCheck:\n" + hc)


def test_health_defaults_follow_written_values(tmp_path):
    # interval alone: the timeout default follows it (min(1s, interval)).
    write(tmp_path, "tako.yaml", _health_yaml("          interval: 500ms\n"))
    r = tako(["config", "explain", "-o", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)["environments"][0]["services"][0]["health"]
    assert (h["interval_ms"], h["timeout_ms"]) == (500, 500), h
    # timeout alone, longer than the default interval: the interval follows.
    write(tmp_path, "tako.yaml", _health_yaml("          timeout: 3s\n"))
    r = tako(["config", "explain", "-o", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)["environments"][0]["services"][0]["health"]
    assert (h["interval_ms"], h["timeout_ms"]) == (3000, 3000), h


def test_health_conflict_names_both_written_values(tmp_path):
    write(tmp_path, "tako.yaml", _health_yaml("          interval: 500ms\n          timeout: 2s\n"))
    r = tako(["validate"], tmp_path)
    assert r.returncode == 2
    assert ("tako.yaml:10:20: environments.p.services.w.healthCheck.timeout: timeout (2000ms) "
            "must not be longer than environments.p.services.w.healthCheck.interval (500ms, at "
            "tako.yaml:9:21)") in r.stderr, r.stderr
