#!/usr/bin/env python3
"""Front-end benchmark of cmg-gateway against nginx and HAProxy (Python 3 standard library).

Called by bench/run-frontend.sh, which raises the open-file limit, builds the idle client and
passes its path in BENCH_IDLE_CLIENT. Two benchmarks:

1. Keep-alive throughput. For each round, for each server in interleaved order: start the
   server pinned to CPU 0, warm it up with wrk, then measure with
   `taskset -c 1 wrk -t1 -c100 -d12s --latency URL`: req/s, p99 latency and server CPU per
   request (utime+stime of every server process from /proc/PID/stat over the measured run,
   divided by the requests wrk completed). A host-speed index (`openssl speed ecdsap256` on
   CPU 0) is taken before and after each round.
2. Idle memory per TLS connection: RSS of the server before and after N idle TLS connections
   (one GET each, then idle), (after - before) / N.

Results: frontend.json (every raw run, medians, ratios, host index, versions, commands),
frontend.md (tables) and frontend-cpu.png (gnuplot, if installed).
Exit status: 0 all servers answered every run correctly, 1 something failed (see "failures"),
2 setup error.
"""

import datetime
import http.client
import json
import os
import re
import resource
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import time

import benchlib
from benchlib import (BENCH, CLK_TCK, ROOT, T_START, binary_info, children, cleanup, cpu_stat,
                      cpu_ticks, dpkg_version, env, fill, fmt, free_port, log, med, on_term, q,
                      ratio, rss_kib, sockstat_tcp_mem_pages, spawn, stop_pid_list, stop_process,
                      version)

URL_PATH = "/CCM_Proxy_MutualAuth/ServiceMetadata"
ALL_SERVERS = ("cmg", "nginx", "haproxy")


# --------------------------------------------------------------------------------------------
# settings


def settings(smoke):
    s = {
        "mode": "smoke" if smoke else "full",
        "rounds": env("BENCH_ROUNDS", 1 if smoke else 3, int),
        "duration_s": env("BENCH_DURATION", 2 if smoke else 12, int),
        "warmup_s": env("BENCH_WARMUP", 2, int),
        "wrk_threads": env("BENCH_THREADS", 1, int),
        "wrk_connections": env("BENCH_CONNS", 100, int),
        "servers": [x for x in env("BENCH_SERVERS", ",".join(ALL_SERVERS)).split(",") if x],
        "server_cpu": env("BENCH_SERVER_CPU", "0"),
        "client_cpu": env("BENCH_CLIENT_CPU", "1"),
        "idle_conns": env("IDLE_CONNS", 200 if smoke else 10000, int),
        "idle_tls": [x for x in env("IDLE_TLS", "1.3" if smoke else "1.3,1.2").split(",") if x],
        "idle_servers": [x for x in env("IDLE_SERVERS", ",".join(ALL_SERVERS)).split(",") if x],
        "idle_rounds": env("IDLE_ROUNDS", 1, int),
        "idle_rate": env("IDLE_RATE", 2000, int),
        "idle_inflight": env("IDLE_INFLIGHT", 256, int),
        "idle_settle_s": env("IDLE_SETTLE", 1.0 if smoke else 2.0, float),
        "idle_warm_conns": env("IDLE_WARM_CONNS", 20, int),
        "idle_waves": env("IDLE_WAVES", 1 if smoke else 2, int),
        "host_index": env("BENCH_HOST_INDEX", 1, int) == 1,
        "skip_throughput": env("BENCH_SKIP_THROUGHPUT", 0, int) == 1,
        "skip_idle": env("BENCH_SKIP_IDLE", 0, int) == 1,
    }
    for k in ("servers", "idle_servers"):
        bad = [x for x in s[k] if x not in ALL_SERVERS]
        if bad:
            sys.exit(f"frontend.py: unknown server(s) {bad}; known: {', '.join(ALL_SERVERS)}")
    bad = [x for x in s["idle_tls"] if x not in ("1.2", "1.3")]
    if bad:
        sys.exit(f"frontend.py: IDLE_TLS: unknown version(s) {bad}; use 1.2 and/or 1.3")
    if s["rounds"] < 1 or s["duration_s"] < 1 or s["warmup_s"] < 0 or s["idle_conns"] < 1:
        sys.exit("frontend.py: BENCH_ROUNDS, BENCH_DURATION and IDLE_CONNS must be >= 1")
    return s


# --------------------------------------------------------------------------------------------
# processes (spawn, cleanup, CPU and memory readings: benchlib)


def https_get(port, timeout=5.0):
    return benchlib.https_get(port, URL_PATH, timeout)


# --------------------------------------------------------------------------------------------
# the servers


class Server:
    name = "?"

    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None
        self.run_dir = None
        self.port = None
        self.argv = None
        self.extra_pids = []

    # subclasses: write_config(run_dir, port, maxconn) -> argv (without taskset)
    def start(self, tag, maxconn=4096):
        self.run_dir = os.path.join(self.ctx["work"], "runs", tag)
        os.makedirs(self.run_dir, exist_ok=True)
        self.port = free_port()
        argv = ["taskset", "-c", self.ctx["s"]["server_cpu"]] + self.write_config(
            self.run_dir, self.port, maxconn
        )
        self.argv = argv
        self.log_path = os.path.join(self.run_dir, "server.log")
        self.log_f = open(self.log_path, "wb")
        self.proc = spawn(argv, stdout=self.log_f, stderr=subprocess.STDOUT, cwd=self.run_dir)
        deadline = time.monotonic() + 15
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode} at start: "
                    + self.log_tail()
                )
            try:
                status, body = https_get(self.port, timeout=2)
                self.after_ready()
                return status, body
            except (OSError, http.client.HTTPException) as e:
                last_err = e
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within 15 s: {last_err}")

    def after_ready(self):
        pass

    def log_tail(self, n=800):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def pids(self):
        """Every process whose CPU counts as the server's."""
        return [self.proc.pid]

    def mem_pids(self):
        """(label, pids) pairs: the first is the primary figure."""
        return [("process", [self.proc.pid])]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stops the server; returns (exit status, seconds, how)."""
        if self.proc is None:
            return None
        # nginx workers are children of the master we started; none may outlive it
        return stop_process(self.proc, self.extra_pids, self.log_f)

    def metrics(self):
        return None


class Cmg(Server):
    name = "cmg"

    def write_config(self, run_dir, port, maxconn):
        self.aport = free_port()
        pki = self.ctx["pki"]
        cfg = os.path.join(run_dir, "gateway.ini")
        with open(cfg, "w") as f:
            f.write(
                fill(
                    "gateway.ini.in",
                    {
                        "PORT": port,
                        "APORT": self.aport,
                        "CERT": os.path.join(pki, "server-chain.pem"),
                        "KEY": os.path.join(pki, "server.key"),
                    },
                )
            )
        return [self.ctx["gateway"], "-c", cfg]

    def metrics(self):
        """Non-zero samples of the gateway's own counters (admin endpoint, main thread)."""
        return benchlib.prom_metrics(self.aport)


class Nginx(Server):
    name = "nginx"

    def write_config(self, run_dir, port, maxconn):
        os.makedirs(os.path.join(run_dir, "tmp"), exist_ok=True)
        pki = self.ctx["pki"]
        body = self.ctx["body"].decode()
        esc = (
            body.replace("\\", "\\\\")
            .replace("'", "\\'")
            .replace("\r", "\\r")
            .replace("\n", "\\n")
            .replace("\t", "\\t")
        )
        if "$" in esc:
            raise RuntimeError("the reference body contains '$'; nginx would expand it")
        cfg = os.path.join(run_dir, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(
                fill(
                    "nginx.conf.in",
                    {
                        "D": run_dir,
                        "PORT": port,
                        "CERT": os.path.join(pki, "server-chain.pem"),
                        "KEY": os.path.join(pki, "server.key"),
                        # nginx closes idle keep-alive connections ("worker_connections are
                        # not enough, reusing connections") once fewer than 1/16 of them are
                        # free, so leave ample headroom above the connections tested
                        "WC": min(19500, max(16384, maxconn * 5 // 4 + 1024)),
                        "BODY": esc,
                    },
                )
            )
        return ["nginx", "-c", cfg, "-p", run_dir]

    def after_ready(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            kids = children(self.proc.pid)
            if kids:
                self.extra_pids = kids
                return
            time.sleep(0.05)
        raise RuntimeError("nginx: no worker process appeared")

    def workers(self):
        return children(self.proc.pid)

    def pids(self):
        return [self.proc.pid] + self.workers()

    def mem_pids(self):
        return [("worker", self.workers()), ("master+worker", self.pids())]


class Haproxy(Server):
    name = "haproxy"

    def write_config(self, run_dir, port, maxconn):
        cfg = os.path.join(run_dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(
                fill(
                    "haproxy.cfg.in",
                    {
                        "PORT": port,
                        "PEM": self.ctx["combined_pem"],
                        "MAXCONN": maxconn,
                        "BODYFILE": self.ctx["body_file"],
                    },
                )
            )
        return ["haproxy", "-db", "-f", cfg]


SERVER_CLASSES = {"cmg": Cmg, "nginx": Nginx, "haproxy": Haproxy}


# --------------------------------------------------------------------------------------------
# measurements (wrk output, host index: benchlib)


def run_wrk(ctx, port, duration):
    return benchlib.run_wrk(ctx["s"], f"https://127.0.0.1:{port}{URL_PATH}", duration)


def throughput_run(ctx, name, rnd):
    s = ctx["s"]
    srv = SERVER_CLASSES[name](ctx)
    rec = {"round": rnd, "server": name, "ok": False}
    try:
        status, body = srv.start(f"r{rnd}-{name}")
        rec["port"] = srv.port
        rec["server_command"] = q(srv.argv)
        rec["sanity"] = {"status": status, "body_bytes": len(body),
                         "body_matches_gateway": body == ctx["body"]}
        if status != 200 or body != ctx["body"]:
            raise RuntimeError(f"{name}: sanity GET answered {status} with {len(body)} bytes "
                               f"(expected 200 and the gateway's {len(ctx['body'])} bytes)")
        pids0 = srv.pids()
        rss = {"start": sum(rss_kib(p) for p in pids0)}
        if s["warmup_s"] > 0:
            w = run_wrk(ctx, srv.port, s["warmup_s"])
            rec["warmup"] = {k: w.get(k) for k in ("requests", "rps", "socket_errors", "non2xx",
                                                   "wrk_rc", "command")}
            if w.get("non2xx") or not w.get("requests"):
                rec["warmup"]["wrk_output"] = w["wrk_output"]
        if not srv.alive():
            raise RuntimeError(f"{name} exited during the warm-up (status {srv.proc.returncode}): "
                               + srv.log_tail())
        pids = srv.pids()
        rss["after_warmup"] = sum(rss_kib(p) for p in pids)
        st0, ru0 = cpu_stat(), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = {p: cpu_ticks(p) for p in pids}
        w = run_wrk(ctx, srv.port, s["duration_s"])
        st1, ru1 = cpu_stat(), resource.getrusage(resource.RUSAGE_CHILDREN)
        died = not srv.alive()
        t1 = {}
        for p in pids:
            try:
                t1[p] = cpu_ticks(p)
            except FileNotFoundError:
                pass
        if died:
            raise RuntimeError(f"{name} exited during the measured run (status "
                               f"{srv.proc.returncode}): " + srv.log_tail())
        pids_after = srv.pids()
        if sorted(pids_after) != sorted(pids):
            rec["pid_change"] = {"before": pids, "after": pids_after}
        rss["after_run"] = sum(rss_kib(p) for p in pids_after)
        rec["rss_kib"] = rss
        rec.update({k: v for k, v in w.items()})
        ticks = sum(t1.get(p, t0[p]) - t0[p] for p in pids)
        rec["server_pids"] = pids
        rec["server_cpu_ticks"] = ticks
        rec["server_cpu_s"] = round(ticks / CLK_TCK, 3)
        if w.get("requests"):
            rec["cpu_us_per_req"] = round(ticks / CLK_TCK * 1e6 / w["requests"], 2)
            rec["server_cpu_utilisation"] = round(ticks / CLK_TCK / w["duration_s"], 3)
        # Who else used the two CPUs: busy time of each CPU (/proc/stat) minus the server's
        # (server CPU) or wrk's (client CPU) own time, per second of the run. Loopback softirq
        # work may land on either CPU, so a few percent is normal; more means other load.
        wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        rec["wrk_cpu_s"] = round(wrk_cpu, 3)
        secs = w.get("duration_s") or s["duration_s"]
        sc, cc = s["server_cpu"], s["client_cpu"]
        if sc in st0 and sc in st1 and cc in st0 and cc in st1:
            busy = {c: (st1[c][0] - st0[c][0]) / CLK_TCK for c in (sc, cc)}
            steal = {c: (st1[c][1] - st0[c][1]) / CLK_TCK for c in (sc, cc)}
            rec["cpu_busy_per_s"] = {f"cpu{c}": round(busy[c] / secs, 3) for c in busy}
            rec["cpu_steal_per_s"] = {f"cpu{c}": round(steal[c] / secs, 3) for c in steal}
            rec["foreign_load_per_s"] = {
                f"server cpu{sc}": round((busy[sc] - ticks / CLK_TCK) / secs, 3),
                f"client cpu{cc}": round((busy[cc] - wrk_cpu) / secs, 3)}
        m = srv.metrics()
        if m is not None:
            rec["server_metrics"] = m
        rec["ok"] = bool(w.get("requests")) and not w.get("non2xx") and w.get("wrk_rc") == 0
    except Exception as e:  # noqa: BLE001 - record and go on with the next server
        rec["error"] = str(e)
    finally:
        stop_server(srv, rec)
    return rec


def stop_server(srv, rec):
    """Stops a server the harness started and records how it ended; a gateway that does not
    exit 0 on SIGTERM fails the run."""
    if srv.proc is None:
        return
    rec["stop"] = srv.stop()
    if srv.name == "cmg" and rec["stop"]["exit_status"] not in (0, None):
        rec.setdefault("error", f"cmg exited with status {rec['stop']['exit_status']}")
        rec["ok"] = False
    rec["server_log_tail"] = srv.log_tail()


def read_line(proc, prefix, deadline, buf):
    """Reads proc.stdout until a line starting with prefix; buf keeps what came before."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            for line in buf["text"].splitlines(keepends=True):
                if line.endswith("\n") and line.startswith(prefix):
                    buf["text"] = buf["text"].replace(line, "", 1)
                    return line.strip()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            buf["text"] += chunk.decode(errors="replace")
    finally:
        sel.close()


def kv(line):
    return {k: (float(v) if "." in v else int(v))
            for k, v in re.findall(r"(\w+)=([\d.]+)", line or "")}


def rss_by_label(srv):
    return {label: sum(rss_kib(x) for x in pids) for label, pids in srv.mem_pids()}


def idle_wave(ctx, srv, base, wave):
    """Opens N idle connections, reads RSS once they are all answered, closes them."""
    s = ctx["s"]
    n = s["idle_conns"]
    w = {"wave": wave}
    tcp0 = sockstat_tcp_mem_pages()
    establish_timeout = max(60, n / 100 + 60)
    argv = ["taskset", "-c", s["client_cpu"]] + base + [
        "-n", str(n), "-r", str(s["idle_rate"]), "-c", str(s["idle_inflight"]),
        "-H", str(int(establish_timeout + 120)), "-T", str(int(establish_timeout))]
    w["command"] = q(argv)
    log_path = os.path.join(srv.run_dir, f"idle-clients-wave{wave}.log")
    clog = open(log_path, "wb")
    client = spawn(argv, stdout=subprocess.PIPE, stderr=clog)
    done = None
    try:
        buf = {"text": ""}
        t = time.monotonic()
        ready = read_line(client, "READY", t + establish_timeout + 30, buf)
        w["establish_s"] = round(time.monotonic() - t, 3)
        if ready is None:
            raise RuntimeError(f"idle client never reported READY against {srv.name} (exit "
                               f"{client.poll()}); server alive: {srv.alive()}")
        w["ready"] = kv(ready)
        time.sleep(s["idle_settle_s"])
        if not srv.alive():
            raise RuntimeError(f"{srv.name} exited while holding idle connections (status "
                               f"{srv.proc.returncode}): " + srv.log_tail())
        w["rss_after_kib"] = rss_by_label(srv)
        tcp1 = sockstat_tcp_mem_pages()
        if tcp0 is not None and tcp1 is not None:
            w["kernel_tcp_mem_delta_kib"] = (tcp1 - tcp0) * os.sysconf("SC_PAGE_SIZE") // 1024
        m = srv.metrics()
        if m is not None:
            w["server_metrics"] = m
        client.send_signal(signal.SIGUSR1)
        done = read_line(client, "DONE", time.monotonic() + 30, buf)
        w["done"] = kv(done)
        w["client_rc"] = client.wait(timeout=30)
        time.sleep(s["idle_settle_s"])
        if srv.alive():
            w["rss_after_close_kib"] = rss_by_label(srv)
        ok = (w["ready"].get("ok") == n and w["done"].get("held") == n
              and w["done"].get("closed_by_server", 0) == 0)
        if not ok:
            w["error"] = (f"{srv.name}: {w['ready'].get('ok')} of {n} connections answered 200, "
                          f"{w['done'].get('held')} still open at the end (client: {done})")
    except Exception as e:  # noqa: BLE001
        w["error"] = str(e)
    finally:
        if client.poll() is None:
            client.send_signal(signal.SIGTERM)
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait(timeout=5)
        clog.close()
        if w.get("error"):
            try:
                with open(log_path) as f:
                    w["client_log_tail"] = f.read()[-1500:]
            except OSError:
                pass
    return w


def idle_run(ctx, name, tls, rnd):
    s = ctx["s"]
    n = s["idle_conns"]
    srv = SERVER_CLASSES[name](ctx)
    rec = {"round": rnd, "server": name, "tls": tls, "connections": n, "ok": False}
    try:
        status, body = srv.start(f"idle{rnd}-{name}-tls{tls}", maxconn=n + 256)
        rec["server_command"] = q(srv.argv)
        if status != 200 or body != ctx["body"]:
            raise RuntimeError(f"{name}: sanity GET answered {status} with {len(body)} bytes")
        base = [ctx["idle_client"], "-p", str(srv.port), "-u", URL_PATH, "-t", tls]
        # a few connections first, so lazy one-time allocations are not counted per connection
        if s["idle_warm_conns"] > 0:
            warm = ["taskset", "-c", s["client_cpu"]] + base + ["-n", str(s["idle_warm_conns"]),
                                                                 "-H", "0"]
            p = subprocess.run(warm, capture_output=True, text=True, timeout=60)
            rec["warm"] = {"command": q(warm), "result": kv(p.stdout.splitlines()[-1]
                                                            if p.stdout else ""), "rc": p.returncode}
            if p.returncode != 0:
                raise RuntimeError(f"warm-up clients failed against {name}: {p.stdout.strip()} "
                                   f"{p.stderr.strip()[-400:]}")
        time.sleep(s["idle_settle_s"])
        rec["rss_before_kib"] = rss_by_label(srv)
        waves = []
        for wave in range(1, max(1, s["idle_waves"]) + 1):
            wv = idle_wave(ctx, srv, base, wave)
            waves.append(wv)
            if wv.get("error"):
                break
        rec["waves"] = waves
        w1 = waves[0]
        rec["client_command"] = w1.get("command")
        rec["establish_s"] = w1.get("establish_s")
        for k in ("ready", "done", "rss_after_kib", "rss_after_close_kib",
                  "kernel_tcp_mem_delta_kib", "server_metrics"):
            if k in w1:
                rec[k] = w1[k]
        bad = [w for w in waves if w.get("error")]
        if "rss_after_kib" in w1:
            held = w1["ready"].get("ok", 0) - w1["done"].get("closed_by_server", 0)
            rec["held"] = held
            if held > 0:
                rec["kib_per_conn"] = {
                    label: round((w1["rss_after_kib"][label] - rec["rss_before_kib"][label])
                                 / held, 2) for label in rec["rss_before_kib"]}
        if len(waves) > 1 and "rss_after_kib" in waves[-1] and "rss_after_kib" in w1:
            # the same load again on the same server: RSS should come back to the first peak
            rec["rss_growth_second_wave_kib"] = {
                label: waves[-1]["rss_after_kib"][label] - w1["rss_after_kib"][label]
                for label in w1["rss_after_kib"]}
        rec["ok"] = not bad
        if bad:
            rec["error"] = "; ".join(f"wave {w['wave']}: {w['error']}" for w in bad)
    except Exception as e:  # noqa: BLE001
        rec["error"] = str(e)
    finally:
        stop_server(srv, rec)
    return rec


# --------------------------------------------------------------------------------------------
# summaries


def summarise_throughput(runs, servers):
    medians = {}
    for name in servers:
        ok = [r for r in runs if r["server"] == name and r.get("ok")]
        medians[name] = {
            "runs_ok": len(ok),
            "runs": sum(1 for r in runs if r["server"] == name),
            "rps": med([r.get("rps") for r in ok]),
            "p99_ms": med([r.get("p99_ms") for r in ok]),
            "p50_ms": med([r.get("p50_ms") for r in ok]),
            "cpu_us_per_req": med([r.get("cpu_us_per_req") for r in ok]),
            "server_cpu_utilisation": med([r.get("server_cpu_utilisation") for r in ok]),
            "rps_range": [min((r["rps"] for r in ok), default=None),
                          max((r["rps"] for r in ok), default=None)],
            "cpu_us_per_req_range": [min((r["cpu_us_per_req"] for r in ok), default=None),
                                     max((r["cpu_us_per_req"] for r in ok), default=None)],
            "p99_ms_range": [min((r["p99_ms"] for r in ok), default=None),
                             max((r["p99_ms"] for r in ok), default=None)],
        }
    ratios, paired = {}, {}
    if "cmg" in servers:
        for peer in servers:
            if peer == "cmg":
                continue
            a, b = medians["cmg"], medians[peer]
            ratios[f"cmg/{peer}"] = {k: ratio(a[k], b[k]) for k in ("rps", "p99_ms",
                                                                     "cpu_us_per_req")}
            per_round = {}
            for k in ("rps", "p99_ms", "cpu_us_per_req"):
                vals = []
                for rnd in sorted({r["round"] for r in runs}):
                    x = [r for r in runs if r["round"] == rnd and r.get("ok")]
                    ca = next((r.get(k) for r in x if r["server"] == "cmg"), None)
                    pb = next((r.get(k) for r in x if r["server"] == peer), None)
                    if ca is not None and pb:
                        vals.append(round(ca / pb, 3))
                per_round[k] = {"per_round": vals, "median": med(vals)}
            paired[f"cmg/{peer}"] = per_round
    return medians, ratios, paired


def summarise_idle(runs):
    out = {}
    for r in runs:
        key = f"{r['server']} TLS {r['tls']}"
        e = out.setdefault(key, {"server": r["server"], "tls": r["tls"], "values": {},
                                 "runs_ok": 0, "runs": 0})
        e["runs"] += 1
        if r.get("ok"):
            e["runs_ok"] += 1
            for label, v in r.get("kib_per_conn", {}).items():
                e["values"].setdefault(label, []).append(v)
    for e in out.values():
        e["kib_per_conn_median"] = {label: med(v) for label, v in e["values"].items()}
    ratios = {}
    for tls in ("1.3", "1.2"):
        c = out.get(f"cmg TLS {tls}")
        for peer, label in (("nginx", "worker"), ("haproxy", "process")):
            p = out.get(f"{peer} TLS {tls}")
            if c and p:
                ratios[f"cmg/{peer} TLS {tls}"] = ratio(
                    c["kib_per_conn_median"].get("process"), p["kib_per_conn_median"].get(label))
    return out, ratios


def write_markdown(path, res):
    s = res["settings"]
    L = []
    L.append(f"# cmg-gateway front end vs nginx and HAProxy — {res['date']} ({res['mode']})")
    L.append("")
    L.append(f"Host: {res['host']['cpu_model']}, {res['host']['cpus']} CPUs, kernel "
             f"{res['host']['kernel']}. Servers on CPU {s['server_cpu']}, wrk on CPU "
             f"{s['client_cpu']}; {s['rounds']} round(s) interleaved "
             f"({', '.join(s['servers'])}), {s['warmup_s']} s warm-up + {s['duration_s']} s "
             f"measured, wrk -t{s['wrk_threads']} -c{s['wrk_connections']}, keep-alive, "
             f"GET {URL_PATH} ({res['body_bytes']}-byte body). Total runtime "
             f"{res['runtime_s']:.0f} s.")
    L.append("")
    v = res["versions"]
    L.append("Versions: " + "; ".join(f"{k} {v[k]}" for k in ("cmg-gateway", "nginx", "haproxy",
                                                            "openssl", "wrk") if v.get(k)))
    L.append("")
    L.append("Compare ratios, not absolute figures: the host's speed drifts (see the host index).")
    L.append("")
    t = res.get("throughput")
    if t:
        L.append("## Keep-alive throughput (medians)")
        L.append("")
        L.append("| server | req/s | p99 latency (ms) | server CPU µs/request | server CPU use "
                 "| runs ok |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for name, m in t["medians"].items():
            L.append(f"| {name} | {fmt(m['rps'], 0, True)} | {fmt(m['p99_ms'], 2)} | "
                     f"{fmt(m['cpu_us_per_req'], 1)} | {fmt(m['server_cpu_utilisation'], 2)} | "
                     f"{m['runs_ok']}/{m['runs']} |")
        L.append("")
        if t["ratios"]:
            L.append("Ratios (cmg / peer). req/s above 1 = cmg faster; p99 and CPU/request "
                     "below 1 = cmg better. First figure: ratio of the medians; in brackets: "
                     "median of the per-round (paired) ratios.")
            L.append("")
            L.append("| ratio | req/s | p99 latency | server CPU/request |")
            L.append("|---|---:|---:|---:|")
            for k, r in t["ratios"].items():
                p = t["paired_ratios"][k]
                L.append(f"| {k} | {fmt(r['rps'], 2)} ({fmt(p['rps']['median'], 2)}) | "
                         f"{fmt(r['p99_ms'], 2)} ({fmt(p['p99_ms']['median'], 2)}) | "
                         f"{fmt(r['cpu_us_per_req'], 2)} "
                         f"({fmt(p['cpu_us_per_req']['median'], 2)}) |")
            L.append("")
        L.append("### Every run")
        L.append("")
        L.append("| round | server | req/s | p99 (ms) | CPU µs/req | requests | non-2xx/3xx "
                 "| socket errors (c/r/w/t) | server CPU use | other load server/client CPU "
                 "| RSS KiB start → after warm-up → after run | note |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---|---:|---|---|---|")
        for r in t["runs"]:
            se = r.get("socket_errors") or {}
            rss = r.get("rss_kib") or {}
            note = r.get("error", "") if not r.get("ok") else ""
            L.append(
                f"| {r['round']} | {r['server']} | {fmt(r.get('rps'), 0, True)} | "
                f"{fmt(r.get('p99_ms'), 2)} | {fmt(r.get('cpu_us_per_req'), 1)} | "
                f"{r.get('requests', '–')} | {r.get('non2xx', '–')} | "
                f"{se.get('connect', '–')}/{se.get('read', '–')}/{se.get('write', '–')}/"
                f"{se.get('timeout', '–')} | {fmt(r.get('server_cpu_utilisation'), 2)} | "
                + " / ".join(fmt(v, 2) for v in (r.get("foreign_load_per_s") or {}).values())
                + f" | {rss.get('start', '–')} → "
                f"{rss.get('after_warmup', '–')} → {rss.get('after_run', '–')} | "
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
    idle = res.get("idle")
    if idle:
        L.append(f"## Idle memory per TLS connection ({s['idle_conns']:,} connections, one GET "
                 "each, then idle)")
        L.append("")
        L.append("Server RSS (VmRSS) after − before, divided by the connections held; user-space "
                 "memory only (the kernel's socket buffers are extra, see the JSON). nginx: the "
                 "worker alone, then master+worker.")
        L.append("")
        L.append("| server | TLS | held | RSS before (KiB) | RSS after (KiB) | KiB/connection "
                 "| RSS after the clients closed (KiB) | RSS at the 2nd wave's peak − 1st peak "
                 "(KiB) | note |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for r in idle["runs"]:
            b, a = r.get("rss_before_kib", {}), r.get("rss_after_kib", {})
            c = r.get("rss_after_close_kib", {})
            g = r.get("rss_growth_second_wave_kib", {})
            k = r.get("kib_per_conn", {})
            labels = list(b.keys()) or ["process"]
            note = r.get("error", "") if not r.get("ok") else ""
            L.append(
                f"| {r['server']} | {r['tls']} | {r.get('held', '–')} | "
                + " / ".join(str(b.get(x, '–')) for x in labels) + " | "
                + " / ".join(str(a.get(x, '–')) for x in labels) + " | "
                + " / ".join(fmt(k.get(x), 2) for x in labels) + " | "
                + " / ".join(str(c.get(x, '–')) for x in labels) + " | "
                + " / ".join(str(g.get(x, '–')) for x in labels)
                + f" | {note.replace('|', '/')[:200]} |")
        L.append("")
        if idle["ratios"]:
            L.append("| ratio (KiB/connection) | value |")
            L.append("|---|---:|")
            for k, val in idle["ratios"].items():
                L.append(f"| {k} | {fmt(val, 2)} |")
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
    L.append("`make bench` (or `bench/run-frontend.sh`; `--smoke` for the quick check). The "
             "exact commands of every run are in frontend.json.")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_plot(res, out_dir, work):
    if not shutil.which("gnuplot") or not res.get("throughput"):
        return None
    med_ = res["throughput"]["medians"]
    rows = [(n, m["cpu_us_per_req"], *m["cpu_us_per_req_range"]) for n, m in med_.items()
            if m["cpu_us_per_req"] is not None]
    if not rows:
        return None
    dat = os.path.join(work, "cpu.dat")
    with open(dat, "w") as f:
        for i, (n, m, lo, hi) in enumerate(rows):
            f.write(f"{i} {n} {m} {lo} {hi}\n")
    png = os.path.join(out_dir, "frontend-cpu.png")
    terms = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    term = ("pngcairo size 800,500" if "pngcairo" in terms.stdout + terms.stderr
            else "png size 800,500")
    gp = f"""set terminal {term}
set output '{png}'
set title "Server CPU per request, keep-alive HTTPS GET ({res['date']}, median, bars = min..max)"
set ylabel "CPU µs per request (utime+stime)"
set style fill solid 0.6 border -1
set boxwidth 0.6
set yrange [0:*]
set xrange [-0.6:{len(rows) - 0.4}]
set grid ytics
unset key
plot '{dat}' using 1:3:xtic(2) with boxes lc rgb '#4477aa', \\
     '' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0, \\
     '' using 1:3:(sprintf("%.1f", $3)) with labels offset 0,1.2
"""
    gpf = os.path.join(work, "cpu.gp")
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
        sys.exit("frontend.py: BENCH_WORK (a scratch directory) must be set; "
                 "run bench/run-frontend.sh")
    os.makedirs(work, exist_ok=True)
    out_dir = os.environ.get("BENCH_RESULTS") or (
        os.path.join(work, "results") if smoke else os.path.join(BENCH, "results", date))
    os.makedirs(out_dir, exist_ok=True)
    gateway = os.environ.get("CMG_GATEWAY", os.path.join(ROOT, "build/default/gateway/cmg-gateway"))
    cmgctl = os.environ.get("CMGCTL", os.path.join(ROOT, "build/default/deploy/cmgctl"))
    idle_client = os.environ.get("BENCH_IDLE_CLIENT")
    failures, notes = [], []

    servers = list(s["servers"])
    for name, tool in (("nginx", "nginx"), ("haproxy", "haproxy")):
        if (name in servers or name in s["idle_servers"]) and not shutil.which(tool):
            failures.append(f"{tool} is not installed (CMG_BENCH_DEPS=1 scripts/install-deps)")
            servers = [x for x in servers if x != name]
            s["idle_servers"] = [x for x in s["idle_servers"] if x != name]
    for tool in ("wrk", "taskset", "openssl"):
        if not shutil.which(tool):
            print(f"frontend.py: {tool} is not installed", file=sys.stderr)
            return 2
    if not os.access(gateway, os.X_OK) or not os.access(cmgctl, os.X_OK):
        print(f"frontend.py: {gateway} or {cmgctl} missing; build first", file=sys.stderr)
        return 2
    if not s["skip_idle"] and not (idle_client and os.access(idle_client, os.X_OK)):
        print("frontend.py: BENCH_IDLE_CLIENT (the built idle-clients) is missing",
              file=sys.stderr)
        return 2

    # Run a private copy of the gateway: a rebuild of the tree during the run cannot mix builds.
    gateway_src = gateway
    gateway_info = binary_info(gateway_src)
    os.makedirs(os.path.join(work, "bin"), exist_ok=True)
    gateway = os.path.join(work, "bin", "cmg-gateway")
    shutil.copy2(gateway_src, gateway)

    # the development PKI and the reference body (what the gateway itself answers)
    pki = os.path.join(work, "pki")
    p = subprocess.run([cmgctl, "pki", "init", pki], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        print(f"frontend.py: cmgctl pki init failed: {p.stderr}", file=sys.stderr)
        return 2
    combined = os.path.join(work, "server-combined.pem")
    with open(combined, "w") as f:
        for part in ("server-chain.pem", "server.key"):
            with open(os.path.join(pki, part)) as g:
                f.write(g.read())
    ctx = {"s": s, "work": work, "pki": pki, "gateway": gateway, "combined_pem": combined,
           "idle_client": idle_client, "body": b""}
    ref = Cmg(ctx)
    try:
        status, body = ref.start("reference")
        if status != 200 or not body:
            print(f"frontend.py: the gateway answered {status} to GET {URL_PATH}",
                  file=sys.stderr)
            return 1
    except Exception as e:  # noqa: BLE001
        print(f"frontend.py: the gateway did not start: {e}", file=sys.stderr)
        return 1
    finally:
        if ref.proc is not None:
            ref.stop()
    ctx["body"] = body
    ctx["body_file"] = os.path.join(work, "body.xml")
    with open(ctx["body_file"], "wb") as f:
        f.write(body)
    log(f"reference body: {len(body)} bytes from cmg-gateway; results go to {out_dir}")

    res = {
        "benchmark": "frontend",
        "date": date,
        "mode": s["mode"],
        "started": started_wall.isoformat(timespec="seconds"),
        "settings": s,
        "body_bytes": len(body),
        "url_path": URL_PATH,
        "host": benchlib.host_info(),
        "gateway_binary": dict(gateway_info, ran_as=gateway),
        "versions": {
            "cmg-gateway": version([gateway, "-V"]),
            "git_commit": version(["git", "-C", ROOT, "rev-parse", "HEAD"]),
            "git_uncommitted": [ln[3:] for ln in subprocess.run(
                ["git", "-C", ROOT, "status", "--porcelain"], capture_output=True,
                text=True).stdout.splitlines() if not ln[3:].startswith("bench/")],
            "nginx": version(["nginx", "-v"], r"nginx/(\S+)"),
            "nginx_package": dpkg_version("nginx-light") or dpkg_version("nginx-core"),
            "haproxy": version(["haproxy", "-v"], r"HAProxy version (\S+)"),
            "openssl": version(["openssl", "version"]),
            "libssl3_package": dpkg_version("libssl3"),
            "wrk": version(["wrk", "-v"], r"(wrk \S+)"),
            "gnuplot": version(["gnuplot", "--version"]),
            "python": sys.version.split()[0],
        },
        "method": {
            "cpu_per_request": "sum over the server's processes (nginx: master + worker; "
                               "every thread) of utime+stime from /proc/PID/stat, read just "
                               "before and just after the measured wrk run, / CLK_TCK, divided "
                               "by the requests wrk completed",
            "idle_kib_per_conn": "(VmRSS after the N connections are established and answered "
                                 "+ settle time - VmRSS before) / connections held; nginx: "
                                 "worker alone and master+worker",
            "host_index": "taskset -c SERVER_CPU openssl speed -mr -seconds 1 ecdsap256, sign/s, "
                          "before and after each round",
        },
        "commands": {},
        "failures": failures,
        "notes": notes,
    }

    try:
        if not s["skip_throughput"]:
            runs, hidx = [], []
            for rnd in range(1, s["rounds"] + 1):
                if s["host_index"]:
                    hidx.append(benchlib.host_index(ctx["s"]["server_cpu"], "before", rnd))
                for name in servers:
                    log(f"round {rnd}/{s['rounds']}: {name} ({s['warmup_s']} s warm-up, "
                        f"{s['duration_s']} s measured)")
                    r = throughput_run(ctx, name, rnd)
                    runs.append(r)
                    if r.get("ok"):
                        log(f"  {name}: {r['rps']:,.0f} req/s, p99 {r.get('p99_ms')} ms, "
                            f"{r.get('cpu_us_per_req')} µs CPU/request, non-2xx "
                            f"{r.get('non2xx')}, socket errors {r.get('socket_errors')}")
                    else:
                        log(f"  {name}: FAILED: {r.get('error') or 'see wrk output'}")
                if s["host_index"]:
                    hidx.append(benchlib.host_index(ctx["s"]["server_cpu"], "after", rnd))
                    log(f"  host index (ecdsap256 sign/s) before/after: "
                        f"{hidx[-2].get('ecdsap256_sign_per_s')} / "
                        f"{hidx[-1].get('ecdsap256_sign_per_s')}")
            medians, ratios, paired = summarise_throughput(runs, servers)
            res["throughput"] = {"runs": runs, "medians": medians, "ratios": ratios,
                                 "paired_ratios": paired}
            res["host_index"] = hidx
            for r in runs:
                if not r.get("ok"):
                    failures.append(f"throughput round {r['round']} {r['server']}: "
                                    f"{r.get('error') or 'wrk exit ' + str(r.get('wrk_rc'))}"
                                    f"{'; non-2xx/3xx responses: ' + str(r.get('non2xx')) if r.get('non2xx') else ''}")
                se = r.get("socket_errors") or {}
                if any(se.values()):
                    notes.append(f"throughput round {r['round']} {r['server']}: wrk socket "
                                 f"errors {se}")
                wu = r.get("warmup") or {}
                if wu.get("non2xx") or any((wu.get("socket_errors") or {}).values()):
                    notes.append(f"throughput round {r['round']} {r['server']} warm-up: "
                                 f"non-2xx {wu.get('non2xx')}, socket errors "
                                 f"{wu.get('socket_errors')}")
                rss = r.get("rss_kib") or {}
                if rss.get("after_run") and rss.get("after_warmup") and \
                        rss["after_run"] - rss["after_warmup"] > 4096:
                    notes.append(f"throughput round {r['round']} {r['server']}: RSS grew by "
                                 f"{rss['after_run'] - rss['after_warmup']} KiB during the "
                                 f"measured run ({rss['after_warmup']} → {rss['after_run']})")
                if r.get("pid_change"):
                    notes.append(f"throughput round {r['round']} {r['server']}: server "
                                 f"processes changed during the run {r['pid_change']}")
            busy_runs = [f"{r['server']} r{r['round']} " + ", ".join(
                f"{k} {v:.2f}" for k, v in r["foreign_load_per_s"].items() if v > 0.1)
                for r in runs if any(v > 0.1 for v in (r.get("foreign_load_per_s") or {}).values())]
            if busy_runs:
                notes.append("other load on the benchmark CPUs (CPU-seconds per second not used "
                             "by the server or wrk) above 0.10 in: " + "; ".join(busy_runs))
            unsat = [f"{r['server']} r{r['round']} {r['server_cpu_utilisation']:.2f}" for r in runs
                     if r.get("ok") and r.get("server_cpu_utilisation") is not None
                     and r["server_cpu_utilisation"] < 0.9]
            if unsat:
                notes.append("server CPU use below 0.9 of a core during the measured run ("
                             + ", ".join(unsat) + "): the server was not saturated, so req/s "
                             "is bounded by wrk on the client CPU (or by other load on the host); "
                             "compare CPU/request first")
            signs = [h.get("ecdsap256_sign_per_s") for h in hidx if h.get("ecdsap256_sign_per_s")]
            if signs and max(signs) / min(signs) > 1.10:
                notes.append(f"host-speed index varied {max(signs) / min(signs):.2f}x "
                             f"({min(signs):,.0f} to {max(signs):,.0f} sign/s) during the run")
        if not s["skip_idle"]:
            iruns = []
            for rnd in range(1, s["idle_rounds"] + 1):
                for tls in s["idle_tls"]:
                    for name in s["idle_servers"]:
                        log(f"idle memory: {name}, TLS {tls}, {s['idle_conns']:,} connections")
                        r = idle_run(ctx, name, tls, rnd)
                        iruns.append(r)
                        if r.get("ok"):
                            log(f"  {name} TLS {tls}: {r['kib_per_conn']} KiB/connection "
                                f"(RSS {r['rss_before_kib']} → {r['rss_after_kib']}, "
                                f"established in {r['establish_s']} s)")
                        else:
                            log(f"  {name} TLS {tls}: FAILED: {r.get('error')}")
            summary, iratios = summarise_idle(iruns)
            res["idle"] = {"runs": iruns, "summary": summary, "ratios": iratios}
            for r in iruns:
                if not r.get("ok"):
                    failures.append(f"idle {r['server']} TLS {r['tls']}: {r.get('error')}")
                g = r.get("rss_growth_second_wave_kib") or {}
                first = [r["rss_after_kib"][x] - r["rss_before_kib"][x] for x in g
                         if x in r.get("rss_after_kib", {})]
                if g and first and max(g.values()) > max(4096, 0.05 * max(first)):
                    notes.append(f"idle {r['server']} TLS {r['tls']}: the second wave of "
                                 f"{s['idle_conns']:,} connections peaked {g} KiB above the "
                                 f"first (first wave grew RSS by {max(first)} KiB)")
    except KeyboardInterrupt as e:
        failures.append(f"interrupted: {e}")
        cleanup()
        raise
    finally:
        cleanup()
        res["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        res["runtime_s"] = round(time.monotonic() - T_START, 1)
        res["host"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        res["commands"] = {
            "server": {n: next((r.get("server_command") for r in
                                (res.get("throughput") or {}).get("runs", [])
                                if r["server"] == n and r.get("server_command")), None)
                       for n in servers},
            "wrk_warmup": next((r["warmup"]["command"] for r in
                                (res.get("throughput") or {}).get("runs", [])
                                if r.get("warmup")), None),
            "wrk": next((r.get("command") for r in (res.get("throughput") or {}).get("runs", [])
                         if r.get("command")), None),
            "host_index": (res.get("host_index") or [{}])[0].get("command"),
            "idle_client_build": os.environ.get("BENCH_IDLE_BUILD_CMD"),
            "idle_client": next((r.get("client_command") for r in
                                 (res.get("idle") or {}).get("runs", [])
                                 if r.get("client_command")), None),
            "pki": q([cmgctl, "pki", "init", pki]),
            "reproduce": "make bench   # = bench/run-frontend.sh",
        }
        try:
            if binary_info(gateway_src)["sha256"] != gateway_info["sha256"]:
                notes.append(f"{gateway_src} was rebuilt while the benchmark ran; every run "
                             f"used the copy taken at the start (sha256 "
                             f"{gateway_info['sha256'][:16]}…, built {gateway_info['mtime']}), "
                             "but the build may have loaded the host (see the host index)")
        except OSError as e:
            notes.append(f"{gateway_src}: {e}")
        res["ok"] = not failures
        res["results_dir"] = out_dir
        png = write_plot(res, out_dir, work)
        if png:
            res["plot"] = png
        with open(os.path.join(out_dir, "frontend.json"), "w") as f:
            # Paths inside the checkout are written relative to it, so results read the same
            # on any machine.
            text = json.dumps(res, indent=1, ensure_ascii=False)
            f.write(text.replace(ROOT + "/", "") + "\n")
        write_markdown(os.path.join(out_dir, "frontend.md"), res)
    log(f"done in {res['runtime_s']:.0f} s: {os.path.join(out_dir, 'frontend.md')}")
    with open(os.path.join(out_dir, "frontend.md")) as f:
        print(f.read())
    if failures:
        log(f"{len(failures)} failure(s):")
        for x in failures:
            log(f"  {x}")
        return 1
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
