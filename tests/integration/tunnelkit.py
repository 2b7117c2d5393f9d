"""Processes for end-to-end tests: cmg-mpsim (a management point simulator) and cmg-connector
(the connection point), next to cmgtest.Gateway. Everything on loopback, started and stopped
by PID, with bounded waits."""

import os
import re
import signal
import socket
import subprocess
import time

import cmgtest as ct

# Absolute: the processes run in their own directories (a relative CMG_* path would break).
MPSIM = os.path.abspath(ct._find_binary("CMG_MPSIM", "build/default/mpsim/cmg-mpsim"))
CONNECTOR = os.path.abspath(ct._find_binary("CMG_CONNECTOR",
                                            "build/default/connector/cmg-connector"))

MP_ROLE = "72057594037927939"
SUP_ROLE = "72057594037927941"


class Proc:
    """A started process with its own dir, stdout/stderr files and a bounded stop."""

    def __init__(self, name):
        self.dir = ct.mkdtemp(prefix=name + "-")
        self.stderr_path = os.path.join(self.dir, "stderr.txt")
        self.stdout_path = os.path.join(self.dir, "stdout.txt")
        self.proc = None

    def spawn(self, argv):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.dir)
        ct._STARTED.append(self.proc)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=ct.t(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self):
        return ct._read_text(self.stderr_path)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


class MpSim(Proc):
    def __init__(self, hold="30s", policy_size=4096, extra=(), quiet=True):
        super().__init__("mpsim")
        self.port = ct.free_port()
        self.hold = hold
        self.policy_size = policy_size
        self.extra = list(extra)
        self.quiet = quiet  # False: one log line per answer on stderr ("c7 HEAD /echo 200 0")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=15):
        ready = os.path.join(self.dir, "ready")
        self.spawn([MPSIM, "--listen", f"127.0.0.1:{self.port}", "--hold", self.hold,
                    "--policy-size", str(self.policy_size), "--ready-file", ready]
                   + (["--quiet"] if self.quiet else []) + self.extra)
        ok = ct.wait_until(lambda: os.path.exists(ready) or not self.running(), ct.t(timeout))
        if not (ok and self.running()):
            raise RuntimeError(f"cmg-mpsim did not start:\n{self.stderr()[-2000:]}")
        return self

    def stats(self):
        import http.client
        import json
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=ct.t(10))
        try:
            c.request("GET", "/mpsim/stats")
            return json.loads(c.getresponse().read())
        finally:
            c.close()


class Connector(Proc):
    """One cmg-connector for a gateway: its certificate from the dev PKI (or given), the
    gateway's tunnel port, and endpoints {role id: base URL}."""

    def __init__(self, gateway_ports, endpoints, name="connector", cert=None, key=None,
                 extra=None, site="PS1"):
        super().__init__(name)
        self.gateway_ports = gateway_ports
        self.endpoints = endpoints
        self.cert = cert or os.path.join(ct.pki(), "connector.crt")
        self.key = key or os.path.join(ct.pki(), "connector.key")
        self.extra = extra or {}
        self.site = site
        self.admin_port = ct.free_port()
        self.config_path = os.path.join(self.dir, "connector.ini")
        self.log_path = os.path.join(self.dir, "SMS_Cloud_ProxyConnector.log")
        self.name = name

    def config(self):
        eps = ", ".join(f"{role} MP {url}" for role, url in self.endpoints.items())
        cfg = {
            "connector": {"id": f"{self.name}.contoso.test", "site": self.site,
                          "service_name": ct.SERVICE_NAME,
                          "gateways": ", ".join(f"127.0.0.1:{p}" for p in self.gateway_ports),
                          "endpoints": eps, "reconnect_min": "50ms", "reconnect_max": "500ms",
                          "drain_timeout": "5s"},
            "tls": {"cert_file": self.cert, "key_file": self.key,
                    "trusted_certs": os.path.join(ct.pki(), "root-ca.crt")},
            "upstream": {},
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "log": {"file": self.log_path},
        }
        for sec, kv in self.extra.items():
            cfg.setdefault(sec, {}).update(kv)
        return cfg

    def start(self, wait_tunnels=1, timeout=20, gateway=None):
        with open(self.config_path, "w") as f:
            f.write(ct.ini_text(self.config()))
        self.spawn([CONNECTOR, "-c", self.config_path])
        if wait_tunnels:
            self.wait_tunnels(wait_tunnels, timeout, gateway)
        return self

    def metrics(self):
        st, _, body = ct.fetch(self.admin_port, "/metrics", timeout=5)
        if st != 200:
            raise RuntimeError(f"connector /metrics answered {st}")
        return ct.Metrics(body.decode())

    def tunnels(self):
        try:
            return self.metrics().sum("cmg_connector_tunnels")
        except (OSError, RuntimeError):
            return 0

    def wait_tunnels(self, n, timeout=20, gateway=None):
        """Until the connector holds n tunnels (and, with `gateway`, that gateway counts n
        tunnels up: the connector counts one when it answers the hello, the gateway when the
        answer arrives)."""
        ok = ct.wait_until(lambda: not self.running() or self.tunnels() >= n, ct.t(timeout))
        if not self.running() or not ok:
            raise RuntimeError(f"connector has {self.tunnels()} tunnel(s), wanted {n}:\n"
                               f"{self.stderr()[-3000:]}")
        if gateway is not None:
            wait_gateway_tunnels(gateway, n, timeout)


def wait_gateway_tunnels(gw, n, timeout=20):
    """Until the gateway counts at least n tunnels up (hello answered)."""
    ok = ct.wait_until(lambda: gw.metrics().sum("cmg_tunnels_open") >= n, ct.t(timeout))
    if not ok:
        raise RuntimeError(f"gateway has {gw.metrics().sum('cmg_tunnels_open')} tunnel(s) up, "
                           f"wanted {n}:\n{gw.stderr()[-3000:]}")


def tunnel_gateway(pki=None, workers=1, extra=None, name="gw"):
    """A Gateway that accepts connectors (dev PKI as the connector trust list) and trusts the
    dev PKI's clients and site tokens."""
    p = pki or ct.pki()
    cfg = {
        "tunnel": {"listen": "127.0.0.1:0", "trusted_certs": f"{p}/root-ca.crt, "
                   f"{p}/intermediate-ca.crt", "crl_files": f"{p}/intermediate.crl, {p}/root.crl",
                   "ping_interval": "1s", "ping_timeout": "3s"},
        "auth": {"trusted_certs": f"{p}/root-ca.crt, {p}/intermediate-ca.crt",
                 "crl_files": f"{p}/intermediate.crl, {p}/root.crl", "crl_fetch": "false"},
        "gateway": {"workers": workers},
    }
    for sec, kv in (extra or {}).items():
        cfg.setdefault(sec, {}).update(kv)
    gw = ct.Gateway(cfg, name=name)
    gw.tunnel_port = ct.free_port()
    gw.overrides["tunnel"]["listen"] = f"127.0.0.1:{gw.tunnel_port}"
    return gw


def cert_args(who="client-valid"):
    p = ct.pki()
    return ["--cert", os.path.join(p, f"{who}.crt"), "--key", os.path.join(p, f"{who}.key")]


def path(role, internal):
    return f"/CCM_Proxy_MutualAuth/{role}{internal}"


def first_line(out):
    return out.split("\r\n", 1)[0] if isinstance(out, str) else \
        out.split(b"\r\n", 1)[0].decode("latin-1")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) if m else 0


def wait_log(proc_text, pattern, timeout):
    return ct.wait_until(lambda: re.search(pattern, proc_text()), ct.t(timeout))


def now():
    return time.monotonic()


# --------------------------------------------------------------------------------------------
# Clients, expected bodies, certificates and a CONNECT proxy (used by test_tunnel)

def client_context(who="client-valid"):
    """An SSLContext trusting the dev root CA that presents the dev PKI's `who` certificate
    (who=None: no client certificate)."""
    ctx = ct.client_context()
    if who:
        p = ct.pki()
        ctx.load_cert_chain(os.path.join(p, f"{who}.crt"), os.path.join(p, f"{who}.key"))
    return ctx


PATTERN_PERIOD = bytes(((i * 131 + 7) & 0xFF) for i in range(256))


def pattern(start, n):
    """Bytes [start, start + n) of mpsim's /download pattern: byte i = (i * 131 + 7) & 0xff."""
    off = start % 256
    reps = (off + n) // 256 + 1
    return (PATTERN_PERIOD * reps)[off:off + n]


def policy_body(policy_id, size):
    """mpsim's policy body: 32-byte block k is SHA-256("<policy id>:<k>")."""
    import hashlib
    blocks = (size + 31) // 32
    return b"".join(hashlib.sha256(f"{policy_id}:{k}".encode()).digest()
                    for k in range(blocks))[:size]


def parse_multipart(content_type, body):
    """[(part head text, part content)] of a multipart body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise AssertionError(f"no boundary in {content_type!r}")
    delim = b"--" + m.group(1).encode()
    if not (body.startswith(delim + b"\r\n") and body.endswith(delim + b"--\r\n")):
        raise AssertionError(f"not a multipart body: {body[:100]!r}...{body[-100:]!r}")
    parts = []
    for chunk in body[len(delim) + 2:-(len(delim) + 4)].split(b"\r\n" + delim + b"\r\n"):
        head, _, content = chunk.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        parts.append((head.decode("latin-1"), content))
    return parts


def cert_identity(path):
    """(SHA-1 thumbprint upper-case hex, subject RFC 2253, issuer RFC 2253) of a PEM
    certificate, from openssl (not the gateway's code)."""
    import hashlib
    out = ct.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-issuer", "-nameopt",
                  "RFC2253"], check=True).stdout
    subject = re.search(r"^subject=\s*(.*)$", out, re.M).group(1).strip()
    issuer = re.search(r"^issuer=\s*(.*)$", out, re.M).group(1).strip()
    return hashlib.sha1(ct.pem_der(path)).hexdigest().upper(), subject, issuer


TINYPROXY = os.environ.get("TINYPROXY") or "/usr/bin/tinyproxy"


class TinyProxy(Proc):
    """tinyproxy in the foreground on a free loopback port, allowing CONNECT to the given
    ports only, logging CONNECTs to its own file (no syslog)."""

    def __init__(self, connect_ports):
        super().__init__("tinyproxy")
        self.port = ct.free_port()
        self.connect_ports = list(connect_ports)
        self.conf_path = os.path.join(self.dir, "tinyproxy.conf")
        self.log_path = os.path.join(self.dir, "tinyproxy.log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=10):
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 60", "Allow 127.0.0.1",
                 "MaxClients 64", "LogLevel Connect", f'LogFile "{self.log_path}"',
                 "Syslog Off", "DisableViaHeader Yes"]
        lines += [f"ConnectPort {p}" for p in self.connect_ports]
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.spawn([TINYPROXY, "-d", "-c", self.conf_path])

        def listening():
            if not self.running():
                return True
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False
        ct.wait_until(listening, ct.t(timeout), interval=0.05)
        if not self.running():
            raise RuntimeError(f"tinyproxy exited:\n{self.stderr()[-2000:]}\n{self.log()}")
        return self

    def log(self):
        return ct._read_text(self.log_path)
