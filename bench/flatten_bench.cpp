// flatten_bench.cpp - the copy of a final file into one self-contained file, against the
// page-cache write bandwidth of the same directory, measured in the same run.
//
//   mpiexec -n 4 flatten_bench --make GIB FILE [--block MIB]   write a parallel run first
//   flatten_bench FILE [--block MIB]                           time an existing final file
//
// --make GIB writes a parallel run of about GIB GiB of per-event data to FILE (2 servers,
// the other ranks clients; Options' defaults): per event a uint16 32 x 32 image, a double,
// an int32 and an int16[4], besides the timestamp. Every rank then leaves MPI but world
// rank 0, which measures alone (no rank polls a core meanwhile).
//
// Then, in FILE's directory, after one warm-up of each, 3 times in turn (each after sync(2), so
// that no backlog of dirty pages, such as the run's parts, is written back meanwhile):
//   write    the page-cache write bandwidth: as many bytes as the flatten moves, written
//            with write(2) in pieces of 8 MiB into a new file (no fsync), then removed;
//   flatten  detail::flatten_file(FILE, <dir>/flatten_bench_out.h5) with
//            FlattenSpec::block_bytes = MIB MiB (default: the library's); the copy removed.
// Prints the medians: bytes, the write bandwidth, the flatten's bandwidth over its whole
// call and over its copy phase (FlattenStats::copy_seconds), and the ratios of both to the
// write bandwidth (the target: copy >= 0.5 x write).
#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

std::string dir_of(const std::string& path) {
    const std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// A parallel run of about `gib` GiB of per-event data into `file`.
void make_run(double gib, const std::string& file) {
    smalldata::Options o;
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    o.servers = size >= 4 ? 2 : 1;
    o.filename = file;
    o.report = false;
    o.progress_seconds = 0;
    const std::size_t per_event = 32 * 32 * 2 + 8 + 4 + 8 + 8;
    const auto events = static_cast<std::int64_t>(gib * double(1ull << 30) / double(per_event));
    smalldata::SmallData smd(o);
    std::array<std::uint16_t, 32 * 32> img{};
    for (std::int64_t i : smd.share(events)) {
        for (std::size_t k = 0; k < img.size(); ++k) img[k] = static_cast<std::uint16_t>((i * 7 + static_cast<std::int64_t>(k)) & 0xfff);
        const std::array<std::int16_t, 4> roi{static_cast<std::int16_t>(i & 0x7fff), 1, 2, 3};
        smd.event(i, "det/image", smalldata::view(img.data(), {32, 32}), "x", static_cast<double>(i) * 0.5, "n",
                  static_cast<std::int32_t>(i), "det/roi", roi);
    }
    smd.done();
    if (smd.client_index() == 0)
        std::printf("made %s: %lld events, %d servers, join %.2f s\n", file.c_str(), static_cast<long long>(events),
                    o.servers, smd.stats().join_seconds);
}

// Seconds to write `bytes` into a new file at `path` with write(2), 8 MiB at a time.
double write_seconds(const std::string& path, std::uint64_t bytes, const std::vector<char>& buf) {
    const double t0 = now();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        std::perror(path.c_str());
        std::exit(1);
    }
    for (std::uint64_t left = bytes; left > 0;) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
        const ssize_t w = ::write(fd, buf.data(), n);
        if (w <= 0) {
            std::perror("write");
            std::exit(1);
        }
        left -= static_cast<std::uint64_t>(w);
    }
    ::close(fd);
    const double t = now() - t0;
    ::unlink(path.c_str());
    return t;
}

}  // namespace

int main(int argc, char** argv) {
    std::string file;
    double make_gib = 0;
    std::size_t block_mib = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--make" && i + 1 < argc)
            make_gib = std::atof(argv[++i]);
        else if (a == "--block" && i + 1 < argc)
            block_mib = static_cast<std::size_t>(std::atol(argv[++i]));
        else
            file = a;
    }
    if (file.empty()) {
        std::fprintf(stderr, "usage: [mpiexec -n 4] flatten_bench [--make GIB] [--block MIB] FILE\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (make_gib > 0) make_run(make_gib, file);
    MPI_Finalize();
    if (rank != 0) return 0;

    namespace dt = smalldata::detail;
    const std::string dir = dir_of(file);
    const std::string out = dir + "/flatten_bench_out.h5", scratch = dir + "/flatten_bench_write.tmp";
    dt::FlattenSpec spec;
    if (block_mib) spec.block_bytes = block_mib << 20;
    auto flatten = [&](dt::FlattenStats& st) {
        try {
            dt::flatten_file(file, out, spec, &st);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s\n", e.what());
            std::exit(1);
        }
        ::unlink(out.c_str());
    };
    dt::FlattenStats warm;
    flatten(warm);  // warm-up; also says how many bytes the copy moves
    const std::uint64_t bytes = warm.bytes;
    std::vector<char> buf(std::size_t(8) << 20);
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131 + 7);
    write_seconds(scratch, bytes, buf);  // warm-up
    std::vector<double> w, f, c;
    for (int r = 0; r < 3; ++r) {
        ::sync();
        w.push_back(write_seconds(scratch, bytes, buf));
        ::sync();
        dt::FlattenStats st;
        flatten(st);
        f.push_back(st.seconds);
        c.push_back(st.copy_seconds);
        std::printf("  trial %d: write %.3f s, flatten %.3f s (copy %.3f s)\n", r + 1, w.back(), f.back(), c.back());
    }
    const double gb = static_cast<double>(bytes) / 1e9;
    const double wbw = gb / median(w), fbw = gb / median(f), cbw = gb / median(c);
    std::printf("dir=%s bytes=%llu block_MiB=%zu datasets=%zu\n", dir.c_str(), static_cast<unsigned long long>(bytes),
                spec.block_bytes >> 20, warm.datasets);
    std::printf("write_GBps=%.3f flatten_GBps=%.3f copy_GBps=%.3f ratio_flatten=%.2f ratio_copy=%.2f\n", wbw, fbw, cbw,
                fbw / wbw, cbw / wbw);
    return 0;
}
