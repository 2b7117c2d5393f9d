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
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import benchlib
from benchlib import (BENCH, ROOT, T_START, binary_info, cleanup, env, fill, free_port, log,
                      med, on_term, q, rss_kib, spawn)
from capreport import relay_reference, write_markdown, write_plots
from relay import Proc, listening, wait_for
from sidebyside import handshakes, idle

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
        "steps": ints(env("BENCH_STEPS", "300" if smoke else "2000,10000,18500")),
        "p99_objective_ms": env("BENCH_P99_MS", 100.0, float),
        "rate": env("BENCH_RATE", 300.0 if smoke else 500.0, float),
        "inflight": env("BENCH_INFLIGHT", 200, int),
        "hold_s": env("BENCH_HOLD", 4 if smoke else 30, float),
        "ramp_down_s": env("BENCH_RAMP_DOWN", 1 if smoke else 5, float),
        "notify_hold": env("BENCH_NOTIFY_HOLD", "2s" if smoke else "20s"),
        "content_every": env("BENCH_CONTENT_EVERY", 4 if smoke else 20, int),
        "content_size": env("BENCH_CONTENT_SIZE", 65536, int),
        "server_cpu": env("BENCH_SERVER_CPU", "0"),
        "client_cpu": env("BENCH_CLIENT_CPU", "1"),
        "agg_instances": env("BENCH_AGG_INSTANCES", 4, int),
        "agg_clients": env("BENCH_AGG_CLIENTS", 60000, int),
        "agg_workers": env("BENCH_AGG_WORKERS", 2, int),
        "agg_notify_hold": env("BENCH_AGG_NOTIFY_HOLD", "60s"),
        "agg_hold_s": env("BENCH_AGG_HOLD", 70, float),
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

    def __init__(self, s, sanitized):
        self.s = s
        self.cg_root, self.cg_why = cgroup2_usable()
        self.groups = []
        # AddressSanitizer reserves terabytes of address space for its shadow: no address-space
        # limit for such a build (nor in the smoke check, which asserts sanity, not sizes)
        self.no_as_limit = sanitized or s["mode"] == "smoke"

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
                "memory": ("none (a sanitizer build or the smoke check)" if self.no_as_limit
                           else "prlimit --as = the profile's memory (address space: an upper "
                           "bound on what the process can use, stricter than resident memory)")}

    def wrap(self, profile, argv):
        """argv run inside the profile, and the CPU list for Proc's taskset."""
        p = PROFILES[profile]
        mem = p["mem_gib"] << 30
        if self.cg_root:
            return argv, ",".join(str(i) for i in range(os.cpu_count()))
        if self.no_as_limit:
            return argv, self.s["server_cpu"]
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

    def __init__(self, ctx, tag, instances, workers, backends, profile=None, notify_hold=None):
        self.ctx, self.s = ctx, ctx["s"]
        self.notify_hold = notify_hold or self.s["notify_hold"]
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
                       self.notify_hold, "--ready-file", ready, "--quiet"],
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


def bench_argv(ctx, port, clients, label, json_path, sources, pids, hold_s=None):
    s = ctx["s"]
    hold_s = hold_s or s["hold_s"]
    ramp_timeout = max(30, clients / max(1.0, ctx["rate_per_proc"]) * 3 + 60)
    argv = ["taskset", "-c", s["client_cpu"], ctx["bench"], "--connect", f"127.0.0.1:{port}",
            "--clients", clients, "--rate", round(ctx["rate_per_proc"], 1),
            "--inflight", s["inflight"], "--ramp-timeout", round(ramp_timeout),
            "--hold", hold_s, "--ramp-down", s["ramp_down_s"],
            "--ca-cert", os.path.join(ctx["pki"], "intermediate-ca.crt"),
            "--ca-key", os.path.join(ctx["pki"], "intermediate-ca.key"),
            "--content-token-file", ctx["content_token_file"],
            "--content-every", s["content_every"], "--label", label, "--json", json_path]
    if sources:
        argv += ["--source", ",".join(sources)]
    for p in pids:
        argv += ["--server-pid", p]
    return [str(a) for a in argv], ramp_timeout


def run_bench(ctx, dep, clients_list, label, hold_s=None):
    """Runs one cmg-bench process per entry of clients_list against dep at once; returns
    (merged summary, [per-process reports])."""
    s = ctx["s"]
    procs, paths, logs = [], [], []
    tcp0, slab0 = benchlib.sockstat_tcp_mem_pages(), slab_kib()
    rss0 = {g.label: rss_kib(g.proc.pid) for g in dep.gws}
    # other load on the host: busy CPU time not spent by the processes of this run
    stat0, ru0, t0 = benchlib.cpu_stat(), resource.getrusage(resource.RUSAGE_CHILDREN), \
        time.monotonic()
    srv0 = sum(benchlib.cpu_ticks(p.proc.pid) for p in dep.all() if p.alive())
    deadline = 0
    for i, n in enumerate(clients_list):
        path = os.path.join(dep.run_dir, f"bench-{label}-{i}.json")
        sources = [f"127.{10 + i}.{k}.1" for k in range(4)]
        argv, ramp_timeout = bench_argv(ctx, dep.port, n, f"{label}/{i}", path, sources,
                                        dep.gateway_pids(), hold_s)
        deadline = max(deadline, ramp_timeout + (hold_s or s["hold_s"]) + s["ramp_down_s"] + 120)
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
                time.sleep(min(5, (hold_s or s["hold_s"]) / 2))
                mid = {"tcp_mem_pages": benchlib.sockstat_tcp_mem_pages(),
                       "slab_kib": slab_kib(),
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
    wall = time.monotonic() - t0
    stat1, ru1 = benchlib.cpu_stat(), resource.getrusage(resource.RUSAGE_CHILDREN)
    srv1 = sum(benchlib.cpu_ticks(p.proc.pid) for p in dep.all() if p.alive())
    busy = sum(stat1[c][0] - stat0[c][0] for c in stat1 if c in stat0) / benchlib.CLK_TCK
    ours = (srv1 - srv0) / benchlib.CLK_TCK + (ru1.ru_utime + ru1.ru_stime) - \
        (ru0.ru_utime + ru0.ru_stime)
    load = {"wall_s": round(wall, 1), "host_busy_cpus": round(busy / wall, 2),
            "this_run_cpus": round(ours / wall, 2),
            "other_load_cpus": round(max(0.0, busy - ours) / wall, 2)}
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
    summary["host_load"] = load
    summary["rss_before_kib"] = rss0
    summary["mid_hold"] = mid
    if mid and tcp0 is not None and mid.get("tcp_mem_pages") is not None:
        summary["kernel_tcp_mem_delta_kib"] = (mid["tcp_mem_pages"] - tcp0) * \
            os.sysconf("SC_PAGE_SIZE") // 1024
    if mid and slab0 is not None and mid.get("slab_kib") is not None:
        summary["kernel_slab_delta_kib"] = mid["slab_kib"] - slab0
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
        rank = max(1, math.ceil(pct / 100 * count - 1e-9))  # 0.999 * 1000 is not 999 in binary
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
        "generator": {
            "cores": [round(_get(r, "generator.cores") or 0, 2) for r in ok],
            "timer_lateness_p99_ms": max((_get(r, "generator.timer_lateness.p99_ms") or 0
                                          for r in ok), default=None),
            "timer_lateness_max_ms": max((_get(r, "generator.timer_lateness.max_ms") or 0
                                          for r in ok), default=None)},
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


def slab_kib():
    """The kernel's slab memory (socket structures, epoll items, ...), /proc/meminfo."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Slab:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


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
        rec["sane"] = step_passes(summary, None)[0]
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
        f"other load {(sm.get('host_load') or {}).get('other_load_cpus')} CPUs, "
        f"p50 {lc.get('p50_ms')} p99 {lc.get('p99_ms')} p99.9 {lc.get('p99_9_ms')} ms, "
        f"{(sm.get('server') or {}).get('kib_per_held_client')} KiB/client -> "
        f"{'pass' if rec['pass'] else 'FAIL: ' + '; '.join(rec['reasons'])}")
    return rec


def capacity_profile(ctx, profile):
    s = ctx["s"]
    steps, runs = sorted(s["steps"]), []
    best, first_fail = None, None
    for n in steps:
        r = capacity_step(ctx, profile, n)
        runs.append(r)
        if r["pass"]:
            best = r if not best or n > best["clients"] else best
        elif first_fail is None:
            first_fail = n
        if not r.get("sane"):
            break  # clients lost or errors: a bigger step would not hold them either
    if (first_fail is not None and s["mode"] == "full" and
            (not best or best["clients"] < first_fail)):
        lo = best["clients"] if best else 0
        mid = (lo + first_fail) // 2
        if mid - lo >= 500:
            r = capacity_step(ctx, profile, mid)
            runs.append(r)
            if r["pass"]:
                best = r
    top = max(steps)
    out = {"profile": profile, "runs": runs,
           "max_clients_measured": best["clients"] if best else 0,
           "limited_by": ("the open-file cap of one process on this machine"
                          if best and best["clients"] == top
                          else f"the objective was missed at {first_fail:,}" if first_fail
                          else "—")}
    # memory and CPU per held client do not depend on the latency: the largest run that held
    # every client without an error is the one to derive from
    sane = [r for r in runs if r.get("sane")]
    basis = max(sane, key=lambda r: r["clients"]) if sane else None
    out["derived"] = derive(ctx, profile, basis)
    if basis and basis is not best:
        out["derived_note"] = (f"derived from the {basis['clients']:,}-client run, which held "
                               "every client with no error but missed the p99 objective")
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
    # kernel memory: socket buffers (sockstat) and slab (socket structures, epoll items) grew
    # for every socket end of the run: per held client the client's and the gateway's ends, and
    # the connector's and mpsim's ends of the held notification request. On a VM only the
    # gateway's end is there: a quarter, an estimate; all of it is the upper bound.
    kern = (sm.get("kernel_tcp_mem_delta_kib") or 0) + (sm.get("kernel_slab_delta_kib") or 0)
    kern_all = round(kern / held, 2) if kern > 0 else None
    kern_gw = round(kern_all / 4, 2) if kern_all else None
    cpu_us_s = sv.get("cpu_us_per_client_s")
    hs_us = sv.get("cpu_us_per_handshake_ramp")
    if not kib or not held:
        return None
    mem_kib = p["mem_gib"] * 1024 * 1024
    reserve_kib = 512 * 1024  # the operating system and everything else on the VM
    free_kib = mem_kib - reserve_kib - base_kib
    by_mem_user = int(free_kib / kib)
    by_mem_gw = int(free_kib / (kib + (kern_gw or 0)))
    by_mem_all = int(free_kib / (kib + (kern_all or 0)))
    usable = 0.8  # of the profile's vCPUs
    by_cpu = int(p["vcpus"] * usable * 1e6 / cpu_us_s) if cpu_us_s else None
    d = {
        "label": "derived",
        "from_run_clients": best["clients"],
        "measured_kib_per_held_client": kib,
        "measured_kernel_kib_per_held_client_all_socket_ends": kern_all,
        "estimated_kernel_kib_per_held_client_gateway_end": kern_gw,
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
        "clients_by_memory_with_kernel_sockets": by_mem_gw,
        "clients_by_memory_with_all_kernel_upper_bound": by_mem_all,
        "clients_by_cpu": by_cpu,
    }
    cands = [x for x in (by_mem_gw, by_cpu) if x]
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
    dep = Deployment(ctx, "aggregate", n, s["agg_workers"], backends, None,
                     s["agg_notify_hold"])
    rec = {"instances": n, "clients": total, "backends": backends, "workers": s["agg_workers"]}
    try:
        dep.start()
        rec["commands"] = dep.commands()
        procs = max(n, math.ceil(total / (FD_CAP - 1000)))
        per = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
        ctx["rate_per_proc"] = s["rate"] / procs
        log(f"aggregate: {n} instances, {backends} connector + mpsim pairs, {procs} cmg-bench "
            f"processes x {per[0]:,} clients")
        summary, reports = run_bench(ctx, dep, per, "aggregate", s["agg_hold_s"])
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
    with open(ctx["gateway"], "rb") as f:
        sanitized = b"__asan_init" in f.read()
    ctx["emu"] = Emulation(s, sanitized)

    res = {"benchmark": "capacity", "date": date, "mode": s["mode"],
           "started": started.isoformat(timespec="seconds"), "settings": s,
           "profiles": PROFILES, "goal_clients": GOAL_CLIENTS, "emulation": ctx["emu"].describe(),
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
        if os.environ.get("BENCH_MERGE") == "1":
            # parts not run this time are kept from the report already in the folder
            try:
                with open(os.path.join(out_dir, "capacity.json")) as f:
                    prev = json.load(f)
            except (OSError, ValueError):
                prev = {}
            for part in ("capacity", "aggregate", "handshake", "idle"):
                if part not in res and part in prev:
                    res[part] = prev[part]
                    res["notes"].append(f"{part}: from the run started {prev.get('started')}")
            if "capacity" in res and "capacity" in prev and "capacity" in s["parts"]:
                for prof, c in prev["capacity"].items():
                    if prof not in res["capacity"]:
                        res["capacity"][prof] = c
                        res["notes"].append(f"capacity {prof}: from the run started "
                                            f"{prev.get('started')}")
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
    benchlib.run_main(main)
