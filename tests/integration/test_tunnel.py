"""End to end through the tunnel: client -> cmg-gateway -> cmg-connector -> cmg-mpsim.

Every verb, header rule and body through a real gateway, connector and management point
simulator; upstream statuses and failures; a 1 GiB download to a throttled client with the
gateway's memory watched; 10,000 held notification requests at once; a connector killed under
load and one restarted; load shared by two connectors; refused connector certificates; a tunnel
through a CONNECT proxy (tinyproxy); the connector's configuration errors.

Python 3 standard library, curl, openssl and tinyproxy; loopback only; every wait bounded;
only processes started here are signalled (tunnelkit/cmgtest stop them by PID).

Classes that only read share their processes (setUpClass); the ones that kill or restart a
connector have their own.

Connectors here ping every second (ping_interval = 1s) except in TestConnectorRestart: a
connector's PING is what currently unsticks a tunnel whose hello reply the gateway left unread
(see TestConnectorRestart), and with the default of 10 s every start could cost 10 s.
"""

import base64
import hashlib
import json
import os
import re
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest
import concurrent.futures as cf

import cmgtest as ct
import tunnelkit as tk
from test_tokens import HIERARCHY, make_token

MP = tk.MP_ROLE
SUP = tk.SUP_ROLE
UNKNOWN_ROLE = "72057594037999999"
FAST_PING = {"ping_interval": "1s", "ping_timeout": "3s"}

# Header names (lower case) the gateway sets for a client certificate / a site token.
CERT_IDENTITY = {"x-cmg-auth-method", "x-cmg-client-cert-thumbprint", "x-cmg-client-cert-subject",
                 "x-cmg-client-cert-issuer", "x-cmg-client-address"}
TOKEN_IDENTITY = {"x-cmg-auth-method", "x-cmg-token-subject", "x-cmg-token-type",
                  "x-cmg-device-id", "x-cmg-client-address"}

# What a client sends that must never reach the management point as it was sent.
SPOOFED = [("X-CMG-Auth-Method", "spoof-1"), ("x-cmg-client-cert-thumbprint", "spoof-2"),
           ("X_CMG_Auth_Method", "spoof-3"), ("X_Cmg_Token_Subject", "spoof-4"),
           ("X-Cmg-Client-Address", "spoof-5"), ("X-CMG-Device-Id", "spoof-6"),
           ("cmg-role-id", "1")]

# Kept: ConfigMgr's own request headers, a range and a custom one.
KEPT = [("Range", "bytes=0-99"),
        ("CCMClientID", "GUID:6b1e2b0a-8c55-4f5e-9a8f-1d2c3b4a5968"),
        ("CCMClientIDSignature", "0A1B2C3D4E5F" * 8),
        ("CCMClientTimestamp", "2026-11-27T10:00:00Z"),
        ("CCMClientTimestampsSignature", "F0E1D2C3B4A5" * 8),
        ("X-Custom-Header", 'a "quoted" \\ value; with, commas')]

# Hop-by-hop: Connection and what it names, Keep-Alive, Proxy-Connection, TE, Upgrade.
HOP = [("Connection", "keep-alive, X-Hop-Named"), ("X-Hop-Named", "hop-secret"),
       ("Keep-Alive", "timeout=5, max=100"), ("Proxy-Connection", "keep-alive"),
       ("TE", "trailers"), ("Upgrade", "h2c")]
HOP_NAMES = {"x-hop-named", "keep-alive", "proxy-connection", "te", "upgrade"}


def norm(name):
    """A header name as the gateway compares X-CMG-* names: lower case, '_' as '-'."""
    return name.lower().replace("_", "-")


class Echo:
    """mpsim's /echo answer: method, path, the headers as received (in order), body digest.
    From a Response, or from the JSON text (curl's output)."""

    def __init__(self, resp):
        if isinstance(resp, (str, bytes)):
            body = resp
        elif resp.status != 200:
            raise AssertionError(f"/echo answered {resp.status} {resp.reason}: {resp.body[:300]!r}")
        else:
            body = resp.body
        self.raw = json.loads(body)
        self.method = self.raw["method"]
        self.path = self.raw["path"]
        self.headers = [tuple(h) for h in self.raw["headers"]]
        self.body_length = self.raw["body_length"]
        self.body_sha256 = self.raw["body_sha256"]

    def values(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self):
        return {k.lower() for k, _ in self.headers}

    def identity_names(self):
        return {norm(k) for k, _ in self.headers if norm(k).startswith("x-cmg-")}


def send_chunked(c, method, url, headers, body, sizes=(1, 4095, 65536, 300000, 7)):
    """Sends a request with a chunked body in chunks of the given sizes (cycled)."""
    c.send(ct.req(method, url, list(headers) + [("Transfer-Encoding", "chunked")]))
    off, i = 0, 0
    while off < len(body):
        n = min(sizes[i % len(sizes)], len(body) - off)
        c.send(b"%x\r\n" % n + body[off:off + n] + b"\r\n")
        off, i = off + n, i + 1
    c.send(b"0\r\n\r\n")


def call(gw, method, url, headers=(), body=b"", who="client-valid", chunked=False, timeout=30):
    """One request on its own TLS connection; returns (Response, client's local port)."""
    with ct.Conn(gw.port, ctx=tk.client_context(who), timeout=timeout) as c:
        port = c.sock.getsockname()[1]
        if chunked:
            send_chunked(c, method, url, headers, body)
        else:
            c.send(ct.req(method, url, list(headers), body))
        return c.read_response(head=(method == "HEAD")), port


def multipart_body(boundary, payload):
    """A CCM_POST body like a client's: a UTF-16 XML message part and a binary part."""
    return (f"--{boundary}\r\ncontent-type: text/plain; charset=UTF-16\r\n\r\n".encode()
            + "<Msg><ID>{00000000-1111-2222-3333-444455556666}</ID></Msg>".encode("utf-16-le")
            + f"\r\n--{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n".encode()
            + payload + f"\r\n--{boundary}--\r\n".encode())


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def gw_sum(gw, name, **labels):
    return gw.metrics().sum(name, **labels)


def cn_sum(cn, name, **labels):
    return cn.metrics().sum(name, **labels)


def stop_all(*procs):
    """Stops what was started (reverse order); returns exit statuses by name."""
    out = {}
    for p in reversed([p for p in procs if p is not None]):
        out[getattr(p, "name", type(p).__name__)] = p.stop()
    return out


def assert_clean_stop(tc, *procs):
    """Stops the processes (SIGTERM, bounded) and fails on any exit status but 0: a crash in
    a gateway, connector or mpsim must not pass silently."""
    bad = {}
    for p in reversed(procs):
        rc = p.stop()
        if rc != 0:
            bad[getattr(p, "name", type(p).__name__)] = (rc, p.stderr()[-1500:])
    tc.assertEqual(bad, {}, "processes did not exit cleanly")


# --------------------------------------------------------------------------------------------

class TestThroughTunnel(unittest.TestCase):
    """One gateway (2 workers), two connectors serving the MP role id (connector A also
    serves SUP_ROLE, whose management point is a closed port) and one mpsim."""

    @classmethod
    def setUpClass(cls):
        cls.sim = cls.gw = cls.cn_a = cls.cn_b = None
        try:
            cls.sim = tk.MpSim(hold="3s", policy_size=5000, quiet=False).start()
            cls.closed_port = ct.free_port()  # nothing listens there
            cls.gw = tk.tunnel_gateway(workers=2, extra={
                "auth": {"site_token_certs": os.path.join(ct.pki(), "token-signing.crt"),
                         "hierarchy_id": HIERARCHY}}, name="gw-shared").start()
            cls.cn_a = tk.Connector([cls.gw.tunnel_port],
                                    {MP: cls.sim.url, SUP: f"http://127.0.0.1:{cls.closed_port}"},
                                    name="cn-a", extra={"connector": FAST_PING})
            cls.cn_b = tk.Connector([cls.gw.tunnel_port], {MP: cls.sim.url}, name="cn-b",
                                    extra={"connector": FAST_PING})
            cls.cn_a.start(wait_tunnels=2)
            cls.cn_b.start(wait_tunnels=2)
            tk.wait_gateway_tunnels(cls.gw, 4, timeout=15)
        except Exception:
            stop_all(cls.sim, cls.gw, cls.cn_a, cls.cn_b)
            raise

    @classmethod
    def tearDownClass(cls):
        rcs = stop_all(cls.sim, cls.gw, cls.cn_a, cls.cn_b)
        bad = {k: v for k, v in rcs.items() if v not in (0, None)}
        if bad:
            raise AssertionError(f"processes exited badly: {bad}\ngateway stderr:\n"
                                 f"{cls.gw.crash_report()}")

    # -- verbs, headers, identity

    def check_identity_cert(self, e, client_port, who="client-valid"):
        thumb, subject, issuer = tk.cert_identity(os.path.join(ct.pki(), f"{who}.crt"))
        self.assertEqual(e.values("x-cmg-auth-method"), ["client-certificate"], e.headers)
        self.assertEqual(e.values("x-cmg-client-cert-thumbprint"), [thumb])
        self.assertEqual(e.values("x-cmg-client-cert-subject"), [subject])
        self.assertEqual(e.values("x-cmg-client-cert-issuer"), [issuer])
        self.assertEqual(e.values("x-cmg-client-address"), [f"127.0.0.1:{client_port}"])
        self.assertEqual(e.identity_names(), CERT_IDENTITY, e.headers)

    def check_no_spoof(self, e):
        for k, v in e.headers:
            self.assertFalse(v.startswith("spoof-"), f"spoofed header reached the MP: {k}: {v}")
        self.assertNotIn("cmg-role-id", e.names())

    def check_kept_and_hop(self, e):
        for k, v in KEPT:
            self.assertEqual(e.values(k), [v], f"{k} not kept exactly: {e.headers}")
        for name in HOP_NAMES:
            self.assertNotIn(name, e.names(), f"hop-by-hop {name} reached the MP: {e.headers}")
        for v in e.values("connection"):  # only the connector's own hop may have one
            self.assertNotRegex(v.lower(), r"x-hop-named|upgrade", e.headers)
        self.assertNotIn("hop-secret", json.dumps(e.raw))

    def test_verbs_end_to_end(self):
        """Each verb arrives exactly, with the path after the role id and the query; kept
        headers kept, hop-by-hop ones dropped, identity set by the gateway, spoofs gone, and
        the body byte for byte."""
        body = bytes(range(256)) * 512 + os.urandom(70001)
        for verb in ("GET", "HEAD", "POST", "PUT", "CCM_POST", "BITS_POST", "PROPFIND"):
            with self.subTest(verb=verb):
                b = b"" if verb in ("GET", "HEAD") else body
                internal = f"/echo/verb/{verb}?q=1&sp=%20x&t={verb.lower()}"
                r, port = call(self.gw, verb, tk.path(MP, internal), KEPT + HOP + SPOOFED, b)
                self.assertEqual(r.status, 200, r.raw_head)
                self.assertEqual(r.header("X-MPSIM-Identity"), "client-certificate")
                if verb == "HEAD":
                    self.assertEqual(r.body, b"")
                    self.assertIsNotNone(r.header("Content-Length"))
                    # no echo body for HEAD: mpsim's log line names the verb it received
                    self.assertTrue(tk.wait_log(self.sim.stderr,
                                                r"c\d+ HEAD /echo/verb/HEAD 200 ", 5),
                                    f"mpsim did not log a HEAD:\n{self.sim.stderr()[-2000:]}")
                    continue
                e = Echo(r)
                self.assertEqual(e.method, verb)
                self.assertEqual(e.path, internal)
                self.check_kept_and_hop(e)
                self.check_identity_cert(e, port)
                self.check_no_spoof(e)
                self.assertEqual(e.body_length, len(b))
                self.assertEqual(e.body_sha256, hashlib.sha256(b).hexdigest())

    def test_site_token_identity(self):
        """A site token on CCM_Proxy_ServerAuth: site-token identity with the token's
        UniqueId, the bearer token passed on, no certificate headers, spoofs removed."""
        token = make_token()
        uid = json.loads(b64url_decode(token.split(".")[1]))["UniqueId"]
        before = cn_sum(self.cn_a, "cmg_connector_requests_with_bearer_total") + \
            cn_sum(self.cn_b, "cmg_connector_requests_with_bearer_total")
        r, port = call(self.gw, "GET", f"/CCM_Proxy_ServerAuth/{MP}/echo/token?x=1",
                       [("Authorization", f"Bearer {token}")] + SPOOFED, who=None)
        e = Echo(r)
        self.assertEqual((e.method, e.path), ("GET", "/echo/token?x=1"))
        self.assertEqual(e.values("x-cmg-auth-method"), ["site-token"], e.headers)
        self.assertEqual(e.values("x-cmg-token-subject"), [uid])
        self.assertEqual(e.values("x-cmg-token-type"), ["Device"])
        self.assertEqual(e.values("x-cmg-device-id"), [uid])
        self.assertEqual(e.values("x-cmg-client-address"), [f"127.0.0.1:{port}"])
        self.assertEqual(e.identity_names(), TOKEN_IDENTITY, e.headers)
        self.assertEqual(e.values("authorization"), [f"Bearer {token}"])
        self.check_no_spoof(e)
        after = cn_sum(self.cn_a, "cmg_connector_requests_with_bearer_total") + \
            cn_sum(self.cn_b, "cmg_connector_requests_with_bearer_total")
        self.assertEqual(after, before + 1)

    # -- bodies

    def test_multipart_ccm_post_exact(self):
        """CCM_POST multipart (3 MiB binary part) to /ccm_system/request, with a length and
        chunked: mpsim's length and SHA-256 of what it received match what was sent."""
        boundary = "aAbBcCdDv1234567890VxXyYzZ"
        body = multipart_body(boundary, os.urandom(3 << 20))
        ctype = f'multipart/mixed; boundary="{boundary}"'
        for chunked in (False, True):
            with self.subTest(chunked=chunked):
                r, _ = call(self.gw, "CCM_POST", tk.path(MP, "/ccm_system/request"),
                            [("Content-Type", ctype)], body, chunked=chunked)
                self.assertEqual(r.status, 200, r.raw_head)
                parts = tk.parse_multipart(r.header("Content-Type"), r.body)
                self.assertEqual(len(parts), 2)
                self.assertIn(f"<ReceivedBodyLength>{len(body)}</ReceivedBodyLength>",
                              parts[0][1].decode())
                self.assertEqual(json.loads(parts[1][1]),
                                 {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    def test_chunked_request_body_with_curl(self):
        """curl -H 'Transfer-Encoding: chunked': the body arrives de-chunked, byte for byte,
        without the client's framing headers."""
        d = ct.mkdtemp("chunked-")
        src = os.path.join(d, "body.bin")
        data = os.urandom((2 << 20) + 12345) + bytes(range(256))
        with open(src, "wb") as f:
            f.write(data)
        for verb in ("POST", "BITS_POST"):
            with self.subTest(verb=verb):
                p = ct.curl(tk.path(MP, "/echo/chunked"), self.gw.port, *tk.cert_args(),
                            "-X", verb, "-H", "Transfer-Encoding: chunked",
                            "-H", "Content-Type: application/octet-stream",
                            "--data-binary", f"@{src}", timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr)
                e = Echo(p.stdout)
                self.assertEqual(e.method, verb)
                self.assertEqual(e.body_length, len(data))
                self.assertEqual(e.body_sha256, hashlib.sha256(data).hexdigest())
                self.assertEqual(e.values("content-length"), [])
                self.assertEqual(len(e.values("transfer-encoding")), 1)  # the connector's own
                self.assertEqual(e.values("content-type"), ["application/octet-stream"])

    # -- MP content

    def test_policy_body_exact(self):
        pid = "{a1b2c3d4-0000-1111-2222-333344445555}/1.00.SHA256:0123abcd"
        r, _ = call(self.gw, "GET", tk.path(MP, "/SMS_MP/.sms_pol?" + pid))
        self.assertEqual(r.status, 200, r.raw_head)
        self.assertEqual(r.header("Content-Type"), "application/octet-stream")
        self.assertEqual(r.header("Content-Length"), "5000")
        self.assertEqual(r.body, tk.policy_body(pid, 5000))
        other, _ = call(self.gw, "GET", tk.path(MP, "/SMS_MP/.sms_pol?other-policy"))
        self.assertEqual(other.body, tk.policy_body("other-policy", 5000))

    def test_mplist(self):
        r, _ = call(self.gw, "GET", tk.path(MP, "/SMS_MP/.sms_aut?MPLIST"))
        self.assertEqual(r.status, 200, r.raw_head)
        self.assertRegex(r.header("Content-Type"), r"^text/xml")
        self.assertRegex(r.body.decode(), r"^<MPList>.*</MPList>$")
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.sim.port, timeout=ct.t(10))
        try:
            c.request("GET", "/SMS_MP/.sms_aut?MPLIST")
            direct = c.getresponse().read()
        finally:
            c.close()
        self.assertEqual(r.body, direct)

    def test_range_download(self):
        r, _ = call(self.gw, "GET", tk.path(MP, "/download/10m"), [("Range", "bytes=1000-1999")])
        self.assertEqual(r.status, 206, r.raw_head)
        self.assertEqual(r.header("Content-Range"), f"bytes 1000-1999/{10 << 20}")
        self.assertEqual(r.body, tk.pattern(1000, 1000))

    def test_keep_alive_sequence(self):
        """Answers with and without bodies keep their framing on one client connection: HEAD
        of 1 GiB (no body follows), 204, a body after them, a POST and a 404."""
        with ct.Conn(self.gw.port, ctx=tk.client_context()) as c:
            c.send(ct.req("HEAD", tk.path(MP, "/download/1g")))
            r = c.read_response(head=True)
            self.assertEqual((r.status, r.header("Content-Length")), (200, str(1 << 30)))
            c.send(ct.req("GET", tk.path(MP, "/status/204")))
            self.assertEqual(c.read_response().status, 204)
            c.send(ct.req("GET", tk.path(MP, "/download/300")))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, tk.pattern(0, 300)))
            c.send(ct.req("POST", tk.path(MP, "/echo/ka"), body=b"x" * 1000))
            self.assertEqual(Echo(c.read_response()).body_length, 1000)
            c.send(ct.req("GET", tk.path(MP, "/nothing-here")))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (404, b"404 Not Found\n"))
            self.assertTrue(c.is_open(), "the connection was closed")

    def test_client_leaving_mid_download_frees_the_stream(self):
        """A client that goes away mid-answer: the stream is reset and the connector stops
        the management point's request (no request left in progress)."""
        def in_progress():
            return sum(cn_sum(c, "cmg_connector_concurrent_requests")
                       for c in (self.cn_a, self.cn_b))
        self.assertEqual(in_progress(), 0)
        c = ct.Conn(self.gw.port, ctx=tk.client_context())
        try:
            c.send(ct.req("GET", tk.path(MP, "/download/1g")))
            c._read_until(b"\r\n\r\n", time.monotonic() + ct.t(10))
            c._read_n(1 << 20, time.monotonic() + ct.t(10))
            self.assertEqual(in_progress(), 1)
        finally:
            c.close()
        freed = ct.wait_until(lambda: in_progress() == 0, ct.t(5))
        self.assertTrue(freed, "the connector still relays the download the client left")

    # -- statuses and failures

    def test_unknown_role_404(self):
        before = gw_sum(self.gw, "cmg_proxy_unknown_role_total")
        r, _ = call(self.gw, "GET", tk.path(UNKNOWN_ROLE, "/echo"))
        self.assertEqual((r.status, r.reason), (404, "Not Found"), r.raw_head)
        self.assertIn(f"no connection point serves role id {UNKNOWN_ROLE}".encode(), r.body)
        self.assertIsNone(r.header("X-MPSIM-Identity"))
        self.assertEqual(gw_sum(self.gw, "cmg_proxy_unknown_role_total"), before + 1)

    def test_upstream_status_relayed(self):
        """The MP's status and reason phrase reach the client unchanged (mpsim says "Status"
        for codes it has no phrase for, so 418 and 599 show whose phrase it is)."""
        cases = [(200, "OK"), (201, "Created"), (302, "Found"), (403, "Forbidden"),
                 (404, "Not Found"), (418, "Status"), (500, "Internal Server Error"),
                 (503, "Service Unavailable"), (599, "Status")]
        for code, reason in cases:
            with self.subTest(code=code):
                r, _ = call(self.gw, "GET", tk.path(MP, f"/status/{code}"))
                self.assertEqual((r.status, r.reason), (code, reason), r.raw_head)
                self.assertEqual(r.body, f"status {code}\n".encode())
                self.assertEqual(r.header("X-MPSIM-Identity"), "client-certificate")
                self.assertIsNone(r.header("Retry-After"))
        r, _ = call(self.gw, "GET", tk.path(MP, "/status/204"))
        self.assertEqual((r.status, r.body), (204, b""), r.raw_head)

    def test_upstream_unreachable_502(self):
        before = cn_sum(self.cn_a, "cmg_connector_failures_total", role_id=SUP)
        r, _ = call(self.gw, "GET", tk.path(SUP, "/echo"))
        self.assertEqual((r.status, r.reason), (502, "CMGConnector_BadGateway"), r.raw_head)
        self.assertEqual(cn_sum(self.cn_a, "cmg_connector_failures_total", role_id=SUP),
                         before + 1)

    # -- two connectors

    def test_load_shared(self):
        """40 requests, each on its own connection: both connectors relay a fair share."""
        before = [cn_sum(c, "cmg_connector_requests_total", role_id=MP)
                  for c in (self.cn_a, self.cn_b)]
        for i in range(40):
            r, _ = call(self.gw, "GET", tk.path(MP, f"/status/200?i={i}"))
            self.assertEqual(r.status, 200)
        got = [cn_sum(c, "cmg_connector_requests_total", role_id=MP) - b
               for c, b in zip((self.cn_a, self.cn_b), before)]
        self.assertEqual(sum(got), 40, got)
        self.assertGreaterEqual(min(got), 10, f"load not shared: A {got[0]}, B {got[1]}")


# --------------------------------------------------------------------------------------------

class TestClientCannotSpeakForTheGateway(unittest.TestCase):
    """A client's request whose internal path is the tunnel's hello path is a request for the
    management point like any other: the connector must not answer it as a hello (that would
    show its configuration and let any client set how many tunnels it opens)."""

    def test_hello_path_is_relayed(self):
        sim = tk.MpSim(hold="3s").start()
        gw = cn = None
        try:
            gw = tk.tunnel_gateway(workers=1, name="gw-hello").start()
            cn = tk.Connector([gw.tunnel_port], {MP: sim.url}, extra={"connector": FAST_PING})
            cn.start(wait_tunnels=1, gateway=gw)
            before = sim.stats()["requests"]
            r, _ = call(gw, "GET", tk.path(MP, "/cmg/v1/hello?instance=0&workers=1&tunnels=9"))
            time.sleep(1.5)  # time for a connector to open the tunnels it was told to
            tunnels = (cn.tunnels(), gw_sum(gw, "cmg_tunnels_open"))
            self.assertNotIn(b'"endpoints"', r.body, "the connector answered a client's "
                             f"request as a hello: {r.raw_head!r} {r.body[:200]!r}; tunnels "
                             f"(connector, gateway) now {tunnels}, were (1, 1)")
            self.assertEqual(r.status, 404, r.raw_head)  # mpsim has no such path
            self.assertEqual(r.header("X-MPSIM-Identity"), "client-certificate")
            self.assertEqual(sim.stats()["requests"], before + 2)  # the request and stats
            self.assertEqual(tunnels, (1, 1), "a client's request changed the tunnel count")
            assert_clean_stop(self, sim, gw, cn)
        finally:
            stop_all(sim, gw, cn)


# --------------------------------------------------------------------------------------------

class TestHandOver(unittest.TestCase):
    """Two workers, one tunnel: a connection that lands on the worker without a tunnel is
    handed to the one with it (through its queue) and its request is answered there."""

    def test_requests_on_the_worker_without_a_tunnel_are_handed_over(self):
        sim = tk.MpSim().start()
        gw = cn = None
        try:
            gw = tk.tunnel_gateway(workers=2, name="gw-handover").start()
            cn = tk.Connector([gw.tunnel_port], {MP: sim.url}, name="cn-one",
                              extra={"connector": dict(FAST_PING, max_tunnels_per_instance="1")})
            cn.start(wait_tunnels=1, gateway=gw)
            self.assertEqual(gw_sum(gw, "cmg_tunnels_open"), 1)
            bodies = set()
            for i in range(20):  # new connections: SO_REUSEPORT spreads them over both workers
                r, _ = call(gw, "GET", tk.path(MP, f"/SMS_MP/.sms_pol?handover{i % 2}"))
                self.assertEqual(r.status, 200, r.raw_head)
                bodies.add(r.body)
            self.assertEqual(len(bodies), 2)
            self.assertGreaterEqual(gw_sum(gw, "cmg_proxy_handovers_total"), 1,
                                    "no connection landed on the worker without a tunnel")
            self.assertEqual(gw_sum(gw, "cmg_proxy_no_tunnel_total"), 0)
            assert_clean_stop(self, sim, gw, cn)
        finally:
            stop_all(sim, gw, cn)


class TestAwaitTunnel(unittest.TestCase):
    """gateway.await_tunnel: the client port stays closed (connections refused, /readyz 503
    awaiting tunnel) until a connection point's hello succeeded, or until the wait ran out."""

    def refused(self, gw):
        try:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=ct.t(5)):
                return False
        except ConnectionRefusedError:
            return True

    def test_clients_wait_for_the_first_tunnel(self):
        sim = tk.MpSim().start()
        gw = cn = None
        try:
            gw = tk.tunnel_gateway(name="gw-await",
                                   extra={"gateway": {"await_tunnel": "1h"}}).start()
            st, _, body = ct.fetch(gw.admin_port, "/readyz")
            self.assertEqual((st, body.strip()), (503, b"awaiting tunnel"))
            self.assertTrue(self.refused(gw), "the client port takes no connection yet")
            cn = tk.Connector([gw.tunnel_port], {MP: sim.url}, name="cn-await",
                              extra={"connector": dict(FAST_PING)})
            cn.start(wait_tunnels=1, gateway=gw)
            ok = ct.wait_until(lambda: ct.fetch(gw.admin_port, "/readyz")[0] == 200, ct.t(20))
            self.assertTrue(ok, gw.log()[-3000:])
            r, _ = call(gw, "GET", tk.path(MP, "/SMS_MP/.sms_pol?await"))
            self.assertEqual(r.status, 200, r.raw_head)
            self.assertRegex(gw.log(), r"taking clients: a connection point's tunnel is up")
            assert_clean_stop(self, sim, gw, cn)
        finally:
            stop_all(sim, gw, cn)

    def test_clients_taken_when_the_wait_runs_out(self):
        gw = tk.tunnel_gateway(name="gw-await-out",
                               extra={"gateway": {"await_tunnel": "300ms"}}).start()
        try:
            ok = ct.wait_until(lambda: ct.fetch(gw.admin_port, "/readyz")[0] == 200, ct.t(20))
            self.assertTrue(ok, gw.log()[-3000:])
            self.assertRegex(gw.log(), r"no tunnel from a connection point within 300 ms")
            r, _ = call(gw, "GET", tk.path(MP, "/SMS_MP/.sms_pol?none"))
            self.assertEqual(r.status, 404, "no connection point: the gateway's own answer")
        finally:
            gw.stop()

    def test_no_wait_without_a_tunnel_listener(self):
        gw = ct.Gateway({"gateway": {"await_tunnel": "1h"}}, name="gw-await-nolistener").start()
        try:
            ok = ct.wait_until(lambda: ct.fetch(gw.admin_port, "/readyz")[0] == 200, ct.t(20))
            self.assertTrue(ok, gw.log()[-3000:])
            self.assertRegex(gw.log(), r"gateway.await_tunnel: no tunnel can come")
        finally:
            gw.stop()


class TestLargeDownload(unittest.TestCase):
    """1 GiB to a client throttled at 50 MB/s (curl --limit-rate): every byte as the pattern
    says, while the gateway's and the connector's RSS stay flat.

    Sized on this 2-core machine: 1 GiB unthrottled took ~7 s, throttled ~21 s, so the issue's
    1 GiB is kept (the test stays well under 60 s)."""

    SIZE = 1 << 30
    RATE = "50m"
    BOUND_KIB = 24 * 1024

    def setUp(self):
        # Under AddressSanitizer freed memory sits in a quarantine (256 MiB by default), which
        # RSS would show as growth: keep it small so that RSS measures what is held.
        self.saved_asan = os.environ.get("ASAN_OPTIONS")
        if ct.SCALE > 1:
            opts = [self.saved_asan] if self.saved_asan else []
            os.environ["ASAN_OPTIONS"] = ":".join(
                opts + ["quarantine_size_mb=4", "thread_local_quarantine_size_kb=64"])

    def tearDown(self):
        if self.saved_asan is None:
            os.environ.pop("ASAN_OPTIONS", None)
        else:
            os.environ["ASAN_OPTIONS"] = self.saved_asan

    def test_1gib_throttled(self):
        sim = tk.MpSim().start()
        gw = cn = None
        try:
            gw = tk.tunnel_gateway(workers=1, name="gw-dl").start()
            cn = tk.Connector([gw.tunnel_port], {MP: sim.url}, extra={"connector": FAST_PING})
            cn.start(wait_tunnels=1, gateway=gw)
            d = ct.mkdtemp("dl-")
            head_path = os.path.join(d, "head.txt")
            cmd = ["curl", "-sS", "--max-time", str(int(ct.t(120))),
                   "--resolve", f"{ct.SERVICE_NAME}:{gw.port}:127.0.0.1",
                   "--cacert", os.path.join(ct.pki(), "root-ca.crt"), *tk.cert_args(),
                   "--limit-rate", self.RATE, "-D", head_path, "-o", "-",
                   f"https://{ct.SERVICE_NAME}:{gw.port}" + tk.path(MP, "/download/1g")]
            start = {"gw": tk.rss_kib(gw.pid), "cn": tk.rss_kib(cn.pid)}
            peak = dict(start)
            done = threading.Event()

            def sample():
                while not done.wait(0.5):
                    for k, proc in (("gw", gw), ("cn", cn)):
                        if proc.running():
                            peak[k] = max(peak[k], tk.rss_kib(proc.pid))
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            expected = tk.pattern(0, (1 << 20) + 256)
            got, first_bad = 0, None
            try:
                while True:
                    chunk = p.stdout.read(1 << 20)
                    if not chunk:
                        break
                    o = got % 256
                    if first_bad is None and chunk != expected[o:o + len(chunk)]:
                        first_bad = got + next(i for i in range(len(chunk))
                                               if chunk[i] != expected[o + i])
                    got += len(chunk)
                rc = p.wait(timeout=ct.t(30))
                err = p.stderr.read().decode(errors="replace")
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
                p.stdout.close()
                p.stderr.close()
                done.set()
                sampler.join(5)
            secs = time.monotonic() - t0
            growth = {k: (peak[k] - start[k]) / 1024 for k in start}
            print(f"\n  1 GiB at {self.RATE}: {secs:.1f} s; RSS growth: gateway "
                  f"{growth['gw']:.1f} MiB (start {start['gw'] / 1024:.1f} MiB), connector "
                  f"{growth['cn']:.1f} MiB (start {start['cn'] / 1024:.1f} MiB)", flush=True)
            with open(head_path) as f:
                head = f.read()
            self.assertEqual(rc, 0, err)
            self.assertRegex(head, r"^HTTP/1\.1 200 ")
            self.assertRegex(head, rf"(?im)^content-length: {self.SIZE}\r?$")
            self.assertEqual(got, self.SIZE)
            self.assertIsNone(first_bad, f"first wrong byte at {first_bad}")
            self.assertGreater(secs, 15, "the client was not throttled")  # 1 GiB / 50 MB/s
            for k in ("gw", "cn"):
                self.assertLess(peak[k] - start[k], self.BOUND_KIB,
                                f"{k} RSS grew by {growth[k]:.1f} MiB")
            assert_clean_stop(self, sim, gw, cn)
        finally:
            stop_all(sim, gw, cn)


# --------------------------------------------------------------------------------------------

class TestHeldNotifications(unittest.TestCase):
    """10,000 held /bgb/ requests (mpsim --hold 3s) over one connector, each on its own
    client TLS connection, all held at once and all answered 200 "notify".

    Measured here: ~17 s to open 10,000 mutually authenticated connections (16 threads, TLS
    1.3 resumption from one ticket), ~4.5 s from the last request sent to the last answer,
    ~23 s in all. The connections are opened first and then all requests sent, so that they
    are really held together (header_timeout is raised to cover the opening)."""

    N = 10000
    THREADS = 16

    def test_10000_held(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        n = min(self.N, limit - 500)  # the gateway, connector and mpsim each hold n sockets
        if n < 1000:
            self.skipTest(f"open-file limit {limit} is too low")
        # the hold covers the time to send every request (longer on a sanitizer build, where
        # the gateway is several times slower), so that they are all held together
        sim = tk.MpSim(hold=f"{int(3 * ct.SCALE)}s").start()
        gw = cn = None
        socks = []
        try:
            gw = tk.tunnel_gateway(workers=2, extra={"http": {"header_timeout": "120s"}},
                                   name="gw-held").start()
            cn = tk.Connector([gw.tunnel_port], {MP: sim.url},
                              extra={"connector": FAST_PING,
                                     "upstream": {"max_connections": n + 100,
                                                  "max_queue": n + 100}})
            cn.start(wait_tunnels=2, gateway=gw)
            ctx = tk.client_context()
            with ct.Conn(gw.port, ctx=ctx) as c:  # a ticket to resume from
                c.send(ct.req("GET", tk.path(MP, "/status/200")))
                self.assertEqual(c.read_response().status, 200)
                session = c.sock.session
            proxied0 = gw_sum(gw, "cmg_proxy_requests_total")

            def open_one(_):
                raw = socket.create_connection(("127.0.0.1", gw.port), timeout=ct.t(20))
                try:
                    return ctx.wrap_socket(raw, server_hostname=ct.SERVICE_NAME, session=session)
                except Exception:
                    raw.close()
                    raise
            t0 = time.monotonic()
            with cf.ThreadPoolExecutor(self.THREADS) as ex:
                futures = [ex.submit(open_one, i) for i in range(n)]
                for f in futures:
                    try:
                        socks.append(f.result(timeout=ct.t(120)))
                    except Exception as e:  # keep going: counted below
                        socks.append(e)
            failed_open = [s for s in socks if isinstance(s, Exception)]
            socks = [s for s in socks if not isinstance(s, Exception)]
            t_open = time.monotonic() - t0
            self.assertEqual(failed_open, [], f"{len(failed_open)} connections failed")
            reused = sum(1 for s in socks if s.session_reused)

            peak = [0]
            sampling = threading.Event()

            def sample():
                while not sampling.wait(0.1):
                    try:
                        peak[0] = max(peak[0], sim.stats()["held"])
                    except OSError:
                        pass
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t1 = time.monotonic()
            for i, s in enumerate(socks):
                s.sendall(ct.req("GET", tk.path(MP, f"/bgb/handler.ashx?n={i}")))
                s.setblocking(False)
            t_sent = time.monotonic()
            sel = selectors.DefaultSelector()
            bufs = {}
            for s in socks:
                sel.register(s, selectors.EVENT_READ)
                bufs[s] = b""
            pending = len(socks)
            deadline = time.monotonic() + ct.t(60)
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.5):
                    s = key.fileobj
                    closed = False
                    try:
                        while True:
                            data = s.recv(65536)
                            if not data:
                                closed = True
                                break
                            bufs[s] += data
                    except (ssl.SSLWantReadError, BlockingIOError):
                        pass
                    except (ssl.SSLError, OSError):
                        closed = True
                    if closed or bufs[s].endswith(b"\r\n\r\nnotify"):
                        sel.unregister(s)
                        pending -= 1
            t_done = time.monotonic()
            sampling.set()
            sampler.join(5)
            sel.close()
            ok = sum(1 for b in bufs.values()
                     if b.startswith(b"HTTP/1.1 200 ") and b.endswith(b"\r\n\r\nnotify"))
            concurrent = cn_sum(cn, "cmg_connector_max_concurrent_requests", role_id=MP)
            print(f"\n  {n} held requests: opened in {t_open:.1f} s ({reused} resumed), sent in "
                  f"{t_sent - t1:.1f} s, answered {t_done - t_sent:.1f} s later, "
                  f"{t_done - t0:.1f} s in all; at once: {concurrent:.0f} at the connector, "
                  f"{peak[0]} held by mpsim; {ok} answered 200 notify", flush=True)
            bad = [b[:120] for b in bufs.values()
                   if not (b.startswith(b"HTTP/1.1 200 ") and b.endswith(b"notify"))][:3]
            self.assertEqual(ok, len(socks), f"{len(socks) - ok} not answered; e.g. {bad}")
            # Held together: the connector had (nearly) all streams open at once; mpsim's own
            # peak also depends on how fast the connector opens n connections to it (~9,300
            # of 10,000 at once seen here on a busy 2-core machine, 10,000 when idle).
            self.assertGreaterEqual(concurrent, 0.95 * n, "the streams were not open together")
            self.assertGreaterEqual(peak[0], 0.75 * n, "the requests were not held together")
            self.assertGreaterEqual(t_done - t_sent, 2.9, "answered before the hold ended")
            self.assertEqual(gw_sum(gw, "cmg_proxy_requests_total") - proxied0, n)
            self.assertEqual(cn_sum(cn, "cmg_connector_failures_total"), 0)
            assert_clean_stop(self, sim, gw, cn)
        finally:
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass
            stop_all(sim, gw, cn)


# --------------------------------------------------------------------------------------------

class TestConnectorKilled(unittest.TestCase):
    """Two connectors serve the role; one is SIGKILLed while 20 held GETs and 10 held
    CCM_POSTs are in flight. No client hangs; every GET is answered 200 (those on the dead
    tunnel are sent again on the other); a CCM_POST whose stream died gets 502
    CMGConnector_BadGateway (it cannot be repeated), the others 200; the gateway counts
    exactly that many retries and failures."""

    def test_sigkill_mid_load(self):
        sim = tk.MpSim(hold="3s").start()
        gw = a = b = None
        try:
            gw = tk.tunnel_gateway(workers=1, name="gw-kill").start()
            a = tk.Connector([gw.tunnel_port], {MP: sim.url}, name="cn-a",
                             extra={"connector": FAST_PING})
            b = tk.Connector([gw.tunnel_port], {MP: sim.url}, name="cn-b",
                             extra={"connector": FAST_PING})
            a.start(wait_tunnels=1)
            b.start(wait_tunnels=1)
            tk.wait_gateway_tunnels(gw, 2, timeout=15)
            retries0 = gw_sum(gw, "cmg_proxy_retries_total")
            failures0 = gw_sum(gw, "cmg_proxy_failures_total")
            results = {}

            def one(key, method, url, body):
                try:
                    r, _ = call(gw, method, url, [("Content-Type", "multipart/mixed")] if body
                                else [], body, timeout=30)
                    results[key] = (r.status, r.reason, r.body, time.monotonic())
                except Exception as e:  # a hang shows as a timeout here
                    results[key] = ("error", repr(e), b"", time.monotonic())
            threads = []
            for i in range(20):
                threads.append(threading.Thread(
                    target=one, args=(("GET", i), "GET", tk.path(MP, f"/bgb/get-{i}"), b"")))
            for i in range(10):
                threads.append(threading.Thread(
                    target=one, args=(("CCM_POST", i), "CCM_POST", tk.path(MP, f"/bgb/post-{i}"),
                                      os.urandom(1024))))
            for th in threads:
                th.start()
            held = ct.wait_until(lambda: sim.stats()["held"] >= 30, ct.t(10))
            self.assertTrue(held, f"not all held: {sim.stats()}")
            on_a = cn_sum(a, "cmg_connector_streams_total")
            on_b = cn_sum(b, "cmg_connector_streams_total")
            self.assertEqual(on_a + on_b, 30)
            self.assertGreater(on_a, 0)
            t_kill = time.monotonic()
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            for th in threads:
                th.join(max(0.1, t_kill + ct.t(20) - time.monotonic()))
            hung = [th for th in threads if th.is_alive()]
            self.assertEqual(hung, [], f"{len(hung)} client(s) still waiting 20 s after the kill")
            late = {k: v[3] - t_kill for k, v in results.items() if v[3] - t_kill > ct.t(10)}
            self.assertEqual(late, {}, "answers later than 10 s after the kill")
            gets = [results[("GET", i)] for i in range(20)]
            posts = [results[("CCM_POST", i)] for i in range(10)]
            self.assertEqual([g[:3] for g in gets if g[:3] != (200, "OK", b"notify")], [],
                             "GETs must succeed (retried on the other tunnel)")
            p502 = [p for p in posts if p[0] == 502]
            for p in posts:
                self.assertIn(p[:3], [(200, "OK", b"notify"),
                                      (502, "CMGConnector_BadGateway",
                                       b"502 CMGConnector_BadGateway\n")], p[:3])
            retries = gw_sum(gw, "cmg_proxy_retries_total") - retries0
            failures = gw_sum(gw, "cmg_proxy_failures_total") - failures0
            print(f"\n  on the killed connector: {on_a:.0f} of 30; retried {retries:.0f} GETs, "
                  f"{len(p502)} CCM_POSTs got 502", flush=True)
            self.assertGreaterEqual(retries, 1)
            self.assertEqual(failures, len(p502))
            self.assertEqual(retries + len(p502), on_a,
                             "every stream of the dead tunnel is either retried or a 502")
            tk.wait_gateway_tunnels(gw, 1, timeout=5)
            self.assertEqual(gw_sum(gw, "cmg_tunnels_open"), 1)
            self.assertGreaterEqual(gw_sum(gw, "cmg_tunnels_lost_total"), 1)
            assert_clean_stop(self, sim, gw, b)
        finally:
            stop_all(sim, gw, a, b)


# --------------------------------------------------------------------------------------------

class TestConnectorRestart(unittest.TestCase):
    """A connector that stops leaves its role id known but unserved: 503 with Retry-After.
    Restarted (8 times, after SIGTERM and after SIGKILL), its tunnels (one per gateway worker)
    are up at the gateway within 2 s of the process starting.

    The connector keeps the default ping_interval (10 s) on purpose: a tunnel whose hello
    reply reaches the gateway in the same socket read as the connector's SETTINGS stays in the
    gateway's HELLO state until the connector's next PING, 10 s later (product bug: the
    tunnel's SSL_CTX reads ahead and libevent's bufferevent_openssl only drains SSL_pending(),
    so a second record already read from the socket waits for more bytes to arrive)."""

    BOUND = 2.0

    def test_503_then_restart(self):
        sim = tk.MpSim(hold="3s").start()
        gw = cn = None
        try:
            gw = tk.tunnel_gateway(workers=2, name="gw-restart").start()
            cn = tk.Connector([gw.tunnel_port], {MP: sim.url}, name="cn-restart")
            times = []
            t0 = time.monotonic()
            cn.start(wait_tunnels=0)
            up = ct.wait_until(lambda: gw_sum(gw, "cmg_tunnels_open") >= 2, ct.t(25),
                               interval=0.02)
            times.append(("first start", round(time.monotonic() - t0, 2)))
            self.assertTrue(up, "tunnels not up 25 s after the first start")
            r, _ = call(gw, "GET", tk.path(MP, "/status/200"))
            self.assertEqual(r.status, 200)

            # Several restarts: the stall below does not happen every time (seen in 1 of 15
            # to 7 of 10 starts, depending on the machine's load and the workers).
            for how in ("SIGTERM", "SIGKILL") * 4:
                if len(times) > 1 and times[-1][1] > self.BOUND:
                    break  # seen once is enough (keeps the module short)
                if how == "SIGTERM":
                    self.assertEqual(cn.stop(), 0)
                else:
                    cn.kill()
                gone = ct.wait_until(lambda: gw_sum(gw, "cmg_tunnels_open") == 0, ct.t(10))
                self.assertTrue(gone, f"the gateway still counts tunnels after {how}")
                before = gw_sum(gw, "cmg_proxy_no_tunnel_total")
                r, _ = call(gw, "GET", tk.path(MP, "/status/200"))
                self.assertEqual((r.status, r.reason), (503, "Service Unavailable"), r.raw_head)
                self.assertEqual(r.header("Retry-After"), "30")
                self.assertIn(f"no connection point serves role id {MP}".encode(), r.body)
                self.assertEqual(gw_sum(gw, "cmg_proxy_no_tunnel_total"), before + 1)

                t0 = time.monotonic()
                cn.start(wait_tunnels=0)
                up = ct.wait_until(lambda: gw_sum(gw, "cmg_tunnels_open") >= 2, ct.t(15),
                                   interval=0.02)
                took = time.monotonic() - t0
                times.append((how, round(took, 2)))
                self.assertTrue(up, f"tunnels not back 15 s after restart ({how})")
                r, _ = call(gw, "GET", tk.path(MP, "/status/200"))
                self.assertEqual(r.status, 200, r.raw_head)
            print(f"\n  tunnels back at the gateway after restart: {times}", flush=True)
            slow = [t for t in times if t[1] > self.BOUND]
            assert_clean_stop(self, sim, gw, cn)
            self.assertEqual(slow, [], f"tunnels back later than {self.BOUND} s: {times}")
        finally:
            stop_all(sim, gw, cn)


# --------------------------------------------------------------------------------------------

class TestRefusedConnectors(unittest.TestCase):
    """Connector certificates the gateway must refuse: one from another PKI (untrusted), the
    dev PKI's revoked one (listed in intermediate.crl, [tunnel] crl_files)."""

    @classmethod
    def setUpClass(cls):
        cls.sim = cls.gw = None
        try:
            cls.sim = tk.MpSim().start()
            cls.gw = tk.tunnel_gateway(workers=1, name="gw-refuse").start()
        except Exception:
            stop_all(cls.sim, cls.gw)
            raise

    @classmethod
    def tearDownClass(cls):
        rcs = stop_all(cls.sim, cls.gw)
        if any(v not in (0, None) for v in rcs.values()):
            raise AssertionError(f"processes exited badly: {rcs}\n{cls.gw.crash_report()}")

    def refused(self, cert, key, cause):
        refused0 = gw_sum(self.gw, "cmg_tunnels_refused_total")
        lines0 = len(re.findall(r"refused", self.gw.log()))
        cn = tk.Connector([self.gw.tunnel_port], {MP: self.sim.url}, cert=cert, key=key,
                          name=f"cn-{cause}", extra={"connector": FAST_PING})
        try:
            cn.start(wait_tunnels=0)
            grew = ct.wait_until(
                lambda: gw_sum(self.gw, "cmg_tunnels_refused_total") > refused0, ct.t(10))
            self.assertTrue(grew, "cmg_tunnels_refused_total did not grow")
            logged = tk.wait_log(self.gw.log,
                                 rf"tunnel \S+ from 127\.0\.0\.1:\d+ refused: .*{cause}", 5)
            self.assertTrue(logged, f"no refusal naming {cause!r}:\n{self.gw.log()[-2000:]}")
            self.assertGreater(len(re.findall(r"refused", self.gw.log())), lines0)
            time.sleep(1)  # several attempts (reconnect 50..500 ms): none may get through
            self.assertTrue(cn.running())
            self.assertEqual(cn.tunnels(), 0)
            self.assertEqual(gw_sum(self.gw, "cmg_tunnels_open"), 0)
            self.assertEqual(gw_sum(self.gw, "cmg_tunnels_total"), 0)
            r, _ = call(self.gw, "GET", tk.path(MP, "/echo"))
            self.assertEqual(r.status, 404, r.raw_head)  # never announced: unknown
        finally:
            cn.stop()

    def test_untrusted_certificate(self):
        other = ct.mkdtemp("other-pki-")
        ct.run([ct.CMGCTL, "pki", "init", other], timeout=60, check=True)
        self.refused(os.path.join(other, "connector.crt"), os.path.join(other, "connector.key"),
                     "untrusted")

    def test_revoked_certificate(self):
        p = ct.pki()
        self.refused(os.path.join(p, "connector-revoked.crt"),
                     os.path.join(p, "connector-revoked.key"), "revoked")


# --------------------------------------------------------------------------------------------

@unittest.skipUnless(os.access(tk.TINYPROXY, os.X_OK), f"no {tk.TINYPROXY}")
class TestThroughProxy(unittest.TestCase):
    """The connector reaches the gateway through an HTTP CONNECT proxy (tinyproxy)."""

    def test_tunnel_through_tinyproxy(self):
        sim = tk.MpSim().start()
        gw = cn = proxy = None
        try:
            gw = tk.tunnel_gateway(workers=1, name="gw-proxy").start()
            proxy = tk.TinyProxy([gw.tunnel_port]).start()
            cn = tk.Connector([gw.tunnel_port], {MP: sim.url}, name="cn-proxy",
                              extra={"connector": dict(FAST_PING, proxy=proxy.url)})
            cn.start(wait_tunnels=1, gateway=gw, timeout=15)
            r, port = call(gw, "POST", tk.path(MP, "/echo/proxied"), body=b"through a proxy")
            e = Echo(r)
            self.assertEqual((e.method, e.path), ("POST", "/echo/proxied"))
            self.assertEqual(e.body_sha256, hashlib.sha256(b"through a proxy").hexdigest())
            self.assertTrue(tk.wait_log(proxy.log,
                                        rf"CONNECT 127\.0\.0\.1:{gw.tunnel_port} HTTP/1\.[01]", 5),
                            f"tinyproxy saw no CONNECT:\n{proxy.log()[-2000:]}")
            # the tunnel runs through the proxy: without it, it is gone
            proxy.stop()
            gone = ct.wait_until(lambda: gw_sum(gw, "cmg_tunnels_open") == 0, ct.t(10))
            self.assertTrue(gone, "the tunnel outlived the proxy it went through")
            assert_clean_stop(self, sim, gw, cn)
        finally:
            stop_all(sim, gw, proxy, cn)


# --------------------------------------------------------------------------------------------

class TestConnectorConfig(unittest.TestCase):
    """cmg-connector -t: exit 1 naming file:line: section.key for a bad value, and the missing
    key when a required one is absent; exit 0 for a good file."""

    def write(self, text):
        d = ct.mkdtemp("cncfg-")
        path = os.path.join(d, "connector.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def base(self, **replace):
        p = ct.pki()
        lines = {"id": "cp1.contoso.test", "site": "PS1", "service_name": ct.SERVICE_NAME,
                 "endpoints": f"{MP} MP http://127.0.0.1:8080"}
        lines.update(replace)
        conn = "".join(f"{k} = {v}\n" for k, v in lines.items() if v is not None)
        return (f"[connector]\n{conn}[tls]\ncert_file = {p}/connector.crt\n"
                f"key_file = {p}/connector.key\ntrusted_certs = {p}/root-ca.crt\n")

    def check(self, text):
        path = self.write(text)
        p = ct.run([tk.CONNECTOR, "-t", "-c", path], timeout=20)
        return path, p.returncode, p.stdout + p.stderr

    def test_good_file(self):
        path, rc, out = self.check(self.base())
        self.assertEqual(rc, 0, out)
        self.assertIn("is valid", out)

    def test_bad_values_name_file_line_key(self):
        # the key under test is line 6 (after [connector] and four lines of base())
        cases = [("reconnect_min", "abc"), ("reconnect_max", "5ms"), ("instances", "17"),
                 ("proxy", "https://127.0.0.1:3128"), ("gateways", "nohostport"),
                 ("max_tunnels_per_instance", "0"), ("bogus_key", "1")]
        for key, value in cases:
            with self.subTest(key=key, value=value):
                path, rc, out = self.check(self.base() .replace(
                    "[tls]", f"{key} = {value}\n[tls]", 1))
                self.assertEqual(rc, 1, out)
                self.assertRegex(out, rf"(?m)^{re.escape(path)}:6: connector\.{key}: ")
                self.assertIn("not started", out)
        path, rc, out = self.check(self.base(endpoints=f"{MP} XX http://127.0.0.1:1"))
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, rf"(?m)^{re.escape(path)}:5: connector\.endpoints: .*MP or SUP")

    def test_missing_keys_named(self):
        for key, extra_check in (("site", "site code is required"),
                                 ("endpoints", "no endpoint"),
                                 ("service_name", "service name is required")):
            with self.subTest(missing=key):
                path, rc, out = self.check(self.base(**{key: None}))
                self.assertEqual(rc, 1, out)
                self.assertRegex(out, rf"(?m)^{re.escape(path)}: connector\.{key}\b")
                self.assertIn(extra_check, out)
        path, rc, out = self.check(self.base().replace(f"key_file = {ct.pki()}/connector.key\n",
                                                       ""))
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, rf"(?m)^{re.escape(path)}: tls\.key_file\b")

    def test_missing_file(self):
        d = ct.mkdtemp("cncfg-")
        path = os.path.join(d, "absent.ini")
        p = ct.run([tk.CONNECTOR, "-t", "-c", path], timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"{path}: cannot open", p.stderr)


if __name__ == "__main__":
    unittest.main()
