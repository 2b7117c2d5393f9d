"""The gateway as cloud distribution point, end to end with real processes on loopback: cmgctl
distributes a package into Azurite (or a folder), a content access token is signed here with
the openssl command line, the content-location service answers the manifest, and the files
come through the gateway's disk cache: ranges, 304, single flight, eviction, restart, storage
dying mid-fill, BranchCache Content Information decoded by an independent decoder."""

import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
import unittest
import urllib.parse
import xml.etree.ElementTree as ET

import azurite
import cmgtest as ct
import contentkit as ck

SECRET_HEX = "2a3d73eb435e9f2b8a344267e7467a3c7385c6e055e2b4d30dfec7c38b0ed72c"
SECRET = bytes.fromhex(SECRET_HEX)
IIS_PNG = os.path.join(ct.REPO, "tests", "data", "iis-85.png")


def pki_file(name):
    return os.path.join(ct.pki(), name)


def token(package, **kw):
    return ck.content_token(pki_file("token-signing.key"), package, **kw)


def distribute(config_path, package, folder, *extra):
    r = ct.run([ct.CMGCTL, "content", "distribute", "-c", config_path, package, folder, *extra],
               timeout=ct.t(120))
    if r.returncode != 0:
        raise AssertionError(f"distribute {package}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def content_config(store, cache_dir, **extra):
    c = dict(store)
    c.update({"cache_dir": cache_dir, "token_certs": pki_file("token-signing.crt"),
              "peerdist_secret_hex": SECRET_HEX})
    c.update(extra)
    return c


def get(gw, path, headers=None, method="GET", timeout=30):
    with gw.connect(timeout=timeout) as c:
        c.send(ct.req(method, path, headers=headers))
        return c.read_response(head=(method == "HEAD"))


def location(gw, tok):
    r = get(gw, f"/downloadrestservice.svc/getcontentxmlsecure?{tok}")
    if r.status != 200:
        return r, None
    return r, ET.fromstring(r.body)


def file_path(url):
    """The gateway-relative part of a content URL from the manifest."""
    u = urllib.parse.urlsplit(url)
    return u.path + "?" + u.query


class ContentBase(unittest.TestCase):
    """Azurite with one package distributed, and a gateway in front of it."""

    PACKAGE = "PS100012"
    CACHE_MAX = "64m"

    @classmethod
    def setUpClass(cls):
        cls.az = azurite.Azurite(scale=ct.SCALE).start()
        cls.dir = ct.mkdtemp("content-")
        cls.pkg = os.path.join(cls.dir, "pkg")
        cls.files = {
            "setup.bin": ck.random_file(os.path.join(cls.pkg, "setup.bin"), 3 * 1024 * 1024 + 17,
                                        "setup"),
            "sub dir/readme.txt": ck.random_file(os.path.join(cls.pkg, "sub dir", "readme.txt"),
                                                 1000, "readme"),
            "empty.dat": ck.random_file(os.path.join(cls.pkg, "empty.dat"), 0, "empty"),
        }
        shutil.copy(IIS_PNG, os.path.join(cls.pkg, "iis-85.png"))
        with open(IIS_PNG, "rb") as f:
            cls.files["iis-85.png"] = f.read()
        cls.cache = os.path.join(cls.dir, "cache")
        cls.store = cls.az.content_settings()
        cls.gw = ct.Gateway({"gateway": {"workers": 2},
                             "content": content_config(cls.store, cls.cache,
                                                       cache_max=cls.CACHE_MAX)},
                            name=cls.__name__)
        cls.gw.write_config()
        distribute(cls.gw.config_path, cls.PACKAGE, cls.pkg)
        cls.gw.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.gw.stop()
        cls.az.cleanup()
        if rc not in (0, None):
            raise AssertionError(f"gateway exited with {rc}; stderr:\n{cls.gw.crash_report()}")

    def urls(self, package=None, **kw):
        r, root = location(self.gw, token(package or self.PACKAGE, **kw))
        self.assertEqual(r.status, 200, r.body)
        return {f.get("Name"): f for f in root.findall("File")}


class TestContent(ContentBase):

    def test_location_manifest_and_downloads_are_identical(self):
        r, root = location(self.gw, token(self.PACKAGE))
        self.assertEqual(r.status, 200)
        self.assertIn("text/xml", r.header("Content-Type"))
        self.assertEqual(root.tag, "ContentLocation")
        self.assertEqual(root.get("PackageID"), self.PACKAGE)
        self.assertEqual(root.get("Source"), "gateway")
        self.assertEqual(int(root.get("Files")), len(self.files))
        self.assertEqual(int(root.get("Size")), sum(len(d) for d in self.files.values()))
        seen = {}
        for f in root.findall("File"):
            name = f.get("Name")
            data = self.files[name]
            self.assertEqual(int(f.get("Size")), len(data), name)
            self.assertEqual(f.get("MD5"), azurite.md5_b64(data), name)
            self.assertTrue(f.get("URL").startswith(f"https://{ct.SERVICE_NAME}/cmgcontent/"))
            got = get(self.gw, file_path(f.get("URL")))
            self.assertEqual(got.status, 200, name)
            self.assertEqual(got.body, data, name)
            self.assertEqual(got.header("ETag"), f.get("ETag"))
            seen[name] = True
        self.assertEqual(set(seen), set(self.files))
        # HEAD: the headers, no body
        u = self.urls()["setup.bin"].get("URL")
        h = get(self.gw, file_path(u), method="HEAD")
        self.assertEqual(h.status, 200)
        self.assertEqual(int(h.header("Content-Length")), len(self.files["setup.bin"]))

    def test_ranges(self):
        data = self.files["setup.bin"]
        p = file_path(self.urls()["setup.bin"].get("URL"))
        r = get(self.gw, p, headers={"Range": "bytes=100-199"})
        self.assertEqual(r.status, 206)
        self.assertEqual(r.header("Content-Range"), f"bytes 100-199/{len(data)}")
        self.assertEqual(r.body, data[100:200])
        r = get(self.gw, p, headers={"Range": "bytes=-10"})
        self.assertEqual(r.status, 206)
        self.assertEqual(r.body, data[-10:])
        r = get(self.gw, p, headers={"Range": f"bytes={len(data) - 5}-"})
        self.assertEqual(r.body, data[-5:])
        r = get(self.gw, p, headers={"Range": f"bytes={len(data) + 10}-"})
        self.assertEqual(r.status, 416)
        self.assertEqual(r.header("Content-Range"), f"bytes */{len(data)}")
        r = get(self.gw, p, headers={"Range": "bytes=0-0,5-6"})
        self.assertEqual(r.status, 200, "several ranges: the whole file")
        self.assertEqual(r.body, data)
        r = get(self.gw, p, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
        self.assertEqual(r.status, 200, "If-Range that does not match: the whole file")

    def test_conditional_requests(self):
        f = self.urls()["sub dir/readme.txt"]
        p = file_path(f.get("URL"))
        first = get(self.gw, p)
        etag, lm = first.header("ETag"), first.header("Last-Modified")
        self.assertTrue(etag and lm)
        r = get(self.gw, p, headers={"If-None-Match": etag})
        self.assertEqual(r.status, 304)
        self.assertEqual(r.body, b"")
        self.assertIsNone(r.header("Content-Length"), "a 304 says nothing of the length")
        self.assertEqual(r.header("ETag"), etag)
        r = get(self.gw, p, headers={"If-None-Match": f'"other", W/{etag}'})
        self.assertEqual(r.status, 304, "weak comparison in a list")
        r = get(self.gw, p, headers={"If-None-Match": '"other"'})
        self.assertEqual(r.status, 200)
        r = get(self.gw, p, headers={"If-Modified-Since": lm})
        self.assertEqual(r.status, 304)
        r = get(self.gw, p, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
        self.assertEqual(r.status, 200)

    def test_tokens_refused(self):
        now = int(time.time())
        bad = {
            "expired": token(self.PACKAGE, start=now - 9 * 3600, end=now - 3600),
            "not yet valid": token(self.PACKAGE, start=now + 3600, end=now + 7200),
            "too long": token(self.PACKAGE, start=now - 60, end=now + 30 * 3600),
            "foreign signer": ck.content_token(pki_file("client-valid.key"), self.PACKAGE),
            "tampered": token(self.PACKAGE).replace("iss=mp1", "iss=mp2"),
            "bad alg": token(self.PACKAGE, alg="1.2.840.113549.1.1.5"),
            "no signature": token(self.PACKAGE).split("&sig=")[0],
        }
        for what, tok in bad.items():
            r, _ = location(self.gw, tok)
            self.assertEqual((r.status, r.reason), (401, "CMGService_Invalid_Token"), what)
        r = get(self.gw, "/downloadrestservice.svc/getcontentxmlsecure")
        self.assertEqual(r.status, 401, "no token")
        # a valid token of another package does not open this one's files
        other = token("PS100099")
        u = self.urls()["setup.bin"].get("URL")
        path = urllib.parse.urlsplit(u).path
        r = get(self.gw, f"{path}?{other}")
        self.assertEqual((r.status, r.reason), (401, "CMGService_Invalid_Token"))
        # a file URL whose token expired
        r = get(self.gw, f"{path}?{bad['expired']}")
        self.assertEqual(r.status, 401)
        self.assertGreaterEqual(self.gw.metrics().sum("cmg_content_token_refused_total"), 9)

    def test_unknown_package_file_and_content_id(self):
        r, _ = location(self.gw, token("PS100404"))
        self.assertEqual(r.status, 404)
        r, _ = location(self.gw, token(self.PACKAGE, content_id="PS100012.9"))
        self.assertEqual(r.status, 404, "another content version")
        u = self.urls()["setup.bin"].get("URL").replace("setup.bin", "nothere.bin")
        self.assertEqual(get(self.gw, file_path(u)).status, 404)
        u = self.urls()["setup.bin"].get("URL").replace("setup.bin", "..%2Fsecret")
        self.assertEqual(get(self.gw, file_path(u)).status, 404)
        r = get(self.gw, file_path(self.urls()["setup.bin"].get("URL")), method="POST")
        self.assertEqual(r.status, 405)

    def test_pipelined_requests_after_a_large_answer(self):
        """A second request sent with the first is answered after a streamed answer that took
        several windows."""
        data, small = self.files["setup.bin"], self.files["sub dir/readme.txt"]
        urls = self.urls()
        p1, p2 = file_path(urls["setup.bin"].get("URL")), file_path(urls["sub dir/readme.txt"].get("URL"))
        get(self.gw, p1)  # cached: the answer streams from a complete file
        with self.gw.connect(timeout=30) as c:
            c.send(ct.req("GET", p1) + ct.req("GET", p2))
            r1 = c.read_response()
            r2 = c.read_response()
        self.assertEqual((r1.status, len(r1.body)), (200, len(data)))
        self.assertEqual(r1.body, data)
        self.assertEqual((r2.status, r2.body), (200, small))

    def test_blob_gone_from_storage_is_not_found(self):
        pkg = os.path.join(self.dir, "gone")
        ck.random_file(os.path.join(pkg, "x.bin"), 300000, "gone")
        distribute(self.gw.config_path, "PS700001", pkg)
        p = file_path(self.urls("PS700001")["x.bin"].get("URL"))
        st, _h, _b = self.az.request("DELETE", "cmgcontent", "content/PS700001/x.bin")
        self.assertEqual(st, 202)
        r = get(self.gw, p)
        self.assertEqual(r.status, 404, r.body)

    def test_peerdist_v1_and_v2(self):
        data = self.files["iis-85.png"]
        p = file_path(self.urls()["iis-85.png"].get("URL"))
        get(self.gw, p)  # in the cache, hashes computed while it filled
        h1 = {"Accept-Encoding": "peerdist", "X-P2P-PeerDist": "Version=1.1"}
        r = get(self.gw, p, headers=h1)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Encoding"), "peerdist")
        self.assertEqual(r.header("X-P2P-PeerDist"), f"Version=1.1, ContentLength={len(data)}")
        ci = ck.decode_ci_v1(r.body)
        want = ck.expected_v1(data, SECRET)
        self.assertEqual(len(ci["segments"]), len(want))
        for got, exp in zip(ci["segments"], want):
            self.assertEqual(got, exp)
        h2 = dict(h1)
        h2["X-P2P-PeerDistEx"] = "MinContentInformation=1.0, MaxContentInformation=2.0"
        r = get(self.gw, p, headers=h2)
        self.assertEqual(r.header("Content-Encoding"), "peerdist")
        ck.check_v2_against(data, ck.decode_ci_v2(r.body), SECRET)
        # a client that found nothing on its peers gets the bytes
        h3 = {"Accept-Encoding": "peerdist",
              "X-P2P-PeerDist": "Version=1.1, MissingDataRequest=true"}
        r = get(self.gw, p, headers=h3)
        self.assertIsNone(r.header("Content-Encoding"))
        self.assertEqual(r.body, data)
        # a malformed header: the ordinary answer
        r = get(self.gw, p, headers={"Accept-Encoding": "peerdist",
                                     "X-P2P-PeerDist": "Version = 1.1"})
        self.assertEqual(r.body, data)
        self.assertGreaterEqual(self.gw.metrics().sum("cmg_content_peerdist_total"), 2)

    def test_single_flight(self):
        """50 clients miss on one blob at once: one GET reaches storage, 50 identical bodies."""
        pkg = os.path.join(self.dir, "flight")
        data = ck.random_file(os.path.join(pkg, "big.bin"), 8 * 1024 * 1024 + 3, "flight")
        distribute(self.gw.config_path, "PS200001", pkg)
        p = file_path(self.urls("PS200001")["big.bin"].get("URL"))
        before_fills = self.gw.metrics().sum("cmg_content_fills_total")
        before_gets = self.az.count_requests("GET", "cmgcontent", "content/PS200001/big.bin")
        self.assertEqual(before_gets, 0)
        start = threading.Barrier(50)

        def one(_):
            start.wait(timeout=ct.t(30))
            r = get(self.gw, p, timeout=120)
            return r.status, hashlib.sha256(r.body).hexdigest(), len(r.body)
        with concurrent.futures.ThreadPoolExecutor(50) as ex:
            results = list(ex.map(one, range(50)))
        digest = hashlib.sha256(data).hexdigest()
        self.assertEqual(results, [(200, digest, len(data))] * 50)
        self.assertEqual(self.gw.metrics().sum("cmg_content_fills_total") - before_fills, 1)
        self.assertEqual(self.az.count_requests("GET", "cmgcontent", "content/PS200001/big.bin"),
                         1)


class TestEvictionAndRestart(ContentBase):
    CACHE_MAX = "5m"

    def test_eviction_at_the_bound_then_restart_keeps_the_cache(self):
        pkg = os.path.join(self.dir, "evict")
        names = [f"f{i}.bin" for i in range(4)]
        datas = {n: ck.random_file(os.path.join(pkg, n), 2 * 1024 * 1024, n) for n in names}
        distribute(self.gw.config_path, "PS300001", pkg)
        urls = {n: file_path(u.get("URL")) for n, u in self.urls("PS300001").items()}
        for n in names:
            r = get(self.gw, urls[n])
            self.assertEqual(r.body, datas[n], n)
        m = self.gw.metrics()
        self.assertGreaterEqual(m.sum("cmg_content_evictions_total"), 2)
        self.assertLessEqual(m.sum("cmg_content_cache_bytes"), 5 * 1024 * 1024)
        data_files = [f for f in os.listdir(self.cache) if f.endswith(".data")]
        self.assertEqual(len(data_files), 2, data_files)
        # the two newest survive a restart and are served without storage
        self.gw.stop()
        self.gw.start(write=False)
        gets = self.az.count_requests("GET", "cmgcontent", "content/PS300001/f3.bin")
        r = get(self.gw, urls["f3.bin"])
        self.assertEqual(r.body, datas["f3.bin"])
        m = self.gw.metrics()
        self.assertEqual(m.sum("cmg_content_requests_total", source="cache"), 1)
        self.assertEqual(m.sum("cmg_content_fills_total"), 0)
        self.assertEqual(self.az.count_requests("GET", "cmgcontent", "content/PS300001/f3.bin"),
                         gets)
        # an evicted one fills again
        r = get(self.gw, urls["f0.bin"])
        self.assertEqual(r.body, datas["f0.bin"])
        self.assertEqual(self.gw.metrics().sum("cmg_content_fills_total", result="ok"), 1)
        # a file larger than the whole cache is served, not kept, and evicts nothing
        before = self.gw.metrics()
        big = ck.random_file(os.path.join(self.dir, "huge", "huge.bin"), 6 * 1024 * 1024, "huge")
        distribute(self.gw.config_path, "PS300002", os.path.join(self.dir, "huge"))
        r = get(self.gw, file_path(self.urls("PS300002")["huge.bin"].get("URL")), timeout=60)
        self.assertEqual(hashlib.sha256(r.body).digest(), hashlib.sha256(big).digest())
        after = self.gw.metrics()
        self.assertEqual(after.sum("cmg_content_evictions_total"),
                         before.sum("cmg_content_evictions_total"))
        self.assertEqual(after.sum("cmg_content_cache_entries"),
                         before.sum("cmg_content_cache_entries"))


class TestStorageDiesMidFill(unittest.TestCase):
    """Azurite behind a slow relay is killed while a large blob fills: the client gets a cut
    transfer, nothing is cached, and once storage is back the next request fills it whole."""

    def test_killed_mid_fill(self):
        az = azurite.Azurite(scale=ct.SCALE).start()
        relay = None
        gw = None
        try:
            d = ct.mkdtemp("midfill-")
            data = ck.random_file(os.path.join(d, "pkg", "large.bin"), 24 * 1024 * 1024, "large")
            relay = ck.Throttle(az.port, 2 * 1024 * 1024)
            store = az.content_settings(blob_endpoint=f"http://127.0.0.1:{relay.port}/"
                                                      f"{azurite.ACCOUNT}")
            cache = os.path.join(d, "cache")
            gw = ct.Gateway({"content": content_config(store, cache, timeout="5s",
                                                       manifest_ttl="1s")},
                            name="midfill")
            gw.write_config()
            cfg_direct = os.path.join(d, "direct.ini")
            with open(cfg_direct, "w") as f:
                f.write(ct.ini_text({"content": content_config(az.content_settings(), cache)}))
            distribute(cfg_direct, "PS400001", os.path.join(d, "pkg"))
            gw.start()
            r0, root = location(gw, token("PS400001"))
            p = file_path(root.find("File").get("URL"))
            got = {}

            def download():
                with gw.connect(timeout=60) as c:
                    c.send(ct.req("GET", p))
                    head = c._read_until(b"\r\n\r\n", time.monotonic() + ct.t(30))
                    got["head"] = head
                    body, closed = c.read_until_close(ct.t(60))
                    got["body"], got["closed"] = body, closed
            t = threading.Thread(target=download)
            t.start()
            # storage dies once the fill is under way
            ct.wait_until(lambda: gw.metrics().sum("cmg_content_fill_bytes_total") > 1 << 20,
                          ct.t(30), what="the fill to start")
            az.kill()
            t.join(ct.t(90))
            self.assertFalse(t.is_alive())
            self.assertIn(b" 200 ", got["head"])
            self.assertLess(len(got["body"]), len(data), "the cut answer must not look whole")
            self.assertTrue(got["closed"])
            ct.wait_until(lambda: gw.metrics().sum("cmg_content_fills_total", result="failed") >= 1,
                          ct.t(30), what="the failed fill to be counted")
            self.assertEqual([f for f in os.listdir(cache) if not f.startswith("lru")], [],
                             "nothing of the broken fill stays in the cache")
            # storage back on the same port and data: the next request fills it whole (if the
            # emulator lost the blob with its process, distributing again puts it back)
            az2 = azurite.Azurite(port=az.port, scale=ct.SCALE)
            az2.dir = az.dir
            az2.start()
            try:
                distribute(cfg_direct, "PS400001", os.path.join(d, "pkg"))
                last = {}

                def whole():
                    r = get(gw, p, timeout=120)
                    last["r"] = r
                    return r.status == 200 and len(r.body) == len(data)
                ct.wait_until(whole, ct.t(60), interval=1, what="a whole download")
                self.assertEqual(hashlib.sha256(last["r"].body).digest(),
                                 hashlib.sha256(data).digest())
                self.assertEqual(gw.metrics().sum("cmg_content_fills_total", result="ok"), 1)
            finally:
                az2.stop()
        finally:
            if gw:
                gw.stop()
            if relay:
                relay.close()
            az.cleanup()


class TestSlowStorage(unittest.TestCase):
    """A fill slower than content.timeout per window is slow, not stalled: a range far
    ahead of it waits and then arrives whole."""

    def test_range_ahead_of_a_slow_fill(self):
        az = azurite.Azurite(scale=ct.SCALE).start()
        relay = gw = None
        try:
            d = ct.mkdtemp("slow-")
            size = 8 * 1024 * 1024
            data = ck.random_file(os.path.join(d, "pkg", "slow.bin"), size, "slow")
            relay = ck.Throttle(az.port, 1024 * 1024)
            store = az.content_settings(blob_endpoint=f"http://127.0.0.1:{relay.port}/"
                                                      f"{azurite.ACCOUNT}")
            cache = os.path.join(d, "cache")
            gw = ct.Gateway({"content": content_config(store, cache, timeout="1s")},
                            name="slow")
            gw.write_config()
            cfg_direct = os.path.join(d, "direct.ini")
            with open(cfg_direct, "w") as f:
                f.write(ct.ini_text({"content": content_config(az.content_settings(), cache)}))
            distribute(cfg_direct, "PS800001", os.path.join(d, "pkg"))
            gw.start()
            _r, root = location(gw, token("PS800001"))
            p = file_path(root.find("File").get("URL"))
            r = get(gw, p, headers={"Range": f"bytes={size - 100000}-{size - 1}"}, timeout=120)
            self.assertEqual(r.status, 206)
            self.assertEqual(r.body, data[size - 100000:])
            self.assertEqual(gw.metrics().sum("cmg_content_errors_total"), 0)
        finally:
            if gw:
                self.assertEqual(gw.stop(), 0)
            if relay:
                relay.close()
            az.cleanup()


class TestLargeFileV1Segments(ContentBase):
    """A file larger than one 32 MiB segment: CI 1.0 with two segments."""

    def test_two_segments(self):
        pkg = os.path.join(self.dir, "large")
        data = ck.random_file(os.path.join(pkg, "os.wim"), 33 * 1024 * 1024 + 4097, "wim")
        distribute(self.gw.config_path, "PS500001", pkg)
        p = file_path(self.urls("PS500001")["os.wim"].get("URL"))
        r = get(self.gw, p, timeout=120)
        self.assertEqual(hashlib.sha256(r.body).digest(), hashlib.sha256(data).digest())
        r = get(self.gw, p, headers={"Accept-Encoding": "peerdist",
                                     "X-P2P-PeerDist": "Version=1.0"})
        self.assertEqual(r.header("Content-Encoding"), "peerdist")
        ci = ck.decode_ci_v1(r.body)
        self.assertEqual(len(ci["segments"]), 2)
        self.assertEqual([s[1] for s in ci["segments"]], [32 << 20, len(data) - (32 << 20)])
        self.assertEqual(ci["segments"], ck.expected_v1(data, SECRET))


class TestSasLocations(ContentBase):
    """locations = sas: the manifest points straight at Blob storage with read-only SAS URLs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.gw.stop()
        cls.gw.overrides["content"]["locations"] = "sas"
        cls.gw.overrides["content"]["sas_lifetime"] = "10m"
        cls.gw.start()

    def test_sas_urls_download_from_storage(self):
        r, root = location(self.gw, token(self.PACKAGE))
        self.assertEqual(root.get("Source"), "storage")
        for f in root.findall("File"):
            u = urllib.parse.urlsplit(f.get("URL"))
            self.assertEqual(u.port, self.az.port)
            q = urllib.parse.parse_qs(u.query)
            self.assertEqual(q["sp"], ["r"])
            self.assertEqual(q["sr"], ["b"])
            import http.client
            c = http.client.HTTPConnection("127.0.0.1", self.az.port, timeout=ct.t(30))
            c.request("GET", u.path + "?" + u.query)
            resp = c.getresponse()
            body = resp.read()
            c.close()
            self.assertEqual(resp.status, 200, f.get("Name"))
            self.assertEqual(body, self.files[f.get("Name")])


class TestFolderStore(unittest.TestCase):
    """The embedded default: a local folder store."""

    def test_folder_store_end_to_end(self):
        d = ct.mkdtemp("folder-")
        pkg = os.path.join(d, "pkg")
        data = ck.random_file(os.path.join(pkg, "app", "app.msi"), 700 * 1024, "msi")
        gw = ct.Gateway({"content": content_config({"store": "folder",
                                                    "folder": os.path.join(d, "store")},
                                                   os.path.join(d, "cache"))}, name="folder")
        gw.write_config()
        distribute(gw.config_path, "PS600001", pkg)
        gw.start()
        try:
            r, root = location(gw, token("PS600001"))
            self.assertEqual(r.status, 200)
            f = root.find("File")
            self.assertEqual(f.get("Name"), "app/app.msi")
            got = get(gw, file_path(f.get("URL")))
            self.assertEqual(got.body, data)
            got = get(gw, file_path(f.get("URL")), headers={"Range": "bytes=1000-1999"})
            self.assertEqual(got.body, data[1000:2000])
        finally:
            self.assertEqual(gw.stop(), 0)


if __name__ == "__main__":
    unittest.main()
