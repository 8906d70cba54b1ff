#!/usr/bin/env python3
"""The kill test of the crash-safe output (Options::checkpoint_seconds).

Starts the producer (producer.cpp) in three layouts, and in a fourth, 1+1z (1+1 with
deflate compression, Options::compression), with a few kills; kills it at a random instant, runs
`smalldata recover FILE` and checks the result event by event with h5py:

  - every event handed over more than checkpoint_seconds before the kill is present,
    exactly once, with its values (the producer's logs, appended with write(2), tell which
    events each client had handed over by when: the last log line at or before
    kill time - checkpoint_seconds);
  - no event appears twice, every row holds the values of its timestamp;
  - every aligned dataset has as many rows as `timestamp`;
  - h5dump reads the recovered file and every part file;
  - `smalldata check FILE` finds the recovered file sound.

Kills: SIGKILL of a client, of a server, of the whole job (every process of its session),
SIGTERM of the job; at uniform instants in [1.5, 3.5] s after the start, some in the first second, and
some while done() flushes and joins (short runs, killed as a client enters done()).

Kills aimed at checkpoints: the writers (the serial process, the servers) report each
checkpoint's start and the return of its H5Fflush on LOGDIR/checkpoints.fifo (the library's
testing hook, see producer.cpp). From a random instant in [1.5, 2.5] s on, the driver waits
for the next start reported by the victim's writer (serial: the process; 1+1 and 2+4: a
server), then sends SIGKILL to it (or to the whole job) a random delay after that start,
uniform in [0, the median checkpoint duration measured so far in that layout). Such a kill
landed inside the checkpoint when that checkpoint's "after flush" report never came. The
rule checked afterwards is the same.

usage: run_kill.py MPIEXEC PRODUCER SMALLDATA_TOOL WORKDIR [--seed N] [--only LAYOUT]
"""
import argparse
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from failrun import h5py, np  # noqa: E402 - tests/failrun.py (exits 77 without h5py)

CHECKPOINT = 1.0      # Options::checkpoint_seconds of every run
RATE = 100000         # events per second per client
WAIT_END = 30         # seconds a killed job may take to end before all of it is killed
LAYOUTS = {           # name: (ranks, clients); ranks 1 = serial mode
    "serial": (1, 1),
    "1+1": (2, 1),
    "2+4": (6, 4),
    "1+1z": (2, 1),   # 1+1 with deflate compression (Options::compression)
}
COMPRESSED = {"1+1z"}  # layouts whose producer compresses (SMALLDATA_TEST_COMPRESSION=deflate)


def plan(rng):
    """The kills: (layout, signal, target, run seconds, when). when: seconds after the
    start, or "done" (as the first client enters done())."""
    kills = []
    for layout in LAYOUTS:
        if layout in COMPRESSED:  # a few kills: compressed chunks rewritten by checkpoints, recovered
            kills.append((layout, "KILL", "server", 4.0, rng.uniform(1.5, 3.5)))
            kills.append((layout, "KILL", "job", 4.0, rng.uniform(1.5, 3.5)))
            kills.append((layout, "TERM", "job", 4.0, rng.uniform(1.5, 3.5)))
            kills.append((layout, "KILL", "server", 4.0, ("checkpoint", rng.uniform(1.5, 2.5))))
            continue
        targets = ["job"] if layout == "serial" else ["client", "server", "job"]
        # Most kills come once events are due on disk (after start-up and one interval),
        # so that the rule has events to check; some in the first second.
        for t in targets:
            kills.append((layout, "KILL", t, 4.0, rng.uniform(1.5, 3.5)))
        kills.append((layout, "TERM", "job", 4.0, rng.uniform(1.5, 3.5)))
        kills.append((layout, "KILL", rng.choice(targets), 4.0, rng.uniform(0.1, 1.0)))   # first second
        kills.append((layout, "KILL", rng.choice(targets), 4.0, rng.uniform(1.5, 3.5)))
        kills.append((layout, "KILL", rng.choice(targets), 4.0, rng.uniform(1.5, 3.5)))
        kills.append((layout, "KILL", rng.choice(targets), 0.4, "done"))                   # flush and join
        kills.append((layout, "TERM", "job", 0.4, "done"))
        # Inside a checkpoint of the writer (serial: the process; else a server), or of the
        # whole job: armed at a random instant, fired during the next checkpoint.
        for t in (["job", "job"] if layout == "serial" else ["server", "job"]):
            kills.append((layout, "KILL", t, 4.0, ("checkpoint", rng.uniform(1.5, 2.5))))
    return kills


class CheckpointReports:
    """The writers' checkpoint reports (producer.cpp, LOGDIR/checkpoints.fifo): lines
    "<role> <index> B|E <CLOCK_MONOTONIC ns>", read without blocking. The FIFO is opened
    for reading before the job starts and kept open until it has ended (a writer whose
    reader is gone would get EPIPE)."""

    def __init__(self, path):
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.buf = b""
        self.events = []  # (writer, stage, seconds on time.monotonic()'s clock)

    def poll(self):
        """Reads what is there; returns the new reports."""
        new = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:  # no writer has it open (not yet, or no more)
                break
            self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            parts = line.decode(errors="replace").split()
            if len(parts) == 4 and parts[2] in ("B", "E"):
                new.append((f"{parts[0]} {parts[1]}", parts[2], int(parts[3]) * 1e-9))
        self.events += new
        return new

    def wait(self, timeout):
        """Waits up to `timeout` seconds for data, then reads it."""
        select.select([self.fd], [], [], timeout)
        return self.poll()

    def durations(self):
        """Seconds from each start to its "after flush" report, per writer."""
        out, begun = [], {}
        for w, stage, t in self.events:
            if stage == "B":
                begun[w] = t
            elif w in begun:
                out.append(t - begun.pop(w))
        return out

    def ended_after(self, writer, t_begin):
        """Whether `writer` reported the end of a checkpoint begun at t_begin."""
        return any(w == writer and stage == "E" and t >= t_begin for w, stage, t in self.events)

    def close(self):
        os.close(self.fd)


DURATIONS = {}  # layout: checkpoint durations (s) seen in its runs so far


def median(v):
    v = sorted(v)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2 if v else None


def read_pids(logdir):
    """{role: [(index, pid)]} from the producer's rank<r>.pid files."""
    out = {}
    for n in os.listdir(logdir):
        if n.startswith("rank") and n.endswith(".pid"):
            try:
                with open(os.path.join(logdir, n)) as f:
                    pid, role, idx = f.read().split()  # "<pid> <role> <index>"
                out.setdefault(role, []).append((int(idx), int(pid)))
            except (OSError, ValueError):
                pass  # being written
    return out


def session_pids(sid):
    """Every process of the session `sid`: mpiexec and the ranks it started (Open MPI puts
    each rank in a process group of its own, so the job is the session, not a group)."""
    pids = []
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        try:
            with open(f"/proc/{n}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(n))
    return pids


def signal_job(p, sig):
    """Sends sig to every process of the job at once (what a scheduler does)."""
    pids = session_pids(p.pid)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return bool(pids)


def wait_job(p, limit):
    """Waits until mpiexec and every process of its session have ended; kills them all
    after `limit` seconds. Returns whether it had to."""
    deadline = time.time() + limit
    while time.time() < deadline:
        p.poll()
        if p.returncode is not None and not session_pids(p.pid):
            return False
        time.sleep(0.02)
    signal_job(p, signal.SIGKILL)
    p.wait()
    while session_pids(p.pid):
        time.sleep(0.02)
    return True


def kill_in_checkpoint(p, t_start, arm, layout, target, logs, reports):
    """Waits until `arm` seconds after the start, then for the next checkpoint start of the
    victim's writer, and sends SIGKILL to the victim a random delay into it. Returns
    (phase, kill time, details)."""
    ranks, _ = LAYOUTS[layout]
    while time.time() - t_start < arm and p.poll() is None:
        reports.wait(0.01)
    if p.poll() is not None:
        return "after end", time.time(), {"victim": "job", "writer": None, "t_begin": None}
    # The writer whose checkpoint is aimed at, and the processes to kill (found now: reading
    # /proc takes longer than a checkpoint).
    role = "serial" if ranks == 1 else "server"
    writers = read_pids(logs).get(role, [])
    if not writers:  # not up yet: the whole job
        kill_time = time.time()
        signal_job(p, signal.SIGKILL)
        return "no writer", kill_time, {"victim": "job", "writer": None, "t_begin": None}
    idx, wpid = random.choice(writers)
    writer = f"{role} {idx}"
    if target == "job" or ranks == 1:
        victim = "job"
        pids = [wpid] + [q for q in session_pids(p.pid) if q != wpid]
    else:
        victim = writer
        pids = [wpid]
    typical = median(DURATIONS.get(layout, []) + reports.durations()) or 0.003
    delay = random.uniform(0, typical)
    # The next start of that writer's checkpoint (one comes every 0.4 x CHECKPOINT).
    reports.poll()
    t_begin = None
    deadline = time.monotonic() + 4 * CHECKPOINT
    while t_begin is None and time.monotonic() < deadline and p.poll() is None:
        for w, stage, t in reports.wait(0.05):
            if w == writer and stage == "B":
                t_begin = t
    if t_begin is None:  # none came: kill now all the same
        phase = "no ckpt"
        t_kill = time.monotonic()
    else:
        phase = "checkpoint"
        while time.monotonic() < t_begin + delay:
            pass  # a few ms at most: a sleep would overshoot them
        t_kill = time.monotonic()
    seen_end = t_begin is not None and any(
        w == writer and stage == "E" and t >= t_begin for w, stage, t in reports.poll())
    kill_time = time.time()
    for q in pids:
        try:
            os.kill(q, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if victim == "job":
        signal_job(p, signal.SIGKILL)  # anything the list missed
    return phase, kill_time, {"victim": victim, "writer": writer, "t_begin": t_begin, "typical": typical,
                              "into": None if t_begin is None else t_kill - t_begin, "seen_end": seen_end,
                              "armed": arm}


def run_one(args, k, kill, work):
    layout, sig_name, target, run_seconds, when = kill
    ranks, clients = LAYOUTS[layout]
    d = os.path.join(work, f"kill{k:02d}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    logs = os.path.join(d, "logs")
    os.makedirs(logs)
    out = os.path.join(d, "out.h5")
    prog = [args.producer, out, logs, str(CHECKPOINT), str(run_seconds), str(RATE)]
    cmd = prog if ranks == 1 else [args.mpiexec, "-n", str(ranks)] + prog
    sig = getattr(signal, "SIG" + sig_name)
    reports = CheckpointReports(os.path.join(logs, "checkpoints.fifo"))
    t_start = time.time()
    env = dict(os.environ, SMALLDATA_TEST_COMPRESSION="deflate") if layout in COMPRESSED else None
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    phase = None
    ckpt = None
    kill_time = None
    if isinstance(when, tuple):  # ("checkpoint", arm): a kill inside the next checkpoint
        phase, kill_time, ckpt = kill_in_checkpoint(p, t_start, when[1], layout, target, logs, reports)
    # Wait for the instant.
    while ckpt is None:
        now = time.time()
        reports.poll()
        if p.poll() is not None:
            phase = "after end"
            break
        if when == "done":
            if any(n.endswith(".done") for n in os.listdir(logs)):
                time.sleep(random.uniform(0, 0.02))
                phase = "done()"
                break
            if now - t_start > 60:
                phase = "no done()"
                break
        elif now - t_start >= when:
            phase = "first 1 s" if when < 1.0 else "running"
            break
        time.sleep(0.001)
    # The victim.
    victim = ckpt["victim"] if ckpt else "job"
    if kill_time is None:
        kill_time = time.time()
    try:
        if ckpt:
            pass  # killed already (or ended by itself)
        elif target == "job" or phase == "after end":
            signal_job(p, sig)
        else:
            pids = read_pids(logs).get("serial" if ranks == 1 else target, [])
            if pids:
                idx, pid = random.choice(pids)
                victim = f"{target} {idx}"
                kill_time = time.time()
                os.kill(pid, sig)
            else:  # not started yet: the whole job
                victim = f"job ({target} not up)"
                kill_time = time.time()
                signal_job(p, sig)
    except ProcessLookupError:
        phase = "after end"
    if p.poll() is not None and phase != "after end" and p.returncode == 0:
        phase = "after end"
    forced = wait_job(p, WAIT_END)
    output = p.stdout.read().decode(errors="replace")
    p.stdout.close()
    reports.poll()  # what the writers reported before they ended
    reports.close()
    DURATIONS.setdefault(layout, []).extend(reports.durations())
    if ckpt and ckpt.get("t_begin") is not None:
        # Inside: that checkpoint's "after flush" report never came (the kill ended it first).
        ckpt["inside"] = not reports.ended_after(ckpt["writer"], ckpt["t_begin"])

    # What had certainly been handed over by kill time - checkpoint_seconds, per client.
    required = {}
    for c in range(clients):
        last = -1
        try:
            with open(os.path.join(logs, f"client{c}.log")) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) != 2:
                        continue  # cut by the kill
                    t, i = float(parts[0]), int(parts[1])
                    if t <= kill_time - CHECKPOINT:
                        last = max(last, i)
        except FileNotFoundError:
            pass
        required[c] = last  # events i = 0..last
    n_required = sum(v + 1 for v in required.values())

    row = dict(layout=layout, signal="SIG" + sig_name, target=victim, phase=phase,
               at=kill_time - t_start, required=n_required, recovered=0, missing=0, problems=[], ckpt=ckpt)
    if forced:
        row["problems"].append(f"the job did not end within {WAIT_END} s of the kill")
    if ckpt and ckpt["writer"] and ckpt["t_begin"] is None:  # one is due every 0.4 x CHECKPOINT
        row["problems"].append(f"{ckpt['writer']} reported no checkpoint start after {ckpt['armed']:.2f} s")

    rec = subprocess.run([args.tool, "recover", out], capture_output=True, text=True)
    row["recover_out"] = rec.stdout + rec.stderr
    # A part without its run attributes (none is expected: they are written before the
    # file gets its real name) is given them by recover. Counted, for the closing table.
    row["untagged"] = rec.stdout.count("no run attributes") + rec.stdout.count("no part file reached")
    left = sorted(n for n in os.listdir(d) if n != "logs")
    if rec.returncode != 0:
        # Acceptable only when the run was killed before it created any file.
        if left:
            row["problems"].append(f"recover exited {rec.returncode} with files {left}: {rec.stderr.strip()[-500:]}")
        row["missing"] = n_required
        if n_required:
            row["problems"].append(f"{n_required} events required, no file")
        return row, output
    if not os.path.exists(out):
        row["missing"] = n_required
        if n_required:
            row["problems"].append(f"{n_required} events required, recover left no file")
        return row, output
    rec2 = subprocess.run([args.tool, "recover", out], capture_output=True, text=True)
    if rec2.returncode != 0:
        row["problems"].append(f"a second recover exited {rec2.returncode}: {rec2.stderr.strip()[-300:]}")
    # h5dump reads the recovered file and every file beside it (the parts) too.
    for name in sorted(n for n in os.listdir(d) if n.endswith(".h5")):
        dump = subprocess.run(["h5dump", "-H", os.path.join(d, name)], capture_output=True, text=True)
        if dump.returncode != 0:
            row["problems"].append(f"h5dump cannot read {name}: {dump.stderr.strip()[-300:]}")

    try:
        with h5py.File(out, "r") as f:
            lengths = {}

            def visit(name, obj):
                last = name.split("/")[-1]
                var = last.startswith("var_") and not last.endswith("_len")
                if isinstance(obj, h5py.Dataset) and obj.ndim >= 1 and not last.startswith("unaligned_") and not var:
                    lengths[name] = obj.shape[0]
            f.visititems(visit)
            if "timestamp" not in f:
                ts = np.zeros(0, dtype=np.int64)
                x = n = np.zeros(0)
                v = np.zeros((0, 16), dtype=np.float32)
                pk, pk_len = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
            else:
                ts, x, n, v = f["timestamp"][:], f["x"][:], f["n"][:], f["v"][:]
                pk = f["var_pk"][:] if "var_pk" in f else np.zeros(0, dtype=np.float32)
                pk_len = f["var_pk_len"][:] if "var_pk_len" in f else np.zeros(len(ts), dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - any failure to read is the finding
        row["problems"].append(f"recovered file unreadable: {e}")
        row["missing"] = n_required
        return row, output
    row["recovered"] = len(ts)
    if len(set(lengths.values())) > 1:
        row["problems"].append(f"aligned datasets differ in length: {lengths}")
    m = min([len(ts), len(x), len(n), len(v)])
    ts_, x_, n_, v_ = ts[:m], x[:m], n[:m], v[:m]
    want_v = (ts_ % 65536).astype(np.float32)[:, None] + np.arange(16, dtype=np.float32)[None, :]
    bad = ~((x_ == ts_ * 0.5) & (n_ == ts_) & np.all(v_ == want_v, axis=1))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        row["problems"].append(f"{int(bad.sum())} rows with wrong values (first: row {first}, timestamp {ts_[first]})")
    # var_pk: each event's ts % 4 rows, found by the cumsum of var_pk_len; no row more
    if len(pk_len) != len(ts) or not np.array_equal(pk_len, ts % 4):
        row["problems"].append(f"var_pk_len wrong ({len(pk_len)} rows for {len(ts)} events)")
    elif len(pk) != int(pk_len.sum()) or not np.array_equal(pk, np.repeat(ts % 65536, ts % 4).astype(np.float32)):
        row["problems"].append(f"var_pk: {len(pk)} rows, its lengths add up to {int(pk_len.sum())}, or values wrong")
    uniq, counts = np.unique(ts, return_counts=True)
    if (counts > 1).any():
        row["problems"].append(f"{int((counts > 1).sum())} timestamps appear more than once (e.g. {uniq[counts > 1][0]})")
    missing = 0
    for c, last in required.items():
        if last < 0:
            continue
        mine = uniq[(uniq % clients) == c] // clients
        have = np.count_nonzero((mine >= 0) & (mine <= last))
        missing += (last + 1) - have
    row["missing"] = int(missing)
    if missing:
        row["problems"].append(f"{missing} events handed over before kill - {CHECKPOINT:g} s are missing")
    chk = subprocess.run([args.tool, "check", out], capture_output=True, text=True)
    row["check"] = chk.returncode
    if chk.returncode != 0 and "missing: 0 events" not in rec.stdout:
        row["problems"].append("check: " + " | ".join(l for l in chk.stdout.splitlines() if l.startswith("NOT SOUND")))
    return row, output


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mpiexec")
    ap.add_argument("producer")
    ap.add_argument("tool")
    ap.add_argument("work")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SMALLDATA_KILL_SEED", time.time_ns() % 1000000)))
    ap.add_argument("--only", choices=list(LAYOUTS), default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    random.seed(args.seed + 1)
    os.makedirs(args.work, exist_ok=True)
    kills = [k for k in plan(rng) if not args.only or k[0] == args.only]
    print(f"kill test: {len(kills)} kills, checkpoint_seconds = {CHECKPOINT:g}, {RATE} events/s per client, "
          f"seed {args.seed} (SMALLDATA_KILL_SEED={args.seed} repeats it)", flush=True)
    t_all = time.time()
    rows = []
    for k, kill in enumerate(kills):
        row, output = run_one(args, k, kill, args.work)
        rows.append(row)
        status = "ok" if not row["problems"] else "FAIL"
        print(f"[{k:2d}] {row['layout']:6s} {row['signal']:7s} {row['target']:22s} {row['phase']:10s} "
              f"t={row['at']:5.2f}s  required {row['required']:8d}  recovered {row['recovered']:8d}  "
              f"missing {row['missing']:6d}  {status}", flush=True)
        c = row["ckpt"]
        if c and c.get("into") is not None:
            where = ("INSIDE the checkpoint (no after-flush report, before the kill or after)" if c.get("inside")
                     else "after the checkpoint (its after-flush report came before the kill)" if c["seen_end"]
                     else "at the checkpoint's end (its after-flush report, written before the kill, was read after)")
            print(f"      checkpoint of {c['writer']}: SIGKILL {c['into'] * 1e3:.2f} ms after it began "
                  f"(median checkpoint {c['typical'] * 1e3:.2f} ms): {where}", flush=True)
        elif c:
            print(f"      no checkpoint start seen from {c['writer']} ({row['phase']}): killed all the same", flush=True)
        if row["problems"]:
            for pr in row["problems"]:
                print("      problem:", pr)
            print("      recover said:", row.get("recover_out", "").strip().replace("\n", "\n        "))
            print("      job output (tail):", output.strip()[-1500:].replace("\n", "\n        "))
    # The summary table.
    print()
    print(f"{'layout':7s} {'signal':8s} {'target':10s} {'kills':>5s} {'required':>10s} {'recovered':>10s} "
          f"{'missing':>8s} {'failed':>6s}")
    groups = {}
    for r in rows:
        key = (r["layout"], r["signal"], r["target"].split(" ")[0])
        g = groups.setdefault(key, [0, 0, 0, 0, 0])
        g[0] += 1
        g[1] += r["required"]
        g[2] += r["recovered"]
        g[3] += r["missing"]
        g[4] += 1 if r["problems"] else 0
    for key, g in groups.items():
        print(f"{key[0]:7s} {key[1]:8s} {key[2]:10s} {g[0]:5d} {g[1]:10d} {g[2]:10d} {g[3]:8d} {g[4]:6d}")
    total = [sum(g[i] for g in groups.values()) for i in range(5)]
    print(f"{'all':7s} {'':8s} {'':10s} {total[0]:5d} {total[1]:10d} {total[2]:10d} {total[3]:8d} {total[4]:6d}")
    phases = {}
    for r in rows:
        phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    print("kill instants:", ", ".join(f"{v} {k}" for k, v in sorted(phases.items())))
    aimed = [r["ckpt"] for r in rows if r["ckpt"]]
    if aimed:
        inside = sum(1 for c in aimed if c.get("inside"))
        print(f"kills aimed at checkpoints: {len(aimed)}, {inside} inside one (before its after-flush report), "
              f"{sum(1 for c in aimed if c.get('into') is not None) - inside} after its flush, "
              f"{sum(1 for c in aimed if c.get('into') is None)} with no checkpoint seen")
    for layout, d in DURATIONS.items():
        if d:
            ds = sorted(d)
            print(f"checkpoint duration {layout:6s} (start to after H5Fflush): median {median(ds) * 1e3:.2f} ms, "
                  f"min {ds[0] * 1e3:.2f}, max {ds[-1] * 1e3:.2f} ms over {len(ds)} checkpoints")
    untagged = sum(r.get("untagged", 0) for r in rows)
    if untagged:
        print(f"parts found without run attributes (killed before their first checkpoint): {untagged}")
    print(f"{len(rows) - total[4]} passed, {total[4]} failed ({time.time() - t_all:.0f} s, seed {args.seed})")
    sys.exit(1 if total[4] else 0)


if __name__ == "__main__":
    main()
