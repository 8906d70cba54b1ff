// Internals that no API call can reach with bad input: the decoder's checks of a batch's
// contents (a malformed batch must be Errc::protocol, never memory corruption) and the
// shared-memory slot layout; the report's verdict from given figures; the writer's parts
// that need no file (RowCache, the chunk rule, WriteQueue); the time ordering's key merge.
// This TU compiles the implementation itself (it is linked without the library) to reach
// smalldata::detail.
#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"

#include "catch_compat.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>   // open
#include <unistd.h>  // truncate, close

using namespace smalldata;
using namespace smalldata::detail;

namespace {

// A hand-made batch: header, then events of (timestamp, entries) with raw entries.
struct BatchBuilder {
    std::vector<unsigned char> b = std::vector<unsigned char>(sizeof(WireHeader));
    std::uint32_t events = 0;
    template <class T> void pod(const T& v) { append_pod(b, v); }
    void define(std::uint32_t id, const std::string& name) {  // a float64 scalar field
        pod(wire_define);
        pod(id);
        pod(static_cast<std::uint8_t>(DType::f64));
        pod(std::uint8_t(0));
        pod(static_cast<std::uint16_t>(name.size()));
        b.insert(b.end(), name.begin(), name.end());
    }
    void event(std::int64_t ts, std::uint32_t entries) {
        pod(ts);
        pod(entries);
        ++events;
    }
    void value(std::uint32_t id, double v) {
        pod(id);
        pod(v);
    }
    std::vector<unsigned char> done() {
        WireHeader h{wire_magic, wire_version, static_cast<std::uint16_t>(WireKind::batch), 0, events, b.size(), 0};
        std::memcpy(b.data(), &h, sizeof h);
        return b;
    }
};

std::string decode(const std::vector<unsigned char>& batch, bool with_callbacks) {
    Options o;  // no file: the writer only counts events
    Writer w("", o, false);
    std::vector<Callback> cbs;
    if (with_callbacks) cbs.push_back([](const Event&) {});
    Decoder d(w, cbs);
    Stream s;
    s.source = "a test stream";
    try {
        d.batch(s, batch.data(), batch.size());
    } catch (const Error& e) {
        return std::string(errc_name(e.code())) + ": " + e.what();
    }
    return "ok";
}

}  // namespace

TEST_CASE("a batch that gives a field twice in one event is Errc::protocol", "[internals][decoder]") {
    BatchBuilder b;
    b.event(0, 2);
    b.define(0, "x");
    b.value(0, 1.0);
    b.value(0, 2.0);  // twice in event 0
    b.event(1, 1);
    b.value(0, 3.0);
    const auto batch = b.done();
    for (const bool cb : {false, true}) {
        CAPTURE(cb);
        const std::string r = decode(batch, cb);
        CHECK(r.rfind("protocol", 0) == 0);
        CHECK(r.find("'x' twice in one event") != std::string::npos);
    }
}

TEST_CASE("a well-formed batch decodes; unknown ids and truncation are Errc::protocol", "[internals][decoder]") {
    BatchBuilder good;
    good.event(0, 1);
    good.define(0, "x");
    good.value(0, 1.0);
    good.event(1, 1);
    good.value(0, 2.0);
    CHECK(decode(good.done(), false) == "ok");
    BatchBuilder unknown;
    unknown.event(0, 1);
    unknown.value(5, 1.0);
    CHECK(decode(unknown.done(), false).rfind("protocol", 0) == 0);
    auto cut = good.done();
    cut.resize(cut.size() - 3);
    WireHeader h;
    std::memcpy(&h, cut.data(), sizeof h);
    h.bytes = cut.size();
    std::memcpy(cut.data(), &h, sizeof h);
    CHECK(decode(cut, true).rfind("protocol", 0) == 0);
}

// Routed streams (time_order, several servers): a client sends a server the definitions it
// lacks ahead of a batch (WireKind::define), so the batch's own definition of the same field
// is met again: checked and skipped. Another field at a known id is Errc::protocol.
TEST_CASE("definitions sent ahead: the same one inline is skipped, another at its id is Errc::protocol",
          "[internals][decoder]") {
    for (const std::string inline_name : {"x", "y"}) {
        CAPTURE(inline_name);
        Options o;
        Writer w("", o, false);
        const std::vector<Callback> none;
        Decoder d(w, none);
        Stream s;
        s.source = "a test stream";
        BatchBuilder ahead;  // definition records only, as WireKind::define carries them
        ahead.define(0, "x");
        const std::vector<unsigned char> defs(ahead.b.begin() + sizeof(WireHeader), ahead.b.end());
        Reader r{defs.data(), defs.data() + defs.size(), &s.source};
        d.definitions(s, r);
        REQUIRE(s.map.size() == 1);
        BatchBuilder b;
        b.event(5, 1);
        b.define(0, inline_name);
        b.value(0, 1.5);
        const auto batch = b.done();
        std::string got = "ok";
        try {
            d.batch(s, batch.data(), batch.size());
        } catch (const Error& e) {
            got = std::string(errc_name(e.code())) + ": " + e.what();
        }
        if (inline_name == "x") {
            CHECK(got == "ok");
            CHECK(s.events == 1);
        } else {
            CHECK(got.rfind("protocol", 0) == 0);
            CHECK(got.find("defined twice") != std::string::npos);
        }
    }
}

// The time grid of routed streams: cell 0 below g0, then cells of width w; every timestamp
// lies in the range of its cell, and the ranges tile the timestamps, at the extremes too.
TEST_CASE("TimeGrid: cells and their ranges, negative timestamps and the extremes", "[internals][order]") {
    constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
    TimeGrid unknown;
    CHECK(!unknown.known());
    CHECK(unknown.cell(lo) == 0);
    CHECK(unknown.cell(hi) == 0);
    for (const TimeGrid g : {TimeGrid{-1000, 7}, TimeGrid{0, 1}, TimeGrid{5, 1000}, TimeGrid{lo + 1, hi / 3},
                             TimeGrid{hi - 10, 4}, TimeGrid{-5, hi}}) {
        CAPTURE(g.g0, g.w);
        std::vector<std::int64_t> ts = {lo, g.g0 - 1, g.g0, g.g0 + 1, -1, 0, 1, hi - 1, hi};
        const auto step = static_cast<std::uint64_t>(g.w / 3 + 1);
        const std::uint64_t room = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(g.g0);
        for (std::uint64_t k = 1; k < 40 && step <= room / k; ++k)
            ts.push_back(static_cast<std::int64_t>(static_cast<std::uint64_t>(g.g0) + k * step));
        for (const std::int64_t t : ts) {
            CAPTURE(t);
            const std::uint64_t c = g.cell(t);
            CHECK((c == 0) == (t < g.g0));
            std::int64_t a = 0, b = 0;
            g.range(c, a, b);
            CHECK(a <= t);
            CHECK((t < b || b == hi));
            if (b != hi) CHECK(g.cell(b) == c + 1);  // the next cell begins where this one ends
        }
    }
    CHECK(TimeGrid::owner(0, 3) == 0);
    CHECK(TimeGrid::owner(7, 3) == 1);
}

TEST_CASE("a definition with an overflowing shape is refused, not allocated", "[internals][decoder]") {
    BatchBuilder b;
    b.event(0, 1);
    b.pod(wire_define);
    b.pod(std::uint32_t(0));
    b.pod(static_cast<std::uint8_t>(DType::i8));
    b.pod(std::uint8_t(2));
    b.pod(std::uint16_t(1));
    b.pod((std::uint64_t(1) << 32) + 1);
    b.pod((std::uint64_t(1) << 32) - 1);  // 2^64 - 1 elements
    b.b.push_back('v');
    const std::string r = decode(b.done(), false);
    CHECK(r.rfind("usage", 0) == 0);
    CHECK(r.find("'v'") != std::string::npos);
}

TEST_CASE("shared-memory flags and slots sit on their own cache lines wherever the segment starts",
          "[internals][shm]") {
    for (std::size_t slot_bytes : {std::size_t(1024), std::size_t(1025), std::size_t(4097)}) {
        for (std::size_t offset = 0; offset < 64; offset += 8) {
            CAPTURE(slot_bytes, offset);
            const std::uint32_t k = 4;
            std::vector<unsigned char> mem(ShmSlots::bytes(k, slot_bytes) + 128);
            unsigned char* seg = mem.data() + (64 - reinterpret_cast<std::uintptr_t>(mem.data()) % 64) % 64 + offset;
            ShmSlots s{ShmSlots::align(seg), slot_bytes, k};
            CHECK(reinterpret_cast<std::uintptr_t>(s.base) % 64 == 0);
            for (std::uint32_t j = 0; j < k; ++j) {
                CHECK(reinterpret_cast<std::uintptr_t>(s.flag(j)) % 64 == 0);
                CHECK(reinterpret_cast<std::uintptr_t>(s.slot(j)) % 64 == 0);
            }
            // The last slot ends inside the segment.
            CHECK(s.slot(k - 1) + slot_bytes <= seg + ShmSlots::bytes(k, slot_bytes));
        }
    }
}

TEST_CASE("a receive cancelled after its message matched still delivers that message", "[internals][mpi]") {
    // The server's abort receive at the end of its loop: a notice that matched just before
    // the cancel must be answered, not swallowed (the failing rank would wait out its whole
    // grace period). Needs two ranks (the test `internals_np2`); one rank has nothing to do.
    int size = 1, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (size < 2) return;
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    for (const bool sent : {true, false}) {
        CAPTURE(sent);
        int value = -1;
        if (rank == 0 && sent) {
            int v = 42;
            MPI_Ssend(&v, 1, MPI_INT, 1, 7, comm);  // returns once the receive has matched
        }
        if (rank == 1) {
            MPI_Request r = MPI_REQUEST_NULL;
            MPI_Irecv(&value, 1, MPI_INT, MPI_ANY_SOURCE, 7, comm, &r);
            MPI_Barrier(comm);  // rank 0's Ssend has completed: the message matched
            MPI_Status st;
            const bool matched = cancel_receive(r, st);
            CHECK(matched == sent);
            CHECK(r == MPI_REQUEST_NULL);
            if (sent) {
                CHECK(st.MPI_SOURCE == 0);
                CHECK(value == 42);
            }
        } else {
            MPI_Barrier(comm);
        }
        MPI_Barrier(comm);
    }
    MPI_Comm_free(&comm);
}

namespace {
// A parallel run's report from the servers' busy fractions and the clients' waiting.
Report figures(std::vector<double> busy, std::vector<double> wait) {
    Report r;
    r.parallel = true;
    for (double b : busy) {
        ServerReport s;
        s.busy_fraction = b;
        s.idle_fraction = 1 - b;
        r.servers.push_back(s);
    }
    for (double w : wait) {
        ClientReport c;
        c.wait_fraction = w;
        r.clients.push_back(c);
    }
    judge(r);
    return r;
}
}  // namespace

TEST_CASE("the verdict follows the scaling model: half-busy servers, demand seen through the clients' waits",
          "[internals][report]") {
    // Busy servers, clients waiting half their time: demand 2 / (1 - 0.5) = 4 servers busy,
    // 8 at half load, capped by the 6 clients.
    Report r = figures({1.0, 1.0}, {0.5, 0.5, 0.5, 0.5, 0.5, 0.5});
    CHECK(r.suggested_servers == 6);
    CHECK(r.verdict == "the servers were the bottleneck (clients waited 50% of their time): try servers = 6");
    // A little waiting on lightly loaded servers still asks for one more.
    r = figures({0.3, 0.3}, {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1});
    CHECK(r.suggested_servers == 3);
    // As many servers as clients already: no number to try.
    r = figures({1.0, 1.0}, {0.6, 0.6});
    CHECK(r.suggested_servers == 0);
    CHECK(r.verdict.find("a server for every client already") != std::string::npos);
    // Idle servers: 4 x 10% busy is 0.4 of a server, which one server does at half load.
    r = figures({0.1, 0.1, 0.1, 0.1}, {0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0});
    CHECK(r.suggested_servers == 1);
    CHECK(r.verdict == "servers were idle 90% of the time: fewer servers would do (servers = 1)");
    // Busy enough for their number, clients not held back: the layout fits.
    r = figures({0.6, 0.5}, {0.01, 0.02, 0.0, 0.0});
    CHECK(r.suggested_servers == 0);
    CHECK(r.verdict == "the servers kept up (clients waited 0.8% of their time): servers = 2 fits");
    // Serial mode: the share of time spent writing.
    Report s;
    s.servers.push_back(ServerReport{});
    s.servers[0].write_fraction = 0.7;
    judge(s);
    CHECK(s.suggested_servers == 0);
    CHECK(s.verdict == "serial mode: writing took 70% of the run; the writing limits the run: parallel mode (mpiexec) "
                       "spreads it over servers");
}

// ---- The writer's parts without HDF5 or MPI (section 13): RowCache against a sink that
// keeps the rows in memory, the chunk rule, WriteQueue with plain callables.
namespace {

// What a RowCache handed on: a "file" of int32 rows (a row never written reads back as the
// dataset's fill value), every write, and optionally buffers taken like the write thread.
struct MemorySink final : RowCache::Sink {
    struct Write {
        std::uint64_t start, n, known;
        std::size_t limit;
        bool handed;  // hand_over (a buffer) rather than write
    };
    explicit MemorySink(CacheBudget& b) : budget(b) {}
    CacheBudget& budget;
    std::map<std::uint64_t, std::int32_t> file;
    std::vector<Write> writes;
    std::uint64_t known_rows = 0;  // rows_known()
    bool take_big = false;         // put_big() takes big rows
    std::vector<std::uint64_t> big;
    bool hand = false;  // hand_over() takes buffers (rows written at once, buffer kept as a spare)
    std::vector<std::vector<unsigned char>> spares;  // buffers taken, counted in the budget
    int freed = 0;  // free_spares() calls that freed something
    bool failed = false;

    void check() override {
        if (failed) throw_error(Errc::hdf5, "an earlier write failed");
    }
    std::uint64_t rows_known() override { return known_rows; }
    bool put_big(std::uint64_t row, const unsigned char*) override {
        if (take_big) big.push_back(row);
        return take_big;
    }
    void keep(const unsigned char* data, std::uint64_t start, std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
            std::int32_t v;
            std::memcpy(&v, data + i * 4, 4);
            file[start + i] = v;
        }
    }
    bool hand_over(RowCache& c, std::uint64_t known, std::size_t limit) override {
        if (!hand) return false;
        writes.push_back(Write{c.start(), c.cached(), known, limit, true});
        keep(c.data(), c.start(), c.cached());
        std::vector<unsigned char> next;
        if (!spares.empty()) {
            next = std::move(spares.back());
            spares.pop_back();
        }
        spares.push_back(c.swap_buffer(std::move(next), false));
        return true;
    }
    void write(const unsigned char* data, std::uint64_t start, std::uint64_t n, std::uint64_t known,
               std::size_t limit) override {
        writes.push_back(Write{start, n, known, limit, false});
        keep(data, start, n);
    }
    bool take_spare(RowCache& c) override {
        if (spares.empty()) return false;
        std::vector<unsigned char> b = std::move(spares.back());
        spares.pop_back();
        return c.adopt(std::move(b));
    }
    bool free_spares() override {
        if (spares.empty()) return false;
        for (const auto& b : spares) budget.give(b.size());
        spares.clear();
        ++freed;
        return true;
    }
};

const std::vector<unsigned char> i32_fill = {0xff, 0xff, 0xff, 0xff};  // -1

std::vector<unsigned char> row_of(std::int32_t v) {
    std::vector<unsigned char> b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
}
void put(RowCache& c, MemorySink& s, std::uint64_t row, std::int32_t v) {
    const auto b = row_of(v);
    c.append(row, b.data(), s);
}
// Rows [from, to) the sink holds, each with its row as value.
void check_rows(const MemorySink& s, std::uint64_t from, std::uint64_t to) {
    std::uint64_t wrong = 0, first = to;
    for (std::uint64_t r = from; r < to; ++r) {
        const auto it = s.file.find(r);
        if (it == s.file.end() || it->second != static_cast<std::int32_t>(r)) {
            ++wrong;
            first = std::min(first, r);
        }
    }
    CAPTURE(first);
    CHECK(wrong == 0);
}

}  // namespace

TEST_CASE("RowCache: the fast path fills the first cache, which grows 8x up to its full size",
          "[internals][writer]") {
    CacheBudget budget(std::size_t(256) << 20);
    RowCache c("x", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink s(budget);
    CHECK(c.capacity() == 0);  // no buffer before the first row
    CHECK(c.full_rows() == 8192);
    CHECK(c.want_rows() == 1024);  // 4 KiB
    put(c, s, 0, 0);
    CHECK(c.capacity() == 1024);
    CHECK(budget.bytes() == 4096);
    for (std::int32_t r = 1; r < 1024; ++r) {
        const auto b = row_of(r);
        REQUIRE(c.try_append(static_cast<std::uint64_t>(r), b.data()));  // the fast path takes it
    }
    const auto b = row_of(1024);
    CHECK_FALSE(c.try_append(1024, b.data()));  // full: the slow path grows it
    CHECK_FALSE(c.try_append(1023, b.data()));  // not the next row
    put(c, s, 1024, 1024);
    CHECK(c.capacity() == 8192);  // 8x
    CHECK(budget.bytes() == 8192 * 4);
    CHECK(budget.peak() == 8192 * 4 + 4096);  // old and new buffer while the rows were copied
    for (std::int32_t r = 1025; r < 8192; ++r) put(c, s, static_cast<std::uint64_t>(r), r);
    CHECK(s.writes.empty());
    CHECK(c.cached() == 8192);
    put(c, s, 8192, 8192);  // full at full_rows: written out, the cache keeps its buffer
    REQUIRE(s.writes.size() == 1);
    CHECK(s.writes[0].start == 0);
    CHECK(s.writes[0].n == 8192);
    CHECK(s.writes[0].known == 8193);
    CHECK(c.capacity() == 8192);
    CHECK(c.start() == 8192);
    CHECK(c.cached() == 1);
    CHECK(c.rows() == 8193);
    c.flush(s);
    CHECK(c.cached() == 0);
    check_rows(s, 0, 8193);
}

TEST_CASE("RowCache: growth is 8x per step up to limit_rows, which the budget sets",
          "[internals][writer]") {
    // 384 KiB: the limit is 256 KiB, and the last step's old and new buffer fit (288 KiB).
    for (const std::size_t memory : {std::size_t(64) << 20, std::size_t(384) << 10}) {
        CAPTURE(memory);
        CacheBudget budget(memory);
        RowCache c("x", 4, i32_fill.data(), std::size_t(1) << 20, std::size_t(1) << 20, budget);
        MemorySink s(budget);
        const std::size_t limit = c.limit();
        CHECK(limit == (memory > (std::size_t(1) << 20) ? std::size_t(1) << 18 : std::size_t(1) << 16));
        std::vector<std::size_t> sizes;
        for (std::uint64_t r = 0; r < 3 * limit; ++r) {
            put(c, s, r, static_cast<std::int32_t>(r));
            if (sizes.empty() || sizes.back() != c.capacity()) sizes.push_back(c.capacity());
        }
        if (limit == (std::size_t(1) << 18))
            CHECK(sizes == std::vector<std::size_t>{1024, 8192, 65536, 262144});  // the last step: 4x, the limit
        else
            CHECK(sizes == std::vector<std::size_t>{1024, 8192, 65536});
        for (const auto& w : s.writes) CHECK(w.n == limit);  // whole caches once at the limit
        CHECK(budget.peak() <= memory);
        c.flush(s);
        check_rows(s, 0, 3 * limit);
    }
}

TEST_CASE("RowCache: a gap inside the cache takes the fill value, one beyond it stays unwritten",
          "[internals][writer]") {
    CacheBudget budget(std::size_t(256) << 20);
    RowCache c("x", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink s(budget);
    put(c, s, 0, 0);
    put(c, s, 1, 1);
    put(c, s, 5, 5);  // rows 2..4 skipped: fill rows in the cache
    CHECK(c.cached() == 6);
    put(c, s, 2000, 2000);  // a gap that fits in limit_rows grows the cache at once
    CHECK(c.capacity() == 8192);
    CHECK(c.cached() == 2001);
    CHECK(s.writes.empty());
    put(c, s, 100000, 100000);  // beyond full_rows: the cache is written, the gap never is
    REQUIRE(s.writes.size() == 1);
    CHECK(s.writes[0].start == 0);
    CHECK(s.writes[0].n == 2001);
    CHECK(s.writes[0].known == 100001);  // the rows the run is known to have, for the chunk size
    CHECK(c.start() == 100000);
    CHECK(c.cached() == 1);
    s.known_rows = 200000;  // the writer's events so far (an aligned field)
    c.flush(s);
    REQUIRE(s.writes.size() == 2);
    CHECK(s.writes[1].start == 100000);
    CHECK(s.writes[1].n == 1);
    CHECK(s.writes[1].known == 200000);
    check_rows(s, 0, 2);
    for (std::uint64_t r = 2; r < 5; ++r) CHECK(s.file.at(r) == -1);
    CHECK(s.file.at(5) == 5);
    std::uint64_t filled = 0;
    for (std::uint64_t r = 6; r < 2000; ++r) filled += s.file.at(r) == -1;
    CHECK(filled == 2000 - 6);
    CHECK(s.file.at(2000) == 2000);
    CHECK(s.file.count(2001) == 0);  // left to the dataset's fill value
    CHECK(s.file.count(99999) == 0);
    CHECK(s.file.at(100000) == 100000);
    CHECK(s.file.size() == 2002);
}

TEST_CASE("RowCache: a cache that cannot grow within the budget is written out; the budget holds",
          "[internals][writer]") {
    SECTION("one cache, 16 KiB: grows to 8 KiB only (old and new must fit), then writes 2048 rows at a time") {
        CacheBudget budget(16 << 10);
        RowCache c("x", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
        MemorySink s(budget);
        CHECK(c.limit() == 4096);
        std::size_t most = 0;
        for (std::uint64_t r = 0; r < 10000; ++r) {
            put(c, s, r, static_cast<std::int32_t>(r));
            most = std::max(most, budget.bytes());
        }
        CHECK(most <= (16 << 10));
        CHECK(c.capacity() == 2048);
        CHECK(budget.peak() <= (16 << 10));
        REQUIRE(s.writes.size() == 4);
        for (const auto& w : s.writes) CHECK(w.n == 2048);
        c.flush(s);
        check_rows(s, 0, 10000);
    }
    SECTION("idle buffers of others are freed first") {
        CacheBudget budget(40 << 10);
        RowCache c("x", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
        MemorySink s(budget);
        s.spares.emplace_back(std::size_t(30) << 10);  // another field's spare, 30 KiB
        budget.take(std::size_t(30) << 10);
        for (std::uint64_t r = 0; r < 1025; ++r) put(c, s, r, static_cast<std::int32_t>(r));
        CHECK(s.freed == 1);
        CHECK(c.capacity() == 8192);
        CHECK(budget.bytes() == 8192 * 4);
        CHECK(budget.peak() <= (40 << 10));
    }
    SECTION("no room at all: each row is written on its own") {
        CacheBudget budget(2);
        RowCache c("x", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
        MemorySink s(budget);
        for (std::uint64_t r = 0; r < 5; ++r) put(c, s, r, static_cast<std::int32_t>(r));
        CHECK(c.capacity() == 0);
        CHECK(budget.peak() == 0);
        REQUIRE(s.writes.size() == 5);
        for (const auto& w : s.writes) CHECK(w.n == 1);
        check_rows(s, 0, 5);
    }
    SECTION("many caches with gaps sharing one budget never exceed it") {
        const std::size_t memory = 100 << 10;
        CacheBudget budget(memory);
        budget.set_fields(8);
        std::vector<std::vector<unsigned char>> fills(8, i32_fill);
        std::vector<RowCache> caches;
        for (std::size_t k = 0; k < 8; ++k) caches.emplace_back("f" + std::to_string(k), 4, fills[k].data(), 8192, std::size_t(32) << 20, budget);
        MemorySink s(budget);
        std::size_t most = 0;
        for (std::uint64_t e = 0; e < 50000; ++e) {
            for (std::size_t k = 0; k < 8; ++k)
                if ((e + k) % (k + 1) == 0) put(caches[k], s, e, static_cast<std::int32_t>(e));
            most = std::max(most, budget.bytes());
        }
        CHECK(most <= memory);
        CHECK(budget.peak() <= memory);
        for (auto& c : caches) CHECK(c.capacity() <= c.limit());
    }
}

TEST_CASE("RowCache: unaligned and var_ rows append at their own count, n rows at once", "[internals][writer]") {
    CacheBudget budget(std::size_t(256) << 20);
    RowCache c("v", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink s(budget);
    std::vector<std::int32_t> src(20000);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::int32_t>(i);
    const auto* p = reinterpret_cast<const unsigned char*>(src.data());
    c.append_run(c.rows(), p, 4, 3, s);  // an event with 3 rows
    c.append_run(c.rows(), p + 3 * 4, 4, 0, s);  // one with none
    c.append_run(c.rows(), p + 3 * 4, 4, 12000, s);  // more rows than the cache holds
    CHECK(c.rows() == 12003);
    const auto b = row_of(12003);
    c.append(c.rows(), b.data(), s);
    c.flush(s);
    check_rows(s, 0, 12004);
    // A strided source (the decoder's uniform batches): every other int.
    RowCache d("u", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink t(budget);
    d.append_run(0, p, 8, 5000, t);
    d.flush(t);
    std::uint64_t wrong = 0;
    for (std::uint64_t r = 0; r < 5000; ++r) wrong += t.file.at(r) != static_cast<std::int32_t>(2 * r);
    CHECK(wrong == 0);
}

TEST_CASE("RowCache: gathered rows (each from its own place) fill, grow and flush like a run",
          "[internals][writer]") {
    // The time ordering's path: 20000 rows, row r from wherever value r lies, in pieces that
    // start with an empty cache, cross its growth and its write-outs at full_rows.
    CacheBudget budget(std::size_t(256) << 20);
    RowCache c("g", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink s(budget);
    std::vector<std::int32_t> src(20000);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::int32_t>((i * 7919) % src.size());
    std::vector<const unsigned char*> where(src.size());
    for (std::size_t i = 0; i < src.size(); ++i)
        where[static_cast<std::size_t>(src[i])] = reinterpret_cast<const unsigned char*>(&src[i]);
    std::size_t at = 0;
    for (const std::size_t n : {1, 999, 7000, 5, 11995}) {
        c.append_gather(at, n, [&](std::size_t i) { return where[at + i]; }, s);
        at += n;
    }
    CHECK(at == src.size());
    CHECK(c.rows() == src.size());
    CHECK(c.capacity() == 8192);
    CHECK(s.writes.size() == 2);  // two full caches written out at full_rows; the rest cached
    c.flush(s);
    check_rows(s, 0, src.size());
    // 12-byte rows (the generic copy), gathered in reverse.
    std::vector<std::array<std::int32_t, 3>> wide(3000);
    for (std::size_t i = 0; i < wide.size(); ++i)
        wide[i] = {static_cast<std::int32_t>(i), -1, static_cast<std::int32_t>(2 * i)};
    std::vector<const unsigned char*> back(wide.size());
    for (std::size_t i = 0; i < wide.size(); ++i)
        back[i] = reinterpret_cast<const unsigned char*>(&wide[wide.size() - 1 - i]);
    const std::vector<unsigned char> fill12(12, 0);
    RowCache w("w", 12, fill12.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink t(budget);
    w.append_gather(0, back.size(), [&](std::size_t i) { return back[i]; }, t);
    CHECK(w.rows() == wide.size());
    CHECK(w.cached() == wide.size());
    std::uint64_t wrong = 0;
    for (std::size_t r = 0; r < wide.size(); ++r)
        wrong += std::memcmp(w.data() + r * 12, &wide[wide.size() - 1 - r], 12) != 0;
    CHECK(wrong == 0);
}

TEST_CASE("RowCache: a row below one already given is Errc::protocol", "[internals][writer]") {
    CacheBudget budget(std::size_t(256) << 20);
    RowCache c("x", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink s(budget);
    put(c, s, 0, 0);
    put(c, s, 7, 7);
    try {
        put(c, s, 3, 3);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == Errc::protocol);
        CHECK(std::string(e.what()) ==
              "smalldata: writer: row 3 of field 'x' given after row 7 (internal error: rows must increase)");
    }
    CHECK(c.rows() == 8);
    s.failed = true;  // after a failed write the slow path throws it
    CHECK_THROWS_AS(put(c, s, 100000, 0), Error);
}

TEST_CASE("RowCache: 0-byte rows count rows and hold no memory; big rows go to the sink", "[internals][writer]") {
    CacheBudget budget(std::size_t(256) << 20);
    RowCache z("z", 0, nullptr, 8192, std::size_t(32) << 20, budget);
    MemorySink s(budget);
    const std::vector<unsigned char> none(8);  // a 0-byte row's data (never read)
    for (std::uint64_t r = 0; r < 100; r += 3) z.append(r, none.data(), s);
    z.append_run(z.rows(), none.data(), 0, 10, s);
    CHECK(z.rows() == 110);
    CHECK(z.capacity() == 0);
    CHECK(z.cached() == 0);
    CHECK(budget.peak() == 0);
    z.flush(s);
    CHECK(s.writes.empty());

    const std::size_t rb = big_row_bytes;
    std::vector<unsigned char> fill(rb), row(rb);
    RowCache big("image", rb, fill.data(), 8192, std::size_t(32) << 20, budget);
    CHECK(RowCache::big_rows(rb));
    CHECK_FALSE(RowCache::big_rows(rb - 1));
    s.take_big = true;
    big.append(0, row.data(), s);
    big.append(4, row.data(), s);
    CHECK(s.big == std::vector<std::uint64_t>{0, 4});
    CHECK(big.rows() == 5);
    CHECK(big.capacity() == 0);
    s.take_big = false;  // refused (compression, or layouts that differ): cached like any row
    big.append(5, row.data(), s);
    CHECK(big.cached() == 1);
    CHECK(big.capacity() >= 1);
}

TEST_CASE("RowCache: a cache handed over gets a spare buffer, and takes it back when short",
          "[internals][writer]") {
    CacheBudget budget(std::size_t(256) << 20);
    budget.set_threaded(true);
    RowCache c("x", 4, i32_fill.data(), 8192, std::size_t(32) << 20, budget);
    MemorySink s(budget);
    s.hand = true;
    for (std::uint64_t r = 0; r < 30000; ++r) put(c, s, r, static_cast<std::int32_t>(r));
    c.flush(s);
    for (const auto& w : s.writes) CHECK(w.handed);
    check_rows(s, 0, 30000);
    CHECK(c.want_rows() == 8192);  // the next new buffer: as large as the last handed over
    CHECK(budget.bytes() <= 2 * 8192 * 4 + 4096);  // the cache and its spare (and the first small one)
}

TEST_CASE("DatasetWriter::chunk_rows: chunk_bytes, limit_rows and the rows known", "[internals][writer]") {
    // 1 MiB chunks of 8-byte rows: 131072 rows, when the run is known to be that long.
    CHECK(DatasetWriter::chunk_rows(8, std::size_t(1) << 20, 1 << 20, 1 << 20, false) == 131072);
    CHECK(DatasetWriter::chunk_rows(8, std::size_t(1) << 20, 8192, 1 << 20, false) == 8192);    // limit_rows
    CHECK(DatasetWriter::chunk_rows(8, std::size_t(1) << 20, 1 << 20, 1000, false) == 1024);    // a short run
    CHECK(DatasetWriter::chunk_rows(8, std::size_t(1) << 20, 1 << 20, 0, false) == 1);
    CHECK(DatasetWriter::chunk_rows(3, 1000, 1 << 20, 1 << 20, false) == 256);                  // a power of two
    CHECK(DatasetWriter::chunk_rows(0, std::size_t(1) << 20, 1 << 20, 1 << 20, false) == std::uint64_t(1) << 20);
    CHECK(DatasetWriter::chunk_rows(big_row_bytes, std::size_t(1) << 20, 1 << 20, 1 << 20, true) == 1);  // big rows
}

TEST_CASE("WriteQueue: jobs in order on the thread, spares kept, counters", "[internals][writer]") {
    WriteQueue q;
    WriteQueue::Slot slot;
    std::vector<int> order;  // written on the thread, read after wait_idle()
    std::vector<bool> done;  // under the queue's lock
    const std::thread::id caller = std::this_thread::get_id();
    std::atomic<bool> other_thread{true}, data_ok{true};
    for (int i = 0; i < 5; ++i) {
        auto lk = q.lock();
        REQUIRE(q.start());
        REQUIRE(q.wait_slot(lk, slot));  // one job per slot at a time
        WriteQueue::Job j;
        j.buf.assign(16, static_cast<unsigned char>(i));
        j.slot = &slot;
        j.bytes = 16;
        j.write = [&order, &other_thread, &data_ok, caller, i](const unsigned char* data) {
            if (std::this_thread::get_id() == caller) other_thread = false;
            if (data[0] != i) data_ok = false;
            order.push_back(i);
        };
        j.done = [&done](bool ok) { done.push_back(ok); };
        q.push(lk, std::move(j));
        CHECK_FALSE(lk.owns_lock());
    }
    q.wait_idle();
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
    CHECK(other_thread);
    CHECK(data_ok);
    {
        auto lk = q.lock();
        CHECK(done == std::vector<bool>(5, true));
        CHECK(slot.queued == 0);
        CHECK(slot.spare.size() == 5);  // the buffers, kept for reuse
        CHECK(q.take_spare(slot).size() == 16);
        CHECK(slot.spare.size() == 4);
    }
    std::size_t freed = 0;
    CHECK(q.free_spares(freed));
    CHECK(freed == 4 * 16);
    CHECK_FALSE(q.free_spares(freed));
    const WriteQueue::Counters n = q.counters();
    CHECK(n.queued == 5);
    CHECK(n.written == 5);
    CHECK(n.failed == 0);
    CHECK(n.bytes == 5 * 16);
    CHECK(n.seconds >= 0);
    CHECK(n.most_waiting >= 1);
    CHECK(n.most_waiting <= 5);
    CHECK_FALSE(q.failed());
    q.stop();
}

TEST_CASE("WriteQueue: the first error is sticky, later jobs are skipped, stop() drains", "[internals][writer]") {
    WriteQueue q;
    std::atomic<int> ran{0};
    std::vector<bool> done;
    {
        auto lk = q.lock();
        REQUIRE(q.start());
        for (int i = 0; i < 4; ++i) {
            WriteQueue::Job j;
            j.bytes = 10;
            j.write = [&ran, i](const unsigned char*) {
                ++ran;
                if (i == 1) throw_error(Errc::hdf5, "write " + std::to_string(i) + " failed");
            };
            j.done = [&done](bool ok) { done.push_back(ok); };
            q.push(lk, std::move(j));
            lk.lock();
        }
    }
    q.stop();  // every job queued is taken (skipped after the failure), then the thread ends
    CHECK(ran == 2);
    CHECK(done == std::vector<bool>{true, false, false, false});
    CHECK(q.failed());
    {
        auto lk = q.lock();
        q.note_error(std::make_exception_ptr(std::runtime_error("a later one")));  // the first one wins
    }
    try {
        std::rethrow_exception(q.error());
    } catch (const Error& e) {
        CHECK(std::string(e.what()) == "smalldata: write 1 failed");
    }
    const WriteQueue::Counters n = q.counters();
    CHECK(n.queued == 4);
    CHECK(n.written == 1);
    CHECK(n.failed == 3);
    CHECK(n.bytes == 10);
    WriteQueue::Slot s;
    auto lk = q.lock();
    CHECK_FALSE(q.wait_slot(lk, s));  // after a failure: no waiting, false
}

TEST_CASE("order_rounds: one round while the keys fit in cache_memory, else rounds within half of it", "[internals][order]") {
    const std::size_t mib = std::size_t(1) << 20;
    // The reference runs: 1M and 10M events on 2 servers, 256 MiB.
    CHECK(order_rounds(1000000, 500000, 2, 256 * mib) == 1);
    CHECK(order_rounds(10000000, 5000000, 2, 256 * mib) == 1);
    CHECK(order_rounds(0, 0, 3, 256 * mib) == 1);
    // 100M events on 2 servers: 20 x 50M + 24 x 62.5M bytes (a quarter's margin on the
    // part's keys and on the range's), in rounds of at most 128 MiB.
    const std::uint64_t r = order_rounds(100000000, 50000000, 2, 256 * mib);
    CHECK(r == (20 * 50000000ull + 24 * (50000001ull + 12500000ull) + 128 * mib - 1) / (128 * mib));
    CHECK(r >= 2);
    // The largest part counts, not the mean: one server holding everything needs more.
    CHECK(order_rounds(100000000, 100000000, 2, 256 * mib) > r);
    // A tiny cache_memory: no round under 256 events; but always at least 2 once over.
    CHECK(order_rounds(3000, 3000, 1, 1024) == 11);
    CHECK(order_rounds(300, 300, 1, 1024) == 2);
}

TEST_CASE("order_round_peak: a round's keys counted on every server; clustered parts take more rounds",
          "[internals][order]") {
    // 9000 events on 3 servers, timestamps 0..8999. Interleaved: event i from part i % 3.
    // Clustered: in each third of the run the first half comes from part 0 (its clients
    // were given those blocks), the rest from parts 1 and 2.
    const std::size_t S = 3;
    auto part_of = [](std::uint64_t i, bool clustered) -> std::uint64_t {
        return !clustered ? i % 3 : i % 3000 < 1500 ? 0 : 1 + i % 2;
    };
    auto key = [&](std::uint64_t i, bool clustered) {
        return OrderKey{static_cast<std::int64_t>(i), part_of(i, clustered) << 40 | i};
    };
    auto splitters = [&](bool clustered, std::uint64_t R) {  // every event a sample (weight 1)
        std::vector<OrderSample> v;
        for (std::uint64_t i = 0; i < 9000; ++i) v.push_back({key(i, clustered), 1.0});
        return order_splitters(v, S * R);
    };
    auto counts = [&](bool clustered, std::uint64_t R) {  // counts[p * B + j]
        const std::size_t B = S * R;
        const std::vector<OrderKey> split = splitters(clustered, R);
        std::vector<std::uint64_t> c(S * B, 0);
        for (std::uint64_t i = 0; i < 9000; ++i) ++c[part_of(i, clustered) * B + order_bucket(split, B, key(i, clustered))];
        return c;
    };
    // Interleaved, 3 rounds: 9 buckets of 1000; a round holds 1000 keys of each part (16
    // bytes each) and its bucket's 1000 (24 bytes each).
    const std::vector<OrderKey> split = splitters(false, 3);
    REQUIRE(split.size() == 10);
    for (std::size_t j = 1; j < 9; ++j) CHECK(split[j].ts == static_cast<std::int64_t>(1000 * j));
    const std::uint64_t even = order_round_peak(counts(false, 3), S, 3);  // a part has 333-334 of each bucket
    CHECK(even >= 16 * 999 + 24 * 1000);
    CHECK(even <= 16 * 1002 + 24 * 1000);
    CHECK(order_rounds_for_peak(3, 40000, 48000, 9000) == 3);  // fits: as planned
    // Clustered: round 0 takes the first ninth of every third, all of it part 0's: 3000 keys.
    const std::uint64_t peak = order_round_peak(counts(true, 3), S, 3);
    CHECK(peak == 16 * 3000 + 24 * 1000);
    const std::uint64_t more = order_rounds_for_peak(3, peak, 48000, 9000);
    CHECK(more == 6);  // 3 x 72000 / (0.8 x 48000), rounded up
    CHECK(order_round_peak(counts(true, more), S, more) <= 48000);
    // Never a round under 256 events; R = 1 stays 1 (its keys fit by order_rounds).
    CHECK(order_rounds_for_peak(3, std::uint64_t(1) << 40, 48000, 9000) == 9000 / 256);
    CHECK(order_rounds_for_peak(1, std::uint64_t(1) << 40, 48000, 9000) == 1);
    // Bucket of a key: [split[j], split[j + 1]), the ends open.
    CHECK(order_bucket(split, 9, OrderKey{-5, 0}) == 0);
    CHECK(order_bucket(split, 9, split[1]) == 1);
    CHECK(order_bucket(split, 9, OrderKey{1000, 0}) == 0);  // before split[1] = {1000, part 1's row 1000}
    CHECK(order_bucket(split, 9, OrderKey{999, 7}) == 0);
    CHECK(order_bucket(split, 9, OrderKey{INT64_MAX, 0}) == 8);
}

TEST_CASE("order_coarsen: fewer samples of the same events; splitters within one merged run", "[internals][order]") {
    // 100,000 events, timestamps 0..99999, sampled every 2nd (weight 2): 50,000 samples.
    std::vector<OrderSample> fine;
    for (std::int64_t i = 1; i < 100000; i += 2) fine.push_back({OrderKey{i, 0}, 2.0});
    std::vector<OrderSample> coarse = fine;
    order_coarsen(coarse, 1000);
    CHECK(coarse.size() <= 1001);
    CHECK(coarse.size() >= 999);
    double sum = 0;
    for (const OrderSample& s : coarse) sum += s.weight;
    CHECK(sum == Approx(100000.0));
    for (std::size_t i = 1; i < coarse.size(); ++i) CHECK(coarse[i - 1].key < coarse[i].key);
    CHECK(coarse.back().key.ts == fine.back().key.ts);  // the last events stay counted
    // 16 buckets of 6250 events: each splitter from the coarse samples is within one
    // merged run (100 events) of the true one.
    const std::vector<OrderKey> a = order_splitters(fine, 16), b = order_splitters(coarse, 16);
    for (std::size_t j = 1; j < 16; ++j) {
        CHECK(std::llabs(a[j].ts - static_cast<std::int64_t>(6250 * j)) <= 2);
        CHECK(std::llabs(b[j].ts - a[j].ts) <= 100);
    }
    // Nothing to do at or under m.
    std::vector<OrderSample> few(fine.begin(), fine.begin() + 10);
    order_coarsen(few, 10);
    CHECK(few.size() == 10);
    CHECK(few[3].weight == 2.0);
}

TEST_CASE("sort_part_keys: a part's clients merged, or sorted in place when memory is short", "[internals][order]") {
    // A part as a server sees it: batches of three clients arriving interleaved, each
    // client's timestamps increasing (ties across clients), batch sizes uneven.
    std::vector<OrderKey> keys;
    std::vector<std::pair<std::uint32_t, std::uint64_t>> runs;
    std::int64_t next[3] = {0, 0, 0};
    std::uint64_t row = 0;
    for (int b = 0; b < 300; ++b) {
        const std::uint32_t c = static_cast<std::uint32_t>((b * 7) % 3);
        const std::uint64_t n = 1 + static_cast<std::uint64_t>((b * 13) % 17);
        for (std::uint64_t i = 0; i < n; ++i, ++row) {
            next[c] += 1 + static_cast<std::int64_t>((row * 5 + c) % 3);  // increasing per client
            keys.push_back({next[c], std::uint64_t(c) << 40 | row});
        }
        if (!runs.empty() && runs.back().first == c)
            runs.back().second += n;
        else
            runs.emplace_back(c, n);
    }
    auto same = [](const std::vector<OrderKey>& a, const std::vector<OrderKey>& b) {
        if (a.size() != b.size()) return false;
        for (std::size_t i = 0; i < a.size(); ++i)
            if (a[i].ts != b[i].ts || a[i].tie != b[i].tie) return false;
        return true;
    };
    std::vector<OrderKey> expected = keys;
    std::sort(expected.begin(), expected.end());
    REQUIRE_FALSE(same(expected, keys));  // the arrival order is not sorted
    for (const std::size_t memory : {std::size_t(256) << 20, keys.size() * sizeof(OrderKey)}) {
        CAPTURE(memory);  // room for the merge's second array; then only for the keys (in place)
        std::vector<OrderKey> k = keys;
        sort_part_keys(k, runs, memory);
        CHECK(same(k, expected));
    }
    // Runs that do not cover the keys are not trusted: sorted all the same.
    std::vector<OrderKey> k = keys;
    sort_part_keys(k, {{0, 5}}, std::size_t(256) << 20);
    CHECK(same(k, expected));
    // More than 64 clients: sorted in place; every row its own client here.
    std::vector<OrderKey> many;
    std::vector<std::pair<std::uint32_t, std::uint64_t>> one_each;
    for (std::uint64_t r = 0; r < 100; ++r) {
        many.push_back({static_cast<std::int64_t>((r * 37) % 100), r << 40 | r});
        one_each.emplace_back(static_cast<std::uint32_t>(r), 1);
    }
    std::vector<OrderKey> many_sorted = many;
    std::sort(many_sorted.begin(), many_sorted.end());
    sort_part_keys(many, one_each, std::size_t(256) << 20);
    CHECK(same(many, many_sorted));
}

TEST_CASE("ClientRuns: runs while they are long, one client per event once they alternate", "[internals][order]") {
    // Long runs: kept as runs, read back row by row.
    ClientRuns a;
    std::vector<std::uint64_t> want;
    for (std::uint32_t b = 0; b < 100; ++b) {
        const std::uint32_t c = b % 3, n = 10 + b % 7;
        a.add(c, n);
        want.insert(want.end(), n, c);
    }
    a.add(2, 0);  // nothing
    CHECK_FALSE(a.dense());
    CHECK(a.runs().size() == 100);
    CHECK(a.events() == want.size());
    ClientRuns::Cursor ca(a);
    std::size_t bad = 0;
    for (std::uint64_t w : want) bad += ca.next() != w;
    CHECK(bad == 0);
    // Clients that alternate event by event (a server merging its clients' streams): from
    // 4,096 runs on, one 16-bit client per event, 2 bytes instead of 16 per event.
    ClientRuns m;
    want.clear();
    for (std::uint32_t e = 0; e < 100000; ++e) {
        const std::uint32_t c = e % 3 == 0 ? 7 : e % 5;
        m.add(c, 1);
        want.push_back(c);
    }
    m.add(1, 3);
    want.insert(want.end(), 3, 1);
    CHECK(m.dense());
    CHECK(m.runs().empty());
    CHECK(m.events() == want.size());
    CHECK(m.bytes() <= 4 * want.size());
    ClientRuns::Cursor cm(m);
    bad = 0;
    for (std::uint64_t w : want) bad += cm.next() != w;
    CHECK(bad == 0);
    // A client index beyond 16 bits keeps the runs.
    ClientRuns big;
    for (std::uint32_t e = 0; e < 10000; ++e) big.add(e % 2 ? 70000 : 1, 1);
    CHECK_FALSE(big.dense());
    CHECK(big.runs().size() == 10000);
    // One that comes after the switch to one client per event: back to runs, every row's
    // client kept (it was cut to 16 bits: 70000 read back as 4464).
    ClientRuns late;
    want.clear();
    for (std::uint32_t e = 0; e < 10000; ++e) {
        late.add(e % 2, 1);
        want.push_back(e % 2);
    }
    CHECK(late.dense());
    late.add(70000, 2);
    late.add(1, 1);
    late.add(70000, 1);
    want.insert(want.end(), {70000, 70000, 1, 70000});
    CHECK_FALSE(late.dense());
    CHECK(late.events() == want.size());
    ClientRuns::Cursor cl(late);
    bad = 0;
    for (std::uint64_t w : want) bad += cl.next() != w;
    CHECK(bad == 0);
}

TEST_CASE("PartFile: the time ordering's reads of a part; a file cut short is an error naming it", "[internals][order]") {
    const std::string path = "internals_partfile.bin";
    std::vector<unsigned char> bytes(8192);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + 3);
    {
        std::FILE* f = std::fopen(path.c_str(), "wb");
        REQUIRE(f != nullptr);
        REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
        std::fclose(f);
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    PartFile part(path, fd);
    REQUIRE(part.ok());
    CHECK(part.size() == 8192);
    std::vector<unsigned char> got(600);
    part.read(100, 600, got.data());
    CHECK(std::equal(got.begin(), got.end(), bytes.begin() + 100));
    part.read(7592, 600, got.data());  // up to the last byte
    CHECK(std::equal(got.begin(), got.end(), bytes.begin() + 7592));
    auto error_of = [&](std::uint64_t at, std::size_t n) {
        try {
            part.read(at, n, got.data());
        } catch (const smalldata::Error& e) {
            CHECK(e.code() == Errc::hdf5);
            CHECK(e.library_code() == 0);
            return std::string(e.what());
        }
        return std::string("no error");
    };
    // Beyond its end, and a part cut short by another process after it was opened (the
    // size known at open no longer holds): errors naming the file and the byte, where a
    // mapped file would have killed the process with SIGBUS.
    std::string what = error_of(8000, 600);
    CAPTURE(what);
    CHECK(what.find("cannot read part file 'internals_partfile.bin' at byte 8192") != std::string::npos);
    CHECK(what.find("cut short") != std::string::npos);
    REQUIRE(::truncate(path.c_str(), 4096) == 0);
    CHECK(part.size() == 8192);
    what = error_of(4000, 200);
    CHECK(what.find("'internals_partfile.bin' at byte 4096") != std::string::npos);
    ::close(fd);
    std::remove(path.c_str());
    CHECK_FALSE(PartFile(path, -1).ok());  // no descriptor (not the sec2 driver): read through HDF5
}

namespace {

// Part k of n events (timestamps 2i + k, x = the timestamp / 2) written to `path` with
// options `o`; returns its description (Writer::describe()).
std::vector<unsigned char> write_part(const std::string& path, const Options& o, std::uint64_t n, int k) {
    std::remove(path.c_str());
    Writer w(path, o, false);
    WField& x = *w.field(w.field_index(make_meta("x", DType::f64, Shape{}), "a test"));
    std::vector<std::int64_t> ts(static_cast<std::size_t>(n));
    std::vector<double> xs(ts.size());
    for (std::size_t i = 0; i < ts.size(); ++i) {
        ts[i] = static_cast<std::int64_t>(2 * i) + k;
        xs[i] = static_cast<double>(ts[i]) / 2;
    }
    w.put_run(x, reinterpret_cast<const unsigned char*>(xs.data()), 8, xs.size());
    w.end_events(reinterpret_cast<const unsigned char*>(ts.data()), 8, ts.size());
    std::vector<unsigned char> desc = w.describe();
    w.finish(nullptr);
    return desc;
}

// Two parts of n events each (write_part), written with `compression`; ordered by OrderCopy into `out` (events alternate between the parts)
// with `allowance` bytes for the parts' chunk caches. Returns what HDF5 held in chunk
// caches for the parts' datasets after the copy, and checks what `out` holds.
std::size_t order_two_parts(const Compression& compression, std::size_t allowance, std::uint64_t n) {
    Options o;
    o.checkpoint_seconds = 0;
    o.compression = compression;
    std::vector<std::string> paths;
    std::vector<std::vector<unsigned char>> descs;
    for (int k = 0; k < 2; ++k) {
        paths.push_back("internals_order_part" + std::to_string(k) + ".h5");
        descs.push_back(write_part(paths.back(), o, n, k));
    }
    const std::string out_path = "internals_order_out.h5";
    std::remove(out_path.c_str());
    std::size_t held = 0;
    {
        Writer out(out_path, o, false);
        OrderCopy copy(paths, descs, {}, std::size_t(1) << 20, allowance);
        copy.copy(out, [](std::uint64_t i) { return (i % 2) << 40 | i / 2; }, 2 * n);
        held = copy.chunk_cache_bytes();
        out.finish(nullptr);
    }
    H5Id f = h5_open_read(out_path);
    REQUIRE(f.valid());
    for (const char* name : {"timestamp", "x"}) {
        H5Id d(H5Dopen2(f.get(), name, H5P_DEFAULT), H5Dclose);
        REQUIRE(d.valid());
        std::vector<double> got(static_cast<std::size_t>(2 * n));
        REQUIRE(H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, got.data()) >= 0);
        const double scale = std::string(name) == "x" ? 0.5 : 1.0;
        std::size_t wrong = 0;
        for (std::size_t i = 0; i < got.size(); ++i) wrong += got[i] != static_cast<double>(i) * scale;
        CHECK(wrong == 0);
    }
    f = H5Id();
    for (const std::string& p : paths) std::remove(p.c_str());
    std::remove(out_path.c_str());
    return held;
}

// The bytes of one chunk of `name` in a part written as order_two_parts writes them.
std::size_t part_chunk_bytes(const Compression& compression, std::uint64_t n, const char* name) {
    Options o;
    o.checkpoint_seconds = 0;
    o.compression = compression;
    const std::string path = "internals_order_chunk.h5";
    write_part(path, o, n, 0);
    H5Id f = h5_open_read(path);
    H5Id d(H5Dopen2(f.get(), name, H5P_DEFAULT), H5Dclose);
    H5Id dcpl(H5Dget_create_plist(d.get()), H5Pclose);
    hsize_t rows = 0;
    REQUIRE(H5Pget_chunk(dcpl.get(), 1, &rows) == 1);
    d = H5Id();
    f = H5Id();
    std::remove(path.c_str());
    return static_cast<std::size_t>(rows) * 8;
}

}  // namespace

TEST_CASE("OrderCopy: compressed parts' chunk caches stay within the copy's allowance",
          "[internals][order]") {
    // HDF5's default chunk cache (1 MiB per dataset opened, parts x fields of them) would lie
    // outside cache_memory. A compressed part's dataset gets one chunk of cache while the
    // allowance lasts, then none; an uncompressed one none at all. The copy is right either way.
    const std::uint64_t n = 100000;
    const Compression deflate = Compression::deflate(1);
    const std::size_t ts_chunk = part_chunk_bytes(deflate, n, "timestamp");
    const std::size_t x_chunk = part_chunk_bytes(deflate, n, "x");
    CAPTURE(ts_chunk, x_chunk);
    REQUIRE(ts_chunk >= 4096);
    REQUIRE(ts_chunk * 2 < n * 8);  // more than one chunk per part: reads go on across windows
    // Room for all four datasets (2 parts x 2 fields): each holds one chunk's bytes.
    CHECK(order_two_parts(deflate, std::size_t(64) << 20, n) == 2 * (ts_chunk + x_chunk));
    // Room for less than one chunk: none cached; all is read, decompressed again as needed.
    CHECK(order_two_parts(deflate, std::min(ts_chunk, x_chunk) - 1, n) == 0);
    // Room for three: the first three datasets opened, the fourth goes without.
    const std::size_t three = order_two_parts(deflate, 2 * ts_chunk + 2 * x_chunk - 1, n);
    CHECK(three <= 2 * ts_chunk + 2 * x_chunk - 1);
    CHECK(three >= 2 * std::min(ts_chunk, x_chunk) + std::min(ts_chunk, x_chunk));
    // Uncompressed parts: no chunk cache, whatever the allowance.
    CHECK(order_two_parts(Compression{}, std::size_t(64) << 20, n) == 0);
}

TEST_CASE("reserve_huge: a large buffer is advised for huge pages before its first touch, a small one not",
          "[internals][memory]") {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // The VmFlags of the mapping holding address a, from /proc/self/smaps ("hg": the range
    // was given MADV_HUGEPAGE).
    auto flags_at = [](const void* a) {
        std::FILE* f = std::fopen("/proc/self/smaps", "r");
        REQUIRE(f != nullptr);
        const auto at = reinterpret_cast<std::uintptr_t>(a);
        char line[512];
        bool in = false;
        std::string flags = "(no mapping)";
        while (std::fgets(line, sizeof line, f)) {
            unsigned long lo = 0, hi = 0;
            if (std::sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && std::strchr(line, '-') < std::strchr(line, ' ')) {
                in = at >= lo && at < hi;
            } else if (in && std::strncmp(line, "VmFlags:", 8) == 0) {
                flags = line;
                break;
            }
        }
        std::fclose(f);
        return flags;
    };
    std::vector<std::uint64_t> big;
    reserve_huge(big, (std::size_t(8) << 20) / 8);
    const auto middle = reinterpret_cast<std::uintptr_t>(big.data()) + (std::size_t(4) << 20);
    const std::string big_flags = flags_at(reinterpret_cast<const void*>(middle));
    CAPTURE(big_flags);
    CHECK(big_flags.find(" hg") != std::string::npos);
    big.resize(big.capacity(), 1);  // touched after the advice: the data is as usual
    CHECK(std::count(big.begin(), big.end(), 1u) == static_cast<std::ptrdiff_t>(big.size()));
    std::vector<std::uint64_t> small;
    reserve_huge(small, 1000);  // 8 KB: no 2 MiB page inside, nothing advised
    const std::string small_flags = flags_at(small.data());
    CAPTURE(small_flags);
    CHECK(small_flags.find(" hg") == std::string::npos);
#else
    SUCCEED("no transparent huge pages here");
#endif
}

TEST_CASE("throw_h5: the system's error under a failed HDF5 call is in the message and library_code",
          "[internals][errors]") {
    // The sec2 driver reports errno and strerror deep in HDF5's stack; throw_h5 keeps both.
    std::string what;
    int code = 0;
    {
        H5Quiet q;
        const hid_t f = H5Fopen("/nonexistent-dir-of-smalldata-test/x.h5", H5F_ACC_RDONLY, H5P_DEFAULT);
        REQUIRE(f < 0);
        try {
            throw_h5("cannot open it");
        } catch (const smalldata::Error& e) {
            what = e.what();
            code = e.library_code();
            CHECK(e.code() == Errc::hdf5);
        }
    }
    CAPTURE(what);
    CHECK(code == ENOENT);
    CHECK(what.find("No such file or directory") != std::string::npos);
    // Without a system error underneath: library_code 0.
    {
        H5Quiet q;
        CHECK(H5Dopen2(-1, "x", H5P_DEFAULT) < 0);
        try {
            throw_h5("cannot open the dataset");
        } catch (const smalldata::Error& e) {
            CHECK(e.library_code() == 0);
            CHECK(std::string(e.what()).find("system error") == std::string::npos);
        }
    }
}
