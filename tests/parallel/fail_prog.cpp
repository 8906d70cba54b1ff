// fail_prog.cpp - a parallel program that fails on purpose, for run_fail.py.
//
//   fail_prog MODE FILE      (under mpiexec, 4 ranks: 1 server + 3 clients)
//
// MODE client-type : client 1 changes the type of field "x" half-way (uncaught
//                    smalldata::Error on that client)
//      user-throw  : client 2 throws its own std::runtime_error("detector exploded")
//      server-type : clients 0 and 1 of the same server disagree on the type of "y"
//                    (detected by the server while writing)
//      abandon     : client 1 leaves its scope through an exception caught outside it
//                    (SmallData destroyed during unwinding before done())
// Every client writes "x" for its share of 200,000 events first, so the server has rows
// on disk when the failure comes; run_fail.py checks that they are still readable.
// SMALLDATA_TEST_WRITE_THREAD=1 in the environment gives the server a write thread.
#include "smalldata.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: fail_prog MODE FILE\n");
        return 2;
    }
    const std::string mode = argv[1];
    smalldata::Options o;
    o.filename = argv[2];
    o.servers = 1;
    o.batch_size = 100;
    o.cache_size = 1000;
    o.abort_grace_ms = 5000;
    if (std::getenv("SMALLDATA_TEST_WRITE_THREAD")) o.write_thread = 1;
    const std::int64_t n = 200000;
    try {
        smalldata::SmallData smd(o);
        const int c = smd.client_index();
        for (std::int64_t i : smd.share(n)) {
            if (mode == "client-type" && c == 1 && i > n / 2)
                smd.event(i, "x", static_cast<std::int32_t>(i));  // was double: type_mismatch
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
        }
        smd.done();
    } catch (const std::logic_error& e) {
        // "abandon": the exception already went through ~SmallData, which ended the job.
        std::fprintf(stderr, "fail_prog: caught %s (should not be reached)\n", e.what());
        return 3;
    }
    return 0;
}
