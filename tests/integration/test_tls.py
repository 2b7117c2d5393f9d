"""TLS: protocol floor, cipher policy, ALPN, plain HTTP on the TLS port, PFX certificates,
session resumption with shared ticket keys and their rotation."""

import os
import re
import ssl
import time
import unittest

import cmgtest as ct
from cmgtest import SERVICE_NAME, t

METADATA = "/CCM_Proxy_ServerAuth/ServiceMetadata"


def handshakes(gw, version):
    return gw.metrics().sum("cmg_tls_handshakes_total", version=version)


def hs_failures(gw, reason):
    return gw.metrics().sum("cmg_tls_handshake_failures_total", reason=reason)


class TestDefaultPolicy(ct.GatewayTestCase):
    """PEM ECDSA certificate, enforce_tls12 = true (the default)."""

    def curl_version(self, *args):
        r = ct.curl(METADATA, self.gw.port, "-v", "-o", "/dev/null", "-w", "%{http_code}", *args)
        m = re.search(r"SSL connection using (TLSv[\d.]+)", r.stderr)
        return r.returncode, r.stdout.strip(), m.group(1) if m else None, r.stderr

    def test_tls13_with_curl(self):
        before = handshakes(self.gw, "TLSv1.3")
        rc, code, ver, err = self.curl_version("--tlsv1.3")
        self.assertEqual((rc, code, ver), (0, "200", "TLSv1.3"), err[-2000:])
        self.assertGreaterEqual(handshakes(self.gw, "TLSv1.3"), before + 1)

    def test_tls12_with_curl(self):
        before = handshakes(self.gw, "TLSv1.2")
        rc, code, ver, err = self.curl_version("--tlsv1.2", "--tls-max", "1.2")
        self.assertEqual((rc, code, ver), (0, "200", "TLSv1.2"), err[-2000:])
        self.assertGreaterEqual(handshakes(self.gw, "TLSv1.2"), before + 1)

    def test_tls11_and_tls10_refused(self):
        before = hs_failures(self.gw, "protocol_version")
        for proto in ("-tls1_1", "-tls1"):
            with self.subTest(proto=proto):
                r = ct.s_client(self.gw.port, proto, "-cipher", "DEFAULT@SECLEVEL=0")
                self.assertFalse(r.ok, f"{proto} handshake succeeded:\n{r.out[-1500:]}")
        after = self.gw.wait_metric("cmg_tls_handshake_failures_total", before + 2,
                                    reason="protocol_version")
        self.assertGreaterEqual(after, before + 2, "protocol_version failures not counted")

    def test_tls12_cbc_suite_refused(self):
        before = hs_failures(self.gw, "no_shared_cipher")
        r = ct.s_client(self.gw.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
        self.assertFalse(r.ok, f"CBC suite accepted:\n{r.out[-1500:]}")
        r = ct.s_client(self.gw.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384")
        self.assertFalse(r.ok, f"CBC suite accepted:\n{r.out[-1500:]}")
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_tls_handshake_failures_total", before + 2,
                                reason="no_shared_cipher"), before + 2)

    def test_tls12_aead_suites_accepted(self):
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                      "ECDHE-ECDSA-CHACHA20-POLY1305"):
            with self.subTest(suite=suite):
                r = ct.s_client(self.gw.port, "-tls1_2", "-cipher", suite, verify=True)
                self.assertTrue(r.ok, r.out[-1500:])
                self.assertEqual(r.protocol, "TLSv1.2")
                self.assertIn(f"Cipher is {suite}", r.out)

    def test_tls12_negotiates_ecdhe_aead_by_default(self):
        ctx = ct.client_context(max_version=ssl.TLSVersion.TLSv1_2)
        with self.gw.connect(ctx=ctx) as c:
            name, proto, _bits = c.sock.cipher()
            self.assertEqual(proto, "TLSv1.2")
            self.assertRegex(name, r"^ECDHE-(ECDSA|RSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$")

    def test_alpn_selects_http11(self):
        ctx = ct.client_context(alpn=("h2", "http/1.1"))
        with self.gw.connect(ctx=ctx) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            c.send(ct.req("GET", METADATA))
            self.assertEqual(c.read_response().status, 200)
        r = ct.s_client(self.gw.port, "-alpn", "http/1.1")
        self.assertTrue(r.ok, r.out[-1500:])
        self.assertEqual(r.alpn, "http/1.1")

    def test_no_alpn_offered_is_fine(self):
        with self.gw.connect(ctx=ct.client_context(alpn=None)) as c:
            c.send(ct.req("GET", METADATA))
            self.assertEqual(c.read_response().status, 200)

    def test_alpn_without_http11_fails(self):
        before = hs_failures(self.gw, "no_alpn")
        r = ct.s_client(self.gw.port, "-alpn", "h2")
        self.assertFalse(r.ok, f"h2-only ALPN handshake succeeded:\n{r.out[-1500:]}")
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            with self.gw.connect(ctx=ct.client_context(alpn=("h2", "spdy/3"))) as c:
                c.send(ct.req("GET", METADATA))
                c.read_response()  # TLS 1.3: the alert may only show up on the first read
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_tls_handshake_failures_total", before + 2, reason="no_alpn"),
            before + 2)

    def test_plain_http_on_tls_port_gets_400(self):
        before = hs_failures(self.gw, "not_tls")
        with ct.plain_connect(self.gw.port) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {SERVICE_NAME}\r\n\r\n".encode())
            data, closed = ct.recv_until_close(s, t(5))
        self.assertTrue(data.startswith(b"HTTP/1.1 400"), data[:200])
        self.assertTrue(closed, "connection not closed after the plain-HTTP 400")
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_tls_handshake_failures_total", before + 1, reason="not_tls"),
            before + 1)

    def test_certificate_chain_verifies(self):
        # Trusting only the root: the server must send its intermediate (server-chain.pem).
        r = ct.s_client(self.gw.port, verify=True)
        self.assertTrue(r.ok, r.out[-1500:])
        self.assertIn("Verify return code: 0 (ok)", r.out)
        with self.gw.connect() as c:
            self.assertEqual(c.peer_cert_der(), ct.pem_der(os.path.join(ct.pki(), "server.crt")))

    def test_session_resumption_same_instance(self):
        before = self.gw.metrics().sum("cmg_tls_resumptions_total")
        for proto in ("-tls1_2", "-tls1_3"):
            with self.subTest(proto=proto):
                sess = os.path.join(self.gw.dir, f"sess{proto}.pem")
                r1 = ct.s_client(self.gw.port, proto, "-sess_out", sess, "-ign_eof",
                                 send=ct.HTTP_CLOSE_REQ)
                self.assertTrue(r1.ok and not r1.reused, r1.out[-1500:])
                self.assertTrue(os.path.getsize(sess) > 0)
                r2 = ct.s_client(self.gw.port, proto, "-sess_in", sess, "-ign_eof",
                                 send=ct.HTTP_CLOSE_REQ)
                self.assertTrue(r2.reused, f"not resumed:\n{r2.out[-1500:]}")
                self.assertIn("HTTP/1.1 200", r2.out)
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_tls_resumptions_total", before + 2), before + 2)


class TestRsaPfx(ct.GatewayTestCase):
    """RSA certificate from a PFX file with pfx_password."""

    @classmethod
    def config(cls):
        return {"tls": {"cert_file": None, "key_file": None,
                        "pfx_file": os.path.join(ct.pki(), "server-rsa.pfx"),
                        "pfx_password": ct.PFX_PASSWORD}}

    def test_serves_rsa_certificate(self):
        ca = os.path.join(ct.pki(), "ca-chain.pem")
        r = ct.curl(METADATA, self.gw.port, "-o", "/dev/null", "-w", "%{http_code}", cafile=ca)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "200"), r.stderr)
        with self.gw.connect(ctx=ct.client_context(cafile=ca)) as c:
            self.assertEqual(c.peer_cert_der(),
                             ct.pem_der(os.path.join(ct.pki(), "server-rsa.crt")))

    def test_rsa_key_exchange_refused(self):
        for suite in ("AES128-SHA256", "AES128-GCM-SHA256", "AES256-SHA"):
            with self.subTest(suite=suite):
                r = ct.s_client(self.gw.port, "-tls1_2", "-cipher", suite)
                self.assertFalse(r.ok, f"RSA key exchange {suite} accepted:\n{r.out[-1500:]}")

    def test_ecdhe_rsa_cbc_refused(self):
        for suite in ("ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES128-SHA256"):
            with self.subTest(suite=suite):
                r = ct.s_client(self.gw.port, "-tls1_2", "-cipher", suite)
                self.assertFalse(r.ok, f"CBC suite {suite} accepted:\n{r.out[-1500:]}")

    def test_ecdhe_rsa_gcm_accepted(self):
        r = ct.s_client(self.gw.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
        self.assertTrue(r.ok, r.out[-1500:])
        self.assertIn("Cipher is ECDHE-RSA-AES128-GCM-SHA256", r.out)


class TestLegacyClients(ct.GatewayTestCase):
    """enforce_tls12 = false: TLS 1.1 and ECDHE CBC suites for old clients."""

    CONFIG = {"tls": {"enforce_tls12": False}}

    def test_tls11_accepted(self):
        before = handshakes(self.gw, "TLSv1.1")
        r = ct.s_client(self.gw.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-ign_eof",
                        send=ct.HTTP_CLOSE_REQ)
        self.assertTrue(r.ok, f"TLS 1.1 refused with enforce_tls12 = false:\n{r.out[-1500:]}")
        self.assertEqual(r.protocol, "TLSv1.1")
        self.assertIn("HTTP/1.1 200", r.out)
        self.assertGreaterEqual(handshakes(self.gw, "TLSv1.1"), before + 1)

    def test_tls12_ecdhe_cbc_accepted(self):
        r = ct.s_client(self.gw.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA@SECLEVEL=0")
        self.assertTrue(r.ok, f"ECDHE CBC suite refused:\n{r.out[-1500:]}")

    def test_tls13_still_works(self):
        r = ct.s_client(self.gw.port, "-tls1_3", verify=True)
        self.assertTrue(r.ok, r.out[-1500:])
        self.assertEqual(r.protocol, "TLSv1.3")


class TestSharedTicketKeys(unittest.TestCase):
    """Two instances sharing ticket_key_file resume each other's sessions; a third instance
    with per-process keys does not; rotation is picked up without restart."""

    @classmethod
    def setUpClass(cls):
        cls.keydir = ct.mkdtemp("tickets-")
        cls.keyfile = os.path.join(cls.keydir, "tickets.key")
        ct.run([ct.CMGCTL, "tickets", "rotate", cls.keyfile], check=True)
        shared = {"tls": {"ticket_key_file": cls.keyfile, "ticket_key_check_interval": "1s"}}
        cls.a = cls.b = cls.c = None
        try:
            cls.a = ct.Gateway(shared, name="tkA").start()
            cls.b = ct.Gateway(shared, name="tkB").start()
            cls.c = ct.Gateway({"tls": {"ticket_key_check_interval": "1s"}}, name="tkC").start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        bad = []
        for g in (cls.a, cls.b, cls.c):
            if g is not None:
                rc = g.stop()
                if rc not in (0, None):
                    bad.append(f"{g.dir}: status {rc}\n{g.crash_report()}")
        if bad:
            raise AssertionError("gateway(s) exited badly:\n" + "\n".join(bad))

    def new_session(self, gw, proto, name):
        sess = os.path.join(self.keydir, name)
        r = ct.s_client(gw.port, proto, "-sess_out", sess, "-ign_eof", send=ct.HTTP_CLOSE_REQ)
        self.assertTrue(r.ok, r.out[-1500:])
        self.assertIn("HTTP/1.1 200", r.out)
        self.assertTrue(os.path.isfile(sess) and os.path.getsize(sess) > 0,
                        "s_client saved no session")
        return sess

    def resume(self, gw, proto, sess):
        return ct.s_client(gw.port, proto, "-sess_in", sess, "-ign_eof", send=ct.HTTP_CLOSE_REQ)

    def test_1_resume_across_instances(self):
        before = self.b.metrics().sum("cmg_tls_resumptions_total")
        for proto in ("-tls1_2", "-tls1_3"):
            with self.subTest(proto=proto):
                sess = self.new_session(self.a, proto, f"a{proto}.sess")
                r = self.resume(self.b, proto, sess)
                self.assertTrue(r.reused, f"A's session not resumed on B:\n{r.out[-1500:]}")
                self.assertIn("HTTP/1.1 200", r.out)
        self.assertGreaterEqual(
            self.b.wait_metric("cmg_tls_resumptions_total", before + 2), before + 2)

    def test_2_per_process_keys_do_not_cross(self):
        for proto in ("-tls1_2", "-tls1_3"):
            with self.subTest(proto=proto):
                sess = self.new_session(self.a, proto, f"a2{proto}.sess")
                r = self.resume(self.c, proto, sess)
                self.assertTrue(r.ok, r.out[-1500:])
                self.assertFalse(r.reused, "instance without the shared key file resumed A's "
                                           "session")
                own = self.new_session(self.c, proto, f"c{proto}.sess")
                r = self.resume(self.c, proto, own)
                self.assertTrue(r.reused, f"C's own session not resumed:\n{r.out[-1500:]}")

    def test_3_rotation_without_restart(self):
        old = {p: self.new_session(self.a, p, f"old{p}.sess") for p in ("-tls1_2", "-tls1_3")}
        reloads = {g: g.metrics().sum("cmg_config_reloads_total") for g in (self.a, self.b)}
        with open(self.keyfile, "rb") as f:
            before_bytes = f.read()
        time.sleep(1.1)  # a file signature with 1 s mtime granularity must still change
        ct.run([ct.CMGCTL, "tickets", "rotate", self.keyfile], check=True)
        with open(self.keyfile, "rb") as f:
            self.assertNotEqual(f.read(), before_bytes, "cmgctl tickets rotate changed nothing")
        for g in (self.a, self.b):
            got = g.wait_metric("cmg_config_reloads_total", reloads[g] + 1, timeout=10)
            self.assertGreaterEqual(got, reloads[g] + 1,
                                    f"{g.dir}: ticket key file change not reloaded")
        pids = (self.a.pid, self.b.pid)
        for proto, sess in old.items():
            with self.subTest(proto=proto, ticket="old"):
                r = self.resume(self.b, proto, sess)
                self.assertTrue(r.reused, f"ticket from before the rotation not resumed on B:\n"
                                          f"{r.out[-1500:]}")
            with self.subTest(proto=proto, ticket="new"):
                new = self.new_session(self.a, proto, f"new{proto}.sess")
                r = self.resume(self.b, proto, new)
                self.assertTrue(r.reused, f"ticket from after the rotation not resumed on B:\n"
                                          f"{r.out[-1500:]}")
        self.assertTrue(self.a.running() and self.b.running())
        self.assertEqual(pids, (self.a.pid, self.b.pid))


if __name__ == "__main__":
    unittest.main()
