#!/usr/bin/env python3
"""A run that fills its file system: on a small tmpfs and on a small ext4 (a loop device),
in serial mode and in parallel (1 server + 2 clients). The error must name the file, the
process must not crash, and the file must open with every aligned dataset as long as
`timestamp` and every row right. Needs root (mount); a file system that cannot be made
here is skipped with a message.

And, on the tmpfs, a time-ordered run (1 server + 2 clients, Options::time_order, the
ordering in rounds) whose parts fit but whose ordered copy does not: every rank's done() throws
Errc::hdf5 naming the .ordered file and the full disk, the report says the ordering
failed, no .ordered file is left, and the final file holds every event once, in arrival
order, every row right.

usage: full_disk.py FAIL_SERIAL MPIEXEC FAIL_PROG
"""
import os
import subprocess
import sys
import tempfile
import time

from failrun import LIMIT, finish, h5py, np, run_limited

SIZE_MB = 24
# A full disk still holds a quarter of its size in rows (8 KiB each): 750 rows. 1150-1750
# here; 230-280 on the ext4 while a failed reservation (fallocate) kept the free blocks.
MIN_ROWS = SIZE_MB * (1 << 20) // 4 // 8400
ORDER_EVENTS = 1300   # time order: 10.7 MB of parts fit in SIZE_MB of tmpfs, the copy does not
                      # (it fails in the last of its 4 rounds; 900 events fit, 1450 fail the same)


def rows_intact(path):
    """Problems with a file written by fail_serial/fail_prog in mode fill (var_pk included)."""
    try:
        with h5py.File(path, "r") as f:
            ts, x, img = f["timestamp"][:], f["x"][:], f["img"][:]
            pk, pk_len = f["var_pk"][:], f["var_pk_len"][:]
    except Exception as e:  # noqa: BLE001 - any failure to read is the finding
        return [f"{os.path.basename(path)} unreadable: {e}"]
    print(f"    {os.path.basename(path)}: {len(ts)} rows")
    if len(ts) < MIN_ROWS:
        return [f"{os.path.basename(path)} holds {len(ts)} rows, fewer than {MIN_ROWS}: the writes did not get "
                "the room there was"]
    if not (len(x) == len(ts) == len(img)):
        return [f"lengths differ: timestamp {len(ts)}, x {len(x)}, img {len(img)}"]
    if not (np.array_equal(x, ts.astype(np.float64)) and np.array_equal(img[:, 0], ts.astype(np.float32))
            and np.array_equal(img[:, -1], ts.astype(np.float32))):
        return ["rows differ from their timestamps"]
    # var_pk: event t has t % 5 rows of value t; the rows of the events kept, no more
    if len(pk_len) != len(ts) or not np.array_equal(pk_len, ts % 5):
        return [f"var_pk_len wrong ({len(pk_len)} rows, timestamp {len(ts)})"]
    if len(pk) != pk_len.sum() or not np.array_equal(pk, np.repeat(ts, ts % 5).astype(np.float32)):
        return [f"var_pk has {len(pk)} rows, its lengths add up to {pk_len.sum()}, or its values are wrong"]
    return []


def mount(kind, where, scratch):
    """Mounts a SIZE_MB file system of `kind` at `where`; returns None or why not."""
    os.makedirs(where, exist_ok=True)
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", where]
    else:
        img = os.path.join(scratch, "ext4.img")
        with open(img, "wb") as f:
            f.truncate(SIZE_MB << 20)
        try:
            p = subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True, text=True)
        except OSError as e:  # no mkfs.ext4 here
            return str(e)
        if p.returncode != 0:
            return f"mkfs.ext4: {p.stderr.strip()}"
        cmd = ["mount", "-o", "loop", img, where]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return str(e)
    return None if p.returncode == 0 else (p.stderr.strip() or f"mount exited {p.returncode}")


def main():
    serial, mpiexec, prog = sys.argv[1:4]
    failures, runs = [], 0
    t_all = time.time()
    with tempfile.TemporaryDirectory(prefix="smalldata-fulldisk-") as scratch:
        for kind in ("tmpfs", "ext4"):
            where = os.path.join(scratch, kind)
            why = mount(kind, where, scratch)
            if why:
                print(f"SKIPPED {kind}: cannot mount a small {kind} here ({why})")
                continue
            try:
                # The time-ordered run on tmpfs only: there the room is exact (no delayed
                # allocation, no reservation), so its parts fit and its copy does not.
                for layout in ("serial", "1 server + 2 clients") + (("time order",) if kind == "tmpfs" else ()):
                    runs += 1
                    name = f"{kind}, {layout}"
                    out = os.path.join(where, "serial.h5" if layout == "serial" else "par.h5")
                    if layout == "serial":
                        cmd = [serial, "fill", out]
                    elif layout == "time order":
                        cmd = [mpiexec, "-n", "3", prog, "order-fill", out, str(ORDER_EVENTS)]
                    else:
                        cmd = [mpiexec, "-n", "3", prog, "fill", out, "1000000"]
                    t0 = time.time()
                    p = run_limited(cmd)
                    if p is None:
                        failures.append(f"{name}: hung (killed after {LIMIT} s)")
                        continue
                    err = p.stderr + p.stdout
                    print(f"--- {name}: exit {p.returncode} after {time.time() - t0:.1f} s")
                    print("\n".join(l for l in err.splitlines() if "smalldata" in l or "fail_" in l)[:1500])
                    if layout == "serial":
                        if p.returncode != 0:
                            failures.append(f"{name}: exit {p.returncode}, expected 0 (no crash at exit)")
                        if "event() threw hdf5" not in err or out not in err:
                            failures.append(f"{name}: no hdf5 error naming {out}")
                        failures += [f"{name}: {m}" for m in rows_intact(out)]
                    elif layout == "time order":
                        caught = [l for l in err.splitlines() if "caught [hdf5] time order:" in l]
                        if len(caught) != 3:
                            failures.append(f"{name}: {len(caught)} ranks caught the ordering's hdf5 error, expected 3")
                        for l in caught:
                            if "par_part0.h5.ordered" not in l or "No space left on device" not in l:
                                failures.append(f"{name}: the error does not name the .ordered file and the full disk")
                                break
                        if "(failed: the events are in arrival order)" not in err:
                            failures.append(f"{name}: the report does not say the ordering failed")
                        if any(f.endswith(".ordered") for f in os.listdir(where)):
                            failures.append(f"{name}: a .ordered file is left")
                        failures += [f"{name}: {m}" for m in rows_intact(out)]
                        with h5py.File(out, "r") as f:
                            ts = f["timestamp"][:]
                        if len(ts) != ORDER_EVENTS or not np.array_equal(np.sort(ts), np.arange(ORDER_EVENTS)):
                            failures.append(f"{name}: the final file does not hold every event once")
                    else:
                        part = os.path.join(where, "par_part0.h5")
                        if p.returncode == 0:
                            failures.append(f"{name}: the job exited 0")
                        if part not in err:
                            failures.append(f"{name}: the error does not name {part}")
                        failures += [f"{name}: {m}" for m in rows_intact(part)]
                    for f in os.listdir(where):
                        if f != "lost+found":
                            os.remove(os.path.join(where, f))
            finally:
                subprocess.run(["umount", where], capture_output=True)
    if runs == 0:
        print("SKIP: no small file system could be mounted here (needs root)")
        sys.exit(77)
    finish(failures, runs, t_all)


if __name__ == "__main__":
    main()
