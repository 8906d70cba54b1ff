// Serial mode: the rest of the API. Caching (small and odd cache sizes), summaries and
// reductions, callbacks and the Event view, done() and the destructor, share(), the name
// tables. Every test writes its own file and reads it back through h5read.hpp.
#include "smalldata.hpp"

#include "h5read.hpp"

#include "catch_compat.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

using smalldata::DType;
using smalldata::Errc;
using smalldata::Role;

namespace {

#include "test_util.hpp"

std::vector<std::string> dir_listing(const std::string& dir) {
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir)) names.insert(e.path().filename().string());
    return {names.begin(), names.end()};
}

// Runs f with the working directory set to a new empty directory, and returns what f
// left in it.
template <class F>
std::vector<std::string> files_left_in_cwd(const std::string& name, F&& f) {
    const std::string dir = h5r::test_path(name);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const std::filesystem::path old = std::filesystem::current_path();
    std::filesystem::current_path(dir);
    try {
        f();
    } catch (...) {
        std::filesystem::current_path(old);
        throw;
    }
    std::filesystem::current_path(old);
    return dir_listing(dir);
}

}  // namespace

// ==================================================================== cache

namespace {

// A mix of fields with every kind of gap: every event, every 3rd, absent for events
// 100..199 (a gap far larger than a small cache), first seen at event 5000, unaligned, only
// in the last event.
void write_mixed(const std::string& path, std::size_t cache_size, std::size_t batch_size, std::int64_t n) {
    smalldata::Options o = file_opts(path);
    o.cache_size = cache_size;
    o.batch_size = batch_size;
    smalldata::SmallData smd(o);
    for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t ts = 2 * i + 1;
        smd.event(ts, "s", static_cast<double>(i) * 0.5);
        if (i % 3 == 0)
            smd.event(ts, "v", std::array<std::int16_t, 3>{static_cast<std::int16_t>(i % 1000),
                                                            static_cast<std::int16_t>(-(i % 1000)), 7});
        if (i < 100 || i >= 200) smd.event(ts, "gap", static_cast<std::int32_t>(i));
        if (i >= n / 2) smd.event(ts, "g/late", static_cast<std::uint16_t>(i % 60000));
        if (i % 7 == 0) smd.event(ts, "unaligned_u", static_cast<std::int64_t>(i));
        if (i % 2 == 0) {
            const float x = static_cast<float>(i);
            smd.event(ts, "arr", std::vector<float>{x, x + 1, x + 2, x + 3, x + 4});
        }
        if (i == n - 1) smd.event(ts, "last", true);
    }
    smd.done();
}

void verify_mixed(const std::string& path, std::int64_t n) {
    INFO("file " << path);
    h5r::File f(path);
    const std::size_t N = static_cast<std::size_t>(n);
    std::vector<std::int64_t> ts, unal;
    std::vector<double> s;
    std::vector<std::int16_t> v;
    std::vector<std::int32_t> gap;
    std::vector<std::uint16_t> late;
    std::vector<float> arr;
    std::vector<bool> last;
    const float fnan = std::numeric_limits<float>::quiet_NaN();
    for (std::int64_t i = 0; i < n; ++i) {
        ts.push_back(2 * i + 1);
        s.push_back(static_cast<double>(i) * 0.5);
        if (i % 3 == 0) {
            v.push_back(static_cast<std::int16_t>(i % 1000));
            v.push_back(static_cast<std::int16_t>(-(i % 1000)));
            v.push_back(7);
        } else {
            v.insert(v.end(), 3, std::int16_t(-32768));
        }
        gap.push_back(i < 100 || i >= 200 ? static_cast<std::int32_t>(i) : -99999);
        late.push_back(i >= n / 2 ? static_cast<std::uint16_t>(i % 60000) : std::uint16_t(65535));
        if (i % 7 == 0) unal.push_back(i);
        for (int k = 0; k < 5; ++k) arr.push_back(i % 2 == 0 ? static_cast<float>(i + k) : fnan);
        last.push_back(i == n - 1);
    }
    CHECK(mismatch(f.read<std::int64_t>("timestamp"), ts) == "");
    CHECK(mismatch(f.read<double>("s"), s) == "");
    CHECK(f.dims("v") == std::vector<hsize_t>{N, 3});
    CHECK(mismatch(f.read<std::int16_t>("v"), v) == "");
    CHECK(mismatch(f.read<std::int32_t>("gap"), gap) == "");
    CHECK(mismatch(f.read<std::uint16_t>("g/late"), late) == "");
    CHECK(mismatch(f.read<std::int64_t>("unaligned_u"), unal) == "");
    CHECK(f.dims("arr") == std::vector<hsize_t>{N, 5});
    CHECK(mismatch(f.read<float>("arr"), arr) == "");
    CHECK(mismatch(f.read<bool>("last"), last) == "");
    CHECK(f.children("/") == std::vector<std::string>{"arr", "g", "gap", "last", "s", "timestamp", "unaligned_u", "v"});
}

}  // namespace

TEST_CASE("a small odd cache_size gives the same file as a large one", "[serial][cache]") {
    constexpr std::int64_t n = 10000;
    const std::string small = fresh("cache_7.h5");
    const std::string large = fresh("cache_large.h5");
    write_mixed(small, 7, 5, n);
    write_mixed(large, 1 << 20, 4096, n);
    verify_mixed(small, n);
    verify_mixed(large, n);
    // And the two files agree dataset by dataset.
    h5r::File a(small), b(large);
    CHECK(a.read<double>("s") == b.read<double>("s"));
    CHECK(a.read<std::int32_t>("gap") == b.read<std::int32_t>("gap"));
    CHECK(a.read<std::int64_t>("unaligned_u") == b.read<std::int64_t>("unaligned_u"));
}

TEST_CASE("cache_size 1 and batch_size 1 still write every row", "[serial][cache]") {
    constexpr std::int64_t n = 600;
    const std::string path = fresh("cache_1.h5");
    write_mixed(path, 1, 1, n);
    verify_mixed(path, n);
}

TEST_CASE("a gap longer than the cache is filled (cache_size 7, field absent for 100 events)", "[serial][cache]") {
    const std::string path = fresh("cache_gap.h5");
    {
        smalldata::Options o = file_opts(path);
        o.cache_size = 7;
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < 130; ++i) {
            smd.event(i, "tick", std::uint8_t(1));
            if (i < 10 || i >= 110) smd.event(i, "x", static_cast<double>(i), "y", std::array<std::int32_t, 2>{1, 2});
        }
        smd.done();
    }
    h5r::File f(path);
    const auto x = f.read<double>("x");
    const auto y = f.read<std::int32_t>("y");
    REQUIRE(x.size() == 130);
    REQUIRE(y.size() == 260);
    for (std::size_t i = 0; i < 130; ++i) {
        INFO("row " << i);
        if (i < 10 || i >= 110) {
            CHECK(x[i] == static_cast<double>(i));
            CHECK(y[2 * i] == 1);
            CHECK(y[2 * i + 1] == 2);
        } else {
            CHECK(std::isnan(x[i]));
            CHECK(y[2 * i] == -99999);
            CHECK(y[2 * i + 1] == -99999);
        }
    }
}

TEST_CASE("random presence patterns match a model at every cache and chunk size", "[serial][cache]") {
    // Fields come and go in runs (dense, sparse, absent for long stretches), so flushes
    // start and end anywhere relative to chunk boundaries: whole chunks, partial chunks,
    // gaps inside the cache and gaps longer than it. Every row is checked against a model.
    struct Sizes {
        std::size_t cache_size, chunk_bytes;
    };
    const Sizes sizes[] = {{1, 1 << 20}, {3, 1 << 20}, {8, 16}, {64, 64}, {64, 1 << 20}, {1000, 256}, {8192, 1 << 20}};
    // Without callbacks values go straight to the writer; a callback (which needs whole
    // events) sends them through batches and the decoder instead. Full caches are written
    // by a helper thread or by the caller's thread. Every combination must agree.
    for (const int thread : {0, 1})
    for (const bool batched : {false, true})
    for (const Sizes& z : sizes) {
        INFO("cache_size " << z.cache_size << ", chunk_bytes " << z.chunk_bytes << (batched ? ", batched" : ", direct")
                           << (thread ? ", write thread" : ", no write thread"));
        const std::string path = fresh("cache_model.h5");
        const std::int64_t n = 3000;
        std::vector<double> x(n, std::nan(""));
        std::vector<std::int16_t> v(3 * n, -32768);
        std::vector<std::int32_t> u;
        std::uint64_t rng = 0x9E3779B97F4A7C15ull ^ z.cache_size ^ (z.chunk_bytes << 20);
        auto next = [&rng] {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            return rng;
        };
        {
            smalldata::Options o = file_opts(path);
            o.cache_size = z.cache_size;
            o.chunk_bytes = z.chunk_bytes;
            o.batch_size = 37;
            o.write_thread = thread;
            std::int64_t seen = 0;
            if (batched) o.callbacks.push_back([&seen](const smalldata::Event&) { ++seen; });
            smalldata::SmallData smd(o);
            int mode = 0;
            for (std::int64_t i = 0; i < n; ++i) {
                if (next() % 97 == 0) mode = static_cast<int>(next() % 3);  // 0 dense, 1 sparse, 2 absent
                smd.event(i, "tick", std::uint8_t(1));
                const bool has_x = mode == 0 ? next() % 10 != 0 : mode == 1 ? next() % 10 == 0 : false;
                const bool has_v = mode == 2 ? next() % 2 == 0 : next() % 50 != 0;
                if (has_x) {
                    x[static_cast<std::size_t>(i)] = static_cast<double>(i) * 0.5;
                    smd.event(i, "x", x[static_cast<std::size_t>(i)]);
                }
                if (has_v) {
                    std::array<std::int16_t, 3> a{static_cast<std::int16_t>(i % 30000), 7, static_cast<std::int16_t>(-i % 1000)};
                    std::copy(a.begin(), a.end(), v.begin() + 3 * i);
                    smd.event(i, "g/v", a);
                }
                if (next() % 4 == 0) {
                    u.push_back(static_cast<std::int32_t>(i));
                    smd.event(i, "unaligned_u", static_cast<std::int32_t>(i));
                }
            }
            smd.done();
            CHECK(seen == (batched ? n : 0));
        }
        h5r::File f(path);
        CHECK(f.read<std::uint8_t>("tick").size() == static_cast<std::size_t>(n));
        const auto rx = f.read<double>("x");
        const auto rv = f.read<std::int16_t>("g/v");
        REQUIRE(rx.size() == x.size());
        REQUIRE(rv.size() == v.size());
        std::size_t bad_x = 0, bad_v = 0;
        for (std::size_t i = 0; i < x.size(); ++i) bad_x += !same(rx[i], x[i]);
        for (std::size_t i = 0; i < v.size(); ++i) bad_v += rv[i] != v[i];
        CHECK(bad_x == 0);
        CHECK(bad_v == 0);
        CHECK(f.read<std::int32_t>("unaligned_u") == u);
    }
}

TEST_CASE("image rows (64 KiB and more) skip the cache: one row per chunk, gaps read as fill", "[serial][cache]") {
    const std::string path = fresh("big_rows.h5");
    const std::int64_t n = 50;
    std::vector<std::uint16_t> img(256 * 256);
    std::vector<float> just(16384);        // exactly 64 KiB
    std::vector<std::uint8_t> below(65535);  // one byte short: cached as usual
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < n; ++i) {
            smd.event(i, "n", static_cast<std::int32_t>(i));
            if (i % 7 != 3 && i < 40) {  // gaps inside, and missing at the end
                for (std::size_t k = 0; k < img.size(); ++k) img[k] = static_cast<std::uint16_t>(i * 1000 + static_cast<std::int64_t>(k % 1000));
                smd.event(i, "det/image", smalldata::view(img.data(), {256, 256}));
            }
            if (i % 2 == 0) {
                just.assign(just.size(), static_cast<float>(i));
                smd.event(i, "just", just);
                below.assign(below.size(), static_cast<std::uint8_t>(i));
                smd.event(i, "below", below);
                smd.event(i, "unaligned_img", smalldata::view(img.data(), {256, 256}));
            }
        }
        smd.done();
    }
    h5r::File f(path);
    const auto im = f.read<std::uint16_t>("det/image");
    const auto ju = f.read<float>("just");
    const auto be = f.read<std::uint8_t>("below");
    const auto ui = f.read<std::uint16_t>("unaligned_img");
    REQUIRE(im.size() == 65536 * n);
    REQUIRE(ju.size() == 16384 * n);
    REQUIRE(be.size() == 65535 * n);
    REQUIRE(ui.size() == 65536 * 25);
    std::size_t bad = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const auto r = static_cast<std::size_t>(i);
        const bool has = i % 7 != 3 && i < 40;
        for (std::size_t k = 0; k < 65536; k += 997)
            bad += im[r * 65536 + k] != (has ? static_cast<std::uint16_t>(i * 1000 + static_cast<std::int64_t>(k % 1000)) : 65535);
        bad += !same(ju[r * 16384 + 16383], i % 2 == 0 ? static_cast<float>(i) : std::nanf(""));
        bad += be[r * 65535 + 65534] != (i % 2 == 0 ? static_cast<std::uint8_t>(i) : 255);
    }
    CHECK(bad == 0);
    CHECK(f.chunk_dims("det/image") == std::vector<hsize_t>{1, 256, 256});
    CHECK(f.chunk_dims("just") == std::vector<hsize_t>{1, 16384});
    CHECK(f.chunk_dims("below").at(0) > 1);
}

TEST_CASE("disk space reserved ahead of the writes is given back when the file closes", "[serial][file]") {
    const std::string path = fresh("reserve.h5");
    const bool supported = h5r::reserve_supported(std::filesystem::path(path).parent_path().string());
    if (!supported) WARN("this file system cannot reserve space beyond a file's end: only the final size is checked");
    std::vector<std::uint16_t> img(256 * 256);
    for (bool reserve : {true, false}) {
        CAPTURE(reserve);
        smalldata::Options o = file_opts(path);
        o.preallocate = reserve;
        std::uint64_t during = 0, size_during = 0;
        {
            smalldata::SmallData smd(o);
            for (std::int64_t i = 0; i < 200; ++i) {  // 25 MiB of images, then 25 MiB more
                img.assign(img.size(), static_cast<std::uint16_t>(i));
                smd.event(i, "det/image", smalldata::view(img.data(), {256, 256}));
                if (i == 99) {
                    during = h5r::disk_bytes(path);
                    size_during = std::filesystem::file_size(path);
                }
            }
            smd.done();
        }
        const std::uint64_t size = std::filesystem::file_size(path);
        CAPTURE(during, size_during, size);
        if (reserve && supported) CHECK(during >= size_during + (std::uint64_t(4) << 20));  // reserved ahead
        if (!reserve) CHECK(during <= size_during + (std::uint64_t(1) << 20));             // nothing reserved
        CHECK(h5r::disk_bytes(path) <= size + (std::uint64_t(1) << 20));                    // given back
        h5r::File f(path);
        const auto im = f.read_rows<std::uint16_t>("det/image", 150, 50);
        REQUIRE(im.size() == 50 * 65536);
        std::size_t bad = 0;
        for (std::size_t r = 0; r < 50; ++r) bad += im[r * 65536] != 150 + r || im[r * 65536 + 65535] != 150 + r;
        CHECK(bad == 0);
    }
}

TEST_CASE("events larger than batch_bytes and cache_bytes are written whole", "[serial][cache]") {
    const std::string path = fresh("large_events.h5");
    constexpr std::size_t width = 20000;  // 160 kB per row
    {
        smalldata::Options o = file_opts(path);
        o.batch_bytes = 1024;
        o.cache_bytes = 1000;
        smalldata::SmallData smd(o);
        std::vector<double> row(width);
        for (std::int64_t i = 0; i < 12; ++i) {
            for (std::size_t j = 0; j < width; ++j) row[j] = static_cast<double>(i) * 1e6 + static_cast<double>(j);
            smd.event(i, "small", static_cast<std::int32_t>(i));
            if (i != 3) smd.event(i, "big", smalldata::view(row.data(), {100, width / 100}));
        }
        smd.done();
    }
    h5r::File f(path);
    REQUIRE(f.dims("big") == std::vector<hsize_t>{12, 100, width / 100});
    const std::vector<double> big = f.read<double>("big");
    std::string first_bad;
    for (std::size_t i = 0; i < 12 && first_bad.empty(); ++i)
        for (std::size_t j = 0; j < width; ++j) {
            const double got = big[i * width + j];
            const bool ok = i == 3 ? std::isnan(got) : got == static_cast<double>(i) * 1e6 + static_cast<double>(j);
            if (!ok) {
                first_bad = "row " + std::to_string(i) + " element " + std::to_string(j) + " = " + show(got);
                break;
            }
        }
    CHECK(first_bad == "");
    CHECK(f.read<std::int32_t>("small") == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
}

// ==================================================================== roles, reductions

TEST_CASE("a plain process is serial mode", "[serial][roles]") {
    smalldata::SmallData smd(smalldata::Options{});
    CHECK(smd.role() == Role::serial);
    CHECK(std::string(smalldata::role_name(smd.role())) == "serial");
    CHECK(smd.summary());
    CHECK(smd.rank() == 0);
    CHECK(smd.size() == 1);
    CHECK(smd.client_index() == 0);
    CHECK(smd.client_count() == 1);
    int mpi_size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
    CHECK(mpi_size == 1);
}

TEST_CASE("a one-rank comm other than MPI_COMM_WORLD is serial mode too", "[serial][roles]") {
    const std::string path = fresh("comm_self.h5");
    {
        smalldata::Options o = file_opts(path);
        o.comm = MPI_COMM_SELF;
        o.servers = 3;  // irrelevant in serial mode
        smalldata::SmallData smd(o);
        CHECK(smd.role() == Role::serial);
        smd.event(1, "x", 1.0);
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.read<double>("x") == std::vector<double>{1.0});
}

TEST_CASE("serial mode writes only the final file, no part files", "[serial][roles]") {
    const std::string dir = h5r::test_path("serial_layout");
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    {
        smalldata::SmallData smd(file_opts(dir + "/run.h5"));
        for (std::int64_t i = 0; i < 100; ++i) smd.event(i, "x", static_cast<double>(i), "unaligned_y", std::int8_t(1));
        smd.save_summary("n", std::int64_t(100));
        smd.done();
    }
    CHECK(dir_listing(dir) == std::vector<std::string>{"run.h5"});
}

TEST_CASE("invalid options throw Errc::option", "[serial][roles][errors]") {
    smalldata::Options o;
    SECTION("cache_size 0") { o.cache_size = 0; }
    SECTION("batch_size 0") { o.batch_size = 0; }
    SECTION("write_thread 2") { o.write_thread = 2; }
    SECTION("progress_seconds -1") { o.progress_seconds = -1; }
    SECTION("progress_seconds NaN") { o.progress_seconds = std::numeric_limits<double>::quiet_NaN(); }
    SECTION("progress_seconds 1e10") { o.progress_seconds = 1e10; }
    CHECK(thrown([&] { smalldata::SmallData smd(o); }).code == "option");
}

TEST_CASE("an invalid progress_seconds is named in the error", "[serial][errors]") {
    smalldata::Options o;
    o.progress_seconds = -0.5;
    const Thrown t = thrown([&] { smalldata::SmallData smd(o); });
    CHECK(t.code == "option");
    CHECK(t.what.find("progress_seconds must be between 0 (off) and 1e9, got -0.5") != std::string::npos);
}

TEST_CASE("a write that fails is an Errc::hdf5 error naming the file; what was written before stays",
          "[serial][errors]") {
    // A file-size limit makes the writes past 4 MiB fail (EFBIG), as a full disk would.
    // The limit is lifted before done(), as space freed on a full disk would be.
    for (const int thread : {0, 1}) {
        CAPTURE(thread);
        const std::string path = fresh("too_big.h5");
        struct rlimit old {};
        REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
        const auto prev = std::signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = old;
        lim.rlim_cur = 4 << 20;
        smalldata::Options o = file_opts(path);
        o.write_thread = thread;
        o.cache_size = 256;  // 1 MiB of "row" per write
        std::optional<smalldata::SmallData> smd;
        smd.emplace(o);
        REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
        std::int64_t given = 0;
        std::vector<double> row(512);  // 4 KiB per event, 40 MB in all
        const Thrown t = thrown([&] {
            for (std::int64_t i = 0; i < 10000; ++i, ++given) {
                row.assign(row.size(), static_cast<double>(i));
                smd->event(i, "row", row);
            }
        });
        setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, prev);
        CAPTURE(given, t.what);
        CHECK(t.code == "hdf5");
        CHECK(t.what.find("'" + path + "'") != std::string::npos);
        CHECK(given < 10000);  // the error stops the loop; it does not wait for done()
        const Thrown at_done = thrown([&] { smd->done(); });
        CHECK(at_done.code == "hdf5");  // the error stays reported
        smd.reset();
        // The rows written before the failure are intact.
        h5r::File f(path);
        const auto ts = f.read_rows<std::int64_t>("timestamp", 0, 512);
        const auto r = f.read_rows<double>("row", 0, 512);
        std::size_t bad = 0;
        for (std::size_t k = 0; k < 512; ++k) bad += ts[k] != static_cast<std::int64_t>(k) || r[k * 512] != static_cast<double>(k) || r[k * 512 + 511] != static_cast<double>(k);
        CHECK(bad == 0);
    }
}

TEST_CASE("a file that cannot be created is a clear error naming it", "[serial][errors]") {
    // The constructor says so, naming the user's path (not the temporary name the file is
    // made under) and the system's reason, errno as the library code, as parallel mode does.
    const std::string path = h5r::test_path("no_such_dir/sub/x.h5");
    std::string what;
    int library_code = -1;
    try {
        smalldata::SmallData smd(file_opts(path));
    } catch (const smalldata::Error& e) {
        CHECK(e.code() == smalldata::Errc::hdf5);
        what = e.what();
        library_code = e.library_code();
    }
    CHECK(what == "smalldata: cannot create file '" + path + "': " + std::strerror(ENOENT));
    CHECK(library_code == ENOENT);
    CHECK_FALSE(std::filesystem::exists(h5r::test_path("no_such_dir")));
}

TEST_CASE("reductions are the identity in serial mode", "[serial][summary]") {
    smalldata::SmallData smd(smalldata::Options{});
    CHECK(smd.sum(3.5) == 3.5);
    CHECK(smd.min(std::int32_t(-4)) == -4);
    CHECK(smd.max(std::numeric_limits<std::uint64_t>::max()) == std::numeric_limits<std::uint64_t>::max());
    CHECK(smd.sum(std::int8_t(-7)) == -7);
    CHECK(smd.max(2.5f) == 2.5f);
    CHECK(smd.sum(5LL) == 5LL);
    CHECK(smd.min(std::numeric_limits<std::int64_t>::min()) == std::numeric_limits<std::int64_t>::min());
    CHECK(smd.sum(std::vector<double>{1.5, -2, 3}) == std::vector<double>{1.5, -2, 3});
    CHECK(smd.min(std::array<std::int64_t, 3>{5, -6, 7}) == std::array<std::int64_t, 3>{5, -6, 7});
    CHECK(smd.max(std::vector<std::uint16_t>{1, 65535}) == std::vector<std::uint16_t>{1, 65535});
    CHECK(smd.sum(std::vector<float>{}).empty());
    CHECK_FALSE(smd.sum(std::optional<double>{}).has_value());
    CHECK_FALSE(smd.min(std::optional<std::int32_t>{}).has_value());
    CHECK_FALSE(smd.max(std::optional<std::vector<std::int32_t>>{}).has_value());
    CHECK(smd.sum(std::optional<double>{2.5}) == std::optional<double>{2.5});
    CHECK(smd.max(std::optional<std::vector<std::int32_t>>{{1, -2}}) == std::optional<std::vector<std::int32_t>>{{1, -2}});
    CHECK(smd.min(std::optional<std::array<float, 2>>{{1.0f, -1.0f}}) ==
          std::optional<std::array<float, 2>>{{1.0f, -1.0f}});
}

// ==================================================================== save_summary

TEST_CASE("save_summary writes scalar, 1-d and string datasets; empty optionals are skipped", "[serial][summary]") {
    const std::string path = fresh("summary.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 4; ++i) smd.event(i, "x", static_cast<double>(i));
        REQUIRE(smd.summary());
        const std::int64_t n = smd.sum(std::int64_t(4));
        smd.save_summary("n_events", std::int64_t(-1));  // replaced below
        smd.save_summary("n_events", n, "mean", 1.5, "hist", std::vector<std::int32_t>{1, 2, 3, 4, 5});
        smd.save_summary("arr", std::array<float, 3>{0.5f, 1.5f, 2.5f}, "u", std::uint16_t(65000));
        smd.save_summary("note", std::string("hello smalldata"), "cnote", "a C string");
        smd.save_summary("nothing", std::optional<double>{}, "some", std::optional<std::int64_t>{7});
        smd.save_summary("flag", true);
        const double line[4] = {1, 2, 3, 4};
        smd.save_summary("line", smalldata::view(line, {4}));
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.read<std::int64_t>("timestamp") == std::vector<std::int64_t>{0, 1, 2, 3});
    CHECK(f.dims("n_events").empty());
    CHECK(f.type_info("n_events").cls == H5T_INTEGER);
    CHECK(f.type_info("n_events").size == 8);
    CHECK(f.scalar<std::int64_t>("n_events") == 4);
    CHECK(f.scalar<double>("mean") == 1.5);
    CHECK(f.type_info("mean").cls == H5T_FLOAT);
    CHECK(f.dims("hist") == std::vector<hsize_t>{5});
    CHECK(f.read<std::int32_t>("hist") == std::vector<std::int32_t>{1, 2, 3, 4, 5});
    CHECK(f.dims("arr") == std::vector<hsize_t>{3});
    CHECK(f.type_info("arr").size == 4);
    CHECK(f.read<float>("arr") == std::vector<float>{0.5f, 1.5f, 2.5f});
    CHECK(f.scalar<std::uint16_t>("u") == 65000);
    CHECK(f.type_info("u").sign == H5T_SGN_NONE);
    CHECK(f.type_info("note").cls == H5T_STRING);
    CHECK(f.read_string("note") == "hello smalldata");
    CHECK(f.read_string("cnote") == "a C string");
    CHECK_FALSE(f.exists("nothing"));
    CHECK(f.scalar<std::int64_t>("some") == 7);
    CHECK(f.type_info("flag").cls == H5T_ENUM);
    CHECK(f.scalar<bool>("flag") == true);
    CHECK(f.dims("line") == std::vector<hsize_t>{4});
    CHECK(f.read<double>("line") == std::vector<double>{1, 2, 3, 4});
    CHECK(f.children("/") == std::vector<std::string>{"arr", "cnote", "flag", "hist", "line", "mean", "n_events",
                                                      "note", "some", "timestamp", "u", "x"});
}

TEST_CASE("a View summary of any rank is written with its shape", "[serial][summary]") {
    // Decided: save_summary(view) keeps the view's shape (never flattened, never refused).
    const std::string path = fresh("summary_2d.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "x", 1.0);
        const double img[6] = {1, 2, 3, 4, 5, 6};
        smd.save_summary("img", smalldata::view(img, {2, 3}));
        smd.save_summary("after", 1.0);
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.dims("img") == std::vector<hsize_t>{2, 3});
    CHECK(f.read<double>("img") == std::vector<double>{1, 2, 3, 4, 5, 6});
    CHECK(f.scalar<double>("after") == 1.0);
}

TEST_CASE("a file with no events still opens and holds the summary", "[serial][summary]") {
    const std::string path = fresh("no_events.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.save_summary("n", std::int32_t(0));
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.scalar<std::int32_t>("n") == 0);
    if (f.exists("timestamp")) CHECK(f.dims("timestamp") == std::vector<hsize_t>{0});
}

TEST_CASE("a summary/field name clash is refused where the second name appears; the file keeps everything else",
          "[serial][summary][errors]") {
    // Decided: the call that introduces the second name throws Errc::name (save_summary()
    // for a summary after a field, event() for a field after a summary), nothing of that
    // call is recorded, and done() then writes every event and every other summary.
    const std::string path = fresh("summary_clash.h5");
    std::string first_code, what;
    std::int64_t n = 3000;  // more than one cache of rows: the file must hold them all
    {
        smalldata::Options o = file_opts(path);
        o.cache_size = 1024;
        smalldata::SmallData smd(o);
        smd.save_summary("kept", 5.0);
        const auto clash = [&](auto&& f) {
            const Thrown t = thrown(f);
            if (first_code.empty()) first_code = t.code;
            CHECK(t.code == "name");
            what += t.what + "\n";
        };
        for (std::int64_t i = 0; i < n; ++i) {
            smd.event(i, "x", static_cast<double>(i), "det/roi", std::array<std::int16_t, 2>{1, 2});
            if (i == 10) {
                clash([&] { smd.save_summary("x", 2.0); });          // summary named like a field
                clash([&] { smd.save_summary("det", 2.0); });        // summary that is a field's group
                clash([&] { smd.save_summary("x/sub", 2.0); });      // summary that needs a field as group
                smd.save_summary("y", 1.0);
                smd.save_summary("grp/s", 1.0);
            }
            if (i == 20) {
                clash([&] { smd.event(i, "y", 1.0); });              // field named like a summary
                clash([&] { smd.event(i, "grp", 1.0); });            // field that is a summary's group
                clash([&] { smd.event(i, "y/sub", 1.0); });          // field that needs a summary as group
                // a var_ field whose group's lengths ('var_q_len', a field the user never
                // names) would take a summary's name: the message says where it comes from
                smd.save_summary("var_q_len", 1.0);
                const Thrown t = thrown([&] { smd.event(i, "var_q/x", std::vector<float>{1, 2}); });
                CHECK(t.code == "name");
                CHECK_THAT(t.what, Catch::Contains("field 'var_q/x' starts the var_ group whose lengths are the field "
                                                   "'var_q_len'") &&
                                       Catch::Contains("has the name of a summary saved before"));
            }
        }
        CHECK_NOTHROW(smd.done());
    }
    CAPTURE(what);
    CHECK(what.find("'x'") != std::string::npos);
    CHECK(what.find("'y'") != std::string::npos);
    h5r::File f(path);
    CHECK(mismatch(f.read<std::int64_t>("timestamp"), ramp<std::int64_t>(n)) == "");
    CHECK(mismatch(f.read<double>("x"), ramp<double>(n)) == "");
    CHECK(f.dims("det/roi") == std::vector<hsize_t>{hsize_t(n), 2});
    CHECK(f.scalar<double>("kept") == 5.0);
    CHECK(f.scalar<double>("y") == 1.0);
    CHECK(f.scalar<double>("grp/s") == 1.0);
    CHECK(f.children("/") == std::vector<std::string>{"det", "grp", "kept", "timestamp", "var_q_len", "x", "y"});
    CHECK(f.scalar<double>("var_q_len") == 1.0);
}

TEST_CASE("invalid summary names are Errc::name at save_summary()", "[serial][summary][errors]") {
    smalldata::SmallData smd(file_opts(fresh("summary_names.h5")));
    smd.event(0, "a", 1.0);
    CHECK(thrown([&] { smd.save_summary("timestamp", 2.0); }).code == "name");
    CHECK(thrown([&] { smd.save_summary("a//b", 2.0); }).code == "name");
    CHECK(thrown([&] { smd.save_summary(std::string("a\0b", 3), 2.0); }).code == "name");
    smd.done();
}

// ==================================================================== callbacks

namespace {
struct SeenField {
    DType dtype;
    smalldata::Shape shape;
    bool aligned;
};
struct SeenEvent {
    std::int64_t ts = 0;
    std::size_t size = 0;
    std::map<std::string, SeenField> fields;
    std::optional<double> a;
    std::optional<std::int32_t> b;
    std::vector<std::int16_t> roi;
    std::vector<float> v;
    std::optional<bool> flag;
    std::vector<double> a_as_vector;
    std::int32_t b_via_field = 0;
    std::string wrong_type, missing, scalar_of_array, field_missing;
};

SeenEvent record(const smalldata::Event& ev) {
    SeenEvent s;
    s.ts = ev.timestamp();
    s.size = ev.size();
    for (smalldata::Field f : ev) s.fields[f.name()] = SeenField{f.dtype(), f.shape(), f.aligned()};
    if (ev.has("a")) {
        s.a = ev.get<double>("a");
        s.a_as_vector = ev.get_vector<double>("a");
        s.wrong_type = thrown([&] { (void)ev.get<float>("a"); }).code;
    }
    if (ev.has("b")) {
        s.b = ev.get<std::int32_t>("b");
        s.b_via_field = ev.field("b").value<std::int32_t>();
    }
    if (ev.has("det/roi")) {
        s.roi = ev.get_vector<std::int16_t>("det/roi");
        s.scalar_of_array = thrown([&] { (void)ev.get<std::int16_t>("det/roi"); }).code;
    }
    if (ev.has("v")) s.v = ev.get_vector<float>("v");
    if (ev.has("flag")) s.flag = ev.get<bool>("flag");
    s.missing = thrown([&] { (void)ev.get<double>("no_such_field"); }).code;
    s.field_missing = thrown([&] { (void)ev.field("no_such_field"); }).code;
    return s;
}

void three_events(smalldata::SmallData& smd) {
    smd.event(10, "a", 1.0);
    smd.event(10, "b", std::int32_t(2), "det/roi", std::array<std::int16_t, 4>{1, 2, 3, 4});
    smd.event(11, "a", 2.0, "unaligned_z", std::uint8_t(3));
    smd.event(15, "v", std::vector<float>{0.5f, 1.5f});
    smd.event(15, "flag", true);
}

void check_three_events(const std::vector<SeenEvent>& seen) {
    REQUIRE(seen.size() == 3);
    const SeenEvent& e0 = seen[0];
    const SeenEvent& e1 = seen[1];
    const SeenEvent& e2 = seen[2];
    CHECK(e0.ts == 10);
    CHECK(e1.ts == 11);
    CHECK(e2.ts == 15);
    // Event 10: fields merged from two event() calls.
    CHECK(e0.size == 3);
    REQUIRE(e0.fields.size() == 3);
    CHECK(e0.fields.count("a") == 1);
    CHECK(e0.fields.count("b") == 1);
    REQUIRE(e0.fields.count("det/roi") == 1);
    CHECK(e0.fields.at("a").dtype == DType::f64);
    CHECK(int(e0.fields.at("a").shape.rank) == 0);
    CHECK(e0.fields.at("b").dtype == DType::i32);
    CHECK(e0.fields.at("det/roi").dtype == DType::i16);
    CHECK(int(e0.fields.at("det/roi").shape.rank) == 1);
    CHECK(e0.fields.at("det/roi").shape.dims[0] == 4);
    CHECK(e0.fields.at("det/roi").aligned);
    CHECK(e0.a == std::optional<double>{1.0});
    CHECK(e0.a_as_vector == std::vector<double>{1.0});
    CHECK(e0.b == std::optional<std::int32_t>{2});
    CHECK(e0.b_via_field == 2);
    CHECK(e0.roi == std::vector<std::int16_t>{1, 2, 3, 4});
    CHECK(e0.wrong_type == "type_mismatch");
    CHECK(e0.missing == "missing_field");
    CHECK(e0.field_missing == "missing_field");
    // A scalar get of an array field is refused (type or shape mismatch).
    CHECK(e0.scalar_of_array == "shape_mismatch");  // the type matches; the shape does not
    // Event 11: only what was given (no fill values), including the unaligned field.
    CHECK(e1.size == 2);
    CHECK(e1.a == std::optional<double>{2.0});
    CHECK_FALSE(e1.b.has_value());
    CHECK(e1.roi.empty());
    REQUIRE(e1.fields.count("unaligned_z") == 1);
    CHECK_FALSE(e1.fields.at("unaligned_z").aligned);
    CHECK(e1.fields.at("unaligned_z").dtype == DType::u8);
    // Event 15.
    CHECK(e2.size == 2);
    CHECK(e2.v == std::vector<float>{0.5f, 1.5f});
    CHECK(e2.flag == std::optional<bool>{true});
    REQUIRE(e2.fields.count("v") == 1);
    CHECK(e2.fields.at("v").dtype == DType::f32);
    CHECK(e2.fields.at("v").shape.dims[0] == 2);
    CHECK(e2.fields.at("flag").dtype == DType::boolean);
    CHECK(e2.missing == "missing_field");
}
}  // namespace

TEST_CASE("callbacks see each complete event once, fields merged, in timestamp order", "[serial][callbacks]") {
    const std::string path = fresh("callbacks.h5");
    std::vector<SeenEvent> seen1;
    std::vector<std::int64_t> seen2;
    {
        smalldata::Options o = file_opts(path);
        o.callbacks.push_back([&](const smalldata::Event& ev) { seen1.push_back(record(ev)); });
        o.callbacks.push_back([&](const smalldata::Event& ev) { seen2.push_back(ev.timestamp()); });
        smalldata::SmallData smd(o);
        three_events(smd);
        smd.done();
        // done() runs every callback.
        CHECK(seen1.size() == 3);
        smd.done();
        CHECK(seen1.size() == 3);
    }
    check_three_events(seen1);
    CHECK(seen2 == std::vector<std::int64_t>{10, 11, 15});
    // The file holds the same events.
    h5r::File f(path);
    CHECK(f.read<std::int64_t>("timestamp") == std::vector<std::int64_t>{10, 11, 15});
    CHECK(f.read<std::int32_t>("b") == std::vector<std::int32_t>{2, -99999, -99999});
    CHECK(f.read<std::uint8_t>("unaligned_z") == std::vector<std::uint8_t>{3});
}

TEST_CASE("callbacks run in timestamp order across many batches", "[serial][callbacks]") {
    const std::string path = fresh("callbacks_many.h5");
    constexpr std::int64_t n = 3000;
    std::vector<std::int64_t> ts;
    std::int64_t bad_events = 0;
    {
        smalldata::Options o = file_opts(path);
        o.batch_size = 7;
        o.cache_size = 11;
        o.callbacks.push_back([&](const smalldata::Event& ev) {
            ts.push_back(ev.timestamp());
            const std::int64_t i = ev.timestamp() / 10;
            if (ev.size() != 2 || ev.get<std::int64_t>("p") != i || ev.get<double>("q") != static_cast<double>(-i))
                ++bad_events;
        });
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < n; ++i) {
            smd.event(10 * i, "p", i);
            smd.event(10 * i, "q", static_cast<double>(-i));
        }
        smd.done();
    }
    REQUIRE(ts.size() == std::size_t(n));
    for (std::size_t i = 0; i < ts.size(); ++i)
        if (ts[i] != 10 * static_cast<std::int64_t>(i)) FAIL("callback " << i << " saw timestamp " << ts[i]);
    CHECK(bad_events == 0);
    h5r::File f(path);
    CHECK(f.dims("p") == std::vector<hsize_t>{hsize_t(n)});
}

TEST_CASE("a callback that throws loses the rest of its batch but never writes an event twice",
          "[serial][callbacks]") {
    const std::string path = fresh("callbacks_throw.h5");
    std::int64_t calls = 0;
    bool thrown_once = false;
    std::int64_t caught = 0;
    {
        smalldata::Options o = file_opts(path);
        o.batch_size = 16;
        o.callbacks.push_back([&](const smalldata::Event& ev) {
            ++calls;
            if (ev.timestamp() == 50 && !thrown_once) {
                thrown_once = true;
                throw std::runtime_error("analysis failed at 50");
            }
        });
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < 200; ++i) {
            try {
                smd.event(i, "x", static_cast<double>(i));
            } catch (const std::runtime_error& e) {
                CHECK(std::string(e.what()) == "analysis failed at 50");
                ++caught;
            }
        }
        smd.done();
    }
    CHECK(caught == 1);
    h5r::File f(path);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto x = f.read<double>("x");
    REQUIRE(x.size() == ts.size());
    std::set<std::int64_t> uniq(ts.begin(), ts.end());
    CHECK(uniq.size() == ts.size());                         // no event twice
    CHECK(std::is_sorted(ts.begin(), ts.end()));
    for (std::size_t r = 0; r < ts.size(); ++r) CHECK(x[r] == static_cast<double>(ts[r]));  // rows aligned
    // The batch holding event 50 is events 48-63, shipped by the event() call for 64, which
    // throws and so records nothing: 48 and 49 were written before the throw, 50-64 are
    // lost, everything else is there.
    CHECK(ts.size() == 200 - 15);
    CHECK(uniq.count(49) == 1);
    CHECK(uniq.count(50) == 0);
    CHECK(uniq.count(64) == 0);
    CHECK(uniq.count(65) == 1);
    CHECK(calls == static_cast<std::int64_t>(ts.size()) + 1);
}

TEST_CASE("with an empty filename callbacks run and no file is written", "[serial][callbacks]") {
    std::vector<SeenEvent> seen;
    std::vector<std::string> warnings;
    std::int64_t reduced = 0;
    const std::vector<std::string> left = files_left_in_cwd("empty_filename_cwd", [&] {
        smalldata::Options o;
        o.callbacks.push_back([&](const smalldata::Event& ev) { seen.push_back(record(ev)); });
        o.logger = warnings_into(warnings);
        smalldata::SmallData smd(o);
        CHECK(smd.role() == Role::serial);
        three_events(smd);
        reduced = smd.sum(std::int64_t(3));
        smd.save_summary("n", reduced);  // nowhere to go: must not fail or write, and done() says so
        for (int i = 0; i < 6; ++i) smd.save_summary("s" + std::to_string(i), i);
        smd.done();
        smd.done();  // said once
    });
    check_three_events(seen);
    CHECK(reduced == 3);
    CHECK(left.empty());
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("no output file (Options::filename is empty): not saved: summary 'n', summary 's0', "
                           "summary 's1', summary 's2', summary 's3' and 2 more") != std::string::npos);
}

TEST_CASE("with an empty filename and nothing saved, done() warns of nothing", "[serial][callbacks]") {
    std::vector<std::string> warnings;
    smalldata::Options o;
    o.logger = warnings_into(warnings);
    smalldata::SmallData smd(o);
    three_events(smd);
    smd.done();
    CHECK(warnings.empty());
}

// ==================================================================== done(), destructor

TEST_CASE("done() is idempotent", "[serial][done]") {
    const std::string path = fresh("done_twice.h5");
    smalldata::SmallData smd(file_opts(path));
    for (std::int64_t i = 0; i < 5; ++i) smd.event(i, "x", static_cast<std::int32_t>(i));
    smd.done();
    CHECK_NOTHROW(smd.done());
    CHECK(smd.stats().events == 5);
    // The file is complete after the first done(), while the object still exists.
    h5r::File f(path);
    CHECK(f.read<std::int64_t>("timestamp") == std::vector<std::int64_t>{0, 1, 2, 3, 4});
    CHECK(f.read<std::int32_t>("x") == std::vector<std::int32_t>{0, 1, 2, 3, 4});
}

TEST_CASE("the destructor completes the file", "[serial][done]") {
    const std::string path = fresh("destructor.h5");
    {
        smalldata::Options o = file_opts(path);
        o.cache_size = 3;
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < 10; ++i) smd.event(i, "x", static_cast<double>(i), "det/y", std::array<std::uint8_t, 2>{1, 2});
        smd.save_summary("s", 1.0);
        // no done()
    }
    h5r::File f(path);
    CHECK(f.dims("timestamp") == std::vector<hsize_t>{10});
    CHECK(f.read<double>("x") == std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(f.dims("det/y") == std::vector<hsize_t>{10, 2});
    CHECK(f.scalar<double>("s") == 1.0);
}

TEST_CASE("event() after done() is Errc::usage and writes nothing", "[serial][done]") {
    // Decided: dropping data silently is worse than an error (save_summary and the
    // reductions throw usage after done() too).
    const std::string path = fresh("event_after_done.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "x", 1.0);
        smd.event(1, "x", 2.0);
        smd.done();
        const Thrown t = thrown([&] { smd.event(2, "x", 3.0, "new_field", 1); });
        CHECK(t.code == "usage");
        CHECK_THAT(t.what, Catch::Contains("after done()"));
        CHECK(thrown([&] { smd.save_summary("s", 1.0); }).code == "usage");
        CHECK(thrown([&] { (void)smd.sum(1.0); }).code == "usage");
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.read<std::int64_t>("timestamp") == std::vector<std::int64_t>{0, 1});
    CHECK(f.read<double>("x") == std::vector<double>{1.0, 2.0});
    CHECK_FALSE(f.exists("new_field"));
}

TEST_CASE("a View of a null pointer is Errc::usage naming the field; nothing of the event is lost",
          "[serial][errors]") {
    // It read address 0 (a crash). A View with no elements may be null: nothing is read.
    const std::string path = fresh("null_view.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        std::vector<float> v{1, 2, 3};
        smd.event(0, "x", 1.0, "v", smalldata::view(v.data(), {3}));
        const Thrown t = thrown([&] { smd.event(1, "x", 2.0, "v", smalldata::view(static_cast<const float*>(nullptr), {3})); });
        CHECK(t.code == "usage");
        CHECK_THAT(t.what, Catch::Contains("field 'v'") && Catch::Contains("float32 (3)") && Catch::Contains("null pointer"));
        smd.event(2, "x", 3.0, "v", smalldata::view(v.data(), {3}), "e", smalldata::view(static_cast<const float*>(nullptr), {0}));
        const Thrown s = thrown([&] { smd.save_summary("s", smalldata::view(static_cast<const double*>(nullptr), {2, 2})); });
        CHECK(s.code == "usage");
        CHECK_THAT(s.what, Catch::Contains("summary 's'") && Catch::Contains("null pointer"));
        const Thrown a = thrown([&] { smd.save_attribute("x", "a", smalldata::view(static_cast<const int*>(nullptr), {1})); });
        CHECK(a.code == "usage");
        CHECK_THAT(a.what, Catch::Contains("null pointer"));
        smd.done();
    }
    h5r::File f(path);
    // The event of the failed call keeps what it was given before the null view.
    CHECK(f.read<std::int64_t>("timestamp") == std::vector<std::int64_t>{0, 1, 2});
    CHECK(f.read<double>("x") == std::vector<double>{1.0, 2.0, 3.0});
    const auto v = f.read<float>("v");
    REQUIRE(v.size() == 9);
    CHECK(v[0] == 1.0f);
    CHECK(std::isnan(v[3]));
    CHECK(v[8] == 3.0f);
    CHECK(f.read<float>("e").empty());
    CHECK_FALSE(f.exists("s"));
}

// ==================================================================== share

TEST_CASE("share() yields every index in serial mode", "[serial][share]") {
    smalldata::SmallData smd(smalldata::Options{});
    std::vector<std::int64_t> got;
    for (std::int64_t i : smd.share(10)) got.push_back(i);
    CHECK(got == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(smd.share(10).size() == 10);
    got.clear();
    for (std::int64_t i : smd.share(3, 8)) got.push_back(i);
    CHECK(got == std::vector<std::int64_t>{3, 4, 5, 6, 7});
    CHECK(smd.share(3, 8).size() == 5);
    got.clear();
    for (std::int64_t i : smd.share(0)) got.push_back(i);
    CHECK(got.empty());
    CHECK(smd.share(0).size() == 0);
}

// ==================================================================== name tables

TEST_CASE("dtype, error and shape names", "[serial][names]") {
    using smalldata::dtype_name;
    using smalldata::dtype_size;
    const std::vector<std::pair<DType, std::string>> names{
        {DType::i8, "int8"},     {DType::i16, "int16"},    {DType::i32, "int32"},   {DType::i64, "int64"},
        {DType::u8, "uint8"},    {DType::u16, "uint16"},   {DType::u32, "uint32"},  {DType::u64, "uint64"},
        {DType::f32, "float32"}, {DType::f64, "float64"}, {DType::boolean, "bool"}};
    const std::vector<std::size_t> sizes{1, 2, 4, 8, 1, 2, 4, 8, 4, 8, 1};
    for (std::size_t i = 0; i < names.size(); ++i) {
        CHECK(dtype_name(names[i].first) == names[i].second);
        CHECK(dtype_size(names[i].first) == sizes[i]);
    }
#define SMALLDATA_TEST_X(id, text)                                          \
    CHECK(std::string(smalldata::errc_name(Errc::id)) == #id);           \
    CHECK(std::string(smalldata::errc_description(Errc::id)) == text);
    SMALLDATA_ERRORS(SMALLDATA_TEST_X)
#undef SMALLDATA_TEST_X
    CHECK(std::string(smalldata::role_name(Role::client)) == "client");
    CHECK(std::string(smalldata::role_name(Role::server)) == "server");
    CHECK(std::string(smalldata::role_name(Role::other)) == "other");
    smalldata::Shape s;
    CHECK(s.str() == "()");
    s.rank = 1;
    s.dims[0] = 4;
    CHECK(s.str() == "(4)");
    s.rank = 2;
    s.dims[0] = 256;
    s.dims[1] = 256;
    CHECK(s.str() == "(256, 256)");
    CHECK(s.count() == 65536);
}

TEST_CASE("a logger that throws: its messages go to stderr and the run goes on", "[serial][logger]") {
    const std::string path = h5r::test_path("logger_throws.h5");
    int calls = 0;
    smalldata::Options o;
    o.filename = path;
    o.logger = [&calls](smalldata::LogLevel, const std::string&) {
        ++calls;
        throw std::runtime_error("the logger failed");
    };
    // stderr into a temporary file for the duration of the run
    std::fflush(stderr);
    const int saved = dup(2);
    std::FILE* tmp = std::tmpfile();
    REQUIRE(tmp != nullptr);
    dup2(fileno(tmp), 2);
    {
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < 100; ++i) smd.event(i, "x", static_cast<double>(i));
        smd.save_summary("none", std::optional<double>());
        smd.done();
    }
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::rewind(tmp);
    std::string text;
    for (int c; (c = std::fgetc(tmp)) != EOF;) text += static_cast<char>(c);
    std::fclose(tmp);
    CAPTURE(text);
    CHECK(calls == 2);  // the warning and the report
    CHECK(text.find("smalldata: the logger threw an exception; its message follows\nsmalldata: warning: save_summary: "
                    "'none' has no value") != std::string::npos);
    CHECK(text.find("smalldata: report: 100 events, 1.60 kB in ") != std::string::npos);
    h5r::File f(path);
    CHECK(f.read<double>("x").size() == 100);
}
