#!/usr/bin/env python3
"""Runs fail_prog in each failure mode, each in a fresh directory, and checks what
survives. Every mode declares what must happen: the job ends on its own (a hang is killed
after LIMIT seconds and fails) with a non-zero status, the reason appears in the output,
and exactly the files listed remain, the part file readable with consistent rows.

usage: run_fail.py MPIEXEC FAIL_PROG WORKDIR [MODE...]   (default: every mode)
"""
import hashlib
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from failrun import LIMIT, finish, h5py, np, run_limited  # noqa: E402 - tests/failrun.py

RANKS = 4   # 1 server + 3 clients
WRITE_THREAD = {"SMALLDATA_TEST_WRITE_THREAD": "1"}
TIME_ORDER = {"SMALLDATA_TEST_TIME_ORDER": "1"}


class Mode:
    """One failing run of fail_prog and what it must leave behind.

    prog_mode : fail_prog's MODE; file: the output name, relative to the run's directory
    setup     : called with the directory before the run (may run earlier jobs there)
    launch    : "mpiexec", or an environment for running fail_prog as a plain process
    needles   : strings the output must contain
    caught    : (needles, failing world rank): every rank must print a "caught" line with
                the needles; the other ranks' messages must name the failing rank
    files     : the exact names left in the directory
    part      : a part file whose timestamp and x must be readable, equally long (> 0)
                and equal row by row
    check     : called with the directory after the run; returns a list of problems
    exit_ok   : the job must exit 0 (a run the library brings to a good end), else non-zero
    ranks     : the job's ranks (RANKS unless said)
    """

    def __init__(self, name, prog_mode, file="out.h5", setup=None, launch="mpiexec", env=None, needles=(),
                 caught=None, files=("out_part0.h5",), part="out_part0.h5", check=None, n=None, exit_ok=False,
                 ranks=RANKS):
        self.name, self.prog_mode, self.file, self.setup, self.launch = name, prog_mode, file, setup, launch
        self.env, self.needles, self.caught, self.files, self.part = env or {}, needles, caught, files, part
        self.check, self.n, self.exit_ok, self.ranks = check, n, exit_ok, ranks


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def consistent_part(path, no_x=None):
    """Problems with the part file: unreadable, no rows, or x != timestamp somewhere (but
    at timestamp no_x, an event whose x was refused: there x is the fill value, NaN)."""
    try:
        with h5py.File(path, "r") as f:
            ts, x = f["timestamp"][:], f["x"][:]
    except Exception as e:  # noqa: BLE001 - any failure to read is the finding
        return [f"part file unreadable: {e}"]
    print(f"    {os.path.basename(path)}: {len(ts)} rows")
    if len(ts) == 0:
        return ["the part file holds no rows"]
    want = ts.astype(np.float64)
    if no_x is not None:
        want[ts == no_x] = np.nan
    if len(x) != len(ts) or not np.array_equal(x, want, equal_nan=True):
        return [f"part rows inconsistent: timestamp {len(ts)} rows, x {len(x)} rows"]
    return []


def kept_until(client, last, parts=("out_part0.h5",)):
    """A check: every event client `client` (of 3) handed over, up to its last one, `last`
    (the one before it failed), is in the part files: a failing client ships what it holds
    before the job ends, and its servers take it before closing (they were lost)."""
    def check(work, _state):
        ts = set()
        for part in parts:
            try:
                with h5py.File(os.path.join(work, part), "r") as f:
                    ts |= set(f["timestamp"][:].tolist())
            except Exception as e:  # noqa: BLE001
                return [f"part file {part} unreadable: {e}"]
        want = set(range(client, last + 1, 3))
        missing = sorted(want - ts)
        if missing:
            return [f"{len(missing)} of the {len(want)} events client {client} handed over before it failed are "
                    f"missing (from {missing[0]})"]
        if last + 3 in ts:
            return [f"client {client}'s event {last + 3}, after it failed, is in the part"]
        return []
    return check


def good_job(mpiexec, prog, work, name, n):
    """A run that must succeed (to prepare a directory). Returns a problem or None."""
    p = run_limited([mpiexec, "-n", str(RANKS), prog, "good", os.path.join(work, name), str(n)])
    if p is None:
        return f"the preparing job for {name} hung"
    return None if p.returncode == 0 else f"the preparing job for {name} failed: {p.stderr[-2000:]}"


# --- modes that need more than one job -------------------------------------------------

def foreign_setup(mpiexec, prog, work):
    # run.nxs and run.h5 share the stem "run", so both want run_part0.h5.
    bad = good_job(mpiexec, prog, work, "run.nxs", 30000)
    if bad:
        raise RuntimeError(bad)
    return {f: digest(os.path.join(work, f)) for f in ("run.nxs", "run_part0.h5")}


def foreign_check(work, before):
    problems = [f"{f} was modified" for f, d in before.items() if digest(os.path.join(work, f)) != d]
    try:
        with h5py.File(os.path.join(work, "run.nxs"), "r") as f:
            ts, x = np.sort(f["timestamp"][:]), f["x"][:]
            order = np.argsort(f["timestamp"][:])
            if not (np.array_equal(ts, np.arange(30000)) and np.array_equal(x[order], ts.astype(np.float64))):
                problems.append("run.nxs no longer reads its 30000 rows")
    except Exception as e:  # noqa: BLE001
        problems.append(f"run.nxs unreadable: {e}")
    return problems


def rerun_setup(mpiexec, prog, work):
    bad = good_job(mpiexec, prog, work, "out.h5", 20000)
    if bad:
        raise RuntimeError(bad)
    return None


MODES = [
    # The original failures: the failing rank and the reason are printed, the server
    # closes its part file.
    # The failing client's events up to its failure are all kept (n = 200,000: client c's
    # events are c, c + 3, ...; it fails at its first past n / 2). client-type: the event
    # whose x was refused exists without it (as in serial mode).
    Mode("client-type", "client-type", needles=["rank 2, client 1", "fatal", "'x'", "float64", "int32"],
         part=None, check=lambda w, s: consistent_part(os.path.join(w, "out_part0.h5"), no_x=100003)
         + kept_until(1, 100003)(w, s)),
    Mode("user-throw", "user-throw", needles=["rank 3, client 2", "fatal", "detector exploded",
                                              # the layout line of every parallel run
                                              "smalldata: parallel mode, 4 ranks: 1 server, 3 clients, 0 other "
                                              "(servers from Options::servers)"],
         check=kept_until(2, 100001)),
    Mode("server-type", "server-type", needles=["rank 0, server 0", "fatal", "'y'", "float32", "int64"]),
    Mode("abandon", "abandon", needles=["rank 2, client 1", "fatal", "before done()"], check=kept_until(1, 100003)),
    # A server that never idles (a slow callback, clients still producing) must still see
    # the abort and close its part file before the failing client ends the job.
    Mode("busy-abort", "busy-abort", n=100_000_000,
         needles=["rank 2, client 1", "fatal", "client 1 failed", "client 1 (rank 2) failed; closing part file"]),
    # std::exit on a client skips ~SmallData: the atexit hook must end the job.
    Mode("exit", "exit", needles=["rank 2, client 1", "before done() was called"], check=kept_until(1, 100003)),
    # An exception that is not a std::exception, from a callback on the server, caught by
    # catch (...) in main: the job must still end, naming it as a callback's.
    Mode("nonstd-throw", "nonstd-throw", needles=["rank 0, server 0", "a callback threw an exception of unknown type"]),
    Mode("callback-throw", "callback-throw", needles=["rank 0, server 0", "fatal: a callback threw: bad calibration"]),
    # The server cannot create its part file and main catches: every rank must throw
    # (none may wait for the others forever).
    Mode("catch-bad-dir", "good", file="no_such_dir/out.h5", caught=(["out_part0.h5"], 0), files=(), part=None),
    Mode("catch-part-is-dir", "good", setup=lambda mpi, prog, w: os.mkdir(os.path.join(w, "out_part0.h5")),
         caught=(["out_part0.h5", "a directory has that name"], 0), part=None),
    # An option invalid on one rank only: every rank throws Errc::option.
    Mode("option-one-rank", "bad-option", caught=(["[option]", "batch_bytes must be at least 1024"], 0),
         files=(), part=None),
    # run_part0.h5 belongs to run.nxs: a run writing run.h5 must refuse before any event
    # and leave run.nxs and its part untouched.
    Mode("foreign-part", "good", file="run.h5", setup=foreign_setup, check=foreign_check,
         caught=(["[option]", "in the way", "run.nxs"], 0), files=("run.nxs", "run_part0.h5"), part=None),
    # A failing rerun: the old out.h5 maps the part files the rerun truncates; it must be
    # gone before that (it would read fill values), while the new part stays readable.
    Mode("rerun", "user-throw", setup=rerun_setup, needles=["detector exploded"]),
    # A launcher of another MPI started 4 processes that each see a world of 1: refuse
    # rather than run 4 serial jobs on the same file.
    Mode("launcher-ompi", "good", launch={"OMPI_COMM_WORLD_SIZE": "4"},
         needles=["one of 4 processes", "world of 1"], files=(), part=None),
    Mode("launcher-pmi", "good", launch={"PMI_SIZE": "4"},
         needles=["one of 4 processes", "world of 1"], files=(), part=None),
]
def stopped_run(work, n=200_000):
    """The final file of a run whose client 1 (of 3) was stopped past the middle: its
    timestamps and the problems found so far (unreadable; a timestamp twice; x differing;
    client 1's events not a prefix of its share up to past the middle)."""
    try:
        with h5py.File(os.path.join(work, "out.h5"), "r") as f:
            ts, x = f["timestamp"][:], f["x"][:]
    except Exception as e:  # noqa: BLE001
        return None, [f"final file unreadable: {e}"]
    problems = []
    if len(np.unique(ts)) != len(ts):
        problems.append("a timestamp appears twice")
    if not np.array_equal(x, ts.astype(np.float64)):
        problems.append("x != timestamp")
    c1 = np.sort(ts[ts % 3 == 1])
    if len(c1) == 0 or c1[-1] <= n // 2 or not np.array_equal(c1, np.arange(1, c1[-1] + 1, 3)):
        problems.append("client 1's events are not the prefix up to past the middle")
    print(f"    out.h5: {len(ts)} events, client 1 stopped after {c1[-1] if len(c1) else None}")
    return ts, problems


def sigterm_check(work, _state):
    """Client 1 got SIGTERM past the middle: it ran done() at its next event() and ended by
    the signal; the others finished. The final file holds every event of clients 0 and 2,
    and of client 1 every one up to where it stopped, each once."""
    ts, problems = stopped_run(work)
    if ts is not None:
        others = np.setdiff1d(np.arange(200_000)[np.arange(200_000) % 3 != 1], ts)
        if len(others):
            problems.append(f"{len(others)} events of clients 0 and 2 missing")
    return problems


MODES.append(Mode("sigterm", "sigterm", needles=["rank 2, client 1", "interrupted by SIGTERM", "the run ended early"],
                  files=("out.h5", "out_part0.h5"), check=sigterm_check))
# The original modes run once more with a write thread on the server.
MODES += [Mode(m.name + " (write thread)", m.prog_mode, needles=m.needles, env=WRITE_THREAD, part=m.part, check=m.check)
          for m in MODES[:4]]


def sigterm_ordered_check(work, state):
    """sigterm_check, and the final file in timestamp order: the one server merged its
    three clients' streams, stopped early by one of them, and released what it held."""
    problems = sigterm_check(work, state)
    try:
        with h5py.File(os.path.join(work, "out.h5"), "r") as f:
            ts = f["timestamp"][:]
    except Exception as e:  # noqa: BLE001
        return problems + [f"final file unreadable: {e}"]
    if not np.all(np.diff(ts) > 0):
        problems.append("the final file is not in timestamp order")
    return problems


def sigterm_sum_check(work, _state):
    """SIGTERM to every rank while client 0 (no events) waited in sum() for clients still
    in their loops: client 0 left the reduction and ran done() like the others (it hung
    there). The final file holds of clients 1 and 2 each a prefix of their events, once."""
    try:
        with h5py.File(os.path.join(work, "out.h5"), "r") as f:
            ts, x = f["timestamp"][:], f["x"][:]
    except Exception as e:  # noqa: BLE001
        return [f"final file unreadable: {e}"]
    problems = []
    if not np.array_equal(x, ts.astype(np.float64)):
        problems.append("x != timestamp")
    for c in (1, 2):
        mine = np.sort(ts[ts % 3 == c])
        if len(mine) == 0 or not np.array_equal(mine, np.arange(c, mine[-1] + 1, 3)):
            problems.append(f"client {c}'s events are not a prefix of its share, each once")
    if np.any(ts % 3 == 0):
        problems.append("events of client 0, which gave none")
    print(f"    out.h5: {len(ts)} events")
    return problems


def sigterm_one_sum_check(work, _state):
    """SIGTERM to client 1 alone while client 0 waited in sum() and client 2 came to sum()
    after its loop: both learnt there that client 1 had ended its run, and ended theirs (they
    waited for it for ever). The final file holds every event of client 2, client 1's up to
    where it stopped, each once, and none of client 0 (it gave none)."""
    ts, problems = stopped_run(work)
    if ts is not None:
        if not np.array_equal(np.sort(ts[ts % 3 == 2]), np.arange(2, 200_000, 3)):
            problems.append("client 2's events are not all there")
        if np.any(ts % 3 == 0):
            problems.append("events of client 0, which gave none")
    return problems


def finalize_first_check(work, _state):
    """MPI_Finalize before done() on every rank: done() ran from MPI_Finalize (it hung, the
    clients' batches lost); the final file holds every event once."""
    try:
        with h5py.File(os.path.join(work, "out.h5"), "r") as f:
            ts, x = f["timestamp"][:], f["x"][:]
    except Exception as e:  # noqa: BLE001
        return [f"final file unreadable: {e}"]
    print(f"    out.h5: {len(ts)} events")
    if not (np.array_equal(np.sort(ts), np.arange(FINALIZE_N)) and np.array_equal(x, ts.astype(np.float64))):
        return [f"the final file holds {len(ts)} events, not every one of the {FINALIZE_N} once"]
    return []


FINALIZE_N = 30000
MODES += [Mode("sigterm in a reduction", "sigterm-sum",
               needles=["rank 1, client 0]: interrupted by SIGTERM", "the run ended early (SIGTERM)", "is complete"],
               files=("out.h5", "out_part0.h5"), check=sigterm_sum_check),
          Mode("sigterm to one client, the others in a reduction", "sigterm-one-sum",
               needles=["rank 2, client 1]: interrupted by SIGTERM",
                        "client 1 ended its run early (SIGTERM) instead of coming to this reduction",
                        "rank 1, client 0]: interrupted by SIGTERM", "rank 3, client 2]: interrupted by SIGTERM"],
               files=("out.h5", "out_part0.h5"), check=sigterm_one_sum_check),
          # ... and then each of them gets a SIGTERM of its own (a scheduler signalling every
          # rank, one after the other): the first signal it receives, not a second one. It was
          # taken for a second one and ended client 0 at once, inside done(): no final file.
          Mode("sigterm to one client, then to the others after they learnt it", "sigterm-one-sum",
               env={"SMALLDATA_TEST_OWN_SIGNAL": "1"},
               needles=["client 1 ended its run early (SIGTERM) instead of coming to this reduction",
                        "fail_prog: SIGTERM to this process now",
                        "rank 1, client 0]: the run ended early (SIGTERM)",
                        "rank 3, client 2]: the run ended early (SIGTERM)"],
               files=("out.h5", "out_part0.h5"), check=sigterm_one_sum_check),
          Mode("MPI_Finalize before done()", "finalize-first", n=FINALIZE_N,
               needles=["MPI_Finalize was called before done(): done() runs now"],
               files=("out.h5", "out_part0.h5"), check=finalize_first_check, exit_ok=True)]


# The failing client's last batches as MPI messages (no shared memory) are kept too.
MODES.append(Mode("user-throw (messages)", "user-throw", needles=["rank 3, client 2", "fatal", "detector exploded"],
                  env={"SMALLDATA_TEST_MESSAGES": "1"}, check=kept_until(2, 100001)))


# Options::time_order with one server and three clients: the server merges their streams
# and holds batches; a failure, or a stop, must write what it holds and close the part.
MODES += [Mode("user-throw (time order)", "user-throw", needles=["rank 3, client 2", "fatal", "detector exploded"],
               env=TIME_ORDER, check=kept_until(2, 100001)),
          Mode("sigterm (time order)", "sigterm", needles=["rank 2, client 1", "interrupted by SIGTERM"],
               files=("out.h5", "out_part0.h5"), check=sigterm_ordered_check, env=TIME_ORDER)]

# Options::time_order with 2 servers and 3 clients (5 ranks): every client sends each event
# to the server that owns its cell of the time grid (routed streams), so a failing client's
# last events are spread over both servers: each takes every message the client sent it
# before it closes (the failure notice counts them per server), and both parts stay
# readable. A stop: the final file is complete and in timestamp order.
TWO_SERVERS = dict(TIME_ORDER, SMALLDATA_TEST_SERVERS="2")
PARTS2 = ("out_part0.h5", "out_part1.h5")


def parts_consistent(work, _state):
    return [p for part in PARTS2 for p in consistent_part(os.path.join(work, part))]


MODES += [Mode("user-throw (time order, 2 servers)", "user-throw", ranks=5, env=TWO_SERVERS,
               needles=["rank 4, client 2", "fatal", "detector exploded"], files=PARTS2, part=None,
               check=lambda w, s: parts_consistent(w, s) + kept_until(2, 100001, PARTS2)(w, s)),
          Mode("sigterm (time order, 2 servers)", "sigterm", ranks=5, env=TWO_SERVERS,
               needles=["rank 3, client 1", "interrupted by SIGTERM"], files=("out.h5",) + PARTS2, part=None,
               check=sigterm_ordered_check)]


def run_mode(m, mpiexec, prog, root):
    """Runs one mode in a fresh directory; returns the list of problems."""
    work = os.path.join(root, m.name.replace(" ", "_").replace("(", "").replace(")", ""))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    state = m.setup(mpiexec, prog, work) if m.setup else None
    out = os.path.join(work, m.file)
    args = [prog, m.prog_mode, out] + ([str(m.n)] if m.n else [])
    if m.launch == "mpiexec":
        cmd, env = [mpiexec, "-n", str(m.ranks)] + args, dict(os.environ, **m.env)
    else:
        cmd, env = args, dict(os.environ, **m.env, **m.launch)
    t0 = time.time()
    p = run_limited(cmd, env)
    if p is None:
        return [f"the job hung (killed after {LIMIT} s)"]
    err = p.stderr + p.stdout
    print(f"--- {m.name}: exit {p.returncode} after {time.time() - t0:.1f} s")
    print("\n".join(l for l in err.splitlines() if "smalldata" in l or "fail_prog" in l)[:3000])
    problems = []
    if (p.returncode == 0) != m.exit_ok:
        problems.append(f"the job exited {p.returncode}")
    problems += [f"output lacks {s!r}" for s in m.needles if s not in err]
    # A fatal line names its rank once: "smalldata[rank 0, server 0]: fatal: field 'y' ...".
    problems += [f"a fatal line names its rank twice: {l!r}" for l in err.splitlines()
                 if ": fatal: " in l and l.split(": fatal: ", 1)[1].startswith("smalldata")]
    if m.caught:
        needles, failing = m.caught
        for r in range(m.ranks):
            lines = [l for l in err.splitlines() if l.startswith(f"fail_prog: rank {r} caught")]
            if len(lines) != 1:
                problems.append(f"rank {r} printed {len(lines)} caught lines, expected 1")
                continue
            problems += [f"rank {r}'s message lacks {s!r}" for s in needles if s not in lines[0]]
            who = "server 0 (rank 0)" if failing == 0 else f"client {failing - 1} (rank {failing})"
            if r != failing and not lines[0].endswith(f"[reported by {who}]"):
                problems.append(f"rank {r}'s message does not name the failing rank {failing}")
    left = sorted(os.listdir(work))
    if left != sorted(m.files):
        problems.append(f"files left {left}, expected {sorted(m.files)}")
    if m.part:
        problems += consistent_part(os.path.join(work, m.part))
    if m.check:
        problems += m.check(work, state)
    return problems


def main():
    mpiexec, prog, root, only = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    os.makedirs(root, exist_ok=True)
    modes = [m for m in MODES if not only or m.name in only]
    failures = []
    t_all = time.time()
    for m in modes:
        try:
            problems = run_mode(m, mpiexec, prog, root)
        except Exception as e:  # noqa: BLE001 - a failed setup fails the mode
            problems = [f"setup failed: {e}"]
        failures += [f"{m.name}: {p}" for p in problems]
    finish(failures, len(modes), t_all)


if __name__ == "__main__":
    main()
