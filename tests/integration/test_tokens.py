"""Bearer tokens on CCM_Proxy_ServerAuth routes: site-issued and bulk-registration tokens
signed by the site's token-signing certificate. Tokens are made here with Python's base64 and
the openssl command line (an independent code path from the gateway's verifier)."""

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import unittest
import uuid

import cmgtest as ct

ROLE = "72057594037937981"
HIERARCHY = "6b1e2b0a-8c55-4f5e-9a8f-1d2c3b4a5968"
BLOCKED = "0f0e0d0c-0b0a-0908-0706-050403020100"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def x5t(cert_path):
    der = subprocess.run(["openssl", "x509", "-in", cert_path, "-outform", "DER"],
                         capture_output=True, check=True).stdout
    return b64url(hashlib.sha1(der).digest())


def pki_file(name):
    return os.path.join(ct.pki(), name)


def make_token(claims=None, header=None, key=None, alg="RS256", signature=None):
    now = int(time.time())
    body = {"aud": "urn:sccm:service", "iss": f"urn:sccm:oauth2:{HIERARCHY}",
            "Type": "Device", "UniqueId": str(uuid.uuid4()), "nbf": now - 60,
            "exp": now + 3600}
    body.update(claims or {})
    head = {"typ": "JWT", "alg": alg, "x5t": x5t(pki_file("token-signing.crt"))}
    head.update(header or {})
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(body).encode())}"
    if signature is None:
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign",
                              key or pki_file("token-signing.key")],
                             input=signing_input.encode(), capture_output=True, check=True).stdout
        signature = b64url(sig)
    return f"{signing_input}.{signature}"


class TestSiteTokens(ct.GatewayTestCase):
    @classmethod
    def config(cls):
        d = ct.mkdtemp("blocklist-")
        path = os.path.join(d, "blocked.txt")
        with open(path, "w") as f:
            f.write(f"# blocked bulk tokens\n{BLOCKED.upper()}\n")
        return {"auth": {"site_token_certs": pki_file("token-signing.crt"),
                         "hierarchy_id": HIERARCHY, "bulk_token_blocklist": path}}

    def call(self, token, path=f"/CCM_Proxy_ServerAuth/{ROLE}/SMS_MP/.sms_pol?x"):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.gw.request("GET", path, headers=headers)

    def refused(self, r, cause):
        self.assertEqual((r.status, r.reason), (401, "CMGService_Invalid_Token"), r.raw_head)
        self.assertEqual(r.header("WWW-Authenticate"), 'Bearer error="invalid_token"')
        self.assertGreaterEqual(
            self.gw.wait_metric("cmg_auth_token_rejections_total", 1, cause=cause), 1,
            f"no rejection counted with cause {cause}")

    def test_kept_verdict_follows_the_configuration(self):
        """A session's token is checked once and its verdict kept; a reload that removes the
        signer makes the same token refused at once."""
        gw = ct.Gateway(self.config(), name="gw-tokencache").start()
        try:
            token = make_token()
            path = f"/CCM_Proxy_ServerAuth/{ROLE}/SMS_MP/.sms_pol?x"
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(3):
                self.assertEqual(gw.request("GET", path, headers=headers).status, 404)
            self.assertEqual(gw.metrics().sum("cmg_auth_tokens_accepted_total", kind="site"), 3)
            gw.write_config({"auth": {"site_token_certs": None, "hierarchy_id": None,
                                      "bulk_token_blocklist": None}})
            gw.signal(signal.SIGHUP)
            self.assertEqual(gw.wait_metric("cmg_config_reloads_total", 1), 1, gw.stderr()[-2000:])
            r = gw.request("GET", path, headers=headers)
            self.assertEqual((r.status, r.reason), (401, "CMGService_Invalid_Token"))
        finally:
            gw.stop()

    def test_missing_token(self):
        r = self.call(None)
        self.assertEqual((r.status, r.reason), (401, "CMGService_Invalid_Token"))
        self.assertEqual(r.header("WWW-Authenticate"), "Bearer")

    def test_valid_site_token_reaches_the_routing_stage(self):
        token = make_token()
        r = self.call(token)
        self.assertEqual(r.status, 404, r.raw_head)
        self.assertIn(b"no connection point serves role id", r.body)
        self.assertNotIn(token.split(".")[2], self.gw.stderr() + self.gw.log(),
                         "a token must never be logged")

    def test_expired(self):
        now = int(time.time())
        self.refused(self.call(make_token({"nbf": now - 7200, "exp": now - 600})), "expired")

    def test_wrong_hierarchy(self):
        self.refused(self.call(make_token({"iss": "urn:sccm:oauth2:" + str(uuid.uuid4())})),
                     "bad_issuer")

    def test_wrong_audience(self):
        self.refused(self.call(make_token({"aud": "https://ConfigMgrService"})), "bad_audience")

    def test_signed_by_another_key(self):
        self.refused(self.call(make_token(key=pki_file("server-rsa.key"))), "bad_signature")

    def test_unknown_signer(self):
        self.refused(self.call(make_token(header={"x5t": b64url(b"x" * 20)})), "unknown_kid")

    def test_alg_none_and_hs256(self):
        self.refused(self.call(make_token(alg="none", signature="")), "unsupported_alg")
        self.refused(self.call(make_token(alg="HS256", signature=b64url(b"y" * 32))),
                     "unsupported_alg")

    def test_tampered_payload(self):
        token = make_token()
        head, _, sig = token.split(".")
        forged = json.dumps({"aud": "urn:sccm:service", "iss": f"urn:sccm:oauth2:{HIERARCHY}",
                             "Type": "Device", "UniqueId": "x", "nbf": 0, "exp": 4102444800})
        self.refused(self.call(f"{head}.{b64url(forged.encode())}.{sig}"), "bad_signature")

    def test_bulk_token_on_registration_endpoints_only(self):
        now = int(time.time())
        bulk = make_token({"Type": "BulkRegistration", "nbf": now - 60, "exp": now + 3 * 86400})
        r = self.call(bulk, f"/CCM_Proxy_ServerAuth/{ROLE}/CCM_STS")
        self.assertEqual(r.status, 404, r.raw_head)
        self.gw.wait_metric("cmg_auth_tokens_accepted_total", 1, kind="bulk")
        self.refused(self.call(bulk), "wrong_endpoint")

    def test_bulk_token_blocked_or_too_long(self):
        now = int(time.time())
        blocked = make_token({"Type": "BulkRegistration", "UniqueId": BLOCKED})
        self.refused(self.call(blocked, f"/CCM_Proxy_ServerAuth/{ROLE}/CCM_STS"), "blocked")
        long_lived = make_token({"Type": "BulkRegistration", "nbf": now - 60,
                                 "exp": now + 8 * 86400})
        self.refused(self.call(long_lived, f"/CCM_Proxy_ServerAuth/{ROLE}/CCM_STS"),
                     "lifetime_too_long")


class TestCmgctlTokens(ct.GatewayTestCase):
    """`cmgctl token issue` makes tokens the gateway accepts; `cmgctl token verify` gives the
    gateway's verdict offline from the same [auth] section."""

    @classmethod
    def config(cls):
        return {"auth": {"site_token_certs": pki_file("token-signing.crt"),
                         "hierarchy_id": HIERARCHY}}

    def issue(self, kind, *extra):
        p = ct.run([ct.CMGCTL, "token", "issue", kind, "--key", pki_file("token-signing.key"),
                    "--cert", pki_file("token-signing.crt"), "--hierarchy", HIERARCHY, *extra],
                   timeout=30)
        return p.returncode, p.stdout.strip(), p.stderr

    def verify(self, token, *extra):
        p = ct.run([ct.CMGCTL, "token", "verify", "-c", self.gw.config_path, "-", *extra],
                   input=token.encode(), timeout=30)
        return p.returncode, p.stdout, p.stderr

    def test_issued_site_token_is_accepted_by_the_gateway(self):
        rc, token, err = self.issue("site")
        self.assertEqual(rc, 0, err)
        r = self.gw.request("GET", f"/CCM_Proxy_ServerAuth/{ROLE}/SMS_MP/x",
                            headers={"Authorization": f"Bearer {token}"})
        self.assertEqual(r.status, 404, r.raw_head)
        rc, out, _ = self.verify(token)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r'"Type": "Device"')
        self.assertRegex(out, r"(?m)^accepted$")

    def test_bulk_token_rules_offline(self):
        rc, token, err = self.issue("bulk")
        self.assertEqual(rc, 0, err)
        rc, out, _ = self.verify(token, "--path", "/SMS_MP/.sms_aut")
        self.assertEqual((rc, out.strip().splitlines()[-1]), (1, "rejected: wrong_endpoint"))
        rc, out, _ = self.verify(token, "--path", "/CCM_STS")
        self.assertEqual(rc, 0, out)
        rc, _, err = self.issue("bulk", "--lifetime", "8d")
        self.assertEqual(rc, 2)
        self.assertIn("at most 7 days", err)

    def test_foreign_and_broken_tokens(self):
        rc, out, _ = self.verify(make_token(key=pki_file("server-rsa.key")))
        self.assertEqual((rc, out.strip().splitlines()[-1]), (1, "rejected: bad_signature"))
        rc, out, _ = self.verify("not.a.token")
        self.assertEqual((rc, out.strip()), (1, "rejected: malformed"))
        p = ct.run([ct.CMGCTL, "token", "verify", "-c",
                    os.path.join(self.gw.dir, "missing.ini"), "x"], timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("cannot open", p.stderr)


class TestNoSiteSigner(ct.GatewayTestCase):
    """Without site_token_certs (and before Entra keys are fetched) every token is refused."""

    def test_token_refused(self):
        r = self.gw.request("GET", f"/CCM_Proxy_ServerAuth/{ROLE}/CCM_STS",
                            headers={"Authorization": f"Bearer {make_token()}"})
        self.assertEqual((r.status, r.reason), (401, "CMGService_Invalid_Token"))
        ct.wait_until(lambda: re.search(r"bearer token refused .*unknown_kid", self.gw.stderr()),
                      ct.t(5), what="refusal log line")


if __name__ == "__main__":
    unittest.main()
