"""Helpers for the content tests: content access tokens signed with the openssl command line,
a Content Information decoder written from [MS-PCCRC] 2.3/2.4 (independent of the gateway's
encoder), the hashes a file should have, and a throttling TCP relay to slow a store down."""

import hashlib
import hmac
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

ALG = "1.2.840.113549.1.1.11"


def b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def content_token(key, package, content_id=None, start=None, end=None,
                  client="GUID:9b1c7a52-2d4e-4f1a-8c3b-5e6f7a8b9c0d", issuer="mp1.contoso.com",
                  alg=ALG, signature=None):
    """The query string a management point hands out: pid..et, then sig over the bytes
    before '&sig=' (RSASSA-PKCS1-v1_5 with SHA-256, by `key`)."""
    now = int(time.time())
    start = now - 60 if start is None else start
    end = now + 8 * 3600 if end is None else end
    q = urllib.parse.urlencode([("pid", package), ("cid", content_id or package),
                                ("tid", client), ("iss", issuer), ("alg", alg),
                                ("st", iso(start)), ("et", iso(end))], safe=":")
    if signature is None:
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=q.encode(),
                             capture_output=True, check=True).stdout
        signature = b64url(sig)
    return f"{q}&sig={signature}"


# ---- Content Information ----

def decode_ci_v1(b):
    """[MS-PCCRC] 2.3, little-endian. Returns dict with segments [(offset, length, block
    size, HoD, Kp, [block hashes])]."""
    ver, hash_alg, offset_first, read_last, nseg = struct.unpack_from("<HIIII", b, 0)
    assert ver == 0x0100, hex(ver)
    assert hash_alg == 0x800C, hex(hash_alg)
    pos = 18
    segs = []
    for _ in range(nseg):
        off, length, bsize = struct.unpack_from("<QII", b, pos)
        hod, kp = b[pos + 16:pos + 48], b[pos + 48:pos + 80]
        segs.append([off, length, bsize, hod, kp, None])
        pos += 80
    for s in segs:
        (n,) = struct.unpack_from("<I", b, pos)
        pos += 4
        s[5] = [b[pos + 32 * i:pos + 32 * (i + 1)] for i in range(n)]
        pos += 32 * n
    assert pos == len(b), (pos, len(b))
    return {"offset_first": offset_first, "read_last": read_last, "segments": segs}


def decode_ci_v2(b):
    """[MS-PCCRC] 2.4, big-endian. Returns dict with segments [(length, HoD, Kp)]."""
    minor, major, hash_alg = b[0], b[1], b[2]
    assert (major, minor) == (2, 0), (major, minor)
    assert hash_alg == 4, hash_alg
    offset_first, read_first, length, start_offset = struct.unpack_from(">QQIQ", b, 3)
    pos = 31
    segs = []
    while pos < len(b):
        chunk_type = b[pos]
        (chunk_len,) = struct.unpack_from(">I", b, pos + 1)
        assert chunk_type == 0
        pos += 5
        end = pos + chunk_len
        while pos < end:
            (slen,) = struct.unpack_from(">I", b, pos)
            segs.append((slen, b[pos + 4:pos + 36], b[pos + 36:pos + 68]))
            pos += 68
    assert pos == len(b)
    return {"range_length": length, "segments": segs}


def expected_v1(data, secret_key):
    ks = hashlib.sha256(secret_key).digest()
    segs = []
    for off in range(0, len(data), 32 << 20):
        seg = data[off:off + (32 << 20)]
        blocks = [hashlib.sha256(seg[i:i + 65536]).digest() for i in range(0, len(seg), 65536)]
        hod = hashlib.sha256(b"".join(blocks)).digest()
        kp = hmac.new(ks, hod, hashlib.sha256).digest()
        segs.append([off, len(seg), 65536, hod, kp, blocks])
    return segs


def check_v2_against(data, ci, secret_key):
    """Every v2 segment's HoD and Kp against the bytes it covers (any cut is valid)."""
    ks = hashlib.sha512(secret_key).digest()[:32]
    off = 0
    for slen, hod, kp in ci["segments"]:
        assert 0 < slen <= 131072, slen
        want = hashlib.sha512(data[off:off + slen]).digest()[:32]
        assert hod == want, f"HoD of the segment at {off}"
        assert kp == hmac.new(ks, hod, hashlib.sha512).digest()[:32], f"Kp at {off}"
        off += slen
    assert off == len(data), (off, len(data))


# ---- a slow relay in front of a store ----

class Throttle:
    """Relays TCP from a local port to target, passing at most `rate` bytes per second back
    to the client, so a fill from the store is slow enough to be interrupted."""

    def __init__(self, target_port, rate):
        self.target = ("127.0.0.1", target_port)
        self.rate = rate
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            self.conns += [c, u]
            threading.Thread(target=self._pipe, args=(c, u, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, self.rate), daemon=True).start()

    def _pipe(self, src, dst, rate):
        try:
            while True:
                data = src.recv(16384 if rate else 65536)
                if not data:
                    break
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


def random_file(path, size, seed):
    """size deterministic pseudo-random bytes (fast: SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest() * 64
        i += 1
    data = bytes(out[:size])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return data
