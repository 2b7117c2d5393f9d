"""cmgctl --provider local with real processes: create 1, scale to 4 and the connector (count
mode) follows to hold tunnels to all 4, scale to 2, while clients run through the gateway the
whole time and every one of their requests succeeds; delete leaves nothing running."""

import json
import os
import random
import socket
import sys
import threading
import unittest

import cmgtest as ct
import tunnelkit as tk


def free_range(n):
    """A base port with n free consecutive loopback ports after it."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


class LocalDeploy(unittest.TestCase):
    def _create(self, *extra):
        """A local deployment of one instance; returns (state, common, port, tunnel_base,
        admin_base)."""
        p = ct.pki()
        d = ct.mkdtemp("local-")
        state = os.path.join(d, "state")
        port = ct.free_port()
        tunnel_base = free_range(16)
        admin_base = free_range(16)
        common = ["--state", state]
        r = ct.run([ct.CMGCTL, "create", "--provider", "local", *common,
                    "--service-cert-path", os.path.join(p, "server.pfx"),
                    "--service-cert-password-file", os.path.join(p, "pfx-password.txt"),
                    "--ca-root-cert", os.path.join(p, "root-ca.crt"),
                    "--ca-intermediate-cert", os.path.join(p, "intermediate-ca.crt"),
                    "--listen", f"127.0.0.1:{port}", "--tunnel-port-base", str(tunnel_base),
                    "--admin-port-base", str(admin_base),
                    "--gateway-setting", "auth.crl_fetch=false",
                    "--gateway-setting",
                    f"auth.crl_files={p}/intermediate.crl, {p}/root.crl",
                    "--gateway-setting", f"tunnel.crl_files={p}/intermediate.crl, {p}/root.crl",
                    "--gateway-setting", "tunnel.ping_interval=1s", *extra],
                   timeout=ct.t(120))
        self.assertEqual(r.returncode, 0, r.stderr)
        return state, common, port, tunnel_base, admin_base

    def _delete(self, state, common, admin_base, instances):
        r = ct.run([ct.CMGCTL, "delete", *common, "--json"], timeout=ct.t(180))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(state, "state.json")))
        for i in range(instances):
            with self.assertRaises(OSError):
                ct.fetch(admin_base + i, "/healthz", timeout=1)

    def test_create_scale_delete_with_connector(self):
        state, common, port, tunnel_base, admin_base = self._create()
        try:
            self._scale_with_clients(state, common, port, tunnel_base, admin_base)
        finally:
            self._delete(state, common, admin_base, 4)

    def test_status_reports_the_storage_alert(self):
        state, common, port, _, admin_base = self._create(
            "--enable-storage-quota", "--storage-quota-gb", "1",
            "--storage-warning-pct", "40", "--storage-critical-pct", "80")
        try:
            def storage():
                r = ct.run([ct.CMGCTL, "status", *common, "--json"])
                self.assertEqual(r.returncode, 0, r.stderr)
                return json.loads(r.stdout)["alerts"]["storage"]

            st = storage()
            self.assertEqual((st["used"], st["threshold"], st["state"], st["enabled"]),
                             (0, 1 << 30, "ok", True), st)
            # the folder store the instances share: a file just under 50 % of the threshold
            # (sparse: its size counts, no disk is spent), then one over 80 %
            pkg = os.path.join(state, "content-store", "content", "PS100001")
            os.makedirs(pkg)
            sizes = {"warning": (1 << 30) // 2, "critical": (1 << 30) * 85 // 100}
            for want, size in sizes.items():
                with open(os.path.join(pkg, "big.bin"), "wb") as f:
                    f.truncate(size)
                st = storage()
                self.assertEqual((st["used"], st["state"]), (size, want), st)
            text = ct.run([ct.CMGCTL, "status", *common]).stdout
            self.assertRegex(text, r"storage: 0\.850 GB used of the 1 GB alert threshold "
                                   r"\(85\.0 %\): critical")
            self.assertIn("traffic: alert threshold 10000 GB in 14 days", text)
            self.assertIn("not counted yet", text)
            # cmgctl content list reads the same store against the same threshold
            ini = os.path.join(state, "instance-0", "gateway.ini")
            r = ct.run([ct.CMGCTL, "content", "list", "-c", ini, "--json"])
            self.assertEqual(r.returncode, 0, r.stderr)
            cl = json.loads(r.stdout)["storage"]
            self.assertEqual((cl["used"], cl["alert"], cl["state"]),
                             (sizes["critical"], 1 << 30, "critical"), cl)
            # ... and so does the deployment named by its state folder
            r = ct.run([ct.CMGCTL, "content", "list", "--deployment", state, "--json"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["storage"], cl)
        finally:
            self._delete(state, common, admin_base, 1)

    def _scale_with_clients(self, state, common, port, tunnel_base, admin_base):
        with tk.MpSim().start() as mp, tk.Connector(
                [], {tk.MP_ROLE: mp.url},
                extra={"connector": {"gateways": None, "gateway_host": "127.0.0.1",
                                     "instances": 1, "port_base": tunnel_base}}) as cn:
            cn.start(wait_tunnels=1)
            clients = Clients(port)
            clients.start()
            try:
                self.assertTrue(clients.wait_more(4), clients.summary())

                # 1 -> 4: new instances take clients only once the connector's tunnel is up
                r = ct.run([ct.CMGCTL, "scale", "4", *common], timeout=ct.t(180))
                self.assertEqual(r.returncode, 0, r.stderr)
                cn.wait_tunnels(4, timeout=30)
                m = cn.metrics()
                for i in range(4):
                    self.assertGreaterEqual(m.sum("cmg_connector_tunnels", instance=str(i)), 1)
                st = json.loads(ct.run([ct.CMGCTL, "status", *common, "--json"]).stdout)
                self.assertEqual([x["state"] for x in st["instance_states"]], ["Ready"] * 4)
                self.assertTrue(all(x.get("tunnels", 0) >= 1 for x in st["instance_states"]),
                                st)
                # the clients reach every instance (SO_REUSEPORT spreads new connections)
                ok = ct.wait_until(lambda: all(
                    proxied(admin_base + i) >= 1 for i in range(4)) or clients.done(),
                    ct.t(60))
                self.assertTrue(ok and not clients.done(),
                                "every instance proxied client requests: " + clients.summary())

                # 4 -> 2 while the clients go on: the leaving instances drain
                r = ct.run([ct.CMGCTL, "scale", "2", *common], timeout=ct.t(180))
                self.assertEqual(r.returncode, 0, r.stderr)
                ok = ct.wait_until(lambda: cn.metrics().sum("cmg_connector_tunnels") == 2 and
                                   len(cn.metrics().series("cmg_connector_tunnels_wanted")) == 2,
                                   ct.t(30))
                self.assertTrue(ok, cn.metrics().text)
                self.assertTrue(clients.wait_more(8), clients.summary())
            finally:
                clients.stop()
            print(f"\nclients during scaling: {clients.summary()}", file=sys.stderr)
            self.assertGreater(clients.ok, 0)
            self.assertEqual(clients.failures, [], clients.summary())
            st = json.loads(ct.run([ct.CMGCTL, "status", *common, "--json"]).stdout)
            self.assertEqual(len(st["instance_states"]), 2)
            for i in (2, 3):
                with self.assertRaises(OSError):
                    ct.fetch(admin_base + i, "/healthz", timeout=1)


def proxied(admin_port):
    """Requests an instance sent through a tunnel (0 when it does not answer)."""
    try:
        return ct.Metrics(ct.fetch(admin_port, "/metrics", timeout=5)[2].decode()) \
            .sum("cmg_proxy_requests_total")
    except OSError:
        return 0


class Clients:
    """Client threads that send requests through the gateway one after the other, each on a
    new TLS connection (so that every request lands on whichever instance the kernel picks),
    until stopped or MAX_REQUESTS were sent. Every outcome other than 200 is a failure."""

    THREADS = 2
    MAX_REQUESTS = 20000

    def __init__(self, port):
        self.port = port
        self.ctx = tk.client_context()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ok = 0
        self.sent = 0
        self.failures = []
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(self.THREADS)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(ct.t(60))

    def done(self):
        with self.lock:
            return self.sent >= self.MAX_REQUESTS

    def wait_more(self, n):
        """Until n more requests were answered (True), or the clients ended or ran long."""
        with self.lock:
            want = self.ok + len(self.failures) + n
        return bool(ct.wait_until(lambda: self.ok + len(self.failures) >= want,
                                  ct.t(60))) and not self.done()

    def summary(self):
        with self.lock:
            return (f"{self.ok} ok, {len(self.failures)} failed of {self.sent} sent"
                    + (f"; first failures: {self.failures[:5]}" if self.failures else ""))

    def _one(self):
        try:
            with ct.Conn(self.port, ctx=self.ctx, timeout=20) as c:
                c.send(ct.req("GET", tk.path(tk.MP_ROLE, "/echo"),
                              headers={"Connection": "close"}))
                r = c.read_response()
            return r.status == 200, f"{r.status} {r.body[:80]!r}"
        except Exception as e:  # any error is a failed request, counted with its reason
            return False, f"{type(e).__name__}: {e}"

    def _run(self):
        while not self.stopping.is_set():
            with self.lock:
                if self.sent >= self.MAX_REQUESTS:
                    return
                self.sent += 1
            good, what = self._one()
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failures.append(what)


if __name__ == "__main__":
    unittest.main()
