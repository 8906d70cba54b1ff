// test_parallel.cpp - parallel mode under mpiexec (also runs as 1 rank: serial mode).
//
// Every rank runs every TEST_CASE in the same order; library calls are collective, the
// checks of the output run on world rank 0 after done() (the file is complete then).
// Layouts adapt to the world size: registered in tests/meson.build at 1, 2, 3, 5 and 7 ranks.
#include "../catch_compat.hpp"

#include "smalldata.hpp"
#include "../h5read.hpp"
#include "../rss.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

using smalldata::Errc;
using smalldata::Options;
using smalldata::Role;
using smalldata::SmallData;

namespace {

int world_rank() {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}
int world_size() {
    int n = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}
// Servers for this world size: 1 for 2-4 ranks, 2 for 5-6, 3 for 7 and more.
int servers_for(int size) { return size >= 7 ? 3 : size >= 5 ? 2 : 1; }

// Which server wrote timestamp i, given that client c = i % clients handles event i.
int server_of(std::int64_t i, int clients, int servers) { return static_cast<int>(i % clients) % servers; }

std::string fresh_dir(const std::string& name) {
    const std::string dir = h5r::test_path(name);
    if (world_rank() == 0) {
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    return dir;
}

// Options for every test: batches go through shared memory (the default) unless
// SMALLDATA_TEST_MESSAGES is set, which runs the same cases over MPI messages only.
// SMALLDATA_TEST_WRITE_THREAD=1 gives every server a write thread (default: automatic).
Options base_options() {
    Options o;
    o.shared_memory = std::getenv("SMALLDATA_TEST_MESSAGES") == nullptr;
    if (std::getenv("SMALLDATA_TEST_WRITE_THREAD")) o.write_thread = 1;
    return o;
}

// base_options() for this rank count's layout (servers_for), writing `filename`.
Options layout_options(const std::string& filename) {
    Options o = base_options();
    o.servers = servers_for(world_size());
    o.filename = filename;
    return o;
}

// The names in a directory, sorted.
std::vector<std::string> files_in(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

long long sum_over_world(long long v) {
    long long out = 0;
    MPI_Allreduce(&v, &out, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    return out;
}

}  // namespace

TEST_CASE("nothing lost: every timestamp exactly once, every row consistent", "[mpi]") {
    const int size = world_size();
    const std::string dir = fresh_dir("lost");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/lost.h5";
    o.batch_size = 37;   // odd, so batches end mid-cache and caches end mid-chunk
    o.cache_size = 101;
    o.batch_bytes = 8191;
    const std::int64_t n = 100003;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n)) {
            std::array<std::int16_t, 3> arr{static_cast<std::int16_t>(i % 1000), static_cast<std::int16_t>(-(i % 1000)), 7};
            smd.event(i, "x", static_cast<double>(i) * 0.5, "n", static_cast<std::uint32_t>(i));
            smd.event(i, "g/arr", arr);  // same timestamp: the same event
            if (i % 3 == 0) smd.event(i, "third", static_cast<std::int32_t>(i / 3));
        }
        smd.done();
    }
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        auto ts = f.read<std::int64_t>("timestamp");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        std::vector<char> seen(static_cast<std::size_t>(n), 0);
        for (auto t : ts) {
            REQUIRE(t >= 0);
            REQUIRE(t < n);
            REQUIRE(seen[static_cast<std::size_t>(t)] == 0);
            seen[static_cast<std::size_t>(t)] = 1;
        }
        auto x = f.read<double>("x");
        auto nn = f.read<std::uint32_t>("n");
        auto arr = f.read<std::int16_t>("g/arr");
        auto third = f.read<std::int32_t>("third");
        REQUIRE(x.size() == ts.size());
        REQUIRE(nn.size() == ts.size());
        REQUIRE(arr.size() == 3 * ts.size());
        REQUIRE(third.size() == ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) {
            const std::int64_t t = ts[r];
            bad += x[r] != static_cast<double>(t) * 0.5;
            bad += nn[r] != static_cast<std::uint32_t>(t);
            bad += arr[3 * r] != static_cast<std::int16_t>(t % 1000) || arr[3 * r + 2] != 7;
            bad += (t % 3 == 0) ? third[r] != static_cast<std::int32_t>(t / 3) : third[r] != -99999;
        }
        CHECK(bad == 0);
    }
}

// A field first given after checkpoints began: its dataset is made while the part file
// is in SWMR mode. Every client pauses after its first 100 events, so that the servers
// take checkpoints while idle, then a new field appears half-way. With the groups' links
// in their object headers (HDF5's default), the root's already full of the part's
// attributes, HDF5 1.10 failed to flush or close such a part file (the job then ended);
// the links are now kept in dense storage (h5_dense_links). Every row is checked.
TEST_CASE("a field first given after idle checkpoints is written; every part file flushes and closes", "[mpi][files]") {
    const std::string dir = fresh_dir("late_field");
    Options o = layout_options(dir + "/lf.h5");
    o.checkpoint_seconds = 1;  // a checkpoint every 0.4 s
    o.batch_size = 37;
    const std::int64_t n = 3000;
    {
        SmallData smd(o);
        const std::vector<std::uint16_t> img(24, 5);
        std::int64_t k = 0;
        for (std::int64_t i : smd.share(n)) {
            if (k++ == 100) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
            smd.event(2 * i, "x", static_cast<double>(i) * 0.5, "id", i);
            smd.event(2 * i, "det/img", smalldata::view(img.data(), {24}));
            if (i >= n / 2) smd.event(2 * i, "late", static_cast<float>(i));
        }
        smd.done();
    }
    if (world_rank() != 0) return;
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto id = f.read<std::int64_t>("id");
    const auto x = f.read<double>("x");
    const auto img = f.read<std::uint16_t>("det/img");
    const auto late = f.read<float>("late");
    REQUIRE(ts.size() == static_cast<std::size_t>(n));
    REQUIRE(id.size() == ts.size());
    REQUIRE(x.size() == ts.size());
    REQUIRE(late.size() == ts.size());
    REQUIRE(img.size() == 24 * ts.size());
    std::size_t bad = 0;
    std::vector<char> seen(static_cast<std::size_t>(n), 0);
    for (std::size_t r = 0; r < ts.size(); ++r) {
        const std::int64_t i = id[r];
        REQUIRE(i >= 0);
        REQUIRE(i < n);
        bad += seen[static_cast<std::size_t>(i)]++ != 0;
        bad += ts[r] != 2 * i || x[r] != static_cast<double>(i) * 0.5;
        bad += i >= n / 2 ? late[r] != static_cast<float>(i) : !std::isnan(late[r]);
        for (std::size_t j = 0; j < 24; ++j) bad += img[24 * r + j] != 5;
    }
    CHECK(bad == 0);
}

TEST_CASE("roles, explicit and defaulted; leftover ranks are other", "[mpi]") {
    const int size = world_size();
    const std::string dir = fresh_dir("roles");
    Options o = base_options();
    o.filename = dir + "/roles.h5";
    o.servers = size >= 3 ? 2 : 1;
    if (size >= 5) o.clients = size - o.servers - 2;  // two ranks left over
    const std::int64_t n = 1000;
    int expected_clients = size == 1 ? 1 : (o.clients == -1 ? size - o.servers : o.clients);
    {
        SmallData smd(o);
        const int r = world_rank();
        if (size == 1) {
            CHECK(smd.role() == Role::serial);
        } else if (r < o.servers) {
            CHECK(smd.role() == Role::server);
            CHECK(smd.server_index() == r);
            CHECK(!smd.summary());
            CHECK(smd.share(n).size() == 0);
            CHECK_THROWS_AS(smd.sum(1), smalldata::Error);
        } else if (r < o.servers + expected_clients) {
            CHECK(smd.role() == Role::client);
            CHECK(smd.client_index() == r - o.servers);
            CHECK(smd.server_index() == (r - o.servers) % o.servers);
            CHECK(smd.summary());
        } else {
            CHECK(smd.role() == Role::other);
            CHECK(smd.client_index() == -1);
            CHECK(!smd.summary());
            CHECK(smd.share(n).size() == 0);
        }
        CHECK(smd.client_count() == expected_clients);
        // Every rank calls event() for every i: only the clients' share must land, once.
        std::int64_t mine = 0;
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "v", i);
            ++mine;
        }
        smd.event(n + 1000 + r, "v", std::int64_t(-1));  // servers and others: ignored
        smd.done();
        // (After done(): servers leave their constructor only once the clients are done, so
        // a collective of the world before this point would deadlock.)
        CHECK(sum_over_world(mine) == n);
    }
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        auto ts = f.read<std::int64_t>("timestamp");
        const auto expect = static_cast<std::size_t>(n) + static_cast<std::size_t>(size == 1 ? 1 : expected_clients);
        CHECK(ts.size() == expect);  // the share plus one extra event per client
        std::set<std::int64_t> uniq(ts.begin(), ts.end());
        CHECK(uniq.size() == ts.size());
        for (int k = 0; k < o.servers && size > 1; ++k)
            CHECK(h5r::file_exists(dir + "/roles_part" + std::to_string(k) + ".h5"));
        CHECK_FALSE(h5r::file_exists(dir + "/roles_part" + std::to_string(o.servers) + ".h5"));
    }
}

TEST_CASE("fields missing on whole servers are padded; unaligned fields span servers", "[mpi]") {
    const int size = world_size();
    const std::string dir = fresh_dir("missing");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/m.h5";
    o.cache_size = 13;
    const std::int64_t n = 5000;
    int clients = 1;
    {
        SmallData smd(o);
        clients = smd.client_count();
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "all", static_cast<float>(i));
            if (smd.server_index() == 0 || smd.role() == Role::serial) smd.event(i, "only_s0", static_cast<std::int64_t>(i));
            if (i % 7 == 0) smd.event(i, "grp/unaligned_u", static_cast<std::uint16_t>(i % 60000));
            if (i >= n / 2) smd.event(i, "late", static_cast<std::uint8_t>(i % 200));
        }
        smd.done();
    }
    if (world_rank() == 0) {
        const int servers = size == 1 ? 1 : o.servers;
        h5r::File f(o.filename);
        auto ts = f.read<std::int64_t>("timestamp");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        auto all = f.read<float>("all");
        auto s0 = f.read<std::int64_t>("only_s0");
        auto late = f.read<std::uint8_t>("late");
        REQUIRE(s0.size() == ts.size());
        REQUIRE(late.size() == ts.size());
        CHECK(f.fill_value<std::int64_t>("only_s0") == -99999);
        CHECK(f.fill_value<std::uint8_t>("late") == 255);
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) {
            const std::int64_t t = ts[r];
            bad += all[r] != static_cast<float>(t);
            const bool on_s0 = server_of(t, clients, servers) == 0;
            bad += on_s0 ? s0[r] != t : s0[r] != -99999;
            bad += t >= n / 2 ? late[r] != static_cast<std::uint8_t>(t % 200) : late[r] != 255;
        }
        CHECK(bad == 0);
        auto u = f.read<std::uint16_t>("grp/unaligned_u");
        std::multiset<std::uint16_t> got(u.begin(), u.end()), want;
        for (std::int64_t i = 0; i < n; i += 7) want.insert(static_cast<std::uint16_t>(i % 60000));
        CHECK(got == want);
    }
}

TEST_CASE("the output directory can be moved and read from elsewhere", "[mpi]") {
    const int size = world_size();
    const std::string dir = fresh_dir("move");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/a/run.h5";
    if (world_rank() == 0) std::filesystem::create_directories(dir + "/a");
    MPI_Barrier(MPI_COMM_WORLD);
    const std::int64_t n = 2000;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n)) smd.event(i, "det/sum", static_cast<double>(i) + 0.25);
        smd.done();
    }
    if (world_rank() == 0) {
        std::filesystem::rename(dir + "/a", dir + "/b");
        const auto cwd = std::filesystem::current_path();
        std::filesystem::current_path(dir);  // neither the old nor the new directory
        h5r::File f(dir + "/b/run.h5");
        auto ts = f.read<std::int64_t>("timestamp");
        auto v = f.read<double>("det/sum");
        std::filesystem::current_path(cwd);
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        REQUIRE(v.size() == ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) bad += v[r] != static_cast<double>(ts[r]) + 0.25;
        CHECK(bad == 0);
    }
}

TEST_CASE("callbacks run on the writing rank with complete events", "[mpi]") {
    const int size = world_size();
    const std::string dir = fresh_dir("callbacks");
    std::atomic<long long> seen{0}, complete{0};
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/cb.h5";
    o.callbacks.push_back([&](const smalldata::Event& e) {
        ++seen;
        if (e.has("a") && e.has("b") && e.get<std::int32_t>("a") == static_cast<std::int32_t>(e.timestamp()) &&
            e.get<double>("b") == 2.0 * static_cast<double>(e.timestamp()))
            ++complete;
    });
    const std::int64_t n = 3000;
    Role role;
    {
        SmallData smd(o);
        role = smd.role();
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "a", static_cast<std::int32_t>(i));
            smd.event(i, "b", 2.0 * static_cast<double>(i));
        }
        smd.done();
    }
    // Only writers (servers, or the serial process) ever see events.
    if (role == Role::client || role == Role::other) CHECK(seen == 0);
    CHECK(seen == complete);
    CHECK(sum_over_world(seen) == n);
}

TEST_CASE("an empty filename writes nothing and still runs the callbacks", "[mpi]") {
    const int size = world_size();
    const std::string dir = fresh_dir("nofile");
    long long seen = 0;
    Options o = base_options();
    o.servers = servers_for(size);
    o.callbacks.push_back([&](const smalldata::Event&) { ++seen; });
    std::vector<std::string> unsaved;  // the warnings of what could not be saved
    o.logger = [&](smalldata::LogLevel level, const std::string& m) {
        if (level == smalldata::LogLevel::warning && m.find("no output file") != std::string::npos) unsaved.push_back(m);
    };
    const std::int64_t n = 1234;
    bool holder = false;  // client 0, or the serial process: the one that holds summaries
    {
        SmallData smd(o);
        holder = smd.summary() && smd.client_index() == 0;
        for (std::int64_t i : smd.share(n)) smd.event(i, "x", i);
        if (smd.summary()) smd.save_summary("total", smd.sum(std::int64_t(1)));
        smd.save_attribute("x", "units", "mm");
        smd.done();
    }
    CHECK(sum_over_world(seen) == n);
    if (world_rank() == 0) CHECK(std::filesystem::is_empty(dir));
    // Nothing is dropped silently: the rank that held them names them, once.
    if (holder) {
        CHECK(unsaved.size() == 1);  // CHECK, not REQUIRE: every rank must reach the collective below
        if (!unsaved.empty())
            CHECK(unsaved[0].find("no output file (Options::filename is empty): not saved: summary 'total', "
                                  "attribute 'units' of 'x'") != std::string::npos);
    } else {
        CHECK(unsaved.empty());
    }
    CHECK(sum_over_world(holder ? 1 : 0) == 1);
}

TEST_CASE("reductions over the clients", "[mpi]") {
    const std::string dir = fresh_dir("reduce");
    Options o = layout_options(dir + "/r.h5");
    SmallData smd(o);
    if (smd.summary()) {
        const int c = smd.client_index();
        const int nc = smd.client_count();
        CHECK(smd.sum(c) == nc * (nc - 1) / 2);
        CHECK(smd.min(c + 10) == 10);
        CHECK(smd.max(static_cast<double>(c) * 1.5) == 1.5 * (nc - 1));
        CHECK(smd.sum(std::uint64_t(1)) == static_cast<std::uint64_t>(nc));
        // Unsigned values in the top half of their range (MPICH 4.0 compares unsigned types as
        // signed under min and max: min(255, 2) of uint8 was 255 there).
        CHECK(smd.max(static_cast<std::uint8_t>(c == 0 ? 200 : 2)) == (nc > 1 || c == 0 ? 200 : 2));
        CHECK(smd.min(c == nc - 1 ? std::uint64_t(2) : UINT64_MAX) == 2);
        const auto u16 = smd.max(std::vector<std::uint16_t>{static_cast<std::uint16_t>(60000 + c), 1});
        CHECK(u16 == std::vector<std::uint16_t>{static_cast<std::uint16_t>(60000 + nc - 1), 1});
        auto v = smd.sum(std::vector<std::int64_t>{1, c, -c});
        CHECK(v == std::vector<std::int64_t>{nc, nc * (nc - 1) / 2, -nc * (nc - 1) / 2});
        auto a = smd.max(std::array<float, 2>{static_cast<float>(c), -static_cast<float>(c)});
        CHECK(a[0] == static_cast<float>(nc - 1));
        CHECK(a[1] == 0.0f);
        // Only even clients contribute; odd ones give nothing (neutral element).
        std::optional<double> mine = c % 2 == 0 ? std::optional<double>(c + 1.0) : std::nullopt;
        auto s = smd.sum(mine);
        auto mn = smd.min(mine);
        auto mx = smd.max(mine);
        double es = 0;
        for (int k = 0; k < nc; k += 2) es += k + 1.0;
        REQUIRE(s.has_value());
        CHECK(*s == es);
        CHECK(*mn == 1.0);
        CHECK(*mx == static_cast<double>((nc - 1) / 2 * 2) + 1.0);
        std::optional<std::vector<int>> ov = c == nc - 1 ? std::optional<std::vector<int>>(std::vector<int>{4, 5}) : std::nullopt;
        auto rv = smd.max(ov);
        REQUIRE(rv.has_value());
        CHECK(*rv == std::vector<int>{4, 5});
        CHECK_FALSE(smd.sum(std::optional<int>()).has_value());
        // Different lengths: a clear error on every client, no hang.
        std::vector<double> bad(static_cast<std::size_t>(c + 1), 1.0);
        if (nc > 1) {
            try {
                smd.sum(bad);
                FAIL("vectors of different lengths were reduced");
            } catch (const smalldata::Error& e) {
                CHECK(e.code() == Errc::reduction);
            }
            // Another operation, element type or kind on one client: the same, naming each
            // client's call (they went through: client 1 got min(1) from max, or bits of a
            // float read as an int).
            auto refused = [&](const std::function<void()>& f, const std::string& a, const std::string& b) {
                std::string what;
                try {
                    f();
                } catch (const smalldata::Error& e) {
                    if (e.code() == Errc::reduction) what = e.what();
                }
                CHECK_THAT(what, Catch::Contains("client 0: " + a) && Catch::Contains(b));
            };
            refused([&] { c == 0 ? (void)smd.min(1) : (void)smd.max(1); }, "min() of int32", ": max() of int32");
            refused([&] { c == 0 ? (void)smd.sum(1.5f) : (void)smd.sum(2); }, "sum() of float32", ": sum() of int32");
            refused([&] { c == 0 ? (void)smd.sum(std::uint32_t(4)) : (void)smd.sum(std::int32_t(5)); }, "sum() of uint32",
                    ": sum() of int32");
            refused([&] { c == 0 ? (void)smd.sum(1) : (void)smd.sum(std::vector<int>{1}); }, "sum() of int32",
                    ": sum() of int32 std::vector of 1");
            refused([&] { c == 0 ? (void)smd.sum(std::array<int, 2>{}) : (void)smd.sum(std::array<int, 3>{}); },
                    "sum() of int32 std::array of 2", ": sum() of int32 std::array of 3");
            // A value on one client, a buffer in place on the others: their agreements are
            // one collective of one size, so this is the same clear error (it was a
            // collective of another size, which MPI may report as a truncation or not at all).
            {
                std::string what;
                double buf[2] = {1, 2};
                try {
                    c == 0 ? (void)smd.sum(1.0) : (void)smd.sum(buf, {2});
                } catch (const smalldata::Error& e) {
                    if (e.code() == Errc::reduction) what = e.what();
                }
                CHECK_THAT(what, Catch::Contains("client 0 reduces a value") && Catch::Contains("client 1 a buffer in place"));
            }
            CHECK(smd.sum(1) == nc);  // and the next reduction goes through
        }
        smd.save_summary("clients", nc, "vec", v, "label", std::string("reduced"));
    }
    smd.done();
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        CHECK(f.scalar<std::int32_t>("clients") == smd.client_count());
        CHECK(f.read<std::int64_t>("vec").size() == 3);
        CHECK(f.read_string("label") == "reduced");
    }
}

TEST_CASE("a client in done() while the others wait in a reduction: Errc::reduction naming it, then done()",
          "[mpi]") {
    // done() of every client is an agreement the clients waiting in a reduction meet: they
    // learn that client 0 will not come (they waited for ever), and their own done() then
    // meets client 0's again. Every event is in the file.
    const std::string dir = fresh_dir("done_in_reduction");
    Options o = layout_options(dir + "/d.h5");
    SmallData smd(o);
    if (smd.summary()) {
        for (std::int64_t i : smd.share(300)) smd.event(i, "x", static_cast<double>(i));
        if (smd.client_index() > 0) {
            std::string what;
            try {
                (void)smd.sum(1);
            } catch (const smalldata::Error& e) {
                if (e.code() == Errc::reduction) what = e.what();
            }
            CHECK_THAT(what, Catch::Contains("client 0 called done() instead of this reduction"));
        }
    }
    smd.done();
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        CHECK(ts.size() == 300);
        CHECK(f.read<double>("x").size() == 300);
    }
}

TEST_CASE("in-place reductions of N-d buffers: clients without data, shapes checked, saved as a summary",
          "[mpi][reduce]") {
    const std::string dir = fresh_dir("reduce_in_place");
    Options o = layout_options(dir + "/r.h5");
    constexpr std::uint64_t ny = 3, nx = 5;
    constexpr std::size_t n = ny * nx;
    // Client c's value at flat index e, and the element-wise sum over the clients `who`.
    auto value = [](int c, std::size_t e) { return static_cast<float>(c * 100 + static_cast<int>(e)); };
    auto sum_over = [&](int nc, bool (*who)(int)) {
        std::vector<float> s(n, 0.0f);
        for (int c = 0; c < nc; ++c)
            if (who(c))
                for (std::size_t e = 0; e < n; ++e) s[e] += value(c, e);
        return s;
    };
    SmallData smd(o);
    if (smd.summary()) {
        const int c = smd.client_index();
        const int nc = smd.client_count();
        std::vector<float> img(n);
        auto refill = [&] {
            for (std::size_t e = 0; e < n; ++e) img[e] = value(c, e);
        };

        // sum of a 2-d float buffer: every client gets the result in its own buffer.
        refill();
        const float* where = img.data();
        CHECK(smd.sum(img.data(), {ny, nx}));
        CHECK(img.data() == where);
        CHECK(img == sum_over(nc, [](int) { return true; }));

        // min and max of a 2-d int32 buffer: v(c, e) = +-10 c + e (the sign alternates with e).
        std::vector<std::int32_t> m(n);
        auto v = [](int k, std::size_t e) { return (e % 2 == 0 ? 10 * k : -10 * k) + static_cast<int>(e); };
        for (std::size_t e = 0; e < n; ++e) m[e] = v(c, e);
        CHECK(smd.min(m.data(), {ny, nx}));
        for (std::size_t e = 0; e < n; ++e) CHECK(m[e] == (e % 2 == 0 ? v(0, e) : v(nc - 1, e)));
        for (std::size_t e = 0; e < n; ++e) m[e] = v(c, e);
        CHECK(smd.max(m.data(), std::vector<std::uint64_t>{ny, nx}));
        for (std::size_t e = 0; e < n; ++e) CHECK(m[e] == (e % 2 == 0 ? v(nc - 1, e) : v(0, e)));

        // Odd clients contribute nothing: their buffers hold values that would win, and they
        // get the result too.
        const bool mine = c % 2 == 0;
        auto even = [](int k) { return k % 2 == 0; };
        refill();
        if (!mine) std::fill(img.begin(), img.end(), 1e30f);
        CHECK(smd.sum(img.data(), {ny, nx}, mine));
        CHECK(img == sum_over(nc, even));
        refill();
        if (!mine) std::fill(img.begin(), img.end(), -1e30f);
        CHECK(smd.min(img.data(), {ny, nx}, mine));
        for (std::size_t e = 0; e < n; ++e) CHECK(img[e] == value(0, e));
        refill();
        if (!mine) std::fill(img.begin(), img.end(), 1e30f);
        CHECK(smd.max(img.data(), {ny, nx}, mine));
        for (std::size_t e = 0; e < n; ++e) CHECK(img[e] == value((nc - 1) / 2 * 2, e));

        // Nobody contributes: false, and every buffer is left as it was.
        std::vector<double> z(6, 42.0);
        CHECK_FALSE(smd.max(z.data(), {2, 3}, false));
        CHECK(z == std::vector<double>(6, 42.0));

        // A 3-d int16 buffer with a run-time shape.
        std::vector<std::int16_t> b(12, static_cast<std::int16_t>(c + 1));
        CHECK(smd.sum(b.data(), std::vector<std::uint64_t>{2, 2, 3}));
        CHECK(b == std::vector<std::int16_t>(12, static_cast<std::int16_t>(nc * (nc + 1) / 2)));

        // In pieces (here 2 floats each; in a real run, counts past MPI's int limit), and the
        // vector form likewise.
        const std::size_t piece = smalldata::detail::reduce_piece_bytes;
        smalldata::detail::reduce_piece_bytes = 8;
        refill();
        CHECK(smd.sum(img.data(), {ny, nx}));
        CHECK(img == sum_over(nc, [](int) { return true; }));
        CHECK(smd.sum(std::vector<std::int64_t>{1, c, 3}) == std::vector<std::int64_t>{nc, nc * (nc - 1) / 2, 3 * nc});
        smalldata::detail::reduce_piece_bytes = piece;

        // Shapes that differ: Errc::reduction on every client, naming each shape and its
        // clients; no buffer is touched.
        if (nc > 1) {
            refill();
            try {
                smd.sum(img.data(), c == 1 ? std::vector<std::uint64_t>{nx, ny} : std::vector<std::uint64_t>{ny, nx});
                FAIL("buffers of different shapes were reduced");
            } catch (const smalldata::Error& e) {
                CHECK(e.code() == Errc::reduction);
                const std::string w = e.what();
                CHECK(w.find("sum() of float32 (5, 3) on client 1") != std::string::npos);
                CHECK(w.find("sum() of float32 (3, 5) on client") != std::string::npos);
            }
            for (std::size_t e = 0; e < n; ++e) CHECK(img[e] == value(c, e));
            // Element types that differ, likewise.
            std::vector<double> d(n, 1.0);
            try {
                if (c == 0)
                    smd.max(d.data(), {ny, nx});
                else
                    smd.max(img.data(), {ny, nx});
                FAIL("buffers of different types were reduced");
            } catch (const smalldata::Error& e) {
                CHECK(e.code() == Errc::reduction);
                CHECK(std::string(e.what()).find("max() of float64 (3, 5) on client 0") != std::string::npos);
            }
        }
        // A null buffer (the last client's) is Errc::usage on every client, naming it.
        refill();
        try {
            smd.sum(c == nc - 1 ? static_cast<float*>(nullptr) : img.data(), {ny, nx});
            FAIL("a null buffer was reduced");
        } catch (const smalldata::Error& e) {
            CHECK(e.code() == Errc::usage);
            CHECK(std::string(e.what()).find("null pointer") != std::string::npos);
            if (nc > 1) CHECK(std::string(e.what()).find("client " + std::to_string(nc - 1)) != std::string::npos);
        }
        // More than max_rank dimensions, likewise.
        try {
            smd.sum(img.data(), std::vector<std::uint64_t>(8, 1));
            FAIL("8 dimensions were reduced");
        } catch (const smalldata::Error& e) {
            CHECK(e.code() == Errc::usage);
            CHECK(std::string(e.what()).find("more than 7 dimensions") != std::string::npos);
        }

        // The reductions still work after those errors; the result is saved as a summary
        // straight from the buffer (client 0 keeps it, the others ignore the call).
        refill();
        REQUIRE(smd.sum(img.data(), {ny, nx}));
        smd.save_summary("image_sum", smalldata::view(img.data(), {ny, nx}));
    } else {
        float x = 0;
        CHECK_THROWS_AS(smd.sum(&x, {1}), smalldata::Error);  // servers: not a client
    }
    smd.done();
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        CHECK(f.dims("image_sum") == std::vector<hsize_t>{ny, nx});
        CHECK(f.read<float>("image_sum") == sum_over(smd.client_count(), [](int) { return true; }));
    }
}

TEST_CASE("a layout that cannot work fails on every rank before any communication", "[mpi]") {
    const int size = world_size();
    if (size == 1) return;  // serial mode ignores servers/clients
    auto code_of = [](Options o) {
        try {
            SmallData smd(o);
        } catch (const smalldata::Error& e) {
            return e.code();
        }
        return Errc::usage;  // no error: reported as a failed CHECK below
    };
    Options o = base_options();
    o.servers = size;  // no rank left for a client
    CHECK(code_of(o) == Errc::layout);
    o.servers = 0;
    CHECK(code_of(o) == Errc::layout);
    o.servers = 1;
    o.clients = size;  // one more rank than exists
    CHECK(code_of(o) == Errc::layout);
    // Options that must agree between ranks but do not: an error on every rank.
    Options p = base_options();
    p.batch_bytes = world_rank() == 0 ? 65536 : 32768;
    CHECK(code_of(p) == Errc::option);
    Options q = base_options();
    q.shared_memory = world_rank() == 0;
    CHECK(code_of(q) == Errc::option);
    Options b = base_options();
    b.send_buffers = world_rank() == 0 ? 2 : 3;
    CHECK(code_of(b) == Errc::option);
    Options g = base_options();
    g.progress_seconds = world_rank() == 0 ? 10 : 20;
    CHECK(code_of(g) == Errc::option);
    Options r = base_options();
    r.report = world_rank() == 0;
    CHECK(code_of(r) == Errc::option);
    Options c = base_options();
    c.self_contained = world_rank() == 0;
    CHECK(code_of(c) == Errc::option);
    Options n = base_options();  // invalid on one rank only: the error on every rank
    if (world_rank() == size - 1) n.progress_seconds = -1;
    CHECK(code_of(n) == Errc::option);
}

TEST_CASE("a field whose type differs between parts cannot be joined", "[mpi]") {
    const int size = world_size();
    if (size < 4) return;  // needs two servers with one client each at least
    const std::string dir = fresh_dir("joinerr");
    Options o = base_options();
    o.servers = 2;
    o.filename = dir + "/j.h5";
    SmallData smd(o);
    for (std::int64_t i : smd.share(100)) {
        if (smd.server_index() == 0)
            smd.event(i, "x", static_cast<std::int32_t>(i));
        else
            smd.event(i, "x", static_cast<double>(i));
    }
    try {
        smd.done();
        FAIL("done() joined parts that disagree");
    } catch (const smalldata::Error& e) {
        CHECK(e.code() == Errc::join);
        const std::string what = e.what();
        CHECK(what.find("'x'") != std::string::npos);
        CHECK(what.find("j_part0.h5") != std::string::npos);
        CHECK(what.find("j_part1.h5") != std::string::npos);
    }
    // The part files stay intact and readable.
    if (world_rank() == 0) {
        h5r::File p0(dir + "/j_part0.h5");
        h5r::File p1(dir + "/j_part1.h5");
        CHECK(p0.read<std::int64_t>("timestamp").size() + p1.read<std::int64_t>("timestamp").size() == 100);
        // No final file, not even a partial or temporary one, is left behind.
        CHECK(files_in(dir) == std::vector<std::string>{"j_part0.h5", "j_part1.h5"});
    }
}

TEST_CASE("batches whose events all have the same fields are written row for row", "[mpi]") {
    // Servers write such batches field by field (Decoder: uniform batches). Mixed here with
    // batches that are not uniform: a field that starts half-way (defined inside a batch)
    // and events that lack a field. Caches of 64 rows, batches of 100 events: runs cross
    // cache boundaries inside a batch.
    const std::string dir = fresh_dir("uniform");
    Options o = layout_options(dir + "/u.h5");
    o.cache_size = 64;
    o.batch_size = 100;
    const std::int64_t n = 3000;
    const std::int64_t clients = world_size() == 1 ? 1 : world_size() - o.servers;  // client c: i % clients == c
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n)) {
            const std::array<std::int32_t, 3> arr{static_cast<std::int32_t>(i), 7, static_cast<std::int32_t>(-i)};
            smd.event(i, "i8", static_cast<std::int8_t>(i % 100), "i16", static_cast<std::int16_t>(i % 30000),
                      "f32", static_cast<float>(i) * 0.5f, "d", static_cast<double>(i) * 0.25, "arr", arr,
                      "unaligned_u", static_cast<std::int32_t>(i));
            if (i >= n / 2) smd.event(i, "late", static_cast<double>(i));
            if (i % 500 != 7) smd.event(i, "often", static_cast<std::uint64_t>(i) * 3);
            // Consecutive events of one client with the same size and entry count, but
            // different fields:
            if (i >= 1000 && i < 1800) smd.event(i, (i / clients) % 2 ? "q" : "p", static_cast<double>(i));
        }
        smd.done();
    }
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        const auto i8 = f.read<std::int8_t>("i8");
        const auto i16 = f.read<std::int16_t>("i16");
        const auto f32 = f.read<float>("f32");
        const auto d = f.read<double>("d");
        const auto arr = f.read<std::int32_t>("arr");
        const auto late = f.read<double>("late");
        const auto often = f.read<std::uint64_t>("often");
        const auto pv = f.read<double>("p");
        const auto qv = f.read<double>("q");
        REQUIRE(pv.size() == ts.size());
        REQUIRE(qv.size() == ts.size());
        auto u = f.read<std::int32_t>("unaligned_u");
        REQUIRE(arr.size() == 3 * ts.size());
        REQUIRE(late.size() == ts.size());
        REQUIRE(often.size() == ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) {
            const std::int64_t i = ts[r];
            bad += i8[r] != static_cast<std::int8_t>(i % 100) || i16[r] != static_cast<std::int16_t>(i % 30000);
            bad += f32[r] != static_cast<float>(i) * 0.5f || d[r] != static_cast<double>(i) * 0.25;
            bad += arr[3 * r] != static_cast<std::int32_t>(i) || arr[3 * r + 1] != 7 || arr[3 * r + 2] != -i;
            bad += i >= n / 2 ? late[r] != static_cast<double>(i) : !std::isnan(late[r]);
            bad += i % 500 != 7 ? often[r] != static_cast<std::uint64_t>(i) * 3
                                : often[r] != std::numeric_limits<std::uint64_t>::max();
            const bool in = i >= 1000 && i < 1800;
            const bool is_q = (i / clients) % 2 == 1;
            bad += in && !is_q ? pv[r] != static_cast<double>(i) : !std::isnan(pv[r]);
            bad += in && is_q ? qv[r] != static_cast<double>(i) : !std::isnan(qv[r]);
        }
        CHECK(bad == 0);
        std::sort(u.begin(), u.end());
        std::vector<std::int32_t> all(static_cast<std::size_t>(n));
        for (std::size_t k = 0; k < all.size(); ++k) all[k] = static_cast<std::int32_t>(k);
        CHECK(u == all);
    }
}

TEST_CASE("a part file the joining rank cannot see is a join error naming it", "[mpi]") {
    const int size = world_size();
    if (size < 2) return;
    const std::string dir = fresh_dir("unshared");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = "u.h5";  // relative: each rank resolves it in its own working directory
    // Servers and clients work in different directories, as on nodes whose output
    // directory is local: the part files are not where client 0, which joins, looks.
    const std::string mine = dir + (world_rank() < o.servers ? "/servers" : "/clients");
    std::filesystem::create_directories(mine);
    const auto home = std::filesystem::current_path();
    std::filesystem::current_path(mine);
    std::string code = "none", what;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(50)) smd.event(i, "x", static_cast<double>(i));
        try {
            smd.done();
        } catch (const smalldata::Error& e) {
            code = errc_name(e.code());
            what = e.what();
        }
    }
    std::filesystem::current_path(home);
    CAPTURE(what);
    CHECK(code == errc_name(Errc::join));
    CHECK(what.find("'u_part0.h5'") != std::string::npos);
    CHECK(what.find("same output directory") != std::string::npos);
    // The part files are intact where the servers wrote them; no final file was made.
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) {
        long long rows = 0;
        for (int k = 0; k < o.servers; ++k)
            rows += static_cast<long long>(h5r::File(dir + "/servers/u_part" + std::to_string(k) + ".h5").read<std::int64_t>("timestamp").size());
        CHECK(rows == 50);
        CHECK_FALSE(h5r::file_exists(dir + "/clients/u.h5"));
    }
}

extern std::atomic<long long> g_cxx_allocations;

// The control for the test below: a counter that missed allocations would pass it trivially.
// Calls of the operator functions (not new-expressions, which the compiler may elide).
TEST_CASE("the allocation counter sees every form of operator new", "[mpi]") {
    struct alignas(64) Wide {
        unsigned char b[64];
    };
    const long long c0 = g_cxx_allocations.load();
    ::operator delete(::operator new(8));
    ::operator delete[](::operator new[](8));
    ::operator delete(::operator new(8, std::nothrow), std::nothrow);
    ::operator delete[](::operator new[](8, std::nothrow), std::nothrow);
    void* w = ::operator new(sizeof(Wide), std::align_val_t{alignof(Wide)});
    CHECK(reinterpret_cast<std::uintptr_t>(w) % alignof(Wide) == 0);
    ::operator delete(w, std::align_val_t{alignof(Wide)});
    ::operator delete[](::operator new[](sizeof(Wide), std::align_val_t{alignof(Wide)}, std::nothrow),
                        std::align_val_t{alignof(Wide)}, std::nothrow);
    CHECK(g_cxx_allocations.load() - c0 == 6);
}

TEST_CASE("event() allocates nothing in steady state", "[mpi]") {
    const std::string dir = fresh_dir("alloc");
    Options o = layout_options(dir + "/alloc.h5");
    o.batch_size = 500;
    SmallData smd(o);
    std::array<float, 100> proj{};
    std::array<std::int16_t, 4> roi{};
    std::vector<double> vec(7, 1.0);
    std::vector<bool> mask(13, true);  // unpacked into a buffer the library keeps
    auto one = [&](std::int64_t i) {
        const double x = static_cast<double>(i);
        smd.event(i, "a", x, "b", x, "c", x, "d", x, "e", x, "f", x, "g", x, "h", x, "n1", i, "n2", -i,
                  "det/proj", proj, "det/roi", roi);
        smd.event(i, "vec", vec);
        mask[static_cast<std::size_t>(i % 13)] = i % 2 == 0;
        smd.event(i, "mask", mask);
        if (i % 2) smd.event(i, "odd", static_cast<std::int32_t>(i));  // a field that comes and goes
    };
    const std::int64_t n = 60000;
    std::int64_t k = 0;
    long long before = 0, after = 0, counted = 0;
    for (std::int64_t i : smd.share(n)) {
        if (k == 2000) before = g_cxx_allocations.load();  // warm: every field seen, buffers sized
        one(i);
        ++k;
    }
    if (k > 2000) {
        after = g_cxx_allocations.load();
        counted = k - 2000;
    }
    if (smd.role() == Role::client) {
        // Clients only pack and send: not one allocation in tens of thousands of events.
        CHECK(after - before == 0);
        INFO("events measured: " << counted);
        CHECK(counted > 1000);
    } else if (smd.role() == Role::serial) {
        // Serial mode also runs the writer: HDF5 objects per cache flush, none per event.
        CHECK(after - before < counted / 100);
    }
    smd.done();
}

// A large event, then more one-event batches than the client has shared-memory slots: the
// server waits for the large event's data before it decodes (and frees) anything more,
// and an MPI without single-copy transfers (Open MPI with
// btl_vader_single_copy_mechanism=none, as the test parallel_np3_copy runs this case)
// moves that data only while the client is in MPI. The client waiting for a slot keeps
// testing its sends: every event arrives (it once waited for the slot forever).
TEST_CASE("a large event followed by more batches than there are slots: the client's sends keep moving",
          "[mpi][transport]") {
    const std::string dir = fresh_dir("large_then_slots");
    Options o = layout_options(dir + "/ls.h5");
    o.batch_bytes = std::size_t(64) << 10;
    o.batch_size = 1;
    const std::int64_t n = 200;
    const std::size_t big_n = std::size_t(1) << 16;  // 256 KiB of float: a large event
    {
        SmallData smd(o);
        std::vector<float> big(big_n);
        for (std::int64_t i : smd.share(n)) {
            if (i % 100 < 2) {  // each client's first event of every hundred
                for (std::size_t k = 0; k < big_n; k += 1024) big[k] = static_cast<float>(i + static_cast<std::int64_t>(k));
                smd.event(i, "x", i, "big", smalldata::view(big.data(), {big_n}));
            } else {
                smd.event(i, "x", i);
            }
        }
        smd.done();
    }
    if (world_rank() != 0) return;
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto x = f.read<std::int64_t>("x");
    REQUIRE(ts.size() == static_cast<std::size_t>(n));
    REQUIRE(x.size() == ts.size());
    std::set<std::int64_t> uniq(ts.begin(), ts.end());
    CHECK(uniq.size() == ts.size());
    std::size_t bad = 0;
    for (std::size_t r = 0; r < ts.size(); ++r) bad += x[r] != ts[r] || ts[r] < 0 || ts[r] >= n;
    CHECK(bad == 0);
    const auto big = f.read<float>("big");
    REQUIRE(big.size() == big_n * ts.size());
    for (std::size_t r = 0; r < ts.size(); ++r) {
        if (ts[r] % 100 >= 2) continue;
        for (std::size_t k = 0; k < big_n; k += 1024) bad += big[r * big_n + k] != static_cast<float>(ts[r] + static_cast<std::int64_t>(k));
    }
    CHECK(bad == 0);
}

TEST_CASE("a second SmallData before the first's done() is Errc::usage on the clients; the first writes on",
          "[mpi]") {
    // It hung: the servers stay in the first one's constructor until its clients are done.
    if (world_size() < 2) return;  // serial mode: two at once work
    const std::string dir = fresh_dir("second");
    Options o = layout_options(dir + "/first.h5");
    int refused = 0, clients = 0;
    {
        SmallData smd(o);
        clients = smd.client_count();
        if (smd.role() == Role::client) {
            const std::int64_t c = smd.client_index();
            smd.event(c, "x", c);
            try {
                SmallData second(layout_options(dir + "/second.h5"));
            } catch (const smalldata::Error& e) {
                refused = e.code() == Errc::usage && std::string(e.what()).find("one at a time") != std::string::npos;
            }
            smd.event(100 + c, "x", 100 + c);
        }
        smd.done();
    }
    CHECK(sum_over_world(refused) == clients);
    {  // after done(), another may start (on every rank)
        SmallData third(layout_options(dir + "/third.h5"));
        if (third.role() == Role::client) third.event(0, "y", 1.0);
        third.done();
    }
    if (world_rank() != 0) return;
    CHECK_FALSE(std::filesystem::exists(dir + "/second.h5"));
    h5r::File f(o.filename);
    auto ts = f.read<std::int64_t>("timestamp");
    const auto x = f.read<std::int64_t>("x");
    REQUIRE(x.size() == ts.size());
    CHECK(x == ts);
    std::sort(ts.begin(), ts.end());
    std::vector<std::int64_t> want;
    for (int c = 0; c < clients; ++c) want.push_back(c);
    for (int c = 0; c < clients; ++c) want.push_back(100 + c);
    CHECK(ts == want);
    CHECK(h5r::File(dir + "/third.h5").read<double>("y").size() == static_cast<std::size_t>(clients));
}

TEST_CASE("save_summary and save_attribute check the call on every client, not only where it is kept", "[mpi]") {
    // Client 0 keeps what it is given, the others keep nothing; a bad call threw on client 0
    // only, and the other clients went on.
    const std::string dir = fresh_dir("summary_checks");
    Options o = layout_options(dir + "/s.h5");
    int thrown = 0, clients = 0;
    {
        SmallData smd(o);
        clients = smd.client_count();
        if (smd.summary()) {
            auto count = [&](const std::function<void()>& f, Errc code) {
                try {
                    f();
                } catch (const smalldata::Error& e) {
                    thrown += e.code() == code;
                }
            };
            count([&] { smd.save_summary("", 1); }, Errc::name);
            count([&] { smd.save_summary("timestamp", 1); }, Errc::name);
            count([&] { smd.save_summary("v", smalldata::view(static_cast<const float*>(nullptr), {2})); }, Errc::usage);
            count([&] { smd.save_attribute("/", "a", 1); }, Errc::name);
            count([&] { smd.save_attribute("", "a", std::string("a\0b", 3)); }, Errc::usage);
            smd.save_summary("ok", 1);
        }
        smd.done();
        if (smd.summary())
            try {
                smd.save_summary("late", 1);
            } catch (const smalldata::Error& e) {
                thrown += e.code() == Errc::usage;
            }
    }
    CHECK(sum_over_world(thrown) == 6 * clients);
    if (world_rank() != 0) return;
    h5r::File f(o.filename);
    CHECK(f.scalar<std::int32_t>("ok") == 1);
    CHECK_FALSE(f.exists("v"));
}

TEST_CASE("events larger than batch_bytes still go through, in order", "[mpi]") {
    const std::string dir = fresh_dir("large");
    Options o = layout_options(dir + "/large.h5");
    o.batch_bytes = 4096;  // every event below is about 24 KiB: sent as a "large" message
    o.batch_size = 3;
    const std::int64_t n = 600;
    {
        SmallData smd(o);
        std::vector<double> big(3000);
        std::vector<std::uint16_t> img(128 * 256);
        for (std::int64_t i : smd.share(n)) {
            for (std::size_t k = 0; k < big.size(); ++k) big[k] = static_cast<double>(i) + static_cast<double>(k) * 1e-4;
            smd.event(i, "big", big);
            if (i % 4 == 0) smd.event(i, "small", static_cast<std::int16_t>(i % 1000));  // mixes with normal batches
            if (i % 3 != 0) {  // 64 KiB rows: written straight from the batch, one row per chunk
                img.assign(img.size(), static_cast<std::uint16_t>(i));
                img.back() = static_cast<std::uint16_t>(i + 1);
                smd.event(i, "det/image", smalldata::view(img.data(), {128, 256}));
            }
        }
        smd.done();
    }
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        auto ts = f.read<std::int64_t>("timestamp");
        auto big = f.read<double>("big");
        auto small = f.read<std::int16_t>("small");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        REQUIRE(big.size() == 3000 * ts.size());
        REQUIRE(small.size() == ts.size());
        auto img = f.read<std::uint16_t>("det/image");
        REQUIRE(img.size() == 128 * 256 * ts.size());
        std::set<std::int64_t> uniq(ts.begin(), ts.end());
        CHECK(uniq.size() == ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) {
            const double t = static_cast<double>(ts[r]);
            bad += big[3000 * r] != t || big[3000 * r + 2999] != t + 2999 * 1e-4;
            bad += ts[r] % 4 == 0 ? small[r] != static_cast<std::int16_t>(ts[r] % 1000) : small[r] != -32768;
            const std::uint16_t* row = img.data() + 128 * 256 * r;
            const auto v = static_cast<std::uint16_t>(ts[r]);
            if (ts[r] % 3 != 0) bad += row[0] != v || row[128 * 256 / 2] != v || row[128 * 256 - 1] != v + 1;
            else bad += row[0] != 65535 || row[128 * 256 - 1] != 65535;
        }
        CHECK(bad == 0);
        // Each server reserved disk space ahead of its writes (about 50 MiB in all) and gave
        // back what it did not use when its part file closed.
        for (int k = 0; k < o.servers && world_size() > 1; ++k) {
            const std::string part = dir + "/large_part" + std::to_string(k) + ".h5";
            CAPTURE(part);
            CHECK(h5r::disk_bytes(part) <= std::filesystem::file_size(part) + (std::uint64_t(1) << 20));
        }
    }
}

// ==================================================================== failure paths

namespace {
std::string error_code_of(const std::function<void()>& f, std::string* what = nullptr) {
    try {
        f();
    } catch (const smalldata::Error& e) {
        if (what) *what = e.what();
        return errc_name(e.code());
    }
    return "none";
}
}  // namespace

TEST_CASE("'%' in the file name and in field names joins to the right values", "[mpi][names]") {
    // The join's virtual datasets read '%' as a pattern: the library escapes it.
    const std::string dir = fresh_dir("percent");
    Options o = layout_options(dir + "/run_100%.h5");
    const std::int64_t n = 500;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n))
            smd.event(i, "load%%", static_cast<double>(i), "eff%b", static_cast<std::int32_t>(i), "g%/x", 2.0 * static_cast<double>(i));
        smd.done();
    }
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto load = f.read<double>("load%%");
        const auto eff = f.read<std::int32_t>("eff%b");
        const auto gx = f.read<double>("g%/x");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        REQUIRE(load.size() == ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r)
            bad += load[r] != static_cast<double>(ts[r]) || eff[r] != ts[r] || gx[r] != 2.0 * static_cast<double>(ts[r]);
        CHECK(bad == 0);
    }
}

TEST_CASE("a stale part file in the joining rank's directory is a join error, never joined", "[mpi][files]") {
    // Run 1 leaves u_part0.h5 (field "old") where client 0 works; run 2 has its servers in
    // another directory. The joining rank must not map run 1's part into run 2's file.
    const int size = world_size();
    if (size < 2) return;
    const std::string dir = fresh_dir("stale");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = "u.h5";
    const auto home = std::filesystem::current_path();
    std::filesystem::create_directories(dir + "/servers");
    std::filesystem::create_directories(dir + "/clients");
    std::filesystem::current_path(dir + "/clients");  // run 1: everybody here
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(50)) smd.event(i, "old", static_cast<double>(i));
        smd.done();
    }
    MPI_Barrier(MPI_COMM_WORLD);
    std::filesystem::current_path(dir + (world_rank() < o.servers ? "/servers" : "/clients"));  // run 2
    std::string what;
    std::string code;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(50)) smd.event(i, "new", static_cast<double>(i));
        code = error_code_of([&] { smd.done(); }, &what);
    }
    std::filesystem::current_path(home);
    CAPTURE(what);
    CHECK(code == "join");
    CHECK(what.find("u_part0.h5") != std::string::npos);
    CHECK(what.find("not the one server 0 wrote in this run") != std::string::npos);
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) {
        // Run 2's part is intact where its server wrote it; run 2 invalidated the final
        // file of its own name (run 1's) before writing, and made none itself.
        h5r::File p(dir + "/servers/u_part0.h5");
        CHECK(p.exists("new"));
        CHECK_FALSE(h5r::file_exists(dir + "/clients/u.h5"));
        for (const std::string& name : files_in(dir + "/clients")) CHECK(name.find(".tmp") == std::string::npos);
    }
}

TEST_CASE("a summary that clashes with a field only another client gave: events joined, summary reported", "[mpi][summary]") {
    const int size = world_size();
    if (size < 3) return;  // needs two clients
    const std::string dir = fresh_dir("summary_other");
    Options o = base_options();
    o.servers = 1;
    o.filename = dir + "/s.h5";
    std::string code, what;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(200)) {
            smd.event(i, "x", static_cast<double>(i));
            if (smd.client_index() == 1) smd.event(i, "only1", static_cast<double>(i));
        }
        if (smd.summary()) smd.save_summary("only1", 1.0, "kept", 2.0);  // client 0 has never seen "only1"
        code = error_code_of([&] { smd.done(); }, &what);
    }
    CAPTURE(what);
    CHECK(code == "name");
    CHECK(what.find("'only1'") != std::string::npos);
    CHECK(what.find(": smalldata") == std::string::npos);  // one "smalldata[...]: " prefix, not two
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        CHECK(f.read<std::int64_t>("timestamp").size() == 200);
        CHECK(f.read<double>("x").size() == 200);
        CHECK(f.read<double>("only1").size() == 200);  // the field, not the summary
        CHECK(f.scalar<double>("kept") == 2.0);
    }
}

namespace {
// Bit k of event i's mask.
std::vector<bool> mask_of(std::int64_t i) {
    std::vector<bool> m(7);
    for (std::size_t k = 0; k < m.size(); ++k) m[k] = ((i >> k) & 1) != 0;
    return m;
}
}  // namespace

TEST_CASE("attributes on the root, a group, a field (virtual dataset) and a summary; std::vector<bool> values",
          "[mpi][attributes]") {
    const int size = world_size();
    const std::string dir = fresh_dir("attributes");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/a.h5";
    o.batch_size = 64;
    std::atomic<long long> seen{0}, bad{0};
    o.callbacks.push_back([&](const smalldata::Event& e) {  // on the writing rank
        ++seen;
        if (e.get_vector<bool>("det/mask") != mask_of(e.timestamp())) ++bad;
        if (e.field("det/mask").values<bool>() != mask_of(e.timestamp())) ++bad;
    });
    const std::int64_t n = 1000;
    std::string code, what;
    int clients = 0;
    {
        SmallData smd(o);
        clients = smd.client_count();
        std::int64_t mine = 0;
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "x", static_cast<double>(i), "det/mask", mask_of(i));
            if (smd.client_index() == 1) smd.event(i, "only1", 1.0);  // a field client 0 never sees
            ++mine;
        }
        if (smd.summary()) {
            smd.save_summary("n_events", smd.sum(mine), "flags", std::vector<bool>{true, false, true});
            // Only client 0's calls count: every client saves its own index.
            smd.save_attribute("", "client", static_cast<std::int32_t>(smd.client_index()));
            smd.save_attribute("", "run", std::int32_t(7));
            smd.save_attribute("", "experiment", "mfx12345");
            smd.save_attribute("det", "geometry", std::array<double, 2>{0.5, -1.5});
            smd.save_attribute("det/mask", "bits", std::vector<bool>{false, true});
            smd.save_attribute("x", "units", "mm");
            smd.save_attribute("x", "units", "keV");  // replaced
            smd.save_attribute("x", "scale", std::vector<float>{2.5f, 3.5f});
            smd.save_attribute("n_events", "units", "events");
            smd.save_attribute("flags", "meaning", "a, b, c");
            smd.save_attribute("timestamp", "units", "ns");
            if (smd.client_count() >= 2) smd.save_attribute("only1", "units", "V");
        }
        code = error_code_of([&] { smd.done(); }, &what);
    }
    CAPTURE(what);
    CHECK(code == "none");
    CHECK(sum_over_world(seen) == n);
    CHECK(sum_over_world(bad) == 0);
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        if (size > 1) {  // parallel mode: the attributes are on the virtual datasets
            CHECK(H5Pget_layout(f.create_plist(f.open_dataset("x"), "x").get()) == H5D_VIRTUAL);
            CHECK(H5Pget_layout(f.create_plist(f.open_dataset("det/mask"), "det/mask").get()) == H5D_VIRTUAL);
        }
        CHECK(f.read_attr<std::int32_t>("", "client") == std::vector<std::int32_t>{0});
        CHECK(f.attr_type_info("", "run").cls == H5T_INTEGER);
        CHECK(f.attr_type_info("", "run").size == 4);
        CHECK(f.read_attr<std::int32_t>("", "run") == std::vector<std::int32_t>{7});
        CHECK(f.attr_is_variable_string("", "experiment"));
        CHECK(f.read_attr_string("", "experiment") == "mfx12345");
        CHECK(f.read_attr<double>("det", "geometry") == std::vector<double>{0.5, -1.5});
        CHECK(f.attr_type_info("det/mask", "bits").cls == H5T_ENUM);
        CHECK(f.read_attr<bool>("det/mask", "bits") == std::vector<bool>{false, true});
        CHECK(f.read_attr_string("x", "units") == "keV");
        CHECK(f.attr_type_info("x", "scale").size == 4);
        CHECK(f.read_attr<float>("x", "scale") == std::vector<float>{2.5f, 3.5f});
        CHECK(f.read_attr_string("n_events", "units") == "events");
        CHECK(f.read_attr_string("flags", "meaning") == "a, b, c");
        CHECK(f.read_attr_string("timestamp", "units") == "ns");
        if (clients >= 2) CHECK(f.read_attr_string("only1", "units") == "V");
        CHECK(f.scalar<std::int64_t>("n_events") == n);
        CHECK(f.type_info("flags").cls == H5T_ENUM);
        CHECK(f.read<bool>("flags") == std::vector<bool>{true, false, true});
        // The std::vector<bool> field: every row the mask of its timestamp.
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto mask = f.read<bool>("det/mask");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        CHECK(f.dims("det/mask") == std::vector<hsize_t>{hsize_t(n), 7});
        CHECK(f.type_info("det/mask").cls == H5T_ENUM);
        REQUIRE(mask.size() == 7 * ts.size());
        std::size_t wrong = 0;
        for (std::size_t r = 0; r < ts.size(); ++r)
            wrong += std::vector<bool>(mask.begin() + static_cast<std::ptrdiff_t>(7 * r),
                                       mask.begin() + static_cast<std::ptrdiff_t>(7 * r + 7)) != mask_of(ts[r]);
        CHECK(wrong == 0);
    }
}

TEST_CASE("an attribute whose path names nothing: every event joined, done() throws Errc::name on every rank",
          "[mpi][attributes]") {
    const std::string dir = fresh_dir("attr_missing");
    Options o = layout_options(dir + "/m.h5");
    const std::int64_t n = 2000;
    std::string code, what;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n)) smd.event(i, "x", static_cast<double>(i));
        if (smd.summary()) {
            smd.save_summary("kept", 2.0);
            smd.save_attribute("nope", "units", "mm");
            smd.save_attribute("x", "units", "mm");
            smd.save_attribute("kept", "units", "s");
        }
        code = error_code_of([&] { smd.done(); }, &what);
    }
    CAPTURE(what);
    CHECK(code == "name");
    CHECK(what.find("'nope'") != std::string::npos);
    CHECK(what.find("'units'") != std::string::npos);
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto x = f.read<double>("x");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        REQUIRE(x.size() == ts.size());
        std::set<std::int64_t> uniq(ts.begin(), ts.end());
        CHECK(uniq.size() == ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) bad += x[r] != static_cast<double>(ts[r]);
        CHECK(bad == 0);
        CHECK(f.scalar<double>("kept") == 2.0);
        CHECK(f.read_attr_string("x", "units") == "mm");
        CHECK(f.read_attr_string("kept", "units") == "s");
        for (const std::string& name : files_in(dir)) CHECK(name.find(".tmp") == std::string::npos);
    }
}

TEST_CASE("a directory in place of the final file is an error on every rank before any event", "[mpi][files]") {
    if (world_size() < 2) return;
    const std::string dir = fresh_dir("final_is_dir");
    if (world_rank() == 0) std::filesystem::create_directories(dir + "/f.h5");
    MPI_Barrier(MPI_COMM_WORLD);
    Options o = layout_options(dir + "/f.h5");
    std::string what;
    CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "hdf5");
    CAPTURE(what);
    CHECK(what.find("a directory has that name") != std::string::npos);
}

TEST_CASE("a missing output directory is Errc::hdf5 with errno ENOENT on every rank", "[mpi][files]") {
    if (world_size() < 2) return;
    const std::string dir = fresh_dir("missing_dir");
    Options o = layout_options(dir + "/no_such_dir/f.h5");
    int library_code = -1;
    std::string what;
    try {
        SmallData smd(o);
    } catch (const smalldata::Error& e) {
        what = e.what();
        CHECK(e.code() == Errc::hdf5);
        library_code = e.library_code();
    }
    CAPTURE(what);
    CHECK(library_code == ENOENT);
    CHECK(what.find("no_such_dir") != std::string::npos);
    CHECK(files_in(dir).empty());
}

TEST_CASE("a rerun replaces a final file that a reader holds open", "[mpi][files]") {
    // The final file is built under a temporary name and renamed into place: no lock on
    // the old file stops it, and the old file is never truncated under the reader.
    const std::string dir = fresh_dir("held_final");
    Options o = layout_options(dir + "/h.h5");
    auto run = [&](double scale) {
        SmallData smd(o);
        for (std::int64_t i : smd.share(100)) smd.event(i, "x", scale * static_cast<double>(i));
        smd.done();
    };
    run(1.0);
    std::optional<h5r::File> reader;
    if (world_rank() == 0) reader.emplace(o.filename);
    MPI_Barrier(MPI_COMM_WORLD);
    run(3.0);
    if (world_rank() == 0) {
        reader.reset();
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto x = f.read<double>("x");
        REQUIRE(x.size() == 100);
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) bad += x[r] != 3.0 * static_cast<double>(ts[r]);
        CHECK(bad == 0);
        for (const std::string& name : files_in(dir)) CHECK(name.find(".tmp") == std::string::npos);
    }
}

TEST_CASE("a part another run is writing, or another run's part as the final file: Errc::option on every rank, "
          "nothing replaced",
          "[mpi][files]") {
    if (world_size() < 2) return;
    const std::string dir = fresh_dir("claimed");
    Options o = layout_options(dir + "/c.h5");
    auto run = [&](const Options& opt, double scale) {
        SmallData smd(opt);
        for (std::int64_t i : smd.share(100)) smd.event(i, "x", scale * static_cast<double>(i));
        smd.done();
    };
    auto reads = [&](double scale) {  // c.h5 holds the 100 events of the run written with scale
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto x = f.read<double>("x");
        CHECK(x.size() == 100);  // not REQUIRE: the other ranks wait in a collective after it
        CHECK(ts.size() == x.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < std::min(ts.size(), x.size()); ++r) bad += x[r] != scale * static_cast<double>(ts[r]);
        CHECK(bad == 0);
    };
    run(o, 1.0);
    const std::vector<std::string> after_first = world_rank() == 0 ? files_in(dir) : std::vector<std::string>{};
    // A run of the same filename writing c_part0.h5 now. A writer's claim on its file is an
    // open-file-description write lock on byte 2^62 (smalldata.hpp, WriteClaim); held here
    // by world rank 0 (server 0), per opening, so that the library sees another's.
    int other = -1;
    if (world_rank() == 0) {
        other = ::open((dir + "/c_part0.h5").c_str(), O_WRONLY | O_CLOEXEC);
        struct flock fl;
        std::memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = static_cast<off_t>(std::int64_t(1) << 62);
        fl.l_len = 1;
        CHECK(::fcntl(other, F_OFD_SETLK, &fl) == 0);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    std::string what;
    CHECK(error_code_of([&] { run(o, 2.0); }, &what) == "option");
    CAPTURE(what);
    CHECK(what.find("c_part0.h5") != std::string::npos);
    CHECK(what.find("being written by another process") != std::string::npos);
    if (other >= 0) ::close(other);
    // Another run's part as the final file: refused, that run's final file reads as before.
    Options p = o;
    p.filename = dir + "/c_part0.h5";
    what.clear();
    CHECK(error_code_of([&] { run(p, 5.0); }, &what) == "option");
    CAPTURE(what);
    CHECK(what.find("a part file of 'c.h5'") != std::string::npos);
    if (world_rank() == 0) {
        CHECK(files_in(dir) == after_first);
        reads(1.0);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    run(o, 3.0);  // the claim released: a rerun replaces as before
    if (world_rank() == 0) reads(3.0);
}

TEST_CASE("event() after done() is Errc::usage on clients and does nothing on servers", "[mpi][done]") {
    const std::string dir = fresh_dir("after_done");
    Options o = layout_options(dir + "/a.h5");
    SmallData smd(o);
    for (std::int64_t i : smd.share(10)) smd.event(i, "x", 1.0);
    smd.done();
    const std::string code = error_code_of([&] { smd.event(100, "x", 1.0); });
    CHECK(code == (smd.summary() ? "usage" : "none"));
}

TEST_CASE("an event refused for being over 2 GiB leaves no gap in the stream", "[mpi][errors]") {
    // A value of just under 2 GiB after 70 KiB of others makes the event larger than one
    // message. The refused pair is never copied (its bytes are not even touched: fresh
    // pages). The client catches the usage error and goes on; no batch is skipped, so the
    // servers see an unbroken stream and done() succeeds. Serial mode has no message limit:
    // there the same call is accepted, so this case runs in parallel mode only.
    if (world_size() == 1) return;
    const std::string dir = fresh_dir("over_2gib");
    Options o = layout_options(dir + "/big.h5");
    const std::int64_t n = 40, refused = 5;
    const std::uint64_t big_bytes = (std::uint64_t(1) << 31) - 64 * 1024;
    std::string code, what;
    {
        SmallData smd(o);
        std::unique_ptr<std::uint8_t[]> big;  // never read: refused before any copy
        const std::vector<std::uint8_t> pad(70 * 1024, 7);
        for (std::int64_t i : smd.share(n)) {
            if (i == refused) {
                big.reset(new std::uint8_t[big_bytes]);
                code = error_code_of([&] { smd.event(i, "pad", pad, "huge", smalldata::view(big.get(), {big_bytes})); }, &what);
            }
            smd.event(i, "x", static_cast<double>(i));
        }
        smd.done();
    }
    // Only the client that had event 5 saw the refusal.
    const int saw = static_cast<int>(sum_over_world(code == "usage" ? 1 : 0));
    CHECK(saw == 1);
    if (code == "usage") CHECK_THAT(what, Catch::Contains("'huge'") && Catch::Contains("2 GiB"));
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        auto ts = f.read<std::int64_t>("timestamp");
        const auto x = f.read<double>("x");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        REQUIRE(x.size() == ts.size());
        for (std::size_t r = 0; r < ts.size(); ++r) CHECK(x[r] == static_cast<double>(ts[r]));
        // The pair before the refused one is recorded: event 5 has its 'pad' row, the
        // others the fill value.
        const auto pad = f.read<std::uint8_t>("pad");
        REQUIRE(pad.size() == ts.size() * 70 * 1024);
        for (std::size_t r = 0; r < ts.size(); ++r)
            CHECK(pad[r * 70 * 1024] == (ts[r] == refused ? 7 : 255));  // 255: the fill value of uint8
        CHECK_FALSE(f.exists("huge"));
        std::sort(ts.begin(), ts.end());
        for (std::int64_t i = 0; i < n; ++i) CHECK(ts[static_cast<std::size_t>(i)] == i);
    }
}

TEST_CASE("SMALLDATA_SERVERS sets the number of servers; a bad value is Errc::option on every rank",
          "[mpi][layout]") {
    // Every rank sets the same environment, as a launcher would (here after MPI started:
    // the library reads it in the constructor).
    if (world_size() < 3) return;
    const std::string dir = fresh_dir("servers_env");
    Options o = base_options();
    o.servers = 1;
    o.filename = dir + "/env.h5";
    const std::int64_t n = 300;
    setenv("SMALLDATA_SERVERS", "2", 1);
    int is_server = 0;
    {
        SmallData smd(o);
        is_server = smd.role() == smalldata::Role::server ? 1 : 0;
        for (std::int64_t i : smd.share(n)) smd.event(i, "x", static_cast<double>(i));
        smd.done();
    }
    // Counted after done(): servers leave the constructor only when their clients are done.
    CHECK(sum_over_world(is_server) == 2);
    if (world_rank() == 0) {
        CHECK(files_in(dir) == std::vector<std::string>{"env.h5", "env_part0.h5", "env_part1.h5"});
        h5r::File f(o.filename);
        CHECK(f.read<std::int64_t>("timestamp").size() == static_cast<std::size_t>(n));
    }
    for (const char* bad : {"0", "two", "", "3x"}) {
        CAPTURE(bad);
        setenv("SMALLDATA_SERVERS", bad, 1);
        std::string what;
        CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "option");
        CHECK(what.find("SMALLDATA_SERVERS") != std::string::npos);
    }
    unsetenv("SMALLDATA_SERVERS");
}

// ---------------------------------------------------------------- var_ fields
namespace {
// The var_ test's events: which have the group "peaks/var_p", with how many rows, and
// which have "var_img" (2-d rows of 3), with how many.
bool has_peaks(std::int64_t i) { return i % 5 != 0; }
std::size_t peaks_len(std::int64_t i) { return static_cast<std::size_t>((i * 7) % 6); }  // 0..5, 0 included
std::size_t img_rows(std::int64_t i) { return static_cast<std::size_t>(i % 3); }
}  // namespace

TEST_CASE("var_ fields: rows concatenated in event order, one aligned length per event and group", "[mpi][var]") {
    const int size = world_size();
    const std::string dir = fresh_dir("var");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/v.h5";
    o.cache_size = 16;  // many cache writes, rows of one event split between them
    o.batch_size = 37;
    const std::int64_t n = 4000;
    std::vector<int> img_client(static_cast<std::size_t>(size), 0);
    {
        SmallData smd(o);
        std::vector<float> x;
        std::vector<std::int32_t> y;
        std::vector<std::uint16_t> img;
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "e", i);
            if (has_peaks(i)) {
                const std::size_t L = peaks_len(i);
                x.assign(L, 0.f);
                y.assign(L, 0);
                for (std::size_t j = 0; j < L; ++j) {
                    x[j] = static_cast<float>(i) + 0.25f * static_cast<float>(j);
                    y[j] = static_cast<std::int32_t>(i * 10 + static_cast<std::int64_t>(j));
                }
                smd.event(i, "peaks/var_p/x", x);
                smd.event(i, "peaks/var_p/y", y);  // a second call: the same event, the same group
            }
            // Only client 0 (or the serial process) has this group: other parts lack it.
            if (smd.client_index() == 0) {
                const std::size_t R = img_rows(i);
                img.assign(R * 3, 0);
                for (std::size_t k = 0; k < img.size(); ++k) img[k] = static_cast<std::uint16_t>(i + static_cast<std::int64_t>(k));
                smd.event(i, "var_img", smalldata::view(img.data(), {R, 3}));
            }
        }
        smd.done();
    }
    if (world_rank() != 0) return;
    const int clients = size == 1 ? 1 : size - o.servers;
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    REQUIRE(ts.size() == static_cast<std::size_t>(n));
    const auto plen = f.read<std::int64_t>("peaks/var_p_len");
    const auto ilen = f.read<std::int64_t>("var_img_len");
    REQUIRE(plen.size() == ts.size());
    REQUIRE(ilen.size() == ts.size());
    CHECK(f.fill_value<std::int64_t>("peaks/var_p_len") == 0);
    CHECK(f.fill_value<std::int64_t>("var_img_len") == 0);
    const auto x = f.read<float>("peaks/var_p/x");
    const auto y = f.read<std::int32_t>("peaks/var_p/y");
    const auto img = f.read<std::uint16_t>("var_img");
    REQUIRE(f.dims("var_img").size() == 2);
    CHECK(f.dims("var_img")[1] == 3);
    std::size_t px = 0, pi = 0, bad_len = 0, bad_val = 0;
    for (std::size_t r = 0; r < ts.size(); ++r) {
        const std::int64_t t = ts[r];
        const std::size_t L = has_peaks(t) ? peaks_len(t) : 0;
        const bool on0 = size == 1 || t % clients == 0;
        const std::size_t R = on0 ? img_rows(t) : 0;
        bad_len += static_cast<std::size_t>(plen[r]) != L;
        bad_len += static_cast<std::size_t>(ilen[r]) != R;
        for (std::size_t j = 0; j < L && px + j < x.size() && px + j < y.size(); ++j) {
            bad_val += x[px + j] != static_cast<float>(t) + 0.25f * static_cast<float>(j);
            bad_val += y[px + j] != static_cast<std::int32_t>(t * 10 + static_cast<std::int64_t>(j));
        }
        for (std::size_t k = 0; k < R * 3 && pi * 3 + k < img.size(); ++k)
            bad_val += img[pi * 3 + k] != static_cast<std::uint16_t>(t + static_cast<std::int64_t>(k));
        px += static_cast<std::size_t>(plen[r]);  // cumsum of the lengths indexes the data
        pi += static_cast<std::size_t>(ilen[r]);
    }
    CHECK(bad_len == 0);
    CHECK(bad_val == 0);
    CHECK(px == x.size());
    CHECK(px == y.size());
    CHECK(pi * 3 == img.size());
}

// With several servers and clients, time_order routes every event to the server that owns
// its cell of a time grid (routed streams), and each server writes its cells once, in
// order: nothing moves at done(). SmallCells makes the cells small (a test's few thousand
// events make dozens: every part has many, the join maps each) and lets no loaded machine
// end the clients' wait for the grid. NoRouting: every event to its client's server, and
// the servers order at done() (the fallback, tested on its own).
namespace {
// The join also maps at most 5 cells of a part at once here (256 by default), so that
// the final file's datasets are many mappings of several cells each.
struct SmallCells {
    std::uint64_t was = smalldata::detail::cell_min_events;
    int batches = smalldata::detail::cell_batches;
    double wait = smalldata::detail::grid_wait_seconds;
    std::size_t per_mapping = smalldata::detail::join_cells_per_mapping;
    SmallCells() {
        smalldata::detail::cell_min_events = 1;
        smalldata::detail::cell_batches = 2;
        smalldata::detail::grid_wait_seconds = 600;
        smalldata::detail::join_cells_per_mapping = 5;
    }
    ~SmallCells() {
        smalldata::detail::cell_min_events = was;
        smalldata::detail::cell_batches = batches;
        smalldata::detail::grid_wait_seconds = wait;
        smalldata::detail::join_cells_per_mapping = per_mapping;
    }
};
struct NoRouting {
    NoRouting() { smalldata::detail::route_time_order = false; }
    ~NoRouting() { smalldata::detail::route_time_order = true; }
};
}  // namespace

// Every field of a var_ group has as many rows as the group's lengths add up to: a field
// that an event leaves out while giving others of its group, or that first comes after
// events of its group, has fill rows there (before, its rows ran short of the lengths and
// every later event of the field read another event's rows). With time_order too, where
// the ordering finds each event's rows from the lengths. Checkpoints every 0.05 s pad the
// fields at each one as well.
TEST_CASE("var_ fields: a field an event leaves out or that comes late has fill rows; data and lengths stay aligned",
          "[mpi][var]") {
    const std::int64_t n = 3000;
    const SmallCells cells;  // time_order: a late field's fill rows in many cells of each part
    for (const bool ordered : {false, true}) {
        CAPTURE(ordered);
        const std::string dir = fresh_dir("var_fill" + std::to_string(ordered));
        Options o = layout_options(dir + "/vf.h5");
        o.time_order = ordered;
        o.batch_size = 29;
        o.cache_size = 16;
        o.checkpoint_seconds = 0.05;
        auto len_of = [](std::int64_t i) { return static_cast<std::size_t>(i % 4); };  // 0 rows too
        auto gives_b = [n](std::int64_t i) { return i >= n / 4 && i % 3 != 0; };   // late, then now and then
        auto gives_c = [](std::int64_t i) { return i % 5 == 0; };
        {
            SmallData smd(o);
            std::vector<float> a;
            std::vector<std::int32_t> b;
            std::vector<std::uint16_t> c;
            for (std::int64_t i : smd.share(n)) {
                const std::size_t L = len_of(i);
                a.resize(L);
                b.resize(L);
                c.resize(2 * L);
                for (std::size_t j = 0; j < L; ++j) {
                    a[j] = static_cast<float>(i) + 0.5f * static_cast<float>(j);
                    b[j] = static_cast<std::int32_t>(i * 10 + static_cast<std::int64_t>(j));
                    c[2 * j] = static_cast<std::uint16_t>(i + static_cast<std::int64_t>(j));
                    c[2 * j + 1] = 7;
                }
                smd.event(i, "g/var_p/a", a);
                if (gives_b(i)) smd.event(i, "g/var_p/b", b);
                if (gives_c(i)) smd.event(i, "g/var_p/c", smalldata::view(c.data(), {L, 2}));
            }
            smd.done();
        }
        if (world_rank() != 0) continue;
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto len = f.read<std::int64_t>("g/var_p_len");
        const auto a = f.read<float>("g/var_p/a");
        const auto b = f.read<std::int32_t>("g/var_p/b");
        const auto c = f.read<std::uint16_t>("g/var_p/c");
        const std::int32_t bfill = f.fill_value<std::int32_t>("g/var_p/b");
        const std::uint16_t cfill = f.fill_value<std::uint16_t>("g/var_p/c");
        // CHECK, not REQUIRE: the next round's collectives need rank 0 too.
        CHECK(ts.size() == static_cast<std::size_t>(n));
        CHECK(len.size() == ts.size());
        std::size_t total = 0;
        for (std::int64_t v : len) total += static_cast<std::size_t>(v);
        CHECK(a.size() == total);
        CHECK(b.size() == total);
        CHECK(c.size() == 2 * total);
        if (len.size() != ts.size() || a.size() != total || b.size() != total || c.size() != 2 * total) continue;
        std::size_t at = 0, bad = 0, backwards = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) {
            const std::int64_t t = ts[r];
            backwards += r > 0 && t < ts[r - 1];
            const std::size_t L = len_of(t);
            bad += static_cast<std::size_t>(len[r]) != L;
            for (std::size_t j = 0; j < L; ++j) {
                bad += a[at + j] != static_cast<float>(t) + 0.5f * static_cast<float>(j);
                bad += b[at + j] != (gives_b(t) ? static_cast<std::int32_t>(t * 10 + static_cast<std::int64_t>(j)) : bfill);
                bad += c[2 * (at + j)] != (gives_c(t) ? static_cast<std::uint16_t>(t + static_cast<std::int64_t>(j)) : cfill);
                bad += c[2 * (at + j) + 1] != (gives_c(t) ? 7 : cfill);
            }
            at += static_cast<std::size_t>(len[r]);
        }
        CHECK(bad == 0);
        if (ordered) CHECK(backwards == 0);
    }
}

TEST_CASE("var_ fields in callbacks: values, shape and length; the length field is in the event", "[mpi][var]") {
    const int size = world_size();
    const std::string dir = fresh_dir("var_cb");
    std::atomic<long long> seen{0}, bad{0};
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/vc.h5";
    o.callbacks.push_back([&](const smalldata::Event& e) {
        ++seen;
        const std::int64_t t = e.timestamp();
        const std::size_t L = has_peaks(t) ? peaks_len(t) : 0;
        if (!has_peaks(t)) {
            bad += e.has("peaks/var_p/x") || e.has("peaks/var_p_len");
            return;
        }
        const smalldata::Field fx = e.field("peaks/var_p/x");
        const auto xs = e.get_vector<double>("peaks/var_p/x");
        bad += !fx.variable() || fx.length() != L || fx.shape().rank != 2 || fx.shape().dims[0] != L ||
               fx.shape().dims[1] != 2 || xs.size() != 2 * L || fx.bytes() != 16 * L;
        for (std::size_t j = 0; j < xs.size(); ++j) bad += xs[j] != static_cast<double>(t) + static_cast<double>(j);
        bad += e.get<std::int64_t>("peaks/var_p_len") != static_cast<std::int64_t>(L);
        bad += e.field("peaks/var_p_len").variable();
    });
    const std::int64_t n = 1500;
    {
        SmallData smd(o);
        std::vector<double> x;
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "e", i);
            if (!has_peaks(i)) continue;
            const std::size_t L = peaks_len(i);
            x.resize(2 * L);
            for (std::size_t j = 0; j < x.size(); ++j) x[j] = static_cast<double>(i) + static_cast<double>(j);
            smd.event(i, "peaks/var_p/x", smalldata::view(x.data(), {L, 2}));
        }
        smd.done();
    }
    CHECK(bad == 0);
    CHECK(sum_over_world(seen) == n);
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        CHECK(f.dims("peaks/var_p/x").size() == 2);
        std::int64_t total = 0;
        for (std::int64_t v : f.read<std::int64_t>("peaks/var_p_len")) total += v;
        CHECK(f.dims("peaks/var_p/x")[0] == static_cast<hsize_t>(total));
    }
}

TEST_CASE("var_ fields: wrong lengths, shapes and names are refused, the stream goes on", "[mpi][var]") {
    const int size = world_size();
    const std::string dir = fresh_dir("var_err");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/ve.h5";
    const std::int64_t n = 200;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "var_a/x", std::vector<std::int16_t>(static_cast<std::size_t>(i % 4), 1));
            if (i % 10 == 3) {
                // Same group, another length in the same event: refused, naming both.
                try {
                    smd.event(i, "var_a/y", std::vector<std::int16_t>(7, 2));
                    FAIL("no error for a length that differs within a var_ group");
                } catch (const smalldata::Error& e) {
                    CHECK(e.code() == Errc::shape_mismatch);
                    const std::string w = e.what();
                    CHECK(w.find("var_a/y") != std::string::npos);
                    CHECK(w.find("var_a/x") != std::string::npos);
                    CHECK(w.find("var_a_len") != std::string::npos);
                }
                // A scalar for a var_ field, a name ending in _len, a length dataset's name,
                // var_ with unaligned_, another row shape, another type.
                auto code = [&](auto&& call) {
                    try {
                        call();
                    } catch (const smalldata::Error& e) {
                        return e.code();
                    }
                    return Errc::protocol;  // "none": never a code these calls may give
                };
                CHECK(code([&] { smd.event(i, "var_s", 1.0); }) == Errc::shape_mismatch);
                CHECK(code([&] { smd.event(i, "var_a/z_len", std::vector<int>{1}); }) == Errc::name);
                CHECK(code([&] { smd.event(i, "var_a_len", std::int64_t(1)); }) == Errc::name);
                CHECK(code([&] { smd.event(i, "g/var_q_len/x", 1); }) == Errc::name);
                CHECK(code([&] { smd.event(i, "var_b/unaligned_c", std::vector<int>{1}); }) == Errc::name);
                const std::uint8_t two[4] = {1, 2, 3, 4};
                smd.event(i, "var_m", smalldata::view(two, {2, 2}));
                // (checked before the field's duplicate in this event)
                CHECK(code([&] { smd.event(i, "var_m", smalldata::view(two, {1, 4})); }) == Errc::shape_mismatch);
                CHECK(code([&] { smd.event(i, "var_a/x", std::vector<std::int32_t>{1}); }) == Errc::type_mismatch);
            }
        }
        smd.done();
    }
    if (world_rank() != 0) return;
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto len = f.read<std::int64_t>("var_a_len");
    REQUIRE(ts.size() == len.size());
    std::size_t bad = 0;
    std::int64_t total = 0;
    std::set<std::int64_t> all;
    for (std::size_t r = 0; r < ts.size(); ++r) {
        all.insert(ts[r]);
        bad += len[r] != ts[r] % 4;
        total += len[r];
    }
    CHECK(bad == 0);
    CHECK(all.size() == static_cast<std::size_t>(n));
    CHECK(f.dims("var_a/x")[0] == static_cast<hsize_t>(total));
    CHECK(!f.exists("var_a/y"));
    CHECK(!f.exists("var_s"));
    CHECK(!f.exists("var_b"));
    const auto m = f.read<std::int64_t>("var_m_len");
    std::int64_t mt = 0;
    for (std::int64_t v : m) mt += v;
    CHECK(mt == 2 * 20);
    CHECK(f.dims("var_m") == std::vector<hsize_t>{static_cast<hsize_t>(mt), 2});
}

namespace {
// What a rank's logger received.
struct LogLines {
    std::vector<std::pair<smalldata::LogLevel, std::string>> lines;
    smalldata::Logger logger() {
        return [this](smalldata::LogLevel level, const std::string& m) { lines.emplace_back(level, m); };
    }
    std::vector<std::string> with(const std::string& needle, smalldata::LogLevel level) const {
        std::vector<std::string> out;
        for (const auto& l : lines)
            if (l.first == level && l.second.find(needle) != std::string::npos) out.push_back(l.second);
        return out;
    }
};
// "progress: 12,345 events written ..." -> 12345
std::uint64_t events_in_progress_line(const std::string& line) {
    std::string digits;
    for (std::size_t i = line.find("progress: ") + 10; i < line.size() && line[i] != ' '; ++i)
        if (line[i] != ',') digits += line[i];
    return std::stoull(digits);
}
}  // namespace

TEST_CASE("progress lines, the report and warnings go to the logger; every rank has the same report",
          "[mpi][report]") {
    const int size = world_size(), rank = world_rank();
    const int servers = size == 1 ? 0 : servers_for(size);
    const int clients = size == 1 ? 0 : size - servers;
    const std::string dir = fresh_dir("report");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/r.h5";
    o.progress_seconds = 0.05;
    LogLines log;
    o.logger = log.logger();
    const std::int64_t n = 3000;
    smalldata::Report rep;
    std::string prefix;
    {
        SmallData smd(o);
        // Every client's loop lasts at least 0.6 s: a dozen progress intervals.
        const std::int64_t mine = smd.share(n).size();
        const auto pause = std::chrono::microseconds(mine > 0 ? 600000 / mine : 0);
        for (std::int64_t i : smd.share(n)) {
            std::this_thread::sleep_for(pause);
            smd.event(i, "x", static_cast<double>(i), "img", std::array<float, 16>{});
        }
        if (smd.summary()) smd.save_summary("nothing", std::optional<double>());  // a warning (client 0)
        CHECK(!smd.report().complete);
        smd.done();
        rep = smd.report();
        prefix = smd.role() == Role::serial ? "smalldata: " : "smalldata[rank 0, server 0]: ";
    }
    // The same report on every rank.
    REQUIRE(rep.complete);
    CHECK(rep.parallel == (size > 1));
    CHECK(rep.events == static_cast<std::uint64_t>(n));
    CHECK(rep.bytes == static_cast<std::uint64_t>(n) * (8 + 8 + 64));  // timestamp, x, img
    CHECK(rep.wall_seconds >= 0.6);
    CHECK(rep.events_per_second > 0);
    CHECK(rep.servers.size() == static_cast<std::size_t>(std::max(servers, 1)));
    CHECK(rep.clients.size() == static_cast<std::size_t>(clients));
    std::uint64_t by_servers = 0, by_clients = 0;
    for (const auto& s : rep.servers) {
        by_servers += s.events;
        CHECK(s.seconds > 0);
        CHECK(s.busy_fraction >= 0);
        CHECK(s.idle_fraction >= 0);
        CHECK(std::abs(s.busy_fraction + s.idle_fraction - 1) < 1e-9);
        CHECK(s.write_fraction <= 1);
    }
    for (const auto& c : rep.clients) {
        by_clients += c.events;
        CHECK(c.seconds >= 0.6);  // its loop, paced above
        CHECK(c.wait_fraction >= 0);
        CHECK(c.wait_fraction <= 1);
    }
    CHECK(by_servers == static_cast<std::uint64_t>(n));
    if (size > 1) CHECK(by_clients == static_cast<std::uint64_t>(n));
    CHECK(!rep.verdict.empty());
    // 28 bits of a hash: the sum over the world cannot overflow
    const long long h = static_cast<long long>(std::hash<std::string>{}(rep.verdict + rep.text().substr(0, 20)) & 0xfffffff);
    CHECK(sum_over_world(h) == h * size);
    CHECK(sum_over_world(rep.suggested_servers) == static_cast<long long>(rep.suggested_servers) * size);

    using L = smalldata::LogLevel;
    const auto progress = log.with("progress: ", L::info);
    const auto reports = log.with(": report: ", L::info);
    if (rank == 0) {
        // A dozen intervals: at least 4 lines even on a loaded machine, each from rank 0,
        // with the events written so far (never decreasing, never more than n).
        CHECK(progress.size() >= 4);
        std::uint64_t last = 0;
        for (const auto& p : progress) {
            CAPTURE(p);
            CHECK(p.rfind(prefix + "progress: ", 0) == 0);
            CHECK(p.find(" events/s in the last ") != std::string::npos);
            CHECK(p.find(size > 1 ? "; busiest server: server " : "; writing ") != std::string::npos);
            const std::uint64_t e = events_in_progress_line(p);
            CHECK(e >= last);
            CHECK(e <= static_cast<std::uint64_t>(n));
            last = e;
        }
        REQUIRE(reports.size() == 1);
        CHECK(reports[0].rfind(prefix + "report: 3,000 events, ", 0) == 0);
        CHECK(reports[0].find("\n  verdict: " + rep.verdict) != std::string::npos);
        if (size > 1) CHECK(log.with("smalldata: parallel mode, ", L::info).size() == 1);
    } else {
        CHECK(progress.empty());
        CHECK(reports.empty());
    }
    // The warning of client 0 (serial: the process), with its source.
    const bool client0 = size == 1 || rank == servers;
    const auto warned = log.with("'nothing' has no value", L::warning);
    CHECK(warned.size() == (client0 ? 1u : 0u));
    if (client0 && !warned.empty())
        CHECK(warned[0].rfind(size == 1 ? "smalldata: warning: " : "smalldata[rank " + std::to_string(rank) + ", client 0]: warning: ", 0) == 0);

    // Progress and report off: the logger hears neither; the report is made all the same.
    LogLines quiet;
    o.logger = quiet.logger();
    o.progress_seconds = 0;
    o.report = false;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n)) smd.event(i, "x", static_cast<double>(i));
        smd.done();
        CHECK(smd.report().complete);
        CHECK(smd.report().events == static_cast<std::uint64_t>(n));
    }
    CHECK(quiet.with("progress: ", L::info).empty());
    CHECK(quiet.with(": report: ", L::info).empty());
    if (rank == 0) {
        h5r::File f(o.filename);
        CHECK(f.read<double>("x").size() == static_cast<std::size_t>(n));
    }
}

// ---------------------------------------------------------------- compression
namespace {
// The compression tests' events: scalars, an array, a var_ group (0 to 4 rows per event),
// and in 2 events of 5 an image of 64 KiB (rows that size take the big-row path).
constexpr std::uint64_t zimg_rows = 64, zimg_cols = 512;
bool has_zimg(std::int64_t i) { return i % 5 < 2; }
std::uint16_t zimg_value(std::int64_t i, std::size_t k) {
    return static_cast<std::uint16_t>((i + static_cast<std::int64_t>(k / 64)) % 4096);  // smooth: compresses
}
std::size_t zpeaks(std::int64_t i) { return static_cast<std::size_t>((i * 3) % 5); }
float zpeak(std::int64_t i, std::size_t j) { return static_cast<float>(i) + 0.5f * static_cast<float>(j); }
std::array<std::int16_t, 4> zarr(std::int64_t i) {
    return {static_cast<std::int16_t>(i % 1000), static_cast<std::int16_t>(-(i % 1000)), 7, static_cast<std::int16_t>(i % 3)};
}
const char* const zfields[] = {"timestamp", "x", "n", "det/arr", "det/img", "peaks/var_p/x", "peaks/var_p_len"};

// The files the writers of a run with options o wrote: the serial file, or every part.
std::vector<std::string> writer_files(const Options& o) {
    if (world_size() == 1) return {o.filename};
    const std::string stem = o.filename.substr(0, o.filename.size() - 3);  // "<dir>/z.h5" -> "<dir>/z"
    std::vector<std::string> out;
    for (int k = 0; k < o.servers; ++k) out.push_back(stem + "_part" + std::to_string(k) + ".h5");
    return out;
}

// One filter expected in a pipeline: its id and the first of its parameters (cd_values;
// HDF5 may append its own, such as shuffle's element size).
struct WantFilter {
    int id;
    std::vector<unsigned> params;
};

// Writes n events with options o; then rank 0 reads every value back from the final file,
// and checks the filter pipeline of every per-event dataset of every file a writer wrote
// (the serial file, or each part) and that the image dataset takes less room than its data.
void compressed_run(const Options& o, std::int64_t n, const std::vector<WantFilter>& want) {
    {
        SmallData smd(o);
        std::vector<std::uint16_t> img(static_cast<std::size_t>(zimg_rows * zimg_cols));
        std::vector<float> px;
        for (std::int64_t i : smd.share(n)) {
            smd.event(i, "x", static_cast<double>(i) * 0.5, "n", static_cast<std::int32_t>(i * 3 - 7), "det/arr", zarr(i));
            if (has_zimg(i)) {
                for (std::size_t k = 0; k < img.size(); ++k) img[k] = zimg_value(i, k);
                smd.event(i, "det/img", smalldata::view(img.data(), {zimg_rows, zimg_cols}));
            }
            px.resize(zpeaks(i));
            for (std::size_t j = 0; j < px.size(); ++j) px[j] = zpeak(i, j);
            smd.event(i, "peaks/var_p/x", px);
        }
        smd.done();
    }
    if (world_rank() != 0) return;
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    REQUIRE(ts.size() == static_cast<std::size_t>(n));
    const auto x = f.read<double>("x");
    const auto nn = f.read<std::int32_t>("n");
    const auto arr = f.read<std::int16_t>("det/arr");
    const auto img = f.read<std::uint16_t>("det/img");
    const auto len = f.read<std::int64_t>("peaks/var_p_len");
    const auto px = f.read<float>("peaks/var_p/x");
    const std::size_t N = ts.size(), I = static_cast<std::size_t>(zimg_rows * zimg_cols);
    REQUIRE(x.size() == N);
    REQUIRE(nn.size() == N);
    REQUIRE(arr.size() == 4 * N);
    REQUIRE(img.size() == I * N);
    REQUIRE(len.size() == N);
    std::vector<char> seen(N, 0);
    std::size_t bad = 0, bad_img = 0, bad_var = 0, at = 0;
    for (std::size_t r = 0; r < N; ++r) {
        const std::int64_t t = ts[r];
        REQUIRE(t >= 0);
        REQUIRE(t < n);
        bad += seen[static_cast<std::size_t>(t)]++ != 0;
        bad += x[r] != static_cast<double>(t) * 0.5;
        bad += nn[r] != static_cast<std::int32_t>(t * 3 - 7);
        const auto a = zarr(t);
        for (std::size_t k = 0; k < 4; ++k) bad += arr[4 * r + k] != a[k];
        for (std::size_t k = 0; k < I; ++k)  // fill value 65535 where the event has no image
            bad_img += img[I * r + k] != (has_zimg(t) ? zimg_value(t, k) : std::uint16_t(65535));
        bad_var += static_cast<std::size_t>(len[r]) != zpeaks(t);
        for (std::size_t j = 0; j < zpeaks(t) && at + j < px.size(); ++j) bad_var += px[at + j] != zpeak(t, j);
        at += zpeaks(t);
    }
    CHECK(bad == 0);
    CHECK(bad_img == 0);
    CHECK(bad_var == 0);
    CHECK(at == px.size());

    for (const std::string& path : writer_files(o)) {
        CAPTURE(path);
        h5r::File part(path);
        for (const char* name : zfields) {
            CAPTURE(name);
            REQUIRE(part.is_dataset(name));
            const auto got = part.filters(name);
            REQUIRE(got.size() == want.size());
            for (std::size_t i = 0; i < want.size(); ++i) {
                CHECK(got[i].id == want[i].id);
                REQUIRE(got[i].params.size() >= want[i].params.size());
                for (std::size_t j = 0; j < want[i].params.size(); ++j) CHECK(got[i].params[j] == want[i].params[j]);
            }
        }
        // The images really are compressed (an optional filter that failed would store them raw).
        const std::uint64_t raw = part.dims("det/img")[0] * I * 2;
        CHECK(part.storage_bytes("det/img") * 4 < raw);
    }
}
}  // namespace

TEST_CASE("compression: deflate + shuffle on every per-event dataset; every value reads back", "[mpi][compression]") {
    const std::string dir = fresh_dir("deflate");
    Options o = layout_options(dir + "/z.h5");
    o.compression = smalldata::Compression::deflate(1);
    o.cache_size = 64;              // many cache writes, some with partial chunks
    o.batch_size = 37;
    o.checkpoint_seconds = 0.25;    // checkpoints write partial chunks through the filters
    compressed_run(o, 1500, {{H5Z_FILTER_SHUFFLE, {}}, {H5Z_FILTER_DEFLATE, {1}}});
    if (world_rank() == 0) {  // the final file's datasets read through the parts (or are the serial file's)
        h5r::File f(o.filename);
        CHECK(f.read<std::int64_t>("timestamp").size() == 1500u);
    }
    // Level 9 without shuffle: only deflate, at that level; no checkpoints.
    o.compression = smalldata::Compression::deflate(9, false);
    o.checkpoint_seconds = 0;
    compressed_run(o, 700, {{H5Z_FILTER_DEFLATE, {9}}});
}

TEST_CASE("compression: the LZ4 plugin (filter 32004) is found and its files read back", "[mpi][compression]") {
    // The plugin comes with Debian's hdf5-filter-plugin (installed by .ci/run): without it
    // this test fails (Errc::option naming the filter), it does not skip.
    const std::string dir = fresh_dir("lz4");
    Options o = layout_options(dir + "/z.h5");
    o.compression = smalldata::Compression::filter(32004);
    o.cache_size = 128;
    compressed_run(o, 800, {{32004, {}}});
}

TEST_CASE("compression: an unavailable filter or an invalid setting is Errc::option on every rank before any event",
          "[mpi][compression]") {
    const int size = world_size();
    const std::string dir = fresh_dir("zbad");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/bad.h5";
    std::string what;
    o.compression = smalldata::Compression::filter(32767);  // no such filter registered or installed
    CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "option");
    CHECK(what.find("32767") != std::string::npos);
    CHECK(what.find("not available") != std::string::npos);
    for (int level : {0, 10, -1}) {
        CAPTURE(level);
        o.compression = smalldata::Compression::deflate(level);
        CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "option");
        CHECK(what.find("deflate level") != std::string::npos);
    }
    for (unsigned id : {0u, 65536u}) {
        CAPTURE(id);
        o.compression = smalldata::Compression::filter(id);
        CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "option");
        CHECK(what.find(std::to_string(id)) != std::string::npos);
    }
    // Parameters the filter rejects (the bzip2 plugin: a block size of 1 to 9) are found by
    // trying it on a chunk in memory, not at the first write.
    o.compression = smalldata::Compression::filter(307, {42});
    CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "option");
    CHECK(what.find("HDF5 filter 307 (bzip2) with parameters {42}") != std::string::npos);
    o.compression = smalldata::Compression::filter(307, {9});  // a valid one passes
    o.filename.clear();
    CHECK_NOTHROW([&] {
        SmallData smd(o);
        smd.done();
    }());
    o.filename = dir + "/bad.h5";
    if (size > 1) {  // settings that differ between ranks
        o.compression = smalldata::Compression::deflate(1 + world_rank() % 2);
        CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "option");
        CHECK(what.find("compression (level)") != std::string::npos);
        o.compression = smalldata::Compression::filter(1, {world_rank() == 0 ? 1u : 2u});
        CHECK(error_code_of([&] { SmallData smd(o); }, &what) == "option");
        CHECK(what.find("compression (params)") != std::string::npos);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) CHECK(files_in(dir).empty());  // nothing was created
}

// ---------------------------------------------------------------- compression: which thread
namespace {
// A pass-through HDF5 filter registered by the test (id 300: HDF5 keeps 256-511 for
// testing) that records on which thread each chunk is compressed.
constexpr H5Z_filter_t counting_filter_id = 300;
std::thread::id main_thread;
std::atomic<long> encodes_main{0}, encodes_other{0}, flushes_main{0}, flushes_other{0};
// The chunk the option check compresses on the constructor's thread (filter_probe): int32
// values (i / 8) % 100, 4096 of them. Not counted.
bool is_probe_chunk(const void* buf, std::size_t n) {
    if (n != 4096 * sizeof(std::int32_t)) return false;
    const auto* v = static_cast<const std::int32_t*>(buf);
    for (std::size_t i = 0; i < 4096; ++i)
        if (v[i] != static_cast<std::int32_t>((i / 8) % 100)) return false;
    return true;
}
std::size_t counting_filter(unsigned flags, std::size_t, const unsigned[], std::size_t nbytes, std::size_t*,
                            void** buf) {
    if ((flags & H5Z_FLAG_REVERSE) == 0 && !is_probe_chunk(*buf, nbytes))
        ++(std::this_thread::get_id() == main_thread ? encodes_main : encodes_other);
    return nbytes;  // the chunk as it is
}
void count_flush(int stage) noexcept {
    if (stage == 1) ++(std::this_thread::get_id() == main_thread ? flushes_main : flushes_other);
}
}  // namespace

TEST_CASE("compression: every chunk is compressed on the write thread, checkpoints included", "[mpi][compression]") {
    static const H5Z_class2_t counting = {H5Z_CLASS_T_VERS, counting_filter_id, 1, 1, "smalldata test: counting",
                                          nullptr, nullptr, counting_filter};
    REQUIRE(H5Zregister(&counting) >= 0);
    main_thread = std::this_thread::get_id();
    encodes_main = encodes_other = flushes_main = flushes_other = 0;
    const std::string dir = fresh_dir("zthread");
    Options o = layout_options(dir + "/z.h5");
    o.compression = smalldata::Compression::filter(counting_filter_id);
    o.write_thread = 1;             // serial mode: a write thread (servers always have one)
    o.checkpoint_seconds = 0.05;    // a checkpoint every 20 ms
    o.batch_size = 16;
    smalldata::detail::checkpoint_hook = count_flush;
    const std::int64_t n = 600;
    {
        SmallData smd(o);
        // Each client's events over 0.4 s (20 checkpoint intervals), whatever its share,
        // so that every server takes checkpoints even with more ranks than cores.
        const auto share = smd.share(n);
        const std::vector<std::int64_t> mine(share.begin(), share.end());
        const auto pause = std::chrono::microseconds(400000 / std::max<std::size_t>(1, mine.size()));
        for (std::int64_t i : mine) {
            smd.event(i, "x", static_cast<double>(i), "det/arr", zarr(i));
            if (i % 50 == 0) smd.event(i, "unaligned_y", static_cast<float>(i));
            std::this_thread::sleep_for(pause);
        }
        smd.done();
    }
    smalldata::detail::checkpoint_hook = nullptr;
    const Role role = world_size() == 1 ? Role::serial : (world_rank() < o.servers ? Role::server : Role::client);
    CAPTURE(world_rank());
    CHECK(encodes_main == 0);  // none on the loop's thread: not in event(), not in the receive loop
    CHECK(flushes_main == 0);  // checkpoints flushed by the write thread
    if (role != Role::client) {
        CHECK(encodes_other > 0);
        CHECK(flushes_other > 0);  // checkpoints were taken
    } else {
        CHECK(encodes_other == 0);  // a client writes no per-event dataset
    }
    if (world_rank() == 0) {  // and every value is in the file
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto x = f.read<double>("x");
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        REQUIRE(x.size() == ts.size());
        std::size_t bad = 0;
        for (std::size_t r = 0; r < ts.size(); ++r) bad += x[r] != static_cast<double>(ts[r]);
        CHECK(bad == 0);
        CHECK(f.read<float>("unaligned_y").size() == 12u);
    }
}

TEST_CASE("compression: a writer's file takes the room of its compressed chunks, no more", "[mpi][compression]") {
    // Images of 128 KiB with 6 bits of noise per pixel compress to a little over 64 KiB:
    // chunks of varying sizes, which must follow each other in the file without gaps.
    const std::string dir = fresh_dir("zroom");
    Options o = layout_options(dir + "/z.h5");
    o.compression = smalldata::Compression::deflate(1);
    const std::int64_t n = 60;
    std::vector<std::uint16_t> img(256 * 256);
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(n)) {
            std::uint64_t r = 0x9e3779b97f4a7c15ull + static_cast<std::uint64_t>(i);
            for (auto& px : img) {  // xorshift64
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                px = static_cast<std::uint16_t>(1000 + (r & 63));
            }
            smd.event(i, "det/image", smalldata::view(img.data(), {256, 256}));
        }
        smd.done();
    }
    if (world_rank() != 0) return;
    std::uint64_t rows = 0;
    for (const std::string& path : writer_files(o)) {
        CAPTURE(path);
        h5r::File part(path);
        const std::uint64_t stored = part.storage_bytes("det/image") + part.storage_bytes("timestamp");
        rows += part.dims("det/image")[0];
        CHECK(stored < part.dims("det/image")[0] * 131072 * 3 / 4);  // compressed (about 1.9x)
        CHECK(std::filesystem::file_size(path) < stored + stored / 10 + (std::uint64_t(128) << 10));
    }
    CHECK(rows == static_cast<std::uint64_t>(n));
}

// ---------------------------------------------------------------- self_contained
namespace {
// Every dataset of a file, by path.
void datasets_of(const h5r::File& f, const std::string& group, std::vector<std::string>& out) {
    for (const std::string& c : f.children(group)) {
        const std::string p = group.empty() ? c : group + "/" + c;
        if (f.is_group(p))
            datasets_of(f, p, out);
        else if (f.is_dataset(p))
            out.push_back(p);
    }
}
const char* const flat_fields[] = {"timestamp",     "x",           "n",         "det/img",        "det/unaligned_u",
                                   "peaks/var_p/x", "peaks/var_p_len", "peaks/var_e/y", "peaks/var_e_len", "late"};
std::uint16_t flat_img(std::int64_t i, std::size_t k) {
    return static_cast<std::uint16_t>((i + static_cast<std::int64_t>(k)) % 60000);
}

// A run of n events with o (self_contained): scalars, a 4 x 6 image, an unaligned_ field, a
// var_ group, a var_ group whose values are all empty (its data: a dataset of 0 rows), a
// field first given half-way (fill values before), summaries and attributes. Then world
// rank 0 checks that the final file is alone in `dir`, that none of its datasets is
// virtual (the per-event ones chunked, with the filters `want`), and every value.
void self_contained_run(const Options& o, const std::string& dir, std::int64_t n, const std::vector<WantFilter>& want) {
    {
        SmallData smd(o);
        std::array<std::uint16_t, 24> img{};
        std::vector<float> px;
        const std::vector<std::int32_t> none;
        std::int64_t mine = 0;
        for (std::int64_t i : smd.share(n)) {
            for (std::size_t k = 0; k < img.size(); ++k) img[k] = flat_img(i, k);
            smd.event(i, "x", static_cast<double>(i) * 0.5, "n", static_cast<std::int32_t>(i * 3 - 7), "det/img",
                      smalldata::view(img.data(), {4, 6}));
            if (i % 3 == 0) smd.event(i, "det/unaligned_u", static_cast<std::int16_t>(i % 30000));
            px.resize(zpeaks(i));
            for (std::size_t j = 0; j < px.size(); ++j) px[j] = zpeak(i, j);
            smd.event(i, "peaks/var_p/x", px, "peaks/var_e/y", none);
            if (i >= n / 2) smd.event(i, "late", static_cast<float>(i));
            ++mine;
        }
        if (smd.summary()) {
            const std::int64_t total = smd.sum(mine);
            smd.save_summary("n_events", total, "note", std::string("flat"));
            smd.save_attribute("", "experiment", "flat");
            smd.save_attribute("x", "units", "mm");
            smd.save_attribute("det", "geometry", std::array<double, 2>{0.5, -1.5});
            smd.save_attribute("n_events", "units", "events");
        }
        smd.done();
    }
    if (world_rank() != 0) return;
    const std::string base = o.filename.substr(dir.size() + 1);
    CHECK(files_in(dir) == std::vector<std::string>{base});  // no part, no temporary file
    h5r::File f(o.filename);
    std::vector<std::string> names;
    datasets_of(f, "", names);
    CHECK(names.size() == std::size(flat_fields) + 2);  // the fields and two summaries
    for (const std::string& name : names) {
        CAPTURE(name);
        CHECK(f.layout(name) != H5D_VIRTUAL);
    }
    for (const char* name : flat_fields) {
        CAPTURE(name);
        REQUIRE(f.is_dataset(name));
        CHECK(f.layout(name) == H5D_CHUNKED);
        const auto got = f.filters(name);
        REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < want.size(); ++i) {
            CHECK(got[i].id == want[i].id);
            REQUIRE(got[i].params.size() >= want[i].params.size());
            for (std::size_t j = 0; j < want[i].params.size(); ++j) CHECK(got[i].params[j] == want[i].params[j]);
        }
    }
    // Values, from what every event gave.
    const auto ts = f.read<std::int64_t>("timestamp");
    REQUIRE(ts.size() == static_cast<std::size_t>(n));
    const auto x = f.read<double>("x");
    const auto nn = f.read<std::int32_t>("n");
    const auto img = f.read<std::uint16_t>("det/img");
    const auto len = f.read<std::int64_t>("peaks/var_p_len");
    const auto px = f.read<float>("peaks/var_p/x");
    const auto elen = f.read<std::int64_t>("peaks/var_e_len");
    const auto late = f.read<float>("late");
    const std::size_t N = ts.size();
    REQUIRE(x.size() == N);
    REQUIRE(nn.size() == N);
    REQUIRE(img.size() == 24 * N);
    CHECK(f.dims("det/img") == std::vector<hsize_t>{N, 4, 6});
    REQUIRE(len.size() == N);
    REQUIRE(elen.size() == N);
    REQUIRE(late.size() == N);
    CHECK(f.dims("peaks/var_e/y") == std::vector<hsize_t>{0});
    std::vector<char> seen(N, 0);
    std::size_t bad = 0, at = 0;
    for (std::size_t r = 0; r < N; ++r) {
        const std::int64_t t = ts[r];
        REQUIRE(t >= 0);
        REQUIRE(t < n);
        bad += seen[static_cast<std::size_t>(t)]++ != 0;
        bad += x[r] != static_cast<double>(t) * 0.5;
        bad += nn[r] != static_cast<std::int32_t>(t * 3 - 7);
        for (std::size_t k = 0; k < 24; ++k) bad += img[24 * r + k] != flat_img(t, k);
        bad += t >= n / 2 ? late[r] != static_cast<float>(t) : !std::isnan(late[r]);
        bad += elen[r] != 0;
        bad += static_cast<std::size_t>(len[r]) != zpeaks(t);
        for (std::size_t j = 0; j < zpeaks(t) && at + j < px.size(); ++j) bad += px[at + j] != zpeak(t, j);
        at += zpeaks(t);
    }
    CHECK(bad == 0);
    CHECK(at == px.size());
    auto u = f.read<std::int16_t>("det/unaligned_u");
    std::sort(u.begin(), u.end());
    std::vector<std::int16_t> want_u;
    for (std::int64_t i = 0; i < n; i += 3) want_u.push_back(static_cast<std::int16_t>(i % 30000));
    CHECK(u == want_u);
    // Fill values, summaries, attributes.
    CHECK(std::isnan(f.fill_value<float>("late")));
    CHECK(f.fill_value<std::int32_t>("n") == -99999);
    CHECK(f.fill_value<std::int64_t>("peaks/var_p_len") == 0);
    CHECK(f.fill_value<std::uint16_t>("det/img") == 65535);
    CHECK(f.scalar<std::int64_t>("n_events") == n);
    CHECK(f.read_string("note") == "flat");
    CHECK(f.read_attr_string("", "experiment") == "flat");
    CHECK(f.read_attr_string("x", "units") == "mm");
    CHECK(f.read_attr_string("n_events", "units") == "events");
    CHECK(f.read_attr<double>("det", "geometry") == std::vector<double>{0.5, -1.5});
    // No attribute ties it to parts: the tools see a serial file.
    CHECK_FALSE(f.has_attr("", "smalldata_run"));
    CHECK_FALSE(f.has_attr("", "smalldata_parts"));
    CHECK(f.has_attr("", "smalldata_flat_run") == (world_size() > 1));
}
}  // namespace

TEST_CASE("self_contained: ordinary datasets holding every row, no part file left", "[mpi][self_contained]") {
    const std::string dir = fresh_dir("flat");
    Options o = layout_options(dir + "/s.h5");
    o.self_contained = true;
    o.cache_size = 64;   // many cache writes: parts of several chunks each
    o.batch_size = 37;
    self_contained_run(o, dir, 2500, {});
    // A rerun of the same name replaces it.
    self_contained_run(o, dir, 700, {});
}

TEST_CASE("self_contained with compression: the filters of Options::compression on every per-event dataset",
          "[mpi][self_contained][compression]") {
    const std::string dir = fresh_dir("flat_z");
    Options o = layout_options(dir + "/z.h5");
    o.self_contained = true;
    o.compression = smalldata::Compression::deflate(1);
    o.cache_size = 128;
    self_contained_run(o, dir, 1500, {{H5Z_FILTER_SHUFFLE, {}}, {H5Z_FILTER_DEFLATE, {1}}});
}

TEST_CASE("self_contained: a copy that fails leaves the parts and is an error on every rank", "[mpi][self_contained]") {
    const int size = world_size();
    if (size == 1) return;  // serial mode copies nothing
    const std::string dir = fresh_dir("flat_fail");
    Options o = base_options();
    o.servers = servers_for(size);
    o.filename = dir + "/f.h5";
    o.self_contained = true;
    std::string code, what;
    {
        SmallData smd(o);
        for (std::int64_t i : smd.share(300)) smd.event(i, "x", static_cast<double>(i));
        // After the constructor's checks: a directory where the copy goes. Client 0 joins.
        if (smd.client_index() == 0) std::filesystem::create_directory(o.filename);
        code = error_code_of([&] { smd.done(); }, &what);
    }
    CAPTURE(what);
    CHECK(code == "hdf5");
    CHECK(what.find("f.h5") != std::string::npos);
    CHECK(what.find("directory") != std::string::npos);
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) {
        // The parts are whole (`smalldata recover` rebuilds the final file from them); no
        // temporary file is left.
        std::size_t rows = 0;
        for (int k = 0; k < o.servers; ++k) {
            h5r::File p(dir + "/f_part" + std::to_string(k) + ".h5");
            rows += p.read<double>("x").size();
        }
        CHECK(rows == 300);
        for (const std::string& name : files_in(dir)) CHECK(name.find(".tmp") == std::string::npos);
    }
}

namespace {
// Options::time_order. Event i goes to client c = i % clients (share()), its k-th; its
// timestamp k * (c + 2) + c increases on each client, faster on higher clients (so the
// clients' streams drift apart in time), with ties between clients.
// order_clustered (set with order_n, the run's events): the run falls into one segment
// per server, and within each segment the events of server 0's clients (c % servers == 0)
// all come before the others', as when clients are given contiguous blocks of a run.
int order_clients = 1;
bool order_clustered = false;
bool order_stall = false;  // client 0 sleeps 1.5 s after its 100th event
bool order_late_start = false;  // client 0 sleeps 1.5 s before its first event
std::int64_t order_n = 0;
std::int64_t order_ts(std::int64_t i) {
    const std::int64_t c = i % order_clients, k = i / order_clients;
    if (!order_clustered) return k * (c + 2) + c;
    const std::int64_t servers = servers_for(world_size());
    const std::int64_t mine = (order_n - c + order_clients - 1) / order_clients;  // client c's events
    const std::int64_t segment = k * servers / std::max<std::int64_t>(mine, 1);
    return (segment << 40) + (c % servers == 0 ? 0 : std::int64_t(1) << 39) + k * 16 + c;
}
std::uint16_t order_img(std::int64_t i, std::size_t k) { return static_cast<std::uint16_t>((i * 31 + static_cast<std::int64_t>(k)) % 60000); }

// The events in the order the final file must hold them: by timestamp, then client, then
// the order the client gave them (its i).
std::vector<std::int64_t> expected_order(std::int64_t n, int clients) {
    std::vector<std::int64_t> e(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) e[static_cast<std::size_t>(i)] = i;
    std::sort(e.begin(), e.end(), [&](std::int64_t a, std::int64_t b) {
        const auto ka = std::make_tuple(order_ts(a), a % clients, a);
        const auto kb = std::make_tuple(order_ts(b), b % clients, b);
        return ka < kb;
    });
    return e;
}

// A run of n events with time_order on: scalars, an image of img_px pixels, an unaligned_
// field, a var_ group, a field only client 0 gives, a field first given half-way; then
// world rank 0 checks every row of every dataset against the expected order.
void time_order_run(const Options& o, std::int64_t n, std::size_t img_px, smalldata::Report* report = nullptr) {
    int clients = 1;
    {
        SmallData smd(o);
        clients = std::max(1, smd.client_count());
        order_clients = clients;
        std::vector<std::uint16_t> img(img_px);
        std::vector<float> px;
        for (std::int64_t i : smd.share(n)) {
            for (std::size_t k = 0; k < img.size(); ++k) img[k] = order_img(i, k);
            const std::int64_t t = order_ts(i);
            if ((order_stall && i == 100 * static_cast<std::int64_t>(clients)) || (order_late_start && i == 0))
                std::this_thread::sleep_for(std::chrono::milliseconds(1500));
            smd.event(t, "x", static_cast<double>(i) * 0.5, "id", i, "det/img", smalldata::view(img.data(), {img_px}));
            if (i % 3 == 0) smd.event(t, "det/unaligned_u", static_cast<std::int32_t>(i));
            px.resize(zpeaks(i));
            for (std::size_t j = 0; j < px.size(); ++j) px[j] = zpeak(i, j);
            smd.event(t, "peaks/var_p/x", px);
            if (smd.client_index() <= 0) smd.event(t, "only0", static_cast<std::int16_t>(i % 1000));
            if (i >= n / 2) smd.event(t, "late", static_cast<float>(i));
        }
        if (smd.summary()) smd.save_summary("note", std::string("ordered"));
        smd.done();
        if (report) *report = smd.report();
    }
    clients = static_cast<int>(sum_over_world(world_rank() == 0 ? clients : 0));
    if (world_rank() != 0) return;
    const std::vector<std::int64_t> want = expected_order(n, clients);
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto id = f.read<std::int64_t>("id");
    const auto x = f.read<double>("x");
    const auto img = f.read<std::uint16_t>("det/img");
    const auto only0 = f.read<std::int16_t>("only0");
    const auto late = f.read<float>("late");
    const auto len = f.read<std::int64_t>("peaks/var_p_len");
    const auto px = f.read<float>("peaks/var_p/x");
    const auto u = f.read<std::int32_t>("det/unaligned_u");
    const std::size_t N = static_cast<std::size_t>(n);
    REQUIRE(ts.size() == N);
    REQUIRE(id.size() == N);
    REQUIRE(x.size() == N);
    REQUIRE(img.size() == N * img_px);
    REQUIRE(only0.size() == N);
    REQUIRE(late.size() == N);
    REQUIRE(len.size() == N);
    const std::int16_t fill16 = f.fill_value<std::int16_t>("only0");
    std::size_t bad = 0, at = 0;
    std::vector<std::int32_t> want_u;
    for (std::size_t r = 0; r < N; ++r) {
        const std::int64_t i = want[r];
        bad += id[r] != i;
        bad += ts[r] != order_ts(i);
        bad += x[r] != static_cast<double>(i) * 0.5;
        for (std::size_t k = 0; k < img_px; ++k) bad += img[r * img_px + k] != order_img(i, k);
        bad += only0[r] != (i % clients == 0 ? static_cast<std::int16_t>(i % 1000) : fill16);
        bad += i >= n / 2 ? late[r] != static_cast<float>(i) : !std::isnan(late[r]);
        bad += static_cast<std::size_t>(len[r]) != zpeaks(i);
        for (std::size_t j = 0; j < zpeaks(i); ++j) bad += at + j >= px.size() || px[at + j] != zpeak(i, j);
        at += zpeaks(i);
        if (i % 3 == 0) want_u.push_back(static_cast<std::int32_t>(i));
    }
    CHECK(bad == 0);
    CHECK(at == px.size());
    CHECK(u == want_u);
    CHECK(f.read_string("note") == "ordered");
    // No .ordered file is left beside it.
    const std::string dir = o.filename.substr(0, o.filename.rfind('/'));
    for (const std::string& name : files_in(dir)) CHECK(name.find(".ordered") == std::string::npos);
}
}  // namespace

// A hold that no loaded machine ends (the merge's cases count on their holds).
struct LongHold {
    double was = smalldata::detail::merge_hold_seconds;
    LongHold() { smalldata::detail::merge_hold_seconds = 600; }
    ~LongHold() { smalldata::detail::merge_hold_seconds = was; }
};

TEST_CASE("time_order: every dataset in timestamp order, ties by client, unaligned_ and var_ rows with their events",
          "[mpi][time_order]") {
    // Routed (each server writes its cells once; nothing moves at done()), and ordered at
    // done() (NoRouting: every event moves where several clients interleave).
    const LongHold hold;
    for (const bool route : {true, false}) {
        CAPTURE(route);
        const SmallCells cells;
        std::optional<NoRouting> off;
        if (!route) off.emplace();
        const std::string dir = fresh_dir("order" + std::to_string(route));
        Options o = layout_options(dir + "/t.h5");
        o.time_order = true;
        o.cache_size = 64;
        o.batch_size = 37;
        smalldata::Report rep;
        time_order_run(o, 3000, 24, &rep);
        // Several servers with several clients ordered at done(): every part's events move.
        const bool moved = !route && rep.servers.size() > 1 && rep.clients.size() > 1;
        CHECK(rep.order_events == (moved ? 3000u : 0u));
    }
}

// layout_options() for the merge's cases, in a fresh directory: time_order, batches of
// `batch` events, no checkpoints (a hold ends at merge_hold_seconds only).
Options merge_options(const std::string& name, std::size_t batch) {
    Options o = layout_options(fresh_dir(name) + "/" + name + ".h5");
    o.time_order = true;
    o.checkpoint_seconds = 0;
    o.batch_size = batch;
    return o;
}
// A server merges its clients' streams as the batches arrive (the clients' timestamps each
// increase): its part is written in order once, and the ordering at done() moves nothing;
// with several servers, each merges the streams of every client, which send it the events
// of the cells it owns. A batch is held at most half a second (and a tenth of
// checkpoint_seconds, next case): longer here (LongHold). Also with every event larger than
// batch_bytes (each travels as a large message).
TEST_CASE("time_order: each server merges its streams as they arrive (routed with several), nothing moves at done()",
          "[mpi][time_order]") {
    const LongHold hold;
    const SmallCells cells;
    for (const bool large : {false, true}) {
        CAPTURE(large);
        Options o = merge_options("order_merge" + std::to_string(large), 37);
        if (large) o.batch_bytes = 4096;
        smalldata::Report rep;
        time_order_run(o, 3000, large ? 4096 : 24, &rep);
        CHECK(rep.order_events == 0);  // several servers: each merges the cells it owns
    }
}

// Uniform batches (every event the same aligned fields, as most programs give) of several
// clients are merged field by field; with a callback, event by event, and the callback
// sees the events in time order (one server). Every row is checked; nothing moves at done().
TEST_CASE("time_order: uniform batches of several clients merged field by field; with a callback, event by event",
          "[mpi][time_order]") {
    const LongHold hold;
    const SmallCells cells;
    for (const bool callback : {false, true}) {
        CAPTURE(callback);
        Options o = merge_options("order_uniform" + std::to_string(callback), 50);
        std::int64_t seen = 0, backwards = 0, last = INT64_MIN;
        if (callback)
            o.callbacks.push_back([&](const smalldata::Event& e) {
                ++seen;
                backwards += e.timestamp() < last;
                last = e.timestamp();
            });
        const std::int64_t n = 6000;
        int clients = 1;
        smalldata::Report rep;
        {
            SmallData smd(o);
            clients = order_clients = std::max(1, smd.client_count());
            for (std::int64_t i : smd.share(n)) {
                const float v[3] = {static_cast<float>(i), 1.0f, static_cast<float>(-i)};
                smd.event(order_ts(i), "x", static_cast<double>(i) * 0.5, "id", i, "v", smalldata::view(v, {3}));
            }
            smd.done();
            rep = smd.report();
        }
        CHECK(sum_over_world(seen) == (callback ? n : 0));
        CHECK(backwards == 0);  // in time order (on each server: its cells, in turn)
        CHECK(rep.order_events == 0);
        if (world_rank() != 0) continue;
        const std::vector<std::int64_t> want = expected_order(n, clients);
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        const auto id = f.read<std::int64_t>("id");
        const auto x = f.read<double>("x");
        const auto v = f.read<float>("v");
        REQUIRE(id.size() == static_cast<std::size_t>(n));
        REQUIRE(v.size() == 3 * static_cast<std::size_t>(n));
        std::size_t bad = 0;
        for (std::size_t r = 0; r < static_cast<std::size_t>(n); ++r) {
            const std::int64_t i = want[r];
            bad += id[r] != i;
            bad += ts[r] != order_ts(i);
            bad += x[r] != static_cast<double>(i) * 0.5;
            bad += v[3 * r] != static_cast<float>(i) || v[3 * r + 1] != 1.0f || v[3 * r + 2] != static_cast<float>(-i);
        }
        CHECK(bad == 0);
    }
}

// Events larger than batch_bytes travel as messages even where the other batches go
// through shared-memory slots, so a merging server holds both kinds in turn: here the odd
// events (client 1's, at 1 server + 2 clients) are all messages, the even ones slot
// batches of one event each. The server reuses the buffers of the message batches it has
// decoded: its memory stays within cache_memory however many messages pass (a decoded slot
// batch once left an empty spare buffer that the next message took, allocating afresh: a
// buffer lost per message, 110-160 MiB here). Every row is checked too.
TEST_CASE("time_order: a merge of slot and message batches reuses their buffers; the server's memory stays bounded",
          "[mpi][time_order][memory]") {
    const LongHold hold;
    Options o = merge_options("order_mixed", 1);
    o.batch_bytes = std::size_t(64) << 10;
    o.cache_memory = std::size_t(32) << 20;
    const std::size_t px = 24576;  // uint32: 96 KiB, beyond batch_bytes: an event with it is a message
    const std::int64_t n = 3600;
    const auto pixel = [](std::int64_t i, std::size_t k) { return static_cast<std::uint32_t>(i * 7 + static_cast<std::int64_t>(k)); };
    const bool measure = !rss::sanitized && rss::reset_peak() && rss::peak() > 0;
    const std::size_t before = measure ? rss::peak() : 0;
    int clients = 1;
    bool server = false;
    {
        SmallData smd(o);
        server = smd.role() == Role::server;
        clients = order_clients = std::max(1, smd.client_count());
        std::vector<std::uint32_t> img(px);
        for (std::int64_t i : smd.share(n)) {
            if (i % 2 == 1) {
                for (std::size_t k = 0; k < px; ++k) img[k] = pixel(i, k);
                smd.event(order_ts(i), "x", static_cast<double>(i), "img", smalldata::view(img.data(), {px}));
            } else {
                smd.event(order_ts(i), "x", static_cast<double>(i));
            }
        }
        smd.done();
    }
    if (server && measure) {
        const std::size_t grew = rss::peak() - before;
        CAPTURE(grew);
        CHECK(grew < o.cache_memory + (std::size_t(16) << 20));  // the caches, and room for MPI's and HDF5's own
    }
    if (world_rank() != 0) return;
    const std::vector<std::int64_t> want = expected_order(n, clients);
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto x = f.read<double>("x");
    const auto img = f.read<std::uint32_t>("img");
    const std::uint32_t fill = f.fill_value<std::uint32_t>("img");
    REQUIRE(ts.size() == static_cast<std::size_t>(n));
    REQUIRE(x.size() == ts.size());
    REQUIRE(img.size() == px * ts.size());
    std::size_t bad = 0;
    for (std::size_t r = 0; r < ts.size(); ++r) {
        const std::int64_t i = want[r];
        bad += ts[r] != order_ts(i) || x[r] != static_cast<double>(i);
        for (std::size_t k = 0; k < px; ++k) bad += img[r * px + k] != (i % 2 == 1 ? pixel(i, k) : fill);
    }
    CHECK(bad == 0);
}

// A client that stalls: the server holds the other clients' batches for a tenth of
// checkpoint_seconds, then writes them (the checkpoint promise keeps its room). The
// stalled client's events then arrive behind them, and the ordering at done() moves the
// events instead: the file is in time order all the same.
TEST_CASE("time_order: a stalled client ends the merge's hold; the file is in order all the same", "[mpi][time_order]") {
    const std::string dir = fresh_dir("order_stall");
    Options o = layout_options(dir + "/ts.h5");
    o.time_order = true;
    o.checkpoint_seconds = 1;
    o.batch_size = 37;
    smalldata::Report rep;
    order_stall = true;
    time_order_run(o, 3000, 24, &rep);
    order_stall = false;
    CHECK(rep.order_events == (rep.clients.size() >= 2 ? 3000u : 0u));  // one client: in order
}

// A client that starts late: with several servers the others wait grid_wait_seconds for
// its first batch (the time grid needs every client's), then give routing up and send
// every event to server 0; its own events follow the grid once it comes. The parts then
// overlap in time and the ordering at done() moves the events: in order all the same.
// (With one server, the merge's hold ends instead, as for a stall.)
TEST_CASE("time_order: a client that starts late: the others give routing up; the file is in order all the same",
          "[mpi][time_order]") {
    const SmallCells cells;
    const double wait = smalldata::detail::grid_wait_seconds;
    smalldata::detail::grid_wait_seconds = 0.3;
    const std::string dir = fresh_dir("order_late");
    Options o = layout_options(dir + "/tl.h5");
    o.time_order = true;
    o.batch_size = 37;
    smalldata::Report rep;
    order_late_start = true;
    time_order_run(o, 3000, 24, &rep);
    order_late_start = false;
    smalldata::detail::grid_wait_seconds = wait;
    CHECK(rep.order_events == (rep.clients.size() >= 2 ? 3000u : 0u));  // one client: in order
}

TEST_CASE("time_order combined with compression and self_contained: every combination", "[mpi][time_order][compression]") {
    const SmallCells cells;
    for (int combo = 0; combo < 3; ++combo) {  // compressed; self-contained; both
        const bool z = combo != 1, flat = combo != 0;
        CAPTURE(z, flat);
        const std::string dir = fresh_dir("order_combo" + std::to_string(combo));
        Options o = layout_options(dir + "/tz.h5");
        o.time_order = true;
        o.self_contained = flat;
        if (z) o.compression = smalldata::Compression::deflate(1);
        o.batch_size = 50;
        time_order_run(o, 1500, 24);
        if (world_rank() != 0) continue;
        h5r::File f(o.filename);
        if (flat || world_size() == 1) CHECK(f.filters("det/img").size() == (z ? 2u : 0u));  // else virtual
        if (world_size() > 1) {
            CHECK((f.layout("x") == H5D_CHUNKED) == flat);
            if (flat) CHECK(files_in(dir) == std::vector<std::string>{"tz.h5"});
        }
        if (z && world_size() > 1 && !flat) {  // the ordered parts are compressed too
            h5r::File p0(dir + "/tz_part0.h5");
            CHECK(p0.filters("det/img").size() == 2);
        }
    }
}

TEST_CASE("time_order: data many times the writers' memory", "[mpi][time_order]") {
    const std::string dir = fresh_dir("order_big");
    Options o = layout_options(dir + "/tb.h5");
    o.time_order = true;
    o.cache_memory = std::size_t(1) << 20;  // 1 MiB; the images alone are 24 MB
    time_order_run(o, 3000, 4096);
}

TEST_CASE("time_order: keys beyond the writers' memory are ordered in rounds, each server's range still one piece",
          "[mpi][time_order]") {
    const NoRouting sort_at_done;  // the ordering at done() is what this tests
    for (const bool z : {false, true}) {  // compressed: the ordering writer's thread runs beside the rounds
        CAPTURE(z);
        const std::string dir = fresh_dir("order_rounds" + std::to_string(z));
        Options o = layout_options(dir + "/tr.h5");
        o.time_order = true;
        o.batch_size = 29;
        o.cache_memory = std::size_t(48) << 10;  // 48 KiB: 3000 events' keys take more
        if (z) o.compression = smalldata::Compression::deflate(1);
        smalldata::Report rep;
        time_order_run(o, 3000, 24, &rep);
        // Serial mode and one client per server: the events arrive in order, nothing is
        // rewritten. Otherwise the ordering ran in rounds (3000 events: 3 to 6 at the
        // suite's layouts, by the servers' share).
        if (world_size() == 1 || rep.clients.size() <= 1) {
            CHECK(rep.order_rounds == 0);
        } else {
            CHECK(rep.order_events == 3000);
            CHECK(rep.order_rounds >= 3);
            CHECK(rep.text().find("rounds)") != std::string::npos);
        }
    }
}

// The largest round's keys (bytes over the budget) of any server of this process.
std::atomic<double> order_round_peak{0};
void note_order_round(int, std::uint64_t, std::uint64_t bytes, std::uint64_t budget) noexcept {
    const double f = static_cast<double>(bytes) / static_cast<double>(std::max<std::uint64_t>(budget, 1));
    double seen = order_round_peak.load();
    while (f > seen && !order_round_peak.compare_exchange_weak(seen, f)) {
    }
}

TEST_CASE("time_order: a part whose events cluster in the same rounds takes more rounds, each within its memory",
          "[mpi][time_order]") {
    const NoRouting sort_at_done;  // the ordering at done() is what this tests
    // At 3 servers + 4 clients the first half of every server's range comes from server 0's
    // part: with the rounds planned from the parts' sizes alone (4 for 4900 events in
    // 48 KiB), its first rounds would hold 1.28 times their half of cache_memory (16 bytes
    // per key of its part, 24 per key of its bucket). Every layout checks the order and
    // that no round exceeded its half.
    const std::string dir = fresh_dir("order_cluster");
    Options o = layout_options(dir + "/tc.h5");
    o.time_order = true;
    o.batch_size = 31;
    o.cache_memory = std::size_t(48) << 10;
    const std::int64_t n = 4900;
    order_clustered = true;
    order_n = n;
    order_round_peak = 0;
    smalldata::detail::order_round_hook = note_order_round;
    smalldata::Report rep;
    time_order_run(o, n, 24, &rep);
    smalldata::detail::order_round_hook = nullptr;
    order_clustered = false;
    double peak = order_round_peak.load(), most = 0;
    MPI_Allreduce(&peak, &most, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    CAPTURE(most, rep.order_rounds);
    CHECK(most <= 1.0);
    if (rep.clients.size() > 1 && world_size() > 1) {
        CHECK(most > 0.1);  // the hook saw the rounds
        CHECK(rep.order_events == static_cast<std::uint64_t>(n));
    }
    if (servers_for(world_size()) == 3) CHECK(rep.order_rounds >= 5);  // 4 by the parts' sizes
}

TEST_CASE("time_order: an ordering that fails leaves every event in arrival order and is an error on every rank",
          "[mpi][time_order]") {
    const std::string dir = fresh_dir("order_fail");
    Options o = layout_options(dir + "/tf.h5");
    o.time_order = true;
    // A server merges its clients' streams only with 4 batches' room in an eighth of
    // cache_memory: here it does not, so several clients' events arrive out of order.
    o.cache_memory = std::size_t(4) << 20;
    const std::string blocked = dir + "/tf_part0.h5.ordered";
    std::string code, what;
    int clients = 1;
    {
        SmallData smd(o);
        clients = order_clients = std::max(1, smd.client_count());
        for (std::int64_t i : smd.share(500)) smd.event(order_ts(i), "id", i);
        if (world_rank() == 0) std::filesystem::create_directory(blocked);  // where server 0 writes its range
        code = error_code_of([&] { smd.done(); }, &what);
    }
    CAPTURE(what);
    // One client (serial mode, or one server with one client): the events arrived in
    // order, nothing is rewritten, and the directory is never met.
    const bool rewritten = clients > 1;
    if (rewritten) {
        CHECK(code == "hdf5");
        CHECK(what.find("tf_part0.h5.ordered") != std::string::npos);
        CHECK(what.find("a directory has that name") != std::string::npos);
        CHECK(what.find("every event") != std::string::npos);
    } else {
        CHECK(code == "none");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        const auto ts = f.read<std::int64_t>("timestamp");
        auto id = f.read<std::int64_t>("id");
        REQUIRE(id.size() == 500);
        if (!rewritten) CHECK(std::is_sorted(ts.begin(), ts.end()));
        std::sort(id.begin(), id.end());
        for (std::int64_t i = 0; i < 500; ++i) CHECK(id[static_cast<std::size_t>(i)] == i);
        for (const std::string& name : files_in(dir))
            CHECK((name.find(".ordered") == std::string::npos || dir + "/" + name == blocked));
    }
}

TEST_CASE("time_order: servers without clients take a time range too; an empty run", "[mpi][time_order]") {
    const NoRouting sort_at_done;  // the ordering at done() is what this tests
    const int size = world_size();
    if (size < 5) return;  // needs 2 clients and a server without one
    const std::string dir = fresh_dir("order_idle");
    Options o = base_options();
    o.servers = size - 2;  // 2 clients: servers 2 and up have none
    o.filename = dir + "/ti.h5";
    o.time_order = true;
    o.batch_size = 40;
    time_order_run(o, 1200, 6);
    if (world_rank() == 0) {
        // Every server wrote a share of the events, the idle ones included.
        for (int k = 0; k < o.servers; ++k) {
            h5r::File p(dir + "/ti_part" + std::to_string(k) + ".h5");
            CAPTURE(k);
            CHECK(p.read<std::int64_t>("timestamp").size() > 0);
        }
    }
    // No event at all: nothing to order, an empty file.
    {
        SmallData smd(o);
        smd.done();
    }
    if (world_rank() == 0) {
        h5r::File f(o.filename);
        CHECK(f.read<std::int64_t>("timestamp").empty());
    }
}
