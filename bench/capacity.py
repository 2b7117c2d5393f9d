#!/usr/bin/env python3
"""Capacity benchmark: how many managed clients one gateway instance holds per VM size, an
aggregate of several local instances, and side-by-side comparisons with nginx (Python 3
standard library; called by bench/run-capacity.sh).

Parts (BENCH_PARTS, comma-separated; default all):
  capacity   per profile (Lab, Standard, Large), a search for the most clients one instance
             holds with p99 under the objective and no errors, up to the open-file cap;
             measured memory and CPU per held client, and what the profile allows (derived)
  aggregate  several instances (SO_REUSEPORT on one port, tunnel ports 10124+i, connectors
             with instances = N) and several cmg-bench processes holding clients together
  handshake  full TLS 1.3 handshakes per second and server CPU per handshake, ECDSA P-256 and
             RSA-2048, the gateway against nginx, interleaved, medians; openssl speed limits
  idle       memory per idle TLS connection at 10k and 50k connections, gateway against nginx

The load is cmg-bench (bench/cmg-bench.c): each client holds one TLS connection with its own
client certificate and runs its policy cycle through gateway -> connector -> cmg-mpsim, with
a notification request held by mpsim between cycles, and now and then a content download.

Results: capacity.json, capacity.md and capacity-*.png in bench/results/YYYY-MM-DD/ (smoke:
the scratch directory). Exit status: 0 every part ran and every run was sane, 1 a failure
(listed in the report), 2 setup error.
"""

import datetime
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import benchlib
from benchlib import (BENCH, ROOT, T_START, binary_info, children, cleanup, env, fill, fmt,
                      free_port, log, med, on_term, q, ratio, rss_kib, spawn)
from relay import Proc, listening, wait_for

ROLE = "72057594037927939"
HIERARCHY = "5e0b1b52-2f0a-4d3c-9a11-0c8a7f3e2d61"
SNI = "cmg.localtest.me"
PACKAGE = "PS100001"
FD_CAP = 20000  # this machine's hard limit of open files per process (not the product's)
PER_BACKEND = 12000  # held notification requests per connector + mpsim pair (fd headroom)

# Azure sizes of the product's three choices (reference/cmg.md §2), and its documented figures.
PROFILES = {
    "lab": {"label": "Lab (B2s)", "sku": "Standard_B2s", "vcpus": 2, "mem_gib": 4,
            "documented_clients": 10,
            "note": "burstable: 40 % of one vCPU sustained (baseline), 2 vCPUs in bursts"},
    "standard": {"label": "Standard (A2_v2)", "sku": "Standard_A2_v2", "vcpus": 2,
                 "mem_gib": 4, "documented_clients": 6000, "note": ""},
    "large": {"label": "Large (A4_v2)", "sku": "Standard_A4_v2", "vcpus": 4, "mem_gib": 8,
              "documented_clients": 10000, "note": ""},
}
ALL_PARTS = ("capacity", "aggregate", "handshake", "idle")
GOAL_CLIENTS = 100000  # held clients on the 2-vCPU / 4 GiB profile (derived)


# --------------------------------------------------------------------------------------------
# settings


def ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def settings(smoke):
    s = {
        "mode": "smoke" if smoke else "full",
        "parts": [p for p in env("BENCH_PARTS", "capacity" if smoke else ",".join(ALL_PARTS))
                  .split(",") if p],
        "profiles": [p for p in env("BENCH_PROFILES", "standard" if smoke else
                                    "lab,standard,large").split(",") if p],
        "steps": ints(env("BENCH_STEPS", "300" if smoke else "2000,10000,19000")),
        "p99_objective_ms": env("BENCH_P99_MS", 100.0, float),
        "rate": env("BENCH_RATE", 300.0 if smoke else 500.0, float),
        "inflight": env("BENCH_INFLIGHT", 200, int),
        "hold_s": env("BENCH_HOLD", 4 if smoke else 30, float),
        "ramp_down_s": env("BENCH_RAMP_DOWN", 1 if smoke else 5, float),
        "notify_hold": env("BENCH_NOTIFY_HOLD", "2s" if smoke else "60s"),
        "content_every": env("BENCH_CONTENT_EVERY", 4 if smoke else 20, int),
        "content_size": env("BENCH_CONTENT_SIZE", 65536, int),
        "server_cpu": env("BENCH_SERVER_CPU", "0"),
        "client_cpu": env("BENCH_CLIENT_CPU", "1"),
        "agg_instances": env("BENCH_AGG_INSTANCES", 4, int),
        "agg_clients": env("BENCH_AGG_CLIENTS", 60000, int),
        "agg_workers": env("BENCH_AGG_WORKERS", 2, int),
        "per_backend": env("BENCH_PER_BACKEND", PER_BACKEND, int),
        "hs_rounds": env("BENCH_HS_ROUNDS", 3, int),
        "hs_seconds": env("BENCH_HS_SECONDS", 8, float),
        "hs_warmup": env("BENCH_HS_WARMUP", 2, float),
        "hs_clients": env("BENCH_HS_CLIENTS", 32, int),
        "idle_sizes": ints(env("BENCH_IDLE_SIZES", "10000,50000")),
        "idle_rate": env("BENCH_IDLE_RATE", 2000, int),
        "idle_procs_big": 4,
        "idle_per_proc_max": env("BENCH_IDLE_PER_PROC", FD_CAP - 1000, int),
        "host_index": env("BENCH_HOST_INDEX", 0 if smoke else 1, int) == 1,
    }
    bad = [p for p in s["parts"] if p not in ALL_PARTS]
    bad += [p for p in s["profiles"] if p not in PROFILES]
    if bad:
        sys.exit(f"capacity.py: unknown part or profile {bad}")
    if any(n < 1 for n in s["steps"]):
        sys.exit("capacity.py: BENCH_STEPS are client counts >= 1")
    return s


# --------------------------------------------------------------------------------------------
# emulating a VM size


def cgroup2_usable():
    """(path, why): a cgroup v2 directory where cpu and memory limits can be set, or None and
    the reason it cannot be used."""
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        ctl = os.path.join(root, "cgroup.controllers")
        if not os.path.exists(ctl):
            continue
        with open(ctl) as f:
            have = f.read().split()
        if not {"cpu", "memory"} <= set(have):
            why = (f"{root} is cgroup v2 but offers the controllers {have or 'none'}, "
                   "not cpu and memory")
            continue
        if not os.access(root, os.W_OK):
            why = f"{root} is not writable"
            continue
        try:
            with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
                f.write("+cpu +memory")
        except OSError as e:
            why = f"cannot enable cpu and memory in {root}: {e}"
            continue
        return root, None
    return None, locals().get("why", "no cgroup v2 hierarchy mounted")


class Emulation:
    """Puts a gateway inside a profile's limits: a cgroup v2 group (cpu.max, memory.max) when
    the host allows it, else CPU pinning (taskset) plus an address-space limit (prlimit)."""

    def __init__(self, s):
        self.s = s
        self.cg_root, self.cg_why = cgroup2_usable()
        self.groups = []

    def describe(self):
        if self.cg_root:
            return {"method": "cgroup v2", "root": self.cg_root,
                    "cpu": "cpu.max = vCPUs x 100000 per 100000 µs",
                    "memory": "memory.max = the profile's memory"}
        return {"method": "taskset + prlimit",
                "why_not_cgroup_v2": self.cg_why,
                "cpu": f"the gateway pinned to CPU {self.s['server_cpu']} (the host has "
                       f"{os.cpu_count()} CPUs; the load generator, connectors and mpsim on "
                       f"CPU {self.s['client_cpu']}), workers = the profile's vCPUs; CPU "
                       "figures are measured per client and scaled to the profile's vCPUs "
                       "(derived)",
                "memory": "prlimit --as = the profile's memory (address space: an upper bound "
                          "on what the process can use, stricter than resident memory)"}

    def wrap(self, profile, argv):
        """argv run inside the profile, and the CPU list for Proc's taskset."""
        p = PROFILES[profile]
        mem = p["mem_gib"] << 30
        if self.cg_root:
            return argv, ",".join(str(i) for i in range(os.cpu_count()))
        return ["prlimit", f"--as={mem}", "--"] + argv, self.s["server_cpu"]

    def enter(self, profile, pid):
        if not self.cg_root:
            return None
        p = PROFILES[profile]
        d = os.path.join(self.cg_root, f"cmg-bench-{profile}-{os.getpid()}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "cpu.max"), "w") as f:
            f.write(f"{p['vcpus'] * 100000} 100000")
        with open(os.path.join(d, "memory.max"), "w") as f:
            f.write(str(p["mem_gib"] << 30))
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        self.groups.append(d)
        return d

    def cleanup(self):
        for d in self.groups:
            try:
                os.rmdir(d)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# the gateway deployment: instances, connectors, management points


def port_range_free(base, n):
    for p in range(base, base + n):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


class Deployment:
    """n instances of cmg-gateway sharing one client port, k connector + cmg-mpsim pairs, every
    connector dialling every instance. Started in that order; stopped by PID."""

    def __init__(self, ctx, tag, instances, workers, backends, profile=None):
        self.ctx, self.s = ctx, ctx["s"]
        self.n, self.workers, self.k, self.profile = instances, workers, backends, profile
        self.run_dir = os.path.join(ctx["work"], "runs", tag)
        os.makedirs(self.run_dir, exist_ok=True)
        self.gws, self.cns, self.mps = [], [], []
        self.port = None
        self.aports, self.cports, self.mp_ports = [], [], []

    def all(self):
        return self.gws + self.cns + self.mps

    def start(self):
        pki = self.ctx["pki"]
        self.port = free_port()
        tbase = 10124
        if not port_range_free(tbase, self.n):
            tbase = free_port()
            while not port_range_free(tbase, self.n):
                tbase = free_port()
        self.tbase = tbase
        for j in range(self.k):
            ready = os.path.join(self.run_dir, f"mpsim{j}.ready")
            mp = Proc("backend", f"mpsim{j}",
                      [self.ctx["mpsim"], "--listen", "127.0.0.1:0", "--hold",
                       self.s["notify_hold"], "--ready-file", ready, "--quiet"],
                      self.s["client_cpu"], self.run_dir)
            self.mps.append(mp)
            wait_for(lambda: os.path.exists(ready) and os.path.getsize(ready) > 0, 15,
                     "mpsim ready file", [mp])
            with open(ready) as f:
                self.mp_ports.append(int(f.read().split()[0].rsplit(":", 1)[1]))
        for i in range(self.n):
            aport = free_port()
            self.aports.append(aport)
            cfg = os.path.join(self.run_dir, f"gateway{i}.ini")
            with open(cfg, "w") as f:
                f.write(fill("gateway-capacity.ini.in", {
                    "INSTANCE": i, "INSTANCES": self.n, "PORT": self.port,
                    "WORKERS": self.workers, "TPORT": tbase + i, "APORT": aport,
                    "CERT": os.path.join(pki, "server-chain.pem"),
                    "KEY": os.path.join(pki, "server.key"),
                    "ROOT": os.path.join(pki, "root-ca.crt"),
                    "INTER": os.path.join(pki, "intermediate-ca.crt"),
                    "ROOTCRL": os.path.join(pki, "root.crl"),
                    "INTERCRL": os.path.join(pki, "intermediate.crl"),
                    "TOKENCERT": os.path.join(pki, "token-signing.crt"),
                    "HIERARCHY": HIERARCHY, "STORE": self.ctx["store"],
                    "CACHE": os.path.join(self.run_dir, f"cache{i}"),
                    "LOG": os.path.join(self.run_dir, f"gateway{i}.log")}))
            argv = [self.ctx["gateway"], "-c", cfg]
            cpu = self.s["server_cpu"]
            if self.profile:
                argv, cpu = self.ctx["emu"].wrap(self.profile, argv)
            gw = Proc("edge", f"gateway{i}", argv, cpu, self.run_dir,
                      extra_log=os.path.join(self.run_dir, f"gateway{i}.log"))
            self.gws.append(gw)
            if self.profile:
                self.ctx["emu"].enter(self.profile, gw.proc.pid)
            wait_for(lambda: listening(aport) and listening(tbase + i), 20,
                     f"gateway {i} listeners", [gw])
        wait_for(lambda: listening(self.port), 10, "the client port", self.gws)
        for j in range(self.k):
            cport = free_port()
            self.cports.append(cport)
            cfg = os.path.join(self.run_dir, f"connector{j}.ini")
            with open(cfg, "w") as f:
                f.write(fill("connector-capacity.ini.in", {
                    "N": j + 1, "INSTANCES": self.n, "TBASE": tbase, "ROLE": ROLE,
                    "MPPORT": self.mp_ports[j], "MAXCONN": self.s["per_backend"] + 2000,
                    "CERT": os.path.join(pki, "connector.crt"),
                    "KEY": os.path.join(pki, "connector.key"),
                    "ROOT": os.path.join(pki, "root-ca.crt"), "APORT": cport,
                    "LOG": os.path.join(self.run_dir, f"connector{j}.log")}))
            self.cns.append(Proc("relay", f"connector{j}", [self.ctx["connector"], "-c", cfg],
                                 self.s["client_cpu"], self.run_dir,
                                 extra_log=os.path.join(self.run_dir, f"connector{j}.log")))
        want = self.workers * self.k
        for i, aport in enumerate(self.aports):
            wait_for(lambda: benchlib.metric_sum(benchlib.prom_metrics(aport, timeout=2),
                                                 "cmg_tunnels_open") >= want,
                     30, f"{want} tunnels at gateway {i}", self.all())

    def gateway_pids(self):
        return [g.proc.pid for g in self.gws]

    def dead(self):
        return [p.label for p in self.all() if not p.alive()]

    def metrics(self):
        return {"gateways": [benchlib.prom_metrics(a) for a in self.aports],
                "connectors": [benchlib.prom_metrics(c) for c in self.cports]}

    def stop(self):
        out = {}
        for p in self.gws + self.cns + self.mps:
            out[p.label] = p.stop()
        return out

    def commands(self):
        return {p.label: q(p.argv) for p in self.all()}


# --------------------------------------------------------------------------------------------
# cmg-bench runs


def bench_argv(ctx, port, clients, label, json_path, sources, pids, extra=()):
    s = ctx["s"]
    ramp_timeout = max(30, clients / max(1.0, ctx["rate_per_proc"]) * 2 + 30)
    argv = ["taskset", "-c", s["client_cpu"], ctx["bench"], "--connect", f"127.0.0.1:{port}",
            "--clients", clients, "--rate", round(ctx["rate_per_proc"], 1),
            "--inflight", s["inflight"], "--ramp-timeout", round(ramp_timeout),
            "--hold", s["hold_s"], "--ramp-down", s["ramp_down_s"],
            "--ca-cert", os.path.join(ctx["pki"], "intermediate-ca.crt"),
            "--ca-key", os.path.join(ctx["pki"], "intermediate-ca.key"),
            "--content-token-file", ctx["content_token_file"],
            "--content-every", s["content_every"], "--label", label, "--json", json_path]
    if sources:
        argv += ["--source", ",".join(sources)]
    for p in pids:
        argv += ["--server-pid", p]
    return [str(a) for a in argv + list(extra)], ramp_timeout


def run_bench(ctx, dep, clients_list, label):
    """Runs one cmg-bench process per entry of clients_list against dep at once; returns
    (merged summary, [per-process reports])."""
    s = ctx["s"]
    procs, paths, logs = [], [], []
    tcp0 = benchlib.sockstat_tcp_mem_pages()
    rss0 = {g.label: rss_kib(g.proc.pid) for g in dep.gws}
    deadline = 0
    for i, n in enumerate(clients_list):
        path = os.path.join(dep.run_dir, f"bench-{label}-{i}.json")
        sources = [f"127.{10 + i}.{k}.1" for k in range(4)]
        argv, ramp_timeout = bench_argv(ctx, dep.port, n, f"{label}/{i}", path, sources,
                                        dep.gateway_pids())
        deadline = max(deadline, ramp_timeout + s["hold_s"] + s["ramp_down_s"] + 120)
        lf = open(os.path.join(dep.run_dir, f"bench-{label}-{i}.log"), "wb")
        procs.append(spawn(argv, stdout=lf, stderr=subprocess.STDOUT))
        paths.append(path)
        logs.append(lf)
    mid = None
    t = time.monotonic()
    # the kernel's TCP memory and each gateway's RSS once the hold phase is under way
    while time.monotonic() - t < deadline and any(p.poll() is None for p in procs):
        time.sleep(1)
        if mid is None:
            states = []
            for p in paths:
                lp = p.replace(".json", ".log")
                try:
                    with open(lp, errors="replace") as f:
                        tail = f.read()[-400:]
                    states.append(" hold " in tail or " down " in tail)
                except OSError:
                    states.append(False)
            if all(states):
                time.sleep(min(5, s["hold_s"] / 2))
                mid = {"tcp_mem_pages": benchlib.sockstat_tcp_mem_pages(),
                       "gateway_rss_kib": {g.label: rss_kib(g.proc.pid) for g in dep.gws},
                       "connector_rss_kib": {c.label: rss_kib(c.proc.pid) for c in dep.cns},
                       "mpsim_rss_kib": {m.label: rss_kib(m.proc.pid) for m in dep.mps},
                       "metrics": dep.metrics()}
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    for lf in logs:
        lf.close()
    reports = []
    for i, path in enumerate(paths):
        try:
            with open(path) as f:
                reports.append(json.load(f))
        except (OSError, ValueError) as e:
            with open(path.replace(".json", ".log"), errors="replace") as f:
                tail = f.read()[-800:]
            reports.append({"ok": False, "error": f"no report: {e}", "log_tail": tail,
                            "exit_status": procs[i].returncode})
    summary = merge(reports, clients_list)
    summary["exit_status"] = [p.returncode for p in procs]
    summary["rss_before_kib"] = rss0
    summary["mid_hold"] = mid
    if mid and tcp0 is not None and mid.get("tcp_mem_pages") is not None:
        summary["kernel_tcp_mem_delta_kib"] = (mid["tcp_mem_pages"] - tcp0) * \
            os.sysconf("SC_PAGE_SIZE") // 1024
    summary["dead_after"] = dep.dead()
    return summary, reports


def hist_merge(hists):
    buckets = {}
    count = 0
    total = 0.0
    mx = 0.0
    for h in hists:
        if not h:
            continue
        for up, n in h.get("buckets_upper_us", []):
            buckets[up] = buckets.get(up, 0) + n
        count += h.get("count", 0)
        total += h.get("mean_ms", 0) * h.get("count", 0)
        mx = max(mx, h.get("max_ms", 0))
    out = {"count": count, "mean_ms": round(total / count, 3) if count else None,
           "max_ms": mx}
    keys = sorted(buckets)
    for name, pct in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p99_9_ms", 99.9)):
        if not count:
            out[name] = None
            continue
        rank = math.ceil(pct / 100 * count)
        seen = 0
        for k in keys:
            seen += buckets[k]
            if seen >= rank:
                out[name] = min(k / 1000.0, mx)
                break
    return out


def merge(reports, clients_list):
    ok = [r for r in reports if "result" in r]
    sumk = lambda path: sum(_get(r, path) or 0 for r in ok)  # noqa: E731
    errors = {}
    for r in ok:
        for k, v in r["all"]["errors_by_kind"].items():
            errors[k] = errors.get(k, 0) + v
    status = {}
    for r in ok:
        for k, v in r["hold"]["status"].items():
            status[k] = status.get(k, 0) + v
    hold_s = med([_get(r, "result.hold_s") for r in ok])
    out = {
        "processes": len(reports),
        "requested": sum(clients_list),
        "held": sumk("result.held"),
        "held_at_hold_end": sumk("result.held_at_hold_end"),
        "notify_held_at_hold_end": sumk("result.notify_held_at_hold_end"),
        "ramp_s": max((_get(r, "result.ramp_s") or 0 for r in ok), default=None),
        "hold_s": hold_s,
        "handshakes_ramp": sumk("all.handshakes") - sumk("hold.handshakes"),
        "handshakes_per_s_ramp": round(sum((_get(r, "all.handshakes") - _get(r, "hold.handshakes"))
                                           / max(0.001, _get(r, "result.ramp_s")) for r in ok), 1)
        if ok else None,
        "requests_hold": sumk("hold.requests"),
        "requests_per_s_hold": round(sumk("hold.requests_per_s"), 1),
        "requests_by_kind_hold": {k: sum(r["hold"]["requests_by_kind"].get(k, 0) for r in ok)
                                  for k in ("location", "policy", "status", "content_location",
                                            "content", "notify")},
        "cycles_hold": sumk("hold.cycles"),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "status_hold": status,
        "latency_cycle_hold": hist_merge([_get(r, "hold.latency_cycle") for r in ok]),
        "latency_by_kind_hold": {k: hist_merge([_get(r, f"hold.latency_by_kind.{k}")
                                                for r in ok])
                                 for k in ("location", "policy", "status", "content_location",
                                           "content")},
        "latency_handshake_ramp": hist_merge([_get(r, "all.latency_handshake") for r in ok]),
        "first_errors": [r.get("first_errors") for r in ok if r.get("first_errors")] +
                        [r.get("error") for r in reports if r.get("error")],
        "ok": len(ok) == len(reports) and all(r.get("ok") for r in reports),
    }
    # the gateway figures come from the first report (every process read the same PIDs)
    if ok and "server" in ok[0]:
        sv = ok[0]["server"]
        out["server"] = {k: sv.get(k) for k in (
            "start", "hold_start", "hold_end", "end", "rss_max_kib", "cpu_s_ramp", "cpu_s_hold",
            "cpu_cores_hold", "alive_at_end")}
        held = out["held_at_hold_end"]
        d_rss = sv["hold_end"]["rss_kib"] - sv["start"]["rss_kib"]
        out["server"]["rss_delta_kib"] = d_rss
        out["server"]["kib_per_held_client"] = round(d_rss / held, 2) if held else None
        hs = out["handshakes_ramp"]
        out["server"]["cpu_us_per_handshake_ramp"] = round(sv["cpu_s_ramp"] * 1e6 / hs, 1) \
            if hs else None
        hold = sv["hold_end"]["t"] - sv["hold_start"]["t"]
        out["server"]["cpu_us_per_client_s"] = round(sv["cpu_s_hold"] * 1e6 / hold / held, 3) \
            if held and hold > 0 else None
        out["server"]["cpu_us_per_request_hold"] = round(
            sv["cpu_s_hold"] * 1e6 / out["requests_hold"], 1) if out["requests_hold"] else None
    return out


def _get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# --------------------------------------------------------------------------------------------
# part: capacity per profile


def step_passes(summary, objective):
    p99 = (summary.get("latency_cycle_hold") or {}).get("p99_ms")
    reasons = []
    if summary.get("held") != summary.get("requested"):
        reasons.append(f"held {summary.get('held')} of {summary.get('requested')}")
    if summary.get("errors"):
        reasons.append(f"{summary['errors']} errors {summary.get('errors_by_kind')}")
    if p99 is None:
        reasons.append("no cycle request completed in the hold phase")
    elif objective is not None and p99 > objective:
        reasons.append(f"p99 {p99} ms > {objective} ms")
    if summary.get("dead_after"):
        reasons.append(f"process(es) died: {summary['dead_after']}")
    return not reasons, reasons


def capacity_step(ctx, profile, clients):
    p = PROFILES[profile]
    backends = max(1, math.ceil(clients / ctx["s"]["per_backend"]))
    tag = f"cap-{profile}-{clients}"
    dep = Deployment(ctx, tag, 1, p["vcpus"], backends, profile)
    rec = {"profile": profile, "clients": clients, "backends": backends,
           "workers": p["vcpus"]}
    try:
        dep.start()
        rec["commands"] = dep.commands()
        procs = math.ceil(clients / (FD_CAP - 1000))
        per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        ctx["rate_per_proc"] = ctx["s"]["rate"] / procs
        summary, reports = run_bench(ctx, dep, per, tag)
        rec["summary"] = summary
        rec["bench_command"] = bench_argv(ctx, dep.port, per[0], tag, "REPORT.json",
                                          [], dep.gateway_pids())[0]
        # the smoke check asserts sanity only (every client held, no error), never timing
        objective = None if ctx["s"]["mode"] == "smoke" else ctx["s"]["p99_objective_ms"]
        rec["pass"], rec["reasons"] = step_passes(summary, objective)
    except Exception as e:  # noqa: BLE001
        rec["pass"], rec["reasons"] = False, [f"setup or run failed: {e}"]
        rec["error"] = str(e)
    finally:
        rec["stop"] = dep.stop()
        bad = [k for k, v in rec["stop"].items() if v.get("exit_status") not in (0, None)
               and k.startswith("gateway")]
        if bad:
            rec.setdefault("notes", []).append(f"{bad} did not exit 0 on SIGTERM")
    sm = rec.get("summary") or {}
    lc = sm.get("latency_cycle_hold") or {}
    log(f"  {profile} {clients:,}: held {sm.get('held')}/{clients}, errors {sm.get('errors')}, "
        f"p50 {lc.get('p50_ms')} p99 {lc.get('p99_ms')} p99.9 {lc.get('p99_9_ms')} ms, "
        f"{(sm.get('server') or {}).get('kib_per_held_client')} KiB/client -> "
        f"{'pass' if rec['pass'] else 'FAIL: ' + '; '.join(rec['reasons'])}")
    return rec


def capacity_profile(ctx, profile):
    s = ctx["s"]
    steps, runs = sorted(s["steps"]), []
    best = None
    fail_at = None
    for n in steps:
        r = capacity_step(ctx, profile, n)
        runs.append(r)
        if r["pass"]:
            best = r
        else:
            fail_at = n
            break
    if fail_at is not None and len(runs) >= 1 and s["mode"] == "full":
        lo = best["clients"] if best else 0
        mid = (lo + fail_at) // 2
        if mid > lo and mid - lo >= 500:
            r = capacity_step(ctx, profile, mid)
            runs.append(r)
            if r["pass"]:
                best = r
    out = {"profile": profile, "runs": runs,
           "max_clients_measured": best["clients"] if best else 0,
           "limited_by": ("the open-file cap of this machine" if best and fail_at is None
                          else f"the objective failed at {fail_at:,}" if fail_at else "—")}
    out["derived"] = derive(ctx, profile, best)
    return out


def derive(ctx, profile, best):
    """What the profile's memory and CPU allow, from one instance's measured cost per held
    client (labelled derived)."""
    if not best:
        return None
    p = PROFILES[profile]
    sm = best["summary"]
    sv = sm.get("server") or {}
    held = sm.get("held_at_hold_end") or 0
    kib = sv.get("kib_per_held_client")
    base_kib = (sv.get("start") or {}).get("rss_kib")
    kern = sm.get("kernel_tcp_mem_delta_kib")
    cpu_us_s = sv.get("cpu_us_per_client_s")
    hs_us = sv.get("cpu_us_per_handshake_ramp")
    if not kib or not held:
        return None
    mem_kib = p["mem_gib"] * 1024 * 1024
    reserve_kib = 512 * 1024  # the operating system and everything else on the VM
    # kernel TCP memory measured for both ends of every loopback connection involved (client
    # and gateway, connector and mpsim): all of it charged to the gateway's clients, an upper
    # bound of what the gateway's own sockets take
    kern_per = round(kern / held, 2) if kern and kern > 0 else None
    by_mem_user = int((mem_kib - reserve_kib - base_kib) / kib)
    by_mem_all = int((mem_kib - reserve_kib - base_kib) / (kib + (kern_per or 0)))
    usable = 0.8  # of the profile's vCPUs
    by_cpu = int(p["vcpus"] * usable * 1e6 / cpu_us_s) if cpu_us_s else None
    d = {
        "label": "derived",
        "from_run_clients": best["clients"],
        "measured_kib_per_held_client": kib,
        "measured_kernel_tcp_kib_per_held_client_upper_bound": kern_per,
        "measured_gateway_baseline_rss_kib": base_kib,
        "measured_cpu_us_per_held_client_per_s": cpu_us_s,
        "measured_cpu_us_per_handshake": hs_us,
        "cycle": f"one policy cycle per client every {ctx['s']['notify_hold']} (the "
                 "notification hold), content every "
                 f"{ctx['s']['content_every']} cycles",
        "memory_budget": f"{p['mem_gib']} GiB - 512 MiB for the system - the gateway's "
                         "baseline RSS",
        "cpu_budget": f"{usable:.0%} of {p['vcpus']} vCPUs",
        "clients_by_memory_user_space": by_mem_user,
        "clients_by_memory_with_kernel_sockets": by_mem_all,
        "clients_by_cpu": by_cpu,
    }
    cands = [x for x in (by_mem_all, by_cpu) if x]
    d["clients"] = min(cands) if cands else None
    if hs_us and d["clients"]:
        d["reconnect_all_s"] = round(d["clients"] * hs_us / 1e6 / p["vcpus"], 1)
    return d


# --------------------------------------------------------------------------------------------
# part: aggregate of several instances


def aggregate(ctx):
    s = ctx["s"]
    n, total = s["agg_instances"], s["agg_clients"]
    backends = max(1, math.ceil(total / s["per_backend"]))
    dep = Deployment(ctx, "aggregate", n, s["agg_workers"], backends, None)
    rec = {"instances": n, "clients": total, "backends": backends, "workers": s["agg_workers"]}
    try:
        dep.start()
        rec["commands"] = dep.commands()
        procs = max(n, math.ceil(total / (FD_CAP - 1000)))
        per = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
        ctx["rate_per_proc"] = s["rate"] / procs
        log(f"aggregate: {n} instances, {backends} connector + mpsim pairs, {procs} cmg-bench "
            f"processes x {per[0]:,} clients")
        summary, reports = run_bench(ctx, dep, per, "aggregate")
        rec["summary"] = summary
        rec["per_process"] = [{k: _get(r, k) for k in ("result.held", "result.ramp_s",
                                                       "hold.errors", "hold.requests_per_s")}
                              for r in reports]
        mid = summary.get("mid_hold") or {}
        rec["per_instance_connections"] = [
            benchlib.metric_sum(m, "cmg_connections_open") for m in
            (mid.get("metrics") or {}).get("gateways", [])]
        rec["gateway_rss_kib_mid_hold"] = mid.get("gateway_rss_kib")
        rec["pass"], rec["reasons"] = step_passes(summary, s["p99_objective_ms"])
    except Exception as e:  # noqa: BLE001
        rec["pass"], rec["reasons"] = False, [f"setup or run failed: {e}"]
    finally:
        rec["stop"] = dep.stop()
    sm = rec.get("summary") or {}
    log(f"aggregate: held {sm.get('held')}/{total}, errors {sm.get('errors')}, p99 "
        f"{(sm.get('latency_cycle_hold') or {}).get('p99_ms')} ms -> "
        f"{'pass' if rec['pass'] else 'FAIL: ' + '; '.join(rec['reasons'])}")
    return rec


# --------------------------------------------------------------------------------------------
# servers for the side-by-side parts


class Plain:
    """A gateway (or several instances) or an nginx answering locally over TLS."""

    def __init__(self, ctx, kind, tag, key, ports, instances=1, tickets=False):
        self.ctx, self.kind, self.ports, self.n = ctx, kind, ports, instances
        self.run_dir = os.path.join(ctx["work"], "runs", tag)
        os.makedirs(os.path.join(self.run_dir, "tmp"), exist_ok=True)
        pki = ctx["pki"]
        cert, keyf = ((os.path.join(pki, "server-chain.pem"), os.path.join(pki, "server.key"))
                      if key == "ecdsa" else (ctx["rsa_chain"], os.path.join(pki, "server-rsa.key")))
        self.procs = []
        cpu = ctx["s"]["server_cpu"]
        if kind == "cmg":
            for i in range(instances):
                cfg = os.path.join(self.run_dir, f"gateway{i}.ini")
                with open(cfg, "w") as f:
                    f.write(fill("gateway-plain.ini.in", {
                        "INSTANCE": i, "LISTEN": ", ".join(f"127.0.0.1:{p}" for p in ports),
                        "WORKERS": 1, "APORT": free_port(), "CERT": cert, "KEY": keyf,
                        "TICKETS": "true" if tickets else "false"}))
                self.procs.append(Proc("edge", f"gateway{i}", [ctx["gateway"], "-c", cfg], cpu,
                                       self.run_dir))
        else:
            body = "x" * 216
            listens = "\n".join(f"        listen 127.0.0.1:{p} ssl backlog=4096"
                                f"{' reuseport' if instances > 1 else ''};" for p in ports)
            cfg = os.path.join(self.run_dir, "nginx.conf")
            with open(cfg, "w") as f:
                f.write(fill("nginx-plain.conf.in", {
                    "D": self.run_dir, "WORKERS": instances, "WC": 19500, "LISTENS": listens,
                    "CERT": cert, "KEY": keyf, "TICKETS": "on" if tickets else "off",
                    "BODY": body}))
            self.procs.append(Proc("edge", "nginx", ["nginx", "-c", cfg, "-p", self.run_dir],
                                   cpu, self.run_dir))
        wait_for(lambda: all(listening(p) for p in ports), 15, f"{kind} listeners", self.procs)
        if kind == "nginx":
            wait_for(lambda: len(children(self.procs[0].proc.pid)) >= instances, 10,
                     "nginx workers", self.procs)

    def pids(self):
        out = []
        for p in self.procs:
            out += p.pids()
        return out

    def worker_pids(self):
        if self.kind == "nginx":
            return children(self.procs[0].proc.pid)
        return [p.proc.pid for p in self.procs]

    def command(self):
        return [q(p.argv) for p in self.procs]

    def stop(self):
        return {p.label: p.stop() for p in self.procs}


# --------------------------------------------------------------------------------------------
# part: handshakes


def openssl_limits(cpu):
    argv = ["taskset", "-c", cpu, "openssl", "speed", "-mr", "-seconds", "1", "ecdsap256",
            "rsa2048", "ecdhx25519"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    out = {"command": q(argv)}
    m = re.search(r"^\+F4:\d+:256:([\d.]+):([\d.]+)", p.stdout, re.M)
    if m:
        out["ecdsap256_sign_per_s"], out["ecdsap256_verify_per_s"] = float(m[1]), float(m[2])
    m = re.search(r"^\+F2:\d+:2048:([\d.]+):([\d.]+)", p.stdout, re.M)
    if m:
        out["rsa2048_sign_per_s"], out["rsa2048_verify_per_s"] = float(m[1]), float(m[2])
    m = re.search(r"^\+F5:\d+:253:([\d.]+)", p.stdout, re.M)
    if m:
        out["x25519_op_per_s"] = float(m[1])
    x = out.get("x25519_op_per_s")
    # a full TLS 1.3 handshake costs the server one signature and two X25519 operations
    # (its key share and the shared secret)
    if x and out.get("ecdsap256_sign_per_s"):
        out["crypto_floor_us_ecdsa"] = round(1e6 / out["ecdsap256_sign_per_s"] + 2e6 / x, 1)
    if x and out.get("rsa2048_sign_per_s"):
        out["crypto_floor_us_rsa"] = round(1e6 / out["rsa2048_sign_per_s"] + 2e6 / x, 1)
    return out


def handshake_run(ctx, kind, key, rnd):
    s = ctx["s"]
    port = free_port()
    rec = {"server": kind, "key": key, "round": rnd}
    srv = None
    try:
        srv = Plain(ctx, kind, f"hs-{kind}-{key}-{rnd}", key, [port])
        path = os.path.join(srv.run_dir, "bench.json")
        argv = ["taskset", "-c", s["client_cpu"], ctx["bench"], "--mode", "handshake",
                "--connect", f"127.0.0.1:{port}", "--clients", s["hs_clients"], "--rate", 10000,
                "--inflight", s["hs_clients"], "--ramp-timeout", s["hs_warmup"], "--hold",
                s["hs_seconds"], "--ramp-down", 0, "--tls", "1.3", "--json", path]
        for pid in srv.pids():
            argv += ["--server-pid", pid]
        argv = [str(a) for a in argv]
        rec["command"] = q(argv)
        rec["server_command"] = srv.command()
        p = subprocess.run(argv, capture_output=True, text=True,
                           timeout=s["hs_warmup"] + s["hs_seconds"] + 60)
        with open(path) as f:
            j = json.load(f)
        rec["handshakes_per_s"] = round(j["hold"]["handshakes_per_s"], 1)
        rec["server_cpu_us_per_handshake"] = round(j["server"]["cpu_us_per_handshake_hold"], 1)
        rec["server_cores"] = round(j["server"]["cpu_cores_hold"], 3)
        rec["errors"] = j["all"]["errors"]
        rec["p99_ms"] = j["hold"]["latency_handshake"]["p99_ms"]
        rec["ok"] = p.returncode == 0 and j["all"]["errors"] == 0
        if not rec["ok"]:
            rec["error"] = f"cmg-bench exit {p.returncode}, errors {j['all']['errors_by_kind']} " \
                           f"{j.get('first_errors')}"
    except Exception as e:  # noqa: BLE001
        rec["ok"] = False
        rec["error"] = str(e)
    finally:
        if srv:
            rec["stop"] = srv.stop()
    log(f"  handshake {kind} {key} r{rnd}: {rec.get('handshakes_per_s')}/s, server "
        f"{rec.get('server_cpu_us_per_handshake')} µs/handshake ({rec.get('server_cores')} "
        f"cores){'' if rec.get('ok') else ' FAILED: ' + str(rec.get('error'))}")
    return rec


def handshakes(ctx):
    s = ctx["s"]
    runs = []
    limits = openssl_limits(s["server_cpu"])
    for rnd in range(1, s["hs_rounds"] + 1):
        for key in ("ecdsa", "rsa"):
            for kind in ("cmg", "nginx"):
                runs.append(handshake_run(ctx, kind, key, rnd))
    limits_after = openssl_limits(s["server_cpu"])
    med_ = {}
    for key in ("ecdsa", "rsa"):
        for kind in ("cmg", "nginx"):
            ok = [r for r in runs if r["key"] == key and r["server"] == kind and r.get("ok")]
            med_[f"{kind}_{key}"] = {
                "runs_ok": len(ok),
                "handshakes_per_s": med([r["handshakes_per_s"] for r in ok]),
                "server_cpu_us_per_handshake": med([r["server_cpu_us_per_handshake"] for r in ok]),
                "server_cores": med([r["server_cores"] for r in ok])}
    ratios = {}
    for key in ("ecdsa", "rsa"):
        a, b = med_[f"cmg_{key}"], med_[f"nginx_{key}"]
        ratios[key] = {
            "handshakes_per_s_cmg_over_nginx": ratio(a["handshakes_per_s"], b["handshakes_per_s"]),
            "cpu_per_handshake_cmg_over_nginx": ratio(a["server_cpu_us_per_handshake"],
                                                      b["server_cpu_us_per_handshake"]),
            "cpu_per_handshake_cmg_over_crypto_floor": ratio(
                a["server_cpu_us_per_handshake"], limits.get(f"crypto_floor_us_{key}"))}
    return {"runs": runs, "medians": med_, "ratios": ratios, "openssl_before": limits,
            "openssl_after": limits_after,
            "goal": {"ecdsa_cpu_us_per_handshake_max": 300,
                     "met": (med_["cmg_ecdsa"]["server_cpu_us_per_handshake"] or 1e9) <= 300}}


# --------------------------------------------------------------------------------------------
# part: idle memory


def read_line(proc, prefix, deadline):
    """The first stdout line of proc starting with prefix, or None by the deadline."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while time.monotonic() < deadline:
            for _ in sel.select(timeout=0.5):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    return None
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith(prefix):
                        return line
            if proc.poll() is not None and not buf:
                return None
    finally:
        sel.close()
    return None


def kv(line):
    return {k: int(v) if v.isdigit() else v for k, v in re.findall(r"(\w+)=([\w.]+)", line or "")}


def idle_run(ctx, kind, n):
    s = ctx["s"]
    procs_n = 1 if n <= s["idle_per_proc_max"] else s["idle_procs_big"]
    ports = [free_port() for _ in range(4)]
    rec = {"server": kind, "connections": n, "server_processes": procs_n, "ok": False}
    srv = None
    clients = []
    try:
        srv = Plain(ctx, kind, f"idle-{kind}-{n}", "ecdsa", ports, instances=procs_n,
                    tickets=True)
        rec["server_command"] = srv.command()
        base = lambda port: [ctx["idle_client"], "-p", str(port), "-t", "1.3",  # noqa: E731
                             "-u", "/CCM_Proxy_MutualAuth/ServiceMetadata"]
        warm = ["taskset", "-c", s["client_cpu"]] + base(ports[0]) + ["-n", "20", "-H", "0"]
        subprocess.run(warm, capture_output=True, timeout=60)
        time.sleep(2)
        mem_pids = srv.worker_pids()
        all_pids = srv.pids()
        before = sum(rss_kib(p) for p in mem_pids)
        before_all = sum(rss_kib(p) for p in all_pids)
        tcp0 = benchlib.sockstat_tcp_mem_pages()
        per = [n // procs_n + (1 if i < n % procs_n else 0) for i in range(procs_n)]
        est = max(60, n / s["idle_rate"] * 2 + 60)
        for i, k in enumerate(per):
            argv = ["taskset", "-c", s["client_cpu"]] + base(ports[i % 4]) + [
                "-n", str(k), "-r", str(max(1, s["idle_rate"] // procs_n)), "-c", "256",
                "-H", str(int(est + 120)), "-T", str(int(est))]
            rec.setdefault("client_commands", []).append(q(argv))
            clients.append(spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        ready = [read_line(c, "READY", time.monotonic() + est + 30) for c in clients]
        rec["ready"] = [kv(x) for x in ready]
        time.sleep(2)
        after = sum(rss_kib(p) for p in mem_pids)
        after_all = sum(rss_kib(p) for p in all_pids)
        tcp1 = benchlib.sockstat_tcp_mem_pages()
        ok_n = sum(r.get("ok", 0) for r in rec["ready"])
        rec.update({"answered": ok_n, "rss_before_kib": before, "rss_after_kib": after,
                    "kib_per_conn": round((after - before) / n, 2),
                    "kib_per_conn_with_master": round((after_all - before_all) / n, 2),
                    "kernel_tcp_mem_delta_kib": (tcp1 - tcp0) * os.sysconf("SC_PAGE_SIZE")
                    // 1024 if tcp0 is not None and tcp1 is not None else None})
        for c in clients:
            c.send_signal(signal.SIGUSR1)
        done = [read_line(c, "DONE", time.monotonic() + 30) for c in clients]
        rec["done"] = [kv(x) for x in done]
        held = sum(d.get("held", 0) for d in rec["done"])
        rec["held"] = held
        rec["ok"] = ok_n == n and held == n
        if not rec["ok"]:
            rec["error"] = f"{ok_n} of {n} answered, {held} held to the end"
    except Exception as e:  # noqa: BLE001
        rec["error"] = str(e)
    finally:
        for c in clients:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
                try:
                    c.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    c.kill()
                    c.wait(timeout=5)
        if srv:
            rec["stop"] = srv.stop()
    log(f"  idle {kind} {n:,}: {rec.get('kib_per_conn')} KiB/connection over "
        f"{procs_n} process(es){'' if rec['ok'] else ' FAILED: ' + str(rec.get('error'))}")
    return rec


def idle(ctx):
    runs = []
    for n in ctx["s"]["idle_sizes"]:
        for kind in ("cmg", "nginx"):
            runs.append(idle_run(ctx, kind, n))
    ratios = {}
    for n in ctx["s"]["idle_sizes"]:
        a = next((r for r in runs if r["server"] == "cmg" and r["connections"] == n
                  and r["ok"]), None)
        b = next((r for r in runs if r["server"] == "nginx" and r["connections"] == n
                  and r["ok"]), None)
        ratios[str(n)] = ratio(a and a["kib_per_conn"], b and b["kib_per_conn"])
    return {"runs": runs, "ratios_cmg_over_nginx": ratios, "goal_kib_per_conn": 10}


# --------------------------------------------------------------------------------------------
# report


def write_plots(res, out_dir, work):
    if not shutil.which("gnuplot"):
        res["notes"].append("gnuplot is not installed: no plots")
        return []
    term = benchlib.gnuplot_png_term("900,520")
    made = []
    cap = res.get("capacity") or {}
    series = []
    for prof, c in cap.items():
        pts = sorted((r["clients"], (r.get("summary") or {}).get("latency_cycle_hold", {})
                      .get("p99_ms")) for r in c["runs"])
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            dat = os.path.join(work, f"p99-{prof}.dat")
            with open(dat, "w") as f:
                for x, y in pts:
                    f.write(f"{x} {y}\n")
            series.append((PROFILES[prof]["label"], dat))
    agg = res.get("aggregate") or {}
    agg_p = (agg.get("summary") or {}).get("latency_cycle_hold", {}).get("p99_ms")
    if agg_p is not None:
        dat = os.path.join(work, "p99-agg.dat")
        with open(dat, "w") as f:
            f.write(f"{agg['clients']} {agg_p}\n")
        series.append((f"{agg['instances']} instances together", dat))
    if series:
        png = os.path.join(out_dir, "capacity-p99.png")
        obj = res["settings"]["p99_objective_ms"]
        plots = [f"'{d}' using 1:2 with linespoints lw 2 pt 7 title '{t}'" for t, d in series]
        plots.append(f"{obj} with lines dt 2 lc rgb '#aa3333' title 'objective {obj:g} ms'")
        gp = (f"set terminal {term}\nset output '{png}'\n"
              f"set title 'Policy-cycle requests: p99 latency against clients held "
              f"({res['date']})'\n"
              "set xlabel 'clients held'\nset ylabel 'p99 (ms)'\nset grid\nset key top left\n"
              "set logscale x\nset yrange [0:*]\n"
              "plot " + ", \\\n     ".join(plots) + "\n")
        if run_gnuplot(gp, work, "capacity-p99.gp", res):
            made.append(os.path.basename(png))
    bars = []
    hs = (res.get("handshake") or {}).get("ratios") or {}
    for key, lab in (("ecdsa", "ECDSA"), ("rsa", "RSA")):
        r = hs.get(key) or {}
        if r.get("handshakes_per_s_cmg_over_nginx"):
            bars.append((f"handshakes/s {lab}", r["handshakes_per_s_cmg_over_nginx"]))
        if r.get("cpu_per_handshake_cmg_over_nginx"):
            bars.append((f"CPU/handshake {lab}", r["cpu_per_handshake_cmg_over_nginx"]))
    for n, v in ((res.get("idle") or {}).get("ratios_cmg_over_nginx") or {}).items():
        if v:
            bars.append((f"idle KiB/conn {int(n) // 1000}k", v))
    rel = res.get("relay_reference") or {}
    for k, lab in (("rps_cmg_over_haproxy", "relay req/s vs HAProxy"),
                   ("rps_cmg_over_nginx", "relay req/s vs nginx")):
        if rel.get(k):
            bars.append((lab, rel[k]))
    if bars:
        dat = os.path.join(work, "ratios.dat")
        with open(dat, "w") as f:
            for lab, v in bars:
                f.write(f"\"{lab}\" {v}\n")
        png = os.path.join(out_dir, "capacity-ratios.png")
        gp = (f"set terminal {term}\nset output '{png}'\n"
              f"set title 'cmg / peer (same machine, medians; {res['date']})'\n"
              "set style data histograms\nset style fill solid 0.7 border -1\n"
              "set boxwidth 0.6\nset yrange [0:*]\nset grid ytics\nset xtics rotate by -30\n"
              "set ylabel 'ratio (1 = equal)'\n"
              f"plot '{dat}' using 2:xtic(1) notitle lc rgb '#4477aa', 1 with lines dt 2 "
              "lc rgb '#aa3333' notitle, \\\n"
              f"     '' using 0:2:(sprintf('%.2f', $2)) with labels offset 0,1 notitle\n")
        if run_gnuplot(gp, work, "capacity-ratios.gp", res):
            made.append(os.path.basename(png))
    return made


def run_gnuplot(gp, work, name, res):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(gp)
    p = subprocess.run(["gnuplot", path], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        res["notes"].append(f"gnuplot {name}: {p.stderr.strip()[:300]}")
        return False
    return True


def relay_reference(out_dir):
    """The relay benchmark's medians (bench/relay.py) from the same results folder."""
    path = os.path.join(out_dir, "relay.json")
    try:
        with open(path) as f:
            j = json.load(f)
    except (OSError, ValueError):
        return None
    t = j.get("throughput") or {}
    m, r = t.get("medians") or {}, t.get("ratios") or {}
    out = {"file": "relay.json", "started": j.get("started"), "mode": j.get("mode"),
           "medians": {k: {x: v.get(x) for x in ("rps", "p99_ms", "cpu_us_per_req")}
                       for k, v in m.items()}}
    for peer in ("haproxy", "nginx"):
        rr = r.get(f"cmg/{peer}") or r.get(peer) or {}
        if isinstance(rr, dict):
            out[f"rps_cmg_over_{peer}"] = rr.get("rps")
            out[f"cpu_cmg_over_{peer}"] = rr.get("edge_relay_cpu_us")
    return out


def ms(x):
    return fmt(x, 2) if x is not None else "–"


def write_markdown(path, res):
    L = []
    s = res["settings"]
    L.append(f"# Capacity: clients per VM size, and side by side with nginx ({res['date']})\n")
    L.append(f"Mode **{res['mode']}**, {res['started']} → {res.get('finished')}, "
             f"{res['runtime_s']:.0f} s. Reproduce: `make bench-capacity`. Host: "
             f"{res['host']['cpu_model']}, {res['host']['cpus']} CPUs. Every figure below is "
             "measured on this host unless it says **derived**.\n")
    if res["failures"]:
        L.append("**Failures:**\n")
        L += [f"- {x}" for x in res["failures"]]
        L.append("")
    emu = res.get("emulation") or {}
    cap = res.get("capacity") or {}
    if cap:
        L.append("## Clients per VM size\n")
        L.append(f"Objective: p99 of the policy-cycle requests (location, policy, CCM_POST "
                 f"status) ≤ **{s['p99_objective_ms']:g} ms** during the hold phase, every "
                 "client held from the start to the end of the hold, **no errors**. Each client: "
                 "one TLS connection with its own client certificate (ECDSA P-256, from the "
                 "development PKI's issuing CA; the gateway checks chain and CRL), a policy "
                 f"cycle through gateway → connector → cmg-mpsim, a notification request held "
                 f"{s['notify_hold']} by mpsim between cycles, content (64 KiB through the "
                 f"content-location service) in 1 of {s['content_every']} cycles. Ramp "
                 f"{s['rate']:g} connections/s, hold {s['hold_s']:g} s.\n")
        L.append(f"Emulation: **{emu.get('method')}** — CPU: {emu.get('cpu')}; memory: "
                 f"{emu.get('memory')}." + (f" cgroup v2 not used: {emu['why_not_cgroup_v2']}."
                                            if emu.get("why_not_cgroup_v2") else "") + "\n")
        L.append("| profile | documented | measured: most clients held (one instance) | p99 "
                 "there | KiB per held client | CPU µs per client per s | CPU µs per handshake "
                 "| **derived** clients (memory / CPU) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for prof, c in cap.items():
            p = PROFILES[prof]
            best = next((r for r in c["runs"] if r["clients"] == c["max_clients_measured"]
                         and r["pass"]), None)
            sm = (best or {}).get("summary") or {}
            sv = sm.get("server") or {}
            d = c.get("derived") or {}
            L.append(f"| {p['label']}: {p['vcpus']} vCPU, {p['mem_gib']} GiB | "
                     f"{p['documented_clients']:,} | {c['max_clients_measured']:,} "
                     f"({c['limited_by']}) | {ms((sm.get('latency_cycle_hold') or {}).get('p99_ms'))} ms | "
                     f"{fmt(sv.get('kib_per_held_client'), 1)} | "
                     f"{fmt(sv.get('cpu_us_per_client_s'), 2)} | "
                     f"{fmt(sv.get('cpu_us_per_handshake_ramp'), 0)} | "
                     f"**{fmt(d.get('clients'), 0, True)}** "
                     f"({fmt(d.get('clients_by_memory_with_kernel_sockets'), 0, True)} / "
                     f"{fmt(d.get('clients_by_cpu'), 0, True)}) |")
        L.append("")
        std = (cap.get("standard") or cap.get("lab") or {}).get("derived") or {}
        if std.get("clients"):
            L.append(f"Goal ≥ {GOAL_CLIENTS:,} held clients on the 2-vCPU / 4 GiB profile "
                     f"(derived): **{std['clients']:,}** — "
                     f"{'met' if std['clients'] >= GOAL_CLIENTS else 'not met'}.\n")
        L.append("How the derived figures are made: memory — (profile memory − 512 MiB for the "
                 "system − the gateway's baseline RSS) ÷ (measured RSS growth per held client + "
                 "the kernel's TCP memory per held client, all loopback socket ends of the run "
                 "charged to the gateway: an upper bound); CPU — 80 % of the profile's vCPUs ÷ "
                 "the gateway's measured CPU per held client per second at this cycle rate. The "
                 "smaller one is the figure. Reconnect: the time the derived count of clients "
                 "would take to handshake again after a restart, at the measured CPU per "
                 "handshake on all vCPUs.\n")
        L.append("| profile | derived by memory (user space only) | by memory (with kernel) "
                 "| by CPU | reconnect all (s) |")
        L.append("|---|---:|---:|---:|---:|")
        for prof, c in cap.items():
            d = c.get("derived") or {}
            L.append(f"| {PROFILES[prof]['label']} | "
                     f"{fmt(d.get('clients_by_memory_user_space'), 0, True)} | "
                     f"{fmt(d.get('clients_by_memory_with_kernel_sockets'), 0, True)} | "
                     f"{fmt(d.get('clients_by_cpu'), 0, True)} | "
                     f"{fmt(d.get('reconnect_all_s'), 1)} |")
        L.append("")
        L.append("Every step (fresh processes each):\n")
        L.append("| profile | clients | held | errors | req/s | p50 | p90 | p99 | p99.9 ms "
                 "| handshakes/s (ramp) | gateway RSS MiB | KiB/client | result |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for prof, c in cap.items():
            for r in c["runs"]:
                sm = r.get("summary") or {}
                lc = sm.get("latency_cycle_hold") or {}
                sv = sm.get("server") or {}
                rss = (sv.get("hold_end") or {}).get("rss_kib")
                L.append(f"| {prof} | {r['clients']:,} | {fmt(sm.get('held'), 0, True)} | "
                         f"{sm.get('errors', '–')} | {fmt(sm.get('requests_per_s_hold'), 0, True)} "
                         f"| {ms(lc.get('p50_ms'))} | {ms(lc.get('p90_ms'))} | "
                         f"{ms(lc.get('p99_ms'))} | {ms(lc.get('p99_9_ms'))} | "
                         f"{fmt(sm.get('handshakes_per_s_ramp'), 0)} | "
                         f"{fmt(rss / 1024 if rss else None, 1)} | "
                         f"{fmt(sv.get('kib_per_held_client'), 1)} | "
                         f"{'pass' if r['pass'] else 'fail: ' + '; '.join(r['reasons'])} |")
        L.append("")
    agg = res.get("aggregate")
    if agg:
        sm = agg.get("summary") or {}
        lc = sm.get("latency_cycle_hold") or {}
        L.append("## Several instances together\n")
        L.append(f"{agg['instances']} gateway instances (`instance_id` 0–{agg['instances'] - 1}, "
                 f"`workers = {agg['workers']}`, one client port shared with SO_REUSEPORT, tunnel "
                 f"ports 10124 + i), {agg['backends']} connection points (`instances = "
                 f"{agg['instances']}`, each dialling every instance) each with its own cmg-mpsim, "
                 f"and {sm.get('processes')} cmg-bench processes (≤ 20,000 open files each).\n")
        L.append("| clients | held (whole hold) | errors | req/s | p50 | p99 | p99.9 ms | "
                 "per instance (connections) | gateways' RSS MiB | result |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        rss = sum((agg.get("gateway_rss_kib_mid_hold") or {}).values()) / 1024
        L.append(f"| {agg['clients']:,} | {fmt(sm.get('held'), 0, True)} | {sm.get('errors')} | "
                 f"{fmt(sm.get('requests_per_s_hold'), 0, True)} | {ms(lc.get('p50_ms'))} | "
                 f"{ms(lc.get('p99_ms'))} | {ms(lc.get('p99_9_ms'))} | "
                 f"{', '.join(str(int(x)) for x in agg.get('per_instance_connections') or [])} | "
                 f"{fmt(rss, 0)} | {'pass' if agg.get('pass') else 'fail: ' + '; '.join(agg.get('reasons', []))} |")
        L.append("")
    rel = res.get("relay_reference")
    L.append("## Side by side\n")
    L.append("### 1. Policy request through two hops\n")
    if rel:
        L.append(f"From `relay.json` in this folder (bench/relay.py, {rel.get('started')}, mode "
                 f"{rel.get('mode')}): gateway → connector → mpsim against nginx edge → nginx "
                 "relay and HAProxy edge → HAProxy relay (HTTP/2), medians.\n")
        L.append("| shape | req/s | p99 ms | CPU µs per request (edge+relay) |")
        L.append("|---|---:|---:|---:|")
        for k, v in rel["medians"].items():
            cpu = v.get("cpu_us_per_req")
            if isinstance(cpu, dict):
                cpu = cpu.get("edge+relay")
            L.append(f"| {k} | {fmt(v.get('rps'), 0, True)} | {ms(v.get('p99_ms'))} | "
                     f"{fmt(cpu, 1)} |")
        L.append("")
    else:
        L.append("No `relay.json` in this folder (run `make bench-relay`).\n")
    hs = res.get("handshake")
    if hs:
        lim = hs["openssl_before"]
        L.append("### 2. Full TLS 1.3 handshakes\n")
        L.append(f"One worker each (gateway `workers = 1`, nginx `worker_processes 1`) on CPU "
                 f"{s['server_cpu']}; cmg-bench in handshake mode on CPU {s['client_cpu']} "
                 f"({s['hs_clients']} connections at a time, each: full handshake, one GET, "
                 f"close; no tickets, no session cache on either side); {s['hs_rounds']} rounds "
                 "interleaved, medians. Server CPU per handshake = utime+stime of the server "
                 "(nginx: master + worker) over the measured seconds ÷ handshakes.\n")
        L.append("| key | server | handshakes/s | server CPU µs per handshake | server cores "
                 "busy | crypto floor µs (`openssl speed`) |")
        L.append("|---|---|---:|---:|---:|---:|")
        for key in ("ecdsa", "rsa"):
            for kind in ("cmg", "nginx"):
                m = hs["medians"][f"{kind}_{key}"]
                L.append(f"| {key} | {kind} | {fmt(m['handshakes_per_s'], 0, True)} | "
                         f"{fmt(m['server_cpu_us_per_handshake'], 0)} | "
                         f"{fmt(m['server_cores'], 2)} | {fmt(lim.get('crypto_floor_us_' + key), 0)} |")
        L.append("")
        L.append("| key | handshakes/s cmg ÷ nginx | CPU per handshake cmg ÷ nginx | cmg ÷ "
                 "crypto floor |")
        L.append("|---|---:|---:|---:|")
        for key in ("ecdsa", "rsa"):
            r = hs["ratios"][key]
            L.append(f"| {key} | {fmt(r['handshakes_per_s_cmg_over_nginx'], 2)} | "
                     f"{fmt(r['cpu_per_handshake_cmg_over_nginx'], 2)} | "
                     f"{fmt(r['cpu_per_handshake_cmg_over_crypto_floor'], 2)} |")
        L.append("")
        L.append(f"`openssl speed` on CPU {s['server_cpu']} (before / after): ECDSA P-256 sign "
                 f"{fmt(lim.get('ecdsap256_sign_per_s'), 0, True)} / "
                 f"{fmt(hs['openssl_after'].get('ecdsap256_sign_per_s'), 0, True)} per s, "
                 f"RSA-2048 sign {fmt(lim.get('rsa2048_sign_per_s'), 0, True)} / "
                 f"{fmt(hs['openssl_after'].get('rsa2048_sign_per_s'), 0, True)}, X25519 "
                 f"{fmt(lim.get('x25519_op_per_s'), 0, True)} / "
                 f"{fmt(hs['openssl_after'].get('x25519_op_per_s'), 0, True)} operations; the "
                 "floor is one signature + two X25519 operations. Goal: ≤ 300 µs per ECDSA "
                 f"handshake — {'met' if hs['goal']['met'] else 'not met'}. When the server is "
                 "below one busy core the client was the limit of handshakes/s; CPU per "
                 "handshake is the figure to compare.\n")
    idl = res.get("idle")
    if idl:
        L.append("### 3. Memory per idle TLS connection\n")
        L.append("TLS 1.3, each connection made one GET and stays open (bench/idle-clients.c); "
                 "RSS growth of the server's processes ÷ connections (gateway: every instance; "
                 "nginx: the workers; with the master in brackets). 50,000 connections need "
                 "several processes here (20,000 open files each): 4 gateway instances on the "
                 "same ports (SO_REUSEPORT), nginx with 4 workers (reuseport).\n")
        L.append("| connections | server | processes | KiB per connection | kernel TCP KiB "
                 "per connection (both ends) | result |")
        L.append("|---:|---|---:|---:|---:|---|")
        for r in idl["runs"]:
            k = r.get("kernel_tcp_mem_delta_kib")
            L.append(f"| {r['connections']:,} | {r['server']} | {r['server_processes']} | "
                     f"{fmt(r.get('kib_per_conn'), 2)} ({fmt(r.get('kib_per_conn_with_master'), 2)}) | "
                     f"{fmt(k / r['connections'] if k else None, 2)} | "
                     f"{'ok' if r['ok'] else 'fail: ' + str(r.get('error'))} |")
        L.append("")
        L.append("Ratios cmg ÷ nginx: " + ", ".join(
            f"{int(n):,}: {fmt(v, 2)}" for n, v in idl["ratios_cmg_over_nginx"].items()) +
            f". Goal ≤ {idl['goal_kib_per_conn']} KiB per connection.\n")
    L.append("### 4. Cached content\n")
    cont = res.get("content_reference")
    L.append(f"See `{cont}` (bench/content.py) in this folder.\n" if cont else
             "Measured by bench/content.py; no results file in this folder yet.\n")
    if res.get("host_index"):
        L.append("Host-speed index (`openssl speed ecdsap256` sign/s on the server CPU): " +
                 ", ".join(f"{h['when']} {fmt(h.get('ecdsap256_sign_per_s'), 0, True)}"
                           for h in res["host_index"]) + ".\n")
    if res["notes"]:
        L.append("## Notes\n")
        L += [f"- {x}" for x in res["notes"]]
        L.append("")
    L.append(f"Files: `capacity.json` (every run, every cmg-bench report merged, commands), "
             f"{', '.join('`' + p + '`' for p in res.get('plots', []))}.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


# --------------------------------------------------------------------------------------------


def main():
    smoke = "--smoke" in sys.argv[1:]
    if [a for a in sys.argv[1:] if a != "--smoke"]:
        print(f"usage: {sys.argv[0]} [--smoke]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_term)
    s = settings(smoke)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = datetime.datetime.now().astimezone()
    date = started.strftime("%Y-%m-%d")
    work = os.environ.get("BENCH_WORK")
    if not work:
        sys.exit("capacity.py: BENCH_WORK must be set; run bench/run-capacity.sh")
    os.makedirs(work, exist_ok=True)
    out_dir = os.environ.get("BENCH_RESULTS") or (
        os.path.join(work, "results") if smoke else os.path.join(BENCH, "results", date))
    os.makedirs(out_dir, exist_ok=True)
    bd = os.path.join(ROOT, "build/default")
    bins = {"gateway": os.environ.get("CMG_GATEWAY", f"{bd}/gateway/cmg-gateway"),
            "connector": os.environ.get("CMG_CONNECTOR", f"{bd}/connector/cmg-connector"),
            "mpsim": os.environ.get("CMG_MPSIM", f"{bd}/mpsim/cmg-mpsim"),
            "bench": os.environ.get("CMG_BENCH", f"{bd}/bench/cmg-bench")}
    cmgctl = os.environ.get("CMGCTL", f"{bd}/deploy/cmgctl")
    idle_client = os.environ.get("IDLE_CLIENT")
    for path in list(bins.values()) + [cmgctl]:
        if not os.access(path, os.X_OK):
            print(f"capacity.py: {path} missing; build first", file=sys.stderr)
            return 2
    need = ["taskset", "prlimit", "openssl"] + (["nginx"] if {"handshake", "idle"} &
                                                  set(s["parts"]) else [])
    for tool in need:
        if not shutil.which(tool):
            print(f"capacity.py: {tool} is not installed", file=sys.stderr)
            return 2
    if "idle" in s["parts"] and not (idle_client and os.access(idle_client, os.X_OK)):
        print("capacity.py: IDLE_CLIENT (bench/idle-clients.c built) is needed", file=sys.stderr)
        return 2

    ctx = {"s": s, "work": work, "idle_client": idle_client}
    os.makedirs(os.path.join(work, "bin"), exist_ok=True)
    bin_info = {}
    for k, src in bins.items():  # private copies: a rebuild during the run changes nothing
        bin_info[k] = binary_info(src)
        dst = os.path.join(work, "bin", os.path.basename(src))
        shutil.copy2(src, dst)
        ctx[k] = dst
    pki = os.path.join(work, "pki")
    subprocess.run([cmgctl, "pki", "init", pki], capture_output=True, check=True, timeout=120)
    ctx["pki"] = pki
    ctx["rsa_chain"] = os.path.join(work, "server-rsa-chain.pem")
    with open(ctx["rsa_chain"], "w") as f:
        for part in ("server-rsa.crt", "intermediate-ca.crt"):
            with open(os.path.join(pki, part)) as g:
                f.write(g.read())
    # content: one package with one file, in a folder store every instance shares
    ctx["store"] = os.path.join(work, "store")
    pkg = os.path.join(work, "package")
    os.makedirs(pkg, exist_ok=True)
    with open(os.path.join(pkg, "payload.bin"), "wb") as f:
        f.write(bytes((i * 131 + 7) & 0xFF for i in range(s["content_size"])))
    cfg = os.path.join(work, "content.ini")
    with open(cfg, "w") as f:
        f.write(f"[content]\nstore = folder\nfolder = {ctx['store']}\n")
    subprocess.run([cmgctl, "content", "distribute", "-c", cfg, PACKAGE, pkg],
                   capture_output=True, check=True, timeout=120)
    tok = subprocess.run([cmgctl, "token", "issue", "content", "--key",
                          os.path.join(pki, "token-signing.key"), "--package", PACKAGE,
                          "--lifetime", "8h"], capture_output=True, text=True, check=True,
                         timeout=60).stdout.strip()
    ctx["content_token_file"] = os.path.join(work, "content-token.txt")
    with open(ctx["content_token_file"], "w") as f:
        f.write(tok + "\n")
    ctx["emu"] = Emulation(s)

    res = {"benchmark": "capacity", "date": date, "mode": s["mode"],
           "started": started.isoformat(timespec="seconds"), "settings": s,
           "profiles": PROFILES, "emulation": ctx["emu"].describe(),
           "host": benchlib.host_info(), "binaries": bin_info,
           "versions": dict({"cmg-gateway": benchlib.version([ctx["gateway"], "-V"])},
                            **benchlib.git_info(), **benchlib.peer_versions()),
           "commands": {"pki": q([cmgctl, "pki", "init", "PKI"]),
                        "content": q([cmgctl, "content", "distribute", "-c", "content.ini",
                                      PACKAGE, "package"]),
                        "content_token": "cmgctl token issue content --key "
                                         "PKI/token-signing.key --package " + PACKAGE,
                        "reproduce": "make bench-capacity   # = bench/run-capacity.sh"},
           "failures": [], "notes": []}
    foreign = benchlib.foreign_processes()
    if foreign:
        res["notes"].append(f"{len(foreign)} other test/benchmark processes were running at the "
                            "start; figures may be disturbed")
    hidx = []
    try:
        if s["host_index"]:
            hidx.append(benchlib.host_index(s["server_cpu"], "start", 0))
        if "capacity" in s["parts"]:
            res["capacity"] = {}
            for prof in s["profiles"]:
                log(f"capacity: {PROFILES[prof]['label']}, steps {s['steps']}")
                c = capacity_profile(ctx, prof)
                res["capacity"][prof] = c
                for r in c["runs"]:
                    if r.get("error"):
                        res["failures"].append(f"capacity {prof} {r['clients']}: {r['error']}")
                if smoke and not all(r["pass"] for r in c["runs"]):
                    res["failures"] += [f"smoke {prof} {r['clients']}: {'; '.join(r['reasons'])}"
                                        for r in c["runs"] if not r["pass"]]
                if c["max_clients_measured"] == 0 and not smoke:
                    res["failures"].append(f"capacity {prof}: no step passed")
        if "aggregate" in s["parts"]:
            res["aggregate"] = aggregate(ctx)
            if not res["aggregate"]["pass"]:
                res["failures"].append("aggregate: " + "; ".join(res["aggregate"]["reasons"]))
        if "handshake" in s["parts"]:
            log("handshakes: cmg and nginx, ECDSA and RSA, interleaved")
            res["handshake"] = handshakes(ctx)
            res["failures"] += [f"handshake {r['server']} {r['key']} r{r['round']}: "
                                f"{r.get('error')}" for r in res["handshake"]["runs"]
                                if not r.get("ok")]
        if "idle" in s["parts"]:
            log(f"idle memory: {s['idle_sizes']} connections, cmg and nginx")
            res["idle"] = idle(ctx)
            res["failures"] += [f"idle {r['server']} {r['connections']}: {r.get('error')}"
                                for r in res["idle"]["runs"] if not r["ok"]]
        if s["host_index"]:
            hidx.append(benchlib.host_index(s["server_cpu"], "end", 0))
    except KeyboardInterrupt as e:
        res["failures"].append(f"interrupted: {e}")
        raise
    finally:
        cleanup()
        ctx["emu"].cleanup()
        res["host_index"] = hidx
        res["relay_reference"] = relay_reference(out_dir)
        res["content_reference"] = next((f for f in ("content.md", "content.json")
                                         if os.path.exists(os.path.join(out_dir, f))), None)
        res["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        res["runtime_s"] = round(time.monotonic() - T_START, 1)
        res["ok"] = not res["failures"]
        res["plots"] = write_plots(res, out_dir, work)
        text = json.dumps(res, indent=1, ensure_ascii=False)
        text = text.replace(work + "/", "").replace(ROOT + "/", "")
        with open(os.path.join(out_dir, "capacity.json"), "w") as f:
            f.write(text + "\n")
        write_markdown(os.path.join(out_dir, "capacity.md"), res)
        md = os.path.join(out_dir, "capacity.md")
        with open(md) as f:
            body = f.read().replace(work + "/", "").replace(ROOT + "/", "")
        with open(md, "w") as f:
            f.write(body)
    log(f"done in {res['runtime_s']:.0f} s: {md}")
    print(body)
    if res["failures"]:
        log(f"{len(res['failures'])} failure(s):")
        for x in res["failures"]:
            log(f"  {x}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
