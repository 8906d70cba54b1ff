// baselines.cpp - reference points for smalldata's benchmark (bench/bench.cpp).
//
//   baselines MODE [--workload ref|large] [--events N] [--out PATH] [--batch-size N]
//                  [--size-mib N]
//
// Modes (one MPI program; run it alone or under mpiexec):
//   fpr     file per rank: rank r writes `<out>.rank<r>.h5` with serial HDF5, one chunked,
//           extendable dataset per field of the workload, events split round-robin over the
//           ranks, batch-size events buffered per field in column buffers allocated once,
//           appended with H5Dset_extent + hyperslab H5Dwrite. No communication but the
//           final timing reduction: the no-aggregation bound.
//   phdf5   parallel HDF5: every rank writes one shared file `<out>.h5` collectively
//           through MPI-IO. In each batch round the dataset grows by ranks * batch-size
//           rows and rank r writes the contiguous rows [round*R*B + r*B, +B). Needs an
//           HDF5 built with H5_HAVE_PARALLEL; with a serial HDF5 it prints a `skipped:` line
//           and exits 0.
//   memcpy  memcpy bandwidth on a warmed-up 256 MiB buffer, best of 5 (rank 0 only).
//           GB/s counts the bytes copied (each is read once and written once).
//   fswrite write(2) bandwidth of the file system holding <out>: a --size-mib file
//           (default 1024) written in 1 MiB blocks, twice ending at close (page cache:
//           the better of the two passes, as one pass is often slowed by write-back of
//           earlier files), once ending with fdatasync, and once into a file whose space
//           was reserved first with fallocate(2) (Linux; "prealloc"). Each pass writes a
//           fresh file that is deleted afterwards (rank 0 only).
//
// Workloads (identical to bench.cpp):
//   ref   - timestamp int64; doubles a..h; int64 n1, n2; det/proj float[100];
//           det/roi int16[4]  (496 bytes of payload)
//   large - timestamp int64; det/image uint16[256][256]  (131080 bytes)
//
// Files match what smalldata writes: little-endian file types, the library's fill values,
// the library's chunking rule (chunk rows = largest power of two <= min(1 MiB / row bytes,
// batch rows), no more than the rows of the first write), and libver bounds v18..v110.
// The default batch is smalldata's cache: 8192 rows, fewer if one field's buffer would
// exceed 32 MiB (large: 256 rows).
//
// Timing: the clock starts on every rank after MPI_Init and a barrier, just before the
// file is created, and stops when the rank has closed its file; wall_s is the maximum over
// ranks. bench.cpp's wall_s also counts MPI_Init (inside SmallData's constructor), so the
// time MPI_Init took here is printed as mpi_init_s for comparison.
//
// Output: one line of key=value pairs on rank 0, like bench.cpp.
// Keep the deprecated MPI C++ bindings out (a parallel hdf5.h includes mpi.h too).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#include <hdf5.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kChunkBytes = std::size_t(1) << 20;   // smalldata::Options::chunk_bytes
constexpr std::size_t kCacheRows = 8192;                    // smalldata::Options::cache_size
constexpr std::size_t kCacheBytes = std::size_t(32) << 20;  // smalldata::Options::cache_bytes

int g_rank = 0, g_size = 1;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double peak_rss_mib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_maxrss) / 1024.0;
}

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "baselines[rank %d]: %s\n", g_rank, what.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::exit(1);
}

hid_t h5(hid_t id, const char* what) {
    if (id < 0) die(std::string("HDF5 call failed: ") + what);
    return id;
}
void h5e(herr_t e, const char* what) {
    if (e < 0) die(std::string("HDF5 call failed: ") + what);
}

struct Args {
    std::string mode;
    std::string workload = "ref";
    std::int64_t events = 1000000;
    std::string out = "baselines";
    std::size_t batch = 0;  // 0: smalldata's cache rows (see top)
    std::size_t size_mib = 1024;
};

void usage() {
    std::fprintf(stderr,
                 "usage: baselines fpr|phdf5|memcpy|fswrite [--workload ref|large] [--events N] [--out PATH]\n"
                 "                 [--batch-size N] [--size-mib N]\n");
}

Args parse(int argc, char** argv) {
    Args a;
    if (argc < 2) {
        usage();
        std::exit(2);
    }
    a.mode = argv[1];
    for (int i = 2; i < argc; ++i) {
        const std::string k = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "baselines: %s needs a value\n", k.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (k == "--workload") a.workload = next();
        else if (k == "--events") a.events = std::stoll(next());
        else if (k == "--out") a.out = next();
        else if (k == "--batch-size") a.batch = std::stoul(next());
        else if (k == "--size-mib") a.size_mib = std::stoul(next());
        else {
            std::fprintf(stderr, "baselines: unknown argument %s\n", k.c_str());
            usage();
            std::exit(2);
        }
    }
    if (a.mode != "fpr" && a.mode != "phdf5" && a.mode != "memcpy" && a.mode != "fswrite") {
        usage();
        std::exit(2);
    }
    if (a.workload != "ref" && a.workload != "large") {
        std::fprintf(stderr, "baselines: --workload is ref or large\n");
        std::exit(2);
    }
    if (a.events < 0 || a.size_mib < 1) {
        std::fprintf(stderr, "baselines: --events must be >= 0 and --size-mib >= 1\n");
        std::exit(2);
    }
    return a;
}

// ---------------------------------------------------------------------------------------
// Workload: fields as column buffers of `batch` rows, filled the way bench.cpp makes events.

enum class T { i16, i64, u16, f32, f64 };

struct Column {
    std::string name;
    T type;
    int rank = 0;  // rank of one value (0 = scalar)
    hsize_t dims[2] = {1, 1};
    std::size_t row_bytes = 0;
    std::vector<unsigned char> buf;  // batch * row_bytes, allocated and touched once
    hid_t dset = -1;
    hsize_t chunk_rows = 1;
    unsigned char* row(std::size_t k) { return buf.data() + k * row_bytes; }
};

hid_t file_type(T t) {
    switch (t) {
        case T::i16: return H5T_STD_I16LE;
        case T::i64: return H5T_STD_I64LE;
        case T::u16: return H5T_STD_U16LE;
        case T::f32: return H5T_IEEE_F32LE;
        case T::f64: return H5T_IEEE_F64LE;
    }
    return -1;
}
hid_t mem_type(T t) {
    switch (t) {
        case T::i16: return H5T_NATIVE_INT16;
        case T::i64: return H5T_NATIVE_INT64;
        case T::u16: return H5T_NATIVE_UINT16;
        case T::f32: return H5T_NATIVE_FLOAT;
        case T::f64: return H5T_NATIVE_DOUBLE;
    }
    return -1;
}
std::size_t type_size(T t) {
    switch (t) {
        case T::i16: case T::u16: return 2;
        case T::f32: return 4;
        case T::i64: case T::f64: return 8;
    }
    return 0;
}
// smalldata's fill values (fill_bytes in smalldata.hpp).
std::array<unsigned char, 8> fill_value(T t) {
    std::array<unsigned char, 8> b{};
    auto put = [&](auto v) { std::memcpy(b.data(), &v, sizeof(v)); };
    switch (t) {
        case T::i16: put(std::numeric_limits<std::int16_t>::min()); break;
        case T::i64: put(std::int64_t(-99999)); break;
        case T::u16: put(std::numeric_limits<std::uint16_t>::max()); break;
        case T::f32: put(std::numeric_limits<float>::quiet_NaN()); break;
        case T::f64: put(std::numeric_limits<double>::quiet_NaN()); break;
    }
    return b;
}

Column col(const char* name, T t, std::initializer_list<hsize_t> shape = {}) {
    Column c;
    c.name = name;
    c.type = t;
    c.rank = static_cast<int>(shape.size());
    std::size_t n = 1, i = 0;
    for (hsize_t d : shape) {
        c.dims[i++] = d;
        n *= static_cast<std::size_t>(d);
    }
    c.row_bytes = n * type_size(t);
    return c;
}

struct Workload {
    bool ref = true;
    std::vector<Column> cols;
    std::size_t payload = 0;  // bytes per event
    // Per-rank state mutated per event, as in bench.cpp.
    std::array<float, 100> proj{};
    std::array<std::int16_t, 4> roi{};
    std::vector<std::uint16_t> image;

    explicit Workload(const std::string& w) : ref(w == "ref") {
        cols.push_back(col("timestamp", T::i64));
        if (ref) {
            for (const char* n : {"a", "b", "c", "d", "e", "f", "g", "h"}) cols.push_back(col(n, T::f64));
            cols.push_back(col("n1", T::i64));
            cols.push_back(col("n2", T::i64));
            cols.push_back(col("det/proj", T::f32, {100}));
            cols.push_back(col("det/roi", T::i16, {4}));
        } else {
            cols.push_back(col("det/image", T::u16, {256, 256}));
            image.assign(256 * 256, 0);
        }
        for (const Column& c : cols) payload += c.row_bytes;
    }

    std::size_t default_batch() const {
        std::size_t widest = 1;
        for (const Column& c : cols) widest = std::max(widest, c.row_bytes);
        return std::max<std::size_t>(1, std::min(kCacheRows, kCacheBytes / widest));
    }

    void allocate(std::size_t batch) {
        for (Column& c : cols) {
            c.buf.assign(batch * c.row_bytes, 0);  // touches every page now, not in the loop
        }
    }

    // Event i into row k of every column.
    void fill(std::size_t k, std::int64_t i) {
        std::memcpy(cols[0].row(k), &i, 8);
        const double x = static_cast<double>(i);
        if (ref) {
            for (int j = 0; j < 8; ++j) {
                const double v = x + j;
                std::memcpy(cols[static_cast<std::size_t>(1 + j)].row(k), &v, 8);
            }
            const std::int64_t n2 = -i;
            std::memcpy(cols[9].row(k), &i, 8);
            std::memcpy(cols[10].row(k), &n2, 8);
            proj[static_cast<std::size_t>(i % 100)] = static_cast<float>(x);
            roi[static_cast<std::size_t>(i % 4)] = static_cast<std::int16_t>(i % 30000);
            std::memcpy(cols[11].row(k), proj.data(), sizeof(proj));
            std::memcpy(cols[12].row(k), roi.data(), sizeof(roi));
        } else {
            image[static_cast<std::size_t>(i % 65536)] = static_cast<std::uint16_t>(i);
            std::memcpy(cols[1].row(k), image.data(), image.size() * 2);
        }
    }
};

std::uint64_t pow2_floor(std::uint64_t v) {
    std::uint64_t p = 1;
    while (p * 2 <= v) p *= 2;
    return p;
}
std::uint64_t pow2_ceil(std::uint64_t v) {
    std::uint64_t p = 1;
    while (p < v) p *= 2;
    return p;
}

hid_t make_fapl() {
    hid_t fapl = h5(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate(fapl)");
#if H5_VERSION_GE(1, 10, 0)
    h5e(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110), "H5Pset_libver_bounds");
#endif
    return fapl;
}

// Creates every column's dataset: extendable along the event axis, chunked like smalldata.
// first_write_rows: rows of the first write (caps the chunk as smalldata does).
void create_datasets(hid_t file, Workload& w, std::size_t batch, std::uint64_t first_write_rows, bool parallel) {
    hid_t lcpl = h5(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate(lcpl)");
    h5e(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
    for (Column& c : w.cols) {
        std::uint64_t rows = pow2_floor(std::max<std::uint64_t>(1, std::min<std::uint64_t>(kChunkBytes / c.row_bytes, batch)));
        rows = std::min(rows, pow2_ceil(std::max<std::uint64_t>(1, first_write_rows)));
        c.chunk_rows = rows;
        hsize_t dims[3] = {0, c.dims[0], c.dims[1]}, maxd[3] = {H5S_UNLIMITED, c.dims[0], c.dims[1]};
        hsize_t chunk[3] = {rows, c.dims[0], c.dims[1]};
        hid_t space = h5(H5Screate_simple(c.rank + 1, dims, maxd), "H5Screate_simple");
        hid_t dcpl = h5(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate(dcpl)");
        h5e(H5Pset_chunk(dcpl, c.rank + 1, chunk), "H5Pset_chunk");
        const auto fill = fill_value(c.type);
        h5e(H5Pset_fill_value(dcpl, mem_type(c.type), fill.data()), "H5Pset_fill_value");
        // Parallel HDF5 allocates chunks early; without this every extension would first
        // write fill values over the rows about to be written.
        if (parallel) h5e(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "H5Pset_fill_time");
        c.dset = h5(H5Dcreate2(file, c.name.c_str(), file_type(c.type), space, lcpl, dcpl, H5P_DEFAULT),
                    ("H5Dcreate2 " + c.name).c_str());
        H5Pclose(dcpl);
        H5Sclose(space);
    }
    H5Pclose(lcpl);
}

// Writes rows [k0, k0+n) of every column buffer to file rows [start, start+n), after
// extending the dataset to `extent` rows. n may be 0 (collective calls in phdf5).
void write_rows(Workload& w, hsize_t extent, hsize_t start, std::size_t n, hid_t dxpl) {
    for (Column& c : w.cols) {
        hsize_t ext[3] = {extent, c.dims[0], c.dims[1]};
        h5e(H5Dset_extent(c.dset, ext), "H5Dset_extent");
        hid_t fspace = h5(H5Dget_space(c.dset), "H5Dget_space");
        hsize_t mdims[3] = {std::max<hsize_t>(1, n), c.dims[0], c.dims[1]};
        hid_t mspace = h5(H5Screate_simple(c.rank + 1, mdims, nullptr), "H5Screate_simple");
        if (n > 0) {
            hsize_t off[3] = {start, 0, 0}, cnt[3] = {n, c.dims[0], c.dims[1]};
            h5e(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, nullptr, cnt, nullptr), "H5Sselect_hyperslab");
        } else {
            h5e(H5Sselect_none(fspace), "H5Sselect_none");
            h5e(H5Sselect_none(mspace), "H5Sselect_none");
        }
        h5e(H5Dwrite(c.dset, mem_type(c.type), mspace, fspace, dxpl, c.buf.data()), ("H5Dwrite " + c.name).c_str());
        H5Sclose(mspace);
        H5Sclose(fspace);
    }
}

void close_datasets(Workload& w) {
    for (Column& c : w.cols) {
        if (c.dset >= 0) h5e(H5Dclose(c.dset), "H5Dclose");
        c.dset = -1;
    }
}

// Reduces per-rank figures (max over ranks) and prints the result line on rank 0.
void report(const Args& a, const Workload& w, std::size_t batch, double elapsed, double loop_ns, double write_s,
            double mpi_init_s) {
    double mine[5] = {elapsed, loop_ns, write_s, peak_rss_mib(), mpi_init_s}, maxv[5] = {0, 0, 0, 0, 0};
    MPI_Reduce(mine, maxv, 5, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (g_rank != 0) return;
    const double evs = maxv[0] > 0 ? static_cast<double>(a.events) / maxv[0] : 0;
    std::printf("mode=%s workload=%s events=%lld ranks=%d batch_size=%zu wall_s=%.3f events_per_s=%.0f "
                "payload_MB_per_s=%.1f ns_per_event=%.0f write_s=%.3f peak_rss_MiB=%.1f mpi_init_s=%.3f\n",
                a.mode.c_str(), a.workload.c_str(), static_cast<long long>(a.events), g_size, batch, maxv[0], evs,
                evs * static_cast<double>(w.payload) / 1e6, maxv[1], maxv[2], maxv[3], maxv[4]);
    std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------
int run_fpr(const Args& a, double mpi_init_s) {
    Workload w(a.workload);
    const std::size_t batch = a.batch ? a.batch : w.default_batch();
    w.allocate(batch);
    const std::int64_t mine = a.events > g_rank ? (a.events - g_rank + g_size - 1) / g_size : 0;
    const std::string path = a.out + ".rank" + std::to_string(g_rank) + ".h5";

    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = now();
    hid_t fapl = make_fapl();
    hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) die("cannot create " + path);
    H5Pclose(fapl);
    create_datasets(file, w, batch, std::min<std::uint64_t>(batch, static_cast<std::uint64_t>(mine)), false);

    double write_s = 0;
    hsize_t rows = 0;
    std::size_t k = 0;
    auto flush = [&]() {
        if (k == 0) return;
        const double tw = now();
        write_rows(w, rows + k, rows, k, H5P_DEFAULT);
        rows += k;
        k = 0;
        write_s += now() - tw;
    };
    const double tl = now();
    for (std::int64_t i = g_rank; i < a.events; i += g_size) {
        w.fill(k, i);
        if (++k == batch) flush();
    }
    flush();
    const double loop = now() - tl;
    close_datasets(w);
    h5e(H5Fclose(file), "H5Fclose");
    const double elapsed = now() - t0;
    if (rows != static_cast<hsize_t>(mine)) die("wrote the wrong number of rows");
    report(a, w, batch, elapsed, mine ? loop / static_cast<double>(mine) * 1e9 : 0, write_s, mpi_init_s);
    return 0;
}

// ---------------------------------------------------------------------------------------
int run_phdf5(const Args& a, double mpi_init_s) {
#ifdef H5_HAVE_PARALLEL
    Workload w(a.workload);
    const std::size_t batch = a.batch ? a.batch : w.default_batch();
    w.allocate(batch);
    const std::string path = a.out + ".h5";
    const hsize_t n = static_cast<hsize_t>(a.events);
    const hsize_t round_rows = static_cast<hsize_t>(batch) * static_cast<hsize_t>(g_size);

    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = now();
    hid_t fapl = make_fapl();
    h5e(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL), "H5Pset_fapl_mpio");
#if H5_VERSION_GE(1, 10, 0)
    h5e(H5Pset_all_coll_metadata_ops(fapl, true), "H5Pset_all_coll_metadata_ops");
    h5e(H5Pset_coll_metadata_write(fapl, true), "H5Pset_coll_metadata_write");
#endif
    hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) die("cannot create " + path);
    H5Pclose(fapl);
    create_datasets(file, w, batch, std::min<std::uint64_t>(batch, n), true);
    hid_t dxpl = h5(H5Pcreate(H5P_DATASET_XFER), "H5Pcreate(dxpl)");
    h5e(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio");

    double write_s = 0;
    std::int64_t mine = 0;
    const double tl = now();
    for (hsize_t base = 0; base < n; base += round_rows) {
        // This rank's block of the round: rows [first, first + count).
        const hsize_t first = base + static_cast<hsize_t>(g_rank) * batch;
        const hsize_t count = first < n ? std::min<hsize_t>(batch, n - first) : 0;
        for (hsize_t k = 0; k < count; ++k) w.fill(static_cast<std::size_t>(k), static_cast<std::int64_t>(first + k));
        mine += static_cast<std::int64_t>(count);
        const double tw = now();
        write_rows(w, std::min(n, base + round_rows), first, static_cast<std::size_t>(count), dxpl);
        write_s += now() - tw;
    }
    const double loop = now() - tl;
    H5Pclose(dxpl);
    close_datasets(w);
    h5e(H5Fclose(file), "H5Fclose");
    const double elapsed = now() - t0;
    report(a, w, batch, elapsed, mine ? loop / static_cast<double>(mine) * 1e9 : 0, write_s, mpi_init_s);
    return 0;
#else
    (void)mpi_init_s;
    if (g_rank == 0) {
        std::printf("mode=phdf5 workload=%s skipped: HDF5 is not a parallel build (install libhdf5-openmpi-dev)\n",
                    a.workload.c_str());
        std::fflush(stdout);
    }
    return 0;
#endif
}

// ---------------------------------------------------------------------------------------
int run_memcpy() {
    if (g_rank != 0) return 0;
    const std::size_t n = std::size_t(256) << 20;
    std::vector<unsigned char> src(n), dst(n);
    std::memset(src.data(), 0x5a, n);  // first touch outside the timing
    std::memset(dst.data(), 0xa5, n);
    std::memcpy(dst.data(), src.data(), n);  // warm-up
    double best = 1e30;
    for (int r = 0; r < 5; ++r) {
        src[static_cast<std::size_t>(r) * 4096] = static_cast<unsigned char>(r);
        const double t = now();
        std::memcpy(dst.data(), src.data(), n);
        best = std::min(best, now() - t);
        if (dst[static_cast<std::size_t>(r) * 4096] != static_cast<unsigned char>(r)) die("memcpy check failed");
    }
    std::printf("mode=memcpy bytes=%zu best_s=%.4f GB_per_s=%.2f peak_rss_MiB=%.1f\n", n, best,
                static_cast<double>(n) / best / 1e9, peak_rss_mib());
    std::fflush(stdout);
    return 0;
}

// ---------------------------------------------------------------------------------------
// One pass: create `path`, optionally reserve its space, write `blocks` MiB, optionally
// fdatasync, close, unlink. Returns {seconds to the end of close, seconds in fdatasync};
// {-1, 0} when the space cannot be reserved on this file system.
std::pair<double, double> write_pass(const std::string& path, const std::vector<unsigned char>& block, std::size_t blocks,
                                     bool sync, bool prealloc = false) {
    ::unlink(path.c_str());
    const double t0 = now();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("cannot create " + path + ": " + std::strerror(errno));
    if (prealloc) {
#if defined(__linux__)
        const bool ok = ::fallocate(fd, 0, 0, static_cast<off_t>(blocks * block.size())) == 0;
#else
        const bool ok = false;
#endif
        if (!ok) {
            ::close(fd);
            ::unlink(path.c_str());
            return {-1, 0};
        }
    }
    for (std::size_t b = 0; b < blocks; ++b) {
        std::size_t done = 0;
        while (done < block.size()) {
            const ssize_t r = ::write(fd, block.data() + done, block.size() - done);
            if (r < 0) {
                if (errno == EINTR) continue;
                die("write " + path + ": " + std::strerror(errno));
            }
            done += static_cast<std::size_t>(r);
        }
    }
    double sync_s = 0;
    if (sync) {
        const double ts = now();
        if (::fdatasync(fd) != 0) die("fdatasync " + path + ": " + std::strerror(errno));
        sync_s = now() - ts;
    }
    if (::close(fd) != 0) die("close " + path + ": " + std::strerror(errno));
    const double t = now() - t0;
    ::unlink(path.c_str());
    return {t, sync_s};
}

int run_fswrite(const Args& a) {
    if (g_rank != 0) return 0;
    const std::string path = a.out + ".fswrite.tmp";
    std::vector<unsigned char> block(std::size_t(1) << 20);
    for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<unsigned char>(i * 131 + 7);
    const std::size_t blocks = a.size_mib;
    const double bytes = static_cast<double>(blocks) * static_cast<double>(block.size());
    const auto first = write_pass(path, block, blocks, false);
    const auto second = write_pass(path, block, blocks, false);
    const auto synced = write_pass(path, block, blocks, true);
    const auto reserved = write_pass(path, block, blocks, false, true);
    const double cached = std::min(first.first, second.first);
    std::string dir = a.out;
    const auto slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : dir.substr(0, slash ? slash : 1);
    std::printf("mode=fswrite dir=%s bytes=%.0f pass1_MB_per_s=%.0f pass2_MB_per_s=%.0f pagecache_MB_per_s=%.0f "
                "fdatasync_MB_per_s=%.0f fdatasync_s=%.3f prealloc_MB_per_s=%.0f\n",
                dir.c_str(), bytes, bytes / first.first / 1e6, bytes / second.first / 1e6, bytes / cached / 1e6,
                bytes / synced.first / 1e6, synced.second, reserved.first > 0 ? bytes / reserved.first / 1e6 : 0.0);
    std::fflush(stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Args a = parse(argc, argv);
    const double ti = now();
    MPI_Init(&argc, &argv);
    const double mpi_init_s = now() - ti;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    int rc = 0;
    if (a.mode == "fpr") rc = run_fpr(a, mpi_init_s);
    else if (a.mode == "phdf5") rc = run_phdf5(a, mpi_init_s);
    else if (a.mode == "memcpy") rc = run_memcpy();
    else rc = run_fswrite(a);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
