// large_coming.cpp - a large event still coming holds up no other client's batches.
//
// mpiexec -n 3 large_coming DIR (1 server + 2 clients; meson runs it with Open MPI's
// single-copy transfers off, where a large message moves only while its sender is in
// MPI). Client 0 ships an event larger than batch_bytes (copied into its batch, so
// event() returns while it is still being sent) and then stays out of MPI, as in a long
// computation, until client 1 has handed over more batches than it has buffers and
// slots, which it can only if the server goes on receiving them meanwhile. A server that
// waited for the large event's data first held client 1 up until client 0 gave up
// waiting (20 s). Exit status 0 when client 0 saw client 1 finish and the file holds
// every row, 1 otherwise (the reason on stderr).
#include "smalldata.hpp"
#include "../h5read.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: large_coming DIR\n");
        return 2;
    }
    const std::string dir = argv[1], go = dir + "/go";
    smalldata::Options o;
    o.filename = dir + "/lc.h5";
    o.batch_bytes = std::size_t(64) << 10;
    const std::size_t big_n = std::size_t(1) << 19;  // 2 MiB of float
    const std::int64_t fast_n = 400;                 // 16 KiB each: about 130 batches
    int failed = 0;
    int rank = 0;
    {
        smalldata::SmallData smd(o);
        rank = smd.rank();
        if (smd.size() != 3 || o.servers != 1) {
            std::fprintf(stderr, "large_coming: run it with mpiexec -n 3\n");
            return 2;
        }
        if (smd.client_index() == 0) {
            std::vector<float> big(big_n);
            for (std::size_t k = 0; k < big_n; ++k) big[k] = static_cast<float>(k % 4096);
            smd.event(std::int64_t(0), "unaligned_big", big, "x", std::int64_t(0));
            smd.event(std::int64_t(1), "x", std::int64_t(1));  // ships the large event
            const auto t0 = std::chrono::steady_clock::now();
            while (!std::filesystem::exists(go) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!std::filesystem::exists(go)) {
                std::fprintf(stderr, "large_coming: client 1 did not get its %lld events through in %.1f s while client 0's "
                                     "large event was coming\n", static_cast<long long>(fast_n), waited);
                failed = 1;
            } else {
                std::printf("large_coming: client 1 got its events through in %.3f s\n", waited);
            }
            for (std::int64_t i = 2; i < 10; ++i) smd.event(i, "x", i);
        } else if (smd.client_index() == 1) {
            std::vector<float> row(4096);
            for (std::int64_t i = 0; i < fast_n; ++i) {
                row[0] = static_cast<float>(i);
                smd.event(100000 + i, "x", 100000 + i, "row", row);
            }
            std::ofstream(go).put('1');
        }
        smd.done();
    }
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank != 0) return failed;
    // What the file holds: every event once, x = timestamp, client 1's rows, the large row.
    h5r::File f(o.filename);
    const auto ts = f.read<std::int64_t>("timestamp");
    const auto x = f.read<std::int64_t>("x");
    const auto row = f.read<float>("row");
    const auto big = f.read<float>("unaligned_big");
    std::size_t bad = 0;
    const bool sizes = ts.size() == 10 + static_cast<std::size_t>(fast_n) && x.size() == ts.size() &&
                       row.size() == 4096 * ts.size() && big.size() == big_n;
    if (sizes) {
        for (std::size_t r = 0; r < ts.size(); ++r) {
            bad += x[r] != ts[r];
            bad += ts[r] >= 100000 ? row[r * 4096] != static_cast<float>(ts[r] - 100000) : !std::isnan(row[r * 4096]);
        }
        for (std::size_t k = 0; k < big_n; ++k) bad += big[k] != static_cast<float>(k % 4096);
    }
    if (!sizes || bad) {
        std::fprintf(stderr, "large_coming: the file is wrong: %zu rows (want %lld), %zu bad values\n", ts.size(),
                     10 + static_cast<long long>(fast_n), bad);
        failed = 1;
    }
    return failed;
}
