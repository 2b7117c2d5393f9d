"""Microsoft Entra ID access tokens on CCM_Proxy_ServerAuth routes, and the AADAuthInfo
endpoint. A loopback stand-in for login.microsoftonline.com (a ThreadingHTTPServer in a daemon
thread of this process) serves each tenant's v2 and v1 OpenID configurations and a JWKS the
tests can replace, and counts the hits per path. Keys are made with openssl; the JWKS carries
n and e read back from `openssl rsa -pubin -modulus` and `openssl pkey -text_pub`; tokens are
made with Python's base64/json and signed with `openssl dgst -sha256 -sign` (an independent
code path from the gateway's verifier)."""

import base64
import collections
import hashlib
import hmac
import http.server
import json
import os
import re
import subprocess
import threading
import time
import unittest
import uuid

import cmgtest as ct

ROLE = "72057594037937981"
ROLE_PATH = f"/CCM_Proxy_ServerAuth/{ROLE}/ccm_system/request"
TENANT = "3c5a7e91-2b4d-4f6a-8c1e-9d0b2a4f6e81"  # onboarded, with a client app id
TENANT2 = "b7e4c2a0-5d1f-4e3b-9a8c-1f2e3d4c5b6a"  # onboarded, without one
FOREIGN = "e1d2c3b4-a596-4788-99aa-bbccddeeff00"  # not onboarded
CLIENT_APP = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
SERVER_APP = "5f4e3d2c-1b0a-4f9e-8d7c-6b5a4f3e2d1c"
APP_ID_URI = "https://ConfigMgrService"  # entra_app_id_uri's default
V2_TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def v1_issuer(tid):
    return f"https://sts.windows.net/{tid}/"


def v2_issuer(tid):
    return f"https://login.microsoftonline.com/{tid}/v2.0"


# --------------------------------------------------------------------------------------------
# Keys and tokens

class Key:
    """An RSA signing key made with openssl, named like Entra's: kid = x5t = the base64url
    SHA-1 thumbprint of a self-signed certificate of the key."""

    def __init__(self, d, name):
        self.path = os.path.join(d, name + ".key")
        self.pub_path = os.path.join(d, name + ".pub.pem")
        cert = os.path.join(d, name + ".crt")
        ct.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", self.path], check=True)
        ct.run(["openssl", "pkey", "-in", self.path, "-pubout", "-out", self.pub_path],
               check=True)
        ct.run(["openssl", "req", "-x509", "-new", "-key", self.path, "-days", "2", "-batch",
                "-subj", "/CN=accounts.accesscontrol.windows.net", "-out", cert], check=True)
        with open(self.pub_path) as f:
            self.pub_pem = f.read()
        self.kid = b64url(hashlib.sha1(ct.pem_der(cert)).digest())
        out = ct.run(["openssl", "rsa", "-pubin", "-in", self.pub_path, "-noout", "-modulus"],
                     check=True).stdout
        n = int(re.search(r"^Modulus=([0-9A-Fa-f]+)$", out, re.M).group(1), 16)
        out = ct.run(["openssl", "pkey", "-pubin", "-in", self.pub_path, "-noout", "-text_pub"],
                     check=True).stdout
        e = int(re.search(r"^Exponent: (\d+)", out, re.M).group(1))
        self.n = b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))
        self.e = b64url(e.to_bytes((e.bit_length() + 7) // 8, "big"))

    def jwk(self, issuer=None, kid=None):
        k = {"kty": "RSA", "use": "sig", "kid": kid or self.kid, "x5t": kid or self.kid,
             "n": self.n, "e": self.e}
        if issuer:
            k["issuer"] = issuer
        return k

    def sign(self, signing_input):
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.path],
                              input=signing_input.encode(), capture_output=True, check=True,
                              timeout=ct.t(30)).stdout


_KEYS = {}


def key(name):
    """One key per name for the whole module (made on first use)."""
    if name not in _KEYS:
        if "dir" not in _KEYS:
            _KEYS["dir"] = ct.mkdtemp("entra-keys-")
        _KEYS[name] = Key(_KEYS["dir"], name)
    return _KEYS[name]


def claims_for(tid, ver):
    """Claims shaped like Entra's access tokens for CMG: v1 for the App ID URI, v2 for the
    server app's client id."""
    now = int(time.time())
    c = {"iat": now - 60, "nbf": now - 60, "exp": now + 3600, "aio": b64url(os.urandom(24)),
         "oid": str(uuid.uuid4()), "sub": b64url(os.urandom(32)), "tid": tid,
         "uti": b64url(os.urandom(16)), "rh": "0.AAAA" + b64url(os.urandom(12)) + ".", "ver": ver}
    if ver == "1.0":
        c.update({"aud": APP_ID_URI, "iss": v1_issuer(tid), "appid": CLIENT_APP,
                  "appidacr": "2", "idp": v1_issuer(tid)})
    else:
        c.update({"aud": SERVER_APP, "iss": v2_issuer(tid), "azp": CLIENT_APP,
                  "azpacr": "2"})
    return c


def make_token(signer=None, tid=TENANT, ver="2.0", claims=None, drop=(), header=None,
               alg="RS256", signature=None):
    """A compact JWS: signer's kid in the header, RS256 by openssl unless a signature is
    given; claims override the defaults, drop removes some."""
    signer = signer or key("k1")
    body = claims_for(tid, ver)
    body.update(claims or {})
    for name in drop:
        body.pop(name, None)
    head = {"typ": "JWT", "alg": alg, "x5t": signer.kid, "kid": signer.kid}
    head.update(header or {})
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(body).encode())}"
    if signature is None:
        signature = b64url(signer.sign(signing_input))
    return f"{signing_input}.{signature}"


# --------------------------------------------------------------------------------------------
# The identity provider

class IdP:
    """login.microsoftonline.com on loopback: per tenant GUID the v2 and v1 OpenID
    configurations and the keys; set_keys replaces the key set. hits counts requests by
    path."""

    DOC = re.compile(r"^/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                     r"/(v2\.0/\.well-known/openid-configuration|\.well-known/openid-configuration"
                     r"|discovery/v2\.0/keys|discovery/keys)$")

    def __init__(self, keys):
        self.lock = threading.Lock()
        self.hits = collections.Counter()
        self.keys = list(keys)
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                idp._serve(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(ct.t(10))

    def set_keys(self, keys):
        with self.lock:
            self.keys = list(keys)

    def count(self, path):
        with self.lock:
            return self.hits[path]

    def jwks_hits(self, tid=None):
        with self.lock:
            return sum(v for p, v in self.hits.items() if p.endswith("/keys") and
                       (tid is None or p.startswith(f"/{tid}/")))

    def tenant_hits(self, tid):
        with self.lock:
            return sum(v for p, v in self.hits.items() if p.startswith(f"/{tid}/"))

    def _document(self, tid, what):
        if what == "v2.0/.well-known/openid-configuration":
            return {"token_endpoint": f"{self.url}/{tid}/oauth2/v2.0/token",
                    "jwks_uri": f"{self.url}/{tid}/discovery/v2.0/keys",
                    "issuer": v2_issuer(tid),
                    "authorization_endpoint": f"{self.url}/{tid}/oauth2/v2.0/authorize",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token"],
                    "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com"}
        if what == ".well-known/openid-configuration":
            return {"token_endpoint": f"{self.url}/{tid}/oauth2/token",
                    "jwks_uri": f"{self.url}/{tid}/discovery/keys",
                    "issuer": v1_issuer(tid),
                    "authorization_endpoint": f"{self.url}/{tid}/oauth2/authorize",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com"}
        with self.lock:
            keys = [dict(k) for k in self.keys]
        if what == "discovery/keys":  # the v1 key list names no issuers
            for k in keys:
                k.pop("issuer", None)
        return {"keys": keys}

    def _serve(self, h):
        path = h.path.split("?", 1)[0]
        with self.lock:
            self.hits[path] += 1
        m = self.DOC.match(path)
        if m:
            status, body = 200, json.dumps(self._document(m.group(1), m.group(2))).encode()
        else:
            status, body = 404, b'{"error":"not_found"}'
        h.close_connection = True
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)


# --------------------------------------------------------------------------------------------
# Gateways with Entra ID tenants

class EntraTestCase(ct.GatewayTestCase):
    """A gateway onboarding TENANT (with CLIENT_APP) and TENANT2 against its own IdP; the
    class waits for the startup key fetch of both tenants."""

    @classmethod
    def initial_keys(cls):
        return [key("k1").jwk()]

    @classmethod
    def config(cls):
        auth = {"entra_tenants": f"{TENANT}:{CLIENT_APP},{TENANT2}",
                "entra_server_app_id": SERVER_APP, "entra_authority": cls.idp.url,
                "entra_unknown_kid_interval": "1h", "auth_wait": "6s"}
        return {"auth": auth}

    @classmethod
    def setUpClass(cls):
        cls.idp = IdP(cls.initial_keys()).start()
        try:
            super().setUpClass()
            cls.wait_for_keys()
        except BaseException:
            if getattr(cls, "gw", None) is not None:
                cls.gw.stop()
            cls.idp.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.idp.stop()

    @classmethod
    def wait_for_keys(cls):
        tenants = (TENANT, TENANT2)
        if not ct.wait_until(lambda: all(cls.idp.jwks_hits(t) for t in tenants), ct.t(10)):
            raise AssertionError(f"no startup JWKS fetch for {tenants}; IdP hits "
                                 f"{dict(cls.idp.hits)}\nstderr:\n{cls.gw.stderr()[-3000:]}")
        # The fetch is counted once its keys are in use (asserted by test_startup_key_fetch;
        # not fatal here so that the other tests still tell what works).
        ct.wait_until(lambda: all(cls.fetches(t, "ok") >= 1 for t in tenants), ct.t(5),
                      interval=0.1)

    @classmethod
    def fetches(cls, tid=None, result=None):
        labels = {k: v for k, v in (("tenant", tid), ("result", result)) if v is not None}
        return cls.gw.metrics().sum("cmg_entra_key_fetches_total", **labels)

    def rejections(self):
        by = collections.Counter()
        for labels, v in self.gw.metrics().series("cmg_auth_token_rejections_total"):
            if v:
                by[labels.get("cause")] += v
        return dict(by)

    def call(self, token, path=ROLE_PATH):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.gw.request("GET", path, headers=headers)

    def accepted(self, token, path=ROLE_PATH):
        before = self.gw.metrics().sum("cmg_auth_tokens_accepted_total", kind="entra")
        r = self.call(token, path)
        self.assertEqual((r.status, r.reason), (404, "Not Found"),
                         f"{r.raw_head!r}\nrejections: {self.rejections()}\n"
                         f"stderr:\n{self.gw.stderr()[-1500:]}")
        self.assertIn(b"no connection point serves role id", r.body, r.raw_head)
        got = self.gw.wait_metric("cmg_auth_tokens_accepted_total", before + 1, timeout=3,
                                  kind="entra")
        self.assertGreaterEqual(got, before + 1, "acceptance not counted as kind=entra")
        return r

    def refused(self, token, cause):
        before = self.gw.metrics().sum("cmg_auth_token_rejections_total", cause=cause)
        t0 = time.monotonic()
        r = self.call(token)
        self.elapsed = time.monotonic() - t0
        self.assertEqual((r.status, r.reason), (401, "CMGService_Invalid_Token"), r.raw_head)
        self.assertEqual(r.header("WWW-Authenticate"), 'Bearer error="invalid_token"')
        got = self.gw.wait_metric("cmg_auth_token_rejections_total", before + 1, timeout=3,
                                  cause=cause)
        self.assertGreaterEqual(got, before + 1,
                                f"refusal not counted as {cause}; by cause: {self.rejections()}")
        return r


class TestEntraTokens(EntraTestCase):
    """One gateway, a fixed key set: k1 as the spec's JWKS shows it, plus two keys carrying
    the `issuer` member real Entra v2 key lists have (the {tenantid} template, and another
    tenant's issuer)."""

    @classmethod
    def initial_keys(cls):
        return [key("k1").jwk(), key("ki").jwk(issuer=V2_TEMPLATE),
                key("kx").jwk(issuer=v2_issuer(FOREIGN))]

    # -- discovery and keys

    def test_startup_key_fetch(self):
        for tid in (TENANT, TENANT2):
            self.assertGreaterEqual(
                self.idp.count(f"/{tid}/v2.0/.well-known/openid-configuration"), 1, tid)
            self.assertGreaterEqual(self.idp.count(f"/{tid}/.well-known/openid-configuration"),
                                    1, f"v1 configuration of {tid} not read")
            self.assertGreaterEqual(self.idp.jwks_hits(tid), 1, tid)
            self.assertGreaterEqual(self.fetches(tid, "ok"), 1, f"fetch of {tid} not counted")
        self.assertEqual(self.idp.tenant_hits(FOREIGN), 0, "a foreign tenant was fetched")
        m = self.gw.metrics()
        for tid in (TENANT, TENANT2):
            failed = {labels["result"]: v
                      for labels, v in m.series("cmg_entra_key_fetches_total")
                      if labels.get("tenant") == tid and labels.get("result") != "ok" and v}
            self.assertEqual(failed, {}, f"fetches of {tid} that failed")
        self.assertGreaterEqual(m.sum("cmg_entra_keys"), 1)
        self.assertTrue(m.has("cmg_entra_keys_age_seconds"))
        for _, age in m.series("cmg_entra_keys_age_seconds"):
            self.assertTrue(0 <= age < 3600, age)

        cache = os.path.join(self.gw.dir, "cache")  # cache_dir's default, by the config

        def stored():
            kid = key("k1").kid
            for root, _, files in os.walk(cache):
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        if kid in name or kid.encode() in f.read():
                            return True
            return False
        self.assertTrue(ct.wait_until(stored, ct.t(5)), f"no stored key names k1 in {cache}")

    # -- accepted tokens

    def test_v1_token_for_the_app_id_uri(self):
        self.accepted(make_token(ver="1.0"))

    def test_v2_token_for_the_server_app(self):
        self.accepted(make_token(ver="2.0"))

    def test_tenant_without_client_app(self):
        self.accepted(make_token(tid=TENANT2, ver="2.0"))
        self.accepted(make_token(tid=TENANT2, ver="1.0"))

    def test_clock_skew(self):
        now = int(time.time())
        self.accepted(make_token(claims={"iat": now - 4000, "nbf": now - 4000,
                                         "exp": now - 240}))
        self.accepted(make_token(claims={"iat": now, "nbf": now + 240, "exp": now + 3600}))

    def test_key_with_a_v2_issuer_template(self):
        # Entra's v2 key lists name "https://login.microsoftonline.com/{tenantid}/v2.0" as each
        # key's issuer, and the same keys sign v1 tokens, whose iss is sts.windows.net
        # (Microsoft.IdentityModel compares a key's issuer with the token's issuer or, for v1
        # tokens, with the tenant's v2 issuer).
        self.accepted(make_token(key("ki"), ver="2.0"))
        self.accepted(make_token(key("ki"), ver="1.0"))

    def test_key_of_another_tenants_issuer(self):
        self.refused(make_token(key("kx"), ver="2.0"), "bad_issuer")

    # -- refused tokens

    def test_expired(self):
        now = int(time.time())
        self.refused(make_token(claims={"iat": now - 4000, "nbf": now - 4000,
                                        "exp": now - 600}), "expired")

    def test_not_yet_valid(self):
        now = int(time.time())
        self.refused(make_token(claims={"iat": now, "nbf": now + 600, "exp": now + 4200}),
                     "not_yet_valid")

    def test_issued_in_future(self):
        now = int(time.time())
        self.refused(make_token(claims={"iat": now + 600}), "issued_in_future")

    def test_missing_exp(self):
        self.refused(make_token(drop=("exp",)), "missing_claim")

    def test_wrong_audience(self):
        self.refused(make_token(ver="1.0", claims={"aud": "api://" + SERVER_APP}),
                     "bad_audience")
        self.refused(make_token(ver="2.0", claims={"aud": CLIENT_APP}), "bad_audience")

    def test_wrong_issuer(self):
        self.refused(make_token(ver="2.0", claims={"iss": v1_issuer(TENANT)}), "bad_issuer")
        self.refused(make_token(ver="1.0", claims={"iss": v1_issuer(TENANT2)}), "bad_issuer")

    def test_tenant_not_allowed(self):
        self.refused(make_token(tid=FOREIGN, ver="2.0"), "tenant_not_allowed")
        self.refused(make_token(tid=FOREIGN, ver="1.0"), "tenant_not_allowed")
        self.assertEqual(self.idp.tenant_hits(FOREIGN), 0, "a foreign tenant was fetched")

    def test_alg_none(self):
        self.refused(make_token(alg="none", signature=""), "unsupported_alg")

    def test_hs256_with_the_public_key_as_secret(self):
        k = key("k1")
        unsigned = make_token(alg="HS256", signature="x").rsplit(".", 1)[0]
        mac = hmac.new(k.pub_pem.encode(), unsigned.encode(), hashlib.sha256).digest()
        self.refused(f"{unsigned}.{b64url(mac)}", "unsupported_alg")

    def test_tampered_payload(self):
        head, payload, sig = make_token().split(".")
        forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged.update({"exp": int(time.time()) + 30 * 86400, "oid": str(uuid.uuid4())})
        self.refused(f"{head}.{b64url(json.dumps(forged).encode())}.{sig}", "bad_signature")

    def test_signed_by_another_key(self):
        # k3 signs, the header names k1.
        self.refused(make_token(key("k3"), header={"kid": key("k1").kid, "x5t": key("k1").kid}),
                     "bad_signature")

    # -- AADAuthInfo

    def test_aad_auth_info(self):
        r = self.gw.request("GET", f"/CCM_Proxy_ServerAuth/AADAuthInfo?TenantID={TENANT}")
        self.assertEqual(r.status, 200, r.raw_head)
        self.assertEqual((r.header("Content-Type") or "").split(";")[0].strip(),
                         "application/json")
        info = json.loads(r.body)
        want = {"TenantId": TENANT, "ClientAppId": CLIENT_APP, "ResourceUri": APP_ID_URI,
                "Authority": f"{self.idp.url}/{TENANT}"}
        self.assertEqual({k: info.get(k) for k in want}, want)
        for tid in (TENANT2, FOREIGN):
            r = self.gw.request("GET", f"/CCM_Proxy_ServerAuth/AADAuthInfo?TenantID={tid}")
            self.assertEqual(r.status, 404, f"{tid}: {r.raw_head!r}")
        for query in ("", "?TenantID=", "?TenantID=not-a-guid", f"?TenantID={TENANT}x",
                      f"?Tenant={TENANT}"):
            r = self.gw.request("GET", f"/CCM_Proxy_ServerAuth/AADAuthInfo{query}")
            self.assertEqual(r.status, 400, f"{query!r}: {r.raw_head!r}")

    # -- logs

    def test_tokens_are_not_logged(self):
        now = int(time.time())
        good = make_token(ver="1.0")
        bad = make_token(ver="2.0", claims={"nbf": now - 7200, "exp": now - 3600})
        outputs = (self.gw.stderr, self.gw.stdout, self.gw.log)
        start = [len(f()) for f in outputs]

        def new_text():
            return "".join(f()[n:] for f, n in zip(outputs, start))
        self.accepted(good)
        self.refused(bad, "expired")
        # The refusal is logged with its cause; wait for it so that the check below sees it.
        ct.wait_until(lambda: "expired" in new_text(), ct.t(5), what="refusal log line")
        text = "".join(f() for f in outputs)
        for token in (good, bad):
            head, payload, sig = token.split(".")
            for part in (token, payload, sig):
                self.assertNotIn(part, text, "a token must never be logged")

    # -- cmgctl token verify

    def verify(self, config, token, stdin=True):
        args = [ct.CMGCTL, "token", "verify", "-c", config, "-" if stdin else token]
        p = ct.run(args, input=token.encode() if stdin else None, timeout=30)
        return p.returncode, p.stdout, p.stderr

    def test_cmgctl_verify_with_stored_keys(self):
        hits = self.idp.jwks_hits()
        rc, out, err = self.verify(self.gw.config_path, make_token(ver="1.0"))
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"(?m)^accepted\b")
        now = int(time.time())
        expired = make_token(ver="2.0", claims={"nbf": now - 7200, "exp": now - 600})
        rc, out, err = self.verify(self.gw.config_path, expired, stdin=False)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(out, r"(?m)^rejected: expired\b")
        self.assertEqual(self.idp.jwks_hits(), hits, "cmgctl fetched keys it has in cache_dir")

    def test_cmgctl_verify_fetches_missing_keys(self):
        d = ct.mkdtemp("cmgctl-entra-")
        config = os.path.join(d, "gateway.ini")  # same settings, an empty cache_dir
        with open(self.gw.config_path) as src, open(config, "w") as dst:
            dst.write(src.read())
        hits = self.idp.jwks_hits(TENANT)
        rc, out, err = self.verify(config, make_token(ver="2.0"))
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"(?m)^accepted\b")
        self.assertGreater(self.idp.jwks_hits(TENANT), hits, "cmgctl did not fetch the keys")


class TestEntraKeyRollover(EntraTestCase):
    """A token naming an unknown kid forces one key refresh (the request waits for it); a
    second unknown kid within entra_unknown_kid_interval does not fetch again."""

    def test_unknown_kid_forces_one_refresh(self):
        k1, k2, k3 = key("k1"), key("k2"), key("k3")
        self.accepted(make_token(k1))
        keys_before = self.gw.metrics().sum("cmg_entra_keys")
        fetches = self.fetches(result="ok")

        # Rollover: the IdP now lists a second key, and tokens signed with it arrive.
        self.idp.set_keys([k1.jwk(), k2.jwk()])
        hits = self.idp.jwks_hits()
        self.accepted(make_token(k2))  # on the first try: the request waited for the refresh
        self.assertGreater(self.idp.jwks_hits(), hits, "no JWKS fetch for the unknown kid")
        self.assertGreater(self.gw.wait_metric("cmg_entra_key_fetches_total", fetches + 1,
                                               result="ok"), fetches)
        self.assertTrue(ct.wait_until(
            lambda: self.gw.metrics().sum("cmg_entra_keys") > keys_before, ct.t(5)),
            "cmg_entra_keys did not grow with the new key")
        self.accepted(make_token(k1))  # the old key still signs

        # Another unknown kid within the interval: refused at once, no further fetch.
        hits = self.idp.jwks_hits()
        self.refused(make_token(k3), "unknown_kid")
        self.assertLess(self.elapsed, 3, "the refusal waited (auth_wait is 6s)")
        self.assertFalse(ct.wait_until(lambda: self.idp.jwks_hits() > hits, ct.t(1)),
                         "a second forced refresh within entra_unknown_kid_interval")
        self.accepted(make_token(k2))


if __name__ == "__main__":
    unittest.main()
