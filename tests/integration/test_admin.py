"""Admin listener (health, readiness, Prometheus metrics) and logging (stderr lines, CMTrace
log file, rollover, what is never logged)."""

import os
import re
import socket
import time
import unittest

import cmgtest as ct
from cmgtest import req, t

SERVER = "/CCM_Proxy_ServerAuth/ServiceMetadata"

PER_WORKER = ["cmg_connections_open", "cmg_connections_total", "cmg_connections_refused_total",
              "cmg_tls_handshakes_total", "cmg_tls_resumptions_total",
              "cmg_tls_handshake_failures_total", "cmg_http_requests_total",
              "cmg_http_received_bytes_total", "cmg_http_sent_bytes_total",
              "cmg_http_timeouts_total"]
GLOBAL = ["cmg_config_reloads_total", "cmg_config_reload_failures_total", "cmg_build_info",
          "cmg_draining"]

STDERR_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARN|ERROR|VERBOSE|DEBUG)"
                         r"\s+\[(main|w\d+|admin)\] .+$")
REQUEST_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  \[w(\d+)\] c(\d+)\.(\d+) "
                          r"(\S+) (\S+) (\d{3}) in=(\d+) out=(\d+) (\d+)ms$")
CMTRACE_LINE = re.compile(r'^<!\[LOG\[(.*)\]LOG\]!><time="\d\d:\d\d:\d\d\.\d{3}[+-]\d{3}" '
                          r'date="\d\d-\d\d-\d{4}" component="CMGService" context="" '
                          r'type="[123]" thread="\d+" file="">$')


class TestAdmin(ct.GatewayTestCase):
    CONFIG = {"gateway": {"workers": 2}}

    def test_healthz(self):
        st, hdrs, body = ct.fetch(self.gw.admin_port, "/healthz")
        self.assertEqual((st, body.strip()), (200, b"ok"))

    def test_readyz(self):
        st, hdrs, body = ct.fetch(self.gw.admin_port, "/readyz")
        self.assertEqual((st, body.strip()), (200, b"ready"))

    def test_metrics_names_and_labels(self):
        st, hdrs, body = ct.fetch(self.gw.admin_port, "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(hdrs.get("content-type", "").startswith("text/plain"), hdrs)
        m = ct.Metrics(body.decode())
        for name in PER_WORKER:
            with self.subTest(metric=name):
                workers = {l.get("worker") for l, _ in m.series(name)}
                if name == "cmg_http_requests_total":
                    # one series per status seen: a worker that answered nothing has none
                    self.assertTrue(workers and workers <= {"0", "1"}, f"{name}: {workers}")
                else:
                    self.assertEqual(workers, {"0", "1"}, f"{name}: worker labels {workers}")
        for name in GLOBAL:
            with self.subTest(metric=name):
                self.assertTrue(m.has(name), f"{name} missing")
        versions = {l["version"] for l, _ in m.series("cmg_tls_handshakes_total")}
        self.assertLessEqual({"TLSv1.2", "TLSv1.3"}, versions)
        reasons = {l["reason"] for l, _ in m.series("cmg_tls_handshake_failures_total")}
        self.assertLessEqual({"protocol_version", "no_shared_cipher", "no_alpn", "not_tls",
                              "timeout", "closed", "other"}, reasons)
        kinds = {l["kind"] for l, _ in m.series("cmg_http_timeouts_total")}
        self.assertEqual(kinds, {"header", "idle", "body", "send"})
        self.assertEqual(m.sum("cmg_draining"), 0)
        self.assertEqual(m.sum("cmg_build_info"), 1)
        self.assertIn('version="0.1.0"', m.text)

    def test_counters_follow_traffic(self):
        m0 = self.gw.metrics()
        n = 4
        sent_body = 0
        for _ in range(n):
            r = self.gw.request("GET", SERVER)
            self.assertEqual(r.status, 200)
            sent_body += len(r.body)
        m1 = self.gw.metrics()

        def d(name, **labels):
            return m1.sum(name, **labels) - m0.sum(name, **labels)
        self.assertEqual(d("cmg_connections_total"), n)
        self.assertEqual(d("cmg_tls_handshakes_total"), n)
        self.assertEqual(d("cmg_http_requests_total", code="200"), n)
        self.assertGreaterEqual(d("cmg_http_received_bytes_total"), n * len(req("GET", SERVER)))
        self.assertGreater(d("cmg_http_sent_bytes_total"), sent_body)
        self.assertEqual(d("cmg_connections_refused_total"), 0)

    def test_connections_open_gauge(self):
        # Connections of earlier tests may still be closing on the server side.
        ct.wait_until(lambda: self.gw.metrics().sum("cmg_connections_open") == 0, t(5))
        base = self.gw.metrics().sum("cmg_connections_open")
        self.assertEqual(base, 0, "connections still open from earlier tests")
        conns = [self.gw.connect() for _ in range(3)]
        try:
            for c in conns:
                c.send(req("GET", SERVER))
                c.read_response()
            self.assertEqual(self.gw.metrics().sum("cmg_connections_open"), base + 3)
        finally:
            for c in conns:
                c.close()
        ct.wait_until(lambda: self.gw.metrics().sum("cmg_connections_open") == base, t(5))
        self.assertEqual(self.gw.metrics().sum("cmg_connections_open"), base)

    def test_admin_is_plain_http_on_loopback(self):
        with ct.plain_connect(self.gw.admin_port) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, closed = ct.recv_until_close(s, t(5))
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])


class TestAdminDisabled(ct.GatewayTestCase):
    CONFIG = {"admin": {"enabled": False}}
    ADMIN = False

    def test_no_admin_listener(self):
        self.assertEqual(self.gw.request("GET", SERVER).status, 200)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.gw.admin_port), timeout=t(5)).close()


class TestLogs(ct.GatewayTestCase):
    def wait_log(self, needle):
        ct.wait_until(lambda: needle in self.gw.stderr() and needle in self.gw.log(), t(5))

    def test_stderr_request_line(self):
        with self.gw.connect() as c:
            c.send(req("GET", "/log-probe-a"))
            self.assertEqual(c.read_response().status, 404)
            c.send(req("GET", SERVER))
            self.assertEqual(c.read_response().status, 200)
        self.wait_log(SERVER)
        lines = self.gw.stderr().splitlines()
        for line in lines:
            self.assertRegex(line, STDERR_LINE)
        reqs = [REQUEST_LINE.match(l) for l in lines]
        reqs = [m for m in reqs if m]
        a = [m for m in reqs if m.group(5) == "/log-probe-a"]
        b = [m for m in reqs if m.group(5) == SERVER]
        self.assertEqual(len(a), 1, "\n".join(lines))
        self.assertEqual(len(b), 1, "\n".join(lines))
        a, b = a[0], b[0]
        self.assertEqual((a.group(4), a.group(6)), ("GET", "404"))
        self.assertEqual((b.group(4), b.group(6)), ("GET", "200"))
        # Same connection id c<worker>.<seq>, worker as in [wN].
        self.assertEqual(a.group(2, 3), b.group(2, 3))
        self.assertEqual(a.group(1), a.group(2))
        self.assertEqual(int(a.group(7)), len(req("GET", "/log-probe-a")))
        self.assertGreater(int(b.group(8)), 200)

    def test_log_file_cmtrace_format(self):
        self.assertEqual(self.gw.request("GET", "/log-probe-b").status, 404)
        self.wait_log("/log-probe-b")
        lines = self.gw.log().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, CMTRACE_LINE)
        hits = [l for l in lines if "/log-probe-b" in l]
        self.assertEqual(len(hits), 1)
        msg = CMTRACE_LINE.match(hits[0]).group(1)
        self.assertRegex(msg, r"^\[w\d+\] c\d+\.\d+ GET /log-probe-b 404 in=\d+ out=\d+ \d+ms$")

    def test_query_string_not_logged(self):
        self.assertEqual(self.gw.request("GET", "/x?secret=abc").status, 404)
        self.assertEqual(self.gw.request("GET", "/log-probe-c").status, 404)
        self.wait_log("/log-probe-c")
        self.assertIn("GET /x 404", self.gw.stderr())
        for text in (self.gw.stderr(), self.gw.log()):
            self.assertNotIn("secret", text)
            self.assertNotIn("abc", text)


class TestRequestLogOff(ct.GatewayTestCase):
    CONFIG = {"log": {"requests": False}}

    def test_requests_not_logged(self):
        self.assertEqual(self.gw.request("GET", "/not-logged").status, 404)
        time.sleep(0.3)
        self.assertNotIn("/not-logged", self.gw.stderr())
        self.assertNotIn("/not-logged", self.gw.log())
        self.assertIn("started", self.gw.stderr())


class TestLogLevelError(ct.GatewayTestCase):
    CONFIG = {"log": {"level": "error"}}

    def test_info_lines_not_logged(self):
        self.assertEqual(self.gw.request("GET", "/level-probe").status, 404)
        time.sleep(0.3)
        err, log = self.gw.stderr(), self.gw.log()
        for text in (err, log):
            self.assertNotIn("/level-probe", text)
        self.assertNotRegex(err, r"(?m)^\S+ INFO ")
        self.assertNotIn('type="1"', log)


class TestLogRollover(ct.GatewayTestCase):
    CONFIG = {"log": {"max_size": 4096}}

    def test_rolls_to_lo_(self):
        path = "/roll/" + "r" * 60
        with self.gw.connect() as c:
            for batch in range(8):
                c.send(b"".join(req("GET", f"{path}/{batch}/{i}") for i in range(10)))
                for _ in range(10):
                    self.assertEqual(c.read_response().status, 404)
        last = f"{path}/7/9"
        ct.wait_until(lambda: last in self.gw.log(), t(5))
        log = self.gw.log_path
        old = log[:-1] + "_"  # CMGService.log -> CMGService.lo_
        self.assertTrue(old.endswith("CMGService.lo_"))
        self.assertTrue(os.path.isfile(log) and os.path.isfile(old),
                        f"after ~80 request lines: {sorted(os.listdir(self.gw.dir))}")
        for f in (log, old):
            with open(f, "rb") as fh:
                data = fh.read()
            longest = max(len(l) + 1 for l in data.splitlines())
            self.assertLessEqual(len(data), 4096 + longest, f"{f}: {len(data)} bytes")
            for line in data.decode().splitlines():
                self.assertRegex(line, CMTRACE_LINE)
        self.assertIn(last, self.gw.log())


if __name__ == "__main__":
    unittest.main()
