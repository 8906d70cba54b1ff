// write_run: a small run for the tool tests (run_tools.py), in serial or parallel mode
// (2 servers from 4 ranks up, else 1). Fields of several kinds: scalars, a bool, a 2-d
// image in a group, a field first seen late (back-filled), an unaligned field, a var_
// field, a var_ field given only empty (no row in any part: in the final file an empty
// dataset with a fill value), summaries, attributes.
// Usage: write_run OUTPUT.h5 [EVENTS]
// SMALLDATA_TEST_COMPRESSION=deflate in the environment: Compression::deflate(1).
// SMALLDATA_TEST_TIME_ORDER=1: Options::time_order. SMALLDATA_TEST_STOP_ORDERED=DIR as well:
// each server, once its time range is complete in <part>.ordered, writes DIR/ordered<k>,
// waits (at most 60 s) until every server has, and ends the process (_exit): the state of
// a job killed between the ordering and its switch (with cache_memory 4 MiB, so that one
// server, too, rewrites its part there instead of merging its clients' streams).
// SMALLDATA_TEST_SMALL_CELLS=1 as well: with several servers, cells of the time grid of a
// batch of a client (batches of 100 events), 2 cells of a part per virtual mapping of the final
// file (detail::cell_min_events, cell_batches, join_cells_per_mapping): mappings that take
// rows from the middle of their part.
// SMALLDATA_TEST_SELF_CONTAINED=1: Options::self_contained. SMALLDATA_TEST_STOP_FLATTEN=STAGE
// as well: the joining rank ends the process (_exit) inside the self-contained copy, at
// detail::flatten_hook's STAGE (0: one per-event dataset copied; 1: the copy in place, the
// parts not yet removed): the state of a job killed there.
// SMALLDATA_TEST_KILL_CHECKPOINT=K: checkpoints every 20 ms (checkpoint_seconds 0.05), the
// clients paced (1 ms every 50 events), and a server ends the process (_exit) once its K-th
// checkpoint is on disk: the state of a job killed in the middle of its run.
// SMALLDATA_TEST_PACE_US=U: each client sleeps U microseconds per event (a run that lasts,
// for another process to meet it).
// SMALLDATA_TEST_KILL_IN_FLUSH=1: no checkpoint but the close's (checkpoint_seconds 1000,
// so the file layout does not depend on timing); once a writer's close in done() has begun
// (detail::checkpoint_hook stage 2), the process ends (_exit) as soon as HDF5 writes the
// file's superblock with an end of file beyond the bytes the file has (the unused rest of a
// metadata block), before the flush extends the file to it: the state of a job killed
// there, a file shorter than its superblock says. HDF5's sec2 driver writes with pwrite(),
// which this program defines (over the C library's) to watch for it.
#include "smalldata.hpp"

#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {
std::string stop_dir;
int stop_servers = 1;
bool exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }
void stop_ordered(int server) noexcept {
    const std::string mine = stop_dir + "/ordered" + std::to_string(server);
    if (FILE* f = std::fopen(mine.c_str(), "w")) std::fclose(f);
    for (int tries = 0; tries < 6000; ++tries) {
        int done = 0;
        for (int k = 0; k < stop_servers; ++k) done += exists(stop_dir + "/ordered" + std::to_string(k));
        if (done == stop_servers) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    _exit(3);
}
int stop_stage = -1;
void stop_flatten(int stage) noexcept {
    if (stage == stop_stage) _exit(3);
}
int kill_after = 0;
void kill_checkpoint(int stage) noexcept {
    static std::atomic<int> taken{0};  // on the write thread or the server's own
    if (stage == 1 && ++taken == kill_after) _exit(3);
}
std::atomic<bool> cut_armed{false};
void arm_cut(int stage) noexcept {
    if (stage == 2) cut_armed = true;
}
}  // namespace

// pwrite() under both names the C library gives it (with _FILE_OFFSET_BITS=64 a call to
// pwrite is one to pwrite64; HDF5's library may call either).
extern "C" ssize_t watched_pwrite(int fd, const void* buf, size_t n, std::int64_t offset) __asm__("pwrite");
extern "C" ssize_t watched_pwrite64(int fd, const void* buf, size_t n, std::int64_t offset) __asm__("pwrite64");
extern "C" ssize_t watched_pwrite(int fd, const void* buf, size_t n, std::int64_t offset) {
    const long r = ::syscall(SYS_pwrite64, fd, buf, n, offset);
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (cut_armed && offset == 0 && n == 48 && r == 48 && std::memcmp(buf, sig, 8) == 0) {
        std::uint64_t eof = 0;  // a version 2 or 3 superblock: its end of file at byte 28
        std::memcpy(&eof, static_cast<const unsigned char*>(buf) + 28, sizeof eof);
        struct stat st;
        if (::fstat(fd, &st) == 0 && eof > static_cast<std::uint64_t>(st.st_size)) _exit(3);
    }
    return static_cast<ssize_t>(r);
}
extern "C" ssize_t watched_pwrite64(int fd, const void* buf, size_t n, std::int64_t offset) {
    return watched_pwrite(fd, buf, n, offset);
}

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s OUTPUT.h5 [EVENTS]\n", argv[0]);
        return 2;
    }
    const std::int64_t n = argc > 2 ? std::atoll(argv[2]) : 20000;
    try {
        MPI_Init(&argc, &argv);
        int world = 1;
        MPI_Comm_size(MPI_COMM_WORLD, &world);
        smalldata::Options opt;
        opt.filename = argv[1];
        opt.servers = world >= 4 ? 2 : 1;
        const char* z = std::getenv("SMALLDATA_TEST_COMPRESSION");
        if (z && std::string(z) == "deflate") opt.compression = smalldata::Compression::deflate(1);
        opt.time_order = std::getenv("SMALLDATA_TEST_TIME_ORDER") != nullptr;
        if (const char* d = std::getenv("SMALLDATA_TEST_STOP_ORDERED")) {
            stop_dir = d;
            stop_servers = opt.servers;
            smalldata::detail::order_hook = stop_ordered;
            // One server would merge its clients' streams and write its part in order at
            // once; with no room for that merge it rewrites the part in done(), as here wanted.
            opt.cache_memory = std::size_t(4) << 20;
        }
        if (std::getenv("SMALLDATA_TEST_SMALL_CELLS")) {
            smalldata::detail::cell_min_events = 1;
            smalldata::detail::cell_batches = 1;
            smalldata::detail::join_cells_per_mapping = 2;
            opt.batch_size = 100;
        }
        opt.self_contained = std::getenv("SMALLDATA_TEST_SELF_CONTAINED") != nullptr;
        if (const char* st = std::getenv("SMALLDATA_TEST_STOP_FLATTEN")) {
            stop_stage = std::atoi(st);
            smalldata::detail::flatten_hook = stop_flatten;
        }
        if (const char* k = std::getenv("SMALLDATA_TEST_KILL_CHECKPOINT")) {
            kill_after = std::atoi(k);
            opt.checkpoint_seconds = 0.05;
            smalldata::detail::checkpoint_hook = kill_checkpoint;
        }
        if (std::getenv("SMALLDATA_TEST_KILL_IN_FLUSH")) {
            opt.checkpoint_seconds = 1000;
            smalldata::detail::checkpoint_hook = arm_cut;
        }
        const char* pace = std::getenv("SMALLDATA_TEST_PACE_US");
        const int pace_us = pace ? std::atoi(pace) : 0;
        smalldata::SmallData smd(opt);
        std::int64_t mine = 0;
        for (std::int64_t i : smd.share(n)) {
            if (kill_after > 0 && mine % 50 == 49) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            if (pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(pace_us));
            std::array<std::uint16_t, 12> img{};
            for (std::size_t k = 0; k < img.size(); ++k) img[k] = static_cast<std::uint16_t>((i + static_cast<std::int64_t>(k)) % 60000);
            smd.event(i, "x", static_cast<double>(i) * 0.5, "flag", i % 2 == 1, "det/image", smalldata::view(img.data(), {3, 4}));
            if (i % 3 == 0) smd.event(i, "det/unaligned_hits", static_cast<std::int32_t>(i));
            if (i >= n / 2) smd.event(i, "late", static_cast<float>(i));
            if (i % 5 != 0) {  // var_: i % 4 peaks (0 included); none at all in every 5th event
                std::vector<float> px(static_cast<std::size_t>(i % 4));
                for (std::size_t j = 0; j < px.size(); ++j) px[j] = static_cast<float>(i) + static_cast<float>(j);
                smd.event(i, "peaks/var_p/x", px);
            }
            if (i % 7 == 0) smd.event(i, "peaks/var_none/y", std::vector<float>{});  // a field without a row
            ++mine;
        }
        if (smd.summary()) {
            const std::int64_t total = smd.sum(mine);
            smd.save_summary("n_events", total, "note", std::string("write_run"), "hist", std::vector<double>{1, 2, 3});
            smd.save_attribute("", "experiment", "write_run");
            smd.save_attribute("x", "units", "mm");
            smd.save_attribute("det", "geometry", std::array<double, 2>{0.5, -1.5});
            smd.save_attribute("flag", "meaning", std::vector<bool>{true, false});
            smd.save_attribute("n_events", "units", "events");
        }
        smd.done();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "write_run: %s\n", e.what());
        return 1;
    }
    MPI_Finalize();
    return 0;
}
