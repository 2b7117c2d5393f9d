"""HTTP/1.1 behaviour over TLS: endpoints, keep-alive, pipelining, bodies, 100-continue, HEAD,
verbs, Host, and what gets logged."""

import unittest

import cmgtest as ct
from cmgtest import req, t

MUTUAL = "/CCM_Proxy_MutualAuth/ServiceMetadata"
SERVER = "/CCM_Proxy_ServerAuth/ServiceMetadata"


def metadata_xml(name, instance):
    return (f"<ServiceMetadata><ServiceName>{name}</ServiceName><Version>0.1.0</Version>"
            f"<InstanceId>{instance}</InstanceId><InstanceName>ProxyService_IN_{instance}"
            f"</InstanceName></ServiceMetadata>")


class MetadataMixin:
    def check_metadata(self, r, name, instance):
        self.assertEqual(r.status, 200, r.raw_head)
        self.assertRegex(r.header("Content-Type") or "", r"^text/xml\b")
        text = r.body.decode("utf-8")
        first, _, rest = text.partition("\n")
        self.assertRegex(first.strip(), r"^<\?xml version=\"1\.0\"[^>]*\?>$")
        self.assertEqual(rest.strip(), metadata_xml(name, instance))
        self.assertEqual(int(r.header("Content-Length")), len(r.body))


class TestServiceMetadataDefaults(MetadataMixin, ct.GatewayTestCase):
    """service_name defaults to the certificate's CN; instance_id to 0."""

    def test_default_service_name_is_cert_cn(self):
        for path in (SERVER, MUTUAL):
            with self.subTest(path=path):
                self.check_metadata(self.gw.request("GET", path), ct.SERVICE_NAME, 0)


class TestHttp(MetadataMixin, ct.GatewayTestCase):
    CONFIG = {"gateway": {"service_name": "gw-test.example", "instance_id": 3},
              "http": {"max_body_bytes": "64k"}}

    NAME, INSTANCE = "gw-test.example", 3

    def metadata(self, r):
        self.check_metadata(r, self.NAME, self.INSTANCE)

    # -- endpoints

    def test_metadata_endpoints_case_insensitive(self):
        for path in (MUTUAL, SERVER, MUTUAL.lower(), SERVER.upper(),
                     "/ccm_proxy_MutualAuth/ServiceMetadata"):
            with self.subTest(path=path):
                self.metadata(self.gw.request("GET", path))

    def test_metadata_post_is_405(self):
        for path in (MUTUAL, SERVER):
            with self.subTest(path=path):
                r = self.gw.request("POST", path, body=b"x=1")
                self.assertEqual(r.status, 405, r.raw_head)

    def test_other_paths_404(self):
        with self.gw.connect() as c:
            for path in ("/", "/foo", "/CCM_Proxy_ServerAuth/Other", "/ServiceMetadata",
                         "/CCM_Proxy_ServerAuth", "/CCM_Proxy_Foo/ServiceMetadata"):
                with self.subTest(path=path):
                    c.send(req("GET", path))
                    r = c.read_response()
                    self.assertEqual(r.status, 404, r.raw_head)
                    self.assertFalse(r.closes, "404 closed the keep-alive connection")

    # -- connection handling

    def test_keep_alive_many_requests_one_connection(self):
        before = self.gw.metrics().sum("cmg_connections_total")
        with self.gw.connect() as c:
            for i in range(5):
                c.send(req("GET", SERVER))
                r = c.read_response()
                self.metadata(r)
                self.assertFalse(r.closes)
        self.assertEqual(self.gw.metrics().sum("cmg_connections_total"), before + 1)

    def test_pipelined_responses_in_order(self):
        batch = (req("GET", "/a") + req("GET", SERVER) + req("HEAD", MUTUAL)
                 + req("POST", "/b", body=b"0123456789") + req("PUT", "/c", body=b"x" * 3000)
                 + req("GET", MUTUAL))
        with self.gw.connect() as c:
            c.send(batch)
            statuses = []
            r = c.read_response(); statuses.append(r.status)
            r = c.read_response(); statuses.append(r.status); self.metadata(r)
            full_len = len(r.body)
            r = c.read_response(head=True); statuses.append(r.status)
            self.assertEqual(int(r.header("Content-Length")), full_len)
            r = c.read_response(); statuses.append(r.status)
            r = c.read_response(); statuses.append(r.status)
            r = c.read_response(); statuses.append(r.status); self.metadata(r)
            self.assertEqual(statuses, [404, 200, 200, 404, 404, 200])
            self.assertTrue(c.is_open(0.3), "connection closed after the pipelined batch")

    def test_pipelined_requests_split_across_writes(self):
        batch = req("GET", SERVER) + req("GET", "/x") + req("GET", MUTUAL)
        with self.gw.connect() as c:
            for i in range(0, len(batch), 7):
                c.send(batch[i:i + 7])
            self.assertEqual([c.read_response().status for _ in range(3)], [200, 404, 200])

    def test_head_has_length_no_body(self):
        with self.gw.connect() as c:
            c.send(req("GET", SERVER))
            full = c.read_response()
            # HEAD then GET in one write: any stray body bytes after the HEAD response would
            # corrupt the next status line.
            c.send(req("HEAD", SERVER) + req("GET", "/after-head"))
            h = c.read_response(head=True)
            self.assertEqual(h.status, 200)
            self.assertEqual(int(h.header("Content-Length")), len(full.body))
            nxt = c.read_response()
            self.assertEqual(nxt.status, 404, "bytes after the HEAD response: "
                                              f"{nxt.raw_head[:100]!r}")

    # -- bodies

    def test_content_length_body_read_and_keepalive(self):
        with self.gw.connect() as c:
            c.send(req("POST", "/upload", body=b"a" * 20000))
            r = c.read_response()
            self.assertEqual(r.status, 404)
            self.assertFalse(r.closes)
            c.send(req("GET", SERVER))
            self.metadata(c.read_response())

    def test_chunked_body_read_and_keepalive(self):
        before = self.gw.metrics().sum("cmg_http_received_bytes_total")
        body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n" + b"1000\r\n" + b"z" * 4096 + b"\r\n0\r\n\r\n"
        head = req("POST", "/upload", headers=[("Transfer-Encoding", "chunked")])
        with self.gw.connect() as c:
            c.send(head + body)
            r = c.read_response()
            self.assertEqual(r.status, 404, r.raw_head)
            self.assertFalse(r.closes)
            c.send(req("GET", SERVER))
            self.metadata(c.read_response())
        self.assertGreaterEqual(self.gw.metrics().sum("cmg_http_received_bytes_total"),
                                before + len(head) + len(body))

    def test_chunked_body_with_trailer_refused(self):
        """Trailer fields would slip past the head's checks (a second Host, say): refused."""
        body = b"3\r\nabc\r\n0\r\nHost: evil\r\n\r\n"
        with self.gw.connect() as c:
            c.send(req("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]) + body)
            r = c.read_response()
            self.assertEqual(r.status, 400, r.raw_head)
            self.assertTrue(r.closes)

    def test_expect_100_continue(self):
        with self.gw.connect() as c:
            c.send(req("POST", "/upload", headers=[("Expect", "100-continue")],
                       content_length=11))
            cont = c.read_response(timeout=5)  # must come before any body byte is sent
            self.assertEqual(cont.status, 100)
            self.assertTrue(cont.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n"),
                            cont.raw_head)
            c.send(b"hello world")
            r = c.read_response()
            self.assertEqual(r.status, 404)
            c.send(req("GET", SERVER))
            self.metadata(c.read_response())

    def test_expect_100_continue_body_too_large_413(self):
        with self.gw.connect() as c:
            c.send(req("POST", "/upload", headers=[("Expect", "100-continue")],
                       content_length=64 * 1024 + 1))
            r = c.read_response(timeout=5)
            self.assertEqual(r.status, 413, f"expected 413 without 100 Continue: {r.raw_head!r}")
            self.assertTrue(r.closes, r.raw_head)
            self.assertTrue(c.wait_closed(t(5)), "connection not closed after 413")

    # -- verbs

    def test_accepted_verbs(self):
        with self.gw.connect() as c:
            for verb in ("GET", "HEAD", "POST", "PUT", "CCM_POST", "BITS_POST", "PROPFIND"):
                with self.subTest(verb=verb):
                    body = b"data" if verb in ("POST", "PUT", "CCM_POST", "BITS_POST") else b""
                    c.send(req(verb, "/some/resource", body=body))
                    r = c.read_response(head=(verb == "HEAD"))
                    self.assertEqual(r.status, 404, f"{verb}: {r.raw_head!r}")
                    self.assertFalse(r.closes)

    def test_other_known_verbs_405_with_allow(self):
        for verb in ("DELETE", "OPTIONS", "PATCH", "TRACE"):
            with self.subTest(verb=verb):
                r = self.gw.request(verb, "/some/resource")
                self.assertEqual(r.status, 405, f"{verb}: {r.raw_head!r}")
                allow = r.header("Allow")
                self.assertIsNotNone(allow, f"{verb}: 405 without Allow")
                allowed = {v.strip() for v in allow.split(",")}
                self.assertLessEqual({"GET", "HEAD", "POST"}, allowed, allow)
                self.assertNotIn(verb, allowed)

    def test_unknown_verb_501_and_close(self):
        with self.gw.connect() as c:
            c.send(req("FOO_BAR", "/"))
            r = c.read_response()
            self.assertEqual(r.status, 501, r.raw_head)
            self.assertTrue(r.closes, r.raw_head)
            self.assertTrue(c.wait_closed(t(5)), "connection not closed after 501")

    def test_http11_without_host_400(self):
        with self.gw.connect() as c:
            c.send(req("GET", SERVER, host=None))
            r = c.read_response()
            self.assertEqual(r.status, 400, r.raw_head)
            self.assertTrue(r.closes, r.raw_head)
            self.assertTrue(c.wait_closed(t(5)), "connection not closed after 400")

    # -- counters and logs

    def test_request_counters(self):
        m0 = self.gw.metrics()
        with self.gw.connect() as c:
            for _ in range(3):
                c.send(req("GET", SERVER))
                c.read_response()
            c.send(req("GET", "/nope"))
            c.read_response()
        m1 = self.gw.metrics()
        self.assertEqual(m1.sum("cmg_http_requests_total", code="200")
                         - m0.sum("cmg_http_requests_total", code="200"), 3)
        self.assertEqual(m1.sum("cmg_http_requests_total", code="404")
                         - m0.sum("cmg_http_requests_total", code="404"), 1)
        self.assertGreater(m1.sum("cmg_http_sent_bytes_total"),
                           m0.sum("cmg_http_sent_bytes_total") + 3 * 200)

    def test_query_strings_never_logged(self):
        self.assertEqual(self.gw.request("GET", "/x?secret=abc").status, 404)
        self.assertEqual(self.gw.request("GET", SERVER + "?secret=def&a=b").status, 200)
        marker = "/x-after-the-query-tests"
        self.assertEqual(self.gw.request("GET", marker).status, 404)
        ct.wait_until(lambda: marker in self.gw.stderr() and marker in self.gw.log(), t(5))
        err, log = self.gw.stderr(), self.gw.log()
        self.assertIn(marker, err)
        self.assertIn(marker, log)
        self.assertRegex(err, r"\] c\d+\.\d+ GET /x 404 ")
        self.assertNotIn("secret", err)
        self.assertNotIn("secret", log)


if __name__ == "__main__":
    unittest.main()
