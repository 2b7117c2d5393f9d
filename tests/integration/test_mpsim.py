"""cmg-mpsim, the management point simulator: every endpoint's answer, bodies checked byte for
byte, streamed downloads with ranges, held notification requests at scale, bad requests,
pipelining, the counters, options and signals.

Self-contained (Python 3 standard library only, plain HTTP on loopback): the simulator is what
other tests stand on, so it is tested without the gateway. The binary comes from CMG_MPSIM
(ctest sets it), with a fallback to build/default for running the module by hand. Each server is
started on port 0 with --ready-file, which names the port it bound, and stopped by PID.
"""

import base64
import hashlib
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _find_mpsim():
    """CMG_MPSIM, a relative path taken from here or else from the repository root."""
    path = os.environ.get("CMG_MPSIM") or "build/default/mpsim/cmg-mpsim"
    if not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(REPO, path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"CMG_MPSIM: {path} is not an executable (build cmg-mpsim, or set "
                           "CMG_MPSIM)")
    return os.path.abspath(path)


MPSIM = _find_mpsim()

os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"


def _is_sanitized(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# Sanitizer builds are several times slower: every timeout is multiplied by SCALE.
SCALE = float(os.environ.get("CMG_TEST_TIMEOUT_SCALE") or (4 if _is_sanitized(MPSIM) else 1))


def t(seconds):
    return seconds * SCALE


def pattern(start, n):
    """Bytes [start, start + n) of the download pattern: byte i = (i * 131 + 7) & 0xff."""
    period = bytes(((i * 131 + 7) & 0xFF) for i in range(256))
    reps = (start % 256 + n) // 256 + 1
    off = start % 256
    return (period * reps)[off:off + n]


def policy_body(policy_id, size):
    """A policy body: 32-byte block k is SHA-256("<policy id>:<k>")."""
    blocks = (size + 31) // 32
    return b"".join(hashlib.sha256(f"{policy_id}:{k}".encode()).digest()
                    for k in range(blocks))[:size]


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------------------------
# The process

class Mpsim:
    """One cmg-mpsim process on a free loopback port."""

    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="mpsim-")
        self.ready = os.path.join(self.dir, "ready")
        self.stderr_path = os.path.join(self.dir, "stderr.txt")
        self.args = list(args)
        self.proc = None
        self.port = None

    def start(self, timeout=10):
        cmd = [MPSIM, "--listen", "127.0.0.1:0", "--ready-file", self.ready] + self.args
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + t(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cmg-mpsim exited with {self.proc.returncode}:\n"
                                     f"{self.stderr()}")
            if os.path.exists(self.ready):
                with open(self.ready) as f:
                    first = f.readline().strip()
                self.port = int(first.rsplit(":", 1)[1])
                return self
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"cmg-mpsim not ready after {timeout}s:\n{self.stderr()}")

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after a bounded wait. Returns the exit status."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=t(timeout))
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def connect(self, timeout=10):
        return Conn(self.port, timeout)

    def request(self, method, path, headers=(), body=b"", head=False):
        with self.connect() as c:
            c.send(req(method, path, headers, body))
            return c.read_response(head=head or method == "HEAD")

    def stats(self):
        r = self.request("GET", "/mpsim/stats")
        assert r.status == 200, r.head
        return json.loads(r.body)


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1

def req(method, path, headers=(), body=b"", host="mp.test"):
    """Request bytes; Host and Content-Length (for a body) are added unless given."""
    headers = list(headers)
    names = {k.lower() for k, _ in headers}
    lines = [f"{method} {path} HTTP/1.1"]
    if host and "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Response:
    def __init__(self, status, headers, body, head):
        self.status, self.headers, self.body, self.head = status, headers, body, head

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body)


class Closed(Exception):
    pass


class Conn:
    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=t(timeout))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise Closed(f"closed; have {self.buf[:200]!r}")
        self.buf += data

    def read_until(self, delim):
        while delim not in self.buf:
            self._fill()
        i = self.buf.index(delim) + len(delim)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_n(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        m = re.match(r"^HTTP/1\.1 (\d{3}) ", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if line]
        return int(m.group(1)), headers, head

    def read_response(self, head=False):
        status, headers, raw = self.read_head()
        r = Response(status, headers, b"", raw)
        if not head and status not in (204, 304):
            r.body = self.read_n(int(r.header("Content-Length")))
        return r

    def closed_by_peer(self, timeout=5):
        """True when the server closes (EOF or reset) within timeout; unread data is dropped."""
        self.sock.settimeout(t(timeout))
        try:
            while self.sock.recv(65536):
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False


def parse_multipart(content_type, body):
    m = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
    assert m, content_type
    delim = b"--" + m.group(1).encode()
    assert body.startswith(delim + b"\r\n"), body[:100]
    assert body.endswith(delim + b"--\r\n"), body[-100:]
    parts = []
    for chunk in body[len(delim) + 2:-(len(delim) + 4)].split(b"\r\n" + delim + b"\r\n"):
        head, _, content = chunk.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        parts.append((head.decode("latin-1"), content))
    return parts


# --------------------------------------------------------------------------------------------

class MpsimTestCase(unittest.TestCase):
    ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.sim = Mpsim(*cls.ARGS).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.sim.stop()
        err = cls.sim.stderr()
        cls.sim.cleanup()
        if rc != 0:
            raise AssertionError(f"cmg-mpsim exited with {rc}; stderr:\n{err[-4000:]}")


class TestEndpoints(MpsimTestCase):
    ARGS = ("--site", "xy7", "--mp-name", "mp9.corp.example", "--policy-size", "5000")

    # -- sms_aut

    def test_mplist(self):
        for path in ("/SMS_MP/.sms_aut?MPLIST", "/SMS_MP/.sms_aut?MPLIST2",
                     "/SMS_MP/.sms_aut?MPLIST2&CM1", "/sms_mp/.sms_aut?mplist"):
            with self.subTest(path=path):
                r = self.sim.request("GET", path)
                self.assertEqual(r.status, 200, r.head)
                self.assertRegex(r.header("Content-Type"), r"^text/xml")
                text = r.body.decode()
                self.assertRegex(text, r"^<MPList>.*</MPList>$")
                self.assertIn('FQDN="mp9.corp.example"', text)
                self.assertIn('SiteCode="XY7"', text)

    def test_sitesigncert_and_keyinfo(self):
        r = self.sim.request("GET", "/SMS_MP/.sms_aut?SITESIGNCERT")
        self.assertEqual(r.status, 200, r.head)
        m = re.fullmatch(r'<SiteSignCert SiteCode="XY7">([A-Za-z0-9+/=]+)</SiteSignCert>',
                         r.body.decode())
        self.assertIsNotNone(m, r.body)
        self.assertEqual(len(base64.b64decode(m.group(1), validate=True)), 384)
        r = self.sim.request("GET", "/SMS_MP/.sms_aut?MPKEYINFORMATIONEX")
        self.assertEqual(r.status, 200, r.head)
        self.assertRegex(r.body.decode(), r"^<MPKEYINFORMATION><FQDN>mp9\.corp\.example</FQDN>"
                                          r"<SITECODE>XY7</SITECODE><SIGNINGCERTIFICATE>[0-9A-F]+")

    def test_sms_aut_unknown_and_wrong_verb(self):
        for q in ("", "?NOPE", "?MPLISTX", "?"):
            with self.subTest(q=q):
                self.assertEqual(self.sim.request("GET", "/SMS_MP/.sms_aut" + q).status, 404)
        r = self.sim.request("POST", "/SMS_MP/.sms_aut?MPLIST", body=b"x")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.header("Allow"), "GET, HEAD")

    # -- sms_pol

    def test_policy_is_exact(self):
        pid = "{a1b2c3d4-0000-1111-2222-333344445555}/1.00.SHA256:0123abcd"
        r = self.sim.request("GET", "/SMS_MP/.sms_pol?" + pid)
        self.assertEqual(r.status, 200, r.head)
        self.assertEqual(r.header("Content-Type"), "application/octet-stream")
        self.assertEqual(r.header("Content-Length"), "5000")
        self.assertEqual(r.body, policy_body(pid, 5000))
        other = self.sim.request("GET", "/SMS_MP/.sms_pol?other-policy")
        self.assertEqual(other.body, policy_body("other-policy", 5000))
        self.assertNotEqual(other.body, r.body)
        h = self.sim.request("HEAD", "/SMS_MP/.sms_pol?" + pid)
        self.assertEqual((h.status, h.header("Content-Length")), (200, "5000"))
        self.assertEqual(self.sim.request("GET", "/SMS_MP/.sms_pol").status, 404)

    # -- ccm_system

    def test_ccm_post_chunked_multipart_3mib(self):
        boundary = "aAbBcCdDv1234567890VxXyYzZ"
        payload = os.urandom(3 << 20)
        body = (f"--{boundary}\r\ncontent-type: text/plain; charset=UTF-16\r\n\r\n".encode()
                + "<Msg><ID>{x}</ID></Msg>".encode("utf-16-le") +
                f"\r\n--{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n".encode()
                + payload + f"\r\n--{boundary}--\r\n".encode())
        with self.sim.connect(timeout=30) as c:
            c.send(req("CCM_POST", "/ccm_system/request",
                       [("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
                        ("Transfer-Encoding", "chunked")]))
            sizes = [1, 4095, 65536, 300000, 7]
            off, i = 0, 0
            while off < len(body):
                n = min(sizes[i % len(sizes)], len(body) - off)
                c.send(b"%x\r\n" % n + body[off:off + n] + b"\r\n")
                off += n
                i += 1
            c.send(b"0\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, r.head)
        self.assertRegex(r.header("Content-Type"), r"^multipart/mixed; boundary=")
        parts = parse_multipart(r.header("Content-Type"), r.body)
        self.assertEqual(len(parts), 2)
        self.assertIn(f"<ReceivedBodyLength>{len(body)}</ReceivedBodyLength>",
                      parts[0][1].decode())
        reply = json.loads(parts[1][1])
        self.assertEqual(reply, {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    def test_ccm_post_variants(self):
        body = b"--b\r\n\r\nhello\r\n--b--\r\n"
        for method, path in (("POST", "/ccm_system/request"),
                             ("CCM_POST", "/ccm_system_tokenauth/request"),
                             ("CCM_POST", "/CCM_System_TokenAuth/request")):
            with self.subTest(method=method, path=path):
                r = self.sim.request(method, path, [("Content-Type", "multipart/mixed")], body)
                self.assertEqual(r.status, 200, r.head)
                reply = json.loads(parse_multipart(r.header("Content-Type"), r.body)[1][1])
                self.assertEqual(reply["length"], len(body))
                self.assertEqual(reply["sha256"], hashlib.sha256(body).hexdigest())
        r = self.sim.request("GET", "/ccm_system/request")
        self.assertEqual(r.status, 405)

    # -- CCM_STS

    def test_sts_token(self):
        for method in ("POST", "GET"):
            with self.subTest(method=method):
                r = self.sim.request(method, "/CCM_STS", body=b"{}" if method == "POST" else b"")
                self.assertEqual(r.status, 200, r.head)
                self.assertEqual(r.header("Content-Type"), "application/json")
                j = r.json()
                self.assertEqual(j["expires_in"], 3600)
                self.assertRegex(j["token"], r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.$")

    # -- download

    def test_download_50mib_streamed(self):
        n = 50 << 20
        with self.sim.connect(timeout=30) as c:
            c.send(req("GET", "/download/50m"))
            status, headers, raw = c.read_head()
            self.assertEqual(status, 200, raw)
            self.assertEqual(dict(headers)["Content-Length"], str(n))
            got = bytearray(c.buf)
            c.buf = b""
            h = hashlib.sha256()
            checks = {0: 4096, 1 << 20: 1000, (37 << 20) + 13: 5000, n - 777: 777}
            while len(got) < n:
                chunk = c.sock.recv(1 << 20)
                self.assertTrue(chunk, f"closed after {len(got)} bytes")
                got += chunk
            for start, length in checks.items():
                self.assertEqual(bytes(got[start:start + length]), pattern(start, length),
                                 f"at {start}")
            self.assertEqual(len(got), n)
            h.update(got)
            self.assertEqual(h.hexdigest(), hashlib.sha256(pattern(0, n)).hexdigest())
            # the connection is still usable afterwards
            c.send(req("GET", "/download/3"))
            self.assertEqual(c.read_response().body, pattern(0, 3))

    def test_download_ranges(self):
        n = 50 << 20
        cases = [("bytes=1000-1999", 1000, 1999), ("bytes=52428000-", 52428000, n - 1),
                 ("bytes=-10", n - 10, n - 1), ("bytes=5-5", 5, 5),
                 ("bytes=100-99999999999", 100, n - 1)]
        with self.sim.connect() as c:
            for spec, a, b in cases:
                with self.subTest(range=spec):
                    c.send(req("GET", "/download/50m", [("Range", spec)]))
                    r = c.read_response()
                    self.assertEqual(r.status, 206, r.head)
                    self.assertEqual(r.header("Content-Range"), f"bytes {a}-{b}/{n}")
                    self.assertEqual(r.body, pattern(a, b - a + 1))
            for spec in ("bytes=52428800-", "bytes=-0", "bytes=99999999999-"):
                with self.subTest(range=spec):
                    c.send(req("GET", "/download/50m", [("Range", spec)]))
                    r = c.read_response()
                    self.assertEqual(r.status, 416, r.head)
                    self.assertEqual(r.header("Content-Range"), f"bytes */{n}")
            # not a single byte range: the whole body, as RFC 9110 allows
            c.send(req("GET", "/download/1k", [("Range", "bytes=0-1,5-6")]))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, pattern(0, 1024)))

    def test_download_head_and_sizes(self):
        for path, size in (("/download/1g", 1 << 30), ("/download/1099511627776", 1 << 40),
                           ("/download/7K", 7 << 10), ("/download/0", 0)):
            with self.subTest(path=path):
                r = self.sim.request("HEAD", path)
                self.assertEqual(r.status, 200, r.head)
                self.assertEqual(r.header("Content-Length"), str(size))
        with self.sim.connect() as c:  # HEAD left nothing behind on the connection
            c.send(req("HEAD", "/download/2g") + req("GET", "/download/10"))
            self.assertEqual(c.read_response(head=True).header("Content-Length"), str(2 << 30))
            self.assertEqual(c.read_response().body, pattern(0, 10))
        for path in ("/download/1099511627777", "/download/1025g", "/download/x",
                     "/download/", "/download/5q", "/download/1kk"):
            with self.subTest(path=path):
                self.assertEqual(self.sim.request("GET", path).status, 400)
        self.assertEqual(self.sim.request("POST", "/download/5", body=b"x").status, 405)

    # -- echo, identity, status, 404

    def test_echo(self):
        body = b"\x00\x01binary\xff" * 100
        hdrs = [("X-CMG-Auth-Method", "ClientCert"), ("X-Custom", "a \"quoted\" \\ value"),
                ("x-lower", "1"), ("X-Latin", "caf\xe9")]
        for method in ("GET", "POST", "PUT", "PROPFIND", "BITS_POST", "CCM_POST", "DELETE"):
            with self.subTest(method=method):
                b = body if method != "GET" else b""
                r = self.sim.request(method, "/echo/x?y=1&z=%20", hdrs, b)
                self.assertEqual(r.status, 200, r.head)
                self.assertEqual(r.header("X-MPSIM-Identity"), "ClientCert")
                j = r.json()
                self.assertEqual(j["method"], method)
                self.assertEqual(j["path"], "/echo/x?y=1&z=%20")
                sent = [["Host", "mp.test"]] + [list(h) for h in hdrs]
                if b:
                    sent.append(["Content-Length", str(len(b))])
                self.assertEqual(j["headers"], sent)
                self.assertEqual(j["body_length"], len(b))
                self.assertEqual(j["body_sha256"], hashlib.sha256(b).hexdigest())

    def test_identity_header_on_every_answer(self):
        for path in ("/SMS_MP/.sms_aut?MPLIST", "/nothing", "/status/500", "/CCM_STS"):
            with self.subTest(path=path):
                r = self.sim.request("GET", path)
                self.assertEqual(r.header("X-MPSIM-Identity"), "none")
                r = self.sim.request("GET", path, [("X-CMG-Auth-Method", "AADToken")])
                self.assertEqual(r.header("X-MPSIM-Identity"), "AADToken")

    def test_status(self):
        for code in (200, 302, 403, 404, 500, 503, 599):
            with self.subTest(code=code):
                r = self.sim.request("GET", f"/status/{code}")
                self.assertEqual(r.status, code)
                self.assertEqual(r.body, f"status {code}\n".encode())
        r = self.sim.request("GET", "/status/204")
        self.assertEqual(r.status, 204)
        self.assertIsNone(r.header("Content-Length"))
        for path in ("/status/99", "/status/600", "/status/abc", "/status/"):
            with self.subTest(path=path):
                self.assertEqual(self.sim.request("GET", path).status, 400)

    def test_unknown_paths_404_keep_alive(self):
        with self.sim.connect() as c:
            for path in ("/", "/SMS_MP", "/SMS_MP/.sms_aut/x", "/bgb", "/CCM_STS/x",
                         "/mpsim/statsx", "/ccm_system/other"):
                with self.subTest(path=path):
                    c.send(req("GET", path))
                    r = c.read_response()
                    self.assertEqual(r.status, 404, r.head)
                    self.assertIsNone(r.header("Connection"))

    # -- connection handling

    def test_pipelining_in_order(self):
        with self.sim.connect() as c:
            c.send(req("GET", "/status/201") + req("GET", "/download/100") +
                   req("GET", "/echo/1") + req("HEAD", "/download/5") + req("GET", "/status/202"))
            self.assertEqual(c.read_response().status, 201)
            self.assertEqual(c.read_response().body, pattern(0, 100))
            self.assertEqual(c.read_response().json()["path"], "/echo/1")
            self.assertEqual(c.read_response(head=True).header("Content-Length"), "5")
            self.assertEqual(c.read_response().status, 202)

    def test_pipelining_large_batch(self):
        n = 2000
        with self.sim.connect(timeout=30) as c:
            c.send(b"".join(req("GET", f"/echo/{i}") for i in range(n)))
            for i in range(n):
                self.assertEqual(c.read_response().json()["path"], f"/echo/{i}")

    def test_expect_100_continue(self):
        with self.sim.connect() as c:
            c.send(req("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "5")]))
            status, _, raw = c.read_head()
            self.assertEqual(status, 100, raw)
            c.send(b"hello")
            r = c.read_response()
            self.assertEqual(r.json()["body_sha256"], hashlib.sha256(b"hello").hexdigest())

    def test_connection_close_and_http10(self):
        with self.sim.connect() as c:
            c.send(req("GET", "/status/200", [("Connection", "close")]))
            r = c.read_response()
            self.assertEqual(r.header("Connection"), "close")
            self.assertTrue(c.closed_by_peer())
        with self.sim.connect() as c:
            c.send(b"GET /echo HTTP/1.0\r\n\r\n")
            status, _, raw = c.read_head()
            self.assertEqual(status, 200)
            self.assertIn("Connection: close", raw)

    def test_body_over_64mib_refused(self):
        with self.sim.connect() as c:
            c.send(req("POST", "/echo", [("Content-Length", str((64 << 20) + 1))]))
            r = c.read_response()
            self.assertEqual(r.status, 413, r.head)
            self.assertTrue(c.closed_by_peer())

    def test_garbage_gets_400(self):
        cases = [b"garbage\r\n\r\n", b"GET /echo HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
                 b"GET /echo HTTP/1.1\r\n\r\n",  # no Host
                 b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                 b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 b"GET echo HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))]
        for data in cases:
            with self.subTest(data=data):
                with self.sim.connect() as c:
                    c.send(data)
                    r = c.read_response()
                    self.assertIn(r.status, (400, 501), r.head)
                    self.assertEqual(r.header("Connection"), "close")
                    self.assertTrue(c.closed_by_peer())
        with self.sim.connect() as c:
            c.send(req("GET", "/echo", [("X-Big", "a" * 40000)]))
            self.assertEqual(c.read_response().status, 431)
        # the server is fine afterwards
        self.assertEqual(self.sim.request("GET", "/status/200").status, 200)

    def test_half_close_still_answered(self):
        with self.sim.connect() as c:
            c.send(req("GET", "/status/203"))
            c.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(c.read_response().status, 203)
            self.assertTrue(c.closed_by_peer())

    def test_stats_count(self):
        before = self.sim.stats()
        with self.sim.connect() as c:
            for _ in range(3):
                c.send(req("GET", "/status/200"))
                c.read_response()
            after = self.sim.stats()
            self.assertEqual(after["requests"], before["requests"] + 4)
            self.assertEqual(after["connections_total"], before["connections_total"] + 2)
            self.assertGreaterEqual(after["connections"], 2)
            self.assertEqual(after["held"], 0)


class TestHold(MpsimTestCase):
    ARGS = ("--hold", "2s", "--quiet")
    N = 1000

    def test_thousand_held_requests(self):
        if raise_fd_limit() < self.N + 100:
            self.skipTest("open-file limit too low for 1000 connections")
        socks = []
        try:
            start = time.monotonic()
            for i in range(self.N):
                s = socket.create_connection(("127.0.0.1", self.sim.port), timeout=t(10))
                s.sendall(req("GET", f"/bgb/handler.ashx?n={i}",
                              [("X-CMG-Auth-Method", "ClientCert")]))
                socks.append(s)

            def held():
                return self.sim.stats()["held"]
            deadline = time.monotonic() + t(5)
            while held() < self.N and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(held(), self.N)
            sel = selectors.DefaultSelector()
            bufs = {}
            for s in socks:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
                bufs[s] = b""
            done = 0
            first = None
            deadline = time.monotonic() + t(15)
            while done < self.N and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.5):
                    s = key.fileobj
                    data = s.recv(4096)
                    if first is None:
                        first = time.monotonic() - start
                    bufs[s] += data
                    if not data or bufs[s].endswith(b"\r\n\r\nnotify"):
                        sel.unregister(s)
                        done += 1
            sel.close()
            self.assertEqual(done, self.N)
            for s in socks:
                self.assertRegex(bufs[s], rb"^HTTP/1\.1 200 OK\r\n")
                self.assertIn(b"\r\nX-MPSIM-Identity: ClientCert\r\n", bufs[s])
                self.assertTrue(bufs[s].endswith(b"\r\n\r\nnotify"))
            self.assertGreaterEqual(first, 1.9, "answered before the hold ended")
            self.assertEqual(self.sim.stats()["held"], 0)
        finally:
            for s in socks:
                s.close()

    def test_client_leaving_frees_the_hold(self):
        c = self.sim.connect()
        c.send(req("GET", "/bgb/x"))
        deadline = time.monotonic() + t(5)
        while self.sim.stats()["held"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.sim.stats()["held"], 1)
        before = self.sim.stats()["connections"]
        c.close()
        deadline = time.monotonic() + t(5)
        while self.sim.stats()["held"] > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = self.sim.stats()
        self.assertEqual(st["held"], 0)
        self.assertEqual(st["connections"], before - 1)

    def test_pipelined_after_held_waits_its_turn(self):
        with self.sim.connect() as c:
            t0 = time.monotonic()
            c.send(req("POST", "/bgb/y", body=b"abc") + req("GET", "/status/201"))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"notify"))
            self.assertGreaterEqual(time.monotonic() - t0, 1.9)
            self.assertEqual(c.read_response().status, 201)

    def test_head_held(self):
        with self.sim.connect() as c:
            c.send(req("HEAD", "/bgb/z") + req("GET", "/status/202"))
            r = c.read_response(head=True)
            self.assertEqual((r.status, r.header("Content-Length")), (200, "6"))
            self.assertEqual(c.read_response().status, 202)


class TestProcess(unittest.TestCase):
    def run_bad(self, *args):
        p = subprocess.run([MPSIM] + list(args), capture_output=True, timeout=t(10))
        return p.returncode, p.stderr.decode()

    def test_bad_options_exit_2(self):
        cases = [(("--hold", "abc"), "--hold"), (("--hold", "25h"), "24h"),
                 (("--policy-size", "65m"), "--policy-size"), (("--site", "ABCD"), "--site"),
                 (("--site", "P-1"), "--site"), (("--mp-name", "bad name"), "--mp-name"),
                 (("--listen", "localhost:80"), "--listen"), (("--listen", "127.0.0.1"), "--listen"),
                 (("--listen", "127.0.0.1:70000"), "--listen"), (("--bogus",), "usage"),
                 (("extra",), "unexpected")]
        for args, word in cases:
            with self.subTest(args=args):
                rc, err = self.run_bad(*args)
                self.assertEqual(rc, 2, err)
                self.assertIn(word, err)

    def test_help(self):
        p = subprocess.run([MPSIM, "-h"], capture_output=True, timeout=t(10))
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"--ready-file", p.stdout)

    def test_listen_in_use_fails(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            p = subprocess.run([MPSIM, "--listen", f"127.0.0.1:{port}"], capture_output=True,
                               timeout=t(10))
            self.assertEqual(p.returncode, 1)
            self.assertIn(b"cannot listen", p.stderr)

    def test_several_listeners_and_logs(self):
        sim = Mpsim("--listen", "127.0.0.1:0,127.0.0.1:0").start()
        try:
            with open(sim.ready) as f:
                ports = [int(line.rsplit(":", 1)[1]) for line in f.read().split()]
            self.assertEqual(len(ports), 3)
            for port in ports:
                with Conn(port) as c:
                    c.send(req("GET", "/status/200?q=secret"))
                    self.assertEqual(c.read_response().status, 200)
            self.assertEqual(sim.stop(), 0)
            err = sim.stderr()
            self.assertRegex(err, r"cmg-mpsim listening on 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+, "
                                  r"127\.0\.0\.1:\d+")
            self.assertEqual(len(re.findall(r" GET /status/200 200 11\n", err)), 3)
            self.assertNotIn("secret", err)
            self.assertFalse(os.path.exists(sim.ready))
        finally:
            sim.kill()
            sim.cleanup()

    def test_quiet(self):
        sim = Mpsim("--quiet").start()
        try:
            self.assertEqual(sim.request("GET", "/status/200").status, 200)
            self.assertEqual(sim.stop(), 0)
            self.assertIn("listening on", sim.stderr())
            self.assertNotIn("/status/200", sim.stderr())
        finally:
            sim.kill()
            sim.cleanup()

    def test_sigterm_stops_at_once_with_open_work(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(sig=sig):
                sim = Mpsim("--hold", "60s", "--quiet").start()
                try:
                    held = sim.connect()
                    held.send(req("GET", "/bgb/wait"))
                    stream = sim.connect()
                    stream.send(req("GET", "/download/1g"))
                    idle = sim.connect()
                    stream.read_head()
                    t0 = time.monotonic()
                    sim.proc.send_signal(sig)
                    self.assertEqual(sim.proc.wait(timeout=t(5)), 0)
                    self.assertLess(time.monotonic() - t0, t(2))
                    self.assertTrue(held.closed_by_peer())
                    self.assertTrue(idle.closed_by_peer())
                    for c in (held, stream, idle):
                        c.close()
                finally:
                    sim.kill()
                    sim.cleanup()


if __name__ == "__main__":
    unittest.main()
