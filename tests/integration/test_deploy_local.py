"""cmgctl --provider local with real processes: create 1, scale to 4 and the connector (count
mode) follows to hold tunnels to all 4 while clients go through every instance, scale to 2,
and delete leaves nothing running."""

import json
import os
import random
import socket
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
    def test_create_scale_delete_with_connector(self):
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
                    "--gateway-setting", "tunnel.ping_interval=1s"], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            self._scale_with_clients(state, common, port, tunnel_base, admin_base)
        finally:
            r = ct.run([ct.CMGCTL, "delete", *common, "--json"], timeout=180)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(state, "state.json")))
        for i in range(4):
            with self.assertRaises(OSError):
                ct.fetch(admin_base + i, "/healthz", timeout=1)

    def _scale_with_clients(self, state, common, port, tunnel_base, admin_base):
        with tk.MpSim().start() as mp, tk.Connector(
                [], {tk.MP_ROLE: mp.url},
                extra={"connector": {"gateways": None, "gateway_host": "127.0.0.1",
                                     "instances": 1, "port_base": tunnel_base}}) as cn:
            cn.start(wait_tunnels=1)
            stop = threading.Event()
            results = []

            def clients():
                while not stop.is_set():
                    r = ct.curl(tk.path(tk.MP_ROLE, "/echo"), port, "-o", "/dev/null",
                                "-w", "%{http_code}", *tk.cert_args(), timeout=20)
                    results.append(r.stdout.strip())

            r = ct.run([ct.CMGCTL, "scale", "4", *common], timeout=180)
            self.assertEqual(r.returncode, 0, r.stderr)
            cn.wait_tunnels(4, timeout=30)
            t = threading.Thread(target=clients)
            t.start()
            try:
                m = cn.metrics()
                for i in range(4):
                    self.assertGreaterEqual(m.sum("cmg_connector_tunnels", instance=str(i)), 1)
                st = json.loads(ct.run([ct.CMGCTL, "status", *common, "--json"]).stdout)
                self.assertEqual([x["state"] for x in st["instance_states"]], ["Ready"] * 4)
                ok = ct.wait_until(lambda: all(
                    ct.Metrics(ct.fetch(admin_base + i, "/metrics")[2].decode())
                    .sum("cmg_tunnels_open") >= 1 for i in range(4)), ct.t(30))
                self.assertTrue(ok, "every instance has a tunnel from the connector")
                n = len(results)
                ct.wait_until(lambda: len(results) >= n + 8, ct.t(60))
            finally:
                stop.set()
                t.join()
            self.assertGreater(len(results), 0)
            self.assertEqual(set(results), {"200"}, results)

            r = ct.run([ct.CMGCTL, "scale", "2", *common], timeout=180)
            self.assertEqual(r.returncode, 0, r.stderr)
            ok = ct.wait_until(lambda: cn.metrics().sum("cmg_connector_tunnels") == 2 and
                               len(cn.metrics().series("cmg_connector_tunnels_wanted")) == 2,
                               ct.t(30))
            self.assertTrue(ok, cn.metrics().text)
            for _ in range(5):
                r = ct.curl(tk.path(tk.MP_ROLE, "/echo"), port, "-o", "/dev/null", "-w",
                            "%{http_code}", *tk.cert_args())
                self.assertEqual(r.stdout.strip(), "200")
            st = json.loads(ct.run([ct.CMGCTL, "status", *common, "--json"]).stdout)
            self.assertEqual(len(st["instance_states"]), 2)
            for i in (2, 3):
                with self.assertRaises(OSError):
                    ct.fetch(admin_base + i, "/healthz", timeout=1)


if __name__ == "__main__":
    unittest.main()
