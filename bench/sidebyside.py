"""The capacity benchmark's side-by-side parts (bench/capacity.py): full TLS handshakes per
second and server CPU per handshake, and memory per idle TLS connection, the gateway against
nginx on the same machine with the same TLS settings. Python 3 standard library."""

import json
import os
import re
import signal
import subprocess
import time

import benchlib
from benchlib import children, fill, free_port, log, med, q, ratio, rss_kib, spawn
from relay import Proc, listening, wait_for

FD_CAP = 20000  # this machine's hard limit of open files per process


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


