// Serial mode: the writer (section 13, [>>impl-writer]) under pressure. The memory budget
// of the column caches (Options::cache_memory), chunk sizes after a gap, a write error
// followed by more events, a full disk (a small tmpfs, when this process may mount one),
// stats() while the write thread runs, 0-byte rows, Share at the int64 limits, bool arrays
// in a callback. Every test reads its file back through h5read.hpp.
//
// This file compiles the implementation itself (SMALLDATA_IMPLEMENTATION), so that the
// memory tests can drive smalldata::detail::Writer directly and read its cache counters.
// Every symbol of the library is then defined here, and the linker takes nothing from the
// library archive.
#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"

#include "h5read.hpp"
#include "rss.hpp"

#include "catch_compat.hpp"

#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using smalldata::DType;
using smalldata::Errc;

namespace {

#include "test_util.hpp"

constexpr std::size_t MiB = std::size_t(1) << 20;

// ---------------------------------------------------------------------------- helpers
// A field of the writer, as the decoder would define it.
smalldata::detail::FieldMeta meta(const std::string& name, DType t, std::uint64_t elements) {
    smalldata::detail::FieldMeta m;
    m.name = name;
    m.dtype = t;
    if (elements != 1) {
        m.shape.rank = 1;
        m.shape.dims[0] = elements;
    }
    m.bytes = static_cast<std::size_t>(elements) * smalldata::dtype_size(t);
    return m;
}

// The value of field k, event e, element j in the memory tests.
float spectrum_value(std::size_t k, std::uint64_t e, std::size_t j) {
    return static_cast<float>((k * 7 + e * 3 + j) % 100003);
}

// Options writing `path`, with or without the write thread.
smalldata::Options thread_opts(const std::string& path, int thread) {
    smalldata::Options o = file_opts(path);
    o.write_thread = thread;
    return o;
}

// Every aligned dataset of the file has `rows` rows.
void check_lengths(const h5r::File& f, const std::vector<std::string>& names, hsize_t rows) {
    for (const std::string& n : names) {
        CAPTURE(n);
        const auto d = f.dims(n);
        REQUIRE(!d.empty());
        CHECK(d[0] == rows);
    }
}

// A tmpfs of `mib` MiB mounted at a fresh directory for the scope of the object (needs
// root, or CAP_SYS_ADMIN). ok() is false when mounting is not permitted here.
class SmallDisk {
public:
    SmallDisk(const std::string& dir, int mib) : dir_(dir) {
        std::filesystem::create_directories(dir_);
        const std::string opts = "size=" + std::to_string(mib) + "m";
        ok_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    }
    ~SmallDisk() {
        if (ok_) ::umount2(dir_.c_str(), MNT_DETACH);  // a crash before this leaves it mounted
    }
    SmallDisk(const SmallDisk&) = delete;
    SmallDisk& operator=(const SmallDisk&) = delete;
    bool ok() const { return ok_; }
    std::string path(const std::string& name) const { return dir_ + "/" + name; }

private:
    std::string dir_;
    bool ok_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------- 1. memory
TEST_CASE("peak memory of a run with many large fields stays near cache_memory", "[serial][writer][memory]") {
    // The whole library, measured from outside: the peak resident memory of this process
    // during a run of 200 fields of 1 KiB x 1100 events. Without a budget the caches alone
    // took 1.6 GB (3.2 GB with the write thread). First in this file, so that little freed
    // memory is there for malloc to reuse (which would hide growth).
    if (rss::sanitized) {
        WARN("SKIP: built with a sanitizer, which multiplies memory use; the RSS limit is not checked");
        return;
    }
    if (!rss::reset_peak() || rss::peak() == 0) {
        WARN("SKIP: the peak resident memory cannot be reset here (/proc/self/clear_refs)");
        return;
    }
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        const std::string path = fresh("mem_rss.h5");
        smalldata::Options o = thread_opts(path, thread);
        o.cache_memory = 32 * MiB;
        std::vector<float> row(256);
        std::vector<std::string> names;
        for (int k = 0; k < 200; ++k) names.push_back("s" + std::to_string(k));
        REQUIRE(rss::reset_peak());
        const std::size_t before = rss::peak();
        {
            smalldata::SmallData smd(o);
            for (std::int64_t e = 0; e < 1100; ++e) {
                for (int k = 0; k < 200; ++k) {
                    row.assign(row.size(), static_cast<float>(e + k));
                    smd.event(e, names[static_cast<std::size_t>(k)], row);
                }
            }
            smd.done();
        }
        const std::size_t grew = rss::peak() - before;
        CAPTURE(grew / MiB);
        CHECK(grew <= o.cache_memory + 96 * MiB);  // the caches, and HDF5's own memory
        h5r::File file(path);
        const auto v = file.read_rows<float>("s199", 1099, 1);
        CHECK(v[255] == static_cast<float>(1099 + 199));
    }
}

TEST_CASE("the caches of one writer stay within cache_memory, whatever the number of fields",
          "[serial][writer][memory]") {
    // 200 fields of 1 KiB (256 floats): the full cache of each would be 8 MiB (1.6 GB in
    // all). With a 16 MiB budget the caches must stop growing and write out sooner.
    for (const bool thread : {false, true}) {
        for (const std::size_t cap : {16 * MiB, std::size_t(256) * MiB}) {
            CAPTURE(thread, cap);
            const std::string path = fresh("mem_spectra.h5");
            smalldata::Options o;
            o.cache_memory = cap;
            constexpr std::size_t fields = 200, elements = 256;
            constexpr std::uint64_t events = 1100;
            std::size_t peak = 0;
            {
                smalldata::detail::Writer w(path, o, thread);
                std::vector<smalldata::detail::WField*> f;
                for (std::size_t k = 0; k < fields; ++k)
                    f.push_back(w.field(w.field_index(meta("s" + std::to_string(k), DType::f32, elements), "the test")));
                std::vector<float> row(elements);
                for (std::uint64_t e = 0; e < events; ++e) {
                    for (std::size_t k = 0; k < fields; ++k) {
                        for (std::size_t j = 0; j < elements; ++j) row[j] = spectrum_value(k, e, j);
                        w.put(*f[k], reinterpret_cast<const unsigned char*>(row.data()));
                    }
                    w.end_event(static_cast<std::int64_t>(e));
                    peak = std::max(peak, w.cache_bytes());
                }
                w.finish(nullptr);
                CHECK(w.cache_peak_bytes() >= peak);
                peak = w.cache_peak_bytes();
                // The write thread's counters: the full caches went through it, each once.
                const auto q = w.write_queue_counters();
                CHECK((q.written > 0) == thread);
                CHECK(q.queued == q.written);
                CHECK(q.failed == 0);
                CHECK(q.bytes <= w.payload_bytes());
                CHECK((q.bytes > 0) == thread);
            }
            CHECK(peak <= cap);
            // Caches grow with the rows seen: 1100 rows of 1 KiB need 2 MiB per field at most.
            CHECK(peak <= fields * 2 * MiB + MiB);
            h5r::File file(path);
            CHECK(file.dims("timestamp") == std::vector<hsize_t>{events});
            std::size_t bad = 0;
            for (std::size_t k = 0; k < fields; k += 13) {
                const auto v = file.read<float>("s" + std::to_string(k));
                REQUIRE(v.size() == events * elements);
                for (std::uint64_t e = 0; e < events; ++e)
                    for (std::size_t j = 0; j < elements; j += 51)
                        bad += v[e * elements + j] != spectrum_value(k, e, j);
            }
            CHECK(bad == 0);
        }
    }
}

TEST_CASE("5000 scalar fields: caches start small and stay within cache_memory", "[serial][writer][memory]") {
    // Each full cache would be 8192 rows (64 KiB, 320 MB in all); 250 events need a few KiB.
    for (const bool thread : {false, true}) {
        for (const std::size_t cap : {8 * MiB, std::size_t(256) * MiB}) {
            CAPTURE(thread, cap);
            const std::string path = fresh("mem_scalars.h5");
            smalldata::Options o;
            o.cache_memory = cap;
            constexpr std::size_t fields = 5000;
            constexpr std::uint64_t events = 250;
            std::size_t peak = 0;
            {
                smalldata::detail::Writer w(path, o, thread);
                std::vector<smalldata::detail::WField*> f;
                for (std::size_t k = 0; k < fields; ++k)
                    f.push_back(w.field(w.field_index(meta("x" + std::to_string(k), DType::f64, 1), "the test")));
                for (std::uint64_t e = 0; e < events; ++e) {
                    for (std::size_t k = 0; k < fields; ++k) {
                        const double v = static_cast<double>(k * 1000 + e);
                        w.put(*f[k], reinterpret_cast<const unsigned char*>(&v));
                    }
                    w.end_event(static_cast<std::int64_t>(e));
                }
                w.finish(nullptr);
                peak = w.cache_peak_bytes();
            }
            CHECK(peak <= cap);
            CHECK(peak <= fields * 4096 + MiB);  // 2 KiB per field (256 rows) and spares, not 64 KiB
            h5r::File file(path);
            std::size_t bad = 0;
            for (std::size_t k = 0; k < fields; k += 97) {
                const auto v = file.read<double>("x" + std::to_string(k));
                REQUIRE(v.size() == events);
                for (std::uint64_t e = 0; e < events; ++e) bad += v[e] != static_cast<double>(k * 1000 + e);
            }
            CHECK(bad == 0);
        }
    }
}

TEST_CASE("a tiny cache_memory still writes every row right (rows written on their own)", "[serial][writer][memory]") {
    for (const bool thread : {false, true}) {
        CAPTURE(thread);
        const std::string path = fresh("mem_tiny.h5");
        smalldata::Options o;
        o.cache_memory = 7000;  // room for the caches of the timestamp (2 KiB) and x, not y
        std::size_t peak = 0;
        {
            smalldata::detail::Writer w(path, o, thread);
            auto* x = w.field(w.field_index(meta("x", DType::i32, 512), "the test"));  // 2 KiB rows
            auto* y = w.field(w.field_index(meta("y", DType::i32, 1024), "the test"));  // 4 KiB rows
            std::vector<std::int32_t> a(1024);
            for (std::int32_t e = 0; e < 300; ++e) {
                a.assign(a.size(), e);
                if (e % 3 != 1) w.put(*x, reinterpret_cast<const unsigned char*>(a.data()));
                w.put(*y, reinterpret_cast<const unsigned char*>(a.data()));
                w.end_event(e);
            }
            w.finish(nullptr);
            peak = w.cache_peak_bytes();
        }
        CHECK(peak <= 7000);
        h5r::File file(path);
        const auto x = file.read<std::int32_t>("x");
        const auto y = file.read<std::int32_t>("y");
        REQUIRE(x.size() == 300 * 512);
        REQUIRE(y.size() == 300 * 1024);
        std::size_t bad = 0;
        for (std::int32_t e = 0; e < 300; ++e) {
            const std::size_t r = static_cast<std::size_t>(e);
            bad += x[r * 512 + 7] != (e % 3 != 1 ? e : -99999);
            bad += y[r * 1024 + 1023] != e;
        }
        CHECK(bad == 0);
    }
}

// ---------------------------------------------------------------------------- 2. chunks
TEST_CASE("one early value and a long gap do not pin a field to small chunks", "[serial][writer][chunks]") {
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        const std::string path = fresh("early_gap.h5");
        smalldata::Options o = thread_opts(path, thread);
        constexpr std::int64_t n = 100000, gap_end = 20000;
        {
            smalldata::SmallData smd(o);
            for (std::int64_t e = 0; e < n; ++e) {
                if (e == 0 || e >= gap_end) smd.event(e, "x", static_cast<double>(e) + 0.5, "t", e);
                else smd.event(e, "t", e);
            }
            smd.done();
        }
        h5r::File f(path);
        const auto chunk = f.chunk_dims("x");
        REQUIRE(chunk.size() == 1);
        CAPTURE(chunk[0]);
        CHECK(chunk[0] >= 1024);
        const auto x = f.read<double>("x");
        REQUIRE(x.size() == static_cast<std::size_t>(n));
        std::size_t bad = 0;
        for (std::int64_t e = 0; e < n; ++e) {
            const double v = x[static_cast<std::size_t>(e)];
            bad += (e == 0 || e >= gap_end) ? v != static_cast<double>(e) + 0.5 : !std::isnan(v);
        }
        CHECK(bad == 0);
    }
}

// ---------------------------------------------------------------------------- 3. write errors
TEST_CASE("after a failed write every later event throws the same error; the file stays aligned",
          "[serial][writer][errors]") {
    // Small caches (cache_bytes 128: 16 timestamps, 64 int16 values per cache), a file-size
    // limit just above what construction wrote, and a program that catches every error and
    // carries on. The limit is lifted before done(), as space freed on a full disk would be.
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        const std::string path = fresh("sticky.h5");
        smalldata::Options o = thread_opts(path, thread);
        o.cache_bytes = 128;
        o.preallocate = false;
        struct rlimit old {};
        REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
        const auto prev = std::signal(SIGXFSZ, SIG_IGN);
        std::optional<smalldata::SmallData> smd;
        smd.emplace(o);
        struct stat st {};
        REQUIRE(::stat(path.c_str(), &st) == 0);
        struct rlimit lim = old;
        lim.rlim_cur = static_cast<rlim_t>(st.st_size) + 8192;
        REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
        std::vector<std::string> errors;
        std::int64_t first_error = -1;
        for (std::int64_t i = 0; i < 1000; ++i) {
            const Thrown t = thrown([&] {
                smd->event(i, "x", static_cast<std::int16_t>(i), "y", static_cast<double>(i) * 2);
            });
            if (t.code != "none") {
                if (first_error < 0) first_error = i;
                errors.push_back(t.code + ": " + t.what);
            } else if (first_error >= 0) {
                errors.push_back("none after the error, at event " + std::to_string(i));
            }
        }
        setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, prev);
        CAPTURE(first_error);
        REQUIRE(first_error >= 0);
        REQUIRE(!errors.empty());
        CHECK(errors.front().rfind("hdf5: ", 0) == 0);
        CHECK(errors.front().find("'" + path + "'") != std::string::npos);
        std::size_t differ = 0;
        for (const std::string& e : errors) differ += e != errors.front();
        CHECK(differ == 0);  // the same sticky error, every time, from the first on
        CHECK(errors.size() == static_cast<std::size_t>(1000 - first_error));
        const Thrown at_done = thrown([&] { smd->done(); });
        CHECK(at_done.code == "hdf5");
        smd.reset();
        h5r::File f(path);
        const auto ts = f.read<std::int64_t>("timestamp");
        CAPTURE(ts.size());
        check_lengths(f, {"x", "y"}, ts.size());
        const auto x = f.read<std::int16_t>("x");
        const auto y = f.read<double>("y");
        std::size_t bad = 0;
        for (std::size_t k = 0; k < ts.size() && k < x.size() && k < y.size(); ++k)
            bad += ts[k] != static_cast<std::int64_t>(k) || x[k] != static_cast<std::int16_t>(k) ||
                   y[k] != static_cast<double>(k) * 2;
        CHECK(bad == 0);
        CHECK(ts.size() <= static_cast<std::size_t>(first_error) + 1);
    }
}

TEST_CASE("a row below one already given is an internal error, not a rewrite", "[serial][writer][errors]") {
    // The decoder never does this; if it did, the writer must refuse (Errc::protocol)
    // instead of wrapping the gap around, and stay usable.
    const std::string path = fresh("row_order.h5");
    smalldata::Options o;
    {
        smalldata::detail::Writer w(path, o, false);
        auto* x = w.field(w.field_index(meta("x", DType::f64, 1), "the test"));
        const double v = 1.5;
        w.put(*x, reinterpret_cast<const unsigned char*>(&v));
        const Thrown again = thrown([&] { w.put(*x, reinterpret_cast<const unsigned char*>(&v)); });
        CHECK(again.code == "protocol");
        CHECK_THAT(again.what, Catch::Contains("'x'"));
        w.end_event(7);
        w.put(*x, reinterpret_cast<const unsigned char*>(&v));
        w.end_event(8);
        w.finish(nullptr);
    }
    h5r::File f(path);
    CHECK(f.read<std::int64_t>("timestamp") == std::vector<std::int64_t>{7, 8});
    CHECK(f.read<double>("x") == std::vector<double>{1.5, 1.5});
}

TEST_CASE("a writer destroyed before finish() closes its file readable and aligned", "[serial][writer][errors]") {
    // A writer that goes without finish() (a constructor that fails after creating it)
    // writes the rows still cached, by the caller's thread, after ending the write thread
    // (started or not), and gives every aligned dataset the same length.
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        const std::string path = fresh("destroyed.h5");
        smalldata::Options o = thread_opts(path, thread);
        o.cache_size = 64;
        {
            smalldata::detail::Writer w(path, o, thread != 0);
            auto* x = w.field(w.field_index(meta("x", DType::f64, 1), "the test"));
            auto* y = w.field(w.field_index(meta("y", DType::f64, 1), "the test"));
            for (std::int64_t i = 0; i < 100; ++i) {
                const double v = static_cast<double>(i);
                const double one = 1.0;
                w.put(*x, reinterpret_cast<const unsigned char*>(&v));
                if (i < 90) w.put(*y, reinterpret_cast<const unsigned char*>(&one));
                w.end_event(i);
            }
        }
        h5r::File f(path);
        const auto ts = f.read<std::int64_t>("timestamp");
        REQUIRE(ts.size() == 100);
        check_lengths(f, {"x", "y"}, ts.size());
        const auto x = f.read<double>("x");
        const auto y = f.read<double>("y");
        std::size_t bad = 0;
        for (std::size_t k = 0; k < ts.size(); ++k)
            bad += ts[k] != static_cast<std::int64_t>(k) || x[k] != static_cast<double>(k) || (k < 90 ? y[k] != 1.0 : !std::isnan(y[k]));
        CHECK(bad == 0);
    }
}

TEST_CASE("a refused pair leaves the event its call started, and the pairs before it", "[serial][errors]") {
    // event(100, "a", 1.0, "z", 2.0, "x", 100.0) with "z" a summary: the call starts event
    // 100 and records "a"; "z" throws Errc::name; "x" is never reached. Pairs are taken
    // left to right and each is all or nothing.
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        const std::string path = fresh("refused_pair.h5");
        smalldata::Options o = thread_opts(path, thread);
        o.cache_size = 64;
        Thrown at_event;
        {
            smalldata::SmallData smd(o);
            for (std::int64_t i = 0; i < 100; ++i) smd.event(i, "x", static_cast<double>(i), "a", 0.5);
            smd.save_summary("z", 1.0);
            at_event = thrown([&] { smd.event(100, "a", 1.0, "z", 2.0, "x", 100.0); });
            smd.done();
        }
        CHECK(at_event.code == "name");
        h5r::File f(path);
        const auto ts = f.read<std::int64_t>("timestamp");
        REQUIRE(ts.size() == 101);
        check_lengths(f, {"x", "a"}, ts.size());
        const auto x = f.read<double>("x");
        const auto a = f.read<double>("a");
        CHECK(ts[100] == 100);
        CHECK(a[100] == 1.0);
        CHECK(std::isnan(x[100]));
        CHECK(x[99] == 99.0);
        CHECK(f.scalar<double>("z") == 1.0);
    }
}

// ---------------------------------------------------------------------------- 4. full disk
TEST_CASE("a full disk: the rows written stay readable and aligned, the process ends normally",
          "[serial][writer][errors][disk]") {
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        // 16 MiB: 8 are held back for the metadata (SpareSpace) from the start.
        SmallDisk disk(h5r::test_path("small_disk_" + std::to_string(thread)), 16);
        if (!disk.ok()) {
            WARN("SKIP: cannot mount a small tmpfs here (needs root); the disk-full test did not run");
            return;
        }
        const std::string path = disk.path("full.h5");
        smalldata::Options o = thread_opts(path, thread);
        std::int64_t first_error = -1;
        std::string error;
        {
            smalldata::SmallData smd(o);
            for (std::int64_t i = 0; i < 2000000; ++i) {
                const float a = static_cast<float>(i);
                const Thrown t = thrown([&] {
                    smd.event(i, "x", static_cast<double>(i), "y", 3 * i, "arr", std::array<float, 4>{a, a + 1, a + 2, a + 3});
                });
                if (t.code == "none") continue;
                CHECK(t.code == "hdf5");
                first_error = i;
                error = t.what;
                break;
            }
            CAPTURE(first_error, error);
            REQUIRE(first_error > 0);
            CHECK(error.find("'" + path + "'") != std::string::npos);
            // The program carries on: the same error again, nothing corrupted.
            for (std::int64_t i = first_error + 1; i < first_error + 100; ++i)
                CHECK(thrown([&] { smd.event(i, "x", 1.0); }).code == "hdf5");
            const Thrown at_done = thrown([&] { smd.done(); });
            CHECK(at_done.code == "hdf5");
            CHECK(at_done.what.find("'" + path + "'") != std::string::npos);
        }
        {
            h5r::File f(path);
            const auto ts = f.read<std::int64_t>("timestamp");
            CAPTURE(first_error, ts.size());
            CHECK(ts.size() > 0);
            CHECK(ts.size() <= static_cast<std::size_t>(first_error) + 1);
            check_lengths(f, {"x", "y", "arr"}, ts.size());
            const auto x = f.read<double>("x");
            const auto y = f.read<std::int64_t>("y");
            const auto arr = f.read<float>("arr");
            std::size_t bad = 0;
            for (std::size_t k = 0; k < ts.size() && k < x.size() && k < y.size() && 4 * k + 3 < arr.size(); ++k) {
                const auto i = static_cast<std::int64_t>(k);
                bad += ts[k] != i || x[k] != static_cast<double>(i) || y[k] != 3 * i ||
                       arr[4 * k] != static_cast<float>(i) || arr[4 * k + 3] != static_cast<float>(i) + 3;
            }
            CHECK(bad == 0);
        }
    }
}

TEST_CASE("a file system without room for the space held back for the metadata: the constructor refuses",
          "[serial][writer][errors][disk]") {
    // It made the file and wrote until the disk was full, then could not close it: a file
    // that did not open, every event lost.
    SmallDisk disk(h5r::test_path("tiny_disk"), 2);
    if (!disk.ok()) {
        WARN("SKIP: cannot mount a small tmpfs here (needs root); the test did not run");
        return;
    }
    const std::string path = disk.path("tiny.h5");
    smalldata::Options o = file_opts(path);
    int code = 0;
    const Thrown t = thrown([&] {
        try {
            smalldata::SmallData smd(o);
        } catch (const smalldata::Error& e) {
            code = e.library_code();
            throw;
        }
    });
    CHECK(t.code == "hdf5");
    CHECK_THAT(t.what, Catch::Contains("the file system of '" + path + "' has no room for the 8 MiB"));
    CHECK(code == ENOSPC);
    CHECK_FALSE(std::filesystem::exists(path));
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

// ---------------------------------------------------------------------------- 5. stats()
TEST_CASE("stats() while the write thread writes", "[serial][writer][thread]") {
    // A data race before (write_seconds read without the writer's lock); under TSan this
    // test is the check. Here: the counters only grow, and the file is whole.
    const std::string path = fresh("stats_thread.h5");
    smalldata::Options o = file_opts(path);
    o.write_thread = 1;
    o.cache_size = 1024;
    constexpr std::int64_t n = 200000;
    double last = 0;
    std::size_t decreased = 0;
    {
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < n; ++i) {
            smd.event(i, "x", static_cast<double>(i), "v", std::array<std::int32_t, 8>{});
            if (i % 3000 == 0) {
                const smalldata::Stats s = smd.stats();
                decreased += s.write_seconds < last;
                last = s.write_seconds;
                CHECK(s.events <= static_cast<std::uint64_t>(i) + 1);
            }
        }
        smd.done();
        CHECK(smd.stats().write_seconds >= last);
    }
    CHECK(decreased == 0);
    h5r::File f(path);
    const auto x = f.read<double>("x");
    REQUIRE(x.size() == static_cast<std::size_t>(n));
    std::size_t bad = 0;
    for (std::int64_t i = 0; i < n; ++i) bad += x[static_cast<std::size_t>(i)] != static_cast<double>(i);
    CHECK(bad == 0);
}

// ---------------------------------------------------------------------------- 6. edge values
TEST_CASE("0-byte rows (an empty vector, a View with a 0 dimension) are written as such", "[serial][writer][values]") {
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        const std::string path = fresh("zero_bytes.h5");
        smalldata::Options o = thread_opts(path, thread);
        o.cache_size = 16;
        {
            smalldata::SmallData smd(o);
            const std::vector<double> empty;
            const float* nothing = nullptr;
            for (std::int64_t i = 0; i < 100; ++i) {
                if (i % 7 == 3) smd.event(i, "x", i);  // v and w missing: gaps of 0-byte rows
                else smd.event(i, "v", empty, "x", i, "w", smalldata::view(nothing, {3, 0}));
            }
            smd.done();
        }
        h5r::File f(path);
        CHECK(f.dims("v") == std::vector<hsize_t>{100, 0});
        CHECK(f.dims("w") == std::vector<hsize_t>{100, 3, 0});
        const auto x = f.read<std::int64_t>("x");
        REQUIRE(x.size() == 100);
        CHECK(x[99] == 99);
    }
}

TEST_CASE("Share at the int64 limits: the right size, no overflow, a standard input iterator",
          "[serial][writer][share]") {
    using It = smalldata::Share::iterator;
    STATIC_REQUIRE(std::is_same_v<std::iterator_traits<It>::iterator_category, std::input_iterator_tag>);
    STATIC_REQUIRE(std::is_same_v<std::iterator_traits<It>::value_type, std::int64_t>);
    constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
    smalldata::SmallData smd(smalldata::Options{});
    // 2^64 - 1 indices: more than int64 holds; size() saturates (documented).
    CHECK(smd.share(lo, hi).size() == hi);
    CHECK(smalldata::Share(lo, hi, lo, 2).size() == hi);              // 2^63 indices: saturated too
    CHECK(smalldata::Share(lo, hi, lo, 4).size() == std::int64_t(1) << 62);  // exactly
    CHECK(smalldata::Share(lo, hi, 0, hi).size() == 1);
    CHECK(smalldata::Share(hi - 10, hi, hi - 10, 4).size() == 3);
    CHECK(smalldata::Share(5, 5, 5, 1).size() == 0);
    CHECK(smalldata::Share(5, 3, 5, 1).size() == 0);
    // Iteration near INT64_MAX stops at the end (the next step would overflow).
    const smalldata::Share s(hi - 10, hi, hi - 10, 4);
    std::vector<std::int64_t> got;
    for (std::int64_t i : s) {
        got.push_back(i);
        if (got.size() > 10) break;
    }
    CHECK(got == std::vector<std::int64_t>{hi - 10, hi - 6, hi - 2});
    // A standard container can be built from the iterators.
    CHECK(std::vector<std::int64_t>(s.begin(), s.end()) == got);
    const smalldata::Share low(lo, lo + 5, lo, 2);
    CHECK(std::vector<std::int64_t>(low.begin(), low.end()) == std::vector<std::int64_t>{lo, lo + 2, lo + 4});
    auto it = low.begin();
    CHECK(*it++ == lo);
    CHECK(*it == lo + 2);
    CHECK(it != low.end());
    CHECK(!(it == low.end()));
    const auto all = smd.share(3, 8);
    CHECK(std::vector<std::int64_t>(all.begin(), all.end()) == std::vector<std::int64_t>{3, 4, 5, 6, 7});
}

// ---------------------------------------------------------------------------- 7. bool arrays
TEST_CASE("a callback reads a bool array field", "[serial][writer][callbacks]") {
    const std::string path = fresh("bool_array.h5");
    smalldata::Options o = file_opts(path);
    std::vector<std::vector<bool>> seen_vec, seen_values;
    std::vector<bool> seen_scalar;
    o.callbacks.push_back([&](const smalldata::Event& ev) {
        seen_vec.push_back(ev.get_vector<bool>("flags"));
        seen_values.push_back(ev.field("flags").values<bool>());
        seen_scalar.push_back(ev.get_vector<bool>("ok").at(0));
    });
    {
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < 5; ++i)
            smd.event(i, "flags", std::array<bool, 3>{i % 2 == 0, true, i == 3}, "ok", i != 2);
        smd.done();
    }
    REQUIRE(seen_vec.size() == 5);
    for (std::size_t i = 0; i < 5; ++i) {
        CAPTURE(i);
        const std::vector<bool> want{i % 2 == 0, true, i == 3};
        CHECK(seen_vec[i] == want);
        CHECK(seen_values[i] == want);
        CHECK(seen_scalar[i] == (i != 2));
    }
    h5r::File f(path);
    CHECK(f.dims("flags") == std::vector<hsize_t>{5, 3});
}

TEST_CASE("a file another run is writing is neither replaced nor recovered; the writer loses nothing", "[serial][file]") {
    // Two runs given the same filename: the second used to unlink the first's file and make
    // its own, and the first went on writing into a file no name reached. The writer's claim
    // (an OFD lock, held from the file's making to its close) makes the second an error.
    // With and without checkpoints (the file made under a temporary name, or in place).
    for (const double checkpoint : {5.0, 0.0}) {
        CAPTURE(checkpoint);
        const std::string path = fresh("claimed.h5");
        smalldata::Options o = file_opts(path);
        o.checkpoint_seconds = checkpoint;
        Thrown second, recover;
        {
            smalldata::SmallData first(o);
            for (std::int64_t i = 0; i < 100; ++i) first.event(i, "x", static_cast<double>(i));
            second = thrown([&] { smalldata::SmallData smd(o); });
            recover = thrown([&] { (void)smalldata::detail::recover_file(path); });
            for (std::int64_t i = 100; i < 200; ++i) first.event(i, "x", static_cast<double>(i));
            first.done();
        }
        CHECK(second.code == "option");
        CHECK_THAT(second.what, Catch::Contains("'" + path + "'") && Catch::Contains("being written by another process"));
        CHECK(recover.code == "usage");
        CHECK_THAT(recover.what, Catch::Contains("'" + path + "'") && Catch::Contains("being written"));
        {
            h5r::File f(path);
            CHECK(mismatch(f.read<double>("x"), ramp<double>(200)) == "");
            CHECK(mismatch(f.read<std::int64_t>("timestamp"), ramp<std::int64_t>(200)) == "");
        }
        {  // once done() has closed it, a rerun replaces it
            smalldata::SmallData third(o);
            for (std::int64_t i = 0; i < 5; ++i) third.event(i, "y", static_cast<float>(i));
            third.done();
        }
        h5r::File f(path);
        CHECK(f.children("/") == std::vector<std::string>{"timestamp", "y"});
        CHECK(f.read<float>("y").size() == 5);
    }
}

TEST_CASE("a part file of another run is not replaced by a file of its name", "[serial][file]") {
    // 'other_part0.h5' belongs to 'other.h5' (its attributes say so): replacing it would
    // make 'other.h5' read this run's rows.
    const std::string path = fresh("other_part0.h5");
    {
        smalldata::detail::H5Id f = smalldata::detail::h5_create_file(path);
        smalldata::detail::h5_set_attr_string(f.get(), smalldata::detail::attr_final, "other.h5");
    }
    const Thrown t = thrown([&] { smalldata::SmallData smd(file_opts(path)); });
    CHECK(t.code == "option");
    CHECK_THAT(t.what, Catch::Contains("'" + path + "'") && Catch::Contains("a part file of 'other.h5'"));
    smalldata::detail::H5Id f = smalldata::detail::h5_open_read(path);
    REQUIRE(f.valid());
    std::string owner;
    CHECK(smalldata::detail::h5_get_attr_string(f.get(), smalldata::detail::attr_final, owner));
    CHECK(owner == "other.h5");
}
