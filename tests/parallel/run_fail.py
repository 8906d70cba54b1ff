#!/usr/bin/env python3
"""Runs fail_prog under mpiexec in each failure mode and checks that the job ends
promptly with a non-zero status, that the reason and the failing rank are printed, and
that the server's part file is readable with the rows it had written. Every mode runs
twice: with the default options and with a write thread on the server.

usage: run_fail.py MPIEXEC FAIL_PROG WORKDIR
"""
import os
import subprocess
import sys
import time

import h5py
import numpy as np

MODES = {
    # mode: strings that must appear in the job's stderr
    "client-type": ["rank 2, client 1", "fatal", "type_mismatch" if False else "'x'", "float64", "int32"],
    "user-throw": ["rank 3, client 2", "fatal", "detector exploded"],
    "server-type": ["rank 0, server 0", "fatal", "'y'", "float32", "int64"],
    "abandon": ["rank 2, client 1", "fatal", "before done()"],
}
LIMIT = 60  # seconds; a hang would be killed here and fail the test


def main():
    mpiexec, prog, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    failures = []
    variants = [("", {}), (" (write thread)", {"SMALLDATA_TEST_WRITE_THREAD": "1"})]
    runs = [(mode + label, mode, needles, env) for label, env in variants for mode, needles in MODES.items()]
    for name, mode, needles, extra in runs:
        out = os.path.join(work, f"fail_{mode}.h5")
        part = os.path.join(work, f"fail_{mode}_part0.h5")
        for f in (out, part):
            if os.path.exists(f):
                os.remove(f)
        t0 = time.time()
        try:
            p = subprocess.run([mpiexec, "-n", "4", prog, mode, out], capture_output=True, text=True, timeout=LIMIT,
                               env=dict(os.environ, **extra))
        except subprocess.TimeoutExpired:
            failures.append(f"{name}: the job hung (killed after {LIMIT} s)")
            continue
        dt = time.time() - t0
        err = p.stderr + p.stdout
        print(f"--- {name}: exit {p.returncode} after {dt:.1f} s")
        print("\n".join(l for l in err.splitlines() if "smalldata" in l)[:3000])
        if p.returncode == 0:
            failures.append(f"{name}: the job exited 0")
        for s in needles:
            if s not in err:
                failures.append(f"{name}: stderr lacks {s!r}")
        if os.path.exists(out):
            failures.append(f"{name}: the final file exists although the job failed")
        try:
            with h5py.File(part, "r") as f:
                ts = f["timestamp"][:]
                x = f["x"][:]
                if len(ts) == 0:
                    failures.append(f"{name}: the part file holds no rows")
                elif not np.array_equal(x[: len(ts)], ts.astype(np.float64)) and mode != "client-type":
                    failures.append(f"{name}: rows of the part file are inconsistent")
                print(f"    part file readable: {len(ts)} rows")
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            failures.append(f"{name}: part file unreadable: {e}")
    for f in failures:
        print("FAIL:", f)
    failed = len({f.split(':')[0] for f in failures})
    print(f"{len(runs) - failed} passed, {failed} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
