#!/usr/bin/python3
"""Reads what tests/write_sample.cpp writes, with h5py: values, dtypes, fill values, groups,
attributes.

Usage: check_h5py.py WRITE_SAMPLE_EXECUTABLE
Runs the writer into a fresh temporary directory, then checks the file as a Python user
would see it. Exit status 0 when every check passes; 77 (skipped) when h5py is missing.
"""
import math
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

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def main():
    writer = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="smalldata-h5py-") as tmp:
        path = os.path.join(tmp, "sample.h5")
        proc = subprocess.run([writer, path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(proc.stdout, end="")
        if proc.returncode != 0:
            print("FAIL writer exited with %d" % proc.returncode)
            return 1
        check(sorted(os.listdir(tmp)) == ["sample.h5"], "serial mode writes only the final file (no part files): %s"
              % sorted(os.listdir(tmp)))
        with h5py.File(path, "r") as f:
            names = []
            f.visit(names.append)
            print("objects: " + ", ".join(sorted(names)))

            ts = f["timestamp"]
            check(ts.dtype == np.int64, "timestamp is int64 (%s)" % ts.dtype)
            check(ts[:].tolist() == [100, 101, 102, 103, 104, 105], "timestamp values %s" % ts[:].tolist())

            for name in ["x", "flag", "n", "u", "f", "det/roi", "det/img", "mask"]:
                check(f[name].shape[0] == 6, "aligned %s has one row per event: shape %s" % (name, f[name].shape))

            x = f["x"]
            check(x.dtype == np.float64, "x is float64 (%s)" % x.dtype)
            check(x[:].tolist() == [0.25, 1.25, 2.25, 3.25, 4.25, 5.25], "x values")
            check(math.isnan(float(x.fillvalue)), "x fillvalue is NaN (%r)" % x.fillvalue)

            flag = f["flag"]
            check(flag.dtype == np.bool_, "flag reads as numpy bool (%s)" % flag.dtype)
            check(flag[:].tolist() == [False, True, False, True, False, True], "flag values %s" % flag[:].tolist())
            check(flag.fillvalue == False, "flag fillvalue is False (%r)" % flag.fillvalue)  # noqa: E712
            tid = flag.id.get_type()
            members = {}
            if isinstance(tid, h5py.h5t.TypeEnumID):
                members = {tid.get_member_name(i).decode(): tid.get_member_value(i) for i in range(tid.get_nmembers())}
            check(members == {"FALSE": 0, "TRUE": 1}, "flag is the HDF5 enum FALSE=0, TRUE=1 (%r)" % members)

            n = f["n"]
            check(n.dtype == np.int32, "n is int32 (%s)" % n.dtype)
            check(n[:].tolist() == [0, 10, -99999, -99999, 40, 50], "n has fill rows at events 2, 3: %s"
                  % n[:].tolist())
            check(n.fillvalue == -99999, "n fillvalue -99999 (%r)" % n.fillvalue)

            u = f["u"]
            check(u.dtype == np.uint16, "u is uint16 (%s)" % u.dtype)
            check(u[:].tolist() == [65535] * 5 + [7], "u back-filled with 65535: %s" % u[:].tolist())
            check(u.fillvalue == 65535, "u fillvalue 65535 (%r)" % u.fillvalue)

            fl = f["f"]
            check(fl.dtype == np.float32, "f is float32 (%s)" % fl.dtype)
            vals = fl[:]
            check(vals[1] == 1.5 and all(math.isnan(v) for i, v in enumerate(vals) if i != 1),
                  "f is NaN except at event 1: %s" % vals.tolist())

            check(isinstance(f["det"], h5py.Group), "det is a group")
            roi = f["det/roi"]
            check(roi.dtype == np.int16 and roi.shape == (6, 3), "det/roi int16 (6, 3): %s %s" % (roi.dtype, roi.shape))
            check(roi[:, 0].tolist() == [0, 1, 2, 3, 4, 5] and roi[:, 2].tolist() == [-1] * 6, "det/roi values")
            check(roi.fillvalue == -32768, "det/roi fillvalue -32768 (%r)" % roi.fillvalue)
            img = f["det/img"]
            check(img.dtype == np.float32 and img.shape == (6, 2, 2), "det/img float32 (6, 2, 2): %s %s"
                  % (img.dtype, img.shape))
            check(img[3].tolist() == [[3.0, 1.0], [2.0, 3.0]], "det/img row 3 %s" % img[3].tolist())

            mask = f["mask"]
            check(mask.dtype == np.bool_ and mask.shape == (6, 3), "mask (a std::vector<bool>) reads as numpy bool "
                  "(6, 3): %s %s" % (mask.dtype, mask.shape))
            check(mask[:].tolist() == [[i % 2 == 0, True, i == 3] for i in range(6)], "mask values %s"
                  % mask[:].tolist())

            hits = f["unaligned_hits"]
            check(hits.shape == (2,) and hits[:].tolist() == [100, 400], "unaligned_hits holds only given rows: %s"
                  % hits[:].tolist())

            ne = f["n_events"]
            check(ne.shape == () and ne[()] == 6, "summary n_events is a scalar 6 (%s %r)" % (ne.shape, ne[()]))
            hist = f["hist"]
            check(hist.shape == (3,) and hist[:].tolist() == [1.0, 2.0, 3.0], "summary hist 1-d")
            note = f["note"][()]
            if isinstance(note, np.ndarray):
                note = note.reshape(-1)[0]
            if isinstance(note, (bytes, np.bytes_)):
                note = note.decode()
            check(note == "written by write_sample", "summary note string %r" % note)

            # var_ fields: rows concatenated, cumsum of the group's _len indexes them
            plen = f["peaks/var_p_len"]
            check(plen.dtype == np.int64 and plen.shape == (6,), "peaks/var_p_len int64, one row per event: %s %s"
                  % (plen.dtype, plen.shape))
            check(plen.fillvalue == 0, "peaks/var_p_len fillvalue 0 (%r)" % plen.fillvalue)
            lens = plen[:]
            start = np.concatenate(([0], np.cumsum(lens)))
            px, py = f["peaks/var_p/x"][:], f["peaks/var_p/y"][:]
            check(px.shape == (int(start[-1]),) and py.shape == px.shape, "peaks/var_p/x and y have sum(len) rows: %s %s"
                  % (px.shape, lens.tolist()))
            ok = True
            for r, t in enumerate(f["timestamp"][:]):
                i = int(t) - 100
                want = [] if i == 3 else [t + 0.5 * j for j in range(i % 4)]
                got = px[start[r]:start[r + 1]].tolist()
                ok = ok and got == want and py[start[r]:start[r + 1]].tolist() == [-v for v in want]
            check(ok, "each event's peaks are x[cumsum(len)[i-1]:cumsum(len)[i]] (lengths %s)" % lens.tolist())
            pix, pl = f["var_pix"], f["var_pix_len"][:]
            check(pix.shape == (int(pl.sum()), 2) and pix.dtype == np.int32, "var_pix (sum(len), 2) int32: %s %s"
                  % (pix.shape, pix.dtype))
            ps = np.concatenate(([0], np.cumsum(pl)))
            ok = True
            for r, t in enumerate(f["timestamp"][:]):
                rows = pix[ps[r]:ps[r + 1]].tolist()
                ok = ok and rows == [[int(t), 1], [int(t), 2]][:(int(t) - 100) % 3]
            check(ok, "var_pix rows per event %s" % pl.tolist())
            flags = f["flags"]
            check(flags.dtype == np.bool_ and flags[:].tolist() == [True, False], "summary flags (a std::vector<bool>) "
                  "bool: %s %s" % (flags.dtype, flags[:].tolist()))

            # Attributes: numbers as numpy scalars or arrays of their type, strings as str.
            run = f.attrs["run"]
            check(run == 42 and np.asarray(run).dtype == np.int32, "root attribute run int32 42 (%r)" % run)
            exp = f.attrs["experiment"]
            check(isinstance(exp, str) and exp == "mfx12345", "root attribute experiment is the str %r" % exp)
            units = f["x"].attrs["units"]
            check(isinstance(units, str) and units == "keV", "x attribute units is the str %r" % units)
            geo = f["det"].attrs["geometry"]
            check(geo.dtype == np.float64 and geo.tolist() == [0.5, -1.5, 2.0], "det attribute geometry %r" % geo)
            valid = f["mask"].attrs["valid"]
            check(valid.dtype == np.bool_ and valid.tolist() == [True, False, True], "mask attribute valid %r" % valid)
            cal = f["hist"].attrs["calibrated"]
            check(np.asarray(cal).dtype == np.bool_ and bool(cal), "summary attribute calibrated bool True %r" % cal)
            user = sorted(k for k in f.attrs.keys() if not k.startswith("smalldata_"))
            check(user == ["experiment", "run"], "root attributes %s" % user)
    if failures:
        print("%d h5py checks failed" % len(failures))
        return 1
    print("all h5py checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
