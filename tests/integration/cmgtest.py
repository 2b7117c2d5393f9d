"""Helpers for the cmg-gateway integration tests (Python 3.11 standard library only).

Everything here runs real processes on loopback:
  * binaries come from the environment (CMG_GATEWAY, CMGCTL; ctest sets both), with a fallback
    to build/default for running a module by hand;
  * one dev PKI per test process, written by `cmgctl pki init` (cached);
  * gateways get their own temp dir, free loopback ports and INI file; they are started,
    waited for (admin /healthz) and stopped by PID (SIGTERM, then SIGKILL after a bounded wait);
  * raw HTTP/1.1 over TLS with ssl+socket, plus wrappers for curl and openssl s_client.

Every wait is bounded. Only processes started here are ever signalled.
"""

from __future__ import annotations

import atexit
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SERVICE_NAME = "cmg.localtest.me"  # cmgctl pki init's default service name
PFX_PASSWORD = "cmg-dev"  # cmgctl pki init's default PFX password


# Every test server is on loopback: no child (gateway, cmgctl, curl) goes through a proxy the
# environment may name.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"

def _find_binary(env, fallback):
    path = os.environ.get(env) or os.path.join(REPO, fallback)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"{env}: {path} is not an executable (build it, or set {env})")
    return path


GATEWAY = _find_binary("CMG_GATEWAY", "build/default/gateway/cmg-gateway")
CMGCTL = _find_binary("CMGCTL", "build/default/deploy/cmgctl")


def _is_sanitized(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# Sanitizer builds are several times slower: every timeout is multiplied by SCALE.
SCALE = float(os.environ.get("CMG_TEST_TIMEOUT_SCALE") or (4 if _is_sanitized(GATEWAY) else 1))


def t(seconds):
    """A timeout in seconds, scaled for slow (sanitizer) builds."""
    return seconds * SCALE


# --------------------------------------------------------------------------------------------
# Temp dirs, the process registry, the PKI

_TMP_ROOT = None
_STARTED = []  # Popen objects this process started; stopped at exit if still running


def tmp_root():
    global _TMP_ROOT
    if _TMP_ROOT is None:
        _TMP_ROOT = tempfile.mkdtemp(prefix="cmg-it-")
    return _TMP_ROOT


def mkdtemp(prefix="t-"):
    return tempfile.mkdtemp(prefix=prefix, dir=tmp_root())


@atexit.register
def _cleanup():
    for p in _STARTED:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=10)
            except Exception:
                pass
    if _TMP_ROOT and not os.environ.get("CMG_KEEP_TMP"):
        shutil.rmtree(_TMP_ROOT, ignore_errors=True)


def run(cmd, timeout=30, input=None, cwd=None, check=False):
    """Runs a command with a bounded wait; returns CompletedProcess with text output."""
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=t(timeout), cwd=cwd)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    res = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd!r} exited {p.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    return res


_PKI = None


def pki():
    """The dev PKI directory of this process (created once with `cmgctl pki init`)."""
    global _PKI
    if _PKI is None:
        d = os.path.join(tmp_root(), "pki")
        run([CMGCTL, "pki", "init", d], timeout=60, check=True)
        for f in ("root-ca.crt", "ca-chain.pem", "server.crt", "server.key", "server-chain.pem",
                  "server.pfx", "server-rsa.crt", "server-rsa.key", "server-rsa.pfx",
                  "pfx-password.txt"):
            if not os.path.isfile(os.path.join(d, f)):
                raise RuntimeError(f"cmgctl pki init did not write {f}")
        _PKI = d
    return _PKI


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or timeout (already scaled by
    the caller if needed) passes; returns the last falsy value then."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Metrics

_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """Parsed Prometheus text: samples[(name, frozenset(labels.items()))] = value."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _METRIC_RE.match(line)
            if not m:
                raise ValueError(f"not a Prometheus sample line: {line!r}")
            labels = dict(_LABEL_RE.findall(m.group(2) or ""))
            self.samples[(m.group(1), frozenset(labels.items()))] = float(m.group(3))

    def names(self):
        return {n for n, _ in self.samples}

    def series(self, name):
        """[(labels dict, value)] of one metric."""
        return [(dict(l), v) for (n, l), v in self.samples.items() if n == name]

    def sum(self, name, **labels):
        """Sum of every series of `name` whose labels include `labels` (e.g. across workers)."""
        want = {k: str(v) for k, v in labels.items()}
        return sum(v for (n, l), v in self.samples.items()
                   if n == name and want.items() <= dict(l).items())

    def has(self, name):
        return any(n == name for n, _ in self.samples)


def fetch(port, path, timeout=10, method="GET"):
    """Plain HTTP request to the admin port: (status, headers dict lowercased, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=t(timeout))
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# --------------------------------------------------------------------------------------------
# Gateways

def ini_text(sections):
    """sections: {section: {key: value}} (None values are left out) -> INI text."""
    out = []
    for sec, kv in sections.items():
        out.append(f"[{sec}]")
        for k, v in kv.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            out.append(f"{k} = {v}")
        out.append("")
    return "\n".join(out)


class GatewayError(Exception):
    pass


class Gateway:
    """One cmg-gateway process with its own dir, ports and config.

    config: {section: {key: value}} merged over the defaults below (value None drops a key).
    """

    def __init__(self, config=None, name="gw", pki_dir=None, admin=True, cwd=None):
        self.pki = pki_dir or pki()
        # Not the config's folder, so that relative paths must resolve against the config file.
        self.cwd = cwd or tmp_root()
        self.dir = mkdtemp(prefix=name + "-")
        self.config_path = os.path.join(self.dir, "gateway.ini")
        self.stderr_path = os.path.join(self.dir, "stderr.txt")
        self.stdout_path = os.path.join(self.dir, "stdout.txt")
        self.log_path = os.path.join(self.dir, "CMGService.log")
        self.admin = admin
        self.overrides = config or {}
        self.proc = None
        self.port = self.admin_port = None
        self._pick_ports()

    # -- config

    def _pick_ports(self):
        self.port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()

    def base_config(self):
        return {
            "gateway": {"workers": 1, "listen": f"127.0.0.1:{self.port}", "drain_timeout": "5s"},
            "tls": {"cert_file": os.path.join(self.pki, "server-chain.pem"),
                    "key_file": os.path.join(self.pki, "server.key")},
            "http": {},
            "admin": {"enabled": self.admin, "listen": f"127.0.0.1:{self.admin_port}"},
            "log": {"file": self.log_path},
        }

    def config_sections(self, overrides=None):
        cfg = self.base_config()
        for sec, kv in (self.overrides if overrides is None else overrides).items():
            cfg.setdefault(sec, {}).update(kv)
        return cfg

    def write_config(self, overrides=None, text=None):
        """Writes the INI file (merged overrides, or `text` verbatim); returns its path."""
        if text is None:
            text = ini_text(self.config_sections(overrides))
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)
        return self.config_path

    # -- process

    def start(self, timeout=30, write=True):
        """Starts the gateway and waits for it to answer (bounded); retries with new ports when
        the process dies at once because a port was taken by someone else."""
        last = ""
        for _attempt in range(3):
            if write:
                self.write_config()
            self._spawn()
            ok, why = self._wait_ready(t(timeout))
            if ok:
                return self
            last = why
            if write and self.proc.poll() is not None and \
                    re.search(r"in use|bind", self.stderr()):
                self._pick_ports()
                continue
            break
        self.kill()
        raise GatewayError(f"gateway did not start: {last}\nstderr:\n{self.stderr()[-4000:]}")

    def _spawn(self):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([GATEWAY, "-c", self.config_path],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.cwd)
        _STARTED.append(self.proc)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return False, f"exited with status {rc}"
            try:
                if self.admin:
                    st, _, body = fetch(self.admin_port, "/healthz", timeout=2)
                    if st == 200:
                        return True, ""
                else:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                        return True, ""
            except OSError:
                pass
            time.sleep(0.05)
        return False, f"not ready after {timeout:.0f}s"

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Waits (bounded, timeout already in seconds as given) for exit; returns the status
        or None if still running."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after a bounded wait. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.wait(t(timeout))
            if rc is None:
                self.kill()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.wait(10)

    # -- outputs

    def stderr(self):
        return _read_text(self.stderr_path)

    def stdout(self):
        return _read_text(self.stdout_path)

    def log(self):
        return _read_text(self.log_path)

    def crash_report(self, limit=4000):
        """The sanitizer report in stderr if there is one (from its first line), else the
        tail of stderr: for failure messages."""
        err = self.stderr()
        m = re.search(r"^.*(ERROR: (Address|Leak|Thread)Sanitizer|runtime error:).*$", err, re.M)
        return err[m.start():m.start() + limit] if m else err[-limit:]

    def metrics(self):
        st, hdrs, body = fetch(self.admin_port, "/metrics")
        if st != 200:
            raise AssertionError(f"/metrics answered {st}")
        return Metrics(body.decode("utf-8"))

    def wait_metric(self, name, at_least, timeout=10, **labels):
        """Polls /metrics until sum(name{labels}) >= at_least; returns the last value."""
        val = [None]

        def check():
            val[0] = self.metrics().sum(name, **labels)
            return val[0] >= at_least
        wait_until(check, t(timeout), interval=0.1)
        return val[0]

    # -- clients

    def connect(self, **kw):
        return Conn(self.port, **kw)

    def request(self, method="GET", path="/CCM_Proxy_ServerAuth/ServiceMetadata", **kw):
        """One request on a fresh TLS connection; returns the Response."""
        with self.connect() as c:
            c.send(req(method, path, **kw))
            return c.read_response(head=(method == "HEAD"))

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def _read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class GatewayTestCase(unittest.TestCase):
    """A test class sharing one gateway: set CONFIG (overrides) in the subclass."""

    CONFIG: dict = {}
    ADMIN = True

    @classmethod
    def config(cls):
        """Overrides of the default test config; override when paths from pki() are needed."""
        return cls.CONFIG

    @classmethod
    def setUpClass(cls):
        cls.gw = Gateway(cls.config(), name=cls.__name__, admin=cls.ADMIN).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.gw.stop()
        # A crash (sanitizer report, signal) in the shared gateway must not pass silently.
        if rc not in (0, None):
            raise AssertionError(f"gateway exited with {rc}; stderr:\n{cls.gw.crash_report()}")


# --------------------------------------------------------------------------------------------
# TLS and raw HTTP clients

def client_context(verify=True, cafile=None, alpn=("http/1.1",), min_version=None,
                   max_version=None):
    """An SSLContext trusting the dev root CA (or ca-chain.pem, or nothing with verify=False)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile or os.path.join(pki(), "root-ca.crt"))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def req(method="GET", path="/", headers=None, body=b"", host=SERVICE_NAME, version="HTTP/1.1",
        content_length=None):
    """Builds request bytes. Host and Content-Length (when there is a body) are added unless
    given in headers (a list of (name, value) or a dict); host=None leaves Host out."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    names = {h[0].lower() for h in headers}
    lines = [f"{method} {path} {version}"]
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    for k, v in headers:
        lines.append(f"{k}: {v}")
    if isinstance(body, str):
        body = body.encode()
    if content_length is None and body and "content-length" not in names \
            and "transfer-encoding" not in names:
        content_length = len(body)
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list = field(default_factory=list)  # [(name, value)] as received
    body: bytes = b""
    raw_head: bytes = b""

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def closes(self):
        return "close" in (self.header("Connection") or "").lower()


class ConnectionClosed(Exception):
    pass


_EOF_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError,
               ssl.SSLZeroReturnError)


class Conn:
    """A TLS (or plain, tls=False) connection with a buffer for reading HTTP responses."""

    def __init__(self, port, ctx=None, host="127.0.0.1", server_hostname=SERVICE_NAME,
                 timeout=10, tls=True):
        self.timeout = t(timeout)
        raw = socket.create_connection((host, port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if tls:
                ctx = ctx or client_context()
                self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
            else:
                self.sock = raw
        except Exception:
            raw.close()
            raise
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def peer_cert_der(self):
        return self.sock.getpeercert(binary_form=True)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _recv(self, timeout=None):
        """The next bytes from the socket, b"" at EOF. Raises socket.timeout."""
        if self.eof:
            return b""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except _EOF_ERRORS:
            data = b""
        except ssl.SSLError as e:  # an alert or a bad record: the connection is over
            if "timed out" in str(e):
                raise socket.timeout(str(e))
            data = b""
        if not data:
            self.eof = True
        return data

    def _fill(self, timeout=None):
        """Reads more bytes into buf; returns False at EOF. Raises socket.timeout."""
        data = self._recv(timeout)
        if not data:
            return False
        self.buf += data
        return True

    def _read_until(self, delim, deadline):
        while delim not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no {delim!r} in time; have {self.buf[:200]!r}")
            if not self._fill(left):
                raise ConnectionClosed(f"closed before {delim!r}; have {self.buf[:200]!r}")
        i = self.buf.index(delim) + len(delim)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_n(self, n, deadline):
        # pieces joined once at the end: appending to one bytes object is quadratic, which
        # makes a body of tens of MiB take minutes
        parts, have = [self.buf], len(self.buf)
        self.buf = b""
        try:
            while have < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout(f"body short: {have} of {n}")
                data = self._recv(left)
                if not data:
                    raise ConnectionClosed(f"closed in the body: {have} of {n}")
                parts.append(data)
                have += len(data)
        finally:
            self.buf = b"".join(parts)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head=False, timeout=None):
        """Reads one response (a 1xx too). head=True: no body whatever the headers say."""
        deadline = time.monotonic() + (self.timeout if timeout is None else t(timeout))
        head_bytes = self._read_until(b"\r\n\r\n", deadline)
        lines = head_bytes.decode("latin-1").split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", lines[0])
        if not m:
            raise AssertionError(f"bad status line: {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        r = Response(int(m.group(2)), m.group(3), m.group(1), headers, b"", head_bytes)
        if head or 100 <= r.status < 200 or r.status in (204, 304):
            return r
        te = (r.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    self._read_until(b"\r\n", deadline)  # no trailers expected
                    break
                body += self._read_n(size, deadline)
                self._read_until(b"\r\n", deadline)
            r.body = body
        elif r.header("Content-Length") is not None:
            r.body = self._read_n(int(r.header("Content-Length")), deadline)
        else:
            r.body = self.read_until_close(deadline - time.monotonic())[0]
        return r

    def read_until_close(self, timeout):
        """Reads everything until EOF; returns (bytes, closed?). timeout in real seconds."""
        deadline = time.monotonic() + timeout
        parts = [self.buf]
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = self._recv(left)
            except (socket.timeout, TimeoutError):
                break
            if not data:
                break
            parts.append(data)
        self.buf = b""
        return b"".join(parts), self.eof

    def wait_closed(self, timeout):
        """True if the peer closes within timeout (real seconds); unread data is discarded."""
        return self.read_until_close(timeout)[1]

    def is_open(self, probe=0.2):
        """True if the connection is still open: nothing arrives and no EOF within probe s."""
        try:
            if self._fill(probe):
                return True  # data arrived: open (caller didn't expect it, but not closed)
            return False
        except (socket.timeout, TimeoutError):
            return True


def plain_connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=t(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_until_close(sock, timeout):
    """Reads a plain socket until EOF/reset or timeout; returns (bytes, closed?)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return data, False
        except _EOF_ERRORS:
            return data, True
        if not chunk:
            return data, True
        data += chunk


def pem_der(path):
    """DER bytes of the first certificate in a PEM file."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    return ssl.PEM_cert_to_DER_cert(m.group(0))


# --------------------------------------------------------------------------------------------
# curl and openssl s_client

def curl(url_path, port, *args, timeout=20, cafile=None, insecure=False):
    """curl https://SERVICE_NAME:port/path resolved to 127.0.0.1. Returns CompletedProcess;
    stdout holds `-w` output if given in args."""
    cmd = ["curl", "-sS", "--max-time", str(int(t(timeout))),
           "--resolve", f"{SERVICE_NAME}:{port}:127.0.0.1"]
    if insecure:
        cmd.append("-k")
    else:
        cmd += ["--cacert", cafile or os.path.join(pki(), "root-ca.crt")]
    cmd += list(args) + [f"https://{SERVICE_NAME}:{port}{url_path}"]
    return run(cmd, timeout=timeout + 10)


@dataclass
class SClient:
    rc: int
    out: str

    @property
    def ok(self):
        """The handshake completed with a real cipher."""
        return self.rc == 0 and re.search(r"^(New|Reused), TLSv[\d.]+, Cipher is (?!\(NONE\))",
                                           self.out, re.M) is not None

    @property
    def reused(self):
        return re.search(r"^Reused, TLSv", self.out, re.M) is not None

    @property
    def protocol(self):
        """The negotiated protocol ("Protocol :" of the SSL-Session block; the "New, TLSvX"
        line names the cipher's version, not the protocol), None if the handshake failed."""
        if not self.ok:
            return None
        if re.search(r"^(New|Reused), TLSv1\.3, Cipher is TLS_", self.out, re.M):
            return "TLSv1.3"  # no SSL-Session block before a ticket arrives in TLS 1.3
        m = re.search(r"^\s+Protocol\s*:\s*(\S+)", self.out, re.M)
        return m.group(1) if m else None

    @property
    def alpn(self):
        m = re.search(r"^ALPN protocol: (\S+)", self.out, re.M)
        return m.group(1) if m else None


HTTP_CLOSE_REQ = (f"GET /CCM_Proxy_ServerAuth/ServiceMetadata HTTP/1.1\r\nHost: {SERVICE_NAME}"
                  "\r\nConnection: close\r\n\r\n").encode()


def s_client(port, *args, send=b"", timeout=20, verify=False):
    """openssl s_client to 127.0.0.1:port with SNI SERVICE_NAME. send: bytes for stdin; with
    `-ign_eof` in args s_client reads until the server closes (use a Connection: close
    request), which is how a TLS 1.3 ticket gets saved by -sess_out."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVICE_NAME]
    if verify:
        cmd += ["-CAfile", os.path.join(pki(), "root-ca.crt"), "-verify_return_error"]
    cmd += list(args)
    try:
        p = run(cmd, input=send, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return SClient(-1, f"timeout: {e}")
    return SClient(p.returncode, p.stdout + p.stderr)
