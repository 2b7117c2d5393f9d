"""The capacity benchmark's report (bench/capacity.py): the Markdown tables and the gnuplot
plots made from the result dictionary, and the relay benchmark's figures quoted from the same
results folder. Python 3 standard library."""

import json
import os
import shutil
import subprocess

import benchlib
from benchlib import fmt


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
            series.append((res["profiles"][prof]["label"], dat))
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
        gp = (f"set terminal {term} noenhanced\nset output '{png}'\n"
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
            bars.append((f"idle KiB/conn {int(n):,}", v))
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
        gp = (f"set terminal {term} noenhanced\nset output '{png}'\n"
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
            p = res["profiles"][prof]
            best = next((r for r in c["runs"] if r["clients"] == c["max_clients_measured"]
                         and r["pass"]), None)
            sm = (best or {}).get("summary") or {}
            sv = sm.get("server") or {}
            d = c.get("derived") or {}
            L.append(f"| {p['label']}: {p['vcpus']} vCPU, {p['mem_gib']} GiB | "
                     f"{p['documented_clients']:,} | {c['max_clients_measured']:,} "
                     f"({c['limited_by']}) | {ms((sm.get('latency_cycle_hold') or {}).get('p99_ms'))} ms | "
                     f"{fmt(d.get('measured_kib_per_held_client'), 1)} | "
                     f"{fmt(d.get('measured_cpu_us_per_held_client_per_s'), 2)} | "
                     f"{fmt(d.get('measured_cpu_us_per_handshake'), 0)} | "
                     f"**{fmt(d.get('clients'), 0, True)}** "
                     f"({fmt(d.get('clients_by_memory_with_kernel_sockets'), 0, True)} / "
                     f"{fmt(d.get('clients_by_cpu'), 0, True)}) |")
        L.append("")
        L.append("The per-client figures (KiB, CPU) come from the largest step that held every "
                 "client with no error" + "".join(
                     f"; {res['profiles'][prof]['label']}: {c['derived_note']}"
                     for prof, c in cap.items() if c.get("derived_note")) + ".\n")
        std = (cap.get("standard") or cap.get("lab") or {}).get("derived") or {}
        if std.get("clients"):
            L.append(f"Goal ≥ {res['goal_clients']:,} held clients on the 2-vCPU / 4 GiB profile "
                     f"(derived): **{std['clients']:,}** — "
                     f"{'met' if std['clients'] >= res['goal_clients'] else 'not met'}.\n")
        L.append("How the derived figures are made: memory — (profile memory − 512 MiB for the "
                 "system − the gateway's baseline RSS) ÷ (measured RSS growth per held client + "
                 "kernel memory per held client). The kernel's growth (socket buffers from "
                 "`/proc/net/sockstat`, slab from `/proc/meminfo`) is measured for every socket "
                 "end of the run: per held client four (cmg-bench's and the gateway's ends of the "
                 "client connection, the connector's and mpsim's ends of its held notification "
                 "request); on a VM only the gateway's end is there, so a quarter of it is "
                 "charged (an estimate), and all of it gives the upper-bound column. CPU — 80 % "
                 "of the profile's vCPUs ÷ the gateway's measured CPU per held client per second "
                 "at this cycle rate. The smaller of memory (with the gateway's kernel share) and "
                 "CPU is the figure. Reconnect: the time the derived count of clients would take "
                 "to handshake again after a restart, at the measured CPU per handshake of the "
                 "ramp (which includes the first requests) on all vCPUs.\n")
        L.append("| profile | kernel KiB per client (all ends) | derived by memory: user space "
                 "only | + gateway's kernel share | + all kernel (upper bound) | by CPU | "
                 "reconnect all (s) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for prof, c in cap.items():
            d = c.get("derived") or {}
            L.append(f"| {res['profiles'][prof]['label']} | "
                     f"{fmt(d.get('measured_kernel_kib_per_held_client_all_socket_ends'), 1)} | "
                     f"{fmt(d.get('clients_by_memory_user_space'), 0, True)} | "
                     f"{fmt(d.get('clients_by_memory_with_kernel_sockets'), 0, True)} | "
                     f"{fmt(d.get('clients_by_memory_with_all_kernel_upper_bound'), 0, True)} | "
                     f"{fmt(d.get('clients_by_cpu'), 0, True)} | "
                     f"{fmt(d.get('reconnect_all_s'), 1)} |")
        L.append("")
        L.append("Every step (fresh processes each):\n")
        L.append("Other load: CPUs busy on the host with work not of this run (other users of "
                 "the machine), averaged over the step; generator lag: p99 of how late "
                 "cmg-bench's own 10 ms timer fired (a generator that waits for a CPU adds that "
                 "much to every latency it measures).\n")
        L.append("| profile | clients | held | errors | req/s | p50 | p90 | p99 | p99.9 ms "
                 "| handshakes/s (ramp) | gateway RSS MiB | KiB/client | other load | "
                 "generator lag ms | result |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
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
                         f"{fmt((sm.get('host_load') or {}).get('other_load_cpus'), 2)} | "
                         f"{fmt((sm.get('generator') or {}).get('timer_lateness_p99_ms'), 1)} | "
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
                 f"and {sm.get('processes')} cmg-bench processes (≤ 20,000 open files each); "
                 f"notification requests held {s['agg_notify_hold']}, hold phase "
                 f"{s['agg_hold_s']:g} s.\n")
        L.append("| clients | held (whole hold) | errors | req/s | p50 | p99 | p99.9 ms | "
                 "per instance (connections) | gateways' RSS MiB | other load | generator lag "
                 "ms | result |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
        rss = sum((agg.get("gateway_rss_kib_mid_hold") or {}).values()) / 1024
        L.append(f"| {agg['clients']:,} | {fmt(sm.get('held'), 0, True)} | {sm.get('errors')} | "
                 f"{fmt(sm.get('requests_per_s_hold'), 0, True)} | {ms(lc.get('p50_ms'))} | "
                 f"{ms(lc.get('p99_ms'))} | {ms(lc.get('p99_9_ms'))} | "
                 f"{', '.join(str(int(x)) for x in agg.get('per_instance_connections') or [])} | "
                 f"{fmt(rss, 0)} | "
                 f"{fmt((sm.get('host_load') or {}).get('other_load_cpus'), 2)} | "
                 f"{fmt((sm.get('generator') or {}).get('timer_lateness_p99_ms'), 1)} | "
                 f"{'pass' if agg.get('pass') else 'fail: ' + '; '.join(agg.get('reasons', []))} |")
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


def readme_section(res, rel_dir):
    """The README's capacity table (between <!-- bench:capacity:begin/end --> markers), from a
    capacity.json; rel_dir is the results folder relative to the repository."""
    L = [f"Capacity, {res['date']} ([full report]({rel_dir}/capacity.md)): cmg-bench clients, "
         "each with its own client certificate on one TLS connection, running policy cycles "
         "(location, policy, CCM_POST status, sometimes content) through gateway → connector "
         "→ cmg-mpsim and holding a notification request between them; one instance inside "
         f"each profile's limits ({(res.get('emulation') or {}).get('method')}), the load "
         f"outside. Objective: p99 ≤ {res['settings']['p99_objective_ms']:g} ms, every client "
         "held, no errors.", ""]
    cap = res.get("capacity") or {}
    if cap:
        L.append("| profile | documented per instance | measured (one instance) | KiB per client "
                 "| **derived** per instance |")
        L.append("|---|---:|---:|---:|---:|")
        for prof, c in cap.items():
            p = res["profiles"][prof]
            d = c.get("derived") or {}
            best = next((r for r in c["runs"] if r["clients"] == c["max_clients_measured"]
                         and r["pass"]), None)
            p99 = (((best or {}).get("summary") or {}).get("latency_cycle_hold") or {}) \
                .get("p99_ms")
            L.append(f"| {p['label']} ({p['vcpus']} vCPU, {p['mem_gib']} GiB) | "
                     f"{p['documented_clients']:,} | {c['max_clients_measured']:,}"
                     f"{f' (p99 {p99:.1f} ms)' if p99 is not None else ''} | "
                     f"{fmt(d.get('measured_kib_per_held_client'), 1)} | "
                     f"**{fmt(d.get('clients'), 0, True)}** |")
        L.append("")
    agg = res.get("aggregate")
    if agg and agg.get("summary"):
        sm = agg["summary"]
        L.append(f"{agg['instances']} instances on one port (SO_REUSEPORT) held "
                 f"**{sm.get('held'):,}** of {agg['clients']:,} clients, {sm.get('errors')} "
                 f"errors, p99 {fmt((sm.get('latency_cycle_hold') or {}).get('p99_ms'), 1)} ms.")
    hs = res.get("handshake")
    if hs:
        m = hs["medians"]
        L.append(f"Full TLS 1.3 handshakes, server CPU each: ECDSA "
                 f"{fmt(m['cmg_ecdsa']['server_cpu_us_per_handshake'], 0)} µs (nginx "
                 f"{fmt(m['nginx_ecdsa']['server_cpu_us_per_handshake'], 0)}), RSA "
                 f"{fmt(m['cmg_rsa']['server_cpu_us_per_handshake'], 0)} µs (nginx "
                 f"{fmt(m['nginx_rsa']['server_cpu_us_per_handshake'], 0)}); crypto floor "
                 f"{fmt(hs['openssl_before'].get('crypto_floor_us_ecdsa'), 0)} / "
                 f"{fmt(hs['openssl_before'].get('crypto_floor_us_rsa'), 0)} µs.")
    idl = res.get("idle")
    if idl:
        parts = []
        for n in sorted({r["connections"] for r in idl["runs"]}):
            a = next((r for r in idl["runs"] if r["connections"] == n and r["server"] == "cmg"),
                     {})
            b = next((r for r in idl["runs"] if r["connections"] == n and
                      r["server"] == "nginx"), {})
            parts.append(f"{n:,}: {fmt(a.get('kib_per_conn'), 1)} KiB (nginx "
                         f"{fmt(b.get('kib_per_conn'), 1)})")
        L.append("Idle TLS 1.3 connection, user-space memory: " + "; ".join(parts) + ".")
    L.append("")
    L.append("Derived = what the profile's memory and CPU allow from the measured cost per held "
             "client (a process here may hold at most 20,000 open files, so one instance is "
             "measured up to 18,500 clients). Reproduce with `make bench-capacity` "
             "(`bench/run-capacity.sh`; `--smoke` for a quick check).")
    return "\n".join(L)


if __name__ == "__main__":
    import sys

    # capreport.py --readme RESULTS_DIR: print the README section for that folder's report
    if len(sys.argv) == 3 and sys.argv[1] == "--readme":
        with open(os.path.join(sys.argv[2], "capacity.json")) as f:
            print(readme_section(json.load(f), sys.argv[2].rstrip("/")))
    else:
        print("usage: capreport.py --readme RESULTS_DIR", file=sys.stderr)
        sys.exit(2)
