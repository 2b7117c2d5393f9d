"""Client certificates on CCM_Proxy_MutualAuth routes: chain to the configured roots and
intermediates, clientAuth usage, validity, revocation from CRL files; the product's reason
phrases; verdicts in logs and metrics; resumed sessions judged again."""

import os
import re
import unittest

import cmgtest as ct

ROLE = "72057594037927939"
PATH = f"/CCM_Proxy_MutualAuth/{ROLE}/SMS_MP/.sms_aut?MPLIST"


def trust_config(verify_revocation=True, crls=True):
    p = ct.pki()
    auth = {"trusted_certs": f"{p}/root-ca.crt, {p}/intermediate-ca.crt",
            "verify_revocation": "true" if verify_revocation else "false"}
    if crls:
        auth["crl_files"] = f"{p}/intermediate.crl,{p}/root.crl"
    return {"auth": auth}


def status_line(gw, cert=None, key=None, path=PATH):
    """First line of the answer (status and reason phrase), via curl with a client cert."""
    args = ["-i", "-o", "-"]
    if cert:
        args += ["--cert", cert, "--key", key]
    p = ct.curl(path, gw.port, *args)
    first = p.stdout.split(b"\r\n", 1)[0].decode("latin-1") if isinstance(p.stdout, bytes) \
        else p.stdout.split("\r\n", 1)[0]
    return first, p


def pki_file(name):
    return os.path.join(ct.pki(), name)


class TestClientCertificates(ct.GatewayTestCase):
    @classmethod
    def config(cls):
        return trust_config()

    def check(self, who, expect):
        line, _ = status_line(self.gw, pki_file(f"{who}.crt"), pki_file(f"{who}.key"))
        self.assertEqual(line, expect, who)

    def test_valid_certificate_reaches_the_routing_stage(self):
        line, p = status_line(self.gw, pki_file("client-valid.crt"), pki_file("client-valid.key"))
        # accepted: on to routing, where no connection point has announced the role id
        self.assertEqual(line, "HTTP/1.1 404 Not Found")
        out = p.stdout if isinstance(p.stdout, str) else p.stdout.decode()
        self.assertIn("no connection point serves role id", out)
        self.assertIn(ROLE, out)

    def test_revoked_expired_and_server_only_refused(self):
        for who in ("client-revoked", "client-expired", "server"):
            with self.subTest(who=who):
                self.check(who, "HTTP/1.1 403 CMGConnector_Forbidden")

    def test_certificate_from_another_pki_refused(self):
        other = ct.mkdtemp("otherpki-")
        ct.run([ct.CMGCTL, "pki", "init", other], timeout=60, check=True)
        line, _ = status_line(self.gw, os.path.join(other, "client-valid.crt"),
                              os.path.join(other, "client-valid.key"))
        self.assertEqual(line, "HTTP/1.1 403 CMGConnector_Forbidden")
        ct.wait_until(lambda: "issuer not found among the trusted certificates" in self.gw.stderr(),
                      ct.t(5), what="log line naming the missing issuer")

    def test_no_certificate(self):
        line, _ = status_line(self.gw)
        self.assertEqual(line, "HTTP/1.1 403 CMGConnector_Clientcertificaterequired")

    def test_service_metadata_needs_no_certificate(self):
        line, _ = status_line(self.gw, path="/CCM_Proxy_MutualAuth/ServiceMetadata")
        self.assertEqual(line, "HTTP/1.1 200 OK")

    def test_verdicts_are_logged_and_counted(self):
        before = self.gw.metrics().sum("cmg_auth_client_certificates_total", verdict="revoked")
        self.check("client-revoked", "HTTP/1.1 403 CMGConnector_Forbidden")
        self.gw.wait_metric("cmg_auth_client_certificates_total", before + 1, verdict="revoked")
        ct.wait_until(lambda: re.search(r"client certificate refused for role id " + ROLE +
                                        r": revoked: certificate revoked", self.gw.stderr()),
                      ct.t(5), what="refusal log line")

    def test_identity_headers_from_the_client_are_removed(self):
        """X-CMG-* headers are the gateway's: what a client sends of them is dropped (and
        logged) before authentication, whatever their case."""
        line, _ = status_line(self.gw, pki_file("client-valid.crt"), pki_file("client-valid.key"))
        self.assertEqual(line, "HTTP/1.1 404 Not Found")
        self.assertNotIn("X-CMG-* header", self.gw.stderr())
        p = ct.curl(PATH, self.gw.port, "-i", "-o", "-", "--cert", pki_file("client-valid.crt"),
                    "--key", pki_file("client-valid.key"), "-H", "X-CMG-Auth-Method: site-token",
                    "-H", "x-cmg-client-cert-thumbprint: 00", "-H", "X-CMGx: kept")
        self.assertIn("404", p.stdout.split("\r\n", 1)[0])
        ct.wait_until(lambda: re.search(r"removed 2 X-CMG-\* header\(s\) the client sent",
                                        self.gw.stderr()),
                      ct.t(5), what="log line about removed identity headers")
        self.assertRegex(self.gw.stderr(), r"removed 2 X-CMG-\* header\(s\) the client sent")

    def test_resumed_session_is_judged_again(self):
        """A TLS 1.2 session resumed from a ticket carries the certificate; it must be
        judged on the resumed connection too, not waved through."""
        sess = os.path.join(ct.mkdtemp("sess-"), "s.pem")
        request = ct.req("GET", PATH, headers={"Connection": "close"})
        for who, expect in (("client-valid", b" 404 "), ("client-revoked", b" 403 ")):
            with self.subTest(who=who):
                first = ct.s_client(self.gw.port, "-tls1_2", "-cert", pki_file(f"{who}.crt"),
                                    "-key", pki_file(f"{who}.key"), "-sess_out", sess,
                                    "-ign_eof", send=request)
                self.assertIn(expect, first.out.encode() if isinstance(first.out, str)
                              else first.out)
                again = ct.s_client(self.gw.port, "-tls1_2", "-sess_in", sess, "-ign_eof",
                                    send=request)
                text = again.out if isinstance(again.out, str) else again.out.decode("latin-1")
                self.assertIn("Reused", text)
                self.assertIn(expect.decode(), text)


class TestRevocationUnknown(ct.GatewayTestCase):
    """verify_revocation with no CRL for the issuer: refuse (fail closed)."""

    @classmethod
    def config(cls):
        return trust_config(crls=False)

    def test_valid_certificate_without_crl_is_refused(self):
        line, _ = status_line(self.gw, pki_file("client-valid.crt"), pki_file("client-valid.key"))
        self.assertEqual(line, "HTTP/1.1 403 CMGConnector_Forbidden")
        self.gw.wait_metric("cmg_auth_client_certificates_total", 1,
                            verdict="revocation_unknown")


class TestRevocationOff(ct.GatewayTestCase):
    """verify_revocation = false: revoked certificates are not looked up (the product's switch)."""

    @classmethod
    def config(cls):
        return trust_config(verify_revocation=False, crls=False)

    def test_revoked_passes_when_revocation_is_off(self):
        line, _ = status_line(self.gw, pki_file("client-revoked.crt"),
                              pki_file("client-revoked.key"))
        self.assertEqual(line, "HTTP/1.1 404 Not Found")
        line, _ = status_line(self.gw, pki_file("client-expired.crt"),
                              pki_file("client-expired.key"))
        self.assertEqual(line, "HTTP/1.1 403 CMGConnector_Forbidden")


class TestNoTrustConfigured(ct.GatewayTestCase):
    """Without trusted_certs no certificate is asked for, so nobody passes MutualAuth."""

    def test_certificate_not_requested(self):
        line, _ = status_line(self.gw, pki_file("client-valid.crt"), pki_file("client-valid.key"))
        self.assertEqual(line, "HTTP/1.1 403 CMGConnector_Clientcertificaterequired")


class TestTrustConfigErrors(unittest.TestCase):
    def test_file_without_certificates_is_a_config_error(self):
        gw = ct.Gateway()
        junk = os.path.join(gw.dir, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        path = gw.write_config({"auth": {"trusted_certs": junk}})
        p = ct.run([ct.GATEWAY, "-c", path, "-t"], timeout=30)
        err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertRegex(err, re.escape(path) + r":\d+: auth\.trusted_certs: .*holds no certificate")

    def test_intermediate_only_is_a_config_error(self):
        gw = ct.Gateway()
        path = gw.write_config({"auth": {"trusted_certs": pki_file("intermediate-ca.crt")}})
        p = ct.run([ct.GATEWAY, "-c", path, "-t"], timeout=30)
        err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("auth.trusted_certs", err)
        self.assertIn("no root", err)


if __name__ == "__main__":
    unittest.main()


class TestCmgctlCertVerify(unittest.TestCase):
    """`cmgctl cert verify -c gateway.ini CERT`: the gateway's verdict, offline, from the same
    [auth] section and the same checks."""

    @classmethod
    def setUpClass(cls):
        cls.gw = ct.Gateway(trust_config())
        cls.ini = cls.gw.write_config()

    def verify(self, cert, ini=None):
        p = ct.run([ct.CMGCTL, "cert", "verify", "-c", ini or self.ini, cert], timeout=30)
        return p.returncode, p.stdout, p.stderr

    def test_valid_is_accepted_with_its_chain(self):
        rc, out, err = self.verify(pki_file("client-valid.crt"))
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"(?m)^accepted$")
        self.assertRegex(out, r"\[0\] /CN=client-valid")
        self.assertRegex(out, r"\[1\] /CN=CMG Dev Issuing CA")
        self.assertRegex(out, r"\[2\] /CN=CMG Dev Root CA")

    def test_rejections_name_the_cause(self):
        for who, cause in (("client-revoked", "revoked"), ("client-expired", "expired"),
                           ("server", "wrong_usage")):
            with self.subTest(who=who):
                rc, out, err = self.verify(pki_file(f"{who}.crt"))
                self.assertEqual(rc, 1, out + err)
                self.assertRegex(out, rf"(?m)^rejected: {cause}\b")

    def test_same_verdict_as_the_gateway_without_crls(self):
        gw = ct.Gateway(trust_config(crls=False))
        rc, out, err = self.verify(pki_file("client-valid.crt"), gw.write_config())
        self.assertEqual(rc, 1, out + err)
        self.assertIn("rejected: revocation_unknown", out)

    def test_unusable_input(self):
        rc, _, err = self.verify(pki_file("pfx-password.txt"))
        self.assertEqual(rc, 2)
        self.assertIn("cannot read a certificate", err)
        gw = ct.Gateway()
        bad = gw.write_config(text="[auth]\nverify_revocation = maybe\n[gateway]\nworkers = 1\n")
        rc, _, err = self.verify(pki_file("client-valid.crt"), bad)
        self.assertEqual(rc, 2)
        self.assertRegex(err, re.escape(bad) + r":2: auth\.verify_revocation")
