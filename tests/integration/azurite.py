"""Azurite, the Azure Storage emulator, for integration tests (Python standard library only).

    az = Azurite().start()          # blob service only, on a free loopback port
    az.endpoint                     # http://127.0.0.1:<port>/devstoreaccount1 (path style)
    az.content_settings("cmgtest")  # a [content] section for a gateway or cmgctl INI file
    st, hdrs, body = az.request("GET", "cmgtest", "content/p1/a.bin")   # Shared Key signed
    az.count_requests("GET", "cmgtest", "content/p1/a.bin")            # from the debug log
    az.kill()                       # SIGKILL, for tests that lose storage mid-transfer
    az.stop()                       # SIGTERM, then SIGKILL after a bounded wait

Azurite is installed by scripts/install-deps into .deps/azurite (CMG_AZURITE_DIR overrides).
Each instance has its own temporary folder (data and debug log) and is stopped by the PID it
was started with; instances still running when the test process exits are killed.
"""

from __future__ import annotations

import atexit
import base64
import email.utils
import hashlib
import hmac
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
AZURITE_DIR = os.environ.get("CMG_AZURITE_DIR") or os.path.join(REPO, ".deps", "azurite")
MAIN_JS = os.path.join(AZURITE_DIR, "node_modules", "azurite", "dist", "src", "blob", "main.js")

ACCOUNT = "devstoreaccount1"
# The emulator's published, well-known account key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
API_VERSION = "2025-01-05"

_RUNNING = []


@atexit.register
def _cleanup():
    for az in list(_RUNNING):
        az.kill()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_REQ_RE = re.compile(r"RequestMethod=(\S+) RequestURL=(\S+)")


class AzuriteError(Exception):
    pass


class Azurite:
    """One Azurite blob service process on loopback."""

    def __init__(self, port=None, scale=1.0):
        if not os.path.isfile(MAIN_JS):
            raise AzuriteError(f"Azurite is not installed at {AZURITE_DIR} "
                               "(run scripts/install-deps, or set CMG_AZURITE_DIR)")
        self.port = port
        self.scale = scale  # timeouts are multiplied by it (sanitizer builds)
        self.dir = None
        self.proc = None

    # -- process

    def start(self, timeout=30):
        """Starts Azurite and waits (bounded) until it accepts connections. Retries on a new
        port when the one picked was taken meanwhile. Returns self."""
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="cmg-azurite-")
        last = ""
        for _attempt in range(3):
            port = self.port or _free_port()
            log = open(os.path.join(self.dir, "stdout.txt"), "ab")
            self.proc = subprocess.Popen(
                ["node", MAIN_JS, "--silent", "--disableTelemetry", "--blobHost", "127.0.0.1",
                 "--blobPort", str(port), "--location", os.path.join(self.dir, "data"),
                 "--debug", self.debug_log],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            _RUNNING.append(self)
            deadline = time.monotonic() + timeout * self.scale
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        self.port = port
                        return self
                except OSError:
                    time.sleep(0.1)
            last = self.output()[-2000:]
            self.kill()
            if self.port:  # a fixed port: no other port to try
                break
        raise AzuriteError(f"Azurite did not start:\n{last}")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after a bounded wait."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout * self.scale)
            except subprocess.TimeoutExpired:
                self.kill()
        self._forget()

    def kill(self):
        """SIGKILL now: storage that vanishes mid-transfer."""
        if self.running():
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._forget()

    def _forget(self):
        if self in _RUNNING:
            _RUNNING.remove(self)

    def cleanup(self):
        """Stops it and removes its folder (data and logs)."""
        self.stop()
        if self.dir and not os.environ.get("CMG_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # -- where and how

    @property
    def debug_log(self):
        return os.path.join(self.dir, "debug.log")

    @property
    def endpoint(self):
        """The blob endpoint, path style: the account is the first path segment."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def content_settings(self, container="cmgcontent", **extra):
        """A [content] section (dict) for a store in this Azurite."""
        s = {"store": "blob", "account": ACCOUNT, "account_key": KEY,
             "blob_endpoint": self.endpoint, "container": container,
             "api_version": API_VERSION}
        s.update(extra)
        return s

    def output(self):
        try:
            with open(os.path.join(self.dir, "stdout.txt"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- requests of the test's own (Shared Key signed, as the storage service wants them)

    def request(self, method, container, blob=None, query=None, headers=None, body=b"",
                timeout=30):
        """One Shared Key signed request: returns (status, headers dict lower-cased, body).
        query: a dict of parameters."""
        path = f"/{ACCOUNT}/{container}"
        if blob is not None:
            path += "/" + urllib.parse.quote(blob, safe="/~")
        q = urllib.parse.urlencode(query or {}, quote_via=urllib.parse.quote, safe="~")
        hdrs = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": API_VERSION}
        hdrs.update(headers or {})
        if body or method in ("PUT", "POST"):
            hdrs["Content-Length"] = str(len(body))
        hdrs["Authorization"] = f"SharedKey {ACCOUNT}:" + sign(method, path, query or {}, hdrs)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * self.scale)
        try:
            c.request(method, path + ("?" + q if q else ""), body=body or None, headers=hdrs)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def get_blob(self, container, blob):
        """The blob's bytes, or an AssertionError naming the status and error code."""
        st, h, body = self.request("GET", container, blob)
        if st != 200:
            raise AssertionError(f"GET {container}/{blob}: {st} {h.get('x-ms-error-code')}")
        return body

    def list_blobs(self, container, prefix=None):
        """Names of the blobs in container (one page of up to 5000)."""
        q = {"restype": "container", "comp": "list"}
        if prefix:
            q["prefix"] = prefix
        st, h, body = self.request("GET", container, query=q)
        if st == 404:
            return []
        if st != 200:
            raise AssertionError(f"list {container}: {st} {h.get('x-ms-error-code')}")
        import xml.etree.ElementTree as ET
        root = ET.fromstring(body)
        return [b.findtext("Name") for b in root.iter("Blob")]

    # -- what Azurite saw

    def requests(self, settle=True):
        """[(method, path, query)] of every request Azurite logged, in order. The debug log
        is written asynchronously: with settle, it is read until two reads agree (bounded)."""
        def read():
            try:
                with open(self.debug_log, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                return []
            out = []
            for m in _REQ_RE.finditer(text):
                u = urllib.parse.urlsplit(m.group(2))
                out.append((m.group(1), urllib.parse.unquote(u.path), u.query))
            return out
        seen = read()
        if settle:
            for _ in range(int(20 * self.scale)):
                time.sleep(0.1)
                again = read()
                if again == seen:
                    break
                seen = again
        return seen

    def count_requests(self, method="GET", container=None, blob=None, settle=True):
        """How many requests of method reached container/blob (None: any container / any
        blob, container requests included)."""
        n = 0
        for m, path, _q in self.requests(settle):
            if m != method:
                continue
            parts = path.lstrip("/").split("/", 2)  # account, container, blob
            if container is not None and (len(parts) < 2 or parts[1] != container):
                continue
            if blob is not None and (len(parts) < 3 or parts[2] != blob):
                continue
            n += 1
        return n


def sign(method, path, query, headers, account=ACCOUNT, key=KEY):
    """The Shared Key signature (base64) of a Blob request: path as sent (encoded), query a
    dict of decoded values, headers as sent."""
    h = {k.lower(): v for k, v in headers.items()}
    length = h.get("content-length", "")
    std = [h.get("content-encoding", ""), h.get("content-language", ""),
           "" if length == "0" else length, h.get("content-md5", ""),
           h.get("content-type", ""), h.get("date", ""), h.get("if-modified-since", ""),
           h.get("if-match", ""), h.get("if-none-match", ""), h.get("if-unmodified-since", ""),
           h.get("range", "")]
    canon_headers = "".join(f"{k}:{' '.join(v.split())}\n"
                            for k, v in sorted(h.items()) if k.startswith("x-ms-"))
    resource = f"/{account}{path}"
    for k in sorted(query, key=str.lower):
        resource += f"\n{k.lower()}:{query[k]}"
    sts = method + "\n" + "\n".join(std) + "\n" + canon_headers + resource
    mac = hmac.new(base64.b64decode(key), sts.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()
