"""Helpers shared by the benchmark harnesses (bench/frontend.py, bench/relay.py).
Python 3 standard library only.

Processes are registered when started (spawn) and stopped by PID (cleanup); CPU time comes from
/proc/PID/stat, load from /proc/stat, wrk's output is parsed into a dict, and the host-speed
index is `openssl speed ecdsap256` on the server CPU."""

import datetime
import hashlib
import http.client
import os
import re
import shlex
import signal
import socket
import statistics
import ssl
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
T_START = time.monotonic()
PROG = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "bench"


# --------------------------------------------------------------------------------------------
# settings and logging


def env(name, default, conv=str):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return conv(v)
    except ValueError:
        sys.exit(f"{PROG}: {name}={v!r} is not a valid {conv.__name__}")


def log(msg):
    print(f"[{time.monotonic() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# processes: everything started here is registered and stopped by PID


STARTED = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    STARTED.append(p)
    return p


def stop_pid_list(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def cleanup():
    for p in STARTED:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            except ProcessLookupError:
                pass


def on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


CLK_TCK = int(subprocess.run(["getconf", "CLK_TCK"], capture_output=True, text=True).stdout)


def cpu_ticks(pid):
    """utime + stime of the whole process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except FileNotFoundError:
        pass
    return sorted(out)


def cpu_stat():
    """{cpu number as str: (busy ticks, steal ticks)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = line.split()
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, v[1:9])
                out[v[0][3:]] = (user + nice + system + irq + softirq + steal, steal)
    return out


def sockstat_tcp_mem_pages():
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()
                    return int(parts[parts.index("mem") + 1])
    except (OSError, ValueError):
        pass
    return None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def q(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


def foreign_processes(patterns=(r"python3 -m unittest", r"cmg-(gateway|connector|mpsim)"),
                      exclude=()):
    """Processes not started here whose command line matches one of the patterns (other
    benchmark or test work that would disturb the measurements): [(pid, cmdline)]."""
    mine = {p.pid for p in STARTED} | set(exclude) | {os.getpid()}
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in mine:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd and any(re.search(p, cmd) for p in patterns):
            out.append((int(d), cmd[:200]))
    return out


# --------------------------------------------------------------------------------------------
# configuration templates (bench/conf/*.in, placeholders @NAME@)


def https_get(port, path, timeout=5.0):
    """One GET over TLS to 127.0.0.1:port (certificate not checked): (status, body)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def fill(template, values):
    with open(os.path.join(BENCH, "conf", template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z]+@", text)
    if left:
        raise RuntimeError(f"{template}: unfilled placeholders {left}")
    return text


# --------------------------------------------------------------------------------------------
# measurements

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out)
    if m:
        r["requests"] = int(m.group(1))
        r["duration_s"] = float(m.group(2)) * UNIT_MS[m.group(3)] / 1000.0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M):
        r[f"p{pct}_ms"] = round(float(val) * UNIT_MS[unit], 4)
    m = re.search(
        r"Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)", out
    )
    if m:
        r["latency_avg_ms"] = round(float(m.group(1)) * UNIT_MS[m.group(2)], 4)
        r["latency_stdev_ms"] = round(float(m.group(3)) * UNIT_MS[m.group(4)], 4)
        r["latency_max_ms"] = round(float(m.group(5)) * UNIT_MS[m.group(6)], 4)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
        if m
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


def run_wrk(s, url, duration, headers=(), redact=None):
    """taskset -c CLIENT_CPU wrk -tT -cC -dDs --latency [-H header]... URL, bounded in time.
    s: settings with client_cpu, wrk_threads, wrk_connections. redact: {secret: placeholder}
    applied to the command as recorded (the command run has the real value)."""
    argv = ["taskset", "-c", s["client_cpu"], "wrk", f"-t{s['wrk_threads']}",
            f"-c{s['wrk_connections']}", f"-d{duration}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace") + "\n[harness: wrk timed out]", -1
    r = parse_wrk(out)
    r["wrk_rc"] = rc
    cmd = q(argv)
    for secret, placeholder in (redact or {}).items():
        cmd = cmd.replace(secret, placeholder)
    r["command"] = cmd
    r["wrk_output"] = out
    return r


def host_index(cpu, when, rnd):
    argv = ["taskset", "-c", cpu, "openssl", "speed", "-mr", "-seconds", "1", "ecdsap256"]
    rec = {"round": rnd, "when": when, "command": q(argv)}
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        m = re.search(r"^\+F4:\d+:256:([\d.]+):([\d.]+)", p.stdout, re.M)
        if m:
            rec["ecdsap256_sign_per_s"] = round(float(m.group(1)), 1)
            rec["ecdsap256_verify_per_s"] = round(float(m.group(2)), 1)
        else:
            rec["error"] = "no +F4 line in the output"
    except subprocess.TimeoutExpired:
        rec["error"] = "timed out"
    return rec


def prom_metrics(port, skip=("cmg_start_time", "cmg_build_info"), timeout=5):
    """Non-zero samples of a Prometheus text endpoint (http://127.0.0.1:PORT/metrics)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
    except (OSError, http.client.HTTPException) as e:
        return {"error": str(e)}
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, val = line.rpartition(" ")
        if name.startswith(tuple(skip)):
            continue
        try:
            v = float(val)
        except ValueError:
            continue
        if v:
            out[name] = int(v) if v == int(v) else v
    return out


def metric_sum(metrics, name):
    """Sum of every sample of one metric (all label sets) in a prom_metrics() dict."""
    return sum(v for k, v in (metrics or {}).items()
               if k == name or k.startswith(name + "{"))


# --------------------------------------------------------------------------------------------
# summaries and formatting


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def fmt(x, nd=1, comma=False):
    if x is None:
        return "–"
    if comma:
        return f"{x:,.{nd}f}"
    return f"{x:.{nd}f}"


def gnuplot_png_term(size="800,500"):
    terms = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return (f"pngcairo size {size}" if "pngcairo" in terms.stdout + terms.stderr
            else f"png size {size}")


# --------------------------------------------------------------------------------------------
# versions and binaries


def version(argv, pattern=None):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if pattern:
        m = re.search(pattern, text)
        return m.group(1) if m else text.splitlines()[0] if text else None
    return text.splitlines()[0] if text else None


def binary_info(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    st = os.stat(path)
    shown = os.path.relpath(path, ROOT) if os.path.abspath(path).startswith(ROOT + os.sep) else path
    return {"path": shown, "sha256": h.hexdigest(),
            "mtime": datetime.datetime.fromtimestamp(st.st_mtime).astimezone()
            .isoformat(timespec="seconds")}


def dpkg_version(pkg):
    return version(["dpkg-query", "-W", "-f=${Version}", pkg])


def host_info():
    return {
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                           if ln.startswith("model name")), "?"),
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "clk_tck": CLK_TCK,
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "nofile_limit": subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True,
                                       text=True).stdout.strip(),
    }


def git_info():
    return {
        "git_commit": version(["git", "-C", ROOT, "rev-parse", "HEAD"]),
        "git_uncommitted": [ln[3:] for ln in subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain"], capture_output=True,
            text=True).stdout.splitlines() if not ln[3:].startswith("bench/")],
    }


def peer_versions():
    return {
        "nginx": version(["nginx", "-v"], r"nginx/(\S+)"),
        "nginx_package": dpkg_version("nginx-light") or dpkg_version("nginx-core"),
        "haproxy": version(["haproxy", "-v"], r"HAProxy version (\S+)"),
        "openssl": version(["openssl", "version"]),
        "libssl3_package": dpkg_version("libssl3"),
        "wrk": version(["wrk", "-v"], r"(wrk \S+)"),
        "gnuplot": version(["gnuplot", "--version"]),
        "python": sys.version.split()[0],
    }


def stop_process(proc, extra_pids, log_f):
    """Stops a server the harness started: SIGTERM, again after 10 s, SIGKILL after 5 more;
    then SIGKILL for any of extra_pids (an nginx master's workers) still alive. Closes log_f.
    Returns {"exit_status", "seconds", "how"}."""
    t = time.monotonic()
    how = "SIGTERM"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            how = "SIGTERM, then SIGTERM again after 10 s"
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                how += ", then SIGKILL"
                proc.kill()
                rc = proc.wait(timeout=5)
    else:
        rc = proc.returncode
        how = "had already exited"
    leftover = [p for p in extra_pids if os.path.exists(f"/proc/{p}")]
    if leftover:
        time.sleep(0.5)
        leftover = [p for p in leftover if os.path.exists(f"/proc/{p}")]
        stop_pid_list(leftover, signal.SIGKILL)
        if leftover:
            how += f", SIGKILL to leftover worker(s) {leftover}"
    log_f.close()
    return {"exit_status": rc, "seconds": round(time.monotonic() - t, 3), "how": how}


def run_main(main):
    """The harnesses' entry: exit with main()'s status; Ctrl-C stops what was started."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
