#!/usr/bin/env python3
"""Compile-fail tests for smalldata.hpp: misuse must be a compile-time error with our message.

Usage (tests/meson.build runs it):
    compile_fail.py --include SRC_ROOT [--flag FLAG ...] -- COMPILER [ARGS ...]

Each snippet is compiled with `COMPILER ARGS -std=c++17 -fsyntax-only <warning flags>
-I SRC_ROOT FLAGS`. A negative snippet passes when the compiler fails AND its output holds
the expected static_assert text (so it fails for the right reason). The positive control
must compile cleanly with the same flags (-Werror included), so the test cannot pass
because of a broken setup (wrong include path, missing <mpi.h>, ...).
"""
import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile

PRELUDE = r"""
#include "smalldata.hpp"
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>
struct Point { double x, y; };
void use(smalldata::SmallData& smd) {
"""
POSTLUDE = "\n}\n"

POSITIVE = r"""
    const double img[4] = {1, 2, 3, 4};
    smd.event(1);
    smd.event(1, "a", 1.0, "b", 2.0f, "c", std::int8_t(1), "d", std::uint64_t(2), "e", true);
    smd.event(2, std::string("s"), 1, std::string_view("t"), 2LL, "u", 3ULL);
    smd.event(3, "v", std::vector<std::int16_t>{1, 2}, "w", std::array<bool, 2>{true, false});
    smd.event(3, "vb", std::vector<bool>{true, false});
    smd.event(std::uint32_t(4), "img", smalldata::view(img, {2, 2}));
    smd.save_summary("n", smd.sum(std::int64_t(1)), "m", smd.max(std::vector<double>{1}));
    float buf[6] = {};
    (void)smd.sum(buf, {2, 3});
    (void)smd.max(buf, std::vector<std::uint64_t>{6}, false);
    smd.save_summary("s", std::string("x"), "o", std::optional<double>{}, "c", "literal");
    (void)smd.min(std::optional<std::array<float, 2>>{});
    smd.save_summary("vb", std::vector<bool>{true}, "ovb", std::optional<std::vector<bool>>{});
    smd.save_attribute("", "run", 7);
    smd.save_attribute("x", "units", "mm");
    smd.save_attribute("x", "u", std::string("s"));
    smd.save_attribute("x", "v", std::string_view("s"));
    smd.save_attribute("x", "b", std::vector<bool>{true});
    smd.save_attribute("x", "a", std::array<float, 2>{1, 2});
    smd.save_attribute("x", "i", smalldata::view(img, {2, 2}));
"""

# name -> (body, text the compiler output must contain)
NEGATIVE = {
    "odd_count": ('smd.event(1, "a", 1.0, "b");', "name/value pairs"),
    "odd_count_single": ('smd.event(1, "a");', "name/value pairs"),
    "odd_summary": ('smd.save_summary("a", 1.0, "b");', "name/value pairs"),
    "string_value": ('smd.event(1, "s", std::string("x"));', "unsupported value type"),
    "struct_value": ('smd.event(1, "p", Point{1, 2});', "unsupported value type"),
    "plain_char_value": ("smd.event(1, \"c\", 'x');", "unsupported value type"),
    "long_double_value": ('smd.event(1, "l", 1.0L);', "unsupported value type"),
    "nested_vector_value": ('smd.event(1, "n", std::vector<std::vector<double>>{});', "unsupported value type"),
    "float_timestamp": ('smd.event(1.5, "a", 1.0);', "timestamp must be an integer"),
    "bool_timestamp": ('smd.event(true, "a", 1.0);', "timestamp must be an integer"),
    "name_not_string": ('smd.event(1, 5, 1.0);', "field name must be a string"),
    "summary_struct": ('smd.save_summary("p", Point{1, 2});', "unsupported value type"),
    "reduce_bool": ("(void)smd.sum(true);", "reductions take arithmetic scalars"),
    "reduce_vector_bool": ("(void)smd.sum(std::vector<bool>{true});", "reductions take arithmetic scalars"),
    "attribute_struct": ('smd.save_attribute("x", "p", Point{1, 2});', "save_attribute: unsupported value type"),
    "attribute_char": ("smd.save_attribute(\"x\", \"c\", 'x');", "save_attribute: unsupported value type"),
    "attribute_optional": ('smd.save_attribute("x", "o", std::optional<double>{1.0});',
                           "save_attribute: unsupported value type"),
    "reduce_string": ('(void)smd.sum(std::string("x"));', "reductions take arithmetic scalars"),
    "reduce_in_place_const": ("const float c[4] = {}; (void)smd.sum(c, {2, 2});", "need a mutable buffer"),
    "reduce_in_place_bool": ("bool b[4] = {}; (void)smd.min(b, {4});", "in-place reductions take a buffer"),
}

WARNINGS = ["-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Werror"]


def compile_snippet(cmd, body, workdir, name):
    path = os.path.join(workdir, name + ".cpp")
    with open(path, "w") as f:
        f.write(PRELUDE + body + POSTLUDE)
    proc = subprocess.run(cmd + [path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.returncode, proc.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--include", action="append", default=[], help="include directory (repeatable)")
    ap.add_argument("--flag", action="append", default=[], help="extra compiler flag (repeatable)")
    ap.add_argument("--only", action="append", default=[], help="run only these snippets")
    ap.add_argument("compiler", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    compiler = [c for c in args.compiler if c != "--"]
    if not compiler:
        ap.error("no compiler given")
    cmd = compiler + ["-std=c++17", "-fsyntax-only"] + WARNINGS
    cmd += ["-I" + d for d in args.include] + [f for f in args.flag if f]

    failures = []
    with tempfile.TemporaryDirectory(prefix="smalldata-compile-fail-") as tmp:
        jobs = {"positive_control": (POSITIVE, None)}
        jobs.update(NEGATIVE)
        if args.only:
            jobs = {k: v for k, v in jobs.items() if k in args.only or k == "positive_control"}
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            futures = {name: pool.submit(compile_snippet, cmd, body, tmp, name) for name, (body, _) in jobs.items()}
            for name, (body, expect) in jobs.items():
                rc, out = futures[name].result()
                if expect is None:
                    ok = rc == 0 and "error" not in out and "warning" not in out
                    why = "compiles cleanly" if ok else "did not compile cleanly (rc %d)" % rc
                else:
                    ok = rc != 0 and expect in out and "static assert" in out.replace("static_assert", "static assert")
                    if ok:
                        why = "fails with '%s'" % expect
                    elif rc == 0:
                        why = "COMPILED, but must fail with '%s'" % expect
                    else:
                        why = "failed, but without the static_assert text '%s'" % expect
                print("%-4s %-22s %s" % ("ok" if ok else "FAIL", name, why))
                if not ok:
                    failures.append(name)
                    print("     snippet: " + body.strip().replace("\n", "\n              "))
                    print("     compiler output (first 40 lines):")
                    for line in out.splitlines()[:40]:
                        print("       " + line)
    print("command: " + " ".join(cmd) + " <snippet>.cpp")
    if failures:
        print("%d of %d compile checks failed: %s" % (len(failures), len(jobs), ", ".join(failures)))
        return 1
    print("all %d compile checks passed" % len(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
