// reduce_bench.cpp - the in-place sum of an image over all clients against the copying
// std::vector form.
//
//   mpiexec -n 5 reduce_bench [--ny 1024] [--nx 1024] [--runs 21] [--servers 1]
//
// 1 server + 4 clients by default (5 ranks; the server has nothing to write). Every client
// holds a float image of ny x nx (4 MiB by default) and sums it over all clients, the two
// forms taking turns:
//   in_place  smd.sum(img.data(), {ny, nx})   reduced where it lies (MPI_IN_PLACE)
//   vector    img = smd.sum(img)              a copy of img reduced, then moved into img
// Each run refills the image, lines the clients up (a barrier of a communicator of their
// own, made before SmallData: no collective may involve the servers), then times the call;
// a run's time is the slowest client's. Two runs of each form are discarded first. Every
// result is checked. Prints, on client 0, one line of key=value pairs: the median and the
// fastest run of each form in ms and the ratio of the medians (vector / in_place).
#include "smalldata.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
    std::uint64_t ny = 1024, nx = 1024;
    int runs = 21;
    int servers = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc) {
            std::fprintf(stderr, "reduce_bench: %s needs a value\n", k.c_str());
            return 2;
        }
        const std::string v = argv[++i];
        if (k == "--ny") ny = std::stoull(v);
        else if (k == "--nx") nx = std::stoull(v);
        else if (k == "--runs") runs = std::stoi(v);
        else if (k == "--servers") servers = std::stoi(v);
        else {
            std::fprintf(stderr, "reduce_bench: unknown argument %s\n", k.c_str());
            return 2;
        }
    }
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm clients = MPI_COMM_NULL;  // the clients' own communicator, for the barriers
    MPI_Comm_split(MPI_COMM_WORLD, rank >= servers ? 0 : MPI_UNDEFINED, rank, &clients);

    smalldata::Options o;
    o.servers = servers;  // no filename: nothing is written
    smalldata::SmallData smd(o);
    int status = 0;
    if (smd.summary()) {
        const int c = smd.client_index();
        const int nc = smd.client_count();
        const std::size_t n = static_cast<std::size_t>(ny * nx);
        std::vector<float> img(n);
        auto refill = [&] {
            for (std::size_t i = 0; i < n; ++i) img[i] = static_cast<float>(c + static_cast<int>(i % 7));
        };
        auto right = [&] {  // sum over clients of c + i % 7
            for (std::size_t i = 0; i < n; ++i)
                if (img[i] != static_cast<float>(nc * (nc - 1) / 2 + nc * static_cast<int>(i % 7))) return false;
            return true;
        };
        std::vector<double> t_in_place, t_vector;
        for (int r = -2; r < runs; ++r) {
            for (int form = 0; form < 2; ++form) {
                refill();
                MPI_Barrier(clients);
                const double t0 = now();
                if (form == 0)
                    smd.sum(img.data(), {ny, nx});
                else
                    img = smd.sum(img);
                const double dt = now() - t0;
                if (!right()) {
                    std::fprintf(stderr, "reduce_bench: client %d: wrong %s result\n", c, form ? "vector" : "in_place");
                    status = 1;
                }
                if (r >= 0) (form == 0 ? t_in_place : t_vector).push_back(dt);
            }
        }
        // The slowest client's time of each run.
        std::vector<double> mine(t_in_place);
        mine.insert(mine.end(), t_vector.begin(), t_vector.end());
        std::vector<double> slowest(mine.size());
        MPI_Reduce(mine.data(), slowest.data(), static_cast<int>(mine.size()), MPI_DOUBLE, MPI_MAX, 0, clients);
        int bad = status;
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, clients);
        status = bad;
        if (c == 0) {
            const auto half = slowest.begin() + static_cast<std::ptrdiff_t>(t_in_place.size());
            const std::vector<double> a(slowest.begin(), half), b(half, slowest.end());
            const double ma = median(a), mb = median(b);
            std::printf("reduce_bench clients=%d elements=%llu bytes=%llu runs=%d in_place_ms=%.3f in_place_min_ms=%.3f "
                        "vector_ms=%.3f vector_min_ms=%.3f ratio=%.2f results=%s\n",
                        nc, static_cast<unsigned long long>(n), static_cast<unsigned long long>(n * sizeof(float)), runs,
                        ma * 1e3, *std::min_element(a.begin(), a.end()) * 1e3, mb * 1e3,
                        *std::min_element(b.begin(), b.end()) * 1e3, mb / ma, status ? "WRONG" : "ok");
        }
        MPI_Comm_free(&clients);
    }
    smd.done();
    MPI_Finalize();
    return status;
}
