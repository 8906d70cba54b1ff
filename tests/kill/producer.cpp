// The program the kill test (run_kill.py) kills: every client hands over events as fast as
// it may (throttled), and logs with write(2), every ~10 ms, how far it has got.
//
// usage: producer FILE LOGDIR CHECKPOINT_SECONDS RUN_SECONDS [RATE]
//   layout: from mpiexec -n (1 rank: serial mode; 2: 1 server + 1 client; 6: 2 + 4).
//   Client c hands over the events i = 0, 1, 2, ... with timestamp ts = i * clients + c:
//     "x" = ts * 0.5 (float64), "n" = ts (int64), "v" = float32[16], v[k] = ts % 65536 + k,
//     "var_pk" = ts % 4 rows of ts % 65536 (float32, a var_ field; lengths in "var_pk_len").
//   RATE: events per second per client (default 100000), so that a run of a few seconds
//   stays small on a shared machine.
//   LOGDIR/rank<r>.pid     "<pid> <role> <client or server index>", written before the
//                          constructor (role: serial, server or client)
//   LOGDIR/client<c>.log   lines "<CLOCK_REALTIME seconds> <highest i handed over>",
//                          appended with write(2): what a SIGKILL cannot take back.
//   LOGDIR/client<c>.done  created when the client calls done()
//   LOGDIR/checkpoints.fifo  when the driver made this FIFO and holds it open for reading,
//                          the writers (the serial process, each server) report every
//                          checkpoint through the library's testing hook
//                          (smalldata::detail::checkpoint_hook), one write(2) per line:
//                          "<role> <index> B <ns>" as it begins and "<role> <index> E <ns>"
//                          once its flush has returned; ns: CLOCK_MONOTONIC nanoseconds.
#include "smalldata.hpp"

#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

double realtime() {
    timespec t{};
    clock_gettime(CLOCK_REALTIME, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

void append_line(int fd, const std::string& s) {
    const char* p = s.data();
    std::size_t left = s.size();
    while (left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n <= 0) return;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

// The checkpoint reports: the FIFO and the start of each line ("server 1 "), set before
// the constructor; the hook only formats digits and calls write(2) (async-signal-safe).
int g_report_fd = -1;
char g_report_prefix[32];
std::size_t g_report_prefix_len = 0;

void report_checkpoint(int stage) noexcept {
    if (stage == 2) return;  // the close in done(): not a checkpoint
    char b[96];
    std::size_t n = g_report_prefix_len;
    std::memcpy(b, g_report_prefix, n);
    b[n++] = stage == 0 ? 'B' : 'E';
    b[n++] = ' ';
    timespec t{};
    clock_gettime(CLOCK_MONOTONIC, &t);
    unsigned long long ns = static_cast<unsigned long long>(t.tv_sec) * 1000000000ULL +
                            static_cast<unsigned long long>(t.tv_nsec);
    char d[24];
    std::size_t k = 0;
    do {
        d[k++] = static_cast<char>('0' + static_cast<int>(ns % 10));
        ns /= 10;
    } while (ns != 0);
    while (k > 0) b[n++] = d[--k];
    b[n++] = '\n';
    const ssize_t w = ::write(g_report_fd, b, n);  // a full FIFO drops the line
    (void)w;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: producer FILE LOGDIR CHECKPOINT_SECONDS RUN_SECONDS [RATE]\n");
        return 2;
    }
    const std::string logdir = argv[2];
    const double run_seconds = std::atof(argv[4]);
    const double rate = argc > 5 ? std::atof(argv[5]) : 100000.0;

    smalldata::Options opt;
    int world = 1;
    MPI_Init(&argc, &argv);  // the layout follows the world size: 6 ranks or more, 2 servers
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    opt.servers = world >= 6 ? 2 : 1;
    opt.filename = argv[1];
    opt.checkpoint_seconds = std::atof(argv[3]);
    const char* z = std::getenv("SMALLDATA_TEST_COMPRESSION");  // run_kill.py's compressed layouts
    if (z && std::string(z) == "deflate") opt.compression = smalldata::Compression::deflate(1);
    {  // before the constructor, which a server does not leave until its clients are done
        int rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        const bool server = world > 1 && rank < opt.servers;
        const std::string what = world == 1 ? "serial 0"
                                 : server   ? "server " + std::to_string(rank)
                                            : "client " + std::to_string(rank - opt.servers);
        const std::string pidfile = logdir + "/rank" + std::to_string(rank) + ".pid";
        const int fd = ::open(pidfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            append_line(fd, std::to_string(::getpid()) + " " + what + "\n");
            ::close(fd);
        }
        if (world == 1 || server) {  // the writers: report checkpoints if the driver listens
            const std::string fifo = logdir + "/checkpoints.fifo";
            g_report_fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // ENXIO with no reader
            if (g_report_fd >= 0 && what.size() + 1 < sizeof g_report_prefix) {
                ::signal(SIGPIPE, SIG_IGN);  // a reader gone: write(2) fails, the run goes on
                std::memcpy(g_report_prefix, what.data(), what.size());
                g_report_prefix[what.size()] = ' ';
                g_report_prefix_len = what.size() + 1;
                smalldata::detail::checkpoint_hook = report_checkpoint;
            }
        }
    }
    smalldata::SmallData smd(opt);

    // Servers return from the constructor when their clients are done; only clients
    // (and the serial process) get here with events to give.
    if (smd.summary()) {
        const int c = smd.client_index() < 0 ? 0 : smd.client_index();
        const std::int64_t clients = smd.client_count();
        const std::string log = logdir + "/client" + std::to_string(c) + ".log";
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        const double t0 = realtime();
        double next_log = t0;
        std::int64_t i = 0;
        std::int64_t handed = -1;
        const std::int64_t step = 64;  // events between clock reads
        std::vector<float> pk;
        for (;;) {
            const double t = realtime();
            if (t >= next_log) {
                char b[64];
                std::snprintf(b, sizeof b, "%.6f %lld\n", t, static_cast<long long>(handed));
                append_line(fd, b);
                next_log = t + 0.01;
            }
            if (t - t0 >= run_seconds) break;
            // Throttle: no further ahead than `rate` events per second allow.
            const double allowed = (t - t0) * rate;
            if (static_cast<double>(i) > allowed) {
                std::this_thread::sleep_for(std::chrono::microseconds(200));
                continue;
            }
            for (std::int64_t k = 0; k < step; ++k, ++i) {
                const std::int64_t ts = i * clients + c;
                std::array<float, 16> v;
                for (std::size_t j = 0; j < v.size(); ++j) v[j] = static_cast<float>(ts % 65536) + static_cast<float>(j);
                pk.assign(static_cast<std::size_t>(ts % 4), static_cast<float>(ts % 65536));  // var_: 0-3 rows
                smd.event(ts, "x", static_cast<double>(ts) * 0.5, "n", ts, "v", v, "var_pk", pk);
                handed = i;
            }
        }
        char b[64];
        std::snprintf(b, sizeof b, "%.6f %lld\n", realtime(), static_cast<long long>(handed));
        append_line(fd, b);
        ::close(fd);
        // Tells the driver that done() starts now (for kills during the flush and the join).
        const std::string marker = logdir + "/client" + std::to_string(c) + ".done";
        ::close(::open(marker.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
    }
    smd.done();
    MPI_Finalize();
    return 0;
}
