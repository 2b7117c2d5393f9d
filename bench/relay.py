#!/usr/bin/env python3
"""Relay benchmark: client -> edge -> relay -> management point, cmg against HAProxy and nginx
(Python 3 standard library).

Called by bench/run-relay.sh. Three shapes of the same two-hop path, each ending at the same
management point simulator (cmg-mpsim, 4096-byte policy body):

  cmg      wrk -TLS-> cmg-gateway (checks the site token) =tunnel: TLS + HTTP/2, one
           connection=> cmg-connector -HTTP/1.1 keep-alive-> cmg-mpsim
  haproxy  wrk -TLS-> HAProxy edge =HTTP/2 over TLS, one connection=> HAProxy relay
           -HTTP/1.1 keep-alive-> cmg-mpsim
  nginx    wrk -TLS-> nginx edge =TLS, pool of keep-alive HTTP/1.1 connections=> nginx relay
           -HTTP/1.1 keep-alive-> cmg-mpsim

For each round, for each shape in interleaved order: start the three processes (edge and relay
pinned to CPU 0, mpsim to BENCH_BACKEND_CPU, 0 by default), check one request end to end
(status, body = what mpsim itself answers, path rewritten), warm up with wrk, then measure
`taskset -c 1 wrk -t1 -c100 -d12s --latency -H 'Authorization: Bearer <site token>' URL`:
req/s, p50/p99 and CPU per request of the edge + relay (utime+stime from /proc/PID/stat of
their processes over the measured run, divided by the requests wrk completed), and of mpsim
separately. A host-speed index (`openssl speed ecdsap256` on CPU 0) is taken before and after
each round.

Results: relay.json (every raw run, medians, ratios, host index, versions, commands), relay.md
(tables) and relay-cpu.png (gnuplot, if installed).
Exit status: 0 every shape answered every run correctly, 1 something failed (see "failures"),
2 setup error.
"""

import datetime
import http.client
import json
import os
import re
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import time

import benchlib
from benchlib import (BENCH, CLK_TCK, ROOT, T_START, binary_info, children, cleanup, cpu_stat,
                      cpu_ticks, env, fill, fmt, free_port, log, med, on_term, q, ratio,
                      rss_kib, spawn, stop_pid_list, stop_process, version)

ROLE = "72057594037927939"  # the management point's role id (as in tests and `make run`)
HIERARCHY = "5e0b1b52-2f0a-4d3c-9a11-0c8a7f3e2d61"
SNI = "cmg.localtest.me"  # cmgctl pki init's default service name
POLICY_ID = "{6F3C1B52-9A1D-4C1E-8E5B-2D7A4B0C9E11}"
MP_PATH = f"/SMS_MP/.sms_pol?{POLICY_ID}"
URL_PATH = f"/CCM_Proxy_ServerAuth/{ROLE}{MP_PATH}"
ALL_SHAPES = ("cmg", "haproxy", "nginx")
ROLES = ("edge", "relay", "backend")
GOAL = {"rps_vs_haproxy": 1.2, "edge_relay_cpu_us": 50.0}
ISSUE_REFERENCE = {"haproxy_edge_relay_cpu_us": [62, 94], "nginx_edge_relay_cpu_us": [115, 121]}


# --------------------------------------------------------------------------------------------
# settings


def settings(smoke):
    server_cpu = env("BENCH_SERVER_CPU", "0")
    s = {
        "mode": "smoke" if smoke else "full",
        "rounds": env("BENCH_ROUNDS", 1 if smoke else 3, int),
        "duration_s": env("BENCH_DURATION", 3 if smoke else 12, int),
        "warmup_s": env("BENCH_WARMUP", 1 if smoke else 2, int),
        "wrk_threads": env("BENCH_THREADS", 1, int),
        "wrk_connections": env("BENCH_CONNS", 100, int),
        "servers": [x for x in env("BENCH_SERVERS", ",".join(ALL_SHAPES)).split(",") if x],
        "server_cpu": server_cpu,
        "backend_cpu": env("BENCH_BACKEND_CPU", server_cpu),
        "client_cpu": env("BENCH_CLIENT_CPU", "1"),
        "policy_size": env("BENCH_POLICY_SIZE", 4096, int),
        "pool": env("BENCH_POOL", "128"),
        "host_index": env("BENCH_HOST_INDEX", 0 if smoke else 1, int) == 1,
    }
    bad = [x for x in s["servers"] if x not in ALL_SHAPES]
    if bad:
        sys.exit(f"relay.py: unknown server(s) {bad}; known: {', '.join(ALL_SHAPES)}")
    if s["rounds"] < 1 or s["duration_s"] < 1 or s["warmup_s"] < 0 or s["policy_size"] < 1:
        sys.exit("relay.py: BENCH_ROUNDS, BENCH_DURATION and BENCH_POLICY_SIZE must be >= 1")
    if s["pool"] != "default" and not s["pool"].isdigit():
        sys.exit("relay.py: BENCH_POOL is a number of idle connections or 'default'")
    return s


# --------------------------------------------------------------------------------------------
# small network helpers


def listening(port):
    """True when a TCP socket listens on 127.0.0.1:port (read from /proc/net/tcp, so that the
    check itself opens no connection a server would count or log)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                v = line.split()
                if v[1] == want and v[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def established_to(port):
    """ESTABLISHED TCP connections whose remote end is 127.0.0.1:port (the client sides of the
    connections to that listener)."""
    want = f"0100007F:{port:04X}"
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                v = line.split()
                if v[2] == want and v[3] == "01":
                    n += 1
    except OSError:
        pass
    return n


def http_get(port, path, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def https_get(port, path, token, timeout=5.0):
    """GET over TLS with the bearer token; returns (status, body, headers, TLS version,
    cipher)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    try:
        c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        body = r.read()
        tls = (c.sock.version(), c.sock.cipher()[0]) if c.sock else (None, None)
        return r.status, body, dict(r.getheaders()), tls[0], tls[1]
    finally:
        c.close()


# --------------------------------------------------------------------------------------------
# processes


class Proc:
    """One server process the harness started (pinned with taskset), stopped by PID."""

    def __init__(self, role, label, argv, cpu, run_dir, cwd=None, extra_log=None):
        self.role, self.label, self.cpu, self.run_dir = role, label, cpu, run_dir
        self.extra_log = extra_log  # the process's own log file
        self.argv = ["taskset", "-c", cpu] + [str(a) for a in argv]
        self.log_path = os.path.join(run_dir, f"{label}.out")
        self.log_f = open(self.log_path, "wb")
        self.proc = spawn(self.argv, stdin=subprocess.DEVNULL, stdout=self.log_f,
                          stderr=subprocess.STDOUT, cwd=cwd or run_dir)
        self.extra_pids = []  # nginx workers
        self.master = label.startswith("nginx")

    def pids(self):
        if self.master:
            return [self.proc.pid] + children(self.proc.pid)
        return [self.proc.pid]

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=800):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-n:].decode(errors="replace").strip()
        except OSError:
            text = ""
        if self.extra_log and os.path.exists(self.extra_log):
            with open(self.extra_log, "rb") as f:
                text += "\n" + f.read()[-n:].decode(errors="replace").strip()
        return text.strip()

    def stop(self):
        """SIGTERM, again after 10 s, SIGKILL after 5 more; returns how it ended."""
        if self.master:
            self.extra_pids = children(self.proc.pid)
        return stop_process(self.proc, self.extra_pids, self.log_f)


def wait_for(pred, timeout, what, procs):
    """Polls pred() every 50 ms until true; fails when a process died or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.label} exited with status {p.proc.returncode} while "
                                   f"waiting for {what}: {p.log_tail()}")
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"no {what} within {timeout} s")


class Stack:
    """edge -> relay -> backend (cmg-mpsim), started in the order backend, relay, edge."""

    name = "?"

    def __init__(self, ctx, tag):
        self.ctx = ctx
        self.s = ctx["s"]
        self.run_dir = os.path.join(ctx["work"], "runs", tag)
        os.makedirs(os.path.join(self.run_dir, "tmp"), exist_ok=True)
        self.procs = {}
        self.port = None  # the edge's client port
        self.hop_port = None  # the listener the edge -> relay hop connects to
        self.mp_port = None

    def cpu_of(self, role):
        return self.s["backend_cpu"] if role == "backend" else self.s["server_cpu"]

    def start_backend(self):
        ready = os.path.join(self.run_dir, "mpsim.ready")
        p = Proc("backend", "mpsim", [self.ctx["mpsim"], "--listen", "127.0.0.1:0",
                                      "--policy-size", self.s["policy_size"],
                                      "--ready-file", ready, "--quiet"],
                 self.cpu_of("backend"), self.run_dir)
        self.procs["backend"] = p
        wait_for(lambda: os.path.exists(ready) and os.path.getsize(ready) > 0, 15,
                 "mpsim ready file", [p])
        with open(ready) as f:
            self.mp_port = int(f.read().split()[0].rsplit(":", 1)[1])

    def start(self):
        self.start_backend()
        self.start_relay()
        self.start_edge()
        return self.sanity()

    def sanity(self, timeout=15):
        """The reference body straight from mpsim, then the same request through the edge until
        it answers 200 (a tunnel may need a moment), compared byte for byte."""
        st, ref = http_get(self.mp_port, MP_PATH)
        if st != 200 or len(ref) != self.s["policy_size"]:
            raise RuntimeError(f"mpsim answered {st} with {len(ref)} bytes to GET {MP_PATH}")
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        last = None
        while True:
            for p in self.procs.values():
                if not p.alive():
                    raise RuntimeError(f"{p.label} exited with status {p.proc.returncode} "
                                       f"before the first request: {p.log_tail()}")
            try:
                status, body, headers, tls_v, cipher = https_get(self.port, URL_PATH,
                                                                 self.ctx["token"], timeout=5)
                last = f"{status} with {len(body)} bytes"
                if status == 200:
                    break
            except (OSError, http.client.HTTPException) as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: GET {URL_PATH} through the edge never "
                                   f"answered 200 within {timeout} s (last: {last})")
            time.sleep(0.1)
        rec = {"status": status, "body_bytes": len(body), "body_matches_mpsim": body == ref,
               "first_200_after_s": round(time.monotonic() - t0, 3), "client_tls": tls_v,
               "client_cipher": cipher,
               "headers": {k: v for k, v in headers.items() if k.lower() != "date"}}
        if body != ref:
            raise RuntimeError(f"{self.name}: the body through the edge ({len(body)} bytes) "
                               f"differs from mpsim's own answer ({len(ref)} bytes)")
        return rec

    def pids(self, role):
        return self.procs[role].pids() if role in self.procs else []

    def alive(self):
        return all(p.alive() for p in self.procs.values())

    def dead(self):
        return [p for p in self.procs.values() if not p.alive()]

    def metrics(self):
        out = {}
        if "backend" in self.procs and self.procs["backend"].alive():
            try:
                st, body = http_get(self.mp_port, "/mpsim/stats")
                out["mpsim"] = json.loads(body) if st == 200 else {"status": st}
            except (OSError, http.client.HTTPException, ValueError) as e:
                out["mpsim"] = {"error": str(e)}
        return out

    def commands(self):
        return {role: q(p.argv) for role, p in self.procs.items()}

    def stop(self):
        out = {}
        for role in ("edge", "relay", "backend"):
            if role in self.procs:
                out[role] = self.procs[role].stop()
        return out

    def log_tails(self):
        return {role: p.log_tail() for role, p in self.procs.items()}


class CmgStack(Stack):
    name = "cmg"

    def start(self):
        """mpsim, the gateway (it must listen before the connector dials its tunnel port), the
        connector, then wait until the gateway counts the tunnel as open."""
        self.start_backend()
        self.start_gateway()
        self.start_connector()
        return self.sanity()

    def start_gateway(self):
        pki = self.ctx["pki"]
        self.port, self.aport, self.hop_port = free_port(), free_port(), free_port()
        cfg = os.path.join(self.run_dir, "gateway.ini")
        with open(cfg, "w") as f:
            f.write(fill("gateway-relay.ini.in", {
                "PORT": self.port, "APORT": self.aport, "TPORT": self.hop_port,
                "CERT": os.path.join(pki, "server-chain.pem"),
                "KEY": os.path.join(pki, "server.key"),
                "ROOT": os.path.join(pki, "root-ca.crt"),
                "INTER": os.path.join(pki, "intermediate-ca.crt"),
                "ROOTCRL": os.path.join(pki, "root.crl"),
                "INTERCRL": os.path.join(pki, "intermediate.crl"),
                "TOKENCERT": os.path.join(pki, "token-signing.crt"),
                "HIERARCHY": HIERARCHY,
                "LOG": os.path.join(self.run_dir, "cmg-gateway.log")}))
        gw = Proc("edge", "cmg-gateway", [self.ctx["gateway"], "-c", cfg],
                  self.cpu_of("edge"), self.run_dir,
                  extra_log=os.path.join(self.run_dir, "cmg-gateway.log"))
        self.procs["edge"] = gw
        wait_for(lambda: listening(self.port) and listening(self.hop_port) and
                 listening(self.aport), 15, "cmg-gateway listeners", [gw])

    def start_connector(self):
        pki = self.ctx["pki"]
        self.cport = free_port()
        ccfg = os.path.join(self.run_dir, "connector.ini")
        pool = self.s["pool"]
        with open(ccfg, "w") as f:
            f.write(fill("connector-relay.ini.in", {
                "TPORT": self.hop_port, "MPPORT": self.mp_port, "ROLE": ROLE,
                "CERT": os.path.join(pki, "connector.crt"),
                "KEY": os.path.join(pki, "connector.key"),
                "ROOT": os.path.join(pki, "root-ca.crt"), "APORT": self.cport,
                "LOG": os.path.join(self.run_dir, "cmg-connector.log"),
                "UPSTREAM": (f"max_idle = {pool}" if pool != "default"
                             else "; the connector's defaults")}))
        cn = Proc("relay", "cmg-connector", [self.ctx["connector"], "-c", ccfg],
                  self.cpu_of("relay"), self.run_dir,
                  extra_log=os.path.join(self.run_dir, "cmg-connector.log"))
        self.procs["relay"] = cn
        gw = self.procs["edge"]
        t = time.monotonic()
        wait_for(lambda: benchlib.metric_sum(benchlib.prom_metrics(self.aport, timeout=2),
                                             "cmg_tunnels_open") >= 1,
                 20, "tunnel up at the gateway (cmg_tunnels_open)", [gw, cn])
        self.tunnel_up_s = round(time.monotonic() - t, 3)
        if not self.ctx.get("connector_version"):  # it has no version option; its log says
            try:
                with open(os.path.join(self.run_dir, "cmg-connector.log"), errors="replace") as f:
                    m = re.search(r"cmg-connector (\S+) started", f.read())
                self.ctx["connector_version"] = m.group(1) if m else None
            except OSError:
                pass

    def sanity(self, timeout=15):
        rec = super().sanity(timeout)
        rec["tunnel_up_after_s"] = self.tunnel_up_s
        return rec

    def metrics(self):
        out = super().metrics()
        if self.procs.get("edge") and self.procs["edge"].alive():
            out["gateway"] = benchlib.prom_metrics(self.aport)
        if self.procs.get("relay") and self.procs["relay"].alive():
            out["connector"] = benchlib.prom_metrics(self.cport)
        return out


class HaproxyStack(Stack):
    name = "haproxy"

    def start_relay(self):
        self.hop_port = free_port()
        cfg = os.path.join(self.run_dir, "haproxy-relay.cfg")
        with open(cfg, "w") as f:
            f.write(fill("haproxy-relay.cfg.in", {
                "PORT": self.hop_port, "PEM": self.ctx["server_pem"],
                "CA": self.ctx["ca_chain"], "MPPORT": self.mp_port, "MAXCONN": 4096}))
        p = Proc("relay", "haproxy-relay", ["haproxy", "-db", "-f", cfg],
                 self.cpu_of("relay"), self.run_dir)
        self.procs["relay"] = p
        wait_for(lambda: listening(self.hop_port), 15, "haproxy relay listener", [p])

    def start_edge(self):
        self.port = free_port()
        cfg = os.path.join(self.run_dir, "haproxy-edge.cfg")
        with open(cfg, "w") as f:
            f.write(fill("haproxy-edge.cfg.in", {
                "PORT": self.port, "PEM": self.ctx["server_pem"],
                "RELAYPORT": self.hop_port, "CA": self.ctx["root_ca"],
                "CLIENTPEM": self.ctx["client_pem"], "SNI": SNI, "MAXCONN": 4096}))
        p = Proc("edge", "haproxy-edge", ["haproxy", "-db", "-f", cfg],
                 self.cpu_of("edge"), self.run_dir)
        self.procs["edge"] = p
        wait_for(lambda: listening(self.port), 15, "haproxy edge listener", [p])


class NginxStack(Stack):
    name = "nginx"

    def _nginx(self, role, template, values):
        d = os.path.join(self.run_dir, role)
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        cfg = os.path.join(d, "nginx.conf")
        values = dict(values, D=d, WC=4096,
                      POOL=self.s["pool"] if self.s["pool"] != "default" else 128)
        with open(cfg, "w") as f:
            f.write(fill(template, values))
        p = Proc(role, f"nginx-{role}", ["nginx", "-c", cfg, "-p", d],
                 self.cpu_of(role), self.run_dir,
                 extra_log=os.path.join(d, "nginx-error.log"))
        self.procs[role] = p
        return p

    def start_relay(self):
        pki = self.ctx["pki"]
        self.hop_port = free_port()
        p = self._nginx("relay", "nginx-relay.conf.in", {
            "PORT": self.hop_port, "CERT": os.path.join(pki, "server-chain.pem"),
            "KEY": os.path.join(pki, "server.key"), "CA": self.ctx["ca_chain"],
            "MPPORT": self.mp_port})
        wait_for(lambda: listening(self.hop_port) and children(p.proc.pid), 15,
                 "nginx relay listener and worker", [p])

    def start_edge(self):
        pki = self.ctx["pki"]
        self.port = free_port()
        p = self._nginx("edge", "nginx-edge.conf.in", {
            "PORT": self.port, "CERT": os.path.join(pki, "server-chain.pem"),
            "KEY": os.path.join(pki, "server.key"), "RELAYPORT": self.hop_port,
            "CA": self.ctx["root_ca"], "CLIENTCERT": self.ctx["client_chain"],
            "CLIENTKEY": os.path.join(pki, "connector.key"), "SNI": SNI})
        wait_for(lambda: listening(self.port) and children(p.proc.pid), 15,
                 "nginx edge listener and worker", [p])


STACKS = {"cmg": CmgStack, "haproxy": HaproxyStack, "nginx": NginxStack}
# what the edge and the relay are, per shape (for the report)
PROCESS_NAMES = {"cmg": ("cmg-gateway", "cmg-connector"),
                 "haproxy": ("HAProxy edge", "HAProxy relay"),
                 "nginx": ("nginx edge (master+worker)", "nginx relay (master+worker)")}


# --------------------------------------------------------------------------------------------
# one measured run


def run_wrk(ctx, port, duration):
    token = ctx["token"]
    return benchlib.run_wrk(ctx["s"], f"https://127.0.0.1:{port}{URL_PATH}", duration,
                            headers=[f"Authorization: Bearer {token}"],
                            redact={token: "$TOKEN"})


def throughput_run(ctx, name, rnd):
    s = ctx["s"]
    st = STACKS[name](ctx, f"r{rnd}-{name}")
    rec = {"round": rnd, "server": name, "ok": False}
    foreign = benchlib.foreign_processes()
    if foreign:
        rec["foreign_processes_at_start"] = foreign
    try:
        rec["sanity"] = st.start()
        rec["port"] = st.port
        rec["server_commands"] = st.commands()
        rss = {"start": {r: sum(rss_kib(p) for p in st.pids(r)) for r in ROLES}}
        if s["warmup_s"] > 0:
            w = run_wrk(ctx, st.port, s["warmup_s"])
            rec["warmup"] = {k: w.get(k) for k in ("requests", "rps", "socket_errors", "non2xx",
                                                   "wrk_rc", "command")}
            if w.get("non2xx") or not w.get("requests"):
                rec["warmup"]["wrk_output"] = w["wrk_output"]
        if st.dead():
            p = st.dead()[0]
            raise RuntimeError(f"{p.label} exited during the warm-up (status "
                               f"{p.proc.returncode}): {p.log_tail()}")
        pids = {r: st.pids(r) for r in ROLES}
        rss["after_warmup"] = {r: sum(rss_kib(p) for p in pids[r]) for r in ROLES}
        m0 = st.metrics()
        st0, ru0 = cpu_stat(), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = {p: cpu_ticks(p) for r in ROLES for p in pids[r]}
        w = run_wrk(ctx, st.port, s["duration_s"])
        st1, ru1 = cpu_stat(), resource.getrusage(resource.RUSAGE_CHILDREN)
        t1 = {}
        for p in t0:
            try:
                t1[p] = cpu_ticks(p)
            except (FileNotFoundError, ProcessLookupError):
                pass
        if st.dead():
            p = st.dead()[0]
            raise RuntimeError(f"{p.label} exited during the measured run (status "
                               f"{p.proc.returncode}): {p.log_tail()}")
        rec["connections"] = {"edge_to_relay": established_to(st.hop_port),
                              "relay_to_backend": established_to(st.mp_port)}
        m1 = st.metrics()
        pids_after = {r: st.pids(r) for r in ROLES}
        if any(sorted(pids_after[r]) != sorted(pids[r]) for r in ROLES):
            rec["pid_change"] = {"before": pids, "after": pids_after}
        rss["after_run"] = {r: sum(rss_kib(p) for p in pids_after[r]) for r in ROLES}
        rec["rss_kib"] = rss
        rec.update({k: v for k, v in w.items()})
        ticks = {r: sum(t1.get(p, t0[p]) - t0[p] for p in pids[r]) for r in ROLES}
        rec["server_pids"] = pids
        rec["cpu_s"] = {r: round(ticks[r] / CLK_TCK, 3) for r in ROLES}
        if w.get("requests"):
            n, secs = w["requests"], w["duration_s"]
            per = {r: ticks[r] / CLK_TCK * 1e6 / n for r in ROLES}
            per["edge+relay"] = per["edge"] + per["relay"]
            per["all"] = per["edge+relay"] + per["backend"]
            rec["cpu_us_per_req"] = {k: round(v, 2) for k, v in per.items()}
            util = {r: ticks[r] / CLK_TCK / secs for r in ROLES}
            util["edge+relay"] = util["edge"] + util["relay"]
            util["server_cpu"] = sum(util[r] for r in ROLES if st.cpu_of(r) == s["server_cpu"])
            rec["cpu_utilisation"] = {k: round(v, 3) for k, v in util.items()}
        # mpsim's own count of what it served during the measured run (the second
        # /mpsim/stats request and its connection count themselves: -1 each)
        b0, b1 = m0.get("mpsim") or {}, m1.get("mpsim") or {}
        if "requests" in b0 and "requests" in b1:
            rec["backend_served"] = {
                "requests": b1["requests"] - b0["requests"] - 1,
                "connections_opened": b1.get("connections_total", 0)
                - b0.get("connections_total", 0) - 1}
        rec["server_metrics"] = m1
        # Who else used the CPUs: busy time of each CPU (/proc/stat) minus the time of the
        # processes pinned to it (servers; wrk on the client CPU), per second of the run.
        wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        rec["wrk_cpu_s"] = round(wrk_cpu, 3)
        secs = w.get("duration_s") or s["duration_s"]
        own = {}
        for r in ROLES:
            c = st.cpu_of(r)
            own[c] = own.get(c, 0.0) + ticks[r] / CLK_TCK
        own[s["client_cpu"]] = own.get(s["client_cpu"], 0.0) + wrk_cpu
        if all(c in st0 and c in st1 for c in own):
            rec["cpu_busy_per_s"] = {f"cpu{c}": round((st1[c][0] - st0[c][0]) / CLK_TCK / secs,
                                                      3) for c in own}
            rec["cpu_steal_per_s"] = {f"cpu{c}": round((st1[c][1] - st0[c][1]) / CLK_TCK / secs,
                                                       3) for c in own}
            rec["foreign_load_per_s"] = {
                f"cpu{c}": round(((st1[c][0] - st0[c][0]) / CLK_TCK - own[c]) / secs, 3)
                for c in own}
        rec["ok"] = bool(w.get("requests")) and not w.get("non2xx") and w.get("wrk_rc") == 0
    except Exception as e:  # noqa: BLE001 - record and go on with the next shape
        rec["error"] = str(e)
    finally:
        rec["stop"] = st.stop()
        for role, how in rec["stop"].items():
            label = st.procs[role].label
            if label.startswith("cmg-") and how["exit_status"] not in (0, None):
                rec.setdefault("error", f"{label} exited with status {how['exit_status']}")
                rec["ok"] = False
        rec["server_log_tails"] = st.log_tails()
    return rec


# --------------------------------------------------------------------------------------------
# summaries

CPU_KEYS = ("edge+relay", "edge", "relay", "backend", "all")


def summarise(runs, servers):
    medians = {}
    for name in servers:
        ok = [r for r in runs if r["server"] == name and r.get("ok")]

        def rng(vals):
            vals = [v for v in vals if v is not None]
            return [min(vals), max(vals)] if vals else [None, None]

        cpu = {k: med([r["cpu_us_per_req"].get(k) for r in ok if r.get("cpu_us_per_req")])
               for k in CPU_KEYS}
        m = {
            "runs_ok": len(ok),
            "runs": sum(1 for r in runs if r["server"] == name),
            "rps": med([r.get("rps") for r in ok]),
            "p50_ms": med([r.get("p50_ms") for r in ok]),
            "p99_ms": med([r.get("p99_ms") for r in ok]),
            "cpu_us_per_req": cpu,
            "edge_relay_cpu_us": cpu["edge+relay"],
            "server_cpu_utilisation": med([(r.get("cpu_utilisation") or {}).get("server_cpu")
                                           for r in ok]),
            "rps_range": rng([r.get("rps") for r in ok]),
            "p99_ms_range": rng([r.get("p99_ms") for r in ok]),
            "edge_relay_cpu_us_range": rng([(r.get("cpu_us_per_req") or {}).get("edge+relay")
                                            for r in ok]),
            "backend_cpu_us_range": rng([(r.get("cpu_us_per_req") or {}).get("backend")
                                         for r in ok]),
        }
        # what one core could relay if the edge and relay had it to themselves
        m["edge_relay_rps_per_core"] = round(1e6 / cpu["edge+relay"]) if cpu["edge+relay"] \
            else None
        medians[name] = m
    ratios, paired = {}, {}
    keys = ("rps", "p50_ms", "p99_ms", "edge_relay_cpu_us")
    if "cmg" in servers:
        for peer in servers:
            if peer == "cmg":
                continue
            a, b = medians["cmg"], medians[peer]
            ratios[f"cmg/{peer}"] = {k: ratio(a[k], b[k]) for k in keys}
            per_round = {}
            for k in keys:
                vals = []
                for rnd in sorted({r["round"] for r in runs}):
                    x = [r for r in runs if r["round"] == rnd and r.get("ok")]
                    ca = next((val(r, k) for r in x if r["server"] == "cmg"), None)
                    pb = next((val(r, k) for r in x if r["server"] == peer), None)
                    if ca is not None and pb:
                        vals.append(round(ca / pb, 3))
                per_round[k] = {"per_round": vals, "median": med(vals)}
            paired[f"cmg/{peer}"] = per_round
    return medians, ratios, paired


def summarise_foreign(procs):
    """'cmg-connector ×3, python3 -m unittest ×1' from [(pid, command line)]."""
    counts = {}
    for _pid, cmd in procs:
        m = re.search(r"python3 -m unittest|cmg-(gateway|connector|mpsim)", cmd)
        key = m.group(0) if m else cmd.split()[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} ×{n}" for k, n in sorted(counts.items()))


def val(r, k):
    if k == "edge_relay_cpu_us":
        return (r.get("cpu_us_per_req") or {}).get("edge+relay")
    return r.get(k)


def goal_check(medians, ratios):
    c, h = medians.get("cmg"), medians.get("haproxy")
    if not c or not h or not c["runs_ok"] or not h["runs_ok"]:
        return None
    r = ratios.get("cmg/haproxy") or {}
    g = {
        "rps_ratio_vs_haproxy": r.get("rps"),
        "rps_ratio_goal": GOAL["rps_vs_haproxy"],
        "rps_met": r.get("rps") is not None and r["rps"] >= GOAL["rps_vs_haproxy"],
        "p99_cmg_ms": c["p99_ms"], "p99_haproxy_ms": h["p99_ms"],
        "p99_met": c["p99_ms"] is not None and h["p99_ms"] is not None
        and c["p99_ms"] <= h["p99_ms"],
        "edge_relay_cpu_us": c["edge_relay_cpu_us"],
        "edge_relay_cpu_goal_us": GOAL["edge_relay_cpu_us"],
        "cpu_met": c["edge_relay_cpu_us"] is not None
        and c["edge_relay_cpu_us"] <= GOAL["edge_relay_cpu_us"],
    }
    g["met"] = g["rps_met"] and g["p99_met"] and g["cpu_met"]
    return g


# --------------------------------------------------------------------------------------------
# report


def yes(b):
    return "met" if b else "**not met**"


def write_markdown(path, res):
    s = res["settings"]
    L = []
    L.append(f"# Relay: cmg-gateway → cmg-connector vs HAProxy and nginx edge → relay — "
             f"{res['date']} ({res['mode']})")
    L.append("")
    backend_where = ("the same CPU" if s["backend_cpu"] == s["server_cpu"]
                     else f"CPU {s['backend_cpu']}")
    L.append(f"Host: {res['host']['cpu_model']}, {res['host']['cpus']} CPUs, kernel "
             f"{res['host']['kernel']}. Edge and relay on CPU {s['server_cpu']}, cmg-mpsim on "
             f"{backend_where}, wrk on CPU {s['client_cpu']}; {s['rounds']} round(s) "
             f"interleaved ({', '.join(s['servers'])}), {s['warmup_s']} s warm-up + "
             f"{s['duration_s']} s measured, wrk -t{s['wrk_threads']} -c{s['wrk_connections']} "
             f"--latency, keep-alive, `GET {res['url_path']}` with `Authorization: Bearer "
             f"<site token>` ({res['token_bytes']} bytes), {s['policy_size']}-byte policy body "
             f"from cmg-mpsim. One worker each (gateway `workers = 1`, so the connector holds "
             f"one tunnel; HAProxy `nbthread 1`; nginx `worker_processes 1`). Total runtime "
             f"{res['runtime_s']:.0f} s.")
    L.append("")
    L.append("Shapes: **cmg** = cmg-gateway (checks the site token: RS256 signature, issuer, "
             "audience, lifetime on every request) → tunnel (TLS 1.3 + HTTP/2, one connection, "
             "gateway as HTTP/2 client) → cmg-connector → keep-alive HTTP/1.1 → cmg-mpsim; "
             "**haproxy** = HAProxy edge → HTTP/2 over TLS (`proto h2`, ALPN h2, one "
             "connection) → HAProxy relay → keep-alive HTTP/1.1 → cmg-mpsim; **nginx** = "
             "nginx edge → TLS, upstream keep-alive HTTP/1.1 pool (nginx has no HTTP/2 "
             "upstream) → nginx relay → keep-alive HTTP/1.1 → cmg-mpsim. The peers rewrite the "
             "path like the gateway (drop `/CCM_Proxy_ServerAuth/<role id>`) but **do not "
             "validate the token**; the gateway does, which costs it CPU.")
    L.append("")
    v = res["versions"]
    L.append("Versions: " + "; ".join(f"{k} {v[k]}" for k in (
        "cmg-gateway", "cmg-connector", "cmg-mpsim", "nginx", "haproxy", "openssl", "wrk")
        if v.get(k)))
    L.append("")
    L.append("Compare ratios, not absolute figures: the host's speed drifts (see the host index).")
    L.append("")
    t = res.get("throughput")
    if t:
        L.append("## Results (medians)")
        L.append("")
        L.append("| shape | req/s | p50 (ms) | p99 (ms) | edge+relay CPU µs/req | edge | relay "
                 "| mpsim CPU µs/req | CPU 0 use | edge+relay req/s per core (derived) "
                 "| runs ok |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, m in t["medians"].items():
            c = m["cpu_us_per_req"]
            L.append(f"| {name} | {fmt(m['rps'], 0, True)} | {fmt(m['p50_ms'], 2)} | "
                     f"{fmt(m['p99_ms'], 2)} | **{fmt(c['edge+relay'], 1)}** | "
                     f"{fmt(c['edge'], 1)} | {fmt(c['relay'], 1)} | {fmt(c['backend'], 1)} | "
                     f"{fmt(m['server_cpu_utilisation'], 2)} | "
                     f"{fmt(m['edge_relay_rps_per_core'], 0, True)} | "
                     f"{m['runs_ok']}/{m['runs']} |")
        L.append("")
        L.append("edge / relay: " + "; ".join(
            f"{n}: {PROCESS_NAMES[n][0]} / {PROCESS_NAMES[n][1]}" for n in t["medians"])
            + ". CPU = utime+stime of every thread of those processes over the measured run / "
            "requests wrk completed. The derived column is 10⁶ / edge+relay µs: what one core "
            "could relay if mpsim did not share it.")
        L.append("")
        if t["ratios"]:
            L.append("Ratios (cmg / peer). req/s above 1 = cmg faster; latency and CPU/request "
                     "below 1 = cmg better. First figure: ratio of the medians; in brackets: "
                     "median of the per-round (paired) ratios.")
            L.append("")
            L.append("| ratio | req/s | p50 | p99 | edge+relay CPU/request |")
            L.append("|---|---:|---:|---:|---:|")
            for k, r in t["ratios"].items():
                p = t["paired_ratios"][k]
                L.append(f"| {k} | {fmt(r['rps'], 2)} ({fmt(p['rps']['median'], 2)}) | "
                         f"{fmt(r['p50_ms'], 2)} ({fmt(p['p50_ms']['median'], 2)}) | "
                         f"{fmt(r['p99_ms'], 2)} ({fmt(p['p99_ms']['median'], 2)}) | "
                         f"{fmt(r['edge_relay_cpu_us'], 2)} "
                         f"({fmt(p['edge_relay_cpu_us']['median'], 2)}) |")
            L.append("")
        g = res.get("goal")
        if g:
            L.append("## Goal")
            L.append("")
            L.append(f"- req/s ≥ {g['rps_ratio_goal']}× HAProxy's: cmg/haproxy = "
                     f"{fmt(g['rps_ratio_vs_haproxy'], 2)} — {yes(g['rps_met'])}")
            L.append(f"- p99 equal or better: cmg {fmt(g['p99_cmg_ms'], 2)} ms, HAProxy "
                     f"{fmt(g['p99_haproxy_ms'], 2)} ms — {yes(g['p99_met'])}")
            L.append(f"- edge+relay ≤ {g['edge_relay_cpu_goal_us']:.0f} µs per request: cmg "
                     f"{fmt(g['edge_relay_cpu_us'], 1)} µs — {yes(g['cpu_met'])}")
            L.append(f"- (the issue's reference on this machine: HAProxy's h2 relay "
                     f"{ISSUE_REFERENCE['haproxy_edge_relay_cpu_us'][0]}–"
                     f"{ISSUE_REFERENCE['haproxy_edge_relay_cpu_us'][1]} µs, nginx "
                     f"{ISSUE_REFERENCE['nginx_edge_relay_cpu_us'][0]}–"
                     f"{ISSUE_REFERENCE['nginx_edge_relay_cpu_us'][1]} µs edge+relay per request)")
            L.append("")
        L.append("### Every run")
        L.append("")
        L.append("| round | shape | req/s | p50 (ms) | p99 (ms) | CPU µs/req edge / relay / "
                 "mpsim | requests | non-2xx/3xx | socket errors (c/r/w/t) | CPU 0 use | other "
                 "load per CPU | connections edge→relay / relay→mpsim | mpsim connections "
                 "opened | note |")
        L.append("|---:|---|---:|---:|---:|---|---:|---:|---|---:|---|---|---:|---|")
        for r in t["runs"]:
            se = r.get("socket_errors") or {}
            c = r.get("cpu_us_per_req") or {}
            cn = r.get("connections") or {}
            note = r.get("error", "") if not r.get("ok") else ""
            L.append(
                f"| {r['round']} | {r['server']} | {fmt(r.get('rps'), 0, True)} | "
                f"{fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | "
                f"{fmt(c.get('edge'), 1)} / {fmt(c.get('relay'), 1)} / "
                f"{fmt(c.get('backend'), 1)} | {r.get('requests', '–')} | "
                f"{r.get('non2xx', '–')} | {se.get('connect', '–')}/{se.get('read', '–')}/"
                f"{se.get('write', '–')}/{se.get('timeout', '–')} | "
                f"{fmt((r.get('cpu_utilisation') or {}).get('server_cpu'), 2)} | "
                + ", ".join(f"{k} {fmt(x, 2)}" for k, x in
                            (r.get("foreign_load_per_s") or {}).items())
                + f" | {cn.get('edge_to_relay', '–')} / {cn.get('relay_to_backend', '–')} | "
                f"{(r.get('backend_served') or {}).get('connections_opened', '–')} | "
                f"{note.replace('|', '/')[:200]} |")
        L.append("")
    hi = res.get("host_index")
    if hi:
        L.append("### Host-speed index (openssl speed ecdsap256 sign/s on the server CPU)")
        L.append("")
        L.append("| round | before | after |")
        L.append("|---:|---:|---:|")
        for rnd in sorted({h["round"] for h in hi}):
            b = next((h.get("ecdsap256_sign_per_s") for h in hi
                      if h["round"] == rnd and h["when"] == "before"), None)
            a = next((h.get("ecdsap256_sign_per_s") for h in hi
                      if h["round"] == rnd and h["when"] == "after"), None)
            L.append(f"| {rnd} | {fmt(b, 0, True)} | {fmt(a, 0, True)} |")
        L.append("")
    if res["failures"] or res["notes"]:
        L.append("## Failures and notes")
        L.append("")
        for f in res["failures"]:
            L.append(f"- **failure**: {f}")
        for n in res["notes"]:
            L.append(f"- {n}")
        L.append("")
    L.append("## Reproduce")
    L.append("")
    L.append("`make bench-relay` (or `bench/run-relay.sh`; `--smoke` for the quick check). The "
             "exact commands of every run are in relay.json (the token is written as $TOKEN; "
             "it comes from the `token` command there).")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_plot(res, out_dir, work):
    if not shutil.which("gnuplot") or not res.get("throughput"):
        return None
    med_ = res["throughput"]["medians"]
    rows = [(n, m["cpu_us_per_req"]) for n, m in med_.items()
            if m["cpu_us_per_req"].get("edge+relay") is not None]
    if not rows:
        return None
    dat = os.path.join(work, "relay-cpu.dat")
    with open(dat, "w") as f:
        for n, c in rows:
            f.write(f"{n} {c['edge']} {c['relay']} {c['backend']} {c['edge+relay']}\n")
    png = os.path.join(out_dir, "relay-cpu.png")
    gp = f"""set terminal {benchlib.gnuplot_png_term()}
set output '{png}'
set title "CPU per request, edge → relay → mpsim ({res['date']}, medians; figure = edge+relay)"
set ylabel "CPU µs per request (utime+stime)"
set style data histograms
set style histogram rowstacked
set style fill solid 0.7 border -1
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set key outside right top
plot '{dat}' using 2:xtic(1) title 'edge' lc rgb '#4477aa', \\
     '' using 3 title 'relay' lc rgb '#66ccee', \\
     '' using 4 title 'mpsim' lc rgb '#bbbbbb', \\
     '' using 0:5:(sprintf("%.1f", $5)) with labels offset 0,-1 notitle
"""
    gpf = os.path.join(work, "relay-cpu.gp")
    with open(gpf, "w") as f:
        f.write(gp)
    p = subprocess.run(["gnuplot", gpf], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        res["notes"].append(f"gnuplot failed: {p.stderr.strip()[:300]}")
        return None
    return os.path.basename(png)


# --------------------------------------------------------------------------------------------


def main():
    smoke = "--smoke" in sys.argv[1:]
    unknown = [a for a in sys.argv[1:] if a != "--smoke"]
    if unknown:
        print(f"usage: {sys.argv[0]} [--smoke]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_term)
    s = settings(smoke)
    started_wall = datetime.datetime.now().astimezone()
    date = started_wall.strftime("%Y-%m-%d")
    work = os.environ.get("BENCH_WORK")
    if not work:
        sys.exit("relay.py: BENCH_WORK (a scratch directory) must be set; run bench/run-relay.sh")
    os.makedirs(work, exist_ok=True)
    out_dir = os.environ.get("BENCH_RESULTS") or (
        os.path.join(work, "results") if smoke else os.path.join(BENCH, "results", date))
    os.makedirs(out_dir, exist_ok=True)
    bins = {
        "gateway": os.environ.get("CMG_GATEWAY",
                                  os.path.join(ROOT, "build/default/gateway/cmg-gateway")),
        "connector": os.environ.get("CMG_CONNECTOR",
                                    os.path.join(ROOT, "build/default/connector/cmg-connector")),
        "mpsim": os.environ.get("CMG_MPSIM", os.path.join(ROOT, "build/default/mpsim/cmg-mpsim")),
    }
    cmgctl = os.environ.get("CMGCTL", os.path.join(ROOT, "build/default/deploy/cmgctl"))
    failures, notes = [], []

    servers = list(s["servers"])
    for name, tool in (("nginx", "nginx"), ("haproxy", "haproxy")):
        if name in servers and not shutil.which(tool):
            failures.append(f"{tool} is not installed (CMG_BENCH_DEPS=1 scripts/install-deps)")
            servers = [x for x in servers if x != name]
    for tool in ("wrk", "taskset", "openssl"):
        if not shutil.which(tool):
            print(f"relay.py: {tool} is not installed", file=sys.stderr)
            return 2
    for path in list(bins.values()) + [cmgctl]:
        if not os.access(path, os.X_OK):
            print(f"relay.py: {path} missing; build first", file=sys.stderr)
            return 2

    # Private copies of the binaries: a rebuild of the tree during the run cannot mix builds.
    os.makedirs(os.path.join(work, "bin"), exist_ok=True)
    bin_info, ctx = {}, {"s": s, "work": work}
    for k, src in bins.items():
        bin_info[k] = binary_info(src)
        dst = os.path.join(work, "bin", os.path.basename(src))
        shutil.copy2(src, dst)
        bin_info[k]["ran_as"] = dst
        ctx[k] = dst

    # the development PKI, the PEM files the peers take, and a site token
    pki = os.path.join(work, "pki")
    p = subprocess.run([cmgctl, "pki", "init", pki], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        print(f"relay.py: cmgctl pki init failed: {p.stderr}", file=sys.stderr)
        return 2

    def cat(name, parts):
        out = os.path.join(work, name)
        with open(out, "w") as f:
            for part in parts:
                with open(os.path.join(pki, part)) as g:
                    f.write(g.read())
        return out

    ctx["pki"] = pki
    ctx["server_pem"] = cat("server-combined.pem", ("server-chain.pem", "server.key"))
    ctx["client_pem"] = cat("client-combined.pem", ("connector.crt", "intermediate-ca.crt",
                                                    "connector.key"))
    ctx["client_chain"] = cat("client-chain.pem", ("connector.crt", "intermediate-ca.crt"))
    ctx["ca_chain"] = cat("ca-chain.pem", ("root-ca.crt", "intermediate-ca.crt"))
    ctx["root_ca"] = os.path.join(pki, "root-ca.crt")
    token_cmd = [cmgctl, "token", "issue", "site", "--key", os.path.join(pki, "token-signing.key"),
                 "--cert", os.path.join(pki, "token-signing.crt"), "--hierarchy", HIERARCHY,
                 "--lifetime", "1d"]
    p = subprocess.run(token_cmd, capture_output=True, text=True, timeout=60)
    token = p.stdout.strip()
    if p.returncode != 0 or token.count(".") != 2:
        print(f"relay.py: cmgctl token issue failed: {p.stderr}", file=sys.stderr)
        return 2
    ctx["token"] = token
    log(f"site token: {len(token)} bytes; shapes {', '.join(servers)}; results go to {out_dir}")

    res = {
        "benchmark": "relay",
        "date": date,
        "mode": s["mode"],
        "started": started_wall.isoformat(timespec="seconds"),
        "settings": s,
        "url_path": URL_PATH,
        "backend_path": MP_PATH,
        "token_bytes": len(token),
        "goal": None,
        "issue_reference": ISSUE_REFERENCE,
        "host": benchlib.host_info(),
        "binaries": bin_info,
        "versions": dict(
            {"cmg-gateway": version([ctx["gateway"], "-V"]),
             "cmg-connector": None,  # no version option: taken from its log below
             "cmg-mpsim": version([ctx["mpsim"], "-V"])},
            **benchlib.git_info(), **benchlib.peer_versions()),
        "method": {
            "cpu_per_request": "per role (edge, relay, backend = cmg-mpsim), sum over its "
                               "processes (nginx: master + worker; every thread) of "
                               "utime+stime from /proc/PID/stat, read just before and just "
                               "after the measured wrk run, / CLK_TCK, divided by the requests "
                               "wrk completed; edge+relay is the figure compared",
            "pinning": "edge and relay on BENCH_SERVER_CPU, cmg-mpsim on BENCH_BACKEND_CPU "
                       "(default: the same CPU), wrk on BENCH_CLIENT_CPU",
            "host_index": "taskset -c SERVER_CPU openssl speed -mr -seconds 1 ecdsap256, "
                          "sign/s, before and after each round",
            "token": "site token from cmgctl token issue site (RS256, development PKI); the "
                     "gateway verifies it on every request, the peers pass it on unchecked",
        },
        "commands": {},
        "failures": failures,
        "notes": notes,
    }
    foreign = benchlib.foreign_processes()
    if foreign:
        notes.append("other test/benchmark processes were running at the start ("
                     + summarise_foreign(foreign) + "); the numbers may be disturbed")

    try:
        runs, hidx = [], []
        for rnd in range(1, s["rounds"] + 1):
            if s["host_index"]:
                hidx.append(benchlib.host_index(s["server_cpu"], "before", rnd))
            for name in servers:
                log(f"round {rnd}/{s['rounds']}: {name} ({s['warmup_s']} s warm-up, "
                    f"{s['duration_s']} s measured)")
                r = throughput_run(ctx, name, rnd)
                runs.append(r)
                if r.get("ok"):
                    c = r.get("cpu_us_per_req") or {}
                    log(f"  {name}: {r['rps']:,.0f} req/s, p50 {r.get('p50_ms')} ms, p99 "
                        f"{r.get('p99_ms')} ms, CPU/request edge+relay {c.get('edge+relay')} µs "
                        f"(edge {c.get('edge')}, relay {c.get('relay')}), mpsim "
                        f"{c.get('backend')} µs")
                else:
                    log(f"  {name}: FAILED: {r.get('error') or 'see wrk output'}")
            if s["host_index"]:
                hidx.append(benchlib.host_index(s["server_cpu"], "after", rnd))
                log(f"  host index (ecdsap256 sign/s) before/after: "
                    f"{hidx[-2].get('ecdsap256_sign_per_s')} / "
                    f"{hidx[-1].get('ecdsap256_sign_per_s')}")
        medians, ratios, paired = summarise(runs, servers)
        res["throughput"] = {"runs": runs, "medians": medians, "ratios": ratios,
                             "paired_ratios": paired}
        res["host_index"] = hidx
        res["goal"] = goal_check(medians, ratios)
        for r in runs:
            tag = f"round {r['round']} {r['server']}"
            if not r.get("ok"):
                failures.append(f"{tag}: {r.get('error') or 'wrk exit ' + str(r.get('wrk_rc'))}"
                                f"{'; non-2xx/3xx responses: ' + str(r.get('non2xx')) if r.get('non2xx') else ''}")
            se = r.get("socket_errors") or {}
            if any(se.values()):
                notes.append(f"{tag}: wrk socket errors {se}")
            wu = r.get("warmup") or {}
            if wu.get("non2xx") or any((wu.get("socket_errors") or {}).values()):
                notes.append(f"{tag} warm-up: non-2xx {wu.get('non2xx')}, socket errors "
                             f"{wu.get('socket_errors')}")
            if r.get("pid_change"):
                notes.append(f"{tag}: server processes changed during the run {r['pid_change']}")
            if r.get("foreign_processes_at_start"):
                notes.append(f"{tag}: other test/benchmark processes running at its start: "
                             + summarise_foreign(r["foreign_processes_at_start"]))
            for role, how in (r.get("stop") or {}).items():
                if how.get("seconds", 0) > 2:
                    notes.append(f"{tag}: the {role} took {how['seconds']} s to stop after "
                                 f"SIGTERM ({how['how']})")
            bs = r.get("backend_served") or {}
            if r.get("requests") and bs.get("requests") is not None and \
                    bs["requests"] < r["requests"]:
                notes.append(f"{tag}: mpsim served {bs['requests']} requests during the measured "
                             f"run, wrk completed {r['requests']}")
            rss = r.get("rss_kib") or {}
            for role in ("edge", "relay"):
                a, b = (rss.get("after_warmup") or {}).get(role), \
                    (rss.get("after_run") or {}).get(role)
                if a and b and b - a > 4096:
                    notes.append(f"{tag}: {role} RSS grew by {b - a} KiB during the measured "
                                 f"run ({a} → {b})")
        busy = [f"{r['server']} r{r['round']} " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["foreign_load_per_s"].items() if v > 0.1)
            for r in runs if any(v > 0.1 for v in (r.get("foreign_load_per_s") or {}).values())]
        if busy:
            notes.append("other load on the benchmark CPUs (CPU-seconds per second not used by "
                         "the servers or wrk) above 0.10 in: " + "; ".join(busy))
        unsat = [f"{r['server']} r{r['round']} {r['cpu_utilisation']['server_cpu']:.2f}"
                 for r in runs if r.get("ok") and r.get("cpu_utilisation")
                 and r["cpu_utilisation"]["server_cpu"] < 0.9]
        if unsat:
            notes.append("CPU " + s["server_cpu"] + " (edge + relay" +
                         (" + mpsim" if s["backend_cpu"] == s["server_cpu"] else "") +
                         ") below 0.9 of a core during the measured run (" + ", ".join(unsat) +
                         "): the servers were not saturated, so req/s is bounded by wrk on the "
                         "client CPU (or by other load); compare CPU/request first")
        signs = [h.get("ecdsap256_sign_per_s") for h in hidx if h.get("ecdsap256_sign_per_s")]
        if signs and max(signs) / min(signs) > 1.10:
            notes.append(f"host-speed index varied {max(signs) / min(signs):.2f}x "
                         f"({min(signs):,.0f} to {max(signs):,.0f} sign/s) during the run")
    except KeyboardInterrupt as e:
        failures.append(f"interrupted: {e}")
        cleanup()
        raise
    finally:
        cleanup()
        res["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        res["runtime_s"] = round(time.monotonic() - T_START, 1)
        res["host"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        truns = (res.get("throughput") or {}).get("runs", [])
        res["commands"] = {
            "servers": {n: next((r.get("server_commands") for r in truns
                                 if r["server"] == n and r.get("server_commands")), None)
                        for n in servers},
            "wrk_warmup": next((r["warmup"]["command"] for r in truns if r.get("warmup")), None),
            "wrk": next((r.get("command") for r in truns if r.get("command")), None),
            "host_index": (res.get("host_index") or [{}])[0].get("command"),
            "pki": q([cmgctl, "pki", "init", pki]),
            "token": "TOKEN=$(" + q(token_cmd) + ")",
            "reproduce": "make bench-relay   # = bench/run-relay.sh",
        }
        for k, info in bin_info.items():
            try:
                if binary_info(info["path"])["sha256"] != info["sha256"]:
                    notes.append(f"{info['path']} was rebuilt while the benchmark ran; every "
                                 f"run used the copy taken at the start (sha256 "
                                 f"{info['sha256'][:16]}…, built {info['mtime']}), but the "
                                 "build may have loaded the host (see the host index)")
            except OSError as e:
                notes.append(f"{info['path']}: {e}")
        res["versions"]["cmg-connector"] = ctx.get("connector_version")
        res["ok"] = not failures
        res["results_dir"] = out_dir
        png = write_plot(res, out_dir, work)
        if png:
            res["plot"] = png
        text = json.dumps(res, indent=1, ensure_ascii=False).replace(ctx.get("token", "\0"),
                                                                      "$TOKEN")
        with open(os.path.join(out_dir, "relay.json"), "w") as f:
            # Paths inside the checkout are written relative to it, so results read the same
            # on any machine.
            f.write(text.replace(ROOT + "/", "") + "\n")
        write_markdown(os.path.join(out_dir, "relay.md"), res)
    log(f"done in {res['runtime_s']:.0f} s: {os.path.join(out_dir, 'relay.md')}")
    with open(os.path.join(out_dir, "relay.md")) as f:
        print(f.read())
    if failures:
        log(f"{len(failures)} failure(s):")
        for x in failures:
            log(f"  {x}")
        return 1
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
