// bench.cpp - throughput of smalldata on the project's reference workloads.
//
//   bench [--workload ref|large] [--events N] [--out FILE] [--servers S]
//         [--batch-size N] [--cache-size N] [--cache-memory MIB] [--batch-bytes N] [--send-buffers N]
//         [--rate R] [--idle-sleep-us N] [--no-shm] [--write-thread N] [--checkpoint S]
//         [--progress S] [--no-report] [--verify]
//         [--compression none|deflate[:LEVEL]|filter:ID[:P1,P2,...]] [--self-contained]
//         [--time-order]
//
// Run as one process (serial mode) or under mpiexec (parallel mode). Prints one line per
// role with the slowest rank's figures, as key=value pairs that bench/run collects:
//   events/s end to end (first event() to done() returning on every rank), payload MB/s,
//   ns per event() call on clients (and net of back-pressure waits), back-pressure wait, server write time, join time,
//   peak RSS of each role, and CPU time as a fraction of wall time (cpu_frac). With
//   --rate R every client produces at most R events per second (sleeping in between): the
//   servers then idle most of the time, and their cpu_frac shows what idling costs.
//
// Workloads (the project's definitions):
//   ref   - timestamp; doubles a..h; int64 n1, n2; det/proj float[100]; det/roi int16[4]
//           (496 bytes of payload)
//   large - timestamp; det/image uint16[256][256] (128 KiB)
//   array - timestamp; det/peaks, a std::vector<float> of 100 (400 bytes)
//   var   - timestamp; det/var_peaks, a var_ field given the same std::vector<float> of 100
//           (the same bytes: compare ns_per_event_call with `array`)
//
// --no-shm sends every batch as an MPI message (Options::shared_memory = false).
// --cache-memory MIB sets Options::cache_memory in MiB (default 256): the writers' memory cap.
// --write-thread N sets Options::write_thread (default -1, automatic). 1 is safe here: this
//    program makes no HDF5 calls of its own.
// --checkpoint S sets Options::checkpoint_seconds (default 5; 0 = off).
// --progress S sets Options::progress_seconds (default 60; 0 = off): the lines go to stderr.
// --no-report sets Options::report = false (the end-of-run report, on stderr).
// --compression sets Options::compression: none (default); deflate (level 1) or deflate:LEVEL
//    (1-9), both with the shuffle filter; filter:ID or filter:ID:P1,P2,... any HDF5 filter by
//    id with its parameters (cd_values), e.g. filter:32004 (the LZ4 plugin). Rank 0 then
//    also prints compression=... file_MB=... ratio=...: the bytes of the files the writers
//    wrote (the serial file, or every part file) and the payload bytes over them.
// --noise (large): the images carry detector-like noise (a pedestal of 1000 plus 6 random
//    bits per pixel, cycled from 16 images made before the loop, so no per-event cost), for
//    compression ratios nearer real data than the default image, which is almost all zeros.
// --self-contained sets Options::self_contained: done() copies the parts into the final
//    file (its time is in join_s; the report shows the copy).
// --time-order sets Options::time_order: done() sorts the events over the servers (its
//    time is order_s, on servers); --verify then also checks the timestamps are in order.
// --verify reads the final file back on rank 0 after the timing: every timestamp exactly
// once, and (ref) every row's `a` and `n2` consistent with its timestamp. Prints
// verify=ok or verify=FAILED and then exits with status 1.
#include "smalldata.hpp"

#include <hdf5.h>

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Args {
    std::string workload = "ref";
    std::int64_t events = 1000000;
    std::string out = "bench.h5";
    double rate = 0;  // events per second per client; 0 = as fast as possible
    bool noise = false;  // large: noisy images (--noise)
    bool verify = false;
    std::string compression = "none";
    smalldata::Options opt;
};

// --compression's value as Options::compression; exits with a message if it is malformed.
smalldata::Compression parse_compression(const std::string& v) {
    auto bad = [&]() -> smalldata::Compression {
        std::fprintf(stderr, "bench: --compression is none, deflate[:LEVEL] or filter:ID[:P1,P2,...], got '%s'\n",
                     v.c_str());
        std::exit(2);
    };
    auto number = [&](const std::string& s) -> unsigned {
        if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 9) bad();
        return static_cast<unsigned>(std::stoul(s));
    };
    if (v == "none") return {};
    if (v == "deflate") return smalldata::Compression::deflate(1);
    if (v.rfind("deflate:", 0) == 0) return smalldata::Compression::deflate(static_cast<int>(number(v.substr(8))));
    if (v.rfind("filter:", 0) != 0) return bad();
    const std::string rest = v.substr(7);
    const std::size_t colon = rest.find(':');
    const unsigned id = number(rest.substr(0, colon));
    std::vector<unsigned> params;
    if (colon != std::string::npos) {
        std::string list = rest.substr(colon + 1);
        std::size_t at = 0;
        for (;;) {
            const std::size_t comma = list.find(',', at);
            params.push_back(number(list.substr(at, comma == std::string::npos ? std::string::npos : comma - at)));
            if (comma == std::string::npos) break;
            at = comma + 1;
        }
    }
    return smalldata::Compression::filter(id, params);
}

// Bytes of the files the writers wrote: the serial file, or the part files of `servers`.
std::uint64_t written_bytes(const std::string& out, int ranks, int servers) {
    std::error_code ec;
    if (ranks == 1) {
        const std::uintmax_t n = std::filesystem::file_size(out, ec);
        return ec ? 0 : n;
    }
    const std::size_t slash = out.rfind('/'), dot = out.rfind('.');
    const std::string stem =
        dot != std::string::npos && (slash == std::string::npos || dot > slash + 1) ? out.substr(0, dot) : out;
    std::uint64_t total = 0;
    for (int k = 0; k < servers; ++k) {
        const std::uintmax_t n = std::filesystem::file_size(stem + "_part" + std::to_string(k) + ".h5", ec);
        if (!ec) total += n;
    }
    return total;
}

Args parse(int argc, char** argv) {
    Args a;
    a.opt.servers = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "bench: %s needs a value\n", k.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (k == "--workload") a.workload = next();
        else if (k == "--events") a.events = std::stoll(next());
        else if (k == "--out") a.out = next();
        else if (k == "--servers") a.opt.servers = std::stoi(next());
        else if (k == "--batch-size") a.opt.batch_size = std::stoul(next());
        else if (k == "--cache-size") a.opt.cache_size = std::stoul(next());
        else if (k == "--cache-memory") a.opt.cache_memory = std::stoul(next()) << 20;
        else if (k == "--batch-bytes") a.opt.batch_bytes = std::stoul(next());
        else if (k == "--send-buffers") a.opt.send_buffers = std::stoi(next());
        else if (k == "--rate") a.rate = std::stod(next());
        else if (k == "--noise") a.noise = true;
        else if (k == "--idle-sleep-us") a.opt.idle_sleep_max_us = std::stoi(next());
        else if (k == "--no-shm") a.opt.shared_memory = false;
        else if (k == "--write-thread") a.opt.write_thread = std::stoi(next());
        else if (k == "--checkpoint") a.opt.checkpoint_seconds = std::stod(next());
        else if (k == "--progress") a.opt.progress_seconds = std::stod(next());
        else if (k == "--no-report") a.opt.report = false;
        else if (k == "--verify") a.verify = true;
        else if (k == "--self-contained") a.opt.self_contained = true;
        else if (k == "--time-order") a.opt.time_order = true;
        else if (k == "--compression") a.opt.compression = parse_compression(a.compression = next());
        else {
            std::fprintf(stderr, "bench: unknown argument %s\n", k.c_str());
            std::exit(2);
        }
    }
    if (a.workload != "ref" && a.workload != "large" && a.workload != "array" && a.workload != "var") {
        std::fprintf(stderr, "bench: --workload is ref, large, array or var\n");
        std::exit(2);
    }
    a.opt.filename = a.out;
    return a;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// Reads a whole 1-d dataset of `type`; empty on failure.
template <class T>
std::vector<T> read_all(hid_t file, const char* name, hid_t type) {
    std::vector<T> out;
    const hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return out;
    const hid_t sp = H5Dget_space(d);
    const hssize_t n = H5Sget_simple_extent_npoints(sp);
    out.resize(static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0 && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0) out.clear();
    H5Sclose(sp);
    H5Dclose(d);
    return out;
}

// The checks of --verify; returns an empty string when the file is right.
std::string verify_file(const Args& a) {
    const hid_t f = H5Fopen(a.out.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return "cannot open " + a.out;
    std::string err;
    const auto ts = read_all<std::int64_t>(f, "timestamp", H5T_NATIVE_INT64);
    if (ts.size() != static_cast<std::size_t>(a.events)) {
        err = "timestamp has " + std::to_string(ts.size()) + " rows, expected " + std::to_string(a.events);
    } else {
        std::vector<std::int64_t> sorted(ts);
        std::sort(sorted.begin(), sorted.end());
        for (std::int64_t i = 0; i < a.events && err.empty(); ++i)
            if (sorted[static_cast<std::size_t>(i)] != i) err = "timestamp " + std::to_string(i) + " missing or repeated";
        if (err.empty() && a.opt.time_order && !std::is_sorted(ts.begin(), ts.end())) err = "timestamp is not in order";
        if (err.empty() && a.workload == "ref") {
            const auto x = read_all<double>(f, "a", H5T_NATIVE_DOUBLE);
            const auto n2 = read_all<std::int64_t>(f, "n2", H5T_NATIVE_INT64);
            if (x.size() != ts.size() || n2.size() != ts.size()) err = "a or n2 has the wrong length";
            for (std::size_t r = 0; r < ts.size() && err.empty(); ++r)
                if (x[r] != static_cast<double>(ts[r]) || n2[r] != -ts[r]) err = "row " + std::to_string(r) + " is misaligned";
        }
    }
    H5Fclose(f);
    return err;
}

long peak_rss_kib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

}  // namespace

int main(int argc, char** argv) {
    Args a = parse(argc, argv);
    // MPI is started before the clock, as the baselines do: what is timed is the library.
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Barrier(MPI_COMM_WORLD);
    const double t_start = now();
    const double cpu_start = cpu_seconds();
    smalldata::SmallData smd(a.opt);
    const double t_ctor = now();

    std::array<float, 100> proj{};
    std::array<std::int16_t, 4> roi{};
    std::vector<std::uint16_t> image(a.workload == "large" ? 256 * 256 : 0);
    std::vector<float> peaks(a.workload == "array" || a.workload == "var" ? 100 : 0);
    std::vector<std::vector<std::uint16_t>> noisy(a.noise && !image.empty() ? 16 : 0);
    std::uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (auto& img : noisy) {
        img.resize(image.size());
        for (auto& px : img) {  // xorshift64
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            px = static_cast<std::uint16_t>(1000 + (rng & 63));
        }
    }
    const bool var = a.workload == "var";
    const std::size_t payload = a.workload == "ref" ? 496 : peaks.empty() ? 8 + image.size() * 2 : 408;

    double loop = 0;
    std::int64_t mine = 0;
    if (smd.summary()) {
        const double t0 = now();
        for (std::int64_t i : smd.share(a.events)) {
            const double x = static_cast<double>(i);
            if (a.workload == "ref") {
                proj[static_cast<std::size_t>(i % 100)] = static_cast<float>(x);
                roi[static_cast<std::size_t>(i % 4)] = static_cast<std::int16_t>(i % 30000);
                smd.event(i, "a", x, "b", x + 1, "c", x + 2, "d", x + 3, "e", x + 4, "f", x + 5, "g", x + 6, "h", x + 7,
                          "n1", i, "n2", -i, "det/proj", proj, "det/roi", roi);
            } else if (!peaks.empty()) {
                peaks[static_cast<std::size_t>(i % 100)] = static_cast<float>(x);
                smd.event(i, var ? "det/var_peaks" : "det/peaks", peaks);
            } else if (!noisy.empty()) {
                smd.event(i, "det/image", smalldata::view(noisy[static_cast<std::size_t>(i % 16)].data(), {256, 256}));
            } else {
                image[static_cast<std::size_t>(i % 65536)] = static_cast<std::uint16_t>(i);
                smd.event(i, "det/image", smalldata::view(image.data(), {256, 256}));
            }
            ++mine;
            if (a.rate > 0) {  // a slow producer: wait until this event's slot has passed
                const double due = t0 + static_cast<double>(mine) / a.rate;
                while (now() < due) std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
        }
        loop = now() - t0;
    }
    smd.done();
    const double t_end = now();

    // Per-rank figures, reduced per role on rank 0: max over ranks of times and RSS.
    const smalldata::Stats st = smd.stats();
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int role = static_cast<int>(smd.role());
    const double cpu = cpu_seconds() - cpu_start;
    double mine_d[12] = {t_end - t_start,
                        mine ? loop / static_cast<double>(mine) * 1e9 : 0,
                        st.wait_seconds,
                        st.write_seconds,
                        st.idle_seconds,
                        st.join_seconds,
                        static_cast<double>(peak_rss_kib()),
                        t_ctor - t_start,
                        cpu / (t_end - t_start),
                        static_cast<double>(st.batches),
                        mine ? (loop - st.wait_seconds) / static_cast<double>(mine) * 1e9 : 0,
                        st.order_seconds};
    constexpr int K = 12;
    std::vector<double> all(static_cast<std::size_t>(K * size));
    std::vector<int> roles(static_cast<std::size_t>(size));
    MPI_Gather(mine_d, K, MPI_DOUBLE, all.data(), K, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Gather(&role, 1, MPI_INT, roles.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank != 0) {
        MPI_Finalize();
        return 0;
    }
    double wall = 0;
    for (int r = 0; r < size; ++r) wall = std::max(wall, all[static_cast<std::size_t>(K * r)]);
    const double evs = static_cast<double>(a.events) / wall;
    std::printf("workload=%s events=%lld ranks=%d servers=%d wall_s=%.3f events_per_s=%.0f payload_MB_per_s=%.1f\n",
                a.workload.c_str(), static_cast<long long>(a.events), size, size == 1 ? 0 : a.opt.servers, wall, evs,
                evs * static_cast<double>(payload) / 1e6);
    const char* names[4] = {"serial", "client", "server", "other"};
    for (int ro = 0; ro < 4; ++ro) {
        double m[K] = {};
        int count = 0;
        for (int r = 0; r < size; ++r) {
            if (roles[static_cast<std::size_t>(r)] != ro) continue;
            ++count;
            for (int k = 0; k < K; ++k) m[k] = std::max(m[k], all[static_cast<std::size_t>(K * r + k)]);
        }
        if (!count) continue;
        std::printf("  role=%s ranks=%d ns_per_event_call=%.0f ns_per_event_net=%.0f wait_s=%.3f write_s=%.3f "
                    "idle_s=%.3f join_s=%.3f peak_rss_MiB=%.1f cpu_frac=%.3f max_batches=%.0f order_s=%.3f\n",
                    names[ro], count, m[1], m[10], m[2], m[3], m[4], m[5], m[6] / 1024.0, m[8], m[9], m[11]);
    }
    if (!a.out.empty() && a.compression != "none") {
        const double file = static_cast<double>(written_bytes(a.out, size, a.opt.servers));
        const double bytes = static_cast<double>(a.events) * static_cast<double>(payload);
        std::printf("  compression=%s payload_MB=%.1f file_MB=%.1f ratio=%.2f\n", a.compression.c_str(), bytes / 1e6,
                    file / 1e6, file > 0 ? bytes / file : 0.0);
    }
    int status = 0;
    if (a.verify && !a.out.empty()) {
        const std::string err = verify_file(a);
        std::printf("verify=%s\n", err.empty() ? "ok" : ("FAILED: " + err).c_str());
        status = err.empty() ? 0 : 1;
    }
    MPI_Finalize();
    return status;
}
