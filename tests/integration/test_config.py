"""Configuration: -t, error reports with file and line, units and minimums, --print-defaults,
relative paths, PFX passwords."""

import os
import re
import shutil
import unittest

import cmgtest as ct
from cmgtest import t

SERVER = "/CCM_Proxy_ServerAuth/ServiceMetadata"


def check(path, cwd=None):
    """cmg-gateway -c path -t"""
    return ct.run([ct.GATEWAY, "-c", path, "-t"], timeout=30, cwd=cwd or ct.tmp_root())


class ConfigCase(unittest.TestCase):
    def setUp(self):
        self.dir = ct.mkdtemp(self._testMethodName + "-")
        self.path = os.path.join(self.dir, "gw.ini")
        self.port, self.admin_port = ct.free_port(), ct.free_port()

    def write(self, lines):
        """lines: list of str (one per line, no newlines) -> file; returns the text."""
        text = "\n".join(lines) + "\n"
        with open(self.path, "w") as f:
            f.write(text)
        return text

    def valid_lines(self, extra=None):
        """A valid config as a list of lines; extra: {section: [lines]} appended per section."""
        pki = ct.pki()
        extra = extra or {}
        sections = {
            "gateway": ["workers = 1", f"listen = 127.0.0.1:{self.port}"],
            "tls": [f"cert_file = {pki}/server-chain.pem", f"key_file = {pki}/server.key"],
            "http": [],
            "admin": [f"listen = 127.0.0.1:{self.admin_port}"],
            "log": ["file = gw.log"],
        }
        out = []
        for sec, lines in sections.items():
            out.append(f"[{sec}]")
            out += lines + extra.get(sec, [])
        for sec, lines in extra.items():
            if sec not in sections:
                out.append(f"[{sec}]")
                out += lines
        return out

    def line_of(self, lines, needle):
        return next(i + 1 for i, l in enumerate(lines) if l.startswith(needle))

    def assert_errors(self, res, expected):
        """expected: list of regexes, one per error line (after "PATH:"), in any order."""
        self.assertEqual(res.returncode, 1, f"stdout:{res.stdout}\nstderr:{res.stderr}")
        lines = [l for l in res.stderr.splitlines() if l.strip()]
        self.assertTrue(lines, "no error output")
        self.assertEqual(lines[-1],
                         f"cmg-gateway: {self.path}: {len(expected)} error(s); not started",
                         res.stderr)
        errors = lines[:-1]
        self.assertEqual(len(errors), len(expected), res.stderr)
        for rx in expected:
            full = "^" + re.escape(self.path) + rx
            self.assertTrue(any(re.search(full, e) for e in errors),
                            f"no error line matching {full!r} in:\n{res.stderr}")


class TestCheck(ConfigCase):
    def test_valid_config_exits_0(self):
        self.write(self.valid_lines())
        res = check(self.path)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_errors_name_file_line_and_key(self):
        lines = self.valid_lines({
            "gateway": ["instance_id = 1", "bogus = 1"],
            "http": ["idle_timeout = 5x", "max_headers = 10", "max_headers = 12"],
            "nosuch": ["foo = bar"],
        })
        lines[self.line_of(lines, "workers") - 1] = "workers = abc"
        self.write(lines)
        # The first max_headers line is fine; the second one is the error.
        second = [i + 1 for i, l in enumerate(lines) if l.startswith("max_headers")][1]
        res = check(self.path)
        self.assert_errors(res, [
            rf":{self.line_of(lines, 'workers')}: gateway\.workers: .+",
            rf":{self.line_of(lines, 'bogus')}: gateway\.bogus: .+",
            rf":{self.line_of(lines, 'idle_timeout')}: http\.idle_timeout: .+",
            rf":{second}: http\.max_headers: .+",
            rf":({self.line_of(lines, '[nosuch]')}|{self.line_of(lines, 'foo')}): "
            r"nosuch(\.foo)?: .+",
        ])

    def test_each_error_alone(self):
        cases = {
            "unknown key": ({"http": ["no_such_key = 1"]}, "no_such_key", r"http\.no_such_key"),
            "unknown section": ({"bogus": ["x = 1"]}, None, r"bogus(\.x)?"),
            "bad uint": ({"gateway": ["max_connections = lots"]}, "max_connections",
                         r"gateway\.max_connections"),
            "bad duration": ({"http": ["idle_timeout = 5x"]}, "idle_timeout",
                             r"http\.idle_timeout"),
            "bad size": ({"http": ["max_body_bytes = 12q"]}, "max_body_bytes",
                         r"http\.max_body_bytes"),
            "bad bool": ({"tls": ["enforce_tls12 = maybe"]}, "enforce_tls12",
                         r"tls\.enforce_tls12"),
            "bad level": ({"log": ["level = chatty"]}, "level", r"log\.level"),
        }
        for name, (extra, key, rx) in cases.items():
            with self.subTest(case=name):
                lines = self.valid_lines(extra)
                self.write(lines)
                res = check(self.path)
                line = self.line_of(lines, key) if key else r"\d+"
                self.assert_errors(res, [rf":{line}: {rx}: .+"])

    def test_bad_listen_address(self):
        lines = [l if not l.startswith("listen = 127.0.0.1:" + str(self.port))
                 else "listen = 127.0.0.1" for l in self.valid_lines()]
        self.write(lines)
        self.assert_errors(check(self.path),
                           [rf":{self.line_of(lines, 'listen = 127.0.0.1')}: gateway\.listen: .+"])

    def test_duplicate_key_names_second_line(self):
        lines = self.valid_lines({"http": ["idle_timeout = 10s", "header_timeout = 5s",
                                           "idle_timeout = 20s"]})
        self.write(lines)
        second = [i + 1 for i, l in enumerate(lines) if l.startswith("idle_timeout")][1]
        self.assert_errors(check(self.path), [rf":{second}: http\.idle_timeout: .+"])

    def test_minimums(self):
        cases = [("http", "max_header_bytes", "1000", "1k"),
                 ("http", "max_headers", "7", "8"),
                 ("log", "max_size", "4095", "4096"),
                 ("tls", "ticket_key_check_interval", "500ms", "1s")]
        for sec, key, below, at in cases:
            with self.subTest(key=key, value=below):
                lines = self.valid_lines({sec: [f"{key} = {below}"]})
                self.write(lines)
                self.assert_errors(check(self.path),
                                   [rf":{self.line_of(lines, key)}: {sec}\.{key}: .+"])
            with self.subTest(key=key, value=at):
                self.write(self.valid_lines({sec: [f"{key} = {at}"]}))
                res = check(self.path)
                self.assertEqual(res.returncode, 0, res.stderr)

    def test_units_accepted(self):
        self.write(self.valid_lines({
            "gateway": ["drain_timeout = 90"],
            "http": ["idle_timeout = 500ms", "header_timeout = 2m", "body_timeout = 1h",
                     "send_timeout = 45", "max_body_bytes = 2g", "max_header_bytes = 32k",
                     "max_pipeline_bytes = 1m"],
            "tls": ["session_lifetime = 1h", "handshake_timeout = 250ms"],
        }))
        res = check(self.path)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_problem_with_a_default(self):
        # No certificate at all: the error is about a setting left at its (empty) default.
        lines = [l for l in self.valid_lines() if not l.startswith(("cert_file", "key_file"))]
        self.write(lines)
        self.assert_errors(check(self.path), [r": tls\.(pfx_file|cert_file) \(default\): .+"])

    def test_cert_errors(self):
        pki = ct.pki()
        with self.subTest("missing cert file"):
            lines = [l if not l.startswith("cert_file") else "cert_file = missing.pem"
                     for l in self.valid_lines()]
            self.write(lines)
            self.assert_errors(check(self.path),
                               [rf":{self.line_of(lines, 'cert_file')}: tls\.cert_file: .+"])
        with self.subTest("PFX and PEM together"):
            lines = self.valid_lines({"tls": [f"pfx_file = {pki}/server.pfx",
                                              "pfx_password = cmg-dev"]})
            self.write(lines)
            res = check(self.path)
            self.assertEqual(res.returncode, 1, res.stderr)
            self.assertRegex(res.stderr, r"tls\.(pfx_file|cert_file|key_file)")
            self.assertIn("not started", res.stderr)

    def test_start_with_errors_fails(self):
        self.write(self.valid_lines({"http": ["bogus = 1"]}))
        p = ct.run([ct.GATEWAY, "-c", self.path], timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"cmg-gateway: {self.path}: 1 error(s); not started", p.stderr)
        self.assertRegex(p.stderr, rf"{re.escape(self.path)}:\d+: http\.bogus: ")

    def test_print_defaults(self):
        res = ct.run([ct.GATEWAY, "--print-defaults"])
        self.assertEqual(res.returncode, 0, res.stderr)
        out = res.stdout
        defaults = {
            "gateway": {"instance_id": "0", "workers": "0", "listen": "0.0.0.0:443",
                        "max_connections": "200000", "drain_timeout": "30s",
                        "listen_backlog": "4096", "service_name": None},
            "tls": {"pfx_file": None, "pfx_password": None, "pfx_password_file": None,
                    "cert_file": None, "key_file": None, "enforce_tls12": "true",
                    "tls12_ciphers": None, "tls13_ciphersuites": None,
                    "groups": "X25519:P-256:P-384", "session_tickets": "true",
                    "ticket_key_file": None, "ticket_key_check_interval": "60s",
                    "session_lifetime": "12h", "handshake_timeout": "10s"},
            "http": {"max_header_bytes": "16k", "max_headers": "100", "max_body_bytes": "64m",
                     "header_timeout": "15s", "idle_timeout": "120s", "body_timeout": "60s",
                     "send_timeout": "60s", "max_keepalive_requests": "0",
                     "max_pipeline_bytes": "64k"},
            "admin": {"enabled": "true", "listen": "127.0.0.1:9180"},
            "log": {"file": "CMGService.log", "max_size": "5m", "level": "info",
                    "stderr": "true", "requests": "true", "connections": "true"},
        }
        for sec, keys in defaults.items():
            m = re.search(rf"(?ms)^\[{sec}\]\n(.*?)(?=^\[|\Z)", out)
            self.assertIsNotNone(m, f"no [{sec}] in --print-defaults")
            body = m.group(1)
            for key, val in keys.items():
                with self.subTest(key=f"{sec}.{key}"):
                    if val is None:
                        self.assertRegex(body, rf"(?m)^;?\s*{key}\s*=")
                    else:
                        self.assertRegex(body, rf"(?m)^{key}\s*=\s*{re.escape(val)}\s*$")
        ciphers = re.search(r"(?m)^tls12_ciphers\s*=\s*(\S+)", out).group(1).split(":")
        for c in ciphers:
            self.assertRegex(c, r"^ECDHE-(ECDSA|RSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$")

    def test_print_defaults_is_a_valid_config_body(self):
        # What --print-defaults prints parses (with a certificate and free ports added).
        res = ct.run([ct.GATEWAY, "--print-defaults"])
        text = res.stdout
        pki = ct.pki()
        text = re.sub(r"(?m)^listen = 0\.0\.0\.0:443$", f"listen = 127.0.0.1:{self.port}", text)
        text = re.sub(r"(?m)^; cert_file =$", f"cert_file = {pki}/server-chain.pem", text)
        text = re.sub(r"(?m)^; key_file =$", f"key_file = {pki}/server.key", text)
        with open(self.path, "w") as f:
            f.write(text)
        res = check(self.path)
        self.assertEqual(res.returncode, 0, res.stderr)


class TestPaths(ConfigCase):
    def test_relative_paths_resolve_against_config_dir(self):
        certs = os.path.join(self.dir, "certs")
        os.mkdir(certs)
        for f in ("server-chain.pem", "server.key", "server.pfx", "pfx-password.txt"):
            shutil.copy(os.path.join(ct.pki(), f), certs)
        lines = [l for l in self.valid_lines() if not l.startswith(("cert_file", "key_file"))]
        i = lines.index("[tls]") + 1
        lines[i:i] = ["cert_file = certs/server-chain.pem", "key_file = certs/server.key"]
        lines = [l for l in lines if not l.startswith("file =")]
        lines.insert(lines.index("[log]") + 1, "file = relative.log")
        self.write(lines)
        elsewhere = ct.mkdtemp("cwd-")
        res = check(self.path, cwd=elsewhere)
        self.assertEqual(res.returncode, 0, res.stderr)

        gw = ct.Gateway(name="relpaths", cwd=elsewhere)
        gw.config_path, gw.port, gw.admin_port = self.path, self.port, self.admin_port
        gw.start(write=False)
        try:
            self.assertEqual(gw.request("GET", SERVER).status, 200)
            log = os.path.join(self.dir, "relative.log")
            ct.wait_until(lambda: os.path.exists(log) and os.path.getsize(log) > 0, t(5))
            self.assertTrue(os.path.isfile(log), "log file not next to the config file")
            self.assertFalse(os.path.exists(os.path.join(elsewhere, "relative.log")))
        finally:
            self.assertEqual(gw.stop(), 0, gw.crash_report())

    def test_default_log_file_next_to_config(self):
        lines = [l for l in self.valid_lines() if not l.startswith("file =")]
        self.write(lines)
        elsewhere = ct.mkdtemp("cwd-")
        gw = ct.Gateway(name="deflog", cwd=elsewhere)
        gw.config_path, gw.port, gw.admin_port = self.path, self.port, self.admin_port
        gw.start(write=False)
        try:
            self.assertEqual(gw.request("GET", SERVER).status, 200)
            log = os.path.join(self.dir, "CMGService.log")
            ct.wait_until(lambda: os.path.exists(log), t(5))
            self.assertTrue(os.path.isfile(log))
            self.assertFalse(os.path.exists(os.path.join(elsewhere, "CMGService.log")))
        finally:
            self.assertEqual(gw.stop(), 0, gw.crash_report())


class TestPfx(ConfigCase):
    def pfx_lines(self, tls_lines):
        lines = [l for l in self.valid_lines() if not l.startswith(("cert_file", "key_file"))]
        i = lines.index("[tls]") + 1
        lines[i:i] = tls_lines
        return lines

    def serve(self, lines):
        self.write(lines)
        gw = ct.Gateway(name="pfx")
        gw.config_path, gw.port, gw.admin_port = self.path, self.port, self.admin_port
        gw.start(write=False)
        try:
            r = ct.curl(SERVER, gw.port, "-o", "/dev/null", "-w", "%{http_code}")
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "200"), r.stderr)
        finally:
            self.assertEqual(gw.stop(), 0, gw.crash_report())

    def test_pfx_with_password(self):
        self.serve(self.pfx_lines([f"pfx_file = {ct.pki()}/server.pfx",
                                   f"pfx_password = {ct.PFX_PASSWORD}"]))

    def test_pfx_with_password_file(self):
        shutil.copy(os.path.join(ct.pki(), "pfx-password.txt"), self.dir)
        self.serve(self.pfx_lines([f"pfx_file = {ct.pki()}/server.pfx",
                                   "pfx_password_file = pfx-password.txt"]))

    def test_wrong_pfx_password(self):
        lines = self.pfx_lines([f"pfx_file = {ct.pki()}/server.pfx",
                                "pfx_password = not-the-password"])
        self.write(lines)
        n = self.line_of(lines, "pfx_password")
        for args in (["-t"], []):
            with self.subTest(args=args):
                res = ct.run([ct.GATEWAY, "-c", self.path] + args, timeout=30)
                self.assertEqual(res.returncode, 1, res.stderr)
                hit = [l for l in res.stderr.splitlines()
                       if self.path in l and f":{n}:" in l and "tls.pfx_password" in l
                       and "wrong password" in l]
                self.assertTrue(hit, f"no line with {self.path}:{n}, tls.pfx_password and "
                                     f"'wrong password' in:\n{res.stderr}")
                self.assertIn("not started", res.stderr)


if __name__ == "__main__":
    unittest.main()
