"""Process lifecycle: SIGHUP reload (certificate swap, refused broken reloads) and SIGTERM
draining (in-flight requests finish, idle connections close, drain_timeout)."""

import os
import signal
import time
import unittest

import cmgtest as ct
from cmgtest import req, t

SERVER = "/CCM_Proxy_ServerAuth/ServiceMetadata"


def chain_ctx():
    # server-rsa.crt is a bare leaf: trust the issuing CA too so both certificates verify.
    return ct.client_context(cafile=os.path.join(ct.pki(), "ca-chain.pem"))


class GatewayPerTest(unittest.TestCase):
    CONFIG = {}

    def setUp(self):
        self.gw = ct.Gateway(self.CONFIG, name=self._testMethodName).start()

    def tearDown(self):
        rc = self.gw.stop()
        if rc not in (0, None):
            self.fail(f"gateway exited with {rc}:\n{self.gw.crash_report()}")


class TestReload(GatewayPerTest):
    def test_sighup_swaps_certificate_keeps_open_connections(self):
        ecdsa = ct.pem_der(os.path.join(ct.pki(), "server.crt"))
        rsa = ct.pem_der(os.path.join(ct.pki(), "server-rsa.crt"))
        old = self.gw.connect(ctx=chain_ctx())
        try:
            old.send(req("GET", SERVER))
            self.assertEqual(old.read_response().status, 200)
            self.assertEqual(old.peer_cert_der(), ecdsa)

            self.gw.write_config({"tls": {"cert_file": os.path.join(ct.pki(), "server-rsa.crt"),
                                          "key_file": os.path.join(ct.pki(), "server-rsa.key")}})
            self.gw.signal(signal.SIGHUP)
            self.assertEqual(self.gw.wait_metric("cmg_config_reloads_total", 1), 1,
                             f"reload not counted:\n{self.gw.stderr()[-2000:]}")
            self.assertEqual(self.gw.metrics().sum("cmg_config_reload_failures_total"), 0)

            def new_cert():
                with self.gw.connect(ctx=chain_ctx()) as c:
                    c.send(req("GET", SERVER))
                    self.assertEqual(c.read_response().status, 200)
                    return c.peer_cert_der()
            # Workers take the new snapshot from a queue: allow a moment.
            ct.wait_until(lambda: new_cert() == rsa, t(5))
            self.assertEqual(new_cert(), rsa, "new connections still get the old certificate")

            for _ in range(2):  # the old keep-alive connection keeps working
                old.send(req("GET", SERVER))
                r = old.read_response()
                self.assertEqual(r.status, 200)
                self.assertFalse(r.closes)
        finally:
            old.close()
        self.assertTrue(self.gw.running())

    def test_sighup_broken_config_refused(self):
        ecdsa = ct.pem_der(os.path.join(ct.pki(), "server.crt"))
        with open(self.gw.config_path) as f:
            good = f.read()
        self.gw.write_config(text=good + "\n[http]\nbogus_key = 1\n")
        self.gw.signal(signal.SIGHUP)
        self.assertEqual(self.gw.wait_metric("cmg_config_reload_failures_total", 1), 1,
                         "broken reload not counted as a failure")
        m = self.gw.metrics()
        self.assertEqual(m.sum("cmg_config_reloads_total"), 0)
        ct.wait_until(lambda: "http.bogus_key" in self.gw.stderr(), t(5))
        self.assertIn("http.bogus_key", self.gw.stderr(), "the log does not say why")
        self.assertIn("http.bogus_key", self.gw.log())

        # Still serving, on the old configuration.
        with self.gw.connect(ctx=chain_ctx()) as c:
            c.send(req("GET", SERVER))
            self.assertEqual(c.read_response().status, 200)
            self.assertEqual(c.peer_cert_der(), ecdsa)

        # A certificate that cannot be read is refused as well.
        self.gw.write_config({"tls": {"cert_file": os.path.join(self.gw.dir, "missing.crt")}})
        self.gw.signal(signal.SIGHUP)
        self.assertEqual(self.gw.wait_metric("cmg_config_reload_failures_total", 2), 2)
        self.assertEqual(self.gw.request("GET", SERVER).status, 200)

        # A fixed file reloads.
        self.gw.write_config()
        self.gw.signal(signal.SIGHUP)
        self.assertEqual(self.gw.wait_metric("cmg_config_reloads_total", 1), 1)
        self.assertEqual(self.gw.metrics().sum("cmg_config_reload_failures_total"), 2)
        self.assertTrue(self.gw.running())


class TestDrain(unittest.TestCase):
    def start(self, drain_timeout):
        gw = ct.Gateway({"gateway": {"drain_timeout": drain_timeout}},
                        name=self._testMethodName).start()
        self.addCleanup(gw.kill)
        return gw

    def test_sigterm_finishes_inflight_request(self):
        gw = self.start("20s")
        status, _, text = ct.fetch(gw.admin_port, "/readyz")
        self.assertEqual((status, text.strip()), (200, b"ready"))
        idle = gw.connect()
        busy = gw.connect()
        self.addCleanup(idle.close)
        self.addCleanup(busy.close)
        idle.send(req("GET", SERVER))
        self.assertEqual(idle.read_response().status, 200)
        body = b"0123456789" * 4
        busy.send(req("POST", "/upload", content_length=len(body)) + body[:5])
        time.sleep(0.3)

        start = time.monotonic()
        gw.signal(signal.SIGTERM)

        # Idle keep-alive connections are closed.
        self.assertTrue(idle.wait_closed(t(5)), "idle keep-alive connection not closed")
        # The admin port reports draining.
        ct.wait_until(lambda: ct.fetch(gw.admin_port, "/readyz")[0] == 503, t(5))
        status, _, text = ct.fetch(gw.admin_port, "/readyz")
        self.assertEqual((status, text.strip()), (503, b"draining"))
        self.assertEqual(gw.metrics().sum("cmg_draining"), 1)
        # No new connections are served.
        try:
            with gw.connect(timeout=3) as c:
                c.send(req("GET", SERVER))
                got = c.read_response(timeout=3).status
        except (ct.ConnectionClosed, OSError):
            got = None
        self.assertIsNone(got, "a new connection was served while draining")

        # The slow body is still completed and answered, with Connection: close.
        for i in range(5, len(body), 7):
            busy.send(body[i:i + 7])
            time.sleep(0.1)
        r = busy.read_response()
        self.assertEqual(r.status, 404)
        self.assertTrue(r.closes, r.raw_head)
        self.assertTrue(busy.wait_closed(t(5)))

        rc = gw.wait(t(10))
        elapsed = time.monotonic() - start
        self.assertEqual(rc, 0, f"exit status after drain; stderr:\n{gw.crash_report()}")
        self.assertLess(elapsed, 15, "waited for drain_timeout although nothing was in flight")

    def test_drain_timeout_exits_zero(self):
        gw = self.start("1s")
        busy = gw.connect()
        self.addCleanup(busy.close)
        busy.send(req("POST", "/upload", content_length=100) + b"x" * 10)
        time.sleep(0.3)
        start = time.monotonic()
        gw.signal(signal.SIGTERM)
        rc = gw.wait(1 + t(8))
        elapsed = time.monotonic() - start
        self.assertEqual(rc, 0, f"status {rc} after drain_timeout; stderr:\n"
                                f"{gw.crash_report()}")
        self.assertGreaterEqual(elapsed, 0.9, "did not wait for the in-flight request")
        self.assertTrue(busy.wait_closed(t(3)), "in-flight connection left open after exit")

    def test_sigterm_idle_gateway_exits_promptly(self):
        gw = self.start("30s")
        start = time.monotonic()
        gw.signal(signal.SIGTERM)
        rc = gw.wait(t(10))
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - start, t(10))


if __name__ == "__main__":
    unittest.main()
