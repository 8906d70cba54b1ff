#!/usr/bin/env python3
"""Runs fail_serial (a plain process: serial mode) in each failure mode, each in a fresh
directory, and checks with h5py what survives: in serial mode every abnormal end must
leave the file readable and aligned, holding every event handed over.

usage: run_fail_serial.py FAIL_SERIAL
"""
import hashlib
import os
import signal
import sys
import tempfile
import time

from failrun import LIMIT, finish, h5py, np, run_limited

N = 300000


def many_events_intact(f):
    """The 300,000 events of fail_serial's many_events(): every row, values right."""
    problems = []
    ts, x, a = f["timestamp"][:], f["x"][:], f["a"][:]
    for name, d in (("timestamp", ts), ("x", x), ("a", a)):
        if len(d) != N:
            problems.append(f"{name} has {len(d)} rows, expected {N}")
    if not problems:
        t = np.arange(N)
        if not np.array_equal(ts, t):
            problems.append("timestamp is not 0..N-1")
        if not np.array_equal(x, t.astype(np.float64)):
            problems.append("x != timestamp")
        if not np.array_equal(a, np.stack([t, 2 * t, 3 * t], axis=1)):
            problems.append("a != {t, 2t, 3t}")
    return problems


def callback_in_done_intact(f):
    """Rows of every event before the one whose callback threw (timestamps 0..949), all
    datasets the same length, and the summary saved before done()."""
    problems = []
    ts, n, x = f["timestamp"][:], f["n"][:], f["x"][:]
    lengths = {"timestamp": len(ts), "n": len(n), "x": len(x)}
    if set(lengths.values()) != {950}:
        problems.append(f"lengths {lengths}, expected 950 each")
    else:
        t = np.arange(950)
        if not (np.array_equal(ts, t) and np.array_equal(n, t) and np.array_equal(x, t / 2)):
            problems.append("values differ from t, t, t/2")
    if "total" not in f or f["total"][()] != 7.0:
        problems.append("summary 'total' missing or not 7.0")
    return problems


def stopped_intact(f):
    """A run stopped by SIGTERM at its 300,001st event() call: the 300,000 events before
    it, and the summary (done() ran)."""
    problems = many_events_intact(f)
    if "total" not in f or f["total"][()] != 7.0:
        problems.append("summary 'total' missing or not 7.0")
    return problems


def killed_intact(f):
    """SIGKILL 1.5 s after the first 300,000 events, with checkpoints every 0.5 s: those
    events are on disk, every aligned dataset as long as timestamp, later rows right."""
    problems = []
    ts, x, a = f["timestamp"][:], f["x"][:], f["a"][:]
    if not (len(ts) == len(x) == len(a)):
        problems.append(f"lengths differ: timestamp {len(ts)}, x {len(x)}, a {len(a)}")
    elif len(ts) < N:
        problems.append(f"{len(ts)} events on disk, expected at least {N}")
    else:
        t = np.arange(len(ts))
        if not (np.array_equal(ts, t) and np.array_equal(x, t.astype(np.float64))
                and np.array_equal(a, np.stack([t, 2 * t, 3 * t], axis=1))):
            problems.append("rows differ from t, t, {t, 2t, 3t}")
    return problems


MODES = {
    # A12: an exception escaping main ends with std::terminate (SIGABRT); the terminate
    # handler closes the file with the events given so far.
    "uncaught": dict(returncode=-signal.SIGABRT, needles=["fatal", "closing", "the analysis failed"],
                     check=many_events_intact),
    # D4: std::exit does not destroy the SmallData; the library's atexit hook closes it.
    "exit": dict(returncode=0, needles=["before done() was called"], check=many_events_intact),
    # A4: a callback throwing in the flush of done() must not lose the rows before it nor
    # the summary, and the datasets stay aligned.
    "callback-in-done": dict(returncode=0, needles=["done() threw", "callback failed at 950"],
                             check=callback_in_done_intact),
    # Issue 10: SIGTERM with the library's handler: done() runs at the next event() (the
    # file complete, the summary in it), then the process ends by SIGTERM.
    "sigterm": dict(returncode=-signal.SIGTERM, needles=["interrupted by SIGTERM", "the run ended early"],
                    check=stopped_intact),
    # The program's own handler calls request_stop(): the same, and event() throws.
    "request-stop": dict(returncode=0, needles=["event() threw interrupted"], check=stopped_intact),
    # request_stop(), then SIGTERM: the first signal this process received, so the run ends
    # gracefully by it (it was taken for a second signal and ended the process at once).
    "stop-then-sigterm": dict(returncode=-signal.SIGTERM, needles=["interrupted by SIGTERM", "the run ended early (SIGTERM)"],
                              check=stopped_intact),
    # SIGKILL: nothing runs, yet every event older than checkpoint_seconds is on disk. The
    # file is opened as an SWMR reader would (its writer never closed it).
    "sigkill": dict(returncode=-signal.SIGKILL, needles=[], check=killed_intact, swmr=True, rerun=True),
}


def rerun_refused(prog, out):
    """A rerun of the same filename over the killed run's file (its writer never closed it):
    refused from the constructor, naming the file, which keeps every byte (it was replaced,
    its events lost before recovery)."""
    with open(out, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    p = run_limited([prog, "uncaught", out])
    problems = []
    if p is None or p.returncode == 0 or "never closed" not in p.stderr or out not in p.stderr:
        problems.append(f"the rerun over the killed file exited {p.returncode if p else 'never'} without naming it "
                        f"as never closed: {p.stderr[-500:] if p else ''}")
    with open(out, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != before:
            problems.append("the rerun changed the killed run's file")
    return problems


def main():
    prog = sys.argv[1]
    failures = []
    t_all = time.time()
    with tempfile.TemporaryDirectory(prefix="smalldata-failserial-") as tmp:
        for mode, want in MODES.items():
            work = os.path.join(tmp, mode)
            os.makedirs(work)
            out = os.path.join(work, "out.h5")
            t0 = time.time()
            p = run_limited([prog, mode, out])
            if p is None:
                failures.append(f"{mode}: hung (killed after {LIMIT} s)")
                continue
            err = p.stderr + p.stdout
            print(f"--- {mode}: exit {p.returncode} after {time.time() - t0:.1f} s")
            print(err[:2000])
            if p.returncode != want["returncode"]:
                failures.append(f"{mode}: exit {p.returncode}, expected {want['returncode']}")
            for s in want["needles"]:
                if s not in err:
                    failures.append(f"{mode}: output lacks {s!r}")
            try:
                kw = dict(libver="latest", swmr=True) if want.get("swmr") else {}
                with h5py.File(out, "r", **kw) as f:
                    failures += [f"{mode}: {m}" for m in want["check"](f)]
            except Exception as e:  # noqa: BLE001 - any failure to read is the finding
                failures.append(f"{mode}: file unreadable: {e}")
            if want.get("rerun"):
                failures += [f"{mode}: {m}" for m in rerun_refused(prog, out)]
    finish(failures, len(MODES), t_all)


if __name__ == "__main__":
    main()
