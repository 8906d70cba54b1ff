#!/usr/bin/env python3
"""table.py - turn the outputs collected by bench/run into one markdown table.

    table.py RESULTS_DIR

RESULTS_DIR holds one file per run, named <workload>.<layout>.<impl>.<rep>.txt, with the
stdout of bench (library) or baselines (fpr, phdf5), plus memcpy.<rep>.txt and
fswrite.<rep>.txt. For each (workload, layout, impl) the run with the median events/s is
kept whole, so the columns of a row come from one run; `spread` is (max - min) / median
of events/s over the repeats.
"""
import glob
import os
import re
import statistics
import sys

LAYOUTS = [("serial", "serial (1 rank)"), ("1+1", "1 srv + 1 cli (2 ranks)"), ("2+4", "2 srv + 4 cli (6 ranks)")]
IMPLS = ["smalldata", "smalldata-deflate1", "smalldata-lz4", "fpr", "phdf5"]
ZIMPLS = [("smalldata-deflate1", "deflate 1 + shuffle"), ("smalldata-lz4", "LZ4 (filter 32004)")]
WORKLOADS = ["ref", "large"]


def kv(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


def parse_run(path):
    """-> {'main': {...}, 'roles': {role: {...}}, 'skipped': str|None}"""
    out = {"main": {}, "roles": {}, "skipped": None}
    with open(path) as f:
        for line in f:
            if "skipped:" in line:
                out["skipped"] = line.split("skipped:", 1)[1].strip()
            elif line.strip().startswith("role="):
                d = kv(line)
                out["roles"][d["role"]] = d
            elif line.strip().startswith("compression="):
                out["z"] = kv(line)
            elif "events_per_s=" in line or "GB_per_s=" in line or "pagecache_MB_per_s=" in line:
                out["main"] = kv(line)
    return out


def median_run(runs, key):
    """The run whose `key` is the (lower) median; the whole run is kept."""
    runs = [r for r in runs if key in r["main"]]
    if not runs:
        return None
    runs.sort(key=lambda r: float(r["main"][key]))
    return runs[(len(runs) - 1) // 2]


def f(x, fmt):
    return "-" if x is None else format(x, fmt)


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, TypeError, ValueError):
        return None


def per_writer_mbs(m, writers, write_s):
    """Payload MB each writer (server, serial process or baseline rank) moved per second of
    its write time: total payload / writers / write_s (write_s is the slowest writer's)."""
    mbs, wall = num(m, "payload_MB_per_s"), num(m, "wall_s")
    if not mbs or not wall or not write_s:
        return None
    return mbs * wall / writers / write_s


def main():
    res = sys.argv[1]
    groups = {}
    for p in glob.glob(os.path.join(res, "*.txt")):
        name = os.path.basename(p)[:-4]
        key = tuple(name.split(".")[:-1])
        groups.setdefault(key, []).append(parse_run(p))

    best = {}
    spread = {}  # (max - min) / median of events/s over the repeats, when there are several
    for key, runs in groups.items():
        if len(key) == 3:
            skipped = [r for r in runs if r["skipped"]]
            best[key] = skipped[0] if skipped else median_run(runs, "events_per_s")
            evs = [float(r["main"]["events_per_s"]) for r in runs if "events_per_s" in r["main"]]
            if len(evs) > 1 and statistics.median(evs) > 0:
                spread[key] = (max(evs) - min(evs)) / statistics.median(evs)
    nreps = max((len(r) for k, r in groups.items() if len(k) == 3), default=0)

    hdr = ["workload", "layout", "impl", "events/s", "spread", "payload MB/s", "wall s", "vs fpr",
           "ns/event (ser|cli)", "wait s (cli)", "write s (ser|srv)", "write MB/s per writer", "idle s (srv)", "join s",
           "peak RSS MiB", "MPI_Init s"]
    rows = []
    for w in WORKLOADS:
        for lay, lay_name in LAYOUTS:
            fpr = best.get((w, lay, "fpr"))
            fpr_evs = num(fpr["main"], "events_per_s") if fpr and not fpr["skipped"] else None
            for impl in IMPLS:
                r = best.get((w, lay, impl))
                if r is None:
                    continue
                if r["skipped"]:
                    rows.append([w, lay_name, impl, "skipped: " + r["skipped"]] + [""] * (len(hdr) - 4))
                    continue
                sp = "%.0f%%" % (100 * spread[(w, lay, impl)]) if (w, lay, impl) in spread else "-"
                m = r["main"]
                evs = num(m, "events_per_s")
                ratio = f(evs / fpr_evs, ".2f") if evs and fpr_evs else "-"
                if impl.startswith("smalldata"):
                    ro = r["roles"]
                    hot = ro.get("serial") or ro.get("client") or {}
                    wr = ro.get("serial") or ro.get("server") or {}
                    cli = ro.get("client", {})
                    srv = ro.get("server", {})
                    join = max((num(d, "join_s") or 0.0) for d in ro.values()) if ro else None
                    writers = int(num(srv, "ranks") or 1) if srv else 1
                    wmb = per_writer_mbs(m, writers, num(wr, "write_s"))
                    if "serial" in ro:
                        rss = f(num(ro["serial"], "peak_rss_MiB"), ".1f")
                    else:
                        rss = "cli %s / srv %s" % (f(num(cli, "peak_rss_MiB"), ".1f"), f(num(srv, "peak_rss_MiB"), ".1f"))
                    rows.append([w, lay_name, impl, f(evs, ",.0f"), sp, f(num(m, "payload_MB_per_s"), ".1f"),
                                 f(num(m, "wall_s"), ".3f"), ratio, f(num(hot, "ns_per_event_call"), ".0f"),
                                 f(num(cli, "wait_s"), ".3f") if cli else "-", f(num(wr, "write_s"), ".3f"), f(wmb, ".0f"),
                                 f(num(srv, "idle_s"), ".3f") if srv else "-", f(join, ".3f"), rss,
                                 "not in wall"])
                else:
                    nr = m.get("ranks", "?")
                    rows.append([w, lay_name, "%s (%s rank%s)" % (impl, nr, "" if nr == "1" else "s"), f(evs, ",.0f"), sp,
                                 f(num(m, "payload_MB_per_s"), ".1f"), f(num(m, "wall_s"), ".3f"), ratio,
                                 f(num(m, "ns_per_event"), ".0f"), "-", f(num(m, "write_s"), ".3f"),
                                 f(per_writer_mbs(m, int(num(m, "ranks") or 1), num(m, "write_s")), ".0f"), "-", "-",
                                 f(num(m, "peak_rss_MiB"), ".1f") + " (max)", f(num(m, "mpi_init_s"), ".3f") + " (not in wall)"])

    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()

    mc = median_run(groups.get(("memcpy",), []), "GB_per_s")
    fs = median_run(groups.get(("fswrite",), []), "pagecache_MB_per_s")
    if mc:
        print("memcpy: %s GB/s (256 MiB, best of 5; bytes copied per second)" % mc["main"].get("GB_per_s"))
    if fs:
        m = fs["main"]
        print("fswrite (%s, %.0f MiB in 1 MiB write(2) blocks, fresh file): page cache %s MB/s "
              "(better of two passes: %s, %s), with fdatasync %s MB/s (fdatasync itself %s s), "
              "into space reserved first with fallocate %s MB/s"
              % (m.get("dir"), float(m.get("bytes", 0)) / 2**20, m.get("pagecache_MB_per_s"),
                 m.get("pass1_MB_per_s"), m.get("pass2_MB_per_s"), m.get("fdatasync_MB_per_s"),
                 m.get("fdatasync_s"), m.get("prealloc_MB_per_s") or "n/a"))
    print()

    def get(w, lay, impl, k):
        r = best.get((w, lay, impl))
        return None if r is None or r["skipped"] else num(r["main"], k)

    def target(label, a, b, unit, want):
        """One target: the ratio a / b against `want`, marked met or missed (by how much)."""
        if a is None or b is None or b == 0:
            print("  %s: n/a" % label)
            return
        r = a / b
        status = "met" if r >= want else "MISSED by %.0f%%" % (100 * (1 - r / want))
        print("  %s: %.2f, target >= %.2f: %s  (%s vs %s %s)" % (label, r, want, status, f(a, ",.0f"), f(b, ",.0f"), unit))

    print("Targets (ratios measured in this run%s):" % (", median of %d" % nreps if nreps > 1 else ""))
    target("ref 1 srv + 1 cli, events/s vs 2,500,000", get("ref", "1+1", "smalldata", "events_per_s"), 2.5e6,
           "events/s", 1.0)
    target("ref 1 srv + 1 cli vs fpr 2 ranks, events/s", get("ref", "1+1", "smalldata", "events_per_s"),
           get("ref", "1+1", "fpr", "events_per_s"), "events/s", 0.5)
    target("ref serial vs fpr 1 rank, events/s", get("ref", "serial", "smalldata", "events_per_s"),
           get("ref", "serial", "fpr", "events_per_s"), "events/s", 0.5)
    target("large 1 srv + 1 cli payload vs fswrite page cache, MB/s",
           get("large", "1+1", "smalldata", "payload_MB_per_s"),
           num(fs["main"], "pagecache_MB_per_s") if fs else None, "MB/s", 0.7)
    pre = num(fs["main"], "prealloc_MB_per_s") if fs else None
    large11 = get("large", "1+1", "smalldata", "payload_MB_per_s")
    if pre and large11:  # smalldata reserves file space too: the same comparison against that
        print("  (for information) large 1 srv + 1 cli payload vs fswrite into reserved space: %.2f  (%s vs %s MB/s)"
              % (large11 / pre, f(large11, ",.0f"), f(pre, ",.0f")))
    for w in WORKLOADS:
        for lay, lay_name in LAYOUTS:
            r = best.get((w, lay, "phdf5"))
            if r is None or r["skipped"]:
                print("  %s %s vs phdf5: not measured (%s)" % (w, lay, r["skipped"] if r else "no run"))
                continue
            target("%s %s vs phdf5, events/s" % (w, lay), get(w, lay, "smalldata", "events_per_s"),
                   get(w, lay, "phdf5", "events_per_s"), "events/s", 1.0)

    if any(best.get((w, lay, z)) for w in WORKLOADS for lay, _ in LAYOUTS for z, _ in ZIMPLS):
        print()
        print("Compression (bench/run --compression), against smalldata without it in this run; ratio = payload "
              "bytes / bytes of the files written:")
        print()
        print("| workload | layout | compression | events/s | vs none | payload MB/s | compression ratio | file MB |")
        print("|---|---|---|---|---|---|---|---|")
        for w in WORKLOADS:
            for lay, lay_name in LAYOUTS:
                base = get(w, lay, "smalldata", "events_per_s")
                for z, z_name in ZIMPLS:
                    r = best.get((w, lay, z))
                    if r is None or r["skipped"]:
                        continue
                    evs = num(r["main"], "events_per_s")
                    zz = r.get("z", {})
                    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                        w, lay_name, z_name, f(evs, ",.0f"), f(evs / base if evs and base else None, ".2f"),
                        f(num(r["main"], "payload_MB_per_s"), ".1f"), f(num(zz, "ratio"), ".2f"),
                        f(num(zz, "file_MB"), ".1f")))

    keepup = median_run(groups.get(("event", "keepup"), []), "events_per_s")
    if keepup and "client" in keepup["roles"]:
        c = keepup["roles"]["client"]
        ns, wait = num(c, "ns_per_event_call"), num(c, "wait_s")
        print("  event() with a server that keeps up (1 srv + 1 cli, no file): %.0f ns per call, "
              "back-pressure wait %.3f s, target <= 150 ns: %s" % (ns, wait, "met" if ns <= 150 else "MISSED"))
    start = median_run(groups.get(("event", "start"), []), "events_per_s")
    if start and keepup and "client" in start["roles"] and "client" in keepup["roles"]:
        a = num(start["roles"]["client"], "ns_per_event_call")
        b = num(keepup["roles"]["client"], "ns_per_event_call")
        print()
        print("Host check, the same event() measurement at the start and at the end of the run: %.0f and %.0f ns. "
              "On a shared VM whose cross-core transfers slow down under the host's load, a value far above "
              "the other marks a run whose phases differ (see docs/performance.md)." % (a, b))

    for prefix, layout, roles in (("rss", "1 srv + 1 cli", ("client", "server")), ("rss_serial", "serial", ("serial",))):
        rss = {k[1]: median_run(v, "events_per_s") for k, v in groups.items() if len(k) == 2 and k[0] == prefix}
        if len(rss) != 2:
            continue
        small, big = sorted(rss, key=int)
        print()
        print("Peak RSS, ref, %s, %s vs %s events (target: within 10%%):" % (layout, small, big))
        for role in roles:
            a = num(rss[small]["roles"].get(role, {}), "peak_rss_MiB")
            b = num(rss[big]["roles"].get(role, {}), "peak_rss_MiB")
            if a and b:
                g = (b - a) / a
                print("  %s: %.1f vs %.1f MiB, %+.1f%%: %s" % (role, a, b, 100 * g,
                                                          "met" if abs(g) <= 0.10 else "MISSED"))

    order = {}
    for k, v in groups.items():
        if len(k) == 4 and k[0] == "order":
            order[(k[1], k[2], k[3])] = median_run(v, "events_per_s")
    if order:
        print()
        print("Options::time_order, ref workload, median of the repeats (wall: whole run, constructor to done(); "
              "order s: the servers' time in the ordering; target: ratio <= 1.5, peak RSS of every role <= "
              "cache_memory, 256 MiB):")
        print()
        cells = [["layout", "events", "wall s", "wall s, time_order", "ratio", "order s (srv)", "peak RSS MiB cli",
                  "peak RSS MiB srv", "peak RSS MiB srv, time_order", "targets"]]
        lays = ["1+1", "1+2", "2+4"]
        for n in sorted({k[1] for k in order}, key=int):
            for lay in lays:
                a, b = order.get((lay, n, "plain")), order.get((lay, n, "ordered"))
                if not a or not b:
                    continue
                wa, wb = num(a["main"], "wall_s"), num(b["main"], "wall_s")
                ratio = wb / wa if wa else None
                srv, cli = b["roles"].get("server", {}), b["roles"].get("client", {})
                rss = [num(cli, "peak_rss_MiB"), num(a["roles"].get("server", {}), "peak_rss_MiB"), num(srv, "peak_rss_MiB")]
                ok = ratio is not None and ratio <= 1.5 and all(x is not None and x <= 256 for x in rss)
                cells.append([lay, "{:,}".format(int(n)), f(wa, ".3f"), f(wb, ".3f"), f(ratio, ".2f"),
                              f(num(srv, "order_s"), ".3f"), f(rss[0], ".1f"), f(rss[1], ".1f"), f(rss[2], ".1f"),
                              "met" if ok else "MISSED"])
        print("| " + " | ".join(cells[0]) + " |")
        print("|" + "---|" * len(cells[0]))
        for c in cells[1:]:
            print("| " + " | ".join(c) + " |")


if __name__ == "__main__":
    main()
