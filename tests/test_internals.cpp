// Internals that no API call can reach with bad input: the decoder's checks of a batch's
// contents (a malformed batch must be Errc::protocol, never memory corruption) and the
// shared-memory slot layout; the report's verdict from given figures. This TU compiles the implementation itself (it is linked
// without the library) to reach smalldata::detail.
#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"

#include "catch_compat.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

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
