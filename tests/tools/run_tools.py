#!/usr/bin/env python3
"""`smalldata recover` and `smalldata check` on files written by the library (write_run):

  clean      a clean parallel run (2 servers + 3 clients): check is sound; recover rebuilds
             the same final file (every dataset, fill value, summary and attribute), and again
             (idempotent)
  deleted    the final file deleted after the run: recover rebuilds it (no summary, no
             attributes)
  missing    a part deleted: check exits 1 naming it
  truncated  a part cut short: recover exits non-zero naming it; so does check
  serial     a serial file: check is sound; recover leaves it as it is (same bytes)
  stale      a serial run after a parallel run of the same name (its parts stay beside
             the serial file): check and recover keep the serial file as it is (same
             bytes, summary included) and leave the parts alone
  compressed deflate-compressed files (Options::compression): a parallel run's final file
             deleted, rebuilt by recover from the compressed parts; a serial file whose
             var_ data lost rows, cut by recover (it reads the compressed lengths)
  ordered    a run with Options::time_order: its final file is in timestamp order; a job
             stopped between the ordering and its switch is undone by recover before the
             switch began, finished once it had
  flatten    `smalldata flatten` of a parallel run's final file and of a serial file: the
             copy reads the same as the original (every dataset, dtype, shape, fill value,
             value and attribute), has no virtual dataset, still reads after the parts are
             deleted, and check finds it sound; OUT existing without --force, OUT = FILE
             and OUT = a part are refused (OUT untouched); deflate filters are kept; a
             missing part is an error, not a copy of fill values
  ordered_stale  a time-ordered rerun with fewer servers stopped inside its switch, beside
             the earlier run's time-ordered part: recover finishes the rerun's switch, leaves
             the earlier part as it is, and rebuilds every event of the rerun, in order
  rerun_killed  a rerun with fewer servers killed in the middle of its run, beside the
             earlier run's part beyond its own: recover rebuilds the rerun's file from its
             part (every event its checkpoints saved, values right) and leaves the earlier
             part as it is (same bytes); check finds the file sound
  misplaced  a part replaced by a copy of another part of the run: check, flatten and
             recover refuse it, naming it
  flat_stop  a run with Options::self_contained stopped inside done()'s copy into one file:
             half-way (the parts, the join's complete virtual file and the half-made copy
             under their temporary names), recover rebuilds the final file with every
             event, its summary and attributes taken from the join's file, and leaves no
             temporary file; with the copy in place but the parts not yet removed, recover
             keeps the self-contained file as it is (same bytes) and leaves the parts alone
  unreadable_crashed  a killed serial file whose dataset header is overwritten: recover
             fails naming it and changes no byte
  concurrent  two runs given the same filename at once (separate processes), serial and
             1 server + 2 clients: the second is refused naming the file the first is
             writing, recover refuses that file too (check and flatten say it is being
             written, not that it crashed), and the first writes every event; two serial
             runs started at the same instant: one writes all its events, the other is
             refused; a serial run named like the parallel run's part is refused, the run's
             file intact
  flush_cut  a job killed inside HDF5's flush, its file shorter than its superblock says
             (serial, 2 servers + 3 clients): recover extends it and keeps every event its
             checkpoints saved, values right; check finds it sound

usage: run_tools.py MPIEXEC WRITE_RUN SMALLDATA_TOOL WORKDIR
"""
import hashlib
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from failrun import LIMIT, finish, h5py, np, run_limited  # noqa: E402 - tests/failrun.py

N = 20000


def contents(path):
    """{dataset: (dtype, shape, fill value, values)} and {object: its attributes} of a file."""
    out = {}
    with h5py.File(path, "r") as f:
        attrs = {"/": {k: repr(v) for k, v in f.attrs.items()}}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                fill = obj.fillvalue if obj.shape != () and obj.dtype.kind != "S" else None
                out[name] = (str(obj.dtype), obj.shape, repr(fill), obj[()])
            if len(obj.attrs):
                attrs[name] = {k: repr(v) for k, v in obj.attrs.items()}
        f.visititems(visit)
    return out, attrs


def same(a, b):
    """Differences between two contents() results, as text."""
    (da, aa), (db, ab) = a, b
    probs = []
    if set(da) != set(db):
        probs.append(f"datasets differ: {sorted(set(da) ^ set(db))}")
    for k in sorted(set(da) & set(db)):
        ta, tb = da[k], db[k]
        if ta[:3] != tb[:3]:
            probs.append(f"{k}: {ta[:3]} != {tb[:3]}")
        else:
            va, vb = np.asarray(ta[3]), np.asarray(tb[3])
            if not np.array_equal(va, vb, equal_nan=va.dtype.kind == "f"):
                probs.append(f"{k}: values differ")
    if aa != ab:
        probs.append(f"attributes differ: {aa} != {ab}")
    return probs


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Ctx:
    def __init__(self, mpiexec, write_run, tool, root):
        self.mpiexec, self.write_run, self.tool, self.root = mpiexec, write_run, tool, root

    def fresh(self, name, ranks, compression=None, env=None, stopped=False):
        """write_run into a fresh directory; env: more environment; stopped: the run is
        meant to end the process early (a non-zero exit, not a hang)."""
        d = os.path.join(self.root, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        out = os.path.join(d, "run.h5")
        cmd = [self.write_run, out, str(N)]
        if ranks > 1:
            cmd = [self.mpiexec, "-n", str(ranks)] + cmd
        full = dict(os.environ, **(env or {}))
        if compression:
            full["SMALLDATA_TEST_COMPRESSION"] = compression
        p = run_limited(cmd, env=full)
        if p is None or (p.returncode != 0) != stopped:
            raise RuntimeError(f"write_run exited {p.returncode if p else 'never (hung)'}: {p.stderr[-2000:] if p else ''}")
        return out

    def tool_run(self, verb, path, *more):
        p = subprocess.run([self.tool, verb, path, *more], capture_output=True, text=True, timeout=LIMIT)
        shown = " ".join(os.path.basename(a) if os.path.isabs(a) else a for a in (path, *more))
        print(f"    $ smalldata {verb} {shown}  -> exit {p.returncode}")
        for line in (p.stdout + p.stderr).strip().splitlines()[:14]:
            print("      " + line)
        return p


def sound_after_recover(c, out, prefix=""):
    """`smalldata check` on a file recover made: it must be sound."""
    p = c.tool_run("check", out)
    return [] if p.returncode == 0 else [f"{prefix}check after recover exited {p.returncode}"]


def check_values(path, with_summary):
    """The run's content, from what write_run wrote: every event once, values right."""
    probs = []
    with h5py.File(path, "r") as f:
        ts = f["timestamp"][:]
        if len(ts) != N or not np.array_equal(np.sort(ts), np.arange(N)):
            return [f"timestamp: {len(ts)} rows, not 0..{N - 1} once each"]
        probs += check_rows(f, ts)
        if not np.array_equal(f["flag"][:], ts % 2 == 1):
            probs.append("flag wrong")
        late = f["late"][:]
        ok = np.where(ts >= N // 2, late == ts.astype(np.float32), np.isnan(late))
        if not ok.all():
            probs.append("late: values or fill wrong")
        hits = np.sort(f["det/unaligned_hits"][:])
        if not np.array_equal(hits, np.arange(0, N, 3)):
            probs.append("det/unaligned_hits wrong")
        if with_summary:
            if "n_events" not in f or f["n_events"][()] != N or f["note"][()] != b"write_run":
                probs.append("summary missing or wrong")
            if (f.attrs.get("experiment") != "write_run" or f["x"].attrs.get("units") != "mm"
                    or f["n_events"].attrs.get("units") != "events"
                    or f["flag"].attrs["meaning"].tolist() != [True, False]
                    or f["det"].attrs["geometry"].tolist() != [0.5, -1.5]):
                probs.append("attributes missing or wrong")
        else:
            if "n_events" in f:
                probs.append("a summary appeared from nowhere")
            if "units" in f["x"].attrs or "experiment" in f.attrs:
                probs.append("an attribute appeared from nowhere")
    return probs


def check_rows(f, ts):
    """The rows of the events `ts` (in the file's order): x, det/image and the var_ rows."""
    probs = []
    if not np.array_equal(f["x"][:], ts * 0.5):
        probs.append("x != timestamp / 2")
    img = f["det/image"][:]
    want = ((ts[:, None] + np.arange(12)[None, :]) % 60000).reshape(-1, 3, 4)
    if not np.array_equal(img, want):
        probs.append(f"det/image wrong (shape {img.shape})")
    return probs + check_var(f, ts)


def check_var(f, ts):
    """peaks/var_p/x: event i has i % 4 rows (none when i % 5 == 0), found by cumsum of the lengths."""
    lens = f["peaks/var_p_len"][:]
    want = np.where(ts % 5 != 0, ts % 4, 0)
    if len(lens) != len(ts) or not np.array_equal(lens, want):
        return ["peaks/var_p_len wrong"]
    x = f["peaks/var_p/x"][:]
    start = np.concatenate(([0], np.cumsum(lens)))
    if len(x) != start[-1]:
        return [f"peaks/var_p/x has {len(x)} rows, its lengths add up to {start[-1]}"]
    for r in range(len(ts)):
        if not np.array_equal(x[start[r]:start[r + 1]], (ts[r] + np.arange(lens[r])).astype(np.float32)):
            return [f"peaks/var_p/x rows of event {ts[r]} wrong"]
    return []


def mode_var_cut(c, compression=None):
    """A serial file whose var_ data lost its last rows (as a full disk or a kill can leave
    it): check names the dataset; recover keeps the events whose rows are all there."""
    out = c.fresh("var_cut" if compression is None else "var_cut_" + compression, 1, compression)
    with h5py.File(out, "r+") as f:
        x = f["peaks/var_p/x"]
        total = x.shape[0]
        x.resize((total - 5,))
    p = c.tool_run("check", out)
    probs = [] if p.returncode == 1 else [f"check of a cut var_ dataset exited {p.returncode}, expected 1"]
    if "peaks/var_p/x" not in p.stdout:
        probs.append("check does not name peaks/var_p/x")
    p = c.tool_run("recover", out)
    if p.returncode != 0:
        return probs + [f"recover exited {p.returncode}"]
    with h5py.File(out, "r") as f:
        ts = f["timestamp"][:]
        lens = f["peaks/var_p_len"][:]
        # Serial: events in order; the last rows lost belong to the last events with rows.
        kept = len(ts)
        want_kept = N
        while want_kept > 0 and np.where(np.arange(want_kept) % 5 != 0, np.arange(want_kept) % 4, 0).sum() > total - 5:
            want_kept -= 1
        if kept != want_kept:
            probs.append(f"recover kept {kept} events, expected {want_kept}")
        if not np.array_equal(ts, np.arange(kept)):
            probs.append("timestamps after recover are not 0..kept-1")
        for name in ("x", "flag", "det/image", "late"):
            if f[name].shape[0] != kept:
                probs.append(f"{name} has {f[name].shape[0]} rows after recover, not {kept}")
        if f["peaks/var_p/x"].shape[0] != lens.sum():
            probs.append("var_ data rows != sum of lengths after recover")
        probs += check_var(f, ts)
    probs += sound_after_recover(c, out)
    return probs


def mode_clean(c):
    out = c.fresh("clean", 5)
    probs = check_values(out, True)
    before = contents(out)
    p = c.tool_run("check", out)
    if p.returncode != 0 or "sound" not in p.stdout:
        probs.append(f"check of a clean run exited {p.returncode}")
    for needle in ("20000 events", "det/image", "uint16 (3, 4)", "run_part0.h5", "run_part1.h5", "bool ()"):
        if needle not in p.stdout:
            probs.append(f"check's summary lacks {needle!r}")
    # The var_ field without a row is a field (an empty dataset with a fill value), not a summary.
    summary_line = [ln for ln in p.stdout.splitlines() if "summary datasets" in ln]
    if not summary_line or "var_none" in summary_line[0] or "hist" not in summary_line[0]:
        probs.append(f"check's summary datasets: {summary_line}")
    parts = {n: sha(os.path.join(os.path.dirname(out), n)) for n in ("run_part0.h5", "run_part1.h5")}
    for i in range(2):
        p = c.tool_run("recover", out)
        if p.returncode != 0:
            probs.append(f"recover #{i + 1} exited {p.returncode}")
        if "warning" in p.stdout + p.stderr:
            probs.append(f"recover #{i + 1} warned about a clean run")
        probs += [f"after recover #{i + 1}: {d}" for d in same(before, contents(out))]
        for n, h in parts.items():
            if sha(os.path.join(os.path.dirname(out), n)) != h:
                probs.append(f"recover #{i + 1} modified the intact {n}")
    probs += sound_after_recover(c, out)
    return probs


def mode_deleted(c):
    out = c.fresh("deleted", 5)
    os.unlink(out)
    p = c.tool_run("recover", out)
    probs = [] if p.returncode == 0 else [f"recover exited {p.returncode}"]
    if not os.path.exists(out):
        return probs + ["recover did not rebuild the final file"]
    probs += check_values(out, False)
    if "20000 events" not in p.stdout:
        probs.append("recover did not print the total of 20000 events")
    p = c.tool_run("check", out)
    if p.returncode != 0:
        probs.append(f"check of the rebuilt file exited {p.returncode}")
    return probs


def mode_missing(c):
    out = c.fresh("missing", 5)
    os.unlink(os.path.join(os.path.dirname(out), "run_part1.h5"))
    p = c.tool_run("check", out)
    probs = [] if p.returncode == 1 else [f"check exited {p.returncode}, expected 1"]
    if "run_part1.h5" not in p.stdout or "missing" not in p.stdout:
        probs.append("check does not name the missing run_part1.h5")
    return probs


def mode_truncated(c):
    out = c.fresh("truncated", 5)
    part = os.path.join(os.path.dirname(out), "run_part0.h5")
    with open(part, "r+b") as f:
        f.truncate(1000)
    p = c.tool_run("recover", out)
    probs = [] if p.returncode not in (0, None) else [f"recover exited {p.returncode}, expected non-zero"]
    if "run_part0.h5" not in p.stderr:
        probs.append("recover's error does not name run_part0.h5")
    if "shorter than its superblock says" not in p.stderr:
        probs.append("recover's error does not say run_part0.h5 is shorter than its superblock says")
    if "HDF5:" in p.stderr:  # HDF5's exit-time cleanup giving up on the part it could not close
        probs.append("recover's error ends in HDF5's own messages: " + p.stderr[p.stderr.find("HDF5:"):][:80])
    p = c.tool_run("check", out)
    if p.returncode != 1 or "run_part0.h5" not in p.stdout:
        probs.append(f"check exited {p.returncode} or did not name run_part0.h5")
    # Garbage in place of a part: the same.
    with open(part, "wb") as f:
        f.write(b"not an HDF5 file" * 100)
    p = c.tool_run("recover", out)
    if p.returncode == 0 or "run_part0.h5" not in p.stderr:
        probs.append(f"recover of a garbage part exited {p.returncode} or did not name it")
    return probs


def intact_serial(c, out, where="", note=None):
    """check and recover on an intact serial file: both succeed, the file keeps its bytes."""
    probs = check_values(out, True)
    h = sha(out)
    p = c.tool_run("check", out)
    if p.returncode != 0 or "serial file" not in p.stdout:
        probs.append(f"check of a serial file{where} exited {p.returncode}")
    p = c.tool_run("recover", out)
    if p.returncode != 0 or f"{N} events" not in p.stdout or (note and note not in p.stdout):
        probs.append(f"recover of a serial file{where} exited {p.returncode} or did not say what it found")
    if sha(out) != h:
        probs.append(f"recover modified an intact serial file{where}")
    return probs


def mode_serial(c):
    out = c.fresh("serial", 1)
    probs = intact_serial(c, out)
    os.unlink(out)
    p = c.tool_run("recover", out)
    if p.returncode == 0 or "run.h5" not in p.stderr:
        probs.append("recover of a missing serial file did not fail naming it")
    p = c.tool_run("check", out)
    if p.returncode != 1:
        probs.append(f"check of a missing file exited {p.returncode}, expected 1")
    return probs


def mode_stale(c):
    out = c.fresh("stale", 5)  # parallel: run.h5 and run_part0.h5, run_part1.h5
    parts = [os.path.join(os.path.dirname(out), f"run_part{k}.h5") for k in (0, 1)]
    part_sums = [sha(p) for p in parts]
    p = run_limited([c.write_run, out, str(N)])  # serial, same name: replaces run.h5 only
    if p is None or p.returncode != 0:
        return ["the serial write_run failed"]
    probs = intact_serial(c, out, " beside stale parts", note="earlier parallel run")
    probs += check_values(out, True)  # after recover: still the serial run's file
    if [sha(q) for q in parts] != part_sums:
        probs.append("recover modified the stale parts")
    return probs


GZIP_FIELDS = ("timestamp", "x", "flag", "det/image", "late", "det/unaligned_hits", "peaks/var_p/x",
               "peaks/var_p_len")


def gzip_problems(path, seen=None):
    """Every per-event dataset of a writer file is deflate-compressed (with shuffle). A part
    may lack a field its clients never gave (det/unaligned_hits): `seen` collects the
    names found."""
    probs = []
    with h5py.File(path, "r") as f:
        for name in GZIP_FIELDS:
            if seen is None and name not in f:
                probs.append(f"{name} missing in {os.path.basename(path)}")
            if name not in f:
                continue
            if seen is not None:
                seen.add(name)
            if f[name].compression != "gzip" or not f[name].shuffle:
                probs.append(f"{name} in {os.path.basename(path)} is not gzip + shuffle ({f[name]._filters})")
    return probs


def mode_compressed(c):
    """Compressed files: recover rebuilds a deleted final file from the compressed parts,
    and cuts a compressed serial file whose var_ data lost rows."""
    out = c.fresh("compressed", 5, "deflate")
    d = os.path.dirname(out)
    probs, seen = [], set()
    for k in (0, 1):
        probs += gzip_problems(os.path.join(d, f"run_part{k}.h5"), seen)
    if seen != set(GZIP_FIELDS):
        probs.append(f"no part has {sorted(set(GZIP_FIELDS) - seen)}")
    os.unlink(out)
    p = c.tool_run("recover", out)
    if p.returncode != 0 or not os.path.exists(out):
        return probs + [f"recover of a compressed run exited {p.returncode}"]
    probs += check_values(out, False)
    p = c.tool_run("check", out)
    if p.returncode != 0:
        probs.append(f"check of the rebuilt compressed run exited {p.returncode}")
    probs += mode_var_cut(c, "deflate")
    out = os.path.join(c.root, "var_cut_deflate", "run.h5")
    probs += gzip_problems(out)
    return probs


def without_part_attrs(c):
    """contents() with the root attributes that tie a file to its parts (or a flat file to
    its run) left out."""
    data, attrs = c
    root = {k: v for k, v in attrs["/"].items() if k not in ("smalldata_run", "smalldata_flat_run")}
    return data, dict(attrs, **{"/": root})


def virtual_datasets(path):
    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.is_virtual else None)
    return names


def flatten_checks(c, src, flat, parallel):
    """flat is src flattened: same contents, nothing virtual, right root attributes, sound."""
    probs = [f"after flatten: {d}" for d in same(without_part_attrs(contents(src)), without_part_attrs(contents(flat)))]
    if virtual_datasets(flat):
        probs.append(f"virtual datasets in the flat file: {virtual_datasets(flat)}")
    with h5py.File(src, "r") as f, h5py.File(flat, "r") as g:
        if "smalldata_run" in g.attrs or "smalldata_parts" in g.attrs:
            probs.append("the flat file carries part attributes")
        if parallel and g.attrs.get("smalldata_flat_run") != f.attrs.get("smalldata_run"):
            probs.append("the flat file lacks smalldata_flat_run = the run token")
        for name in GZIP_FIELDS:
            if g[name].maxshape[0] is not None or g[name].chunks is None:
                probs.append(f"{name} in the flat file is not chunked with an unlimited first axis")
    p = c.tool_run("check", flat)
    if p.returncode != 0 or "sound" not in p.stdout:
        probs.append(f"check of the flat file exited {p.returncode}")
    return probs


def mode_flatten(c):
    # A parallel run: the copy, then the copy alone.
    out = c.fresh("flatten", 5)
    d = os.path.dirname(out)
    flat = os.path.join(d, "flat.h5")
    p = c.tool_run("flatten", out, flat)
    if p.returncode != 0 or not os.path.exists(flat):
        return [f"flatten of a parallel run exited {p.returncode}"]
    probs = flatten_checks(c, out, flat, True)
    if "10 per-event datasets" not in p.stdout:
        probs.append("flatten did not say what it copied")
    # Refusals: OUT exists without --force, OUT = FILE, OUT = a part it reads; nothing changes.
    sums = {n: sha(os.path.join(d, n)) for n in ("run.h5", "flat.h5", "run_part0.h5")}
    for args, needle in (((out, flat), "--force"), ((out, out, "--force"), "itself"),
                         ((out, os.path.join(d, "run_part0.h5"), "--force"), "part file")):
        p = c.tool_run("flatten", *args)
        if p.returncode != 1 or needle not in p.stderr:
            probs.append(f"flatten {' '.join(os.path.basename(a) for a in args)} exited {p.returncode} "
                         f"or did not say {needle!r}")
    if {n: sha(os.path.join(d, n)) for n in sums} != sums:
        probs.append("a refused flatten modified a file")
    if [n for n in os.listdir(d) if n.endswith(".tmp")]:
        probs.append(f"temporary files left: {os.listdir(d)}")
    # --force replaces OUT.
    p = c.tool_run("flatten", "--force", out, flat)
    if p.returncode != 0:
        probs.append(f"flatten --force exited {p.returncode}")
    for k in (0, 1):
        os.unlink(os.path.join(d, f"run_part{k}.h5"))
    probs += [f"flat file without parts: {x}" for x in check_values(flat, True)]
    p = c.tool_run("check", flat)
    if p.returncode != 0 or "self-contained file" not in p.stdout:
        probs.append(f"check of the flat file without its parts exited {p.returncode}")
    h = sha(flat)
    p = c.tool_run("recover", flat)
    if p.returncode != 0 or sha(flat) != h:
        probs.append(f"recover of the flat file exited {p.returncode} or modified it")
    # The original, its parts gone, cannot be flattened: an error naming the part, no copy.
    p = c.tool_run("flatten", out, os.path.join(d, "none.h5"))
    if p.returncode != 1 or "run_part0.h5" not in p.stderr or os.path.exists(os.path.join(d, "none.h5")):
        probs.append(f"flatten with its parts missing exited {p.returncode} or did not name the part")

    # A serial file: the same content, check sound.
    out = c.fresh("flatten_serial", 1)
    flat = os.path.join(os.path.dirname(out), "flat.h5")
    p = c.tool_run("flatten", out, flat)
    if p.returncode != 0:
        return probs + [f"flatten of a serial file exited {p.returncode}"]
    probs += [f"serial: {x}" for x in flatten_checks(c, out, flat, False)]

    # Compressed parts: the flat file keeps deflate + shuffle on every per-event dataset.
    out = c.fresh("flatten_compressed", 5, "deflate")
    flat = os.path.join(os.path.dirname(out), "flat.h5")
    p = c.tool_run("flatten", out, flat)
    if p.returncode != 0:
        return probs + [f"flatten of a compressed run exited {p.returncode}"]
    probs += [f"compressed: {x}" for x in flatten_checks(c, out, flat, True) + gzip_problems(flat)]
    return probs


def mode_ordered(c):
    """Options::time_order (2 servers + 3 clients): the final file in timestamp order and
    sound. Then a job stopped between the ordering and its switch (every part's .ordered
    file complete): recover undoes it when no part was switched (every event, in arrival
    order, no .ordered left), and finishes it when one part was switched, or removed by the
    switch before its .ordered file took its name, the last part too (every event, in order).
    recover warns that the file is not in timestamp order exactly when it is not (undone).
    With small cells (routed streams: mappings that take rows from the middle of a part),
    check finds a part one timestamp short."""
    order = {"SMALLDATA_TEST_TIME_ORDER": "1"}
    out = c.fresh("ordered", 5, env=order)
    probs = check_values(out, True)
    with h5py.File(out, "r") as f:
        if not np.array_equal(f["timestamp"][:], np.arange(N)):
            probs.append("the final file of a time_order run is not in timestamp order")
    p = c.tool_run("check", out)
    if p.returncode != 0:
        probs.append(f"check of a time-ordered run exited {p.returncode}")
    p = c.tool_run("recover", out)  # a run that ended normally: nothing to say about its order
    if p.returncode != 0 or "warning" in p.stdout:
        probs.append(f"recover of the complete time-ordered run exited {p.returncode} or warned")
    # Routed with small cells: the final file's mappings take rows from the middle of their
    # parts. Sound and in order; then part 1 one timestamp short: check names the mapping
    # that reads past its end (a check that counted the rows a mapping takes saw none short).
    cells = c.fresh("ordered_cells", 5, env=dict(order, SMALLDATA_TEST_SMALL_CELLS="1"))
    probs += [f"small cells: {x}" for x in check_values(cells, True)]
    with h5py.File(cells, "r") as f:
        if not np.array_equal(f["timestamp"][:], np.arange(N)):
            probs.append("small cells: the final file is not in timestamp order")
        if f["timestamp"].id.get_create_plist().get_virtual_count() < 4:
            probs.append("small cells: the final file has fewer than 2 mappings per part")
    p = c.tool_run("check", cells)
    if p.returncode != 0:
        probs.append(f"small cells: check exited {p.returncode}")
    part1 = os.path.join(os.path.dirname(cells), "run_part1.h5")
    with h5py.File(part1, "r+") as f:
        rows = f["timestamp"].shape[0]
        f["timestamp"].resize((rows - 1,))
    p = c.tool_run("check", cells)
    if p.returncode == 0 or f"'timestamp' maps {rows} rows of '{part1}', which has {rows - 1}" not in p.stdout:
        probs.append("small cells: check of a part one timestamp short does not say so")
    stop_dir = os.path.join(c.root, "ordered_stop")
    c.fresh("ordered_stop", 5, env=dict(order, SMALLDATA_TEST_STOP_ORDERED=stop_dir), stopped=True)
    names = sorted(os.listdir(stop_dir))
    want = ["ordered0", "ordered1", "run_part0.h5", "run_part0.h5.ordered", "run_part1.h5", "run_part1.h5.ordered"]
    if names != want:
        return probs + [f"the stopped run left {names}, expected {want}"]
    for case, switched, k in (("undo", None, 0), ("renamed", "rename", 0), ("removed", "unlink", 0),
                              ("removed_last", "unlink", 1)):
        d = os.path.join(c.root, "ordered_" + case)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(stop_dir, d)
        part = os.path.join(d, f"run_part{k}.h5")
        if switched:
            os.unlink(part)
        if switched == "rename":
            os.rename(part + ".ordered", part)
        out = os.path.join(d, "run.h5")
        p = c.tool_run("recover", out)
        if p.returncode != 0:
            probs.append(f"{case}: recover exited {p.returncode}")
            continue
        probs += [f"{case}: {x}" for x in check_values(out, False)]
        left = [n for n in os.listdir(d) if n.endswith(".ordered")]
        if left:
            probs.append(f"{case}: recover left {left}")
        with h5py.File(out, "r") as f:
            in_order = np.array_equal(f["timestamp"][:], np.arange(N))
        if in_order != (switched is not None):
            probs.append(f"{case}: the rebuilt file is {'' if in_order else 'not '}in timestamp order")
        if ("warning: the run asked for time order" in p.stdout) == in_order:
            probs.append(f"{case}: recover {'warns' if in_order else 'does not warn'} that the file is not in "
                         f"timestamp order (it is {'' if in_order else 'not '}in order)")
        if switched and "finished the time ordering" not in p.stdout:
            probs.append(f"{case}: recover does not say it finished the time ordering")
        probs += sound_after_recover(c, out, f"{case}: ")
    return probs


def mode_ordered_stale(c):
    """A time-ordered run of 2 servers, then a time-ordered rerun of 1 server stopped inside
    its switch (its part removed, its .ordered file not yet renamed); the first run's
    run_part1.h5, marked time-ordered, is still there. recover finishes the rerun's switch
    (its .ordered file is its only copy of the events), leaves the earlier run's part as it
    is and rebuilds the rerun's file: every event, in order."""
    order = {"SMALLDATA_TEST_TIME_ORDER": "1"}
    out = c.fresh("ordered_stale", 5, env=order)
    d = os.path.dirname(out)
    stale = os.path.join(d, "run_part1.h5")
    stale_sum = sha(stale)
    p = run_limited([c.mpiexec, "-n", "3", c.write_run, out, str(N)],
                    env=dict(os.environ, **order, SMALLDATA_TEST_STOP_ORDERED=d))
    if p is None or p.returncode == 0:
        return [f"the stopped rerun exited {p.returncode if p else 'never (hung)'}"]
    names = sorted(n for n in os.listdir(d) if n.startswith("run"))
    if names != ["run_part0.h5", "run_part0.h5.ordered", "run_part1.h5"]:
        return [f"the stopped rerun left {names}"]
    os.unlink(os.path.join(d, "run_part0.h5"))  # the switch removed it, then the job died
    p = c.tool_run("recover", out)
    probs = []
    if p.returncode != 0:
        return [f"recover exited {p.returncode}"]
    for needle in ("finished the time ordering", "'run_part1.h5' is a part of an earlier run"):
        if needle not in p.stdout:
            probs.append(f"recover does not say {needle!r}")
    probs += check_values(out, False)
    with h5py.File(out, "r") as f:
        if not np.array_equal(f["timestamp"][:], np.arange(N)):
            probs.append("the rebuilt file is not in timestamp order")
    if not os.path.exists(stale) or sha(stale) != stale_sum:
        probs.append("recover changed the earlier run's run_part1.h5")
    if any(n.endswith(".ordered") for n in os.listdir(d)):
        probs.append(f"recover left {sorted(os.listdir(d))}")
    probs += sound_after_recover(c, out)
    return probs


def check_saved(path):
    """What a killed run saved, from what write_run wrote: each event at most once, values
    right (its aligned fields and var_ rows)."""
    with h5py.File(path, "r") as f:
        ts = f["timestamp"][:]
        if len(np.unique(ts)) != len(ts) or (len(ts) and (ts.min() < 0 or ts.max() >= N)):
            return [f"timestamp: {len(ts)} rows, not distinct events of 0..{N - 1}"]
        return check_rows(f, ts)


def mode_rerun_killed(c):
    """A run of 2 servers, then a rerun of 1 server killed after its third checkpoint: the
    earlier run's run_part1.h5 lies beyond the rerun's one part. recover rebuilds the
    rerun's file from run_part0.h5 and leaves run_part1.h5 as it is."""
    out = c.fresh("rerun_killed", 5)
    d = os.path.dirname(out)
    stale = os.path.join(d, "run_part1.h5")
    stale_sum = sha(stale)
    p = run_limited([c.mpiexec, "-n", "3", c.write_run, out, str(N)],
                    env=dict(os.environ, SMALLDATA_TEST_KILL_CHECKPOINT="3"))
    if p is None or p.returncode == 0:
        return [f"the killed rerun exited {p.returncode if p else 'never (hung)'}"]
    names = sorted(n for n in os.listdir(d) if n.startswith("run"))
    if names != ["run_part0.h5", "run_part1.h5"]:
        return [f"the killed rerun left {names}"]
    p = c.tool_run("recover", out)
    if p.returncode != 0:
        return [f"recover exited {p.returncode}"]
    probs = []
    if "'run_part1.h5' is a part of an earlier run" not in p.stdout:
        probs.append("recover does not say run_part1.h5 is a part of an earlier run")
    probs += check_saved(out)
    with h5py.File(out, "r") as f:
        saved = len(f["timestamp"])
    if not 0 < saved < N:
        probs.append(f"the rebuilt file has {saved} events, expected some of the {N} (killed after 3 checkpoints)")
    if f"total {saved} events" not in p.stdout:
        probs.append(f"recover does not report the {saved} events it rebuilt")
    if sha(stale) != stale_sum:
        probs.append("recover changed the earlier run's run_part1.h5")
    probs += sound_after_recover(c, out)
    return probs


def mode_misplaced(c):
    """A part file replaced by a copy of another part of the same run (same run token): check,
    flatten and recover each refuse it, naming the file and the part it says it is."""
    out = c.fresh("misplaced", 5)
    d = os.path.dirname(out)
    shutil.copyfile(os.path.join(d, "run_part0.h5"), os.path.join(d, "run_part1.h5"))
    probs = []
    p = c.tool_run("check", out)
    if p.returncode != 1 or "run_part1.h5' says it is part 0" not in p.stdout + p.stderr:
        probs.append(f"check exited {p.returncode} without naming the copied part")
    flat = os.path.join(d, "flat.h5")
    p = c.tool_run("flatten", out, flat)
    if p.returncode == 0 or "run_part1.h5' says it is part 0" not in p.stderr:
        probs.append(f"flatten exited {p.returncode} without naming the copied part")
    if os.path.exists(flat) or any(n.startswith("flat.h5") for n in os.listdir(d)):
        probs.append("flatten left a file behind")
    p = c.tool_run("recover", out)
    if p.returncode == 0 or "says it is part 0" not in p.stderr:
        probs.append(f"recover exited {p.returncode} without naming the copied part")
    return probs


def mode_flat_stop(c):
    """Options::self_contained (2 servers + 3 clients), the job stopped inside the copy:
    half-way, and once the copy is in place but the parts are still there."""
    probs = []
    flat = {"SMALLDATA_TEST_SELF_CONTAINED": "1"}
    out = c.fresh("flat_stop0", 5, env=dict(flat, SMALLDATA_TEST_STOP_FLATTEN="0"), stopped=True)
    d = os.path.dirname(out)
    names = sorted(os.listdir(d))
    tmps = [n for n in names if n.startswith("run.h5.") and n.endswith(".tmp")]
    if len(tmps) != 2 or sorted(set(names) - set(tmps)) != ["run_part0.h5", "run_part1.h5"]:
        return [f"half-way: the stopped run left {names}, expected the parts and two run.h5.<hex>.tmp"]
    p = c.tool_run("recover", out)
    if p.returncode != 0:
        return [f"half-way: recover exited {p.returncode}"]
    probs += [f"half-way: {x}" for x in check_values(out, True)]
    if "kept from the join's complete" not in p.stdout:
        probs.append("half-way: recover does not say where the summary came from")
    left = sorted(os.listdir(d))
    if left != ["run.h5", "run_part0.h5", "run_part1.h5"]:
        probs.append(f"half-way: recover left {left}")
    probs += sound_after_recover(c, out, "half-way: ")

    out = c.fresh("flat_stop1", 5, env=dict(flat, SMALLDATA_TEST_STOP_FLATTEN="1"), stopped=True)
    d = os.path.dirname(out)
    names = sorted(os.listdir(d))
    if names != ["run.h5", "run_part0.h5", "run_part1.h5"]:
        return probs + [f"in place: the stopped run left {names}, expected run.h5 and its parts"]
    before = sha(out)
    probs += [f"in place, before recover: {x}" for x in check_values(out, True)]
    if virtual_datasets(out):
        probs.append("in place: the copy has virtual datasets")
    p = c.tool_run("recover", out)
    if p.returncode != 0:
        probs.append(f"in place: recover exited {p.returncode}")
    if "self-contained" not in p.stdout:
        probs.append("in place: recover does not say the file is self-contained")
    if sha(out) != before:
        probs.append("in place: recover changed the self-contained file")
    if sorted(os.listdir(d)) != names:
        probs.append(f"in place: recover left {sorted(os.listdir(d))}, expected {names}")
    return probs


def mode_unreadable_crashed(c):
    """A serial file killed after its third checkpoint (status flags set), one of whose
    datasets' object headers is then overwritten: recover cannot read it through, fails
    naming it, and leaves every byte as it was (it once cut such a file to the end its
    superblock gave, losing the rows written since)."""
    out = c.fresh("unreadable_crashed", 1, env={"SMALLDATA_TEST_KILL_CHECKPOINT": "3"}, stopped=True)
    with h5py.File(out, "r", swmr=True) as f:  # the flags are set: read as an SWMR reader
        addr = h5py.h5o.get_info(f["x"].id).addr
    with open(out, "r+b") as f:
        f.seek(addr)
        f.write(b"\xff" * 64)
    before, size = sha(out), os.path.getsize(out)
    p = c.tool_run("recover", out)
    probs = []
    if p.returncode in (0, None) or "run.h5" not in p.stderr:
        probs.append(f"recover exited {p.returncode} or did not name run.h5")
    if sha(out) != before:
        probs.append(f"recover changed the file it could not recover ({size} bytes, now {os.path.getsize(out)})")
    return probs


def mode_concurrent(c):
    """Two runs of one filename at once, as a job array that gives every job the same output
    name makes them: the second used to unlink the first's file (its rows then went into a
    file no name reached). Now the first's claim on its file makes the second an error."""
    probs = []
    for ranks, busy in ((1, "run.h5"), (3, "run_part0.h5")):
        label = "serial" if ranks == 1 else "1 + 2"
        d = os.path.join(c.root, f"concurrent{ranks}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        out, busy = os.path.join(d, "run.h5"), os.path.join(d, busy)
        cmd = [c.write_run, out, str(N)]
        if ranks > 1:
            cmd = [c.mpiexec, "-n", str(ranks)] + cmd
        # paced to last 10-20 s: still running after recover's 5 s wait for a claim to go
        first = subprocess.Popen(cmd, env=dict(os.environ, SMALLDATA_TEST_PACE_US="1000"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            t0 = time.time()
            while not os.path.exists(busy) and first.poll() is None and time.time() - t0 < LIMIT:
                time.sleep(0.01)
            second = run_limited(cmd[:-1] + ["10"], env=os.environ)  # 10 events: its file is not the first's
            rec = c.tool_run("recover", out)
            chk = c.tool_run("check", out if ranks == 1 else busy)
            flat = c.tool_run("flatten", out if ranks == 1 else busy, os.path.join(d, "flat.h5"))
            overlapped = first.poll() is None
            _, err = first.communicate(timeout=LIMIT)
        finally:
            if first.poll() is None:
                first.kill()
        if not overlapped:
            probs.append(f"{label}: the first run ended before the second and recover were done (pace too fast)")
        if second is None or second.returncode != 1 or f"'{busy}'" not in second.stderr \
                or "being written by another process" not in second.stderr:
            probs.append(f"{label}: the second run exited {second.returncode if second else 'never'} without naming "
                         f"{os.path.basename(busy)} as being written: {second.stderr[-600:] if second else ''}")
        if rec.returncode == 0 or "being written" not in rec.stderr:
            probs.append(f"{label}: recover of a file being written exited {rec.returncode}")
        # check and flatten cannot open it: they say it is being written, not "recover it"
        for verb, p in (("check", chk), ("flatten", flat)):
            said = p.stdout + p.stderr
            if p.returncode == 0 or "being written by a running process" not in said or "recover" in said:
                probs.append(f"{label}: {verb} of a file being written exited {p.returncode}: {said[-300:]}")
        if os.path.exists(os.path.join(d, "flat.h5")):
            probs.append(f"{label}: flatten of a file being written left flat.h5")
        if first.returncode != 0:
            probs.append(f"{label}: the first run exited {first.returncode}: {err[-600:]}")
        probs += [f"{label}: {x}" for x in check_values(out, True)]
    # Two serial runs started at the same instant (neither file there yet): they take turns at
    # the directory, so exactly one writes its file and the other is refused.
    d = os.path.join(c.root, "concurrent_start")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    both = os.path.join(d, "run.h5")
    paced = dict(os.environ, SMALLDATA_TEST_PACE_US="300")
    runs = [subprocess.Popen([c.write_run, both, str(n)], env=paced, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for n in (N, N // 2)]
    outs = [r.communicate(timeout=LIMIT) for r in runs]
    codes = [r.returncode for r in runs]
    if sorted(codes) != [0, 1]:
        probs.append(f"two runs started together exited {codes}, expected one 0 and one 1")
    else:
        lost = codes.index(1)
        if "being written by another process" not in outs[lost][1]:
            probs.append(f"the refused run did not say the file is being written: {outs[lost][1][-300:]}")
        with h5py.File(both, "r") as f:
            ts = np.sort(f["timestamp"][:])
        want = (N, N // 2)[codes.index(0)]
        if not np.array_equal(ts, np.arange(want)):
            probs.append(f"the file of the run that went on holds {len(ts)} events, not its {want}")
    # The parallel run's part as a serial run's file: refused, the run reads as before.
    p = run_limited([c.write_run, busy, "10"], env=os.environ)
    if p is None or p.returncode != 1 or "a part file of 'run.h5'" not in p.stderr:
        probs.append(f"a serial run named like a part exited {p.returncode if p else 'never'}: {p.stderr[-400:] if p else ''}")
    probs += [f"after the run named like its part: {x}" for x in check_values(out, True)]
    return probs


def superblock_eof(path):
    """The end of file a version 2 or 3 superblock gives (bytes 28..36)."""
    with open(path, "rb") as f:
        b = f.read(48)
    return int.from_bytes(b[28:36], "little") if b[:8] == b"\x89HDF\r\n\x1a\n" and b[8] >= 2 else 0


def mode_flush_cut(c):
    """A job killed inside HDF5's flush, between the superblock's write (its end of file
    counting the unused rest of a metadata block) and the file's extension to that end: the
    file is shorter than its superblock says and HDF5 refuses to open it (unless as an SWMR
    reader), even with its status flags cleared. Serial and 2
    servers + 3 clients (write_run ends the process there: SMALLDATA_TEST_KILL_IN_FLUSH, the
    close in done(), where the kill test met it). recover extends the file, keeps every
    event its checkpoints made durable (the values right) and check finds it sound; before,
    recover failed and the part's events were lost."""
    probs = []
    for ranks in (1, 5):
        out = c.fresh(f"flush_cut{ranks}", ranks, env={"SMALLDATA_TEST_KILL_IN_FLUSH": "1"}, stopped=True)
        d = os.path.dirname(out)
        files = [out] if ranks == 1 else [os.path.join(d, f"run_part{k}.h5") for k in range(2)]
        short = [os.path.basename(p) for p in files if os.path.exists(p) and os.path.getsize(p) < superblock_eof(p)]
        if not short:
            probs.append(f"{ranks} ranks: no file shorter than its superblock says (the kill missed the flush)")
            continue
        p = c.tool_run("recover", out)
        if p.returncode != 0:
            probs.append(f"{ranks} ranks: recover exited {p.returncode}")
            continue
        for name in short:
            if not any(name in line and "short of its superblock" in line for line in p.stdout.splitlines()):
                probs.append(f"{ranks} ranks: recover does not say {name} was short")
        for path in files:
            if os.path.getsize(path) < superblock_eof(path):
                probs.append(f"{ranks} ranks: {os.path.basename(path)} still shorter than its superblock says")
        probs += [f"{ranks} ranks: {x}" for x in check_saved(out)]
        with h5py.File(out, "r") as f:
            saved = len(f["timestamp"])
        print(f"    {ranks} ranks: short {short}, {saved} of {N} events recovered")
        if saved == 0:
            probs.append(f"{ranks} ranks: no event recovered")
        probs += sound_after_recover(c, out, f"{ranks} ranks: ")
    return probs


MODES = {"clean": mode_clean, "deleted": mode_deleted, "missing": mode_missing, "truncated": mode_truncated,
         "serial": mode_serial, "stale": mode_stale, "var_cut": mode_var_cut,
         "compressed": mode_compressed, "flatten": mode_flatten, "ordered": mode_ordered,
         "ordered_stale": mode_ordered_stale, "rerun_killed": mode_rerun_killed, "misplaced": mode_misplaced, "flat_stop": mode_flat_stop,
         "unreadable_crashed": mode_unreadable_crashed, "concurrent": mode_concurrent, "flush_cut": mode_flush_cut}


def main():
    c = Ctx(*sys.argv[1:5])
    os.makedirs(c.root, exist_ok=True)
    failures = []
    t0 = time.time()
    for name, fn in MODES.items():
        print(f"--- {name}")
        try:
            problems = fn(c)
        except Exception as e:  # noqa: BLE001 - a failed step fails the mode
            problems = [f"{type(e).__name__}: {e}"]
        failures += [f"{name}: {p}" for p in problems]
    finish(failures, len(MODES), t0)


if __name__ == "__main__":
    main()
