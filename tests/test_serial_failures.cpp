// Serial mode: what survives when something goes wrong. Every test provokes one failure
// (a callback that throws, a bad name, an oversized value, a clash found late, a reader
// holding the old file) and then opens the file and checks its rows, not only the error.
#include "smalldata.hpp"

#include "h5read.hpp"

#include "catch_compat.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using smalldata::Errc;

namespace {

#include "test_util.hpp"

std::vector<std::int64_t> iota_except(std::int64_t n, const std::set<std::int64_t>& missing, std::int64_t scale = 1) {
    std::vector<std::int64_t> v;
    for (std::int64_t i = 0; i < n; ++i)
        if (!missing.count(i)) v.push_back(i * scale);
    return v;
}

}  // namespace

TEST_CASE("'%' in the file name and in field names is stored as given", "[serial][names]") {
    // HDF5 reads '%' as a pattern in virtual dataset sources; serial files have none, but
    // both modes must accept the same names (the parallel test checks the joined file).
    const std::string path = fresh("run_100%.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 50; ++i)
            smd.event(i, "load%%", static_cast<double>(i), "eff%b", static_cast<std::int32_t>(i), "g%/x%", 1.5);
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.read<double>("load%%").size() == 50);
    CHECK(f.read<double>("load%%")[49] == 49.0);
    CHECK(f.read<std::int32_t>("eff%b")[7] == 7);
    CHECK(f.read<double>("g%/x%")[0] == 1.5);
}

TEST_CASE("a name with a NUL byte is Errc::name at event(); the rest of the event and the file are kept",
          "[serial][names][errors]") {
    const std::string path = fresh("nul_name.h5");
    Thrown t;
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 10; ++i) {
            smd.event(i, "x", static_cast<double>(i));
            if (i == 5) t = thrown([&] { smd.event(i, std::string("a\0b", 3), 1.0); });
        }
        smd.done();
    }
    CHECK(t.code == "name");
    CHECK_THAT(t.what, Catch::Contains("NUL"));
    h5r::File f(path);
    CHECK(f.read<double>("x") == std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(f.children("/") == std::vector<std::string>{"timestamp", "x"});
}

TEST_CASE("a value larger than 2 GiB, or whose shape overflows, is Errc::usage naming the field", "[serial][errors]") {
    // No allocation is attempted: the shape alone is refused. Batched (callbacks) and
    // direct (no callbacks) modes alike; the run goes on and the file is complete.
    for (const bool batched : {false, true}) {
        CAPTURE(batched);
        const std::string path = fresh("huge_value.h5");
        std::vector<Thrown> t;
        {
            smalldata::Options o = file_opts(path);
            if (batched) o.callbacks.push_back([](const smalldata::Event&) {});
            smalldata::SmallData smd(o);
            const std::int8_t byte = 0;
            for (std::int64_t i = 0; i < 100; ++i) {
                smd.event(i, "x", static_cast<double>(i));
                if (i == 10) {
                    // 2^64 - 1 elements, 0 after wrapping, and 4 GiB: all refused.
                    t.push_back(thrown([&] { smd.event(i, "wraps", smalldata::view(&byte, {(1ull << 32) + 1, (1ull << 32) - 1})); }));
                    t.push_back(thrown([&] { smd.event(i, "zero", smalldata::view(&byte, {1ull << 32, 1ull << 32})); }));
                    t.push_back(thrown([&] { smd.event(i, "big", smalldata::view(&byte, {1ull << 32})); }));
                }
            }
            smd.done();
        }
        REQUIRE(t.size() == 3);
        for (const Thrown& e : t) CHECK(e.code == "usage");
        CHECK_THAT(t[0].what, Catch::Contains("'wraps'"));
        CHECK_THAT(t[1].what, Catch::Contains("'zero'"));
        CHECK_THAT(t[2].what, Catch::Contains("'big'"));
        h5r::File f(path);
        CHECK(f.read<double>("x").size() == 100);
        CHECK(f.children("/") == std::vector<std::string>{"timestamp", "x"});
    }
}

TEST_CASE("a callback that throws while values outgrow the batch never corrupts the stream", "[serial][callbacks][errors]") {
    // Each event is larger than half a batch (a 600-byte vector, batch_bytes 1024), so
    // every batch holds one event and values always outgrow the buffer: the batch before
    // them leaves at the next event boundary, never from inside put(). The callback throws
    // once, for the event with index 3. Its batch (event 3) is shipped when event 5 starts,
    // so event(5) throws and records nothing (as any event() call that hands over a
    // failing batch): events 3 and 5 are lost, nothing else, and no later call sees a
    // protocol error. Timestamps i << 32 make a misread entry count
    // visible as a wrong field id (the old failure).
    for (const std::int64_t scale : {std::int64_t(1), std::int64_t(1) << 32}) {
        CAPTURE(scale);
        const std::string path = fresh("put_outgrows.h5");
        std::vector<Thrown> errors;
        {
            smalldata::Options o = file_opts(path);
            o.batch_bytes = 1024;
            bool once = false;
            o.callbacks.push_back([&](const smalldata::Event& ev) {
                if (ev.timestamp() == 3 * scale && !once) {
                    once = true;
                    throw std::runtime_error("callback failed at 3");
                }
            });
            smalldata::SmallData smd(o);
            for (std::int64_t i = 0; i < 200; ++i) {
                std::vector<double> v(75, static_cast<double>(i));
                const Thrown t = thrown([&] { smd.event(i * scale, "v", v, "n", i); });
                if (t.code != "none") errors.push_back(t);
            }
            const Thrown t = thrown([&] { smd.done(); });
            CHECK(t.code == "none");
        }
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].what == "callback failed at 3");
        h5r::File f(path);
        const auto ts = f.read<std::int64_t>("timestamp");
        CHECK(mismatch(ts, iota_except(200, {3, 5}, scale)) == "");
        const auto n = f.read<std::int64_t>("n");
        const auto v = f.read<double>("v");
        REQUIRE(n.size() == ts.size());
        REQUIRE(v.size() == 75 * ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) bad += n[r] * scale != ts[r] || v[75 * r + 74] != static_cast<double>(n[r]);
        CHECK(bad == 0);
    }
}

TEST_CASE("a new field whose definition does not fit the batch, next to a throwing callback", "[serial][callbacks][errors]") {
    // The definition of a field with a 900-byte name arrives when the batch is nearly
    // full; the callback throws at the boundary right after. The field is defined exactly
    // once in the stream and its rows land right. Batches here: {0,1,2}, {3,4} (the
    // definition at event 5 outgrows the buffer), shipped when event 6 starts: event 4's
    // callback throws, so event 4 and event 6 (whose event() call shipped it) are lost.
    const std::string path = fresh("definition_outgrows.h5");
    const std::string long_name = "g/" + std::string(900, 'n');
    std::vector<Thrown> errors;
    {
        smalldata::Options o = file_opts(path);
        o.batch_bytes = 1024;
        bool once = false;
        o.callbacks.push_back([&](const smalldata::Event& ev) {
            if (ev.timestamp() == 4 && !once) {
                once = true;
                throw std::runtime_error("callback failed at 4");
            }
        });
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < 40; ++i) {
            const Thrown t = thrown([&] {
                smd.event(i, "a", std::vector<std::uint8_t>(300, static_cast<std::uint8_t>(i)));
                if (i >= 5) smd.event(i, long_name, static_cast<std::int32_t>(i));
            });
            if (t.code != "none") errors.push_back(t);
        }
        CHECK(thrown([&] { smd.done(); }).code == "none");
    }
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].what == "callback failed at 4");
    h5r::File f(path);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto ln = f.read<std::int32_t>(long_name);
    const auto a = f.read<std::uint8_t>("a");
    REQUIRE(ln.size() == ts.size());
    REQUIRE(a.size() == 300 * ts.size());
    std::set<std::int64_t> seen(ts.begin(), ts.end());
    CHECK(seen.size() == ts.size());
    CHECK(seen.count(4) == 0);
    std::size_t bad = 0;
    for (std::size_t r = 0; r < ts.size(); ++r) {
        bad += ts[r] >= 5 ? ln[r] != ts[r] : ln[r] != -99999;
        bad += a[300 * r] != static_cast<std::uint8_t>(ts[r]);
    }
    CHECK(bad == 0);
    CHECK(mismatch(ts, iota_except(40, {4, 6})) == "");
}

TEST_CASE("timestamp order is checked after a callback exception too", "[serial][callbacks][errors]") {
    const std::string path = fresh("order_after_throw.h5");
    {
        smalldata::Options o = file_opts(path);
        o.batch_size = 16;
        o.callbacks.push_back([](const smalldata::Event& ev) {
            if (ev.timestamp() == 50) throw std::runtime_error("failed at 50");
        });
        smalldata::SmallData smd(o);
        std::int64_t i = 0;
        for (; i < 64; ++i) smd.event(i, "x", static_cast<double>(i));
        CHECK(thrown([&] { smd.event(64, "x", 64.0); }).what == "failed at 50");  // ships events 48-63
        CHECK(thrown([&] { smd.event(3, "x", 3.0); }).code == "timestamp_order");
        smd.event(65, "x", 65.0);
        smd.done();
    }
    h5r::File f(path);
    CHECK(mismatch(f.read<std::int64_t>("timestamp"), iota_except(66, {50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64})) == "");
}

TEST_CASE("a callback that throws during done() loses only the rest of its batch: rows aligned, summary written",
          "[serial][callbacks][errors][done]") {
    // The last batch is shipped by done() itself. The writer is finished whatever happens:
    // the events before the failing one are written, every aligned dataset has the same
    // length, the summary is there, and done() then throws the callback's error.
    const std::string path = fresh("throw_in_done.h5");
    Thrown t;
    {
        smalldata::Options o = file_opts(path);
        o.batch_size = 100000;  // one batch: shipped by done()
        o.cache_size = 64;
        o.callbacks.push_back([](const smalldata::Event& ev) {
            if (ev.timestamp() == 950) throw std::runtime_error("failed at 950");
        });
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < 1000; ++i)
            smd.event(i, "n", i, "x", static_cast<double>(i), "v", std::array<float, 100>{static_cast<float>(i)});
        smd.save_summary("total", 7.0);
        t = thrown([&] { smd.done(); });
    }
    CHECK(t.what == "failed at 950");
    h5r::File f(path);
    const auto ts = f.read<std::int64_t>("timestamp");
    CHECK(mismatch(ts, iota_except(950, {})) == "");
    CHECK(mismatch(f.read<std::int64_t>("n"), ts) == "");
    CHECK(f.read<double>("x").size() == 950);
    CHECK(f.dims("v") == std::vector<hsize_t>{950, 100});
    CHECK(f.scalar<double>("total") == 7.0);
}

TEST_CASE("a file held open by a reader is not destroyed by the next run", "[serial][file]") {
    // The old file is unlinked, not truncated: the reader keeps reading the old data, the
    // new run writes a new file under the same name.
    const std::string path = fresh("held_open.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 100; ++i) smd.event(i, "old", static_cast<double>(i));
        smd.done();
    }
    h5r::File reader(path);
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 10; ++i) smd.event(i, "new", static_cast<double>(i));
        smd.done();
    }
    CHECK(reader.read<double>("old").size() == 100);
    CHECK(reader.read<double>("old")[99] == 99.0);
    h5r::File now(path);
    CHECK(now.children("/") == std::vector<std::string>{"new", "timestamp"});
    CHECK(now.read<double>("new").size() == 10);
}
