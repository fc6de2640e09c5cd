"""Debian's Pebble ACME test CA and pebble-challtestsrv (its DNS), started on
loopback for a test and stopped by PID.

Pebble ships no certificate for its own HTTPS listener: one is made here with
openssl (a CA plus a leaf for 127.0.0.1 / localhost). pebble-challtestsrv
answers every name with 127.0.0.1, so any test domain "points here".
"""
import json
import os
import ssl
import subprocess
import urllib.request

from conftest import free_port, wait_port

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"


def have_pebble():
    return os.path.exists(PEBBLE) and os.path.exists(CHALLTESTSRV)


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_listener_cert(d):
    """CA + leaf for Pebble's own listener; returns (ca, cert, key) paths."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pebble listener CA",
             cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return (os.path.join(d, "ca.pem"), os.path.join(d, "leaf.pem"), os.path.join(d, "leaf.key"))


class Pebble:
    """A running Pebble + challtestsrv. `directory`, `ca` (trust for the
    listener), `root_pem()` (the issuing root, for clients of the issued
    certificates)."""

    def __init__(self, procs, d, http_port, validity=None, nonce_reject=0, extra_env=None):
        self.procs, self.dir = procs, d
        os.makedirs(d, exist_ok=True)
        self.ca, cert, key = make_listener_cert(d)
        self.dns_port = free_port()
        self.mgmt_port = free_port()
        self.chall_mgmt = free_port()
        self.port = free_port()
        cfg = {"pebble": {
            "listenAddress": "127.0.0.1:%d" % self.port,
            "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        if validity:
            cfg["pebble"]["certificateValidityPeriod"] = validity
        self.cfg = os.path.join(d, "pebble.json")
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        self.chall = procs.start([CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                                  "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "",
                                  "-https01", "", "-tlsalpn01", "",
                                  "-management", "127.0.0.1:%d" % self.chall_mgmt],
                                 name="challtestsrv")
        wait_port(self.chall_mgmt, proc=self.chall)
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(nonce_reject)}
        env.update(extra_env or {})
        self.proc = procs.start([PEBBLE, "-config", self.cfg, "-dnsserver",
                                 "127.0.0.1:%d" % self.dns_port], env=env, name="pebble")
        wait_port(self.port, proc=self.proc)
        wait_port(self.mgmt_port, proc=self.proc)
        self.directory = "https://127.0.0.1:%d/dir" % self.port

    def root_pem(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        with urllib.request.urlopen("https://127.0.0.1:%d/roots/0" % self.mgmt_port,
                                    context=ctx, timeout=10) as r:
            return r.read().decode()

    def write_root(self, path):
        with open(path, "w") as f:
            f.write(self.root_pem())
        return path

    def stop(self):
        self.procs.stop(self.proc)
        self.procs.stop(self.chall)
