#!/usr/bin/python3
"""Builds and runs a user's program (consumer.cpp) against smalldata in the three ways the
README gives, in a fresh temporary directory:

  subproject  a Meson project with subprojects/smalldata.wrap and the source tree copied to
              subprojects/smalldata, configured with Catch2 hidden (pkg-config wrapper that
              refuses it, no CMake): the subproject must build only the library, optimised
              although the consumer's build type is debug
  pkg-config  `meson install --destdir D` of this build, then c++ $(pkg-config --cflags --libs smalldata)
  cmake       the same install, then find_package(smalldata) with CMAKE_PREFIX_PATH=D<prefix>;
              and with the other MPI's wrapper (Debian has both), which must be refused

Each consumer writes a file in serial mode and reads it back with the HDF5 C API. Every
command is printed before it runs; any failure fails the test (exit 1).

Usage: run_consumers.py --source-root DIR --build-root DIR --prefix P --libdir L
                        --includedir I --bindir B [--sanitize LIST] [--mpi NAME] -- CXX...
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Failed(Exception):
    pass


def run(cmd, cwd=None, env=None, timeout=300):
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + (" (in %s)" % cwd if cwd else ""), flush=True)
    start = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    out = proc.stdout
    if proc.returncode != 0:
        print(out, end="")
        raise Failed("exit status %d: %s" % (proc.returncode, cmd[0]))
    print("   ok (%.1f s)" % (time.monotonic() - start), flush=True)
    return out


def run_fails(cmd, timeout=300):
    """Runs cmd, which must fail; returns its output."""
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + "   (must fail)", flush=True)
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if proc.returncode == 0:
        print(proc.stdout, end="")
        raise Failed("succeeded, but must fail: %s" % cmd[0])
    print("   failed, as it must (exit status %d)" % proc.returncode, flush=True)
    return proc.stdout


def check(cond, what):
    print(("   ok   " if cond else "   FAIL ") + what, flush=True)
    if not cond:
        raise Failed(what)


def run_consumer(exe, tmp, name):
    h5 = os.path.join(tmp, name + ".h5")
    out = run([exe, h5])
    print("   " + out.strip())
    check(os.path.isfile(h5), "%s wrote %s" % (name, h5))
    return h5


def build_dir_ignore(src, names):
    """copytree filter: no .git, no build directories (any directory with meson-private)."""
    skip = {".git"}
    for n in names:
        if os.path.isdir(os.path.join(src, n, "meson-private")) or os.path.isfile(os.path.join(src, n, "CMakeCache.txt")):
            skip.add(n)
    return skip & set(names)


def subproject_case(args, tmp, sanitize):
    print("=== subproject: dependency('smalldata') through subprojects/smalldata.wrap", flush=True)
    proj = os.path.join(tmp, "meson-consumer")
    shutil.copytree(os.path.join(HERE, "meson"), proj)
    shutil.copy(os.path.join(HERE, "consumer.cpp"), proj)
    shutil.copytree(args.source_root, os.path.join(proj, "subprojects", "smalldata"), ignore=build_dir_ignore)

    # Catch2 hidden: pkg-config refuses it, and there is no CMake to find it with.
    real_pkgconfig = shutil.which("pkg-config")
    if real_pkgconfig is None:
        raise Failed("pkg-config not found")
    wrapper = os.path.join(tmp, "pkg-config-wrapper")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\ncase "$*" in *[Cc]atch*) exit 1;; esac\nexec %s "$@"\n' % shlex.quote(real_pkgconfig))
    os.chmod(wrapper, 0o755)
    hidden = subprocess.run([wrapper, "--exists", "catch2"]).returncode
    check(hidden != 0, "the pkg-config wrapper hides catch2")
    native = os.path.join(tmp, "native.ini")
    with open(native, "w") as f:
        f.write("[binaries]\npkgconfig = '%s'\ncmake = '/bin/false'\n" % wrapper)

    with open(os.path.join(proj, "subprojects", "smalldata.wrap")) as f:
        wrap = f.read()
    with open(os.path.join(args.source_root, "README.md")) as f:
        check("```ini\n" + wrap + "```" in f.read(), "README.md shows this smalldata.wrap")

    build = os.path.join(proj, "build")
    setup = ["meson", "setup", build, proj, "--native-file", native, "--wrap-mode=nodownload",
             "--force-fallback-for=smalldata"]
    if sanitize:
        setup += ["-Db_sanitize=" + sanitize, "-Db_lundef=false"]
    run(setup)
    with open(os.path.join(build, "meson-logs", "meson-log.txt")) as f:
        log = f.read()
    # "catch2", not "catch": the C++ headers preprocessed for a define (mpi.h) hold catch(...).
    check(re.search("catch2", log, re.I) is None, "the configure log does not mention Catch2")
    check(re.search(r"^Program .*python", log, re.M | re.I) is None, "the configure looks for no Python")
    check("Executing subproject smalldata" in log, "smalldata was configured as a subproject")

    targets = json.loads(run(["meson", "introspect", "--targets", build]))
    sub = [t for t in targets if t.get("subproject") == "smalldata"]
    check([(t["name"], t["type"]) for t in sub] == [("smalldata", "static library")],
          "the subproject defines only the library: %s" % [(t["name"], t["type"]) for t in sub])
    def params(t):
        return [p for s in t.get("target_sources", []) for p in s.get("parameters", [])]
    lib_params = params(sub[0])
    own = [t for t in targets if t["name"] == "consumer"]
    check("-O2" in lib_params and "-O0" not in lib_params,
          "the library is compiled with -O2 (%s)" % [p for p in lib_params if p.startswith("-O")])
    check(len(own) == 1 and "-O0" in params(own[0]),
          "in a consumer built with -O0 (%s)" % [p for t in own for p in params(t) if p.startswith("-O")])

    run(["meson", "compile", "-C", build, "-j", "1"], timeout=600)
    run_consumer(os.path.join(build, "consumer"), tmp, "subproject")


def install_case(args, tmp):
    print("=== install: meson install --destdir", flush=True)
    destdir = os.path.join(tmp, "destdir")
    run(["meson", "install", "-C", args.build_root, "--no-rebuild", "--destdir", destdir])
    root = destdir + args.prefix  # the prefix is absolute

    def under(d, *rest):  # d as Meson gives it: relative to the prefix, or absolute
        return os.path.join(destdir + (d if os.path.isabs(d) else os.path.join(args.prefix, d)), *rest)
    files = {
        "header": under(args.includedir, "smalldata.hpp"),
        "library": under(args.libdir, "libsmalldata.a"),
        "tool": under(args.bindir, "smalldata"),
        "pkg-config file": under(args.libdir, "pkgconfig", "smalldata.pc"),
        "CMake config": under(args.libdir, "cmake", "smalldata", "smalldataConfig.cmake"),
        "CMake version file": under(args.libdir, "cmake", "smalldata", "smalldataConfigVersion.cmake"),
    }
    for what, path in files.items():
        check(os.path.isfile(path), "installed %s: %s" % (what, os.path.relpath(path, destdir)))
    return root, files


def pkgconfig_case(args, tmp, root, files, cxx, sanitize_flags):
    print("=== pkg-config: c++ consumer.cpp $(pkg-config --cflags --libs smalldata)", flush=True)
    pcdir = os.path.dirname(files["pkg-config file"])
    with open(files["pkg-config file"]) as f:
        pc = f.read()
    print(pc, end="")
    if not re.search(r"^prefix=\$\{pcfiledir\}", pc, re.M):
        # A build directory configured before pkgconfig.relocatable=true: point a copy at D.
        print("   note: smalldata.pc is not relocatable; using a copy with prefix=" + root)
        pcdir = os.path.join(tmp, "pkgconfig")
        os.makedirs(pcdir)
        with open(os.path.join(pcdir, "smalldata.pc"), "w") as f:
            f.write(re.sub(r"^prefix=.*$", "prefix=" + root, pc, count=1, flags=re.M))
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = pcdir + (os.pathsep + env["PKG_CONFIG_PATH"] if env.get("PKG_CONFIG_PATH") else "")
    flags = run(["pkg-config", "--cflags", "--libs", "smalldata"], env=env).split()
    print("   " + " ".join(flags))
    check("-lsmalldata" in flags, "the flags link libsmalldata")
    check(any(f.startswith("-I") and os.path.realpath(f[2:]) == os.path.realpath(os.path.dirname(files["header"]))
              for f in flags), "the flags include the installed header's directory")
    exe = os.path.join(tmp, "pkgconfig-consumer")
    run(cxx + ["-std=c++17", "-O0"] + sanitize_flags + [os.path.join(HERE, "consumer.cpp"), "-o", exe] + flags,
        timeout=300)
    h5 = run_consumer(exe, tmp, "pkgconfig")
    run([files["tool"], "check", h5])  # the installed tool works on the file too


def cmake_case(args, tmp, root, cxx, sanitize_flags):
    print("=== cmake: find_package(smalldata), target smalldata::smalldata", flush=True)
    proj = os.path.join(tmp, "cmake-consumer")
    shutil.copytree(os.path.join(HERE, "cmake"), proj)
    shutil.copy(os.path.join(HERE, "consumer.cpp"), proj)
    build = os.path.join(proj, "build")
    cfg = ["cmake", "-S", proj, "-B", build, "-DCMAKE_PREFIX_PATH=" + root, "-DCMAKE_BUILD_TYPE=Debug"]
    if len(cxx) == 1:  # the compiler of this build (not a launcher such as ccache)
        cfg += ["-DCMAKE_CXX_COMPILER=" + (shutil.which(cxx[0]) or cxx[0])]
    if sanitize_flags:
        cfg += ["-DCMAKE_CXX_FLAGS=" + " ".join(sanitize_flags)]
    run(cfg)
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        cache = f.read()
    m = re.search(r"^smalldata_DIR:PATH=(.*)$", cache, re.M)
    check(m is not None and os.path.realpath(m.group(1)).startswith(os.path.realpath(root)),
          "smalldata_DIR is the installed package (%s)" % (m.group(1) if m else None))
    run(["cmake", "--build", build, "-j", "1"], timeout=300)
    run_consumer(os.path.join(build, "consumer"), tmp, "cmake")

    # Another kind of MPI than the library's is refused at configure time, by name (linked,
    # the program would crash in its first MPI call).
    other = {"MPICH": ("Open MPI", "mpicxx.openmpi"), "Open MPI": ("MPICH", "mpicxx.mpich")}.get(args.mpi)
    if other is None or shutil.which(other[1]) is None:
        print("   note: no MPI of another kind here (%s); the refusal is not checked"
              % (other[1] if other else "this build's MPI is " + args.mpi))
        return
    print("=== cmake: find_package(smalldata) with %s's wrapper (%s) is refused" % other, flush=True)
    build2 = os.path.join(proj, "build-other-mpi")
    cfg2 = [build2 if a == build else a for a in cfg]
    out = run_fails(cfg2 + ["-DMPI_CXX_COMPILER=" + shutil.which(other[1])])
    want = "smalldata was built against %s, but find_package(MPI) found %s" % (args.mpi, other[0])
    check(want in " ".join(out.split()), "cmake says: " + want)


def main():
    ap = argparse.ArgumentParser()
    for a in ["source-root", "build-root", "prefix", "libdir", "includedir", "bindir"]:
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--sanitize", default="none")
    ap.add_argument("--mpi", default="other", help="the MPI the build uses: MPICH, Open MPI or other")
    ap.add_argument("cxx", nargs="+")
    args = ap.parse_args()
    # b_sanitize as Meson prints it: none, address,undefined, or a list ['address', ...].
    sanitize = ",".join(re.findall(r"[a-z]+", args.sanitize))
    sanitize = "" if sanitize in ("none", "") else sanitize
    sanitize_flags = ["-fsanitize=" + sanitize] if sanitize else []
    for tool in ["meson", "pkg-config", "cmake"]:
        if shutil.which(tool) is None:
            print("FAIL %s not found (a prerequisite, README)" % tool)
            return 1

    tmp = tempfile.mkdtemp(prefix="smalldata-consumers-")
    start = time.monotonic()
    try:
        subproject_case(args, tmp, sanitize)
        root, files = install_case(args, tmp)
        pkgconfig_case(args, tmp, root, files, args.cxx, sanitize_flags)
        cmake_case(args, tmp, root, args.cxx, sanitize_flags)
    except (Failed, subprocess.TimeoutExpired) as e:
        print("FAIL " + str(e))
        print("(files kept in %s)" % tmp)
        return 1
    print("all three consumers built and ran (%.0f s)" % (time.monotonic() - start))
    if os.environ.get("SMALLDATA_KEEP_TEST_FILES"):
        print("files kept in " + tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
