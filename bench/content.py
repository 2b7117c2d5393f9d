#!/usr/bin/env python3
"""Content benchmark: cached objects over TLS keep-alive, cmg-gateway against nginx serving the
same files with the same TLS settings, and PeerDist hashing speed against SHA-256 on one core.

Called by bench/run-content.sh. For each object size (64 KiB, 1 MiB), each round, each server
in interleaved order: start the server pinned to CPU 0, warm it (the gateway's cache is filled
by the warm-up, so the measured run reads only cached files), then
`taskset -c 1 wrk -t1 -cN -dD --latency URL`: req/s, MiB/s, p99 and server CPU per request and
per MiB (utime+stime of every server process from /proc over the measured run). A host-speed
index is taken before and after each round. Then `peerdist-speed` (the hasher with both CI
versions, SHA-256 and SHA-512 alone) and `openssl speed -seconds 3 sha256` on CPU 0.

Results: content.json (raw runs, medians, ratios, versions, commands) and content.md.
Exit status: 0 every run answered correctly, 1 a run failed, 2 setup error.
"""

import datetime
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse

import benchlib
from benchlib import (ROOT, binary_info, cleanup, cpu_ticks, dpkg_version, env, fill, fmt,
                      free_port, log, med, on_term, q, ratio, rss_kib, spawn, stop_process,
                      version, CLK_TCK)

SIZES = {"64k": 64 * 1024, "1m": 1024 * 1024}
PACKAGE = "PS900001"


def settings(smoke):
    return {
        "rounds": env("BENCH_ROUNDS", 1 if smoke else 3, int),
        "duration": env("BENCH_DURATION", 2 if smoke else 10, int),
        "warmup": env("BENCH_WARMUP", 1 if smoke else 2, int),
        "wrk_connections": env("BENCH_CONNS", 16, int),
        "wrk_threads": env("BENCH_THREADS", 1, int),
        "server_cpu": env("BENCH_SERVER_CPU", "0"),
        "client_cpu": env("BENCH_CLIENT_CPU", "1"),
        "sizes": env("BENCH_SIZES", "64k,1m").split(","),
        "servers": env("BENCH_SERVERS", "cmg,nginx").split(","),
        "hash_mib": env("BENCH_HASH_MIB", 256 if smoke else 2048, int),
        "smoke": smoke,
    }


class Server:
    name = "?"

    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None
        self.extra_pids = []

    def start(self, tag):
        self.run_dir = os.path.join(self.ctx["work"], "runs", tag)
        os.makedirs(self.run_dir, exist_ok=True)
        self.port = free_port()
        self.argv = ["taskset", "-c", self.ctx["s"]["server_cpu"]] + self.write_config()
        self.log_f = open(os.path.join(self.run_dir, "server.log"), "wb")
        self.proc = spawn(self.argv, stdout=self.log_f, stderr=subprocess.STDOUT,
                          cwd=self.run_dir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start (status {self.proc.returncode})")
            try:
                benchlib.https_get(self.port, "/", timeout=2)
                self.after_ready()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within 15 s")

    def after_ready(self):
        pass

    def pids(self):
        return [self.proc.pid] + list(self.extra_pids)

    def stop(self):
        return stop_process(self.proc, self.extra_pids, self.log_f) if self.proc else None


class Cmg(Server):
    name = "cmg"

    def write_config(self):
        self.aport = free_port()
        cfg = os.path.join(self.run_dir, "gateway.ini")
        with open(cfg, "w") as f:
            f.write(fill("gateway-content.ini.in", {
                "PORT": self.port, "APORT": self.aport,
                "CERT": os.path.join(self.ctx["pki"], "server-chain.pem"),
                "KEY": os.path.join(self.ctx["pki"], "server.key"),
                "STORE": self.ctx["store"],
                "CACHE": os.path.join(self.ctx["work"], "cache"),
                "TOKENCERT": os.path.join(self.ctx["pki"], "token-signing.crt"),
            }))
        return [self.ctx["gateway"], "-c", cfg]

    def path(self, size):
        return f"/cmgcontent/{PACKAGE}/{size}.bin?{self.ctx['token']}"


class Nginx(Server):
    name = "nginx"

    def write_config(self):
        os.makedirs(os.path.join(self.run_dir, "tmp"), exist_ok=True)
        cfg = os.path.join(self.run_dir, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(fill("nginx-content.conf.in", {
                "D": self.run_dir, "PORT": self.port,
                "CERT": os.path.join(self.ctx["pki"], "server-chain.pem"),
                "KEY": os.path.join(self.ctx["pki"], "server.key"),
                "ROOT": self.ctx["files"],
            }))
        return ["nginx", "-c", cfg, "-p", self.run_dir]

    def after_ready(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            kids = benchlib.children(self.proc.pid)
            if kids:
                self.extra_pids = kids
                return
            time.sleep(0.05)
        raise RuntimeError("nginx: no worker process appeared")

    def path(self, size):
        return f"/{size}.bin"


CLASSES = {"cmg": Cmg, "nginx": Nginx}


def one_run(ctx, name, size, rnd):
    s = ctx["s"]
    srv = CLASSES[name](ctx)
    rec = {"round": rnd, "server": name, "size": size, "ok": False}
    try:
        srv.start(f"r{rnd}-{size}-{name}")
        path = srv.path(size)
        st, body = benchlib.https_get(srv.port, path, timeout=10.0)
        want = ctx["digests"][size]
        if st != 200 or hashlib.sha256(body).hexdigest() != want:
            raise RuntimeError(f"{name} answered {st} with {len(body)} bytes that are not the file")
        url = f"https://127.0.0.1:{srv.port}{path}"
        benchlib.run_wrk(s, url, s["warmup"], redact={ctx["token"]: "<content token>"})
        pids = srv.pids()
        t0 = sum(cpu_ticks(p) for p in pids)
        w = benchlib.run_wrk(s, url, s["duration"], redact={ctx["token"]: "<content token>"})
        t1 = sum(cpu_ticks(p) for p in pids)
        cpu_s = (t1 - t0) / CLK_TCK
        reqs = w.get("requests", 0)
        rec.update({
            "wrk": w, "cpu_s": cpu_s, "requests": reqs,
            "rps": w.get("rps"),
            "mib_s": (w.get("rps") or 0) * SIZES[size] / (1 << 20),
            "cpu_us_per_req": cpu_s * 1e6 / reqs if reqs else None,
            "cpu_us_per_mib": cpu_s * 1e6 / (reqs * SIZES[size] / (1 << 20)) if reqs else None,
            "p99_ms": w.get("p99_ms"),
            "errors": sum(w.get("socket_errors", {}).values()) + w.get("non2xx", 0),
            "rss_kib": rss_kib(srv.proc.pid),
        })
        if name == "cmg":
            m = benchlib.prom_metrics(srv.aport)
            rec["fills"] = benchlib.metric_sum(m, "cmg_content_fills_total")
            rec["cache_requests"] = benchlib.metric_sum(m, "cmg_content_requests_total")
        rec["ok"] = bool(reqs) and rec["errors"] == 0 and w.get("wrk_rc") == 0
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on with the next server
        rec["error"] = str(e)
        log(f"{name} {size} round {rnd}: {e}")
    finally:
        st = srv.stop()
        if st:
            rec["stop"] = st
    return rec


def hashing(ctx):
    s = ctx["s"]
    exe = ctx["peerdist_speed"]
    out = subprocess.run(["taskset", "-c", s["server_cpu"], exe, str(s["hash_mib"])],
                         capture_output=True, text=True, timeout=600).stdout
    res = {"peerdist_speed_output": out}
    for line in out.splitlines():
        m = re.match(r"^(.+?)\s+([0-9.]+) MB/s CPU", line)
        if m:
            res[m.group(1).strip()] = float(m.group(2))
    sp = subprocess.run(["taskset", "-c", s["server_cpu"], "openssl", "speed", "-seconds", "3",
                         "-bytes", "16384", "sha256"], capture_output=True, text=True,
                        timeout=120).stdout
    m = re.search(r"^sha256\s+([0-9.]+)k", sp, re.M)
    res["openssl_speed_sha256_16k_MBps"] = float(m.group(1)) / 1000 if m else None
    res["openssl_speed_output"] = sp
    return res


def main():
    smoke = "--smoke" in sys.argv[1:] or os.environ.get("BENCH_SMOKE") == "1"
    s = settings(smoke)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    work = os.environ["BENCH_WORK"]
    ctx = {"s": s, "work": work, "gateway": os.environ["CMG_GATEWAY"],
           "cmgctl": os.environ["CMGCTL"], "peerdist_speed": os.environ["BENCH_PEERDIST_SPEED"]}
    try:
        ctx["pki"] = os.path.join(work, "pki")
        subprocess.run([ctx["cmgctl"], "pki", "init", ctx["pki"]], check=True,
                       stdout=subprocess.DEVNULL)
        ctx["files"] = os.path.join(work, "files")
        os.makedirs(ctx["files"], exist_ok=True)
        ctx["digests"] = {}
        for size in s["sizes"]:
            data = os.urandom(SIZES[size])
            with open(os.path.join(ctx["files"], f"{size}.bin"), "wb") as f:
                f.write(data)
            ctx["digests"][size] = hashlib.sha256(data).hexdigest()
        ctx["store"] = os.path.join(work, "store")
        dist_cfg = os.path.join(work, "distribute.ini")
        with open(dist_cfg, "w") as f:
            f.write(f"[content]\nstore = folder\nfolder = {ctx['store']}\n")
        subprocess.run([ctx["cmgctl"], "content", "distribute", "-c", dist_cfg, PACKAGE,
                        ctx["files"]], check=True, stdout=subprocess.DEVNULL)
        ctx["token"] = subprocess.run(
            [ctx["cmgctl"], "token", "issue", "content", "--key",
             os.path.join(ctx["pki"], "token-signing.key"), "--package", PACKAGE,
             "--lifetime", "20h"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"setup failed: {e}")
        return 2

    runs, host = [], []
    for rnd in range(1, s["rounds"] + 1):
        host.append(benchlib.host_index(s["server_cpu"], "before", rnd))
        order = s["servers"] if rnd % 2 else list(reversed(s["servers"]))
        for size in s["sizes"]:
            for name in order:
                log(f"round {rnd}: {name} {size}")
                runs.append(one_run(ctx, name, size, rnd))
        host.append(benchlib.host_index(s["server_cpu"], "after", rnd))
    hash_res = hashing(ctx)

    summary = {}
    for size in s["sizes"]:
        summary[size] = {}
        for name in s["servers"]:
            ok = [r for r in runs if r["server"] == name and r["size"] == size and r["ok"]]
            summary[size][name] = {k: med([r[k] for r in ok]) if ok else None
                                   for k in ("rps", "mib_s", "cpu_us_per_req", "cpu_us_per_mib",
                                             "p99_ms")}
        c, n = summary[size].get("cmg"), summary[size].get("nginx")
        if c and n:
            summary[size]["ratio"] = {k: ratio(c[k], n[k]) for k in c}
    limit = hash_res.get("openssl_speed_sha256_16k_MBps")
    hasher_v1 = hash_res.get("hasher CI 1.0")
    res = {
        "date": datetime.date.today().isoformat(),
        "settings": s, "runs": runs, "host_index": host, "summary": summary,
        "hashing": hash_res,
        "hashing_v1_vs_openssl_sha256": ratio(hasher_v1, limit) if hasher_v1 and limit else None,
        "versions": {"nginx": dpkg_version("nginx"), "openssl": version(["openssl", "version"]),
                     "gateway": binary_info(ctx["gateway"])},
        "commands": {"wrk": f"taskset -c {s['client_cpu']} wrk -t{s['wrk_threads']} "
                            f"-c{s['wrk_connections']} "
                            f"-d{s['duration']}s --latency URL"},
    }
    out_dir = os.environ.get("BENCH_RESULTS") or (
        os.path.join(work, "results") if smoke else
        os.path.join(ROOT, "bench", "results", res["date"]))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "content.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    write_markdown(os.path.join(out_dir, "content.md"), res)
    log(f"results in {out_dir}")
    failed = [r for r in runs if not r["ok"]]
    return 1 if failed else 0


def write_markdown(path, res):
    s = res["settings"]
    lines = [f"# Cached content: cmg-gateway vs nginx static, {res['date']}", "",
             f"Both servers on CPU {s['server_cpu']} with one worker, TLS 1.3 (ECDSA P-256, "
             f"the same suites), keep-alive; `{res['commands']['wrk']}` on CPU "
             f"{s['client_cpu']}; {s['rounds']} interleaved rounds of {s['duration']} s, "
             "medians. The gateway serves from its disk cache (filled by the warm-up), through "
             "the content route with a content access token; nginx serves the same files "
             "from disk (`sendfile` does not apply to TLS without kTLS, so both encrypt in "
             "user space).", "",
             "| object | | cmg-gateway | nginx | cmg / nginx |", "|---|---|---:|---:|---:|"]
    for size, row in res["summary"].items():
        c, n, r = row.get("cmg") or {}, row.get("nginx") or {}, row.get("ratio") or {}
        for key, label, nd in (("cpu_us_per_req", "server CPU per request (µs)", 1),
                               ("cpu_us_per_mib", "server CPU per MiB (µs)", 0),
                               ("mib_s", "MiB/s", 0), ("rps", "requests/s", 0),
                               ("p99_ms", "p99 latency (ms)", 2)):
            lines.append(f"| {size} | {label} | {fmt(c.get(key), nd)} | {fmt(n.get(key), nd)} | "
                         f"{fmt(r.get(key), 2)} |")
    lines += ["", "Every run (server CPU per request in µs; `fills` is the gateway's fills during the "
              "measured server's life, 1 for the warm-up of a fresh cache, 0 when the cache "
              "folder was already filled by an earlier round):", "",
              "| round | object | server | CPU/request | MiB/s | p99 ms | fills | ok |",
              "|---|---|---|---:|---:|---:|---:|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['round']} | {r['size']} | {r['server']} | "
                     f"{fmt(r.get('cpu_us_per_req'), 1)} | {fmt(r.get('mib_s'), 0)} | "
                     f"{fmt(r.get('p99_ms'), 2)} | {r.get('fills', '–')} | {r['ok']} |")
    lines += ["", "Host-speed index (`openssl speed -mr -seconds 1 ecdsap256` on CPU "
              f"{s['server_cpu']}, signatures/s) before and after each round: " +
              ", ".join(f"{h.get('round')}{h.get('when')[0]} {fmt(h.get('ecdsap256_sign_per_s'), 0)}"
                        for h in res["host_index"]) + ". A drop within a round means the host "
              "slowed down during it; the medians keep such a round from deciding the result."]
    h = res["hashing"]
    lines += ["", "## PeerDist hashing on one core", "",
              "`peerdist-speed` (the hasher computing CI 1.0 and 2.0 hashes in one pass, as the "
              "cache fill does) next to `openssl speed -seconds 3 -bytes 16384 sha256`, both on "
              f"CPU {s['server_cpu']}.", "", "```", h.get("peerdist_speed_output", "").strip(),
              "```", "",
              f"openssl speed sha256 (16 KiB blocks): {fmt(h.get('openssl_speed_sha256_16k_MBps'), 0)} MB/s; "
              f"hasher CI 1.0 / that limit: {fmt(res.get('hashing_v1_vs_openssl_sha256'), 2)} "
              "(the goal: at least 0.80). CI 2.0 is SHA-512 by definition, so its limit is "
              "SHA-512's speed, which the line \"CI 2.0 against EVP SHA-512\" compares with; "
              "a fill computes both, at the sum of their costs.", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:  # content.py --report DIR: content.md again from content.json
        with open(os.path.join(sys.argv[2], "content.json")) as f:
            write_markdown(os.path.join(sys.argv[2], "content.md"), json.load(f))
        sys.exit(0)
    try:
        sys.exit(main())
    finally:
        cleanup()
