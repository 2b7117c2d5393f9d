"""Limits and hostile shapes: header size and count, body size, request smuggling shapes,
slow clients (header, idle and handshake timeouts), max_connections."""

import select
import ssl
import time
import unittest

import cmgtest as ct
from cmgtest import req, t

SERVER = "/CCM_Proxy_ServerAuth/ServiceMetadata"


class TestLimits(ct.GatewayTestCase):
    CONFIG = {
        "http": {"max_header_bytes": "1k", "max_headers": 8, "max_body_bytes": "1k",
                 "header_timeout": "1s", "body_timeout": "1s",
                 "idle_timeout": "2"},  # bare number: seconds
        "tls": {"handshake_timeout": "1s"},
    }

    def rejected(self, data, status, what):
        """Sends data on a new connection: expects `status`, Connection: close, then close."""
        with self.gw.connect() as c:
            c.send(data)
            try:
                r = c.read_response()
            except ct.ConnectionClosed as e:
                self.fail(f"{what}: closed without a response ({e})")
            self.assertEqual(r.status, status, f"{what}: {r.raw_head!r}")
            self.assertTrue(r.closes, f"{what}: no Connection: close in {r.raw_head!r}")
            self.assertTrue(c.wait_closed(t(5)), f"{what}: connection left open")

    def accepted(self, data, what, status=404):
        with self.gw.connect() as c:
            c.send(data)
            r = c.read_response()
            self.assertEqual(r.status, status, f"{what}: {r.raw_head!r}")
            self.assertFalse(r.closes, f"{what}: {r.raw_head!r}")

    # -- header size and count

    def test_headers_within_limit(self):
        self.accepted(req("GET", "/h", headers=[("X-Pad", "p" * 700)]), "~800 header bytes")

    def test_header_bytes_over_limit_431(self):
        self.rejected(req("GET", "/h", headers=[("X-Pad", "p" * 1100)]), 431, "one big header")
        self.rejected(req("GET", "/h", headers=[(f"X-Pad-{i}", "p" * 200) for i in range(6)]),
                      431, "several headers adding up")

    def test_long_request_line_counts_431(self):
        self.rejected(req("GET", "/" + "u" * 1100), 431, "1100-byte request target")

    def test_max_headers(self):
        # Host + 7 = 8 fields: allowed; Host + 8 = 9 fields: too many.
        self.accepted(req("GET", "/h", headers=[(f"X-H{i}", "v") for i in range(7)]),
                      "8 header fields")
        self.rejected(req("GET", "/h", headers=[(f"X-H{i}", "v") for i in range(8)]), 431,
                      "9 header fields")

    # -- body size

    def test_body_at_limit_accepted(self):
        self.accepted(req("POST", "/b", body=b"b" * 1024), "1024-byte body")
        chunked = b"200\r\n" + b"c" * 512 + b"\r\n200\r\n" + b"c" * 512 + b"\r\n0\r\n\r\n"
        self.accepted(req("POST", "/b", headers=[("Transfer-Encoding", "chunked")]) + chunked,
                      "1024 chunked bytes")

    def test_content_length_body_over_limit_413(self):
        self.rejected(req("POST", "/b", body=b"b" * 1025), 413, "1025-byte body")

    def test_chunked_body_over_limit_413(self):
        # The limit is passed by the third chunk; the rest (and the terminator) never comes.
        head = req("POST", "/b", headers=[("Transfer-Encoding", "chunked")])
        with self.gw.connect() as c:
            c.send(head)
            for _ in range(3):
                c.send(b"200\r\n" + b"c" * 512 + b"\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 413, r.raw_head)
            self.assertTrue(r.closes, r.raw_head)
            self.assertTrue(c.wait_closed(t(5)), "connection left open after chunked 413")

    # -- smuggling and malformed shapes

    def test_smuggling_shapes_400(self):
        h = f"Host: {ct.SERVICE_NAME}\r\n"
        shapes = {
            "CL and TE": "POST /s HTTP/1.1\r\n" + h + "Content-Length: 5\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "TE and CL": "POST /s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n"
                         "Content-Length: 5\r\n\r\n0\r\n\r\n",
            "two CLs": "POST /s HTTP/1.1\r\n" + h + "Content-Length: 5\r\n"
                       "Content-Length: 6\r\n\r\nhello!",
            "obs-fold space": "GET /s HTTP/1.1\r\n" + h + "X-A: a\r\n b\r\n\r\n",
            "obs-fold tab": "GET /s HTTP/1.1\r\n" + h + "X-A: a\r\n\tb\r\n\r\n",
            "bare CR": "GET /s HTTP/1.1\r\n" + h + "X-A: a\rb\r\n\r\n",
            "bad chunk size": "POST /s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n"
                              "zz\r\nhello\r\n0\r\n\r\n",
            "TE chunked, gzip": "POST /s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked, gzip"
                                "\r\n\r\n0\r\n\r\n",
            "TE gzip only": "POST /s HTTP/1.1\r\n" + h + "Transfer-Encoding: gzip\r\n\r\nabc",
        }
        for name, raw in shapes.items():
            with self.subTest(shape=name):
                self.rejected(raw.encode("latin-1"), 400, name)

    def test_smuggled_request_not_served(self):
        # CL+TE: whatever the framing, the second "request" must never be answered.
        h = f"Host: {ct.SERVICE_NAME}\r\n"
        inner = f"GET {SERVER} HTTP/1.1\r\n{h}\r\n"
        raw = ("POST /s HTTP/1.1\r\n" + h + f"Content-Length: {len(inner) + 5}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + inner)
        with self.gw.connect() as c:
            c.send(raw.encode())
            data, closed = c.read_until_close(t(5))
        self.assertTrue(data.startswith(b"HTTP/1.1 400"), data[:200])
        self.assertEqual(data.count(b"HTTP/1.1 "), 1, data)
        self.assertTrue(closed)

    # -- timeouts

    def test_slow_headers_408(self):
        before = self.gw.metrics().sum("cmg_http_timeouts_total", kind="header")
        data = req("GET", "/slow", headers=[("X-Slow", "s" * 40)])
        with self.gw.connect() as c:
            start = time.monotonic()
            got, closed = b"", False
            deadline = start + 1 + t(6)
            for i in range(len(data) - 2):  # never completes the header block
                if time.monotonic() > deadline:
                    break
                try:
                    c.send(data[i:i + 1])
                except (OSError, ssl.SSLError):
                    closed = True
                    break
                r, _, _ = select.select([c.sock], [], [], 0.3)
                if r:
                    more, closed = c.read_until_close(0.2)
                    got += more
                    if closed:
                        break
            if not closed:
                more, closed = c.read_until_close(max(0.1, deadline - time.monotonic()))
                got += more
            elapsed = time.monotonic() - start
        self.assertTrue(closed, f"slow client not cut off after {elapsed:.1f}s")
        self.assertTrue(got.startswith(b"HTTP/1.1 408"), got[:200])
        self.assertIn(b"connection: close", got.lower())
        self.assertGreaterEqual(elapsed, 0.8, "cut off before header_timeout")
        self.assertLess(elapsed, 1 + t(4), "cut off too late")
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_http_timeouts_total", before + 1, kind="header"),
            before + 1)

    def test_idle_keepalive_closed_after_idle_timeout(self):
        before = self.gw.metrics().sum("cmg_http_timeouts_total", kind="idle")
        with self.gw.connect() as c:
            c.send(req("GET", SERVER))
            self.assertEqual(c.read_response().status, 200)
            start = time.monotonic()
            self.assertTrue(c.is_open(1.0), "closed within 1 s (idle_timeout = 2 is seconds)")
            closed = c.wait_closed(2 + t(4) - (time.monotonic() - start))
            elapsed = time.monotonic() - start
        self.assertTrue(closed, f"idle connection still open after {elapsed:.1f}s")
        self.assertGreaterEqual(elapsed, 1.8)
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_http_timeouts_total", before + 1, kind="idle"), before + 1)

    def test_stalled_body_cut_off_after_body_timeout(self):
        before = self.gw.metrics().sum("cmg_http_timeouts_total", kind="body")
        with self.gw.connect() as c:
            c.send(req("POST", "/b", content_length=500) + b"x" * 100)
            start = time.monotonic()
            data, closed = c.read_until_close(1 + t(5))
            elapsed = time.monotonic() - start
        self.assertTrue(closed, "stalled body kept past body_timeout")
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_http_timeouts_total", before + 1, kind="body"), before + 1)

    def test_handshake_timeout(self):
        before = self.gw.metrics().sum("cmg_tls_handshake_failures_total", reason="timeout")
        with ct.plain_connect(self.gw.port) as s:
            start = time.monotonic()
            data, closed = ct.recv_until_close(s, 1 + t(5))
            elapsed = time.monotonic() - start
        self.assertTrue(closed, "silent TCP client kept past handshake_timeout")
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_tls_handshake_failures_total", before + 1,
                                reason="timeout"), before + 1)


class TestMaxConnections(ct.GatewayTestCase):
    CONFIG = {"gateway": {"workers": 1, "max_connections": 2}}

    def third_fails(self):
        """A connection beyond the limit: accepted and closed at once, so no response."""
        try:
            with self.gw.connect(timeout=5) as c:
                c.send(req("GET", SERVER))
                r = c.read_response(timeout=5)
                return f"got a response: {r.status}"
        except (ct.ConnectionClosed, ssl.SSLError, OSError):
            return None

    def test_full_worker_refuses(self):
        before = self.gw.metrics().sum("cmg_connections_refused_total")
        c1, c2 = self.gw.connect(), self.gw.connect()
        try:
            for c in (c1, c2):
                c.send(req("GET", SERVER))
                self.assertEqual(c.read_response().status, 200)
            self.assertIsNone(self.third_fails())
            self.assertGreaterEqual(
                self.gw.wait_metric("cmg_connections_refused_total", before + 1), before + 1)
            c1.send(req("GET", SERVER))  # the open ones are unaffected
            self.assertEqual(c1.read_response().status, 200)
            c2.close()
            ct.wait_until(lambda: self.gw.metrics().sum("cmg_connections_open") <= 1, t(5))
            with self.gw.connect() as c3:  # room again
                c3.send(req("GET", SERVER))
                self.assertEqual(c3.read_response().status, 200)
        finally:
            c1.close()
            c2.close()


if __name__ == "__main__":
    unittest.main()


class TestLingerIsBounded(ct.GatewayTestCase):
    """After a final answer the gateway reads (and drops) what the client still sends, for a
    bounded time: a client trickling bytes cannot keep the connection (or a drain) alive."""

    def test_trickling_client_is_closed(self):
        import os
        import socket
        import time
        ctx = ct.client_context(verify=False)
        tcp = socket.create_connection(("127.0.0.1", self.gw.port), timeout=ct.t(5))
        s = ctx.wrap_socket(tcp, server_hostname=ct.SERVICE_NAME)  # takes over tcp's fd
        raw = socket.socket(fileno=os.dup(s.fileno()))  # the same connection, below TLS
        s.sendall(ct.req("GET", "/CCM_Proxy_ServerAuth/ServiceMetadata",
                         headers={"Connection": "close"}))
        data = b""
        while b"</ServiceMetadata>" not in data:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "closed before the answer")
            data += chunk
        # The gateway half-closes at once (its FIN reads as end of file here); only when it
        # closes for good does a byte sent to it come back as a reset, failing a later send.
        start = time.monotonic()
        closed_after = None
        while time.monotonic() - start < ct.t(10):
            try:
                raw.send(b"x")  # below TLS: the gateway only drains raw bytes now
            except (ConnectionResetError, BrokenPipeError, OSError):
                closed_after = time.monotonic() - start
                break
            time.sleep(0.25)
        raw.close()
        s.close()
        self.assertIsNotNone(closed_after, "still open after 10 s of trickling")
        self.assertLess(closed_after, ct.t(5))
