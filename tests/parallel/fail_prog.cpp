// fail_prog.cpp - a parallel program that fails on purpose, for run_fail.py.
//
//   fail_prog MODE FILE [N]   (under mpiexec, 4 ranks: 1 server + 3 clients; N events,
//                              200,000 by default)
//
// Every client writes "x" = timestamp for its share of the events, so the server has rows
// on disk when the failure comes; run_fail.py checks that they are still readable.
//
// Uncaught failures (the job must end itself):
//   client-type  : client 1 changes the type of field "x" half-way (smalldata::Error)
//   user-throw   : client 2 throws its own std::runtime_error("detector exploded") half-way
//   server-type  : clients 0 and 1 of the same server disagree on the type of "y"
//                  (detected by the server while writing)
//   abandon      : client 1 leaves its scope through an exception caught outside it
//                  (SmallData destroyed during unwinding before done())
//   busy-abort   : a callback keeps the server busy (~3 us per event) while client 1
//                  throws after 1.5 s of events and clients 0 and 2 keep producing
//   exit         : client 1 calls std::exit(0) half-way, without done()
//   fill         : checkpoint_seconds 0.2; every event also has an 8 KiB row "img" (all =
//                  i) and i % 5 rows of i in the var_ field "var_pk", 500 events/s per
//                  client (4 MB/s), so that a small file system fills up after several
//                  checkpoints (tests/full_disk.py; faster, the small ext4 of that test
//                  could fill before the first one)
//   order-fill   : Options::time_order with cache_memory 32 KiB (the ordering runs in
//                  rounds); every event has "x", an 8 KiB row "img" (all = i) and i % 5
//                  rows of i in "var_pk", as in fill, without the pauses: the parts fit
//                  on the small file system, the ordered copy does not (full_disk.py).
//                  Its errors are caught by main, as for good
//   sigterm      : client 1 gets SIGTERM half-way (the library ends its run: done(), then
//                  the signal); the others finish
//   sigterm-sum  : SIGTERM to every rank 3 s in (a thread of each sends it), while client 0
//                  (no events) waits in sum() and clients 1 and 2 are in their loops
//                  (1 ms per event): every rank ends by the signal with the file complete
//   sigterm-one-sum : SIGTERM to client 1 alone, half-way, while client 0 (no events) waits
//                  in sum() and client 2 goes on and calls sum() after its loop: client 1
//                  runs done(), and the other two learn in their reduction that it will not
//                  come, and end their runs as it did (done(), then the signal). With
//                  SMALLDATA_TEST_OWN_SIGNAL=1 each of them also gets a SIGTERM of its own
//                  right after it learnt the stop (from its logger, at that message), as a
//                  scheduler that signals every rank, one after the other: its first signal,
//                  which must not end it at once
//   finalize-first : main initialises MPI; the clients call MPI_Finalize after their loop
//                  without done(), before ~SmallData (done() runs from MPI_Finalize)
//   nonstd-throw : a callback on the server throws 42 (not a std::exception); main has
//                  catch (...) { return 1; }
//   callback-throw : a callback on the server throws std::runtime_error("bad calibration")
// Failures in the constructor, caught by main (every rank prints "caught [CODE] ..."):
//   good         : no failure at all (also used to prepare the directory of a later run)
//   bad-option   : only world rank 0 sets batch_bytes = 512 (below the minimum)
//   Any other failure of `good` (missing directory, a directory or a foreign file at the
//   part path) is set up by run_fail.py around the same program.
// SMALLDATA_TEST_WRITE_THREAD=1 in the environment gives the server a write thread;
// SMALLDATA_TEST_TIME_ORDER=1 sets Options::time_order; SMALLDATA_TEST_MESSAGES=1 sends
// batches as MPI messages (Options::shared_memory off); SMALLDATA_TEST_SERVERS=S sets
// Options::servers (under mpiexec with 3 + S ranks: still 3 clients).
#include "smalldata.hpp"

#include <chrono>
#include <csignal>
#include <signal.h>  // kill
#include <unistd.h>  // getpid
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

void spin_us(int us) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
    while (std::chrono::steady_clock::now() < end) {
    }
}

int run(const std::string& mode, const std::string& file, std::int64_t n) {
    smalldata::Options o;
    o.filename = file;
    o.servers = 1;
    o.batch_size = 100;
    o.cache_size = 1000;
    o.abort_grace_ms = 5000;
    if (std::getenv("SMALLDATA_TEST_WRITE_THREAD")) o.write_thread = 1;
    if (std::getenv("SMALLDATA_TEST_MESSAGES")) o.shared_memory = false;  // batches as MPI messages
    if (std::getenv("SMALLDATA_TEST_TIME_ORDER")) o.time_order = true;
    if (const char* s = std::getenv("SMALLDATA_TEST_SERVERS")) o.servers = std::atoi(s);
    if (std::getenv("SMALLDATA_TEST_OWN_SIGNAL")) {
        o.logger = [](smalldata::LogLevel, const std::string& message) {
            std::fprintf(stderr, "%s\n", message.c_str());
            if (message.find("this client ends its run too") != std::string::npos) {
                std::fprintf(stderr, "fail_prog: SIGTERM to this process now\n");
                std::raise(SIGTERM);
            }
        };
    }
    if (mode == "busy-abort") o.callbacks.push_back([](const smalldata::Event&) { spin_us(3); });
    if (mode == "nonstd-throw") {
        o.callbacks.push_back([seen = std::int64_t(0)](const smalldata::Event&) mutable {
            if (++seen == 50000) throw 42;
        });
    }
    if (mode == "callback-throw") {
        o.callbacks.push_back([seen = std::int64_t(0)](const smalldata::Event&) mutable {
            if (++seen == 50000) throw std::runtime_error("bad calibration");
        });
    }
    if (mode == "bad-option") {
        int world_rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);  // main initialised MPI for this
        if (world_rank == 0) o.batch_bytes = 512;
    }
    if (mode == "fill") o.checkpoint_seconds = 0.2;  // what a checkpoint wrote stays
    if (mode == "order-fill") {
        o.time_order = true;
        o.cache_memory = std::size_t(32) << 10;
    }
    if (mode == "sigterm-sum") {
        // As a scheduler's wall time: SIGTERM to every rank, 3 s in (the library's handler
        // is in place by then).
        std::thread([] {
            std::this_thread::sleep_for(std::chrono::seconds(3));
            ::kill(::getpid(), SIGTERM);
        }).detach();
    }
    smalldata::SmallData smd(o);
    const int c = smd.client_index();
    const auto t0 = std::chrono::steady_clock::now();
    // sigterm-sum: client 0 has no events and waits in a reduction for the others, which
    // are still in their loops when the signal comes.
    if ((mode == "sigterm-sum" || mode == "sigterm-one-sum") && c == 0) (void)smd.sum(1);
    for (std::int64_t i : smd.share(n)) {
        if (mode == "sigterm-sum") std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (mode == "client-type" && c == 1 && i > n / 2)
            smd.event(i, "x", static_cast<std::int32_t>(i));  // was double: type_mismatch
        else if (mode == "fill" || mode == "order-fill") {
            smd.event(i, "x", static_cast<double>(i), "img", std::vector<float>(2048, static_cast<float>(i)), "var_pk",
                      std::vector<float>(static_cast<std::size_t>(i % 5), static_cast<float>(i)));
            // fill: about 4 MB/s per client, so checkpoints come before the disk is full
            if (mode == "fill") std::this_thread::sleep_for(std::chrono::microseconds(2000));
        }
        else
            smd.event(i, "x", static_cast<double>(i));
        if (mode == "user-throw" && c == 2 && i > n / 2) throw std::runtime_error("detector exploded");
        if (mode == "server-type" && i > n / 2 && (c == 0 || c == 1)) {
            if (c == 0)
                smd.event(i, "y", static_cast<float>(i));
            else
                smd.event(i, "y", static_cast<std::int64_t>(i));
        }
        if (mode == "abandon" && c == 1 && i > n / 2) throw std::logic_error("left the loop");
        if (mode == "busy-abort" && c == 1 && std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(1500))
            throw std::runtime_error("client 1 failed");
        if (mode == "exit" && c == 1 && i > n / 2) std::exit(0);
        if ((mode == "sigterm" || mode == "sigterm-one-sum") && c == 1 && i > n / 2 && i <= n / 2 + 3)
            std::raise(SIGTERM);  // once: c's next i
    }
    if (mode == "sigterm-one-sum" && smd.summary() && c != 0) (void)smd.sum(1);  // client 2 (1 ended in its loop)
    if (mode == "finalize-first") {  // main initialised MPI; MPI_Finalize before done() and ~SmallData
        MPI_Finalize();
        return 0;
    }
    smd.done();
    return 0;
}

int world_rank() {
    int r = -1;
    int up = 0;
    MPI_Initialized(&up);
    if (up) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: fail_prog MODE FILE [N]\n");
        return 2;
    }
    const std::string mode = argv[1];
    const std::string file = argv[2];
    const std::int64_t n = argc > 3 ? std::atoll(argv[3]) : 200000;
    // bad-option needs the world rank before the library initialises MPI: main owns MPI.
    const bool own_mpi = mode == "bad-option" || mode == "finalize-first";
    int provided = 0;
    if (own_mpi) MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    if (mode == "nonstd-throw") {
        try {
            return run(mode, file, n);
        } catch (...) {  // a common pattern; the job must end anyway
            return 1;
        }
    }
    if (mode == "good" || mode == "bad-option" || mode == "order-fill") {
        int rc = 1;
        try {
            rc = run(mode, file, n);
        } catch (const smalldata::Error& e) {
            std::fprintf(stderr, "fail_prog: rank %d caught [%s] %s\n", world_rank(), smalldata::errc_name(e.code()),
                         e.what());
        } catch (const std::exception& e) {
            std::fprintf(stderr, "fail_prog: rank %d caught [-] %s\n", world_rank(), e.what());
        }
        if (own_mpi) MPI_Finalize();
        return rc;
    }
    try {
        return run(mode, file, n);
    } catch (const std::logic_error& e) {
        // "abandon": the exception already went through ~SmallData, which ended the job.
        std::fprintf(stderr, "fail_prog: caught %s (should not be reached)\n", e.what());
        return 3;
    }
}
