// join_bench.cpp - time of the join for many part files and fields.
//
//   mpiexec -n 2S join_bench S FIELDS EVENTS OUT
//
// S servers and S clients; every client writes EVENTS events of FIELDS double fields, so
// the final file gets FIELDS + 1 virtual datasets with S mappings each. Prints the time
// client 0 spent building the final file (Stats::join_seconds) and done()'s wall time.
#include "smalldata.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: join_bench SERVERS FIELDS EVENTS OUT\n");
        return 2;
    }
    smalldata::Options o;
    o.servers = std::stoi(argv[1]);
    const int fields = std::stoi(argv[2]);
    const std::int64_t events = std::stoll(argv[3]);
    o.filename = argv[4];
    smalldata::SmallData smd(o);
    std::vector<std::string> names;
    for (int f = 0; f < fields; ++f) names.push_back("g" + std::to_string(f % 10) + "/f" + std::to_string(f));
    for (std::int64_t i : smd.share(events * smd.client_count()))
        for (int f = 0; f < fields; ++f) smd.event(i, names[static_cast<std::size_t>(f)], static_cast<double>(i + f));
    const auto t0 = std::chrono::steady_clock::now();
    smd.done();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (smd.client_index() == 0)
        std::printf("parts=%d fields=%d mappings=%d join_s=%.3f done_s=%.3f\n", o.servers, fields + 1,
                    o.servers * (fields + 1), smd.stats().join_seconds, dt);
    return 0;
}
