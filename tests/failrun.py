"""Shared by the failure harnesses (run_fail_serial.py, parallel/run_fail.py): running a
program that may hang, and the closing report."""
import os
import signal
import subprocess
import sys
import time

try:
    import h5py  # noqa: F401 - re-exported for the harnesses
    import numpy as np  # noqa: F401
except ImportError as e:  # the tests need a python3 with h5py
    print(f"SKIP: h5py/numpy not importable by {sys.executable}: {e}")
    sys.exit(77)

LIMIT = 60  # seconds; a run still going then is a hang: killed, and the mode fails


def run_limited(cmd, env=None):
    """Runs cmd in its own process group and returns its CompletedProcess (output as
    text), or None after a hang, once the whole group (mpiexec and every rank) is killed."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        p.communicate()
        return None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def finish(failures, n_modes, t0):
    """Prints the failures ("MODE: problem") and 'N passed, N failed'; exits 1 on any."""
    for f in failures:
        print("FAIL:", f)
    failed = len({f.split(":")[0] for f in failures})
    print(f"{n_modes - failed} passed, {failed} failed ({time.time() - t0:.0f} s)")
    sys.exit(1 if failures else 0)
