#!/usr/bin/python3
"""Reads compressed files that tests/write_compressed.cpp writes, with h5py: the filters of
every per-event dataset (h5py's `compression`, `compression_opts`, `shuffle`; the LZ4
plugin's id in its filter pipeline) and every value.

Usage: check_compression.py MPIEXEC WRITE_COMPRESSED
Runs: deflate in serial mode, deflate in parallel mode (3 ranks: the part files carry the
filters, the final file's virtual datasets read through them), LZ4 (HDF5 filter 32004, from
Debian's hdf5-filter-plugin) in serial mode. A missing LZ4 plugin fails the test (the
writer's constructor refuses the option). Exit status 0 when every check passes; 77
(skipped) when h5py is missing.
"""
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:  # the test needs /usr/bin/python3 with python3-h5py
    print("SKIP: h5py/numpy not importable by %s: %s" % (sys.executable, e))
    sys.exit(77)

N = 2000
FIELDS = ["timestamp", "x", "det/img", "peaks/var_p", "peaks/var_p_len"]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def check_filters(path, kind):
    with h5py.File(path, "r") as f:
        for name in FIELDS:
            d = f[name]
            where = "%s in %s" % (name, os.path.basename(path))
            if kind == "deflate":
                check(d.compression == "gzip" and d.compression_opts == 1,
                      "%s: gzip level 1 (%r, %r)" % (where, d.compression, d.compression_opts))
                check(d.shuffle, "%s: shuffle" % where)
            else:
                check("32004" in d._filters or 32004 in d._filters, "%s: LZ4 (32004) in %r" % (where, d._filters))
        img = f["det/img"]
        raw = img.size * img.dtype.itemsize
        stored = img.id.get_storage_size()
        check(stored * 2 < raw, "det/img in %s takes less than half its bytes (%d of %d)"
              % (os.path.basename(path), stored, raw))


def check_values(path):
    with h5py.File(path, "r") as f:
        ts = f["timestamp"][:]
        check(len(ts) == N and np.array_equal(np.sort(ts), np.arange(N)), "timestamps 0..%d once each" % (N - 1))
        check(np.array_equal(f["x"][:], ts / 2), "x == timestamp / 2")
        img = f["det/img"][:]
        want = (ts[:, None] + np.arange(32 * 32)[None, :]) % 1000
        check(img.shape == (N, 32, 32) and np.array_equal(img.reshape(N, -1), want), "det/img values")
        lens = f["peaks/var_p_len"][:]
        check(np.array_equal(lens, ts % 4), "peaks/var_p_len == timestamp % 4")
        px = f["peaks/var_p"][:]
        want = np.concatenate([t + np.arange(t % 4, dtype=np.float32) / 4 for t in ts]).astype(np.float32)
        check(np.array_equal(px, want), "peaks/var_p values in event order (%d rows)" % len(px))


def run(cmd, what):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    print(p.stdout[-3000:], end="")
    check(p.returncode == 0, "%s exited with %d" % (what, p.returncode))
    return p.returncode == 0


def main():
    mpiexec, writer = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="smalldata-compression-") as tmp:
        print("--- deflate, serial mode")
        path = os.path.join(tmp, "serial.h5")
        if run([writer, path, "deflate", str(N)], "serial deflate run"):
            check_filters(path, "deflate")
            check_values(path)

        print("--- deflate, parallel mode (1 server, 2 clients)")
        path = os.path.join(tmp, "par.h5")
        if run([mpiexec, "-n", "3", writer, path, "deflate", str(N)], "parallel deflate run"):
            check_filters(os.path.join(tmp, "par_part0.h5"), "deflate")
            with h5py.File(path, "r") as f:
                check(f["x"].is_virtual, "the final file's x is a virtual dataset")
            check_values(path)

        print("--- LZ4 (HDF5 filter 32004, a plugin), serial mode")
        path = os.path.join(tmp, "lz4.h5")
        if run([writer, path, "lz4", str(N)], "serial LZ4 run (needs hdf5-filter-plugin)"):
            check_filters(path, "lz4")
            check_values(path)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
