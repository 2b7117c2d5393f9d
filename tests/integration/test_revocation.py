"""CRLs fetched from the certificates' CRL distribution points ([auth] crl_fetch): the issuing
CAs' CDPs at start, a client certificate's CDP when it is first seen (the request waits for the
fetch), delta CRLs (Freshest CRL), the cache_dir across a restart, crl_grace, crl_fail_open,
connections closed when a refreshed CRL revokes their certificate, the CRL metrics, and
`cmgctl cert verify` from the same sources.

The test PKI (root, issuing CA, client certificates whose CDPs point at a loopback HTTP server
run by this process) and its CRLs are made once with the openssl command line; the gateway's
own server certificate is the dev PKI's. Tests that change what the CRL server serves (or stop
it) put it back when they end."""

import base64
import hashlib
import http.server
import os
import re
import threading
import unittest
from datetime import datetime, timedelta, timezone

import cmgtest as ct
from cmgtest import req, t

ROLE = "72057594037927939"
PATH = f"/CCM_Proxy_MutualAuth/{ROLE}/SMS_MP/.sms_aut?MPLIST"
OK = "HTTP/1.1 404 Not Found"  # accepted: routed, and no connection point serves the role
FORBIDDEN = "HTTP/1.1 403 CMGConnector_Forbidden"
VERDICTS = "cmg_auth_client_certificates_total"
FETCHES = "cmg_crl_fetches_total"
CLOSED = "cmg_auth_revoked_connections_closed_total"
CLOSE_LOG = "revoked by refreshed CRL"

ROOT_CN = "CMG CDP Test Root CA"
INT_CN = "CMG CDP Test Issuing CA"
BASE_CRL_NUMBER = 0x10  # int.crl; the delta CRL names it as its base
# client certificates: name -> (serial, extension section)
LEAVES = {
    "leaf-valid": (0x1001, "leaf_ext"),
    "leaf-revoked": (0x1002, "leaf_ext"),          # listed in int.crl
    "leaf-rotated": (0x1003, "leaf_ext"),          # listed only in int-rotated (the refresh)
    "leaf-delta-revoked": (0x1004, "delta_leaf_ext"),  # listed only in int-delta.crl
    "leaf-delta-ok": (0x1005, "delta_leaf_ext"),
}
DAY = 86400


# --------------------------------------------------------------------------------------------
# The loopback CRL server

class CrlServer:
    """HTTP server for CRLs on 127.0.0.1:port, in a daemon thread of this process. Files are
    replaced with put(); GETs and HEADs are counted per path; stop() closes the listener (the
    port then refuses connections) and start() binds the same port again. Answers carry an
    ETag and honour If-None-Match (304), and close the connection after each answer."""

    def __init__(self, port):
        self.port = port
        self._files = {}
        self._hits = {}  # (method, path) -> count
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def put(self, path, data):
        with self._lock:
            self._files[path] = data

    def remove(self, path):
        with self._lock:
            self._files.pop(path, None)

    def gets(self, path):
        with self._lock:
            return self._hits.get(("GET", path), 0)

    def hits(self, path):
        """Requests of any method for path."""
        with self._lock:
            return sum(n for (_, p), n in self._hits.items() if p == path)

    def _serve(self, method, path):
        with self._lock:
            self._hits[(method, path)] = self._hits.get((method, path), 0) + 1
            return self._files.get(path)

    @property
    def running(self):
        return self._httpd is not None

    def start(self):
        """Binds and serves (no-op when running); retries a busy port for a bounded time."""
        if self._httpd is not None:
            return
        err = [None]

        def bind():
            try:
                self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                              _CrlHandler)
                return True
            except OSError as e:
                err[0] = e
                return False
        if not ct.wait_until(bind, t(5), interval=0.1):
            raise RuntimeError(f"CRL server cannot bind 127.0.0.1:{self.port}: {err[0]}")
        self._httpd.daemon_threads = True
        self._httpd.crl_server = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self):
        """Closes the listener: connections to the port are refused until start()."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(t(5))
        self._httpd = self._thread = None


class _CrlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cmg-test-crl/1"

    def do_GET(self):
        self._answer(body=True)

    def do_HEAD(self):
        self._answer(body=False)

    def _answer(self, body):
        path = self.path.split("?", 1)[0]
        data = self.server.crl_server._serve(self.command, path)
        self.close_connection = True
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
        inm = self.headers.get("If-None-Match")
        if inm and etag in [v.strip() for v in inm.split(",")]:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Connection", "close")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


# --------------------------------------------------------------------------------------------
# The test PKI (openssl command line)

def _openssl(*args, cwd=None):
    return ct.run(["openssl", *args], timeout=30, cwd=cwd, check=True)


def _asn1_time(delta_seconds):
    """GeneralizedTime string for now + delta_seconds, as openssl ca -crl_*update take it."""
    when = datetime.now(timezone.utc) + timedelta(seconds=delta_seconds)
    return when.strftime("%Y%m%d%H%M%SZ")


def _pem_crl_der(path):
    with open(path) as f:
        text = f.read()
    m = re.search(r"-----BEGIN X509 CRL-----(.*?)-----END X509 CRL-----", text, re.S)
    if not m:
        raise RuntimeError(f"{path}: no PEM CRL")
    return base64.b64decode("".join(m.group(1).split()))


class Pki:
    """Certificates, keys and CRLs of the test PKI in dir; CDPs on the CRL server's port.

    CRLs (crls[name], DER, as served; PEM files <name>.crl.pem beside them):
      root           the root's CRL (root.crl, the issuing CA's CDP), empty
      int            int.crl, CRL number 0x10: leaf-revoked
      int-rotated    the refresh of int.crl, number 0x11: leaf-revoked, leaf-rotated
      int-delta      int-delta.crl, delta CRL number 0x20 on base 0x10: leaf-delta-revoked
      int-stale      an int.crl whose nextUpdate was an hour ago (number 0x0f): leaf-revoked
    leaf-forged claims the issuing CA's name but is signed by another key; its CDP is
    /forged.crl, which must never be fetched."""

    def __init__(self, directory, port):
        self.dir = directory
        self.port = port
        self.crls = {}
        self._build()
        self.root_sha1 = hashlib.sha1(ct.pem_der(self.root_crt)).hexdigest()
        self.int_sha1 = hashlib.sha1(ct.pem_der(self.int_crt)).hexdigest()

    def path(self, name):
        return os.path.join(self.dir, name)

    def crt(self, who):
        return self.path(f"{who}.crt")

    def key(self, who):
        return self.path(f"{who}.key")

    @property
    def root_crt(self):
        return self.crt("root")

    @property
    def int_crt(self):
        return self.crt("int")

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def crl_pem(self, name):
        return self.path(f"{name}.crl.pem")

    def _config(self):
        base = f"http://127.0.0.1:{self.port}"
        leaf = ("basicConstraints = critical,CA:false\n"
                "keyUsage = critical,digitalSignature\n"
                "extendedKeyUsage = clientAuth\n")
        out = [f"""
[req]
distinguished_name = req_dn
[req_dn]

[root_ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[int_ext]
basicConstraints = critical,CA:true,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
crlDistributionPoints = URI:{base}/root.crl

[leaf_ext]
{leaf}subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
crlDistributionPoints = URI:{base}/int.crl

[delta_leaf_ext]
{leaf}subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
crlDistributionPoints = URI:{base}/int.crl
freshestCRL = URI:{base}/int-delta.crl

# no authorityKeyIdentifier: the issuer is found by name, then the signature fails
[forged_leaf_ext]
{leaf}authorityKeyIdentifier = none
crlDistributionPoints = URI:{base}/forged.crl

[crl_ext]
authorityKeyIdentifier = keyid:always

[delta_crl_ext]
authorityKeyIdentifier = keyid:always
2.5.29.27 = critical,DER:02:01:{BASE_CRL_NUMBER:02x}
"""]
        # one `openssl ca` section per CRL: its database (who is revoked) and CRL number
        for name, ca, db, exts in (("root", "root", "root", "crl_ext"),
                                   ("int", "int", "int", "crl_ext"),
                                   ("int-rotated", "int", "int-rotated", "crl_ext"),
                                   ("int-delta", "int", "int-delta", "delta_crl_ext"),
                                   ("int-stale", "int", "int", "crl_ext")):
            out.append(f"""
[ca_{name}]
database = {self.path(db + '.index')}
crlnumber = {self.path(name + '.crlnumber')}
certificate = {self.crt(ca)}
private_key = {self.key(ca)}
default_md = sha256
unique_subject = no
crl_extensions = {exts}
""")
        return "".join(out)

    def _build(self):
        cnf = self.path("openssl.cnf")
        with open(cnf, "w") as f:
            f.write(self._config())
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

        def self_signed(name, cn):
            _openssl("req", "-x509", *ec, "-keyout", self.key(name), "-out", self.crt(name),
                     "-subj", f"/CN={cn}", "-days", "30", "-set_serial", "1", "-config", cnf,
                     "-extensions", "root_ext")

        def issue(name, cn, ca, serial, ext):
            csr = self.path(f"{name}.csr")
            _openssl("req", "-new", *ec, "-keyout", self.key(name), "-out", csr,
                     "-subj", f"/CN={cn}", "-config", cnf)
            _openssl("x509", "-req", "-in", csr, "-CA", self.crt(ca), "-CAkey", self.key(ca),
                     "-set_serial", str(serial), "-days", "30", "-sha256",
                     "-extfile", cnf, "-extensions", ext, "-out", self.crt(name))

        self_signed("root", ROOT_CN)
        issue("int", INT_CN, "root", 0x100, "int_ext")
        for who, (serial, ext) in LEAVES.items():
            issue(who, who, "int", serial, ext)
        self_signed("forger", INT_CN)
        issue("leaf-forged", "leaf-forged", "forger", 0x1006, "forged_leaf_ext")

        for db, revoked in (("root", ()), ("int", ("leaf-revoked",)),
                            ("int-rotated", ("leaf-revoked", "leaf-rotated")),
                            ("int-delta", ("leaf-delta-revoked",))):
            open(self.path(db + ".index"), "w").close()
            for who in revoked:  # openssl ca adds a certificate it does not know, then revokes
                _openssl("ca", "-config", cnf, "-name", f"ca_{db}", "-revoke", self.crt(who))

        # name: (CRL number, lastUpdate, nextUpdate) relative to now
        for name, number, last, nxt in (("root", 0x01, -600, 7 * DAY),
                                        ("int", BASE_CRL_NUMBER, -600, 7 * DAY),
                                        ("int-rotated", BASE_CRL_NUMBER + 1, -300, 7 * DAY),
                                        ("int-delta", 0x20, -300, DAY),
                                        ("int-stale", 0x0f, -2 * DAY, -3600)):
            with open(self.path(name + ".crlnumber"), "w") as f:
                f.write(f"{number:02X}\n")
            _openssl("ca", "-config", cnf, "-name", f"ca_{name}", "-gencrl",
                     "-crl_lastupdate", _asn1_time(last), "-crl_nextupdate", _asn1_time(nxt),
                     "-out", self.crl_pem(name))
            self.crls[name] = _pem_crl_der(self.crl_pem(name))


_FIXTURE = None


def fixture():
    """(Pki, CrlServer) of this process, made once. The server binds its port first, so the
    port written into the CDPs stays ours."""
    global _FIXTURE
    if _FIXTURE is None:
        srv = None
        for _attempt in range(3):
            try:
                srv = CrlServer(ct.free_port())
                srv.start()
                break
            except RuntimeError:
                srv = None
        if srv is None:
            raise RuntimeError("no port for the CRL server")
        try:
            pki = Pki(ct.mkdtemp("cdp-pki-"), srv.port)
        except Exception:
            srv.stop()
            raise
        _FIXTURE = (pki, srv)
        serve_defaults()
    return _FIXTURE


def serve_defaults():
    """The CRL server running and serving root.crl, int.crl and int-delta.crl."""
    pki, srv = _FIXTURE
    srv.put("/root.crl", pki.crls["root"])
    srv.put("/int.crl", pki.crls["int"])
    srv.put("/int-delta.crl", pki.crls["int-delta"])
    srv.start()


def tearDownModule():
    if _FIXTURE is not None:
        _FIXTURE[1].stop()


# --------------------------------------------------------------------------------------------
# Gateways and clients

def auth_config(**extra):
    """[auth] trusting the test PKI only, no crl_files; CRLs come from the CDPs."""
    pki, _ = fixture()
    auth = {"trusted_certs": f"{pki.root_crt}, {pki.int_crt}",
            "verify_revocation": True,
            "crl_fetch": True,
            "fetch_timeout": f"{t(3):g}s",
            "auth_wait": f"{t(8):g}s"}
    auth.update(extra)
    return {"auth": auth}


def started(test, config, name):
    """A gateway started for one test, stopped (and checked) when the test ends."""
    gw = ct.Gateway(config, name=name).start()

    def stop():
        rc = gw.stop()
        if rc not in (0, None):
            raise AssertionError(f"gateway {name} exited with {rc}:\n{gw.crash_report()}")
    test.addCleanup(stop)
    return gw


def wait_tried(gw, url, timeout=10):
    """Bounded wait until the gateway has finished at least one fetch of url (any result):
    the issuing CA's CDP is fetched at start, before any client comes."""
    return gw.wait_metric(FETCHES, 1, timeout=timeout, url=url)


def answer(gw, who=None):
    """First line of the answer to PATH (status and reason phrase), via curl with the client
    certificate of `who`; and the CompletedProcess."""
    pki, _ = fixture()
    args = ["-i", "-o", "-"]
    if who:
        args += ["--cert", pki.crt(who), "--key", pki.key(who)]
    p = ct.curl(PATH, gw.port, *args)
    return p.stdout.split("\r\n", 1)[0], p


def crl_series(metrics, name, url):
    """[(labels, value)] of a per-CRL metric for one URL."""
    return [(l, v) for l, v in metrics.series(name) if l.get("url") == url]


def wait_series(gw, name, url, timeout=5):
    """Bounded wait for a per-CRL series of url; returns it (possibly empty) and the metrics."""
    last = [None, []]

    def check():
        last[0] = gw.metrics()
        last[1] = crl_series(last[0], name, url)
        return bool(last[1])
    ct.wait_until(check, t(timeout), interval=0.1)
    return last[1], last[0]


def files_under(d):
    return [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]


# --------------------------------------------------------------------------------------------
# Tests

class TestCdpFetch(ct.GatewayTestCase):
    """One gateway, CRL server up: fetch at start and on first sight, revoked, delta CRLs,
    no fetch for a forged chain, cmgctl cert verify on the same INI."""

    @classmethod
    def config(cls):
        return auth_config()

    @classmethod
    def setUpClass(cls):
        cls.pki, cls.srv = fixture()
        serve_defaults()
        super().setUpClass()
        wait_tried(cls.gw, cls.pki.url("root.crl"))

    def test_issuing_ca_cdp_fetched_at_start(self):
        url = self.pki.url("root.crl")
        self.assertGreaterEqual(self.srv.gets("/root.crl"), 1, "root.crl never requested")
        self.assertGreaterEqual(self.gw.wait_metric(FETCHES, 1, url=url, result="ok"), 1)
        age, m = wait_series(self.gw, "cmg_crl_age_seconds", url)
        self.assertEqual([l.get("ca") for l, _ in age], [ROOT_CN], m.text)
        self.assertEqual(m.sum("cmg_crl_last_fetch_ok", url=url), 1, m.text)

    def test_valid_leaf_fetches_its_cdp(self):
        line, p = answer(self.gw, "leaf-valid")
        self.assertEqual(line, OK, p.stdout + p.stderr)
        self.assertIn("no connection point serves role id", p.stdout)
        self.assertGreaterEqual(self.srv.gets("/int.crl"), 1, "the leaf's CDP was not fetched")
        url = self.pki.url("int.crl")
        self.assertGreaterEqual(self.gw.wait_metric(FETCHES, 1, url=url, result="ok"), 1)
        age, m = wait_series(self.gw, "cmg_crl_age_seconds", url)
        self.assertEqual(len(age), 1, m.text)
        self.assertEqual(age[0][0].get("ca"), INT_CN)
        self.assertTrue(0 <= age[0][1] < 3600, f"cmg_crl_age_seconds = {age[0][1]}")
        nxt = crl_series(m, "cmg_crl_next_update_seconds", url)
        self.assertEqual(len(nxt), 1, m.text)
        # int.crl's nextUpdate is 7 days after it was made
        self.assertTrue(7 * DAY - 3600 < nxt[0][1] <= 7 * DAY,
                        f"cmg_crl_next_update_seconds = {nxt[0][1]}")
        self.assertEqual(m.sum("cmg_crl_last_fetch_ok", url=url), 1, m.text)

    def test_revoked_leaf_refused(self):
        before = self.gw.metrics().sum(VERDICTS, verdict="revoked")
        line, p = answer(self.gw, "leaf-revoked")
        self.assertEqual(line, FORBIDDEN, p.stdout + p.stderr)
        self.assertGreaterEqual(self.gw.wait_metric(VERDICTS, before + 1, verdict="revoked"),
                                before + 1)

    def test_delta_crl_is_honoured(self):
        # int.crl known first: the delta URL of the next certificate must still be fetched
        self.assertEqual(answer(self.gw, "leaf-valid")[0], OK)
        before = self.gw.metrics().sum(VERDICTS, verdict="revoked")
        line, p = answer(self.gw, "leaf-delta-revoked")
        self.assertEqual(line, FORBIDDEN, "revoked in the delta CRL only, yet accepted")
        self.assertGreaterEqual(self.gw.wait_metric(VERDICTS, before + 1, verdict="revoked"),
                                before + 1)
        self.assertGreaterEqual(self.srv.gets("/int-delta.crl"), 1)
        self.assertEqual(answer(self.gw, "leaf-delta-ok")[0], OK)
        # the delta CRL (newer than its base, listing only what changed) must not take the
        # base CRL's place: OpenSSL does just that without X509_V_FLAG_EXTENDED_CRL_SUPPORT
        line, p = answer(self.gw, "leaf-revoked")
        self.assertEqual(line, FORBIDDEN, "revoked in the base CRL, accepted once the delta "
                         "CRL was known")
        self.assertGreaterEqual(self.gw.wait_metric(FETCHES, 1, url=self.pki.url("int-delta.crl"),
                                                    result="ok"), 1)

    def test_forged_chain_triggers_no_fetch(self):
        """The chain's signatures are checked before a client's CDP is fetched: a certificate
        that merely names a trusted issuer cannot make the gateway fetch URLs."""
        line, p = answer(self.gw, "leaf-forged")
        self.assertEqual(line, FORBIDDEN, p.stdout + p.stderr)
        self.assertEqual(self.srv.hits("/forged.crl"), 0, "fetched the CDP of a forged chain")

    def cert_verify(self, who, ini):
        p = ct.run([ct.CMGCTL, "cert", "verify", "-c", ini, self.pki.crt(who)], timeout=30)
        return p.returncode, p.stdout, p.stderr

    def test_cmgctl_cert_verify_uses_the_same_sources(self):
        rc, out, err = self.cert_verify("leaf-valid", self.gw.config_path)
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"(?m)^accepted$")
        rc, out, err = self.cert_verify("leaf-revoked", self.gw.config_path)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(out, r"(?m)^rejected: revoked\b")

    def test_cmgctl_fetches_cdps_it_lacks(self):
        fresh = ct.Gateway(auth_config(), name="cmgctl")  # not started: its INI, empty cache
        before = self.srv.gets("/int.crl")
        rc, out, err = self.cert_verify("leaf-valid", fresh.write_config())
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"(?m)^accepted$")
        self.assertGreater(self.srv.gets("/int.crl"), before)


class TestRefreshClosesRevokedConnections(unittest.TestCase):
    def setUp(self):
        self.pki, self.srv = fixture()
        serve_defaults()
        self.addCleanup(serve_defaults)
        self.gw = started(self, auth_config(crl_refresh_max="2s"), "rotation")
        wait_tried(self.gw, self.pki.url("root.crl"))

    def client(self, who):
        """A keep-alive TLS connection presenting who's certificate, after one accepted request."""
        ctx = ct.client_context()
        ctx.load_cert_chain(self.pki.crt(who), self.pki.key(who))
        c = self.gw.connect(ctx=ctx)
        self.addCleanup(c.close)
        c.send(req("GET", PATH))
        r = c.read_response()
        self.assertEqual((r.status, r.reason), (404, "Not Found"), who)
        self.assertFalse(r.closes, who)
        return c

    def test_refreshed_crl_closes_connections_of_revoked_certificate(self):
        doomed, keeper = self.client("leaf-rotated"), self.client("leaf-valid")
        self.assertTrue(doomed.is_open())
        closed_before = self.gw.metrics().sum(CLOSED)
        int_url = self.pki.url("int.crl")

        self.srv.put("/int.crl", self.pki.crls["int-rotated"])
        self.assertTrue(doomed.wait_closed(t(10)),
                        "connection with a certificate the refreshed CRL revokes still open")
        self.assertTrue(ct.wait_until(lambda: CLOSE_LOG in self.gw.stderr() + self.gw.log(),
                                      t(5)), f"no log line {CLOSE_LOG!r}")
        self.assertGreaterEqual(self.gw.wait_metric(CLOSED, closed_before + 1), closed_before + 1)
        self.assertGreaterEqual(self.gw.metrics().sum(FETCHES, url=int_url), 2)

        # others stay: the connection of a certificate that is not revoked keeps working
        self.assertTrue(keeper.is_open(), "connection of a valid certificate closed too")
        keeper.send(req("GET", PATH))
        self.assertEqual(keeper.read_response().status, 404)

        before = self.gw.metrics().sum(VERDICTS, verdict="revoked")
        line, p = answer(self.gw, "leaf-rotated")
        self.assertEqual(line, FORBIDDEN, p.stdout + p.stderr)
        self.assertGreaterEqual(self.gw.wait_metric(VERDICTS, before + 1, verdict="revoked"),
                                before + 1)


class TestUnavailableRevocationData(unittest.TestCase):
    """The CRL server down or serving out-of-date CRLs; each test has its own gateways (and so
    its own cache_dir)."""

    def setUp(self):
        self.pki, self.srv = fixture()
        serve_defaults()
        self.addCleanup(serve_defaults)

    def test_crl_server_down_fails_closed_unless_fail_open(self):
        self.srv.stop()
        thumb = self.pki.int_sha1
        colons = ":".join(thumb[i:i + 2] for i in range(0, len(thumb), 2)).upper()
        closed = started(self, auth_config(crl_refresh_max="2s"), "down")
        # The issuing CA fail-open for its certificates; the issuing CA's own certificate has
        # its current CRL from crl_files.
        open_int = started(self, auth_config(crl_fail_open=colons,
                                             crl_files=self.pki.crl_pem("root")), "down-int")
        # Both CAs fail-open, no CRL at all.
        open_both = started(self, auth_config(
            crl_fail_open=f"{self.pki.root_sha1.upper()}, {thumb}"), "down-both")
        # Fail-open names issuing CAs: the issuing CA's own revocation (the root's CRL) is
        # still missing.
        open_int_only = started(self, auth_config(crl_fail_open=thumb), "down-int-only")

        line, p = answer(closed, "leaf-valid")
        self.assertEqual(line, FORBIDDEN, p.stdout + p.stderr)
        self.assertGreaterEqual(closed.wait_metric(VERDICTS, 1, verdict="revocation_unknown"), 1)
        self.assertGreaterEqual(closed.wait_metric(FETCHES, 1, url=self.pki.url("int.crl"),
                                                   result="transport_error"), 1)

        for gw in (open_int, open_both):
            with self.subTest(gateway=os.path.basename(gw.dir)):
                line, p = answer(gw, "leaf-valid")
                self.assertEqual(line, OK, p.stdout + p.stderr)

        line, p = answer(open_int_only, "leaf-valid")
        self.assertEqual(line, FORBIDDEN, "fail-open for the issuing CA waived the root's CRL")
        self.assertGreaterEqual(open_int_only.wait_metric(VERDICTS, 1,
                                                          verdict="revocation_unknown"), 1)

        # the server back: failed fetches are retried after min(30s, crl_refresh_max) = 2s,
        # each CRL on its own schedule (root.crl is needed for the issuing CA itself)
        serve_defaults()
        for name in ("root.crl", "int.crl"):
            self.assertGreaterEqual(closed.wait_metric(FETCHES, 1, url=self.pki.url(name),
                                                       result="ok"), 1, f"{name} not retried")
        line, p = answer(closed, "leaf-valid")
        self.assertEqual(line, OK, p.stdout + p.stderr)

    def test_cached_crls_survive_restart_with_crl_server_down(self):
        gw = started(self, auth_config(cache_dir="crl-cache"), "cache")
        wait_tried(gw, self.pki.url("root.crl"))
        self.assertEqual(answer(gw, "leaf-valid")[0], OK)
        cache = os.path.join(gw.dir, "crl-cache")  # relative to the INI's folder
        ct.wait_until(lambda: len(files_under(cache)) >= 2, t(5))  # root.crl and int.crl

        self.assertEqual(gw.stop(), 0, gw.crash_report())
        self.assertTrue(files_under(cache), f"nothing stored under {cache}")
        self.srv.stop()
        gw.start()
        line, p = answer(gw, "leaf-valid")
        self.assertEqual(line, OK, "cached CRLs not used after a restart: " + p.stdout + p.stderr)
        self.assertEqual(answer(gw, "leaf-revoked")[0], FORBIDDEN)
        self.assertGreaterEqual(gw.wait_metric(VERDICTS, 1, verdict="revoked"), 1)

    def test_out_of_date_crl_refused_unless_within_grace(self):
        self.srv.put("/int.crl", self.pki.crls["int-stale"])  # nextUpdate an hour ago
        strict = started(self, auth_config(), "stale")
        graced = started(self, auth_config(crl_grace="2h"), "grace")
        for gw in (strict, graced):
            wait_tried(gw, self.pki.url("root.crl"))

        line, p = answer(strict, "leaf-valid")
        self.assertEqual(line, FORBIDDEN, p.stdout + p.stderr)
        self.assertGreaterEqual(strict.wait_metric(VERDICTS, 1, verdict="revocation_unknown"), 1)

        line, p = answer(graced, "leaf-valid")
        self.assertEqual(line, OK, p.stdout + p.stderr)
        # a CRL within its grace still revokes
        self.assertEqual(answer(graced, "leaf-revoked")[0], FORBIDDEN)
        self.assertGreaterEqual(graced.wait_metric(VERDICTS, 1, verdict="revoked"), 1)
        nxt, m = wait_series(graced, "cmg_crl_next_update_seconds", self.pki.url("int.crl"))
        self.assertEqual(len(nxt), 1, m.text)
        self.assertTrue(-3600 - 600 < nxt[0][1] < 0, f"cmg_crl_next_update_seconds = {nxt[0][1]}")


if __name__ == "__main__":
    unittest.main()
