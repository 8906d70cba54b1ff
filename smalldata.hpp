// smalldata.hpp - turn an event loop into an MPI program that writes one HDF5 file.
// Version 0.1.0.  SPDX-License-Identifier: MIT  (full text at the end of this file)
//
// QUICK START
//
//   In exactly ONE .cpp file of your program (or compile smalldata.cpp):
//
//       #define SMALLDATA_IMPLEMENTATION
//       #include "smalldata.hpp"
//
//   Everywhere else just #include "smalldata.hpp". Then:
//
//       smalldata::Options opt;
//       opt.servers  = 2;                        // writer ranks (parallel mode)
//       opt.filename = "my.h5";
//       smalldata::SmallData smd(opt);           // server ranks return from here at the end
//       for (std::int64_t i : smd.share(n_events)) {   // this client's share of the events
//           double sum = analyse(i);
//           smd.event(i, "mydata", sum, "det/roi", std::array<int16_t, 4>{1, 2, 3, 4});
//       }
//       if (smd.summary()) smd.save_summary("n_events", smd.sum(std::int64_t(1)));
//       smd.save_attribute("mydata", "units", "keV");   // an HDF5 attribute of a dataset
//       smd.done();
//
//   Build against MPI and the HDF5 C library; run with `mpiexec -n 6 ./prog` (parallel
//   mode) or `./prog` (one process: serial mode, same output layout, no part files).
//
// TABLE OF CONTENTS            (grep for the marker in brackets)
//
//   Public API
//     1. Configuration and includes                 [>>config]
//     2. Types, shapes, views, errors               [>>types]
//     3. Options and roles                          [>>options]
//     4. Event: what a callback sees                [>>event]
//     5. SmallData: the user's object               [>>smalldata]
//   Internal (smalldata::detail), needed by the templates above
//     6. Value traits: C++ type -> dtype/shape      [>>traits]
//     7. Packer: event() -> binary batch (hot path) [>>packer]
//     8. SmallData templates                        [>>templates]
//   Implementation (only with SMALLDATA_IMPLEMENTATION)
//     9.  Errors, logging, validation               [>>impl-errors]
//     10. MPI environment, requests, gentle waits   [>>impl-mpi]
//     11. HDF5 handles and types                    [>>impl-hdf5]
//     12. Packer slow paths                         [>>impl-packer]
//     13. Writer: decoded events -> HDF5 columns    [>>impl-writer]
//     14. Decoder: batch -> events -> writer        [>>impl-decoder]
//     15. Transport: sender (routed), shm, server   [>>impl-transport]
//     16. Join: part files -> virtual datasets      [>>impl-join]
//     17. Recovery: crashed files, checks           [>>impl-recover]
//     18. Flatten: final file -> one file           [>>impl-flatten]
//     19. Order: time order at done() (fallback)    [>>impl-order]
//     20. Failure: abort protocol                   [>>impl-abort]
//     21. Progress lines and the run report         [>>impl-report]
//     22. SmallData out-of-line API                 [>>impl-api]
//   License                                         [>>license]
//
// DOES NOT
//   - sort events by timestamp across clients unless Options::time_order asks it (the
//     servers merge their streams, routed by a time grid with several servers: sections
//     14, 15; else at done(), section 19): otherwise each part file holds events in
//     arrival order, and events of one client stay in their timestamp order.
//   - support heterogeneous clusters (mixed byte orders between ranks).
//   - make SmallData thread-safe: call it from one thread per rank.
//   - keep more than one SmallData alive at once per process in parallel mode.
//   - keep events handed over in the last checkpoint_seconds when the process is killed
//     (SIGKILL, the out-of-memory killer): what is older is on disk, in files that open
//     again (`smalldata recover`); summaries and attributes are only written by done().
//     Nor does it survive the loss of the machine (power, kernel): files are not fsync'ed.
//   - take checkpoints while a serial program or a client stops calling event(): what it
//     handed over last waits for its next event() call or done(). Servers checkpoint on
//     their own, busy or idle.
//   - accept one value larger than 2 GiB, or one event larger than one message (2 GiB):
//     Errc::usage, naming the field.
//   - accept names with a NUL byte, an empty, '.' or '..' component, a leading or
//     trailing '/', more than 65535 bytes, or "timestamp" as first component: Errc::name.
//     Any other byte is fine ('%' included).
//   - replace a file at a part path that is not a part of the same final file (another
//     final file with the same stem, a foreign file, a part left by a crashed run, kept
//     for recovery): Errc::option before any event, naming both files.
//   - replace, remove or recover a file another run is writing (two runs given the same
//     filename at once): the writer's claim on its file (section 13, WriteClaim) makes
//     the second run Errc::option, naming the file; nor write a final or serial file over
//     another run's part, or over a file its writer never closed (a crashed run, kept for
//     `smalldata recover`).
// CONCEPTS
//   Roles.  With one rank in Options::comm the library runs in serial mode. Otherwise the
//     first `servers` ranks are servers (they write), the next `clients` ranks are clients
//     (they run the user's loop), the rest are `other`. Client c sends to server
//     c % servers. Server ranks return from the constructor when all their clients are
//     done; their event() calls then do nothing. So: no collective over comm between the
//     constructor and done() (the servers would not join it until the clients are done).
//   Batches.  event() appends to a binary batch (field names are sent once per stream and
//     referred to by ids). A batch leaves when it holds batch_size events or would exceed
//     batch_bytes. A client on its server's node copies it into one of its send_buffers
//     slots of a shared-memory window and sends a 32-byte notice; the server decodes it in
//     place and frees the slot. Otherwise (other node, or shared_memory off) the batch
//     goes with MPI_Isend from a pool of send_buffers buffers. With every slot or buffer
//     in flight the client waits (back-pressure, bounded memory).
//   Writer.  A server decodes batches into per-field column caches (cache_size rows) and
//     appends them to its part file `<stem>_part<k>.h5` as whole raw chunks; rows of
//     64 KiB or more (images) go to the file straight from the batch. With
//     Options::compression the chunks go through HDF5's filters instead, compressed on the
//     write thread (images then go through the cache too). Aligned fields have
//     one row per event (fill values for missing rows); fields whose last path component
//     starts with `unaligned_` have only the rows given. A field with a component starting
//     with `var_` takes any number of rows per event (concatenated); its group's lengths
//     are the aligned int64 field `<path to that component>_len` (fill 0), which no batch
//     carries: the server takes each event's value from the group's first row count.
//     Every field of a group has as many rows as those lengths add up to (fill rows where
//     an event gave others of its group but not it, or before its first event).
//     Serial mode runs the same writer
//     in-process; without callbacks event() feeds its columns directly (no batch). Full
//     caches may be written by a helper thread (write_thread); disk space is reserved
//     ahead of the writes and given back at close (preallocate).
//   Crashes.  Writer files are written in HDF5's SWMR mode, valid on disk at every
//     instant. Every checkpoint_seconds x 0.4 a writer writes its caches and flushes the
//     file, and clients ship events that waited that long, so every event handed over more
//     than checkpoint_seconds ago is on disk. After a kill, `smalldata recover FILE` makes
//     FILE whole again from what is on disk. SIGTERM and SIGINT (where the program has no
//     handler of its own; else request_stop()) end the run at the next event(): done()
//     runs, the files are complete, and the process then ends by that signal.
//   Join.  done() gives `filename` one virtual dataset per field concatenating the parts
//     (named relative to the final file), plus the summary datasets. Runs never mix: each
//     part carries its run's token, a rerun removes its old final file before any part is
//     truncated, and the final file is built under a temporary name and renamed into
//     place when complete (section 16). With Options::self_contained that virtual file is
//     copied into `filename` as ordinary chunked datasets and the parts are removed
//     (section 18, which `smalldata flatten` uses too). With Options::time_order the
//     servers first sort the events among themselves and each rewrites its part as one
//     time range, so the final file is in timestamp order (section 19).
//   Summaries and attributes.  What save_summary() and save_attribute() are given is held
//     in memory by client 0 (or the serial process) and written into the final file by
//     done(): a summary as a dataset beside the fields, an attribute on the object its
//     path names (a field, in parallel mode its virtual dataset; a group; a summary; ""
//     the root group). Other clients' calls are ignored. The same name (for an attribute:
//     path and name) saved again replaces the value. With no file (an empty filename)
//     done() warns, naming what was not saved.
//
// OPTIONS   (all in smalldata::Options; see section 3 for defaults)
//   servers, clients, filename, batch_size, cache_size, callbacks, comm    (API contract)
//   batch_bytes, send_buffers, recv_buffers, shared_memory, cache_bytes,
//   chunk_bytes, idle_sleep_max_us, abort_grace_ms, abort_close_ms, preallocate,
//   write_thread, cache_memory, checkpoint_seconds (tuning); compression (of the
//   per-event datasets: deflate + shuffle, or any HDF5 filter such as the LZ4 plugin;
//   section 3, struct Compression); self_contained (parallel mode: done() copies the
//   parts' data into the final file and removes the parts; no effect in serial mode);
//   time_order (parallel mode: done() sorts the events by timestamp over the servers);
//   progress_seconds, report, logger (messages). Every option but logger and callbacks
//   must be equal on every rank (checked; functions cannot be compared, so callbacks
//   are the user's to keep alike).
//   SMALLDATA_SERVERS=N in the environment overrides `servers`; rank 0 prints the layout
//   in use (servers, clients, other) once per parallel run.
//
// ERRORS AND LOGGING
//   Every error is a smalldata::Error (a std::runtime_error) with a code() from
//   smalldata::Errc and a message naming the rank, the field or file at fault and, when
//   relevant, the HDF5 or MPI message underneath. Where each kind of failure goes:
//   - A bad option, layout or output path is found in the constructor and agreed between
//     ranks: every rank throws (the first failing rank's code and message), none hangs.
//   - A bad value or name throws from the event(), save_summary() or save_attribute()
//     call that gave it.
//     Pairs are taken left to right, each all or nothing: the refused pair and those after
//     it are not recorded; the pairs before it are, and the event the call started exists.
//     The run may go on. A summary/field name clash
//     is refused where the second name appears (in parallel mode, for a field only
//     another client gave, done() joins the events, leaves that summary out and throws).
//     An attribute whose path names nothing in the final file is left out the same way:
//     done() writes everything else, then throws Errc::name (on every rank).
//   - A callback's exception (serial mode) comes out of the event() or done() call that
//     handed over its batch: the events of the batch before the failing one are written,
//     the rest of that batch and the event of that call are lost, nothing is written twice.
//   - A write error (a full disk) is sticky: that call and every later one throw it;
//     done() still closes the file with every complete row, datasets aligned.
//   - In serial mode done() always finishes the file (every event handed over, the
//     summary, the attributes), then throws the first error it met.
//   - In parallel mode an error that cannot be returned to the caller (a server failing,
//     an exception escaping a client, a process exiting before done()) ends the job: the
//     reason is printed with the rank, every server closes its part file (a two-phase
//     handshake, abort_grace_ms then abort_close_ms), then MPI_Abort. A failing client's
//     own events, up to its failure, are written first (section 20). Serial mode closes
//     its file the same way when an exception escapes the program or it exits early.
//   Messages (the layout, warnings, fatal errors, progress lines, the report) go to
//   Options::logger, or to stderr, each starting with its source: "smalldata[rank 3,
//   client 1]: " in parallel mode, "smalldata: " in serial mode.
// PROGRESS AND REPORT
//   Every progress_seconds rank 0 (server 0) or the serial process prints the events
//   written so far, the rates and the busiest server. done() makes a Report (every rank
//   has it, SmallData::report()) and rank 0 prints it: events, bytes, rates, each server's
//   busy and idle time, the clients' back-pressure waits, and a verdict on the number of
//   servers from the scaling model of docs/performance.md (section 21).
//
// REQUIREMENTS
//   C++17 or later, MPI 3.0 or later (Open MPI, MPICH), HDF5 1.10.2 or later (serial or
//   parallel build; only the implementation file needs <hdf5.h>; before 1.10.3 whole
//   chunks go through H5Dwrite instead of H5Dwrite_chunk). Files are written in the
//   HDF5 1.10 format: readers need HDF5 1.10 or later, as for virtual datasets anyway.

// ============================================================================ [>>config]
// 1. Configuration and includes: the only headers users' translation units see.
#ifndef SMALLDATA_HPP_INCLUDED
#define SMALLDATA_HPP_INCLUDED

#define SMALLDATA_VERSION_MAJOR 0
#define SMALLDATA_VERSION_MINOR 1
#define SMALLDATA_VERSION_PATCH 0
#define SMALLDATA_VERSION_STRING "0.1.0"

// Keep the deprecated MPI C++ bindings out of users' translation units.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace smalldata {

// ============================================================================ [>>types]
// 2. Types, shapes, views, errors: the vocabulary shared by the API and the file layout.

// Element types a field can have. Stored little-endian in HDF5; bool as the HDF5 enum
// {FALSE=0, TRUE=1} over int8 (what h5py reads as numpy bool).
enum class DType : std::uint8_t { i8, i16, i32, i64, u8, u16, u32, u64, f32, f64, boolean };

const char* dtype_name(DType t) noexcept;      // "int8" ... "float64", "bool"
std::size_t dtype_size(DType t) noexcept;      // bytes per element

// The shape of one value (the event axis is not part of it). Rank 0 = scalar.
inline constexpr int max_rank = 7;
struct Shape {
    std::uint8_t rank = 0;
    std::array<std::uint64_t, max_rank> dims{};

    std::uint64_t count() const noexcept {     // number of elements
        std::uint64_t n = 1;
        for (int i = 0; i < rank; ++i) n *= dims[static_cast<std::size_t>(i)];
        return n;
    }
    std::string str() const;                   // "()", "(4)", "(256, 256)"
    friend bool operator==(const Shape& a, const Shape& b) noexcept {
        if (a.rank != b.rank) return false;
        for (int i = 0; i < a.rank; ++i)
            if (a.dims[static_cast<std::size_t>(i)] != b.dims[static_cast<std::size_t>(i)]) return false;
        return true;
    }
    friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }
};

// N-dimensional data given as pointer + shape; event() serialises straight from `data`
// (no intermediate copy). The caller keeps `data` alive during the event() call only.
template <class T>
struct View {
    const T* data = nullptr;
    Shape shape;
};
// view(ptr, {rows, cols}) -> View<T>. Throws Errc::usage for more than max_rank dims.
template <class T>
View<T> view(const T* data, std::initializer_list<std::uint64_t> shape);
template <class T>
View<T> view(const T* data, const std::vector<std::uint64_t>& shape);

// Error codes. One X-macro list generates the enum and the descriptions.
#define SMALLDATA_ERRORS(X)                                                              \
    X(layout, "the rank layout cannot work")                                             \
    X(option, "an option is invalid or differs between ranks")                           \
    X(name, "a field, summary or attribute name is invalid, clashes, or names nothing")  \
    X(type_mismatch, "a value's type differs from the field's type")                     \
    X(shape_mismatch, "a value's shape differs from the field's shape")                  \
    X(timestamp_order, "event timestamps must not decrease")                             \
    X(duplicate_field, "a field was given twice in one event")                           \
    X(missing_field, "the event has no field of that name")                              \
    X(usage, "the call is not valid on this rank or in this state")                      \
    X(reduction, "a reduction's inputs do not agree between clients")                    \
    X(hdf5, "an HDF5 call failed")                                                       \
    X(mpi, "an MPI call failed")                                                         \
    X(join, "the part files cannot be joined")                                           \
    X(protocol, "a message between ranks was malformed or events were lost")            \
    X(interrupted, "the run was stopped early (request_stop()); done() has run")

enum class Errc : int {
#define SMALLDATA_X_ENUM(id, text) id,
    SMALLDATA_ERRORS(SMALLDATA_X_ENUM)
#undef SMALLDATA_X_ENUM
};
const char* errc_name(Errc c) noexcept;         // "layout", "type_mismatch", ...
const char* errc_description(Errc c) noexcept;  // the text of the list above

class Error : public std::runtime_error {
public:
    Error(Errc code, const std::string& message, int library_code = 0)
        : std::runtime_error(message), code_(code), library_code_(library_code) {}
    Errc code() const noexcept { return code_; }
    // What the layer below said, when one number says it: the MPI error class
    // (MPI_Error_class) of a failed MPI call, the errno of a failed file-system call or of
    // the system call under a failed HDF5 call (ENOSPC for a full disk); 0 otherwise
    // (HDF5's own error stack is in what()).
    int library_code() const noexcept { return library_code_; }
private:
    Errc code_;
    int library_code_;
};

// ============================================================================ [>>options]
// 3. Options and roles: every runtime setting, with its default, in one aggregate.

class Event;
using Callback = std::function<void(const Event&)>;

// What the library prints, and how it reaches the user: every line goes to
// Options::logger, or to stderr when there is none.
enum class LogLevel { info, warning, error };     // info: the layout, progress, the report
const char* log_level_name(LogLevel l) noexcept;  // "info", "warning", "error"
// Receives one message as the default would print it, without the final newline: it
// starts with the source, "smalldata[rank 3, client 1]: " (parallel mode) or
// "smalldata: " (serial mode), then "warning: " or "fatal: " for those levels; the report
// is one multi-line message. Calls are serialised by the library (at most one at a time)
// and come from the thread that called into SmallData (a server: from its loop), or from
// the library's write thread. It must not call into smalldata; an exception from it is
// caught and the message goes to stderr.
using Logger = std::function<void(LogLevel level, const std::string& message)>;

// Compression of the per-event datasets the writer creates (Options::compression): every
// field, `timestamp`, var_ data and lengths, in a serial file and in every part file (the
// final file's virtual datasets read through them; summaries stay uncompressed). Done by
// HDF5's filter pipeline, chunk by chunk, on the writer's write thread (see
// Options::write_thread). A filter that is not available for writing, or a deflate level
// outside 1-9, is Errc::option from the constructor on every rank. Readers need the same
// filter (deflate and shuffle are in every HDF5 and h5py; plugins such as LZ4 must be
// installed where HDF5 finds them, HDF5_PLUGIN_PATH).
//     opt.compression = smalldata::Compression::deflate(1);           // gzip level 1 + shuffle
//     opt.compression = smalldata::Compression::filter(32004, {0});   // the LZ4 plugin
struct Compression {
    enum class Kind { none, deflate, filter };
    Kind kind = Kind::none;
    int level = 1;                 // deflate: 1 (fastest) to 9 (smallest)
    bool shuffle = true;           // HDF5's byte-shuffle filter before the compressor (it groups
                                   // the bytes of each significance: smaller output for
                                   // multi-byte numbers); deflate() sets it, filter() clears it
    unsigned filter_id = 0;        // filter: an HDF5 filter id, built in or a plugin (LZ4 32004,
                                   // bitshuffle 32008, Zstandard 32015, ...)
    std::vector<unsigned> params;  // filter: its parameters (HDF5's cd_values)
    static Compression deflate(int level = 1, bool shuffle = true) {
        Compression c;
        c.kind = Kind::deflate;
        c.level = level;
        c.shuffle = shuffle;
        return c;
    }
    static Compression filter(unsigned id, std::vector<unsigned> params = {}) {
        Compression c;
        c.kind = Kind::filter;
        c.shuffle = false;
        c.filter_id = id;
        c.params = std::move(params);
        return c;
    }
};

struct Options {
    int servers = 1;                  // writer ranks in parallel mode
    int clients = -1;                 // client ranks; -1 = every rank that is not a server
    std::string filename;             // final HDF5 file; empty = write nothing, callbacks only
    std::size_t batch_size = 4096;    // events per client->server message (at most)
    std::size_t cache_size = 8192;    // rows a server holds per dataset before writing
    std::vector<Callback> callbacks;  // called once per complete event, before writing
    MPI_Comm comm = MPI_COMM_WORLD;   // the ranks that take part (duplicated internally)

    // Tuning. All must be equal on every rank (checked in the constructor).
    std::size_t batch_bytes = std::size_t(1) << 20;  // bytes per message (at most, unless
                                                      // one event is larger)
    int send_buffers = 4;             // batches in flight per client (back-pressure bound)
    int recv_buffers = 4;             // receives a server keeps posted
    bool shared_memory = true;        // a client on its server's node hands batches over in
                                      // shared memory (MPI-3 window) instead of messages
    std::size_t cache_bytes = std::size_t(32) << 20; // cap of one field's cache, in bytes
    std::size_t chunk_bytes = std::size_t(1) << 20;  // target HDF5 chunk size, in bytes
    int idle_sleep_max_us = 500;      // longest sleep of an idle wait (see docs/design.md)
    int abort_grace_ms = 3000;        // how long a failing rank waits for each server to
                                      // answer that it is closing its part file
    int abort_close_ms = 60000;       // then how long it waits for the file to be closed
    bool preallocate = true;          // reserve disk space ahead of the writes (Linux; see
                                      // docs/design.md, "File space")
    int write_thread = -1;            // HDF5 writes of full caches on a helper thread while
                                      // event() or decoding goes on: 0 never; -1 when HDF5
                                      // is thread-safe and a core is free (more cores than
                                      // ranks on the node); 1 always, which needs a
                                      // thread-safe HDF5 if other code calls HDF5 meanwhile
                                      // (with compression: see `compression` below)
    std::size_t cache_memory = std::size_t(256) << 20; // cap of all the column caches of
                                      // one writer (serial process or server), in bytes,
                                      // with the write thread's: caches start small and
                                      // grow with the rows seen; at the cap they are written
                                      // out sooner instead (section 13,
                                      // [>>impl-writer], "Memory")
    double checkpoint_seconds = 5;    // crash safety: every event handed to event() longer
                                      // ago than this is in the file on disk, which opens
                                      // again after any crash (`smalldata recover`); 0 = off
                                      // (section 13, [>>impl-writer], "Checkpoints")
    double progress_seconds = 60;     // a progress line this often, from rank 0 (the serial
                                      // process): events written by all servers, events/s
                                      // in the last interval and overall, the busiest
                                      // server; 0 = none
    bool report = true;               // after done(), rank 0 (the serial process) prints the
                                      // run's report (SmallData::report() has it anyway)
    Logger logger;                    // where the library's messages go; empty = stderr
    Compression compression;          // of the per-event datasets: none (default),
                                      // Compression::deflate(level, shuffle) or
                                      // Compression::filter(id, params). Runs on the write
                                      // thread: with compression every server has one
                                      // (write_thread is then ignored on servers); the
                                      // serial process has one unless write_thread is 0, or
                                      // -1 with an HDF5 that is not thread-safe, and then
                                      // compresses in event(). Checkpoints are then
                                      // written by the write thread too, behind the
                                      // caches handed to it
    bool self_contained = false;      // parallel mode: done() copies every row into the final
                                      // file (ordinary chunked datasets, with `compression`'s
                                      // filters) and removes the part files; the file reads
                                      // the same. Costs a read and a write of all the data on
                                      // the joining rank (client 0) while the others wait
                                      // (section 18, [>>impl-flatten]). Serial mode: no effect,
                                      // the file is self-contained already
    bool time_order = false;          // every per-event dataset of the final file in increasing
                                      // timestamp order (ties: by client index, then in the
                                      // order the client gave them); unaligned_ rows in the
                                      // order of their events. Parallel mode: done() sorts
                                      // the events over the servers, each writing one time
                                      // range into its part (section 19, [>>impl-order]).
                                      // Serial mode: no effect, the file is in order already
};

enum class Role { serial, client, server, other };
const char* role_name(Role r) noexcept;          // "serial", "client", "server", "other"

// Counters of one rank, for progress reports and benchmarks.
struct Stats {
    std::uint64_t events = 0;          // events packed (client/serial) or written (server)
    std::uint64_t batches = 0;         // batches sent (client) or received (server)
    std::uint64_t bytes = 0;           // batch bytes sent or received
    double wait_seconds = 0;           // client: time blocked on back-pressure
    double write_seconds = 0;          // server/serial: time in HDF5 writes
    double idle_seconds = 0;           // server: time waiting for batches
    double join_seconds = 0;           // join root: time to build the final file
    double flatten_seconds = 0;        // join root, Options::self_contained: of join_seconds,
    std::uint64_t flatten_bytes = 0;   // the copy into one file, and the data bytes it moved
    double order_seconds = 0;          // Options::time_order: done()'s sort (server; 0 in serial mode)
    std::uint64_t order_events = 0;    // and the events it moved (0: already in order),
    std::uint64_t order_rounds = 0;    // in how many rounds (more than 1: its keys exceeded
};                                     // cache_memory; section 19)

// The end-of-run report (Options::report, SmallData::report()): what the run did, where
// its time went, and whether it had the servers it needed. A rank's `seconds` span its
// event stream: a server's loop (start to end); a client's or the serial process's time
// from the end of the constructor to the start of done().
struct ServerReport {
    int rank = 0;
    std::uint64_t events = 0;          // events written by this server (the serial process)
    std::uint64_t bytes = 0;           // payload bytes of those events' values
    double seconds = 0;                // wall time of its loop
    double busy_fraction = 0;          // of `seconds`, not waiting for batches (decoding,
                                       // writing, checkpoints)
    double idle_fraction = 0;          // of `seconds`, waiting for batches (1 - busy)
    double write_fraction = 0;         // of `seconds`, in HDF5 writes (part of busy, or
                                       // beside it on the write thread)
    double bytes_per_second = 0;       // bytes / seconds
};
struct ClientReport {
    int rank = 0;
    std::uint64_t events = 0;          // events this client handed over
    double seconds = 0;                // from the end of the constructor to done()
    double wait_seconds = 0;           // blocked on back-pressure (its server was behind)
    double wait_fraction = 0;          // wait_seconds / seconds
};
struct Report {
    bool complete = false;             // false until done() has made it
    bool parallel = false;
    std::uint64_t events = 0;          // written, all servers (serial: the process)
    std::uint64_t bytes = 0;           // payload bytes written
    double wall_seconds = 0;           // the longest rank's, constructor to end of done()
    double events_per_second = 0;      // events / wall_seconds
    double bytes_per_second = 0;
    double join_seconds = 0;           // building the final file (parallel mode)
    double flatten_seconds = 0;        // of which copying the data into it (self_contained)
    std::uint64_t flatten_bytes = 0;   // the data bytes that copy moved
    bool time_order = false;           // Options::time_order in parallel mode, with a file:
    double order_seconds = 0;          // the servers' ordering (the longest), and the events
    std::uint64_t order_events = 0;    // rewritten in time order (0: in order already),
    std::uint64_t order_rounds = 0;    // in how many rounds (the servers' keys exceeded
                                       // cache_memory when more than 1)
    bool order_failed = false;         // the ordering failed: events in arrival order
    std::vector<ServerReport> servers; // one per server; serial mode: the process
    std::vector<ClientReport> clients; // one per client; serial mode: empty
    // The verdict of the scaling model (docs/performance.md): the number of servers to
    // try, or 0 when the layout fits (and always 0 in serial mode), and a sentence.
    int suggested_servers = 0;
    std::string verdict;
    std::string text() const;          // the block printed at the end of the run
};

// The indices [begin, end) that belong to one client, round-robin. Empty on servers and
// other ranks; everything in serial mode. Iterate it with a range-for, or copy it
// (std::vector<std::int64_t>(s.begin(), s.end())): an input iterator over std::int64_t.
// size() is the number of indices, saturated at INT64_MAX (only a share of more than
// 2^63 - 1 indices, e.g. share(INT64_MIN, INT64_MAX), saturates). No arithmetic here
// overflows, whatever the bounds.
class Share {
public:
    Share(std::int64_t begin, std::int64_t end, std::int64_t first, std::int64_t step) noexcept
        : end_(end), first_(first < begin ? begin : first), step_(step < 1 ? 1 : step) {}
    class iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = std::int64_t;
        using difference_type = std::ptrdiff_t;
        using pointer = const std::int64_t*;
        using reference = std::int64_t;
        // left: indices from this one to the end; i: this index (any value when left == 0).
        iterator(std::uint64_t left, std::int64_t i, std::int64_t step) noexcept : left_(left), i_(i), step_(step) {}
        std::int64_t operator*() const noexcept { return i_; }
        iterator& operator++() noexcept {
            if (--left_ != 0) i_ += step_;  // only towards an index that exists: no overflow
            return *this;
        }
        iterator operator++(int) noexcept {
            iterator old = *this;
            ++*this;
            return old;
        }
        friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.left_ == b.left_; }
        friend bool operator!=(const iterator& a, const iterator& b) noexcept { return a.left_ != b.left_; }
    private:
        std::uint64_t left_;
        std::int64_t i_, step_;
    };
    iterator begin() const noexcept { return {count(), first_, step_}; }
    iterator end() const noexcept { return {0, end_, step_}; }
    std::int64_t size() const noexcept {
        const std::uint64_t n = count();
        return n > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(n);
    }
private:
    std::uint64_t count() const noexcept {  // in unsigned arithmetic: up to 2^64 - 1
        if (first_ >= end_) return 0;
        const std::uint64_t d = static_cast<std::uint64_t>(end_) - static_cast<std::uint64_t>(first_);
        const std::uint64_t s = static_cast<std::uint64_t>(step_);
        return d / s + (d % s != 0 ? 1 : 0);
    }
    std::int64_t end_, first_, step_;
};

namespace detail {
// What the library knows of one field: shared by the Event view and the writer.
struct FieldMeta {
    std::string name;
    DType dtype = DType::f64;
    Shape shape;             // of one value; of one row (axis 0 left out) for a var_ field
    std::size_t bytes = 0;   // payload bytes of one value (of one row for a var_ field)
    bool aligned = true;     // false for `unaligned_` fields and var_ fields' data
    bool var = false;        // a var_ field: each event gives any number of rows
    bool length = false;     // a var_ group's "<group>_len" (made by the library; fill 0)
};
struct EntryRef {
    const FieldMeta* meta;
    const unsigned char* data;  // not necessarily aligned for the element type
    std::uint64_t rows = 1;     // a var_ field's rows in this event (1 for other fields)
};
template <class T> struct dtype_of;
}  // namespace detail

// ============================================================================ [>>event]
// 4. Event: the read-only view of one complete event that callbacks receive. It points into
//    the decoded batch and is valid only during the callback.

class Field {
public:
    explicit Field(const detail::EntryRef& e) noexcept : e_(&e) {}
    const std::string& name() const noexcept { return e_->meta->name; }
    DType dtype() const noexcept { return e_->meta->dtype; }
    // The shape of this event's value; for a var_ field (rows(), row shape...).
    Shape shape() const noexcept {
        if (!e_->meta->var) return e_->meta->shape;
        Shape s;
        s.rank = static_cast<std::uint8_t>(e_->meta->shape.rank + 1);
        s.dims[0] = e_->rows;
        for (int i = 0; i < e_->meta->shape.rank; ++i)
            s.dims[static_cast<std::size_t>(i) + 1] = e_->meta->shape.dims[static_cast<std::size_t>(i)];
        return s;
    }
    bool aligned() const noexcept { return e_->meta->aligned; }
    bool variable() const noexcept { return e_->meta->var; }  // a var_ field
    std::uint64_t length() const noexcept { return e_->rows; } // var_: rows in this event; else 1
    std::size_t bytes() const noexcept { return static_cast<std::size_t>(e_->rows) * e_->meta->bytes; }
    const void* data() const noexcept { return e_->data; }  // raw bytes, maybe unaligned
    template <class T> T value() const;                     // a scalar, T must match dtype
    template <class T> std::vector<T> values() const;        // all elements, flattened
private:
    const detail::EntryRef* e_;
};

class Event {
public:
    Event(std::int64_t timestamp, const detail::EntryRef* entries, std::size_t n) noexcept
        : ts_(timestamp), entries_(entries), n_(n) {}
    std::int64_t timestamp() const noexcept { return ts_; }
    bool has(std::string_view name) const noexcept { return find(name) != nullptr; }
    // A scalar field; T must be the field's type. Errc::missing_field, type/shape_mismatch.
    template <class T> T get(std::string_view name) const { return field(name).value<T>(); }
    // An array field (or a scalar) as a flat vector; T must be the field's type.
    template <class T> std::vector<T> get_vector(std::string_view name) const {
        return field(name).values<T>();
    }
    Field field(std::string_view name) const;               // Errc::missing_field
    std::size_t size() const noexcept { return n_; }        // number of fields
    class iterator {
    public:
        explicit iterator(const detail::EntryRef* p) noexcept : p_(p) {}
        Field operator*() const noexcept { return Field(*p_); }
        iterator& operator++() noexcept { ++p_; return *this; }
        bool operator!=(const iterator& o) const noexcept { return p_ != o.p_; }
    private:
        const detail::EntryRef* p_;
    };
    iterator begin() const noexcept { return iterator(entries_); }
    iterator end() const noexcept { return iterator(entries_ + n_); }
private:
    const detail::EntryRef* find(std::string_view name) const noexcept {
        for (std::size_t i = 0; i < n_; ++i)
            if (entries_[i].meta->name == name) return &entries_[i];
        return nullptr;
    }
    std::int64_t ts_;
    const detail::EntryRef* entries_;
    std::size_t n_;
};

// ============================================================================ [>>smalldata]
// 5. SmallData: the object a user's program creates once per run.

namespace detail {
class Packer;
struct Impl;
// Why the run must stop: 0 (it need not), the signal that asked (SIGTERM, SIGINT), or -1
// for request_stop(). Checked once per event() call, by the servers' loop, and while a
// client waits in a reduction for the others (SmallData::wait_agreement).
inline std::atomic<int> stop_requested{0};
// The stop signals this process has received itself (the library's handler counts them): a
// stop learnt from another client (SmallData::wait_agreement) or asked by request_stop()
// sets stop_requested without one, so the process's own signal that follows is its first.
inline std::atomic<int> stop_signals{0};
inline constexpr double stop_reduction_grace = 1.0;  // seconds (SmallData::wait_agreement)
// Internal, for testing (the kill test aims kills at checkpoints): when set, every writer
// (the serial process, a server) calls it at the start of each checkpoint (stage 0), once
// the checkpoint's H5Fflush has returned (stage 1), on the thread taking it, and as its
// close in done() begins (stage 2). Null by default: one load per checkpoint. Set it
// before the SmallData is made; it must return quickly and must not call into smalldata.
inline void (*checkpoint_hook)(int stage) noexcept = nullptr;
// Internal, for testing (the tool test stops a run between the ordering and its switch):
// with Options::time_order, each server calls it once its <part>.ordered file is complete
// (section 19), before the ranks agree on the switch. Null by default.
inline void (*order_hook)(int server) noexcept = nullptr;
// Internal, for testing (the rounds' memory): with Options::time_order in rounds, each
// server calls it once per round with the bytes of keys it holds at the round's peak (16
// per key of its part in the round, 24 per key of its range's bucket: received, then its
// output) and the rounds' budget, half of cache_memory (section 19). Null by default.
inline void (*order_round_hook)(int server, std::uint64_t round, std::uint64_t bytes, std::uint64_t budget) noexcept =
    nullptr;
// Internal, for testing (the tool test stops a run inside the self-contained copy): with
// Options::self_contained, the joining rank calls it once the first per-event dataset is
// copied (stage 0: the copy half done), and once the self-contained file is in place,
// before the parts are removed (stage 1). Null by default.
inline void (*flatten_hook)(int stage) noexcept = nullptr;
// The longest a server merging its clients' streams holds a batch (Options::time_order,
// section 14), unless a tenth of checkpoint_seconds is less. Internal: tests set it
// longer, so that a loaded machine cannot end a hold they count on.
inline double merge_hold_seconds = 0.5;
// Routed streams (Options::time_order with several servers and clients; section 15, the
// Sender): a cell of the time grid holds about cell_batches of a client's first batch
// and at least cell_min_events of its events; a client waits at most grid_wait_seconds for
// the grid. Internal: tests make cells small, waits long or short, or turn routing off
// (route_time_order false: the servers order the events at done() instead).
inline int cell_batches = 4;
inline std::uint64_t cell_min_events = 4096;
inline double grid_wait_seconds = 2.0;
inline bool route_time_order = true;
// The most cells of a part that one virtual mapping of the final file takes (section 16).
inline std::size_t join_cells_per_mapping = 256;
}  // namespace detail

// Ends the run early, as SIGTERM does when the library handles it: every live SmallData
// of this process runs done() at its next event() call (the final file is written), and
// that event() throws Errc::interrupted; servers make what they hold durable at once.
// Async-signal-safe: a program with its own SIGTERM/SIGINT handler (the library installs
// its handler only where the program has none) calls this from that handler.
void request_stop() noexcept;

class SmallData {
public:
    // Splits comm into roles and, on server ranks, runs the receive-and-write loop until
    // every client of that server is done. Initialises MPI if the program did not.
    explicit SmallData(Options options = {});
    ~SmallData();                            // calls done() if needed; never throws
    SmallData(const SmallData&) = delete;
    SmallData& operator=(const SmallData&) = delete;

    // Add name/value pairs to the event `timestamp` (any integer type). Equal timestamp:
    // same event; larger: a new event; smaller: Errc::timestamp_order. No-op on servers
    // and other ranks. Values: fixed-width integers, float, double, bool, std::vector and
    // std::array of those, smalldata::View. Names: "field" or "group/field". A
    // std::vector<bool> is unpacked into a buffer the library reuses (no allocation once
    // it has held the longest one) and stored like every bool array.
    template <class Timestamp, class... NameValue>
    void event(Timestamp timestamp, NameValue&&... name_value_pairs);

    bool summary() const noexcept;           // true on clients and in serial mode

    // Reductions over all clients (collective among clients; identity in serial mode).
    // T: arithmetic scalar, std::vector or std::array of one (element-wise). The
    // std::optional forms let a client with no data contribute nothing; the result is empty
    // only when no client contributed.
    template <class T> T sum(const T& value);
    template <class T> T min(const T& value);
    template <class T> T max(const T& value);
    template <class T> std::optional<T> sum(const std::optional<T>& value);
    template <class T> std::optional<T> min(const std::optional<T>& value);
    template <class T> std::optional<T> max(const std::optional<T>& value);
    // In place, for big N-d data (a detector image): `data` holds this client's values in
    // `shape` (row-major, as view()); the element-wise result over the contributing clients
    // replaces them on every client, with no copy (MPI_IN_PLACE). Returns whether any client
    // contributed; if none did, every buffer is left as it was. A client with no data passes
    // its buffer all the same with contributes = false: its values are ignored and it gets
    // the result. Every client's buffer must have the same element type and shape:
    // Errc::reduction on every client, naming the shapes. Any element count (MPI's int
    // limit is handled in pieces). Serial mode: returns `contributes`, data unchanged.
    template <class T> bool sum(T* data, std::initializer_list<std::uint64_t> shape, bool contributes = true);
    template <class T> bool min(T* data, std::initializer_list<std::uint64_t> shape, bool contributes = true);
    template <class T> bool max(T* data, std::initializer_list<std::uint64_t> shape, bool contributes = true);
    template <class T> bool sum(T* data, const std::vector<std::uint64_t>& shape, bool contributes = true);
    template <class T> bool min(T* data, const std::vector<std::uint64_t>& shape, bool contributes = true);
    template <class T> bool max(T* data, const std::vector<std::uint64_t>& shape, bool contributes = true);

    // Save name/value pairs into the final file, not per event. Kept by client 0 (or the
    // serial process) only; other clients check the call (a bad name or value, or a call
    // after done(), throws on every client alike) and keep nothing. Scalars become scalar
    // datasets, vectors and arrays 1-d datasets, a View an N-d dataset, std::string a string dataset; an
    // empty std::optional is skipped with a warning. Saving a name again replaces it.
    template <class... NameValue>
    void save_summary(NameValue&&... name_value_pairs);

    // Attach the HDF5 attribute `name` to the object `path` of the final file: a field (in
    // parallel mode its virtual dataset), a group, a summary, or "" for the root group.
    // Kept by client 0 (or the serial process) only, like save_summary; other clients check
    // the call (a bad name or value throws on every client alike) and keep nothing. Value:
    // a string (std::string, const char*, std::string_view; stored as a variable-length
    // UTF-8 string, which h5py reads as str), an arithmetic scalar (bool
    // included), a std::vector or std::array of one, or a View (an N-d attribute); types
    // as for fields (bool: the HDF5 enum over int8). Saving the same (path, name) again
    // replaces the value. Errc::name here for an invalid path (the rules of field names,
    // "timestamp" allowed) or name (empty, a NUL byte, more than 65534 bytes, or starting
    // with "smalldata_", the library's own attributes); Errc::usage for a string value with
    // a NUL byte, or after done(). A path that names nothing in the final file is found by
    // done(): it writes the file complete with every other attribute, then throws
    // Errc::name naming the path and the attribute (on every rank in parallel mode).
    template <class Value>
    void save_attribute(std::string_view path, std::string_view name, const Value& value);

    // Collective over comm, once per rank: flushes, joins the part files, writes the
    // summary. After it returns on every rank the final file is complete. Idempotent.
    void done();

    Role role() const noexcept;
    int rank() const noexcept;               // rank in comm
    int size() const noexcept;               // ranks in comm
    int client_index() const noexcept;       // 0-based among clients; -1 if not a client
    int client_count() const noexcept;       // 1 in serial mode
    int server_index() const noexcept;       // server this rank is or sends to; -1 if none
    // This client's round-robin share of [begin, end) (or [0, n)).
    Share share(std::int64_t begin, std::int64_t end) const noexcept;
    Share share(std::int64_t n) const noexcept { return share(0, n); }
    const Options& options() const noexcept;
    Stats stats() const noexcept;            // this rank's counters so far
    // After done(): the run's report, the same on every rank (complete = true). Before:
    // an empty Report (complete = false).
    const Report& report() const noexcept;

private:
    template <class N, class V, class... Rest> void put_pairs(N&& name, V&& value, Rest&&... rest);
    template <class N, class V, class... Rest> void summary_pairs(N&& name, V&& value, Rest&&... rest);
    void save_summary_raw(std::string_view name, DType dt, const Shape& shape, const void* data);
    void save_summary_string(std::string_view name, const std::string& s);
    void save_attribute_raw(std::string_view path, std::string_view name, DType dt, const Shape& shape,
                            const void* data);
    void save_attribute_string(std::string_view path, std::string_view name, std::string_view text);
    void warn_skipped_summary(std::string_view name) const;
    void event_after_done() const;
    void stop_at_event();  // detail::stop_requested is set: done(), then end the process or throw
    // Collective among clients. agree_call: every client's call (operation, element type,
    // kind: 0 scalar, 1 std::array, 2 std::vector; element count where known: a vector's
    // from the clients that contribute) the same, else Errc::reduction on every client
    // naming each client's call; returns the count, `any`: whether a client contributes.
    // reduce_raw: element-wise op in place, a non-contributor adding the neutral element.
    std::size_t agree_call(int op, DType dt, int kind, std::size_t count, bool contributes, bool& any);
    // Every agreement among the clients (a reduction's, done()'s) is one collective of the
    // same size, so that any client's call meets any other's: see its definition.
    const std::uint64_t* agree(std::uint64_t family, const std::uint64_t* call, const std::uint64_t* call_max,
                               std::size_t n);
    void agree_done();  // done()'s agreement: see its definition
    // The wait for a reduction's agreement, also watching for a stop (SIGTERM, SIGINT,
    // request_stop()): see its definition.
    void wait_agreement(MPI_Request& r);
    void reduce_raw(void* inout, std::size_t count, DType dt, int op, bool contributes);
    void check_reduce_role(int op) const;
    template <class T> T reduce(const T& value, int op);
    template <class T> std::optional<T> reduce_opt(const std::optional<T>& value, int op);
    // The in-place forms: one agreement among the clients (op, type, shape, usable buffer,
    // whether any contributes), then the reduction of `data` itself.
    template <class T> bool reduce_in_place(T* data, const std::uint64_t* dims, std::size_t rank, int op, bool contributes);
    bool reduce_buffer(void* data, DType dt, const std::uint64_t* dims, std::size_t rank, int op, bool contributes);

    std::unique_ptr<detail::Impl> impl_;
    detail::Packer* packer_ = nullptr;       // null on servers, other ranks, after done()
};

// ---------------------------------------------------------------------------------------
// Everything below this line is internal: smalldata::detail is not part of the API.
// ---------------------------------------------------------------------------------------

// ============================================================================ [>>traits]
// 6. Value traits: one table maps each supported C++ type to its dtype and shape.
namespace detail {

template <class T> struct dtype_of { static constexpr bool ok = false; };
#define SMALLDATA_DTYPE(T, D) \
    template <> struct dtype_of<T> { static constexpr bool ok = true; static constexpr DType value = DType::D; };
SMALLDATA_DTYPE(std::int8_t, i8)
SMALLDATA_DTYPE(std::int16_t, i16)
SMALLDATA_DTYPE(std::int32_t, i32)
SMALLDATA_DTYPE(std::int64_t, i64)
SMALLDATA_DTYPE(std::uint8_t, u8)
SMALLDATA_DTYPE(std::uint16_t, u16)
SMALLDATA_DTYPE(std::uint32_t, u32)
SMALLDATA_DTYPE(std::uint64_t, u64)
SMALLDATA_DTYPE(float, f32)
SMALLDATA_DTYPE(double, f64)
SMALLDATA_DTYPE(bool, boolean)
#undef SMALLDATA_DTYPE
static_assert(sizeof(bool) == 1, "smalldata stores bool as one byte");

// Integer types that are not the <cstdint> typedefs but have their size (long long on
// LP64, long on LLP64) map by size and signedness. Plain char is refused: its sign varies.
template <class T, class = void> struct scalar_dtype { static constexpr bool ok = false; };
template <class T>
struct scalar_dtype<T, std::enable_if_t<dtype_of<T>::ok>> {
    static constexpr bool ok = true;
    static constexpr DType value = dtype_of<T>::value;
};
template <class T>
struct scalar_dtype<T, std::enable_if_t<!dtype_of<T>::ok && std::is_integral_v<T> &&
                                        !std::is_same_v<T, char> && !std::is_same_v<T, bool> &&
                                        (sizeof(T) == 8 || sizeof(T) == 4 || sizeof(T) == 2)>> {
    static constexpr bool ok = true;
    using same = std::conditional_t<
        std::is_signed_v<T>,
        std::conditional_t<sizeof(T) == 8, std::int64_t,
                           std::conditional_t<sizeof(T) == 4, std::int32_t, std::int16_t>>,
        std::conditional_t<sizeof(T) == 8, std::uint64_t,
                           std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint16_t>>>;
    static constexpr DType value = dtype_of<same>::value;
};

// value_traits<V>: ok, dtype, shape(v), data(v), bytes(v).
template <class V, class = void> struct value_traits { static constexpr bool ok = false; };
template <class T>
struct value_traits<T, std::enable_if_t<scalar_dtype<T>::ok>> {
    static constexpr bool ok = true;
    static constexpr bool scalar = true;
    using element = T;
    static constexpr DType dtype = scalar_dtype<T>::value;
    static Shape shape(const T&) noexcept { return {}; }
    static const void* data(const T& v) noexcept { return &v; }
    static std::size_t bytes(const T&) noexcept { return sizeof(T); }
};
template <class T, class A>
struct value_traits<std::vector<T, A>, std::enable_if_t<scalar_dtype<T>::ok && !std::is_same_v<T, bool>>> {
    static constexpr bool ok = true;
    static constexpr bool scalar = false;
    using element = T;
    static constexpr DType dtype = scalar_dtype<T>::value;
    static Shape shape(const std::vector<T, A>& v) noexcept { Shape s; s.rank = 1; s.dims[0] = v.size(); return s; }
    static const void* data(const std::vector<T, A>& v) noexcept { return v.data(); }
    static std::size_t bytes(const std::vector<T, A>& v) noexcept { return v.size() * sizeof(T); }
};
template <class T, std::size_t N>
struct value_traits<std::array<T, N>, std::enable_if_t<scalar_dtype<T>::ok>> {
    static constexpr bool ok = true;
    static constexpr bool scalar = false;
    using element = T;
    static constexpr DType dtype = scalar_dtype<T>::value;
    static Shape shape(const std::array<T, N>&) noexcept { Shape s; s.rank = 1; s.dims[0] = N; return s; }
    static const void* data(const std::array<T, N>& v) noexcept { return v.data(); }
    static std::size_t bytes(const std::array<T, N>&) noexcept { return N * sizeof(T); }
};
template <class T>
struct value_traits<View<T>, std::enable_if_t<scalar_dtype<std::remove_const_t<T>>::ok>> {
    static constexpr bool ok = true;
    static constexpr bool scalar = false;
    using element = std::remove_const_t<T>;
    static constexpr DType dtype = scalar_dtype<element>::value;
    static Shape shape(const View<T>& v) noexcept { return v.shape; }
    static const void* data(const View<T>& v) noexcept { return v.data; }
    static std::size_t bytes(const View<T>& v) noexcept {
        return static_cast<std::size_t>(v.shape.count()) * sizeof(T);
    }
};

template <class V> inline constexpr bool is_vector_bool = false;
template <class A> inline constexpr bool is_vector_bool<std::vector<bool, A>> = true;

template <class N>
inline constexpr bool is_name = std::is_convertible_v<const N&, std::string_view>;

[[noreturn]] void throw_error(Errc code, const std::string& message, int library_code = 0);

// ============================================================================ [>>packer]
// 7. Packer: checks event() calls and turns them into the binary batch format
//    (docs/design.md, "Wire format"), or in direct mode (serial, no callbacks) hands each
//    value to the sink. The common case (same fields in the same order as the previous
//    event) is inline and allocation-free; everything else is out of line in section 12.

struct WireHeader {                 // at offset 0 of every message
    std::uint32_t magic;            // wire_magic
    std::uint16_t version;          // wire_version
    std::uint16_t kind;             // WireKind
    std::uint32_t seq;              // message number in this client's stream
    std::uint32_t n_events;         // events in this batch
    std::uint64_t bytes;            // total bytes of the batch (header included)
    std::uint64_t extra;            // done: events sent in total; large: bytes of the batch;
                                    // shm: the slot holding it; batch: an upper bound of its
                                    // timestamps, no more than the client's next one (int64)
};
inline constexpr std::uint32_t wire_magic = 0x31445353u;  // "SSD1"
inline constexpr std::uint16_t wire_version = 1;
// define: field definitions ahead of a batch; grid: the TimeGrid (routed streams, section 15)
enum class WireKind : std::uint16_t { batch = 1, large = 2, done = 3, shm = 4, define = 5, grid = 6 };
inline constexpr std::uint32_t wire_define = 0xFFFFFFFFu;  // field id announcing a definition
inline constexpr std::size_t event_header_bytes = 12;      // i64 timestamp + u32 entries
// One batch is one MPI message (an int count of bytes); one event, with its header and the
// definitions of its new fields, must fit in a batch. Larger values are Errc::usage.
inline constexpr std::size_t max_batch_bytes = 0x7fffffffu;
inline constexpr std::size_t max_event_bytes = max_batch_bytes - sizeof(WireHeader);

// Options::time_order with several servers (routed streams, section 15): the clients agree
// once on a grid of timestamps, and every event goes to the server that owns its cell.
// Cell 0 holds every timestamp below g0 (the clients' first batches: all of them before
// the grid is known); cell k >= 1 holds [g0 + (k - 1) w, g0 + k w). Cell k belongs to
// server k % servers, so each part is a sequence of whole cells, in time order.
struct TimeGrid {
    std::int64_t g0 = std::numeric_limits<std::int64_t>::max();
    std::int64_t w = 0;  // 0: not known (every timestamp is in cell 0)
    bool known() const noexcept { return w > 0; }
    bool operator==(const TimeGrid& o) const noexcept { return g0 == o.g0 && w == o.w; }
    std::uint64_t cell(std::int64_t ts) const noexcept {
        if (w <= 0 || ts < g0) return 0;
        return 1 + (static_cast<std::uint64_t>(ts) - static_cast<std::uint64_t>(g0)) / static_cast<std::uint64_t>(w);
    }
    // The timestamps [lo, hi) of cell `id` (hi clamped to the largest timestamp).
    void range(std::uint64_t id, std::int64_t& lo, std::int64_t& hi) const noexcept {
        constexpr std::int64_t top = std::numeric_limits<std::int64_t>::max();
        if (id == 0 || w <= 0) {
            lo = std::numeric_limits<std::int64_t>::min();
            hi = known() ? g0 : top;
            return;
        }
        const auto uw = static_cast<std::uint64_t>(w);
        const std::uint64_t off = (id - 1) * uw;  // no wrap: id came from a timestamp
        const std::uint64_t room = static_cast<std::uint64_t>(top) - static_cast<std::uint64_t>(g0);
        lo = static_cast<std::int64_t>(static_cast<std::uint64_t>(g0) + off);
        hi = off <= room && room - off > uw ? static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + uw) : top;
    }
    static int owner(std::uint64_t id, int servers) noexcept {
        return static_cast<int>(id % static_cast<std::uint64_t>(servers));
    }
};

// A definition record (docs/design.md, "Wire format"): its size, and written at p (returns
// its end). The Packer's, inline in a batch; a routed Sender's, ahead of one.
inline std::size_t definition_bytes(std::string_view name, const Shape& shape) {
    return 4 + 4 + 1 + 1 + 2 + 8 * std::size_t(shape.rank) + name.size();
}
inline unsigned char* put_definition(unsigned char* p, std::uint32_t id, std::string_view name, DType dt,
                                     const Shape& shape) {
    const std::uint32_t mark = wire_define;
    const auto dtb = static_cast<std::uint8_t>(dt);
    const auto len = static_cast<std::uint16_t>(name.size());
    std::memcpy(p, &mark, 4);
    std::memcpy(p + 4, &id, 4);
    std::memcpy(p + 8, &dtb, 1);
    std::memcpy(p + 9, &shape.rank, 1);
    std::memcpy(p + 10, &len, 2);
    p += 12;
    for (int i = 0; i < shape.rank; ++i, p += 8) std::memcpy(p, &shape.dims[static_cast<std::size_t>(i)], 8);
    std::memcpy(p, name.data(), name.size());
    return p + name.size();
}

struct ClientField {
    FieldMeta meta;
    std::uint64_t last_event = 0;   // event number in which it was last given
    std::uint32_t len_id = 0;       // a var_ field: its group's length field
    std::uint64_t len = 0;          // a length field: its value in last_event
};

// Where full batches go: the in-process writer (serial) or the MPI sender (client).
class Sink {
public:
    virtual ~Sink() = default;
    // Takes buf[0, used) holding n_events complete events, none later than max_ts and none
    // of the events still to come earlier; returns the buffer to fill next.
    virtual std::vector<unsigned char>* ship(std::vector<unsigned char>* buf, std::size_t used,
                                             std::uint32_t n_events, std::int64_t max_ts) = 0;
    // Direct mode (serial, no callbacks): no batch at all. A field is defined once, then
    // each value goes straight to the writer's column, then the event is ended.
    virtual void define(std::uint32_t /*id*/, const FieldMeta& /*meta*/) {}
    virtual void value(std::uint32_t /*id*/, const void* /*data*/) {}
    virtual void rows(std::uint32_t /*id*/, const void* /*data*/, std::uint64_t /*n*/) {}  // var_
    virtual void end_event(std::int64_t /*timestamp*/) {}
    // Routed streams (section 15): the Packer ships its batch and calls cross(ts) before
    // an event whose timestamp reaches *cut() (the end of the current cell), so that every
    // batch lies within one cell of the grid. The sink moves *cut() on.
    virtual const std::int64_t* cut() const noexcept {
        static constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
        return &never;
    }
    virtual void cross(std::int64_t /*ts*/) {}
};

// Name equality for the hot path: short names compare inline rather than through a call.
inline bool same_name(const std::string& a, std::string_view b) noexcept {
    const std::size_t n = a.size();
    if (n != b.size()) return false;
    if (n > 24) return std::memcmp(a.data(), b.data(), n) == 0;
    const char* x = a.data();
    const char* y = b.data();
    for (std::size_t i = 0; i < n; ++i)
        if (x[i] != y[i]) return false;
    return true;
}

// Transactions. Nothing the Packer does from put() runs user code or ships a batch: a value
// that does not fit grows the buffer, and the batch is shipped at the next event boundary
// (start_event, flush). A put() commits the entry (its field's last_event, pos_, entries_)
// only once nothing that can throw remains (see commit() for direct mode), so an exception
// leaves the open event exactly as it was before the call.
// "Has `period` passed?", asked on a hot path: the clock is read only every stride-th call,
// the stride adapting (1 to 64) so that a fast caller reads it a few dozen times a period
// and a slow one, or one back from a pause, at every call. period <= 0: never.
class Periodic {
public:
    explicit Periodic(double period = 0);
    bool tick(std::uint64_t calls = 1) {
        if (period_ <= 0) return false;
        if (countdown_ > calls) {
            countdown_ -= calls;
            return false;
        }
        return read_clock();
    }
    double period() const noexcept { return period_; }
    void set_next(double t) noexcept { next_ = t; }  // the next tick: at t, not a period on

private:
    bool read_clock();
    double period_, last_, next_;
    std::uint64_t stride_ = 1, countdown_ = 1;
};

class Packer {
public:
    Packer(Sink* sink, std::vector<unsigned char>* first, std::size_t batch_size, std::size_t batch_bytes);
    // From now on values go to sink->value() instead of into batches (before any event).
    void set_direct() noexcept { direct_ = true; }
    // Checkpoints: complete events wait at most about `seconds` before they are shipped.
    void set_max_age(double seconds) { age_ = Periodic(seconds); }

    void begin(std::int64_t ts) {
        if (open_ && ts == ts_) return;
        start_event(ts);
    }
    void put(std::string_view name, DType dt, const Shape& shape, const void* data, std::size_t bytes) {
        if (data == nullptr && bytes != 0) null_value(name, dt, shape);
        std::uint32_t id;
        if (pos_ < seq_.size()) {
            id = seq_[pos_];
            const ClientField& f = fields_[id];
            if (f.last_event != event_no_ && f.meta.dtype == dt && same_name(f.meta.name, name)) {
                if (f.meta.shape == shape && !f.meta.var) goto hit;
                if (f.meta.var && is_row_shape(f.meta.shape, shape)) return put_rows(id, shape.dims[0], data, bytes);
            }
        }
        id = resolve(name, dt, shape);
        if (fields_[id].meta.var) return put_rows(id, shape.dims[0], data, bytes);
    hit:
        if (direct_) {
            direct_value(id, data);
        } else {
            const std::size_t need = 4 + bytes;
            if (static_cast<std::size_t>(end_ - cur_) < need) make_room(need, id);
            commit(id);  // nothing below throws
            std::memcpy(cur_, &id, 4);
            if (bytes) std::memcpy(cur_ + 4, data, bytes);
            cur_ += need;
        }
    }
    template <class T>
    void put_scalar(std::string_view name, const T& v) {   // scalars: shape known statically
        constexpr DType dt = value_traits<T>::dtype;
        std::uint32_t id;
        if (pos_ < seq_.size()) {
            id = seq_[pos_];
            const ClientField& f = fields_[id];
            if (f.last_event != event_no_ && f.meta.dtype == dt && f.meta.shape.rank == 0 && !f.meta.var &&
                same_name(f.meta.name, name))
                goto hit;
        }
        id = resolve(name, dt, Shape{});
    hit:
        if (direct_) {
            direct_value(id, &v);
        } else {
            if (static_cast<std::size_t>(end_ - cur_) < 4 + sizeof(T)) make_room(4 + sizeof(T), id);
            commit(id);  // nothing below throws
            std::memcpy(cur_, &id, 4);
            std::memcpy(cur_ + 4, &v, sizeof(T));
            cur_ += 4 + sizeof(T);
        }
    }
    // std::vector<bool> (packed bits, no data()): unpacked into bools_ as one byte per
    // element, then put like any bool array. bools_ only grows: no allocation once it has
    // held the longest vector.
    template <class A>
    void put_bools(std::string_view name, const std::vector<bool, A>& v) {
        const std::size_t n = v.size();
        if (bools_.size() < n) bools_.resize(n);
        for (std::size_t i = 0; i < n; ++i) bools_[i] = v[i] ? 1 : 0;
        Shape shape;
        shape.rank = 1;
        shape.dims[0] = n;
        put(name, DType::boolean, shape, bools_.data(), n);
    }
    // Closes the open event and ships the current batch (done(), or before a summary).
    void flush();
    std::uint64_t events() const noexcept { return event_no_; }
    std::int64_t last_ts() const noexcept { return ts_; }  // the open (or last) event's
    // The fields defined so far, by id (a routed Sender sends them ahead of batches).
    std::size_t field_count() const noexcept { return fields_.size(); }
    const FieldMeta& field_meta(std::uint32_t id) const { return fields_[id].meta; }
    // Summary names, checked against the fields in both orders: a summary whose name a
    // field has (or needs as a group) is Errc::name, and so is a later field like that.
    void check_summary_name(std::string_view name) const;
    void add_summary_name(std::string_view name);

private:
    // An entry is committed once nothing that can throw remains: in a batch after
    // make_room(). In direct mode before the writer takes the value: the writer throws
    // only after a failed write, which is sticky (every later call throws it again, so the
    // open event is moot), or when memory runs out.
    void commit(std::uint32_t id) noexcept {
        fields_[id].last_event = event_no_;
        ++pos_;
        ++entries_;
    }
    void direct_value(std::uint32_t id, const void* data) {
        commit(id);
        sink_->value(id, data);
    }
    // A var_ value of n rows: [id][u32 n][n rows]. The group's length field (defined like
    // any field) travels in no entry of its own: the server gives it the first row count of
    // the group in each event (a later field of the group must have as many rows: checked
    // here). In direct mode the length goes to the writer as a value.
    static bool is_row_shape(const Shape& row, const Shape& value) noexcept {
        if (value.rank != row.rank + 1) return false;
        for (int i = 0; i < row.rank; ++i)
            if (value.dims[static_cast<std::size_t>(i) + 1] != row.dims[static_cast<std::size_t>(i)]) return false;
        return true;
    }
    // Inline in put(): a call's register saves cost a var_ value a fifth of its packing.
#if defined(__GNUC__)
    __attribute__((always_inline))
#endif
    void put_rows(std::uint32_t id, std::uint64_t n, const void* data, std::size_t bytes) {
        const std::uint32_t lid = fields_[id].len_id;
        ClientField& len = fields_[lid];
        const bool first = len.last_event != event_no_;
        if (!first && len.len != n) length_mismatch(id, n);
        if (n > UINT32_MAX) too_many_rows(id, n);
        if (direct_) {
            const auto value = static_cast<std::int64_t>(n);
            if (first) commit_length(len, n);
            commit(id);
            if (first) sink_->value(lid, &value);
            sink_->rows(id, data, n);
            return;
        }
        const std::size_t need = 8 + bytes;
        if (static_cast<std::size_t>(end_ - cur_) < need) make_room(need, id);
        if (first) commit_length(len, n);  // nothing below throws
        commit(id);
        const auto rows = static_cast<std::uint32_t>(n);
        std::memcpy(cur_, &id, 4);
        std::memcpy(cur_ + 4, &rows, 4);
        if (bytes) std::memcpy(cur_ + 8, data, bytes);
        cur_ += 8 + bytes;
    }
    void commit_length(ClientField& len, std::uint64_t n) noexcept {
        len.last_event = event_no_;
        len.len = n;
    }
    [[noreturn]] void too_many_rows(std::uint32_t id, std::uint64_t n) const;
    [[noreturn]] void length_mismatch(std::uint32_t id, std::uint64_t n) const;
    [[noreturn]] void length_mismatch(std::string_view name, const ClientField& len, std::uint64_t n) const;
    void start_event(std::int64_t ts);
    void cross(std::int64_t ts);
    void close_event();
    std::uint32_t resolve(std::string_view name, DType dt, const Shape& shape);
    [[noreturn]] static void null_value(std::string_view name, DType dt, const Shape& shape);
    void write_definition(std::uint32_t id, std::string_view name, DType dt, const Shape& shape,
                          std::size_t value_bytes);
    void check_event_limit(std::size_t need, std::string_view field) const;
    void make_room(std::size_t need, std::uint32_t id);
    void ship_completed() { ship_completed(ts_); }  // ts_: the last event's, or the open one's
    void ship_completed(std::int64_t bound);
    std::uint32_t lookup(std::string_view name) const noexcept;
    void index_insert(std::uint32_t id);
    void check_clash(std::string_view name, bool summary) const;

    Sink* sink_;
    const std::int64_t* cut_;         // sink_->cut()
    std::vector<unsigned char>* buf_;
    unsigned char* cur_ = nullptr;
    unsigned char* end_ = nullptr;
    std::size_t batch_size_, batch_bytes_;
    std::size_t ev_off_ = 0;          // offset of the open event in buf_
    std::uint32_t entries_ = 0;       // entries of the open event
    std::uint32_t done_events_ = 0;   // complete events in buf_
    bool open_ = false;
    bool split_ = false;              // the open event outgrew the batch: ship the ones before it
    bool direct_ = false;             // serial without callbacks: values skip the batch
    std::int64_t ts_ = 0;             // timestamp of the open (or last) event
    std::uint64_t event_no_ = 0;      // events started so far (1-based number of the open one)
    std::size_t pos_ = 0;             // entry position in the open event
    std::vector<std::uint32_t> seq_;  // field ids of the previous events, by position
    std::vector<ClientField> fields_;
    std::vector<std::uint32_t> index_;  // open-addressing hash: name -> id + 1 (0 = empty)
    std::vector<std::string> summaries_;  // summary names saved so far, sorted
    std::vector<unsigned char> scratch_;
    Periodic age_;                    // ships a partly filled batch (checkpoints)
    std::vector<unsigned char> bools_;  // put_bools(): a std::vector<bool>, one byte per element
};

// Shared by Field::value/values: copy out of a possibly unaligned entry after checking type.
void check_field_type(const FieldMeta& meta, DType want, bool scalar);

}  // namespace detail

// ============================================================================ [>>templates]
// 8. SmallData templates: event(), summaries, reductions, views, Field access.

namespace detail {
template <class T, class Dims>
View<T> make_view(const T* data, const Dims& shape) {  // shape: any sized range of extents
    if (shape.size() > static_cast<std::size_t>(max_rank))
        throw_error(Errc::usage, "smalldata::view: at most " + std::to_string(max_rank) + " dimensions, got " +
                                     std::to_string(shape.size()));
    View<T> v;
    v.data = data;
    v.shape.rank = static_cast<std::uint8_t>(shape.size());
    std::size_t i = 0;
    for (auto d : shape) v.shape.dims[i++] = d;
    return v;
}
}  // namespace detail
template <class T>
View<T> view(const T* data, std::initializer_list<std::uint64_t> shape) {
    return detail::make_view(data, shape);
}
template <class T>
View<T> view(const T* data, const std::vector<std::uint64_t>& shape) {
    return detail::make_view(data, shape);
}

template <class T>
T Field::value() const {
    static_assert(detail::scalar_dtype<T>::ok, "Field::value<T>: T must be a supported scalar type");
    detail::check_field_type(*e_->meta, detail::scalar_dtype<T>::value, true);
    T v;
    std::memcpy(&v, e_->data, sizeof(T));
    return v;
}
template <class T>
std::vector<T> Field::values() const {
    static_assert(detail::scalar_dtype<T>::ok, "Field::values<T>: T must be a supported scalar type");
    detail::check_field_type(*e_->meta, detail::scalar_dtype<T>::value, false);
    std::vector<T> v(static_cast<std::size_t>(e_->rows * e_->meta->shape.count()));
    if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> has no data(): one by one
        const unsigned char* p = static_cast<const unsigned char*>(e_->data);
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = p[i] != 0;
    } else if (!v.empty()) {
        std::memcpy(static_cast<void*>(v.data()), e_->data, v.size() * sizeof(T));
    }
    return v;
}

template <class Timestamp, class... NameValue>
void SmallData::event(Timestamp timestamp, NameValue&&... name_value_pairs) {
    static_assert(std::is_integral_v<Timestamp> && !std::is_same_v<Timestamp, bool>,
                  "smalldata::event: the timestamp must be an integer");
    static_assert(sizeof...(NameValue) % 2 == 0,
                  "smalldata::event: arguments after the timestamp must be name/value pairs "
                  "(an even count)");
    if (!packer_) return event_after_done();  // servers, other ranks: nothing; after done(): usage
    if (detail::stop_requested.load(std::memory_order_relaxed) != 0) return stop_at_event();
    if constexpr (std::is_unsigned_v<Timestamp> && sizeof(Timestamp) >= 8) {
        if (timestamp > static_cast<Timestamp>(INT64_MAX))
            detail::throw_error(Errc::usage, "smalldata::event: timestamp " + std::to_string(timestamp) +
                                                 " does not fit in int64");
    }
    packer_->begin(static_cast<std::int64_t>(timestamp));
    if constexpr (sizeof...(NameValue) > 0) put_pairs(std::forward<NameValue>(name_value_pairs)...);
}

template <class N, class V, class... Rest>
void SmallData::put_pairs(N&& name, V&& value, Rest&&... rest) {
    using Name = std::decay_t<N>;
    using Val = std::decay_t<V>;
    static_assert(detail::is_name<Name>,
                  "smalldata::event: a field name must be a string (const char*, std::string, "
                  "std::string_view)");
    static_assert(detail::is_vector_bool<Val> || detail::value_traits<Val>::ok,
                  "smalldata::event: unsupported value type (supported: fixed-width integers, "
                  "float, double, bool, std::vector or std::array of those, smalldata::View)");
    if constexpr (detail::is_vector_bool<Val>) {
        packer_->put_bools(std::string_view(name), value);
    } else if constexpr (detail::value_traits<Val>::ok) {
        using Tr = detail::value_traits<Val>;
        const std::string_view n(name);
        if constexpr (Tr::scalar)
            packer_->put_scalar(n, value);
        else
            packer_->put(n, Tr::dtype, Tr::shape(value), Tr::data(value), Tr::bytes(value));
    }
    if constexpr (sizeof...(Rest) > 0) put_pairs(std::forward<Rest>(rest)...);
}

template <class... NameValue>
void SmallData::save_summary(NameValue&&... name_value_pairs) {
    static_assert(sizeof...(NameValue) % 2 == 0,
                  "smalldata::save_summary: arguments must be name/value pairs (an even count)");
    if constexpr (sizeof...(NameValue) > 0) summary_pairs(std::forward<NameValue>(name_value_pairs)...);
}

namespace detail {
template <class V> struct is_optional : std::false_type {};
template <class T> struct is_optional<std::optional<T>> : std::true_type {};
// A std::vector<bool> as bytes 0/1 (summaries, attributes: not the hot path).
template <class A>
std::vector<unsigned char> bool_bytes(const std::vector<bool, A>& v) {
    std::vector<unsigned char> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = v[i] ? 1 : 0;
    return out;
}
inline Shape shape_1d(std::size_t n) noexcept {
    Shape s;
    s.rank = 1;
    s.dims[0] = n;
    return s;
}
}  // namespace detail

template <class N, class V, class... Rest>
void SmallData::summary_pairs(N&& name, V&& value, Rest&&... rest) {
    using Val = std::decay_t<V>;
    static_assert(detail::is_name<std::decay_t<N>>, "smalldata::save_summary: a name must be a string");
    const std::string_view n(name);
    if constexpr (detail::is_optional<Val>::value) {
        if (value.has_value())
            summary_pairs(n, *value);
        else
            warn_skipped_summary(n);
    } else if constexpr (std::is_convertible_v<const Val&, std::string_view> &&
                         !detail::value_traits<Val>::ok) {
        save_summary_string(n, std::string(std::string_view(value)));
    } else if constexpr (detail::is_vector_bool<Val>) {
        const std::vector<unsigned char> bytes = detail::bool_bytes(value);
        save_summary_raw(n, DType::boolean, detail::shape_1d(bytes.size()), bytes.data());
    } else {
        static_assert(detail::is_optional<Val>::value || detail::value_traits<Val>::ok,
                      "smalldata::save_summary: unsupported value type (supported: arithmetic "
                      "scalars, std::vector/std::array of them, smalldata::View, std::string, "
                      "std::optional of those)");
        using Tr = detail::value_traits<Val>;
        save_summary_raw(n, Tr::dtype, Tr::shape(value), Tr::data(value));
    }
    if constexpr (sizeof...(Rest) > 0) summary_pairs(std::forward<Rest>(rest)...);
}

template <class Value>
void SmallData::save_attribute(std::string_view path, std::string_view name, const Value& value) {
    if constexpr (std::is_convertible_v<const Value&, std::string_view> && !detail::value_traits<Value>::ok) {
        save_attribute_string(path, name, std::string_view(value));
    } else if constexpr (detail::is_vector_bool<Value>) {
        const std::vector<unsigned char> bytes = detail::bool_bytes(value);
        save_attribute_raw(path, name, DType::boolean, detail::shape_1d(bytes.size()), bytes.data());
    } else {
        static_assert(detail::value_traits<Value>::ok,
                      "smalldata::save_attribute: unsupported value type (supported: std::string, "
                      "const char*, std::string_view, arithmetic scalars, std::vector/std::array of "
                      "them, smalldata::View)");
        using Tr = detail::value_traits<Value>;
        save_attribute_raw(path, name, Tr::dtype, Tr::shape(value), Tr::data(value));
    }
}

namespace detail {
enum ReduceOp : int { op_sum = 0, op_min = 1, op_max = 2 };
// Reductions go to MPI in pieces of at most this many bytes (and INT_MAX elements, MPI's
// count), so that any element count works; one piece up to 1 GiB. A test lowers it.
inline std::size_t reduce_piece_bytes = std::size_t(1) << 30;
template <class T> struct reduce_traits { static constexpr bool ok = false; };
template <class T> struct reduce_traits<std::vector<T>> {
    static constexpr bool ok = scalar_dtype<T>::ok && !std::is_same_v<T, bool>;
    using element = T;
};
template <class T, std::size_t N> struct reduce_traits<std::array<T, N>> {
    static constexpr bool ok = scalar_dtype<T>::ok && !std::is_same_v<T, bool>;
    using element = T;
};
template <class T>
inline constexpr bool reducible = (std::is_arithmetic_v<T> && scalar_dtype<T>::ok && !std::is_same_v<T, bool>) ||
                                  reduce_traits<T>::ok;
}  // namespace detail

template <class T>
T SmallData::reduce(const T& value, int op) {
    static_assert(detail::reducible<T>,
                  "smalldata reductions take arithmetic scalars (not bool) or std::vector / "
                  "std::array of them");
    check_reduce_role(op);
    T out = value;
    bool any = false;
    if constexpr (std::is_arithmetic_v<T>) {
        agree_call(op, detail::scalar_dtype<T>::value, 0, 1, true, any);
        reduce_raw(&out, 1, detail::scalar_dtype<T>::value, op, true);
    } else {
        using E = typename detail::reduce_traits<T>::element;
        agree_call(op, detail::scalar_dtype<E>::value, std::is_same_v<T, std::vector<E>> ? 2 : 1, out.size(), true, any);
        reduce_raw(out.data(), out.size(), detail::scalar_dtype<E>::value, op, true);
    }
    return out;
}
template <class T>
std::optional<T> SmallData::reduce_opt(const std::optional<T>& value, int op) {
    static_assert(detail::reducible<T>,
                  "smalldata reductions take arithmetic scalars (not bool) or std::vector / "
                  "std::array of them");
    check_reduce_role(op);
    const bool mine = value.has_value();
    T out = mine ? *value : T{};
    bool any = false;
    if constexpr (std::is_arithmetic_v<T>) {
        agree_call(op, detail::scalar_dtype<T>::value, 0, 1, mine, any);
        if (!any) return std::nullopt;  // agreed: every client returns here
        reduce_raw(&out, 1, detail::scalar_dtype<T>::value, op, mine);
    } else {
        using E = typename detail::reduce_traits<T>::element;
        constexpr bool vec = std::is_same_v<T, std::vector<E>>;
        const std::size_t n = agree_call(op, detail::scalar_dtype<E>::value, vec ? 2 : 1, out.size(), mine, any);
        if (!any) return std::nullopt;
        if constexpr (vec) out.resize(n);
        reduce_raw(out.data(), out.size(), detail::scalar_dtype<E>::value, op, mine);
    }
    return out;
}
template <class T> T SmallData::sum(const T& value) { return reduce(value, detail::op_sum); }
template <class T> T SmallData::min(const T& value) { return reduce(value, detail::op_min); }
template <class T> T SmallData::max(const T& value) { return reduce(value, detail::op_max); }
template <class T> std::optional<T> SmallData::sum(const std::optional<T>& v) { return reduce_opt(v, detail::op_sum); }
template <class T> std::optional<T> SmallData::min(const std::optional<T>& v) { return reduce_opt(v, detail::op_min); }
template <class T> std::optional<T> SmallData::max(const std::optional<T>& v) { return reduce_opt(v, detail::op_max); }

template <class T>
bool SmallData::reduce_in_place(T* data, const std::uint64_t* dims, std::size_t rank, int op, bool contributes) {
    using E = std::remove_const_t<T>;
    static_assert(!std::is_const_v<T>,
                  "smalldata in-place reductions need a mutable buffer (T*, not const T*): the result "
                  "replaces its contents");
    static_assert(std::is_arithmetic_v<E> && detail::reducible<E>,
                  "smalldata in-place reductions take a buffer of arithmetic scalars (not bool)");
    if constexpr (!std::is_const_v<T> && std::is_arithmetic_v<E> && detail::reducible<E>)
        return reduce_buffer(data, detail::scalar_dtype<E>::value, dims, rank, op, contributes);
    else
        return false;
}
template <class T> bool SmallData::sum(T* data, std::initializer_list<std::uint64_t> shape, bool contributes) {
    return reduce_in_place(data, shape.begin(), shape.size(), detail::op_sum, contributes);
}
template <class T> bool SmallData::min(T* data, std::initializer_list<std::uint64_t> shape, bool contributes) {
    return reduce_in_place(data, shape.begin(), shape.size(), detail::op_min, contributes);
}
template <class T> bool SmallData::max(T* data, std::initializer_list<std::uint64_t> shape, bool contributes) {
    return reduce_in_place(data, shape.begin(), shape.size(), detail::op_max, contributes);
}
template <class T> bool SmallData::sum(T* data, const std::vector<std::uint64_t>& shape, bool contributes) {
    return reduce_in_place(data, shape.data(), shape.size(), detail::op_sum, contributes);
}
template <class T> bool SmallData::min(T* data, const std::vector<std::uint64_t>& shape, bool contributes) {
    return reduce_in_place(data, shape.data(), shape.size(), detail::op_min, contributes);
}
template <class T> bool SmallData::max(T* data, const std::vector<std::uint64_t>& shape, bool contributes) {
    return reduce_in_place(data, shape.data(), shape.size(), detail::op_max, contributes);
}

}  // namespace smalldata

#endif  // SMALLDATA_HPP_INCLUDED

// =======================================================================================
// IMPLEMENTATION. Compiled once, in the translation unit that defines
// SMALLDATA_IMPLEMENTATION before including this header. A second include is harmless.
// =======================================================================================
#if defined(SMALLDATA_IMPLEMENTATION) && !defined(SMALLDATA_IMPLEMENTATION_INCLUDED)
#define SMALLDATA_IMPLEMENTATION_INCLUDED

#include <hdf5.h>
#include <fcntl.h>      // POSIX: output files are checked, replaced and renamed by path
#include <signal.h>     // POSIX: sigaction (SIGTERM and SIGINT end the run gracefully)
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__)
#include <sched.h>
#include <sys/file.h>   // flock: a directory locked while a file in it is replaced
#include <sys/mman.h>   // madvise: large buffers ask for transparent huge pages
#include <sys/vfs.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <queue>
#include <random>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>

#if H5_VERS_MAJOR < 1 || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR < 10)
#error "smalldata.hpp needs HDF5 1.10 or newer (virtual datasets)"
#endif

namespace smalldata {

// ============================================================================ [>>impl-errors]
// 9. Errors, logging, validation: the text of every error, and every check of what a user
//    gives (options, layout, names, value sizes, kinds of a field), plus fill values.

const char* dtype_name(DType t) noexcept {
    switch (t) {
        case DType::i8: return "int8";
        case DType::i16: return "int16";
        case DType::i32: return "int32";
        case DType::i64: return "int64";
        case DType::u8: return "uint8";
        case DType::u16: return "uint16";
        case DType::u32: return "uint32";
        case DType::u64: return "uint64";
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        case DType::boolean: return "bool";
    }
    return "?";
}

std::size_t dtype_size(DType t) noexcept {
    switch (t) {
        case DType::i8: case DType::u8: case DType::boolean: return 1;
        case DType::i16: case DType::u16: return 2;
        case DType::i32: case DType::u32: case DType::f32: return 4;
        case DType::i64: case DType::u64: case DType::f64: return 8;
    }
    return 0;
}

std::string Shape::str() const {
    std::string s = "(";
    for (int i = 0; i < rank; ++i) {
        if (i) s += ", ";
        s += std::to_string(dims[static_cast<std::size_t>(i)]);
    }
    return s + ")";
}

const char* errc_name(Errc c) noexcept {
    switch (c) {
#define SMALLDATA_X_NAME(id, text) case Errc::id: return #id;
        SMALLDATA_ERRORS(SMALLDATA_X_NAME)
#undef SMALLDATA_X_NAME
    }
    return "?";
}

const char* errc_description(Errc c) noexcept {
    switch (c) {
#define SMALLDATA_X_TEXT(id, text) case Errc::id: return text;
        SMALLDATA_ERRORS(SMALLDATA_X_TEXT)
#undef SMALLDATA_X_TEXT
    }
    return "?";
}

const char* role_name(Role r) noexcept {
    switch (r) {
        case Role::serial: return "serial";
        case Role::client: return "client";
        case Role::server: return "server";
        case Role::other: return "other";
    }
    return "?";
}

const char* log_level_name(LogLevel l) noexcept {
    switch (l) {
        case LogLevel::info: return "info";
        case LogLevel::warning: return "warning";
        case LogLevel::error: return "error";
    }
    return "?";
}

namespace detail {

// "smalldata[rank 3, client 1]" once the roles are known; "smalldata" before.
inline std::string& who() {
    static std::string w = "smalldata";
    return w;
}

// Logging: every message of the library goes through emit(), to the logger of the most
// recent live SmallData that has one (Options::logger), else to stderr. One mutex
// serialises the calls (the write thread may warn too).
struct LogState {
    std::recursive_mutex mutex;            // recursive: a failure path may log while logging
    std::vector<const Logger*> loggers;    // of the live SmallData objects, oldest first
};
inline LogState& log_state() {
    static LogState s;
    return s;
}
// Makes `logger` (a member of Options, which outlives this scope) current while alive.
class LogScope {
public:
    explicit LogScope(const Logger* logger) : logger_(logger) {
        std::lock_guard<std::recursive_mutex> g(log_state().mutex);
        log_state().loggers.push_back(logger_);
    }
    ~LogScope() {
        std::lock_guard<std::recursive_mutex> g(log_state().mutex);
        auto& v = log_state().loggers;
        for (auto it = v.end(); it != v.begin();)
            if (*--it == logger_) {
                v.erase(it);
                break;
            }
    }
    LogScope(const LogScope&) = delete;
    LogScope& operator=(const LogScope&) = delete;
private:
    const Logger* logger_;
};
// One message, complete (source prefix included, no final newline).
inline void emit(LogLevel level, const std::string& message) noexcept {
    try {
        std::lock_guard<std::recursive_mutex> g(log_state().mutex);
        const auto& v = log_state().loggers;
        for (auto it = v.rbegin(); it != v.rend(); ++it)
            if (**it) {
                try {
                    (**it)(level, message);
                    return;
                } catch (...) {
                    std::fprintf(stderr, "smalldata: the logger threw an exception; its message follows\n");
                }
                break;
            }
    } catch (...) {  // the mutex or the allocation failed: still print
    }
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
}
// A message from this rank: "<who>: " + "warning: " / "fatal: " by level + text.
inline void log(LogLevel level, const std::string& text) noexcept {
    try {
        emit(level, who() + (level == LogLevel::warning ? ": warning: " : level == LogLevel::error ? ": fatal: " : ": ") +
                        text);
    } catch (...) {
        std::fprintf(stderr, "smalldata: %s\n", text.c_str());
    }
}

[[noreturn]] void throw_error(Errc code, const std::string& message, int library_code) {
    throw Error(code, who() + ": " + message, library_code);
}

// A message without the "smalldata...: " that throw_error put in front: for messages
// gathered into another error or a fatal line, which get their own.
inline std::string bare_text(const std::string& what) {
    const std::string prefix = who() + ": ";
    return what.compare(0, prefix.size(), prefix) == 0 ? what.substr(prefix.size()) : what;
}
inline std::string bare_message(const std::exception& e) { return bare_text(e.what()); }

inline void warn(const std::string& message) { log(LogLevel::warning, message); }

void check_field_type(const FieldMeta& meta, DType want, bool scalar) {
    if (meta.dtype != want)
        throw_error(Errc::type_mismatch, "field '" + meta.name + "' has type " + dtype_name(meta.dtype) +
                                             ", read as " + dtype_name(want));
    if (scalar && meta.var)
        throw_error(Errc::shape_mismatch, "field '" + meta.name + "' is a var_ field (rows of any number), read as a "
                                              "scalar (use get_vector, or its length field)");
    if (scalar && meta.shape.rank != 0)
        throw_error(Errc::shape_mismatch, "field '" + meta.name + "' has shape " + meta.shape.str() +
                                              ", read as a scalar (use get_vector)");
}

// Validation of names and sizes, in one place (every field, summary and attribute passes
// here once):
//   names   non-empty components separated by single '/', no '.' or '..' component, no
//           NUL byte (HDF5 would cut the name there), at most 65535 bytes, and not the
//           reserved "timestamp". Any other byte is allowed; '%' is escaped where HDF5
//           reads names as patterns (the join's virtual datasets).
//   sizes   one value at most max_value_bytes (2 GiB, what one message carries), with the
//           element count computed without overflow.
// Throws Errc::name unless `name` is a valid dataset path.
inline void validate_name(std::string_view name, const char* what) {
    auto bad = [&](const char* why) {
        std::string shown;
        for (char c : name.substr(0, 200)) shown += c == '\0' ? std::string("\\0") : std::string(1, c);
        throw_error(Errc::name, std::string(what) + " name '" + shown + "' is invalid: " + why);
    };
    if (name.empty()) bad("it is empty");
    if (name.find('\0') != std::string_view::npos) bad("it contains a NUL byte");
    if (name.size() > 65535) bad("it is longer than 65535 bytes");
    if (name.front() == '/') bad("it starts with '/'");
    if (name.back() == '/') bad("it ends with '/'");
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t slash = name.find('/', start);
        if (slash == std::string_view::npos) slash = name.size();
        std::string_view comp = name.substr(start, slash - start);
        if (comp.empty()) bad("it contains '//'");
        if (comp == "." || comp == "..") bad("it has a '.' or '..' component");
        if (start == 0 && comp == "timestamp") bad("'timestamp' is reserved for the event timestamps");
        start = slash + 1;
    }
}

inline constexpr std::uint64_t max_value_bytes = std::uint64_t(1) << 31;  // one value, in bytes (< max_event_bytes)

// Bytes of one value of `shape`, or false if that overflows or exceeds max_value_bytes.
inline bool value_bytes(DType dt, const Shape& shape, std::uint64_t& out) {
    std::uint64_t n = dtype_size(dt);
    bool zero = false;
    for (int i = 0; i < shape.rank; ++i) {
        const std::uint64_t d = shape.dims[static_cast<std::size_t>(i)];
        if (d > max_value_bytes) return false;  // also no HDF5 dimension beyond 2^31
        if (d == 0) zero = true;
        else if (n > max_value_bytes / d) return false;
        else n *= d;
    }
    out = zero ? 0 : n;
    return out <= max_value_bytes - 64 * 1024;
}

// "a" is a group of "a/b" (and of "a/b/c"), not of "ab".
inline bool is_group_of(std::string_view group, std::string_view name) {
    return name.size() > group.size() && name.compare(0, group.size(), group) == 0 && name[group.size()] == '/';
}

// A field whose last path component starts with "unaligned_" is exempt from fill rows.
inline bool is_unaligned(std::string_view name) {
    std::size_t slash = name.rfind('/');
    std::string_view last = slash == std::string_view::npos ? name : name.substr(slash + 1);
    return last.substr(0, 10) == "unaligned_";
}

// var_ fields (psana's rule): the first path component that starts with "var_" makes a
// field variable-length, and names its group: the fields under "a/var_p" share the
// lengths in "a/var_p_len". var_prefix: the bytes of the name up to and including that
// component, 0 if it has none.
inline std::size_t var_prefix(std::string_view name) {
    for (std::size_t start = 0; start < name.size();) {
        std::size_t slash = name.find('/', start);
        if (slash == std::string_view::npos) slash = name.size();
        if (name.compare(start, 4, "var_") == 0) return slash;
        start = slash + 1;
    }
    return 0;
}
// A component "var_..._len" (8 bytes or more) is a length dataset's name, or a group that
// would clash with one: reserved for the library.
inline bool is_length_component(std::string_view c) {
    return c.size() >= 8 && c.compare(0, 4, "var_") == 0 && c.compare(c.size() - 4, 4, "_len") == 0;
}
// The length field of a var_ group: its first var_ component is its last one, "var_..._len".
inline bool is_length_name(std::string_view name) {
    const std::size_t p = var_prefix(name);
    if (p != name.size()) return false;
    const std::size_t slash = name.rfind('/');
    return is_length_component(slash == std::string_view::npos ? name : name.substr(slash + 1));
}
// The data of a var_ field (not its length field).
inline bool is_var_name(std::string_view name) { return var_prefix(name) != 0 && !is_length_name(name); }
// "a/var_p/x" -> "a/var_p_len".
inline std::string length_name(std::string_view var_field) {
    return std::string(var_field.substr(0, var_prefix(var_field))) + "_len";
}
// The names users may not give a field: any "var_..._len" component (the library's length
// fields), a var_ field whose name ends in "_len", a var_ field that is also unaligned_.
inline void check_user_field_name(std::string_view name) {
    for (std::size_t start = 0; start < name.size();) {
        std::size_t slash = name.find('/', start);
        if (slash == std::string_view::npos) slash = name.size();
        if (is_length_component(name.substr(start, slash - start)))
            throw_error(Errc::name, "field name '" + std::string(name) + "' is reserved: a component 'var_..._len' " +
                                        "names the lengths of a var_ group");
        start = slash + 1;
    }
    if (var_prefix(name) == 0) return;
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, "_len") == 0)
        throw_error(Errc::name, "field name '" + std::string(name) + "': a var_ field's name must not end in '_len'");
    if (is_unaligned(name))
        throw_error(Errc::name, "field '" + std::string(name) + "' cannot be both var_ and unaligned_");
}

// Every proper group prefix of a path: "a/b/c" -> "a", "a/b".
inline void for_each_group(std::string_view name, const std::function<void(std::string_view)>& f) {
    for (std::size_t i = name.find('/'); i != std::string_view::npos; i = name.find('/', i + 1))
        f(name.substr(0, i));
}

// Fill value of one element: signed -99999 (the type's minimum where that does not fit),
// unsigned the maximum, floats NaN, bool false; 0 in a var_ group's length field (no rows).
inline std::array<unsigned char, 8> fill_bytes(DType t, bool length = false) {
    std::array<unsigned char, 8> b{};
    if (length) return b;
    auto put = [&](auto v) { std::memcpy(b.data(), &v, sizeof(v)); };
    switch (t) {
        case DType::i8: put(std::numeric_limits<std::int8_t>::min()); break;
        case DType::i16: put(std::numeric_limits<std::int16_t>::min()); break;
        case DType::i32: put(std::int32_t(-99999)); break;
        case DType::i64: put(std::int64_t(-99999)); break;
        case DType::u8: put(std::numeric_limits<std::uint8_t>::max()); break;
        case DType::u16: put(std::numeric_limits<std::uint16_t>::max()); break;
        case DType::u32: put(std::numeric_limits<std::uint32_t>::max()); break;
        case DType::u64: put(std::numeric_limits<std::uint64_t>::max()); break;
        case DType::f32: put(std::numeric_limits<float>::quiet_NaN()); break;
        case DType::f64: put(std::numeric_limits<double>::quiet_NaN()); break;
        case DType::boolean: put(std::int8_t(0)); break;
    }
    return b;
}

inline bool valid_dtype(std::uint8_t v) { return v <= static_cast<std::uint8_t>(DType::boolean); }

// The description of a new field from its first value: name and size validated.
inline FieldMeta make_meta(std::string_view name, DType dt, const Shape& shape) {
    validate_name(name, "field");
    FieldMeta m;
    m.name = std::string(name);
    m.dtype = dt;
    m.shape = shape;
    std::uint64_t bytes = 0;
    if (shape.rank > max_rank || !value_bytes(dt, shape, bytes))
        throw_error(Errc::usage, "field '" + m.name + "': one value of " + dtype_name(dt) + " " + shape.str() +
                                     " is larger than 2 GiB, the limit of one value");
    m.bytes = static_cast<std::size_t>(bytes);
    m.length = is_length_name(name);
    m.var = !m.length && var_prefix(name) != 0;
    m.aligned = !m.var && !is_unaligned(name);
    if (m.length && (dt != DType::i64 || shape.rank != 0))
        throw_error(Errc::protocol, "length field '" + m.name + "' must be an int64 scalar");
    return m;
}

// The same field given again: Errc::type_mismatch or shape_mismatch naming both kinds and
// where each came from ("as first given", "timestamp 5", "from client 1 (rank 3)").
inline void check_same_kind(const FieldMeta& f, DType dt, const Shape& shape, const std::string& then,
                            const std::string& now) {
    if (f.dtype != dt)
        throw_error(Errc::type_mismatch, "field '" + f.name + "' is " + dtype_name(f.dtype) + " (" + then + ") but " +
                                             dtype_name(dt) + " (" + now + ")");
    const char* what = f.var ? " rows of shape " : " shape ";
    if (f.shape != shape)
        throw_error(Errc::shape_mismatch, "field '" + f.name + "' has" + what + f.shape.str() + " (" + then +
                                              ") but" + what + shape.str() + " (" + now + ")");
}

// An attribute's name or path for messages: NUL bytes shown, at most 200 bytes.
inline std::string attribute_text(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 200)) out += c == '\0' ? std::string("\\0") : std::string(1, c);
    return s.size() > 200 ? out + "..." : out;
}
// "attribute 'units' of 'det/roi'", for messages.
inline std::string attribute_what(std::string_view path, std::string_view name) {
    return "attribute '" + attribute_text(name) + "' of '" + attribute_text(path) + "'";
}

// An attribute (save_attribute): its path is "" (the root group) or a name as above, where
// "timestamp" is allowed (the timestamps' dataset); its name is not empty, has no NUL byte,
// at most 65534 bytes (what HDF5 stores, with the NUL byte that ends it), and does not start
// with "smalldata_" (the library's own attributes, such as the run token on the root
// group). Errc::name, naming both.
inline void validate_attribute(std::string_view path, std::string_view name) {
    const std::string what = "attribute '" + attribute_text(name) + "'";
    auto bad = [&](const std::string& why) { throw_error(Errc::name, what + " is invalid: " + why); };
    if (name.empty()) bad("its name is empty");
    if (name.find('\0') != std::string_view::npos) bad("its name contains a NUL byte");
    if (name.size() > 65534) bad("its name is longer than 65534 bytes, the most HDF5 stores");
    if (name.substr(0, 10) == "smalldata_") bad("names starting with 'smalldata_' are the library's own");
    if (path == "/") throw_error(Errc::name, what + ": the root group's path is \"\", not \"/\"");
    if (!path.empty() && path != "timestamp") validate_name(path, (what + ": path").c_str());
}

inline std::string compression_problem(const Compression& c);  // section 11

// Validation of the options, in one place: the first problem, or empty. In parallel mode
// it runs before any rank can diverge, and the result is agreed (Impl::agree_or_throw).
inline std::string option_problem(const Options& o) {
    if (o.batch_size < 1) return "batch_size must be at least 1";
    if (o.cache_size < 1) return "cache_size must be at least 1";
    if (o.batch_bytes < 1024) return "batch_bytes must be at least 1024, got " + std::to_string(o.batch_bytes);
    if (o.batch_bytes > max_batch_bytes) return "batch_bytes must be below 2 GiB";
    if (o.send_buffers < 1) return "send_buffers must be at least 1";
    if (o.recv_buffers < 1) return "recv_buffers must be at least 1";
    if (o.cache_bytes < 1) return "cache_bytes must be at least 1";
    if (o.chunk_bytes < 1) return "chunk_bytes must be at least 1";
    if (o.cache_memory < 1) return "cache_memory must be at least 1";
    if (o.idle_sleep_max_us < 1) return "idle_sleep_max_us must be at least 1";
    if (o.abort_grace_ms < 0 || o.abort_close_ms < 0) return "abort_grace_ms and abort_close_ms must not be negative";
    if (!(o.checkpoint_seconds >= 0 && o.checkpoint_seconds <= 1e6))
        return "checkpoint_seconds must be between 0 (off) and 1e6, got " + std::to_string(o.checkpoint_seconds);
    if (!(o.progress_seconds >= 0 && o.progress_seconds <= 1e9))
        return "progress_seconds must be between 0 (off) and 1e9, got " + std::to_string(o.progress_seconds);
    if (o.write_thread < -1 || o.write_thread > 1)
        return "write_thread must be -1 (automatic), 0 or 1, got " + std::to_string(o.write_thread);
    {
        std::string c = compression_problem(o.compression);
        if (!c.empty()) return c;
    }
    if (o.filename.find('\0') != std::string::npos) return "filename contains a NUL byte";
    if (!o.filename.empty() && o.filename.back() == '/') return "filename '" + o.filename + "' names a directory";
    return {};
}

// SMALLDATA_SERVERS=N in the environment sets o.servers. Returns what is wrong with it, or
// nothing (also when it is not set).
inline std::string servers_from_environment(Options& o) {
    const char* e = std::getenv("SMALLDATA_SERVERS");
    if (!e) return {};
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(e, &end, 10);
    if (*e == '\0' || *end != '\0' || errno != 0 || v < 1 || v > INT_MAX)
        return "SMALLDATA_SERVERS must be a whole number of servers, at least 1; got '" + std::string(e) + "'";
    o.servers = static_cast<int>(v);
    return {};
}

inline std::string layout_problem(const Options& o, int size) {
    const std::string sizes = " (" + std::to_string(size) + " ranks in comm, servers=" + std::to_string(o.servers) +
                              (std::getenv("SMALLDATA_SERVERS") ? " from SMALLDATA_SERVERS" : "") +
                              ", clients=" + std::to_string(o.clients) + ")";
    if (o.servers < 1) return "parallel mode needs at least one server" + sizes;
    if (o.clients == 0 || o.clients < -1) return "clients must be -1 (all the rest) or at least 1" + sizes;
    if (o.servers >= size) return "no rank is left for a client" + sizes;
    const int clients = o.clients == -1 ? size - o.servers : o.clients;
    if (o.servers + clients > size) return "more ranks asked for than exist" + sizes;
    return {};
}

// A launcher that started N > 1 processes while the MPI library of this program sees a
// world of one (the mpiexec of one MPI implementation, a program built with another)
// would make N serial runs writing the same file. The launchers' own variables say N.
inline std::string launcher_problem(int world_size) {
    if (world_size != 1) return {};
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
        const char* v = std::getenv(var);
        if (v && std::atoi(v) > 1)
            return std::string("this process was started as one of ") + v + " processes (" + var + "=" + v +
                   "), but its MPI library reports a world of 1 process: the mpiexec used does not belong to the MPI "
                   "library the program was built with (for example Open MPI's mpiexec and an MPICH build); use the "
                   "matching mpiexec";
    }
    return {};
}

// Byte-level readers and writers for the wire format and the join metadata.
struct Reader {
    const unsigned char* p;
    const unsigned char* end;
    const std::string* source;
    void need(std::size_t n) const {
        if (static_cast<std::size_t>(end - p) < n)
            throw_error(Errc::protocol, "truncated message from " + *source);
    }
    template <class T> T get() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, p, sizeof(T));
        p += sizeof(T);
        return v;
    }
    std::string_view bytes(std::size_t n) {
        need(n);
        std::string_view s(reinterpret_cast<const char*>(p), n);
        p += n;
        return s;
    }
};
template <class T> inline void append_pod(std::vector<unsigned char>& out, const T& v) {
    const auto* b = reinterpret_cast<const unsigned char*>(&v);
    out.insert(out.end(), b, b + sizeof(T));
}

// ============================================================================ [>>impl-mpi]
// 10. MPI environment, requests, gentle waits: initialisation, error checks, and the one
//     waiting strategy every blocking point of the library uses (spin, yield, then sleep).

inline bool& aborting() {  // set by the abort protocol: exit handlers must not finalize
    static bool b = false;
    return b;
}

inline void finalize_mpi_at_exit() {
    if (aborting()) return;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

inline void ensure_mpi() {
    int init = 0;
    MPI_Initialized(&init);
    if (init) return;
    int fin = 0;
    MPI_Finalized(&fin);
    if (fin) throw_error(Errc::usage, "MPI was already finalized; create SmallData before MPI_Finalize");
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw_error(Errc::mpi, "MPI_Init_thread failed");
    std::atexit(finalize_mpi_at_exit);
}

inline void check_mpi(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    int cls = 0;
    if (MPI_Error_class(rc, &cls) != MPI_SUCCESS) cls = rc;
    throw_error(Errc::mpi, std::string(what) + " failed: " + std::string(text, static_cast<std::size_t>(len)), cls);
}

// Idle waiting without burning a core: 32 polls, 32 polls with yield, then sleeps that
// double from 1 us up to max_us. reset() after useful work.
class Backoff {
public:
    explicit Backoff(int max_us) : max_us_(max_us < 1 ? 1 : max_us) {}
    void pause() {
        if (n_ < 32) {
            ++n_;
        } else if (n_ < 64) {
            ++n_;
            std::this_thread::yield();
        } else {
            std::this_thread::sleep_for(std::chrono::microseconds(us_));
            if (us_ < max_us_) us_ = std::min(us_ * 2, max_us_);
        }
    }
    void reset() { n_ = 0; us_ = 1; }
private:
    int max_us_;
    int n_ = 0;
    int us_ = 1;
};

// Options::write_thread resolved: -1 uses a write thread when HDF5 is thread-safe (the
// program's own HDF5 calls may then overlap the thread's), this process may run on more
// than one core, and its node has more cores than ranks. With compression (which is done
// where the chunks are written) a server always has one, whatever write_thread says: it
// makes no HDF5 calls but the writer's, so its receive loop never waits for a compressor;
// the serial process has one with write_thread 1, or -1 with a thread-safe HDF5.
inline bool use_write_thread(const Options& o, int ranks_on_node, bool server) {
    const int option = o.write_thread;
    hbool_t threadsafe = false;
    if (o.compression.kind != Compression::Kind::none) {
        if (server) return true;
        if (option >= 0) return option > 0;
        return H5is_library_threadsafe(&threadsafe) >= 0 && threadsafe;
    }
    if (option >= 0) return option > 0;
    if (H5is_library_threadsafe(&threadsafe) < 0 || !threadsafe) return false;
    const unsigned cores = std::thread::hardware_concurrency();
    int mine = static_cast<int>(cores);
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) mine = CPU_COUNT(&set);
#endif
    return mine >= 2 && cores > static_cast<unsigned>(ranks_on_node);
}

inline double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Periodic::Periodic(double period) : period_(period), last_(now_seconds()), next_(last_ + period) {}

bool Periodic::read_clock() {
    const double t = now_seconds();
    const double step = t - last_;
    last_ = t;
    if (step > period_ / 4)
        stride_ = 1;  // slow calls, or a pause: read the clock at every call again
    else if (step < period_ / 64 && stride_ < 64)
        stride_ *= 2;
    countdown_ = stride_;
    if (t < next_) return false;
    next_ = t + period_;
    return true;
}

// When a failing process stops waiting (now_seconds()), 0 while none fails: a failing
// client ships its last events (abort_job), and every wait it makes then gives up by this
// time with Errc::mpi, so that a server that cannot take them does not hold up the abort.
inline std::atomic<double>& give_up_waits_at() noexcept {
    static std::atomic<double> at{0};
    return at;
}

// Waits gently until ready() returns true; every wait of the library is one of these.
template <class Ready>
void wait_until(Ready&& ready, int max_us) {
    Backoff b(max_us);
    while (!ready()) {
        const double give_up = give_up_waits_at().load(std::memory_order_relaxed);
        if (give_up > 0 && now_seconds() > give_up) throw_error(Errc::mpi, "gave up waiting: the job is ending");
        b.pause();
    }
}

// Waits for `req` gently; `poll` (may be empty) runs between tests (the server's abort check).
inline void wait_gently(MPI_Request& req, int max_us, MPI_Status* status = MPI_STATUS_IGNORE,
                        const std::function<void()>& poll = {}) {
    wait_until(
        [&] {
            int flag = 0;
            check_mpi(MPI_Test(&req, &flag, status), "MPI_Test");
            if (!flag && poll) poll();
            return flag != 0;
        },
        max_us);
}

inline bool all_done(MPI_Request* reqs, int n) {  // MPI_Testall, as a condition
    int flag = 0;
    check_mpi(MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE), "MPI_Testall");
    return flag != 0;
}
inline void wait_all_gently(MPI_Request* reqs, int n, int max_us) {
    wait_until([&] { return all_done(reqs, n); }, max_us);
}

inline bool mpi_finalized() noexcept {
    int fin = 0;
    MPI_Finalized(&fin);
    return fin != 0;
}

// Owners of MPI handles (communicators, groups, info objects): each frees its handle once,
// never throws, and does nothing once MPI is finalized. Freeing these is local to the
// process, so an owner may run during stack unwinding. Implicit conversion keeps call
// sites plain (MPI_Isend(..., im.comm, ...)); out() hands the slot to a creating call.
template <class H, int (*Free)(H*)>
class MpiOwner {
public:
    MpiOwner() noexcept : h_(null()) {}
    ~MpiOwner() { reset(); }
    MpiOwner(const MpiOwner&) = delete;
    MpiOwner& operator=(const MpiOwner&) = delete;
    operator H() const noexcept { return h_; }
    H* out() noexcept {
        reset();
        return &h_;
    }
    void reset() noexcept {
        if (h_ != null() && !mpi_finalized()) Free(&h_);
        h_ = null();
    }
private:
    static H null() noexcept;
    H h_;
};
template <> inline MPI_Comm MpiOwner<MPI_Comm, MPI_Comm_free>::null() noexcept { return MPI_COMM_NULL; }
template <> inline MPI_Group MpiOwner<MPI_Group, MPI_Group_free>::null() noexcept { return MPI_GROUP_NULL; }
template <> inline MPI_Info MpiOwner<MPI_Info, MPI_Info_free>::null() noexcept { return MPI_INFO_NULL; }
using CommOwner = MpiOwner<MPI_Comm, MPI_Comm_free>;
using GroupOwner = MpiOwner<MPI_Group, MPI_Group_free>;
using InfoOwner = MpiOwner<MPI_Info, MPI_Info_free>;

// Owner of the node's shared-memory window. Freeing a window is collective over the node
// (MPI_Win_free waits for every rank of it), so only free() does it, on a path every rank
// of the node takes (done(), or a failure agreed by every rank). Otherwise the window is
// left to MPI_Abort or MPI_Finalize: a destructor must not start a collective.
class WinOwner {
public:
    WinOwner() = default;
    WinOwner(const WinOwner&) = delete;
    WinOwner& operator=(const WinOwner&) = delete;
    operator MPI_Win() const noexcept { return w_; }
    MPI_Win* out() noexcept { return &w_; }
    void set_locked() noexcept { locked_ = true; }
    void free() noexcept {
        if (w_ == MPI_WIN_NULL || mpi_finalized()) return;
        if (locked_) MPI_Win_unlock_all(w_);
        locked_ = false;
        MPI_Win_free(&w_);
        w_ = MPI_WIN_NULL;
    }
private:
    MPI_Win w_ = MPI_WIN_NULL;
    bool locked_ = false;
};

inline MPI_Datatype mpi_type(DType t) {
    switch (t) {
        case DType::i8: return MPI_INT8_T;
        case DType::i16: return MPI_INT16_T;
        case DType::i32: return MPI_INT32_T;
        case DType::i64: return MPI_INT64_T;
        case DType::u8: return MPI_UINT8_T;
        case DType::u16: return MPI_UINT16_T;
        case DType::u32: return MPI_UINT32_T;
        case DType::u64: return MPI_UINT64_T;
        case DType::f32: return MPI_FLOAT;
        case DType::f64: return MPI_DOUBLE;
        case DType::boolean: return MPI_C_BOOL;
    }
    return MPI_BYTE;
}

enum Tag : int { tag_data = 11, tag_large = 12, tag_abort = 13, tag_abort_ack = 14, tag_abort_closed = 15, tag_progress = 16 };

// ============================================================================ [>>impl-hdf5]
// 11. HDF5 handles and types: RAII owners of hid_t, the error stack as text, the scoped
//     silencing of HDF5's automatic error printing, and the dtype -> HDF5 type table.
//     Also what the final file gets besides the fields: summaries (SummaryItem) and
//     attributes (AttributeItem), held until done() and written here.

class H5Id {
public:
    using Closer = herr_t (*)(hid_t);
    H5Id() = default;
    H5Id(hid_t id, Closer c) : id_(id), close_(c) {}
    H5Id(H5Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
    H5Id& operator=(H5Id&& o) noexcept {
        if (this != &o) { reset(); id_ = o.id_; close_ = o.close_; o.id_ = -1; }
        return *this;
    }
    H5Id(const H5Id&) = delete;
    H5Id& operator=(const H5Id&) = delete;
    ~H5Id() { reset(); }
    hid_t get() const noexcept { return id_; }
    bool valid() const noexcept { return id_ >= 0; }
    void reset() noexcept {
        if (id_ >= 0 && close_ && close_(id_) < 0) {
            H5Eclear2(H5E_DEFAULT);
            warn("closing " + describe() + " failed");  // a failed close leaves the id valid
        }
        id_ = -1;
    }
    // "'/x' of 'out.h5'", for messages; "an HDF5 object" when HDF5 cannot tell.
    std::string describe() const noexcept {
        try {
            H5E_auto2_t func = nullptr;
            void* data = nullptr;
            const bool saved = H5Eget_auto2(H5E_DEFAULT, &func, &data) >= 0;
            if (saved) H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
            char name[512] = "", file[1024] = "";
            const ssize_t n = H5Iget_name(id_, name, sizeof name);
            const ssize_t f = H5Fget_name(id_, file, sizeof file);
            H5Eclear2(H5E_DEFAULT);
            if (saved) H5Eset_auto2(H5E_DEFAULT, func, data);
            std::string out = n > 0 ? std::string("'") + name + "'" : std::string("an HDF5 object");
            if (f > 0) out += std::string(" of '") + file + "'";
            return out;
        } catch (...) {
            return "an HDF5 object";
        }
    }
    herr_t close() noexcept {  // for files: the caller checks the result
        herr_t r = id_ >= 0 && close_ ? close_(id_) : 0;
        id_ = -1;
        return r;
    }
private:
    hid_t id_ = -1;
    Closer close_ = nullptr;
};

// HDF5's error stack as text: its first four entries, and the system's error where a
// file driver reported one (the sec2 driver's "errno = N, error message = '...'", deep in
// the stack: a full disk, a missing directory, a permission).
struct H5StackText {
    std::string text;
    std::string system;  // the system's message, or empty
    int err = 0;         // its errno, or 0
    bool shown = false;  // its entry is among the first four
};
inline herr_t h5_walk(unsigned n, const H5E_error2_t* e, void* out) {
    auto* t = static_cast<H5StackText*>(out);
    if (e->desc && t->err == 0) {
        const char* no = std::strstr(e->desc, "errno = ");
        const char* msg = std::strstr(e->desc, "error message = '");
        if (no && msg) {
            t->err = std::atoi(no + 8);
            msg += 17;
            const char* end = std::strchr(msg, '\'');
            t->system.assign(msg, end ? static_cast<std::size_t>(end - msg) : std::strlen(msg));
            t->shown = n < 4;
        }
    }
    if (n >= 4) return 0;
    char maj[128] = "", min[128] = "";
    H5Eget_msg(e->maj_num, nullptr, maj, sizeof maj);
    H5Eget_msg(e->min_num, nullptr, min, sizeof min);
    t->text += std::string(n ? "; " : "") + maj + ": " + min + " (" + (e->desc ? e->desc : "") + ")";
    return 0;
}

// The current HDF5 error stack as text (then cleared), ending with the system's error
// when there is one; its errno in *err.
inline std::string h5_stack(int* err = nullptr) {
    H5StackText t;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_walk, &t);
    H5Eclear2(H5E_DEFAULT);
    if (err) *err = t.err;
    if (t.text.empty()) return "no HDF5 error details";
    if (t.err != 0 && !t.system.empty() && !t.shown) t.text += "; system error: " + t.system + " (errno " + std::to_string(t.err) + ")";
    return t.text;
}

// Errc::hdf5 with the error stack; library_code: the system's errno, when HDF5 had one.
[[noreturn]] inline void throw_h5(const std::string& what) {
    int err = 0;
    const std::string stack = h5_stack(&err);
    throw_error(Errc::hdf5, what + ": " + stack, err);
}
inline hid_t h5check(hid_t id, const std::string& what) {
    if (id < 0) throw_h5(what);
    return id;
}
inline void h5check_herr(herr_t r, const std::string& what) {
    if (r < 0) throw_h5(what);
}

// Silences HDF5's automatic error printing for its lifetime (restores the user's handler).
class H5Quiet {
public:
    H5Quiet() {
        saved_ = H5Eget_auto2(H5E_DEFAULT, &func_, &data_) >= 0;
        if (saved_) H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // else: leave printing as it is
    }
    ~H5Quiet() {
        if (saved_) H5Eset_auto2(H5E_DEFAULT, func_, data_);
    }
    H5Quiet(const H5Quiet&) = delete;
    H5Quiet& operator=(const H5Quiet&) = delete;
private:
    H5E_auto2_t func_ = nullptr;
    void* data_ = nullptr;
    bool saved_ = false;
};

// Options::compression in HDF5 terms. Filters are looked up (a plugin is loaded) when the
// options are checked, on every rank, so that a missing one is an error before any event;
// Writer::create() adds them to every per-event dataset (the one place).

// The name of a filter the HDF Group registered (their list of filter ids), or null.
inline const char* filter_name(unsigned id) noexcept {
    switch (id) {
        case 1: return "deflate";
        case 2: return "shuffle";
        case 3: return "fletcher32";
        case 4: return "szip";
        case 5: return "nbit";
        case 6: return "scaleoffset";
        case 305: return "LZO";
        case 307: return "bzip2";
        case 32000: return "LZF";
        case 32001: return "Blosc";
        case 32004: return "LZ4";
        case 32008: return "bitshuffle";
        case 32013: return "zfp";
        case 32015: return "Zstandard";
        case 32017: return "SZ";
        case 32026: return "Blosc2";
        default: return nullptr;
    }
}
// "HDF5 filter 32004 (LZ4)", for messages.
inline std::string filter_text(unsigned id) {
    const char* name = filter_name(id);
    return "HDF5 filter " + std::to_string(id) + (name ? std::string(" (") + name + ")" : std::string());
}
// The directories HDF5 searches for filter plugins, "a:b", for messages.
inline std::string plugin_path_text() {
    std::string out;
#if H5_VERSION_GE(1, 10, 1)
    H5Quiet q;
    unsigned n = 0;
    if (H5PLsize(&n) < 0) n = 0;
    for (unsigned i = 0; i < n; ++i) {
        const ssize_t len = H5PLget(i, nullptr, 0);
        if (len <= 0) continue;
        std::string dir(static_cast<std::size_t>(len) + 1, '\0');
        if (H5PLget(i, &dir[0], dir.size()) < 0) continue;
        dir.resize(static_cast<std::size_t>(len));
        out += (out.empty() ? "" : ":") + dir;
    }
    H5Eclear2(H5E_DEFAULT);
#endif
    return out.empty() ? std::string("its plugin directories") : out;
}
// A filter set by id, tried on a test chunk in memory (a core-driver file, nothing on
// disk), mandatory there, so that parameters it rejects (when a dataset is made, or when
// it compresses) are an error of the options instead of a failed or uncompressed write.
// It must accept one of int32, float32 or float64 (a filter such as zfp takes floats only)
// and give the values back. Empty: it does.
inline std::string filter_probe(const Compression& c) {
    std::string what = "compression: " + filter_text(c.filter_id) + " with parameters {";
    for (std::size_t i = 0; i < c.params.size(); ++i) what += (i ? ", " : "") + std::to_string(c.params[i]);
    what += "}";
    const hsize_t n = 4096;
    std::vector<double> in(n), out(n);
    for (hsize_t i = 0; i < n; ++i) in[i] = static_cast<double>((i / 8) % 100);  // compresses
    std::string refused;
    try {
        H5Id fapl(h5check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
        h5check_herr(H5Pset_fapl_core(fapl.get(), 1 << 16, 0), "H5Pset_fapl_core");
        H5Id file(h5check(H5Fcreate("smalldata filter probe", H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()),
                          "cannot make a file in memory"),
                  H5Fclose);
        H5Id space(h5check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple"), H5Sclose);
        H5Id dcpl(h5check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
        h5check_herr(H5Pset_chunk(dcpl.get(), 1, &n), "H5Pset_chunk");
        if (c.shuffle) h5check_herr(H5Pset_shuffle(dcpl.get()), "H5Pset_shuffle");
        h5check_herr(H5Pset_filter(dcpl.get(), static_cast<H5Z_filter_t>(c.filter_id), 0, c.params.size(),
                                   c.params.empty() ? nullptr : c.params.data()),
                     "it cannot be set");
        H5Id dapl(h5check(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate"), H5Pclose);
        h5check_herr(H5Pset_chunk_cache(dapl.get(), 0, 0, 1.0), "H5Pset_chunk_cache");  // through the filter
        const std::pair<hid_t, const char*> types[] = {
            {H5T_STD_I32LE, "int32"}, {H5T_IEEE_F32LE, "float32"}, {H5T_IEEE_F64LE, "float64"}};
        for (const auto& t : types) {
            const std::string name = t.second;
            H5Id d(H5Dcreate2(file.get(), name.c_str(), t.first, space.get(), H5P_DEFAULT, dcpl.get(), dapl.get()),
                   H5Dclose);
            if (!d.valid()) {
                refused += (refused.empty() ? "" : "; ") + name + ": " + h5_stack();
                continue;
            }
            h5check_herr(H5Dwrite(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, in.data()),
                         "it fails to compress a test chunk of " + name);
            h5check_herr(H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()),
                         "it fails to decompress a test chunk of " + name);
            if (out != in) return what + " does not give back the values of a test chunk of " + name;
            return {};
        }
    } catch (const Error& e) {
        std::string why = e.what();
        if (why.rfind("smalldata: ", 0) == 0) why.erase(0, 11);
        return what + ": " + why;
    }
    return what + " refuses datasets of int32, float32 and float64 (" + refused + ")";
}

// What is wrong with `c` for writing (empty: nothing): a deflate level outside 1-9, a
// filter id outside 1-65535, a filter (shuffle included) that this process cannot encode
// with (neither built into HDF5 nor found as a plugin, or present for decoding only), or
// parameters a filter set by id rejects (filter_probe).
inline std::string compression_problem(const Compression& c) {
    using K = Compression::Kind;
    if (c.kind == K::none) return {};
    if (c.kind != K::deflate && c.kind != K::filter)
        return "compression: unknown kind " + std::to_string(static_cast<int>(c.kind));
    if (c.kind == K::deflate && (c.level < 1 || c.level > 9))
        return "compression: the deflate level must be 1 to 9, got " + std::to_string(c.level);
    if (c.kind == K::filter && (c.filter_id < 1 || c.filter_id > static_cast<unsigned>(H5Z_FILTER_MAX)))
        return "compression: a filter id must be 1 to " + std::to_string(H5Z_FILTER_MAX) + ", got " +
               std::to_string(c.filter_id);
    H5Quiet q;
    auto usable = [](unsigned id) -> std::string {
        const H5Z_filter_t z = static_cast<H5Z_filter_t>(id);
        if (H5Zfilter_avail(z) <= 0) {  // a plugin is searched for (and loaded) here
            H5Eclear2(H5E_DEFAULT);
            return "compression: " + filter_text(id) +
                   " is not available: it is not built into this HDF5 and no plugin for it was found in " +
                   plugin_path_text() + " (HDF5_PLUGIN_PATH sets where HDF5 looks)";
        }
        unsigned flags = 0;
        if (H5Zget_filter_info(z, &flags) < 0 || (flags & H5Z_FILTER_CONFIG_ENCODE_ENABLED) == 0) {
            H5Eclear2(H5E_DEFAULT);
            return "compression: " + filter_text(id) + " can only decode here (this HDF5 has no encoder for it)";
        }
        return {};
    };
    std::string problem = c.shuffle ? usable(H5Z_FILTER_SHUFFLE) : std::string();
    if (problem.empty()) problem = usable(c.kind == K::deflate ? unsigned(H5Z_FILTER_DEFLATE) : c.filter_id);
    if (problem.empty() && c.kind == K::filter) problem = filter_probe(c);
    return problem;
}
// Adds c's filters (shuffle first, then the compressor) to a dataset creation property
// list. A filter other than deflate is optional, as HDF5 makes deflate and shuffle: a chunk
// it fails on is stored as it is (and reads back the same), the run goes on.
inline void h5_set_compression(hid_t dcpl, const Compression& c) {
    if (c.kind == Compression::Kind::none) return;
    if (c.shuffle) h5check_herr(H5Pset_shuffle(dcpl), "H5Pset_shuffle");
    if (c.kind == Compression::Kind::deflate) {
        h5check_herr(H5Pset_deflate(dcpl, static_cast<unsigned>(c.level)), "H5Pset_deflate");
    } else {
        h5check_herr(H5Pset_filter(dcpl, static_cast<H5Z_filter_t>(c.filter_id), H5Z_FLAG_OPTIONAL, c.params.size(),
                                   c.params.empty() ? nullptr : c.params.data()),
                     "cannot set " + filter_text(c.filter_id));
    }
}
// The compression settings as one number each, for the agreement between ranks
// (Impl::setup_parallel); all 0 without compression.
inline std::array<long long, 5> compression_key(const Compression& c) {
    if (c.kind == Compression::Kind::none) return {0, 0, 0, 0, 0};
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the parameters and their count
    auto mix = [&](std::uint64_t v) {
        for (int i = 0; i < 8; ++i) {
            h ^= (v >> (8 * i)) & 0xff;
            h *= 1099511628211ull;
        }
    };
    mix(c.params.size());
    for (unsigned v : c.params) mix(v);
    const bool deflate = c.kind == Compression::Kind::deflate;
    return {static_cast<long long>(c.kind), deflate ? c.level : 0, c.shuffle ? 1 : 0,
            deflate ? 0 : static_cast<long long>(c.filter_id), static_cast<long long>(h & 0x7fffffffffffULL)};
}

// The HDF5 type of a dtype: `file` picks the little-endian storage type, else the native
// memory type. bool is an enum {FALSE=0, TRUE=1} over int8 either way.
inline H5Id h5_type(DType t, bool file) {
    hid_t base = -1;
    switch (t) {
        case DType::i8: base = file ? H5T_STD_I8LE : H5T_NATIVE_INT8; break;
        case DType::i16: base = file ? H5T_STD_I16LE : H5T_NATIVE_INT16; break;
        case DType::i32: base = file ? H5T_STD_I32LE : H5T_NATIVE_INT32; break;
        case DType::i64: base = file ? H5T_STD_I64LE : H5T_NATIVE_INT64; break;
        case DType::u8: base = file ? H5T_STD_U8LE : H5T_NATIVE_UINT8; break;
        case DType::u16: base = file ? H5T_STD_U16LE : H5T_NATIVE_UINT16; break;
        case DType::u32: base = file ? H5T_STD_U32LE : H5T_NATIVE_UINT32; break;
        case DType::u64: base = file ? H5T_STD_U64LE : H5T_NATIVE_UINT64; break;
        case DType::f32: base = file ? H5T_IEEE_F32LE : H5T_NATIVE_FLOAT; break;
        case DType::f64: base = file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE; break;
        case DType::boolean: {
            H5Id e(h5check(H5Tenum_create(H5T_NATIVE_INT8), "H5Tenum_create"), H5Tclose);
            std::int8_t v = 0;
            h5check_herr(H5Tenum_insert(e.get(), "FALSE", &v), "H5Tenum_insert");
            v = 1;
            h5check_herr(H5Tenum_insert(e.get(), "TRUE", &v), "H5Tenum_insert");
            return e;
        }
    }
    return H5Id(h5check(H5Tcopy(base), "H5Tcopy"), H5Tclose);
}

// Dataspace of `rows` values of `shape` (rows < 0: a plain value, no event axis).
inline H5Id h5_space(long long rows, const Shape& shape, bool unlimited = false) {
    hsize_t dims[max_rank + 1], maxd[max_rank + 1];
    int n = 0;
    if (rows >= 0) {
        dims[0] = static_cast<hsize_t>(rows);
        maxd[0] = unlimited ? H5S_UNLIMITED : dims[0];
        n = 1;
    }
    for (int i = 0; i < shape.rank; ++i, ++n) dims[n] = maxd[n] = shape.dims[static_cast<std::size_t>(i)];
    if (n == 0) return H5Id(h5check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
    return H5Id(h5check(H5Screate_simple(n, dims, maxd), "H5Screate_simple"), H5Sclose);
}

// Selects rows [row, row + n) of `space`, whose rows have `shape`: every element of each.
inline void h5_select_rows(hid_t space, std::uint64_t row, std::uint64_t n, const Shape& shape,
                           H5S_seloper_t op = H5S_SELECT_SET) {
    hsize_t start[max_rank + 1] = {}, count[max_rank + 1];
    start[0] = static_cast<hsize_t>(row);
    count[0] = static_cast<hsize_t>(n);
    for (int i = 0; i < shape.rank; ++i) count[i + 1] = shape.dims[static_cast<std::size_t>(i)];
    h5check_herr(H5Sselect_hyperslab(space, op, start, nullptr, count, nullptr), "H5Sselect_hyperslab");
}

inline H5Id h5_lcpl() {  // link creation: make intermediate groups ("det/roi")
    H5Id p(h5check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
    h5check_herr(H5Pset_create_intermediate_group(p.get(), 1), "H5Pset_create_intermediate_group");
    return p;
}

// Groups keep their links in dense storage (a heap and an index) from the first one, not
// in their object header. A writer file is in SWMR mode while its datasets are made (a
// field first given late is made late), and HDF5 1.10's SWMR writer can fail to flush or
// close the file once a new link has to grow a group's object header that attributes
// already filled (the root's, which holds a part's identity). A gcpl, or the fcpl for the
// root group.
inline void h5_dense_links(hid_t gcpl) {
    h5check_herr(H5Pset_link_phase_change(gcpl, 0, 0), "H5Pset_link_phase_change");
}
// The groups above `name` ("a/b/c": "a", "a/b"), made where missing, with dense links.
inline void h5_make_parents(hid_t file, const std::string& name) {
    H5Id gcpl(h5check(H5Pcreate(H5P_GROUP_CREATE), "H5Pcreate"), H5Pclose);
    h5_dense_links(gcpl.get());
    for (std::size_t at = name.find('/'); at != std::string::npos; at = name.find('/', at + 1)) {
        const std::string g = name.substr(0, at);
        const htri_t there = H5Lexists(file, g.c_str(), H5P_DEFAULT);
        if (there < 0) throw_h5("cannot look up group '" + g + "'");
        if (there > 0) continue;
        H5Id made(H5Gcreate2(file, g.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
        if (!made.valid()) throw_h5("cannot create group '" + g + "'");
    }
}

// align: see below; off for files of compressed chunks, whose sizes vary (a chunk a little
// over 64 KiB would leave up to 64 KiB unused after it).
inline H5Id h5_create_file(const std::string& path, bool align = true) {
    H5Id fapl(h5check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
    // The HDF5 1.10 file format, whatever library version writes it: readable by HDF5 1.10
    // and newer (which virtual datasets need anyway), and its extensible-array chunk index
    // appends in constant time and memory, where the 1.8 B-tree grew with every chunk.
#if H5_VERSION_GE(1, 10, 2)
    h5check_herr(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110), "H5Pset_libver_bounds");
#endif
    // Allocations of 64 KiB and more (chunks of images, of large caches) start on a 64 KiB
    // boundary, so that they cover whole page-cache folios: image appends 30 % faster.
    if (align) h5check_herr(H5Pset_alignment(fapl.get(), 65536, 65536), "H5Pset_alignment");
    // Closing the file closes whatever is still open in it, so that a file whose writes
    // failed (a full disk) is not left half open for HDF5 to trip over at exit.
    h5check_herr(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "H5Pset_fclose_degree");
    H5Id fcpl(h5check(H5Pcreate(H5P_FILE_CREATE), "H5Pcreate"), H5Pclose);
    h5_dense_links(fcpl.get());  // the root group's (see h5_dense_links)
    hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
    if (f < 0) throw_h5("cannot create file '" + path + "'");
    return H5Id(f, H5Fclose);
}

// Writes a small, contiguous dataset (summary values, strings).
inline void h5_write_small(hid_t file, const std::string& name, DType t, const Shape& shape, const void* data) {
    H5Id type = h5_type(t, true), mem = h5_type(t, false);
    H5Id space = h5_space(-1, shape);
    H5Id d(h5check(H5Dcreate2(file, name.c_str(), type.get(), space.get(), h5_lcpl().get(), H5P_DEFAULT, H5P_DEFAULT),
                   "cannot create summary dataset '" + name + "'"),
           H5Dclose);
    h5check_herr(H5Dwrite(d.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
                 "cannot write summary dataset '" + name + "'");
}
// A fixed-length UTF-8 string type for `s` (at least one byte, as HDF5 wants).
inline H5Id h5_string_type(const std::string& s) {
    H5Id type(h5check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
    h5check_herr(H5Tset_size(type.get(), s.empty() ? 1 : s.size()), "H5Tset_size");
    h5check_herr(H5Tset_cset(type.get(), H5T_CSET_UTF8), "H5Tset_cset");
    return type;
}
inline void h5_write_string(hid_t file, const std::string& name, const std::string& s) {
    H5Id type = h5_string_type(s);
    H5Id space(h5check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
    H5Id d(h5check(H5Dcreate2(file, name.c_str(), type.get(), space.get(), h5_lcpl().get(), H5P_DEFAULT, H5P_DEFAULT),
                   "cannot create summary dataset '" + name + "'"),
           H5Dclose);
    std::string buf = s.empty() ? std::string(1, '\0') : s;
    h5check_herr(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()),
                 "cannot write summary dataset '" + name + "'");
}

// Attributes that tie part files to their run (section 16): a u64 and a string on the
// root group. The getters return false when the attribute is missing or of another kind.
inline void h5_set_attr_u64(hid_t obj, const char* name, std::uint64_t v) {
    H5Id space(h5check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
    const bool exists = H5Aexists(obj, name) > 0;  // then written over
    H5Id a(h5check(exists ? H5Aopen(obj, name, H5P_DEFAULT)
                          : H5Acreate2(obj, name, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                   std::string("cannot create attribute '") + name + "'"),
           H5Aclose);
    h5check_herr(H5Awrite(a.get(), H5T_NATIVE_UINT64, &v), std::string("cannot write attribute '") + name + "'");
}
inline void h5_set_attr_string(hid_t obj, const char* name, const std::string& v) {
    H5Id type = h5_string_type(v);
    H5Id space(h5check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
    H5Id a(h5check(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                   std::string("cannot create attribute '") + name + "'"),
           H5Aclose);
    const std::string buf = v.empty() ? std::string(1, '\0') : v;
    h5check_herr(H5Awrite(a.get(), type.get(), buf.data()), std::string("cannot write attribute '") + name + "'");
}
inline bool h5_get_attr_u64(hid_t obj, const char* name, std::uint64_t& out) {
    if (H5Aexists(obj, name) <= 0) return false;
    H5Id a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
    return a.valid() && H5Aread(a.get(), H5T_NATIVE_UINT64, &out) >= 0;
}
inline bool h5_get_attr_string(hid_t obj, const char* name, std::string& out) {
    if (H5Aexists(obj, name) <= 0) return false;
    H5Id a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
    if (!a.valid()) return false;
    H5Id type(H5Aget_type(a.get()), H5Tclose);
    if (!type.valid() || H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) != 0) return false;
    const std::size_t n = H5Tget_size(type.get());
    std::string buf(n, '\0');
    if (n == 0 || H5Aread(a.get(), type.get(), &buf[0]) < 0) return false;
    out = buf.substr(0, buf.find('\0'));
    return true;
}
inline H5Id h5_open_read(const std::string& path) {  // invalid if it cannot be opened
    return H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
}
// A closed writer file opened again for writing (without SWMR), with h5_create_file's
// format bounds and close degree; invalid if it cannot be opened.
inline H5Id h5_open_write(const std::string& path) {
    H5Id fapl(h5check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
#if H5_VERSION_GE(1, 10, 2)
    h5check_herr(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110), "H5Pset_libver_bounds");
#endif
    h5check_herr(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "H5Pset_fclose_degree");
    return H5Id(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.get()), H5Fclose);
}

// One summary value held until the final file is written.
struct SummaryItem {
    std::string name;
    DType dtype = DType::f64;
    Shape shape;
    std::vector<unsigned char> bytes;
    bool is_string = false;
    std::string text;
};

inline void write_summary_item(hid_t file, const SummaryItem& s) {
    if (s.is_string)
        h5_write_string(file, s.name, s.text);
    else
        h5_write_small(file, s.name, s.dtype, s.shape, s.bytes.data());
}
inline void write_summary(hid_t file, const std::vector<SummaryItem>& items) {
    for (const SummaryItem& s : items) write_summary_item(file, s);
}

// One attribute held until the final file is written: `value` as a summary's (its name is
// the attribute's), on the object at `path` ("" = the root group).
struct AttributeItem {
    std::string path;
    SummaryItem value;
};

// Whether `path` ("" = the root group) names an object of `file`, one link at a time (a
// missing group or a dataset in the middle is "no", not an error).
inline bool h5_object_exists(hid_t file, const std::string& path) {
    if (path.empty()) return true;
    H5Quiet q;
    for (std::size_t slash = path.find('/');; slash = path.find('/', slash + 1)) {
        const std::string prefix = path.substr(0, slash);
        if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0 ||
            H5Oexists_by_name(file, prefix.c_str(), H5P_DEFAULT) <= 0) {
            H5Eclear2(H5E_DEFAULT);
            return false;
        }
        if (slash == std::string::npos) return true;
    }
}

// Writes one attribute, replacing one of that name. Strings are variable-length UTF-8
// (what h5py writes for a str, and reads back as one); values have their field type (bool:
// the enum). False, writing nothing, when no object has the path.
inline bool write_attribute_item(hid_t file, const AttributeItem& a) {
    if (!h5_object_exists(file, a.path)) return false;
    const std::string what = attribute_what(a.path, a.value.name);
    const char* where = a.path.empty() ? "/" : a.path.c_str();
    H5Id obj(h5check(H5Oopen(file, where, H5P_DEFAULT), "cannot open the object of " + what), H5Oclose);
    const char* name = a.value.name.c_str();
    if (H5Aexists(obj.get(), name) > 0) h5check_herr(H5Adelete(obj.get(), name), "cannot replace " + what);
    if (a.value.is_string) {
        H5Id type(h5check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
        h5check_herr(H5Tset_size(type.get(), H5T_VARIABLE), "H5Tset_size");
        h5check_herr(H5Tset_cset(type.get(), H5T_CSET_UTF8), "H5Tset_cset");
        H5Id space(h5check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
        H5Id attr(h5check(H5Acreate2(obj.get(), name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                          "cannot create " + what),
                  H5Aclose);
        const char* text = a.value.text.c_str();
        h5check_herr(H5Awrite(attr.get(), type.get(), &text), "cannot write " + what);
    } else {
        H5Id type = h5_type(a.value.dtype, true), mem = h5_type(a.value.dtype, false);
        H5Id space = h5_space(-1, a.value.shape);
        H5Id attr(h5check(H5Acreate2(obj.get(), name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                          "cannot create " + what),
                  H5Aclose);
        h5check_herr(H5Awrite(attr.get(), mem.get(), a.value.bytes.data()), "cannot write " + what);
    }
    return true;
}

// Writes every attribute it can. The others (a path that names nothing: Errc::name; a
// failed write: Errc::hdf5) are returned as one message, `code` the first one's, for the
// caller to throw once the file is complete.
inline std::string write_attributes(hid_t file, const std::vector<AttributeItem>& items, Errc& code) {
    std::string problems;
    for (const AttributeItem& a : items) {
        std::string problem;
        Errc c = Errc::name;
        try {
            if (!write_attribute_item(file, a))
                problem = attribute_what(a.path, a.value.name) + " was not written: no field, group or summary has "
                                                                 "that path";
        } catch (const Error& e) {
            problem = bare_message(e);  // thrown again by the caller, with the prefix
            c = e.code();
        }
        if (problem.empty()) continue;
        if (problems.empty()) code = c;
        problems += (problems.empty() ? "" : "; ") + problem;
    }
    return problems;
}

// Names of a set of datasets plus their groups, to check new names against.
class NameSet {
public:
    // Throws Errc::name if `name` equals a group of the set, or one of its groups is a name.
    void check(std::string_view name, const char* what) const {
        std::string n(name);
        if (groups_.count(n))
            throw_error(Errc::name, std::string(what) + " '" + n + "' clashes with the group of the same name (used by '" +
                                        groups_.at(n) + "')");
        for_each_group(name, [&](std::string_view g) {
            auto it = names_.find(std::string(g));
            if (it != names_.end())
                throw_error(Errc::name, std::string(what) + " '" + n + "' needs a group '" + std::string(g) +
                                            "', but that is already a field");
        });
    }
    void add(std::string_view name) {
        names_.emplace(std::string(name), 0);
        for_each_group(name, [&](std::string_view g) { groups_.emplace(std::string(g), std::string(name)); });
    }
    bool has(std::string_view name) const { return names_.count(std::string(name)) != 0; }
private:
    std::map<std::string, int> names_;
    std::map<std::string, std::string> groups_;
};

// ============================================================================ [>>impl-packer]
// 12. Packer slow paths: starting and closing events, first sight of a field (validation,
//     definition record), batch splitting when a buffer is full, flushing.

Packer::Packer(Sink* sink, std::vector<unsigned char>* first, std::size_t batch_size, std::size_t batch_bytes)
    : sink_(sink), cut_(sink->cut()), buf_(first), batch_size_(batch_size), batch_bytes_(batch_bytes) {
    cur_ = buf_->data() + sizeof(WireHeader);
    end_ = buf_->data() + std::min(buf_->size(), batch_bytes_);
    index_.assign(64, 0);
}

void Packer::close_event() {
    if (direct_) {
        sink_->end_event(ts_);  // may throw (a write error): the event stays open
    } else {
        std::memcpy(buf_->data() + ev_off_ + 8, &entries_, 4);
        ++done_events_;
    }
    open_ = false;
}

// An event boundary: the only place (with flush) where batches are shipped, so callbacks
// (serial mode) and sends never see a half-written event.
void Packer::start_event(std::int64_t ts) {
    if (event_no_ > 0 && ts < ts_)  // also after an exception or a flush closed the last one
        throw_error(Errc::timestamp_order, "event timestamps must increase: got " + std::to_string(ts) + " after " +
                                               std::to_string(ts_));
    if (open_) {
        if (split_) ship_completed();  // the events before the open one; it moves to the front
        close_event();
        if (!direct_ && (done_events_ >= batch_size_ || static_cast<std::size_t>(cur_ - buf_->data()) > batch_bytes_ ||
                         age_.tick()))
            ship_completed();
    }
    if (!direct_) {
        if (ts >= *cut_) cross(ts);
        if (static_cast<std::size_t>(end_ - cur_) < event_header_bytes) {
            ship_completed();
            if (static_cast<std::size_t>(end_ - cur_) < event_header_bytes) make_room(event_header_bytes, UINT32_MAX);
        }
        ev_off_ = static_cast<std::size_t>(cur_ - buf_->data());
        std::memcpy(cur_, &ts, 8);
        std::memset(cur_ + 8, 0, 4);
        cur_ += event_header_bytes;
    }
    entries_ = 0;
    pos_ = 0;
    ts_ = ts;
    open_ = true;
    ++event_no_;
}

// Routed streams: the event with timestamp ts is in a later cell than the batch's events:
// they are shipped first, with ts as their bound (the client's next event to their server
// is no earlier), and the sink moves the cut on (and tells the servers whose cells this
// client has passed). Between events.
void Packer::cross(std::int64_t ts) {
    if (done_events_ > 0) ship_completed(ts);
    sink_->cross(ts);
}

void Packer::ship_completed(std::int64_t bound) {
    // Ships buf_[0, ev_off_) or the whole buffer when no event is open.
    split_ = false;
    const std::size_t used = open_ ? ev_off_ : static_cast<std::size_t>(cur_ - buf_->data());
    if (done_events_ == 0) return;
    std::size_t tail = 0;
    if (open_) {  // keep the open event's bytes: the sink may reuse the buffer at once
        tail = static_cast<std::size_t>(cur_ - buf_->data()) - ev_off_;
        if (scratch_.size() < tail) scratch_.resize(tail);
        std::memcpy(scratch_.data(), buf_->data() + ev_off_, tail);
    }
    // If the sink throws (serial mode: a callback or an HDF5 error), the batch is dropped
    // all the same: the events before the failure are written, the rest are lost, and a
    // later flush must not write any of them again.
    std::exception_ptr failed;
    try {
        buf_ = sink_->ship(buf_, used, done_events_, bound);
    } catch (...) {
        failed = std::current_exception();
    }
    done_events_ = 0;
    if (buf_->size() < sizeof(WireHeader) + tail) buf_->resize(sizeof(WireHeader) + tail);
    unsigned char* base = buf_->data() + sizeof(WireHeader);
    if (tail) std::memcpy(base, scratch_.data(), tail);
    ev_off_ = sizeof(WireHeader);
    cur_ = base + tail;
    // A buffer grown for one large event goes back to the batch_bytes limit.
    end_ = buf_->data() + std::max(std::min(buf_->size(), batch_bytes_), sizeof(WireHeader) + tail);
    if (failed) std::rethrow_exception(failed);
}

// Room for `need` more bytes of the open event, by growing the buffer (never by shipping:
// see "Transactions"). The events before the open one are shipped at its end. An event
// larger than one message can carry is Errc::usage, naming the field (id) being added.
void Packer::check_event_limit(std::size_t need, std::string_view field) const {
    const std::size_t used = static_cast<std::size_t>(cur_ - buf_->data());
    const std::size_t event = used - (open_ ? ev_off_ : used);
    if (event + need > max_event_bytes - event_header_bytes)
        throw_error(Errc::usage, "the event with timestamp " + std::to_string(ts_) + " would be larger than 2 GiB" +
                                     (field.empty() ? std::string() : " with field '" + std::string(field) + "'") +
                                     ", the limit of one event");
}

void Packer::make_room(std::size_t need, std::uint32_t id) {
    check_event_limit(need, id < fields_.size() ? std::string_view(fields_[id].meta.name) : std::string_view());
    const std::size_t used = static_cast<std::size_t>(cur_ - buf_->data());
    if (done_events_ > 0) split_ = true;
    // The buffer may already be larger than batch_bytes from an earlier large event: use
    // that room before growing it again.
    if (buf_->size() < used + need) buf_->resize(std::max(buf_->size() * 2, used + need));
    cur_ = buf_->data() + used;
    end_ = buf_->data() + buf_->size();
}

void Packer::flush() {
    if (open_) {
        if (split_) ship_completed();
        close_event();
    }
    if (!direct_) ship_completed();
}

std::uint32_t Packer::lookup(std::string_view name) const noexcept {
    const std::size_t mask = index_.size() - 1;
    std::size_t h = std::hash<std::string_view>{}(name) & mask;
    for (;; h = (h + 1) & mask) {
        std::uint32_t slot = index_[h];
        if (slot == 0) return UINT32_MAX;
        if (fields_[slot - 1].meta.name == name) return slot - 1;
    }
}

void Packer::index_insert(std::uint32_t id) {
    if ((fields_.size() + 1) * 2 > index_.size()) {  // keep the load factor under 1/2
        std::vector<std::uint32_t> grown(index_.size() * 2, 0);
        for (std::uint32_t s : index_)
            if (s) {
                std::size_t h = std::hash<std::string_view>{}(fields_[s - 1].meta.name) & (grown.size() - 1);
                while (grown[h]) h = (h + 1) & (grown.size() - 1);
                grown[h] = s;
            }
        index_.swap(grown);
    }
    std::size_t h = std::hash<std::string_view>{}(fields_[id].meta.name) & (index_.size() - 1);
    while (index_[h]) h = (h + 1) & (index_.size() - 1);
    index_[h] = id + 1;
}

// Definition record, inline in the stream before the field's first entry.
void Packer::write_definition(std::uint32_t id, std::string_view name, DType dt, const Shape& shape,
                              std::size_t value_bytes) {
    const std::size_t def = definition_bytes(name, shape);
    check_event_limit(def + 4 + value_bytes, name);  // the value will not fit: define nothing
    if (static_cast<std::size_t>(end_ - cur_) < def) make_room(def, UINT32_MAX);
    cur_ = put_definition(cur_, id, name, dt, shape);
}

// The slow path of put(): a field not at its usual position, or new. A new field is
// validated (section 9), announced (a definition in the batch, or to the direct sink) and
// only then registered, so a failure leaves no trace of it.
// A var_ field's value gives its rows along axis 0: a 1-d value of any length, or an N-d
// one whose first extent varies. Errc::shape_mismatch for a scalar.
static Shape row_shape(std::string_view name, const Shape& value, std::int64_t ts) {
    if (value.rank == 0)
        throw_error(Errc::shape_mismatch, "field '" + std::string(name) + "' is a var_ field: its value must be an "
                                              "array (std::vector, std::array or View) of rows, not a scalar (timestamp " +
                                              std::to_string(ts) + ")");
    Shape row;
    row.rank = static_cast<std::uint8_t>(value.rank - 1);
    for (int i = 0; i < row.rank; ++i)
        row.dims[static_cast<std::size_t>(i)] = value.dims[static_cast<std::size_t>(i) + 1];
    return row;
}

void Packer::too_many_rows(std::uint32_t id, std::uint64_t n) const {
    throw_error(Errc::usage, "field '" + fields_[id].meta.name + "': " + std::to_string(n) +
                                 " rows in one event (timestamp " + std::to_string(ts_) +
                                 "), more than a var_ value may have (2^32 - 1)");
}

void Packer::length_mismatch(std::uint32_t id, std::uint64_t n) const {
    length_mismatch(fields_[id].meta.name, fields_[fields_[id].len_id], n);
}
void Packer::length_mismatch(std::string_view name, const ClientField& len, std::uint64_t n) const {
    std::string other;  // a field of the group given in this event before (it set the length)
    for (const ClientField& g : fields_)
        if (g.meta.var && &fields_[g.len_id] == &len && g.last_event == event_no_) other = g.meta.name;
    throw_error(Errc::shape_mismatch, "field '" + std::string(name) + "' has " + std::to_string(n) +
                                          " rows in the event with timestamp " + std::to_string(ts_) + ", but '" +
                                          other + "' of the same var_ group has " +
                                          std::to_string(len.len) + " (they share '" + len.meta.name + "')");
}

// A View whose data is a null pointer, with elements to read: Errc::usage naming the field
// (before anything of it is packed).
void Packer::null_value(std::string_view name, DType dt, const Shape& shape) {
    throw_error(Errc::usage, "field '" + std::string(name) + "': the value of " + dtype_name(dt) + " " + shape.str() +
                                 " is a null pointer");
}

std::uint32_t Packer::resolve(std::string_view name, DType dt, const Shape& shape) {
    std::uint32_t id = lookup(name);
    if (id != UINT32_MAX) {
        const ClientField& f = fields_[id];
        if (f.meta.length) check_user_field_name(name);  // the library's: Errc::name
        check_same_kind(f.meta, dt, f.meta.var ? row_shape(name, shape, ts_) : shape, "as first given",
                        "timestamp " + std::to_string(ts_));
        if (f.last_event == event_no_)
            throw_error(Errc::duplicate_field, "field '" + f.meta.name + "' given twice in the event with timestamp " +
                                                   std::to_string(ts_));
    } else {
        // Everything is checked before anything is announced: a failure leaves no trace.
        check_user_field_name(name);
        const bool var = var_prefix(name) != 0;
        ClientField f;
        f.meta = make_meta(name, dt, var ? row_shape(name, shape, ts_) : shape);
        check_clash(name, false);
        ClientField len;  // a var_ field of a new group: its length field comes first
        std::uint32_t lid = UINT32_MAX;
        if (var) {
            const std::string ln = length_name(name);
            lid = lookup(ln);
            if (lid == UINT32_MAX) {
                len.meta = make_meta(ln, DType::i64, Shape{});
                try {
                    check_clash(ln, false);
                } catch (const Error& e) {  // a name the user never gave: say where it comes from
                    throw_error(Errc::name, "field '" + std::string(name) + "' starts the var_ group whose lengths are the "
                                            "field '" + ln + "': " + bare_message(e));
                }
            } else if (fields_[lid].last_event == event_no_ && fields_[lid].len != shape.dims[0]) {
                length_mismatch(name, fields_[lid], shape.dims[0]);  // before it is defined: no trace
            }
        }
        const bool new_len = var && lid == UINT32_MAX;
        if (fields_.size() >= UINT32_MAX - 3) throw_error(Errc::usage, "too many fields");
        if (new_len) lid = static_cast<std::uint32_t>(fields_.size());
        id = static_cast<std::uint32_t>(fields_.size() + (new_len ? 1 : 0));
        f.len_id = lid;
        if (direct_) {
            fields_.reserve(fields_.size() + 2);
            if (new_len) {  // the writer's ids follow ours: a defined length field is kept
                sink_->define(lid, len.meta);  // may throw: nothing recorded yet
                fields_.push_back(std::move(len));
                index_insert(lid);
            }
            sink_->define(id, f.meta);
        } else {
            const std::size_t at = static_cast<std::size_t>(cur_ - buf_->data());
            try {
                if (new_len) write_definition(lid, len.meta.name, DType::i64, Shape{}, 8);
                write_definition(id, name, dt, f.meta.shape, f.meta.var ? 0 : f.meta.bytes);
                fields_.reserve(fields_.size() + 2);
            } catch (...) {
                cur_ = buf_->data() + at;  // take the definitions back
                throw;
            }
        }
        if (new_len && !direct_) {
            fields_.push_back(std::move(len));
            index_insert(lid);
        }
        fields_.push_back(std::move(f));
        index_insert(id);
    }
    if (pos_ < seq_.size())
        seq_[pos_] = id;
    else
        seq_.push_back(id);
    return id;
}

// Throws Errc::name if `name` (a new field, or with `summary` a new summary) clashes: it is
// the group of a known field, or needs a group that is one; a new field also must not be,
// need as a group, or be the group of a summary name.
void Packer::check_clash(std::string_view name, bool summary) const {
    const char* what = summary ? "summary" : "field";
    for (const ClientField& f : fields_)
        if (is_group_of(name, f.meta.name))
            throw_error(Errc::name, std::string(what) + " '" + std::string(name) + "' clashes with the group of field '" +
                                        f.meta.name + "'");
    for_each_group(name, [&](std::string_view g) {
        if (lookup(g) != UINT32_MAX)
            throw_error(Errc::name, std::string(what) + " '" + std::string(name) + "' needs a group '" + std::string(g) +
                                        "', but that is an event field");
    });
    if (summary) return;  // summary against summary: summary_slot()
    for (const std::string& sname : summaries_) {
        if (sname == name)
            throw_error(Errc::name, "field '" + std::string(name) + "' has the name of a summary saved before");
        if (is_group_of(name, sname) || is_group_of(sname, name))
            throw_error(Errc::name, "field '" + std::string(name) + "' clashes with the summary '" + sname +
                                        "' (one would be a group of the other)");
    }
}

void Packer::check_summary_name(std::string_view name) const {
    if (lookup(name) != UINT32_MAX)
        throw_error(Errc::name, "summary '" + std::string(name) + "' has the name of an event field");
    check_clash(name, true);
}

void Packer::add_summary_name(std::string_view name) {
    auto it = std::lower_bound(summaries_.begin(), summaries_.end(), name);
    if (it == summaries_.end() || *it != name) summaries_.insert(it, std::string(name));
}

}  // namespace detail

namespace detail {

// ============================================================================ [>>impl-writer]
// 13. Writer: the one component that turns decoded events into HDF5 datasets, for the
//     serial process and for every server. Owns the column caches, their memory budget,
//     fill rules, chunking, the write thread and what is kept after a failed write.
//
//     Parts. Each rule below lives in one of them; only Writer knows of the others.
//       Huge pages     advise_huge_pages, reserve_huge, resize_huge: large buffers (here
//                      and in the time ordering) ask for transparent huge pages before
//                      their first touch.
//       CacheBudget    the bytes of all cache buffers against cache_memory, their peak,
//                      limit_rows ("Memory").
//       RowCache       one field's cache buffer and rows (cache_start, cached, rows, the
//                      want/full/limit rows): the fast path, fill rows, growth, the budget's
//                      share ("Rows", "Memory"). No HDF5: it hands its rows to a
//                      RowCache::Sink (whole caches, the cached rows, or a row on its own).
//       DatasetWriter  every HDF5 call on the datasets, for a Dataset per field (handle,
//                      extent, chunk rows): create() decides chunking and filters, then
//                      extend(), write() (whole chunks raw, the rest through H5Dwrite),
//                      write_big() ("Chunks", "Compression"). The caller holds h5_.
//       WriteQueue     the write thread ("Thread"): jobs (plain callables), the jobs not
//                      yet done, the sticky first error, each field's spare buffers, and
//                      counters of its own (write_queue_counters()). No HDF5 either.
//       ClientRuns     the client of every event (Options::time_order's tie-break): runs,
//                      or one 16-bit client per event once runs are short.
//       SpareSpace,    the disk space held back for the close's metadata; the space
//       FileReserve    reserved ahead of the writes.
//       WriteClaim,    the writer's claim on its file, from its making to its close, and the
//       DirLock        directory lock under which a file is checked and replaced: no run
//                      replaces a file another is writing (section 16 checks them).
//       Writer         the fields (WField: meta, RowCache, Dataset, the queue's Slot) and
//                      the file: events, its Sink (FieldSink: the write thread or here),
//                      checkpoints, errors, finish and close, the time-order hooks.
//
//     Rows. Event e (0-based, in arrival order) is row e of `timestamp` and of every aligned
//     field; a value given for event e lands in row e, rows skipped in between take the fill
//     value (inside the cache: copied; beyond it: left unwritten, which HDF5 reads back as
//     the dataset's fill value). Unaligned fields append at their own row count, and so do
//     var_ fields, n rows per value (put_rows). A row
//     below one already given is an internal error (Errc::protocol), never a rewrite.
//     Memory. Options::cache_memory caps the bytes of all cache buffers of one writer (every
//     field, and with the write thread also the caches queued for it or kept for reuse):
//         memory of the caches <= cache_memory, whatever the number of fields.
//     Per field (pow2_floor: the largest power of two <= x, at least 1):
//         full_rows  = pow2_floor(min(cache_size, cache_bytes / row bytes))
//         limit_rows = min(full_rows, pow2_floor(cache_memory / (fields * T) / row bytes)),
//                      T = 2 with the write thread (a cache filling, one being written), else 1
//         first cache: min(limit_rows, pow2_floor(4 KiB / row bytes)) rows
//     A cache grows 8x as rows arrive (a gap that fits in limit_rows grows it at once) up to
//     limit_rows, and only while the writer's total stays within cache_memory; a cache that
//     cannot grow is written out instead (smaller writes, the same rows). After a write a
//     cache above limit_rows is freed (fields defined later lower the limit). With no room
//     at all (cache_memory below fields x row bytes) a row is written on its own: slow, but
//     right. The fast path (try_append) never looks at the budget: it runs while the cache
//     has room. Not counted: HDF5's own memory, and the batches of the decoder.
//     Chunks. chunk rows = the largest power of two <= min(chunk_bytes / row bytes,
//     limit_rows), and no more than the next power of two >= the rows the run is known to
//     have when the dataset is created (the events so far, and the row being written), so
//     a short run does not allocate huge chunks while one early value followed by a gap
//     does not pin a field to tiny chunks. A full cache is then whole chunks, which go to
//     the file raw (H5Dwrite_chunk). Rows of big_row_bytes or more (images) skip the
//     cache: one row per chunk, written straight from the batch they arrived in.
//     Compression. Options::compression puts its filters on every dataset created here
//     (create(), the one place). Chunks then go through H5Dwrite, which runs the filters
//     (a raw chunk write would bypass them), and big rows go through the cache like the
//     others (still one row per chunk), so that the compressing is done where full caches
//     are written: on the write thread, which a server then always has (use_write_thread).
//     A checkpoint is queued for that thread too (checkpoint_queued): each field's cached
//     rows as a job, then a mark that sets the extents and flushes, so no chunk is
//     compressed on the receive loop or in event(). The next partial write of such a chunk
//     makes HDF5 read it back and decompress it first (the rows in it are kept). A rewritten compressed chunk
//     may move in the file, and the space it leaves may stay unused: a little more file
//     with frequent checkpoints.
//     Thread. With Options::write_thread a full cache is handed to a helper thread, which
//     writes it while the caller fills a spare one (at most one cache per field waits). All
//     HDF5 calls of a writer hold its mutex h5_; a write error surfaces at the next
//     hand-over or at finish(). The queue's own mutex guards its jobs and spares, and the
//     fields' lost_from and written_end.
//     Checkpoints. With Options::checkpoint_seconds > 0 the file is made under
//     <path>.tmp, switched to SWMR writing (HDF5 then orders its metadata writes so that
//     the file on disk is valid at every instant) and renamed to <path>. Every 0.4 x the
//     interval (checked between events: end_event, end_events, a server's idle loop) the
//     caches are written, aligned extents set to the events so far, and the file flushed.
//     After a kill the file opens with its status flags cleared (recover_file, section 17).
//     detail::checkpoint_hook (testing: the kill test aims kills inside checkpoints) is
//     called as a checkpoint starts and once its flush has returned.
//     Errors. The first failed write is sticky: from then on nothing more is written, the
//     cached rows are given up, and every put/end_event (the slow path, which every value
//     then takes) throws that error again. Each field remembers the first row it may have
//     lost (lost_from). The file is closed with every aligned dataset cut to the rows that
//     are complete in all of them, unaligned ones to their own complete rows. Disk space
//     (SpareSpace: 4 MiB + 8 KiB per field) is held from the start and given back before
//     that close, so that its metadata still fits on a full disk. A writer destroyed with
//     its file open (finish() never reached) closes it the same way.

inline constexpr std::size_t big_row_bytes = std::size_t(1) << 16;
inline constexpr std::size_t first_cache_bytes = std::size_t(1) << 12;   // a new field's cache (a page)
inline constexpr std::size_t cache_growth = 8;  // a full cache grows 8x: few re-copies, few fresh pages
// A checkpoint's interval, and the longest a client keeps complete events before it ships
// them, are each this share of Options::checkpoint_seconds: an event is shipped, written
// and flushed within the interval, with room for the transfer and the flush.
inline constexpr double checkpoint_share = 0.4;
// Root attribute of a writer file: the events its last checkpoint (or its close) made
// durable. Recovery keeps no more than these: rows past them may lack a field's data
// (an image dataset's extent runs ahead of its rows).
inline constexpr const char* attr_events = "smalldata_events";
inline constexpr std::size_t spare_space_bytes = std::size_t(4) << 20;   // SpareSpace, and
inline constexpr std::size_t spare_space_per_field = std::size_t(8) << 10; // this per field

// Disk space held back for the closing metadata (Linux): an unlinked file next to the
// output, allocated with posix_fallocate (also on tmpfs), grown with the number of fields
// (each has an object header and a chunk index to write), and freed by release() when a
// write has failed or the file is about to be closed. Being unlinked, it leaves nothing
// behind, whatever happens to the process. Best effort: without room, nothing more is
// held. If the close still runs out of space, HDF5 1.10 cannot close the file (and
// crashes in its exit handler, H5F__close_cb): this space is what prevents that.
class SpareSpace {
public:
    SpareSpace() = default;
    SpareSpace(const SpareSpace&) = delete;
    SpareSpace& operator=(const SpareSpace&) = delete;
    ~SpareSpace() { release(); }
    // Whether space is held (Linux, a file system with posix_fallocate).
    bool held() const noexcept { return fd_ >= 0; }
    // 0, or the system's error: ENOSPC or EDQUOT (no room), or another (the directory
    // cannot take the file: gone, read-only, ...), with nothing held.
    int hold(const std::string& path, std::size_t bytes) noexcept {
#if defined(__linux__)
        const std::size_t slash = path.find_last_of('/');
        const std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
        std::string name = dir + ".smalldata-spare-XXXXXX";
        const int fd = mkostemp(&name[0], O_CLOEXEC);
        if (fd < 0) return errno;
        (void)::unlink(name.c_str());
        if (const int err = posix_fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0) {
            ::close(fd);
            return err == EINVAL || err == EOPNOTSUPP ? 0 : err;  // a file system without it: nothing to hold
        }
        fd_ = fd;
        held_ = bytes;
#else
        (void)path;
        (void)bytes;
#endif
        return 0;
    }
    static bool no_room(int err) noexcept { return err == ENOSPC || err == EDQUOT; }
    // By half again at least: a writer defining thousands of fields makes a few calls, not
    // one per field (each can take milliseconds while the file system writes back).
    void grow(std::size_t bytes) noexcept {
#if defined(__linux__)
        if (fd_ < 0 || bytes <= held_) return;
        bytes = std::max(bytes, held_ + held_ / 2);
        if (posix_fallocate(fd_, 0, static_cast<off_t>(bytes)) == 0) held_ = bytes;
#else
        (void)bytes;
#endif
    }
    void release() noexcept {
#if defined(__linux__)
        if (fd_ >= 0) ::close(fd_);
#endif
        fd_ = -1;
    }

private:
    int fd_ = -1;
    std::size_t held_ = 0;
};

// A writer's claim on its file (Linux): an open-file-description lock (F_OFD_SETLK) on
// one byte far past any data, taken when the file is made (before it has its real name)
// and held until it is closed. Another process that would replace, remove or recover the
// file sees the claim (claimed()) and refuses, instead of unlinking a file still being
// written (its rows would go on into a file no name reaches). Independent of HDF5's own
// flock() lock, so readers are not disturbed; a read lock (an NFS reader's flock) is not a
// claim. Best effort: a file system without these locks has no claims and sees none.
class WriteClaim {
public:
    WriteClaim() = default;
    WriteClaim(const WriteClaim&) = delete;
    WriteClaim& operator=(const WriteClaim&) = delete;
    ~WriteClaim() { release(); }
    void take(const std::string& path) noexcept {
        release();
#if defined(__linux__) && defined(F_OFD_SETLK)
        const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return;
        struct flock fl = range(F_WRLCK);
        if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
            ::close(fd);
            return;
        }
        fd_ = fd;
#else
        (void)path;
#endif
    }
    void release() noexcept {
        if (fd_ >= 0) ::close(fd_);  // the lock goes with the last descriptor of its opening
        fd_ = -1;
    }
    // Whether a writer (of this process or another) holds its claim on the file at `path`.
    static bool claimed(const std::string& path) noexcept {
#if defined(__linux__) && defined(F_OFD_GETLK)
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return false;
        struct flock fl = range(F_RDLCK);
        const bool held = ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_WRLCK;
        ::close(fd);
        return held;
#else
        (void)path;
        return false;
#endif
    }

private:
#if defined(__linux__) && defined(F_OFD_SETLK)
    static struct flock range(short type) noexcept {
        struct flock fl;
        std::memset(&fl, 0, sizeof fl);
        fl.l_type = type;
        fl.l_whence = SEEK_SET;
        fl.l_start = static_cast<off_t>(std::int64_t(1) << 62);
        fl.l_len = 1;
        return fl;
    }
#endif
    int fd_ = -1;
};

// Why a file may not be replaced (or recovered): a writer's claim is on it (WriteClaim).
inline constexpr const char* being_written =
    "it is being written by another process (a run writing the same filename holds it); choose another filename, "
    "or wait until that run has ended";

// The directory of a file locked (flock) while the file is checked and then removed, or
// made and renamed into place (Writer::create_swmr): two processes about to write the
// same name take turns, so the second sees the first's claim (WriteClaim) instead of both
// finding the name free. Held for a check and a removal, or for the making of a file (its
// disk space is held back before), never across a collective. Best effort: where the directory cannot be
// locked (a file system without flock), or another holds it for more than 10 s, nothing
// is held.
class DirLock {
public:
    DirLock() = default;
    DirLock(const DirLock&) = delete;
    DirLock& operator=(const DirLock&) = delete;
    ~DirLock() { release(); }
    void take(const std::string& path_in_dir) noexcept {
        release();
#if defined(__linux__)
        const std::size_t slash = path_in_dir.find_last_of('/');
        const std::string dir = slash == std::string::npos ? std::string(".") : path_in_dir.substr(0, slash + 1);
        const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return;
        for (int waited_ms = 0; waited_ms < 10000; ++waited_ms) {
            if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
                fd_ = fd;
                return;
            }
            if (errno != EWOULDBLOCK && errno != EINTR) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        ::close(fd);
#else
        (void)path_in_dir;
#endif
    }
    // take(path), then Errc `code` "<refusal>: it is being written ..." if a writer has
    // claimed `path` (the lock is then released with this object).
    void take_unclaimed(const std::string& path, Errc code, const std::string& refusal) {
        take(path);
        if (WriteClaim::claimed(path)) throw_error(code, refusal + ": " + being_written);
    }
    void release() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

// Disk space reserved ahead of one part file's writes (Linux, sec2 driver, not tmpfs):
// appends then land in allocated blocks, instead of paying the file system's delayed
// allocation block by block. Reserved beyond the end of file (FALLOC_FL_KEEP_SIZE), so
// HDF5 never sees it; trim() gives back what was not used once the file is closed.
class FileReserve {
public:
    void open(hid_t file, const std::string& path) {
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
        path_ = path;
        H5Id fapl(H5Fget_access_plist(file), H5Pclose);
        if (!fapl.valid() || H5Pget_driver(fapl.get()) != H5FD_SEC2) return;
        void* handle = nullptr;
        if (H5Fget_vfd_handle(file, fapl.get(), &handle) < 0 || handle == nullptr) return;
        const int fd = *static_cast<int*>(handle);
        struct statfs fs;
        if (fstatfs(fd, &fs) != 0 || fs.f_type == 0x01021994) return;  // tmpfs: reserving costs a write
        fd_ = fd;
#else
        (void)file;
        (void)path;
#endif
    }
    // After `bytes` were written: every few MiB, keep at least half a step reserved ahead.
    void wrote(hid_t file, std::size_t bytes) {
        if (fd_ < 0 || (since_ += bytes) < check_bytes) return;
        since_ = 0;
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
        hsize_t size = 0;
        if (H5Fget_filesize(file, &size) < 0) return;
        const std::uint64_t step = std::min<std::uint64_t>(max_step, std::max<std::uint64_t>(min_step, size / 2));
        if (size + step / 2 <= end_) return;
        if (fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(size), static_cast<off_t>(step)) != 0) {
            // Not supported here, or the disk is full: HDF5's own writes will say so. A
            // failed fallocate keeps what it allocated (ext4: every free block, up to the
            // step): a truncation to the file's own size gives it back, so the writes
            // still get the room there is.
            struct stat st;
            if (::fstat(fd_, &st) == 0) (void)!::ftruncate(fd_, st.st_size);
            fd_ = -1;
            return;
        }
        end_ = size + step;
        used_ = true;
#else
        (void)file;
#endif
    }
    // After the file is closed: a truncation to its own size frees the blocks beyond it.
    void trim() noexcept {
        fd_ = -1;
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
        struct stat st;
        if (used_ && ::stat(path_.c_str(), &st) == 0) (void)!::truncate(path_.c_str(), st.st_size);
#endif
        used_ = false;
    }

private:
    static constexpr std::uint64_t check_bytes = std::uint64_t(4) << 20;
    static constexpr std::uint64_t min_step = std::uint64_t(16) << 20, max_step = std::uint64_t(256) << 20;
    int fd_ = -1;
    bool used_ = false;
    std::uint64_t since_ = 0, end_ = 0;
    std::string path_;
};

// var_ groups read back (the writer after a failed write, recovery): the lengths of
// events [0, events) from a length dataset that has `have` rows (rows past them are 0: no
// rows), read in blocks. events_within: the most events e whose rows (the sum of their
// lengths) fit in `rows`; rows_of: the rows of the first e events.
// Rows [0, rows) of a 1-d dataset read as int64, in blocks: f(row, value) for each, until
// it returns false. `what` names the dataset in the error of a failed read.
inline void for_each_i64(hid_t dset, std::uint64_t rows, const std::string& what,
                         const std::function<bool(std::uint64_t row, std::int64_t value)>& f) {
    const std::uint64_t block = std::uint64_t(1) << 20;
    std::vector<std::int64_t> buf;
    for (std::uint64_t at = 0; at < rows; at += block) {
        const std::uint64_t n = std::min(block, rows - at);
        buf.resize(static_cast<std::size_t>(n));
        H5Id fspace(h5check(H5Dget_space(dset), "H5Dget_space"), H5Sclose);
        hsize_t start = static_cast<hsize_t>(at), count = static_cast<hsize_t>(n);
        h5check_herr(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr),
                     "H5Sselect_hyperslab");
        H5Id mspace(h5check(H5Screate_simple(1, &count, nullptr), "H5Screate_simple"), H5Sclose);
        h5check_herr(H5Dread(dset, H5T_NATIVE_INT64, mspace.get(), fspace.get(), H5P_DEFAULT, buf.data()),
                     "cannot read " + what);
        for (std::uint64_t i = 0; i < n; ++i)
            if (!f(at + i, buf[static_cast<std::size_t>(i)])) return;
    }
}
inline void for_each_length(hid_t len, std::uint64_t events, std::uint64_t have,
                            const std::function<bool(std::uint64_t event, std::uint64_t length)>& f) {
    for_each_i64(len, std::min(events, have), "a var_ group's lengths", [&](std::uint64_t event, std::int64_t v) {
        if (v < 0) throw_error(Errc::hdf5, "a var_ group's length dataset holds a negative length");
        return f(event, static_cast<std::uint64_t>(v));
    });
}
inline std::uint64_t events_within(hid_t len, std::uint64_t events, std::uint64_t have, std::uint64_t rows) {
    std::uint64_t sum = 0, e = events;
    for_each_length(len, events, have, [&](std::uint64_t i, std::uint64_t n) {
        if (n > rows - sum) {
            e = i;
            return false;
        }
        sum += n;
        return true;
    });
    return e;
}
inline std::uint64_t rows_of(hid_t len, std::uint64_t events, std::uint64_t have) {
    std::uint64_t sum = 0;
    for_each_length(len, events, have, [&](std::uint64_t, std::uint64_t n) {
        sum += n;
        return true;
    });
    return sum;
}

inline std::uint64_t pow2_floor(std::uint64_t v) {
    std::uint64_t p = 1;
    while (p * 2 <= v) p *= 2;
    return p;
}
inline std::uint64_t pow2_ceil(std::uint64_t v) {
    std::uint64_t p = 1;
    while (p < v) p *= 2;
    return p;
}

// ---- Large buffers: transparent huge pages
// A large buffer (cache buffers, the time ordering's keys and window) asks Linux for
// transparent huge pages before its first touch, where the system leaves them to madvise:
// one page fault per 2 MiB instead of per 4 KiB. Fresh memory's faults are
// costly where the kernel runs in a virtual machine (the time ordering at 2 servers and
// 1,000,000 events: 0.49 s before, 0.35 s after, docs/performance.md); on bare metal it
// saves less. Only the 2 MiB-aligned inside of the buffer is advised.
inline void advise_huge_pages(void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr std::uintptr_t huge = std::uintptr_t(2) << 20;
    if (p == nullptr || bytes < huge) return;
    const std::uintptr_t a = (reinterpret_cast<std::uintptr_t>(p) + huge - 1) & ~(huge - 1);
    const std::uintptr_t b = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(huge - 1);
    if (b > a) (void)::madvise(reinterpret_cast<void*>(a), b - a, MADV_HUGEPAGE);  // advice: failure is harmless
#else
    (void)p, (void)bytes;
#endif
}
// v with room for n elements, its large buffer advised before anything touches it.
template <class T> void reserve_huge(std::vector<T>& v, std::size_t n) {
    v.reserve(n);
    advise_huge_pages(v.data(), v.capacity() * sizeof(T));
}
// The same, then n value-initialised elements.
template <class T> void resize_huge(std::vector<T>& v, std::size_t n) {
    reserve_huge(v, n);
    v.resize(n);
}


// ---- CacheBudget: the memory of one writer's caches
// The bytes of every cache buffer of one writer (filling, queued for the write thread, kept
// for reuse) against Options::cache_memory, the most ever held at once, and limit_rows
// (its share: cache_memory / (fields x T)). Changed by the thread that calls put() only:
// buffers are made and freed there; the write thread only passes them around.
class CacheBudget {
public:
    explicit CacheBudget(std::size_t memory) : memory_(memory) {}
    void set_memory(std::size_t m) noexcept { memory_ = m; }
    void set_fields(std::size_t n) noexcept { fields_ = n; }
    // T in limit_rows: 2 with a write thread (a cache filling, one being written), else 1.
    void set_threaded(bool t) noexcept { ways_ = t ? 2 : 1; }
    // The most rows a cache of rows of `row_bytes` may have now (at most full_rows).
    std::size_t limit_rows(std::size_t full_rows, std::size_t row_bytes) const {
        const std::size_t share = memory_ / (fields_ * ways_);
        const std::size_t rb = std::max<std::size_t>(row_bytes, 1);
        return std::min(full_rows, static_cast<std::size_t>(pow2_floor(share / rb)));
    }
    // Bytes that may still be taken.
    std::size_t room() const noexcept { return memory_ > bytes_ ? memory_ - bytes_ : 0; }
    void take(std::size_t n) noexcept {
        bytes_ += n;
        peak_ = std::max(peak_, bytes_);
    }
    void give(std::size_t n) noexcept { bytes_ -= n; }
    std::size_t bytes() const noexcept { return bytes_; }
    std::size_t peak() const noexcept { return peak_; }

private:
    std::size_t memory_;
    std::size_t fields_ = 1, ways_ = 1;
    std::size_t bytes_ = 0, peak_ = 0;
};

// ---- RowCache: one field's rows on their way to the file (no HDF5 here)
// The cache buffer and the row bookkeeping of one field, and the rules of the section
// comment: the fast path, fill rows for a gap inside the cache, a gap beyond it left
// unwritten, growth (8x, within limit_rows and the CacheBudget), written out when it
// cannot grow, a row on its own when there is no room at all, rows that must increase.
// Where rows go is a Sink's business: the Writer's hands them to the write thread or the
// dataset writer; a test's keeps them in memory.
class RowCache {
public:
    class Sink {
    public:
        // Throws the sticky error of a failed write, if any (then nothing more is cached).
        virtual void check() = 0;
        // Rows the run is known to have besides this cache's (the writer: the events so far,
        // for an aligned field), for the chunk size of a dataset made now.
        virtual std::uint64_t rows_known() = 0;
        // A big row (big_rows()) straight out, not cached. false: cache it.
        virtual bool put_big(std::uint64_t row, const unsigned char* data) = 0;
        // Takes c's buffer with its cached rows (c.swap_buffer()), leaving c another one or
        // none. false: not taken (write them instead). limit: c.limit() before the call.
        virtual bool hand_over(RowCache& c, std::uint64_t known, std::size_t limit) = 0;
        // Rows [start, start + n) from `data`, written before the call returns.
        virtual void write(const unsigned char* data, std::uint64_t start, std::uint64_t n, std::uint64_t known,
                           std::size_t limit) = 0;
        // A buffer handed over earlier comes back to c (c.adopt()). false: none.
        virtual bool take_spare(RowCache& c) = 0;
        // Frees idle buffers of other caches (giving their bytes back to the budget). false: none.
        virtual bool free_spares() = 0;

    protected:
        ~Sink() = default;
    };

    // name: for messages; fill_row: row_bytes bytes, kept by the caller (the WField) as long
    // as the cache; cache_size, cache_bytes: Options'.
    RowCache(std::string name, std::size_t row_bytes, const unsigned char* fill_row, std::size_t cache_size,
             std::size_t cache_bytes, CacheBudget& budget)
        : name_(std::move(name)), fill_(fill_row), rb_(row_bytes), big_(big_rows(row_bytes)), budget_(&budget) {
        const std::size_t rb1 = std::max<std::size_t>(rb_, 1);
        // Powers of two, so that whole chunks (also powers of two) tile a full cache.
        full_rows_ = static_cast<std::size_t>(
            pow2_floor(std::max<std::size_t>(1, std::min(cache_size, cache_bytes / rb1))));
        want_rows_ = std::min(
            full_rows_, static_cast<std::size_t>(pow2_floor(std::max<std::size_t>(1, first_cache_bytes / rb1))));
    }
    // Rows of big_row_bytes or more skip the cache (one row per chunk).
    static bool big_rows(std::size_t row_bytes) noexcept { return row_bytes >= big_row_bytes; }

    std::uint64_t rows() const noexcept { return rows_; }       // rows so far (last row given + 1)
    std::uint64_t start() const noexcept { return start_; }     // row of data()[0]
    std::size_t cached() const noexcept { return cached_; }     // rows in the cache
    std::size_t capacity() const noexcept { return cap_; }      // its rows now (0-byte rows: always 0)
    std::size_t full_rows() const noexcept { return full_rows_; }
    std::size_t want_rows() const noexcept { return want_rows_; }
    std::size_t buffer_bytes() const noexcept { return buf_.size(); }
    const unsigned char* data() const noexcept { return buf_.data(); }
    // The most rows the cache may have now (limit_rows in the section comment).
    std::size_t limit() const { return budget_->limit_rows(full_rows_, rb_); }

    // Fast path: the row right after the cached ones, with room left (0 < cached < capacity).
    bool next_in_cache(std::uint64_t row) const noexcept { return cached_ - 1 < cap_ - 1 && row == start_ + cached_; }
    // The fast path only: false when `row` needs append_slow().
#if defined(__GNUC__)
    __attribute__((always_inline))
#endif
    bool try_append(std::uint64_t row, const unsigned char* data) {
        if (!next_in_cache(row)) return false;
        copy_row(buf_.data() + cached_ * rb_, data, rb_);
        ++cached_;
        rows_ = row + 1;
        return true;
    }
    void append(std::uint64_t row, const unsigned char* data, Sink& s) {
        if (!try_append(row, data)) append_slow(row, data, s);
    }
    // Rows row0, row0 + 1, ... from a strided source: whole stretches go into the cache in
    // one loop; whatever the fast path would not take goes through append_slow().
    void append_run(std::uint64_t row0, const unsigned char* src, std::size_t stride, std::size_t n, Sink& s) {
        append_gather(row0, n, [src, stride](std::size_t i) { return src + i * stride; }, s);
    }

    // Rows row0, ..., row0 + n - 1, row i from wherever row_of(i) (a const unsigned char*)
    // says (append_run: a strided source; the time ordering: rows read from part files): whole
    // stretches go into the cache in one loop; whatever the fast path would not take goes
    // through append_slow(). row_of is called once per row, in order.
    template <class RowOf> void append_gather(std::uint64_t row0, std::size_t n, RowOf&& row_of, Sink& s) {
        const std::size_t rb = rb_;
        std::size_t i = 0;
        while (i < n) {
            if (next_in_cache(row0 + i)) {
                const std::size_t k = std::min<std::size_t>(n - i, cap_ - cached_);
                unsigned char* d = buf_.data() + cached_ * rb;
                switch (rb) {  // fixed sizes become plain moves
                case 4: for (std::size_t j = 0; j < k; ++j) std::memcpy(d + j * 4, row_of(i + j), 4); break;
                case 8: for (std::size_t j = 0; j < k; ++j) std::memcpy(d + j * 8, row_of(i + j), 8); break;
                default: for (std::size_t j = 0; j < k; ++j) std::memcpy(d + j * rb, row_of(i + j), rb); break;
                }
                cached_ += k;
                i += k;
                rows_ = row0 + i;
            } else {
                const unsigned char* r = row_of(i);
                append(row0 + i, r, s);
                ++i;
            }
        }
    }

    // Everything the fast path does not take: the first row of a cache, a gap, a full cache
    // (grown, or written out), a big row, and, after a failed write, every value (throws).
    void append_slow(std::uint64_t row, const unsigned char* data, Sink& s) {
        s.check();
        if (row < rows_)
            throw_error(Errc::protocol, "writer: row " + std::to_string(row) + " of field '" + name_ +
                                            "' given after row " + std::to_string(rows_ - 1) +
                                            " (internal error: rows must increase)");
        if (big_ && s.put_big(row, data)) {
            rows_ = row + 1;
            return;
        }
        const std::size_t rb = rb_;
        if (rb == 0) {  // nothing to cache or write: the row count is all (never a fast path)
            rows_ = row + 1;
            return;
        }
        if (cached_ == 0) start_ = row;
        std::uint64_t next = start_ + cached_;
        const std::uint64_t need = row - start_ + 1;  // rows the cache must hold, with the gap
        if (need > cap_ && (need > full_rows_ || !grow(static_cast<std::size_t>(need), s))) {
            flush(s, row + 1);  // the skipped rows, if any, stay unwritten (fill value)
            start_ = next = row;
            if (cap_ == 0 && !grow(1, s) && !s.take_spare(*this)) {
                s.write(data, row, 1, row + 1, limit());  // no room at all: this row on its own
                rows_ = row + 1;
                return;
            }
        }
        for (; next < row; ++next, ++cached_) copy_row(buf_.data() + cached_ * rb, fill_, rb);
        copy_row(buf_.data() + cached_ * rb, data, rb);
        ++cached_;
        rows_ = row + 1;
    }

    // Empties the cache: handed over, or written (then a buffer above limit() is freed).
    // known: rows the run is known to have (at least; for the chunk size).
    void flush(Sink& s, std::uint64_t known = 0) {
        if (cached_ == 0) return;
        s.check();
        known = std::max({known, start_ + cached_, s.rows_known()});
        const std::size_t lim = limit();
        if (s.hand_over(*this, known, lim)) return;
        s.write(buf_.data(), start_, cached_, known, lim);
        cached_ = 0;
        trim();
    }
    // The cached rows are given up (a failed write): never written.
    void drop() noexcept { cached_ = 0; }
    // The buffer is freed, its bytes given back to the budget (nothing cached; a new one is
    // made by the next row).
    void free_buffer() noexcept {
        budget_->give(buf_.size());
        std::vector<unsigned char>().swap(buf_);
        cap_ = 0;
    }

    // For a Sink's hand_over: `next` becomes the buffer (its rows: the capacity), the old one
    // is returned; keep: the cached rows stay (the caller copied them into `next`). The next
    // new buffer starts at least as large as the one handed over.
    std::vector<unsigned char> swap_buffer(std::vector<unsigned char> next, bool keep) {
        want_rows_ = std::max(want_rows_, cap_);
        std::vector<unsigned char> old = std::move(buf_);
        buf_ = std::move(next);
        cap_ = buf_.size() / rb_;  // rb > 0: 0-byte rows are never cached
        if (!keep) cached_ = 0;
        return old;
    }
    // For a Sink's take_spare: an empty cache takes `b` (counted in the budget already).
    bool adopt(std::vector<unsigned char> b) {
        buf_ = std::move(b);
        cap_ = buf_.size() / std::max<std::size_t>(rb_, 1);
        return cap_ > 0;
    }

private:
    // n > 0: 0-byte rows never reach a copy (see append_slow), so the pointers are never null.
    // GCC 12 at -O3, inlining this where the source is a 4-byte object, warns about the
    // 8-byte case it cannot rule out (-Warray-bounds); n is the row's size, so it never runs.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif
    static void copy_row(unsigned char* d, const unsigned char* s, std::size_t n) noexcept {
        switch (n) {  // fixed sizes become plain moves instead of a call
        case 1: std::memcpy(d, s, 1); return;
        case 2: std::memcpy(d, s, 2); return;
        case 4: std::memcpy(d, s, 4); return;
        case 8: std::memcpy(d, s, 8); return;
        default: std::memcpy(d, s, n); return;
        }
    }
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
    // Frees the buffer (nothing cached) when it is above its limit.
    void trim() {
        if (rb_ == 0 || cap_ <= limit()) return;
        free_buffer();
    }
    // Room for `need` rows, keeping the cached ones: a new buffer of the next power of two
    // >= max(need, want_rows, 8 x its rows now) up to limit(), or fewer (down to need) if
    // the budget is short, after the sink freed idle buffers. false: no room (the caller
    // writes out instead). The old and the new buffer both count while the rows are copied.
    bool grow(std::size_t need, Sink& s) {
        const std::size_t rb = rb_;
        const std::size_t lim = limit();
        if (need > lim) return false;
        for (int attempt = 0; attempt < 2; ++attempt) {
            const std::size_t room = budget_->room();
            std::size_t rows = static_cast<std::size_t>(
                std::min<std::uint64_t>(lim, pow2_ceil(std::max({need, want_rows_, cap_ * cache_growth}))));
            for (; rows >= need && rows > cap_; rows /= 2) {
                if (rows * rb > room) continue;
                std::vector<unsigned char> bigger;
                resize_huge(bigger, rows * rb);
                if (cached_ != 0) std::memcpy(bigger.data(), buf_.data(), cached_ * rb);
                budget_->take(bigger.size());
                budget_->give(buf_.size());
                buf_.swap(bigger);
                cap_ = rows;
                return true;
            }
            if (!s.free_spares()) break;
        }
        return false;
    }

    std::string name_;
    std::vector<unsigned char> buf_;
    const unsigned char* fill_;
    std::size_t rb_;
    bool big_;
    CacheBudget* budget_;
    std::size_t cap_ = 0;        // no buffer until the first row (0-byte rows: never)
    std::size_t full_rows_ = 1;  // the most rows the cache may grow to (a power of two)
    std::size_t want_rows_ = 1;  // rows a new buffer starts at: 4 KiB, then the rows last handed over
    std::size_t cached_ = 0;
    std::uint64_t start_ = 0;
    std::uint64_t rows_ = 0;
};

// ---- DatasetWriter: every HDF5 call on a writer's per-event datasets
// One Dataset per field (its handle and layout); one DatasetWriter per file, which decides
// chunking and filters (create(), the one place) and does the I/O: extend(), write() (a
// run of rows: whole chunks raw where the layouts allow, the rest through H5Dwrite),
// write_big() (one big row as its own chunk). The caller holds the Writer's h5_.
struct Dataset {
    H5Id dset, memtype;
    std::uint64_t extent = 0;      // extent of the dataset in the file
    std::uint64_t chunk_rows = 0;  // rows per chunk, set when the dataset is created
    bool direct = false;           // whole chunks may go out with H5Dwrite_chunk
};

class DatasetWriter {
public:
    // file: the writer's (opened later); path: for messages; reserve: told of every write.
    DatasetWriter(const H5Id& file, const std::string& path, FileReserve& reserve, std::size_t chunk_bytes,
                  const Compression& compression)
        : file_(file), path_(path), reserve_(reserve), chunk_bytes_(chunk_bytes), compression_(compression),
          filtered_(compression.kind != Compression::Kind::none) {}

    // Options::compression is on: chunks go through H5Dwrite (HDF5 filters them), and big
    // rows are never written raw.
    bool filtered() const noexcept { return filtered_; }

    // The chunk rule (section comment, "Chunks"): rows_known: rows the run is known to have
    // when the dataset is created; limit: the cache's limit_rows.
    static std::uint64_t chunk_rows(std::size_t row_bytes, std::size_t chunk_bytes, std::size_t limit,
                                    std::uint64_t rows_known, bool big) {
        const std::size_t rb = std::max<std::size_t>(row_bytes, 1);
        std::uint64_t rows = pow2_floor(std::max<std::uint64_t>(1, std::min<std::uint64_t>(chunk_bytes / rb, limit)));
        rows = std::min(rows, pow2_ceil(std::max<std::uint64_t>(1, rows_known)));
        if (big) rows = 1;
        return rows;
    }

    void create(Dataset& d, const FieldMeta& m, std::uint64_t rows_known, std::size_t limit) {
        const std::uint64_t rows = chunk_rows(m.bytes, chunk_bytes_, limit, rows_known, RowCache::big_rows(m.bytes));
        hsize_t chunk[max_rank + 1];
        chunk[0] = static_cast<hsize_t>(rows);
        for (int i = 0; i < m.shape.rank; ++i)
            chunk[i + 1] = std::max<hsize_t>(1, static_cast<hsize_t>(m.shape.dims[static_cast<std::size_t>(i)]));
        H5Id dcpl(h5check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
        h5check_herr(H5Pset_chunk(dcpl.get(), m.shape.rank + 1, chunk), "H5Pset_chunk");
        h5_set_compression(dcpl.get(), compression_);  // Options::compression: every per-event dataset
        d.memtype = h5_type(m.dtype, false);
        const auto fill = fill_bytes(m.dtype, m.length);
        h5check_herr(H5Pset_fill_value(dcpl.get(), d.memtype.get(), fill.data()), "H5Pset_fill_value");
        H5Id ftype = h5_type(m.dtype, true);
        H5Id space = h5_space(0, m.shape, true);
        d.chunk_rows = rows;
#if H5_VERSION_GE(1, 10, 3)
        // Whole chunks are written raw (no selection, no fill, no copy) when memory and file
        // layouts agree, which is every type on a little-endian machine, and nothing is to
        // be compressed (a raw chunk write would bypass the filters).
        d.direct = !filtered_ && m.bytes > 0 && H5Tequal(d.memtype.get(), ftype.get()) > 0;
#endif
        // No chunk cache: flushes write whole chunks, which then go straight to the file
        // instead of being copied into the cache first.
        H5Id dapl(h5check(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate"), H5Pclose);
        h5check_herr(H5Pset_chunk_cache(dapl.get(), 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT), "H5Pset_chunk_cache");
        h5_make_parents(file_.get(), m.name);  // with dense links (h5_dense_links)
        hid_t id = H5Dcreate2(file_.get(), m.name.c_str(), ftype.get(), space.get(), h5_lcpl().get(), dcpl.get(),
                              dapl.get());
        if (id < 0) throw_h5("cannot create dataset '" + m.name + "' in '" + path_ + "'");
        d.dset = H5Id(id, H5Dclose);
        d.extent = 0;
    }

    void extend(Dataset& d, const FieldMeta& m, std::uint64_t rows) {
        hsize_t dims[max_rank + 1];
        dims[0] = static_cast<hsize_t>(rows);
        for (int i = 0; i < m.shape.rank; ++i) dims[i + 1] = m.shape.dims[static_cast<std::size_t>(i)];
        if (H5Dset_extent(d.dset.get(), dims) < 0) throw_h5("cannot extend dataset '" + m.name + "' in '" + path_ + "'");
        d.extent = rows;
    }

    // Rows [start, start + n) from `data`; the dataset is made first if it is not yet.
    // known, limit: see create().
    void write(Dataset& d, const FieldMeta& m, const unsigned char* data, std::uint64_t start, std::uint64_t n,
               std::uint64_t known, std::size_t limit) {
        if (!d.dset.valid()) create(d, m, std::max(start + n, known), limit);
        const std::uint64_t end = start + n;
        if (d.extent < end) extend(d, m, end);
        if (m.bytes == 0) return;
        // Rows [first, last) of whole chunks go out raw, the partial chunks around them
        // through H5Dwrite (which fills the rest of a new chunk with the fill value).
        const std::uint64_t c = d.chunk_rows;
        std::uint64_t first = end, last = end;
        if (d.direct) {
            first = (start + c - 1) / c * c;
            last = end / c * c;
            if (first >= last) first = last = end;
        }
        if (start < first) write_rows(d, m, start, first - start, data);
        for (std::uint64_t r = first; r < last; r += c) write_chunk(d, m, r, data + (r - start) * m.bytes);
        if (last < end) write_rows(d, m, last, end - last, data + (last - start) * m.bytes);
    }

    // A big row as its own chunk, into a dataset made already with d.direct, the extent
    // growing by doubling.
    void write_big(Dataset& d, const FieldMeta& m, std::uint64_t row, const unsigned char* data) {
        if (d.extent <= row) extend(d, m, std::max<std::uint64_t>(row + 1, 2 * d.extent));
        write_chunk(d, m, row, data);
    }

private:
    void write_rows(Dataset& d, const FieldMeta& m, std::uint64_t row, std::uint64_t n, const unsigned char* data) {
        H5Id fspace(h5check(H5Dget_space(d.dset.get()), "H5Dget_space"), H5Sclose);
        h5_select_rows(fspace.get(), row, n, m.shape);
        H5Id mspace = h5_space(static_cast<long long>(n), m.shape);
        if (H5Dwrite(d.dset.get(), d.memtype.get(), mspace.get(), fspace.get(), H5P_DEFAULT, data) < 0)
            throw_h5("cannot write dataset '" + m.name + "' in '" + path_ + "'");
        reserve_.wrote(file_.get(), static_cast<std::size_t>(n) * m.bytes);
    }

    // One whole chunk starting at `row`, straight to the file.
    void write_chunk(Dataset& d, const FieldMeta& m, std::uint64_t row, const unsigned char* data) {
#if H5_VERSION_GE(1, 10, 3)
        hsize_t offset[max_rank + 1] = {};
        offset[0] = static_cast<hsize_t>(row);
        if (H5Dwrite_chunk(d.dset.get(), H5P_DEFAULT, 0, offset, static_cast<std::size_t>(d.chunk_rows) * m.bytes,
                           data) < 0)
            throw_h5("cannot write dataset '" + m.name + "' in '" + path_ + "'");
        reserve_.wrote(file_.get(), static_cast<std::size_t>(d.chunk_rows) * m.bytes);
#else
        write_rows(d, m, row, d.chunk_rows, data);
#endif
    }

    const H5Id& file_;
    const std::string& path_;
    FileReserve& reserve_;
    std::size_t chunk_bytes_;
    Compression compression_;
    bool filtered_;
};

// ---- WriteQueue: the write thread (no HDF5 here: a job is a callable)
// Jobs run in order on one helper thread, started by the first hand-over. Owns the jobs,
// the count of those not yet done (pending), the sticky first error (after it, later jobs
// are skipped and count as failed), each field's Slot (its caches queued and the written
// ones kept for reuse, "spares") and counters of its own. Its mutex (lock()) guards all of
// that, and whatever a job's done() touches.
class WriteQueue {
public:
    // One field's: caches handed over and not yet written, written ones kept for reuse
    // (listed in with_spare_ while `listed`). Guarded by the queue's mutex.
    struct Slot {
        int queued = 0;
        std::vector<std::vector<unsigned char>> spare;
        bool listed = false;
    };
    struct Job {
        // On the thread, without the queue's lock; throws on failure. Given buf.data().
        // Not run after an earlier failure (the job counts as failed).
        std::function<void(const unsigned char* data)> write;
        // Under the queue's lock, after write (or instead of it): written or not.
        std::function<void(bool written)> done;
        std::vector<unsigned char> buf;  // then kept in slot's spares (with a slot)
        Slot* slot = nullptr;
        std::uint64_t bytes = 0;         // counted in Counters::bytes once written
    };
    struct Counters {
        std::uint64_t queued = 0;   // jobs handed over
        std::uint64_t written = 0;  // jobs whose write returned
        std::uint64_t failed = 0;   // jobs whose write threw, or was skipped after a failure
        std::uint64_t bytes = 0;    // the bytes of the written jobs
        double seconds = 0;         // spent in the jobs' writes
        std::size_t most_waiting = 0;  // the most jobs queued at once (not yet taken by the thread)
    };

    WriteQueue() = default;
    WriteQueue(const WriteQueue&) = delete;
    WriteQueue& operator=(const WriteQueue&) = delete;
    ~WriteQueue() { stop(); }

    std::unique_lock<std::mutex> lock() const { return std::unique_lock<std::mutex>(m_); }
    // The caller holds lock(). Starts the thread unless it runs. false: it cannot be started.
    bool start() {
        if (worker_.joinable()) return true;
        try {
            worker_ = std::thread([this] { work(); });
        } catch (const std::system_error&) {
            return false;
        }
        return true;
    }
    // With lk held: waits until `s` has no cache queued (back-pressure). false: a write failed.
    bool wait_slot(std::unique_lock<std::mutex>& lk, const Slot& s) {
        done_cv_.wait(lk, [&] { return s.queued == 0 || error_; });
        return !error_;
    }
    // The caller holds lock(): the last spare of `s` (empty: none).
    std::vector<unsigned char> take_spare(Slot& s) {
        std::vector<unsigned char> b;
        if (s.spare.empty()) return b;
        b = std::move(s.spare.back());
        s.spare.pop_back();
        return b;
    }
    // The caller holds lock(): `b` back among the spares of `s`.
    void keep_spare(Slot& s, std::vector<unsigned char> b) {
        s.spare.push_back(std::move(b));
        if (!s.listed) {
            with_spare_.push_back(&s);
            s.listed = true;
        }
    }
    // Every idle spare is freed; freed: their bytes. false: there were none.
    bool free_spares(std::size_t& freed) {
        std::lock_guard<std::mutex> lk(m_);
        bool any = false;
        for (Slot* s : with_spare_) {
            for (const auto& b : s->spare) {
                freed += b.size();
                any = true;
            }
            s->spare.clear();
            s->listed = false;
        }
        with_spare_.clear();
        return any;
    }
    // With lk held: queues j (its slot's count up), then lets lk go and wakes the thread.
    void push(std::unique_lock<std::mutex>& lk, Job j) {
        if (j.slot) ++j.slot->queued;
        jobs_.push_back(std::move(j));
        ++pending_;
        ++counters_.queued;
        counters_.most_waiting = std::max(counters_.most_waiting, jobs_.size());
        lk.unlock();
        work_cv_.notify_one();
    }
    // Waits until every job is done, or a write failed (pending ones stay).
    void wait_idle() {
        std::unique_lock<std::mutex> lk(m_);
        done_cv_.wait(lk, [&] { return pending_ == 0 || error_; });
    }
    // Lets the thread finish the jobs queued (skipped after a failure), then ends it.
    void stop() noexcept {
        if (!worker_.joinable() || worker_.get_id() == std::this_thread::get_id()) return;
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        work_cv_.notify_one();
        worker_.join();
    }

    // ---- the sticky error: the first one wins
    bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
    // The caller holds lock().
    void note_error(std::exception_ptr e) {
        if (!error_) error_ = std::move(e);
        failed_.store(true, std::memory_order_release);
    }
    std::exception_ptr error() const {
        std::lock_guard<std::mutex> lk(m_);
        return error_;
    }
    // Any thread.
    Counters counters() const {
        std::lock_guard<std::mutex> lk(m_);
        return counters_;
    }

private:
    // Jobs in order until stopped and drained. After an error the remaining jobs are
    // skipped; the error waits in error_ for the caller's thread.
    void work() {
        std::unique_lock<std::mutex> lk(m_);
        for (;;) {
            work_cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
            if (jobs_.empty()) return;
            Job j = std::move(jobs_.front());
            jobs_.pop_front();
            const bool skip = error_ != nullptr;
            lk.unlock();
            std::exception_ptr err;
            double seconds = 0;
            if (!skip) {
                const double t0 = now_seconds();
                try {
                    j.write(j.buf.data());
                } catch (...) {
                    err = std::current_exception();
                }
                seconds = now_seconds() - t0;
            }
            lk.lock();
            const bool ok = !skip && !err;
            if (err && !error_) error_ = err;
            if (!ok) failed_.store(true, std::memory_order_release);
            counters_.seconds += seconds;
            if (ok) {
                ++counters_.written;
                counters_.bytes += j.bytes;
            } else {
                ++counters_.failed;
            }
            if (j.done) j.done(ok);
            if (j.slot) {
                keep_spare(*j.slot, std::move(j.buf));
                --j.slot->queued;
            }
            --pending_;
            done_cv_.notify_all();
        }
    }

    mutable std::mutex m_;
    std::condition_variable work_cv_, done_cv_;
    std::deque<Job> jobs_;
    std::size_t pending_ = 0;  // jobs handed over and not yet done (queued or being written)
    bool stop_ = false;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};  // error_ is set
    std::vector<Slot*> with_spare_;    // slots with a spare (to free them when short)
    Counters counters_;
    std::thread worker_;
};

struct WField {
    // fill: one row of the fill value; cache_size, cache_bytes: Options'.
    WField(const FieldMeta& m, std::string src, std::vector<unsigned char> fill, std::size_t cache_size,
           std::size_t cache_bytes, CacheBudget& budget)
        : meta(m), source(std::move(src)), fill_row(std::move(fill)),
          cache(m.name, m.bytes, fill_row.data(), cache_size, cache_bytes, budget) {}
    WField(const WField&) = delete;  // the cache points into fill_row
    WField& operator=(const WField&) = delete;
    FieldMeta meta;
    std::string source;  // who defined it first, for error messages
    std::vector<unsigned char> fill_row;
    RowCache cache;
    Dataset ds;
    WriteQueue::Slot slot;  // with a write thread
    // Guarded by the write queue's mutex: the first row that a failed write, or giving up the
    // cache after one, may have lost; every row below it is in the file (or is a gap: fill value).
    std::uint64_t lost_from = UINT64_MAX;
    std::uint64_t written_end = 0;  // rows [cache.start(), this) of the cache are on disk (a checkpoint)
    std::uint64_t mark = 0;  // Decoder: last uniform-batch check that met this field
    std::size_t len_index = 0;  // a var_ field: the writer's index of its group's length field
    std::uint64_t group_rows = 0;  // a length field: Decoder, its value in the event at `mark`
    // A length field: the rows its group's lengths add up to, and the last length given
    // (Writer::put; Writer::group_rows_before).
    std::uint64_t var_rows = 0, var_last = 0;
    // Options::time_order, an unaligned field: bit e set when event e gave a row (the
    // ordering at done() maps its rows to events with it; section 19, [>>impl-order]).
    std::vector<std::uint64_t> given;
};

// ---- ClientRuns: the client of every event of a part, in row order (Options::time_order;
// the ordering's tie-break, section 19). Runs of (client, events), 16 bytes a run; once
// runs average under 8 events (a server merging clients that alternate: a run per
// event), one 16-bit client per event instead, while every client index fits (a larger
// one, come later, turns them back into runs for good).
class ClientRuns {
public:
    using Runs = std::vector<std::pair<std::uint32_t, std::uint64_t>>;
    void add(std::uint32_t client, std::uint64_t n) {
        if (n == 0) return;
        top_ = std::max(top_, client);
        if (dense_ && top_ > UINT16_MAX) to_runs();
        events_ += n;
        if (dense_) {
            each_.insert(each_.end(), static_cast<std::size_t>(n), static_cast<std::uint16_t>(client));
            return;
        }
        if (!runs_.empty() && runs_.back().first == client)
            runs_.back().second += n;
        else
            runs_.emplace_back(client, n);
        if (runs_.size() >= 4096 && runs_.size() * 8 > events_ && top_ <= UINT16_MAX) to_dense();
    }
    bool dense() const noexcept { return dense_; }
    const Runs& runs() const noexcept { return runs_; }  // empty once dense
    std::uint64_t events() const noexcept { return events_; }
    std::size_t bytes() const noexcept { return runs_.capacity() * sizeof(Runs::value_type) + each_.capacity() * 2; }
    // The client of each row in turn, from row 0.
    class Cursor {
    public:
        explicit Cursor(const ClientRuns& c) : c_(c) {}
        std::uint64_t next() {
            if (c_.dense_) return at_ < c_.each_.size() ? c_.each_[static_cast<std::size_t>(at_++)] : 0;
            while (left_ == 0 && run_ < c_.runs_.size()) {
                left_ = c_.runs_[run_].second;
                client_ = c_.runs_[run_++].first;
            }
            if (left_ > 0) --left_;
            return client_;
        }
    private:
        const ClientRuns& c_;
        std::uint64_t at_ = 0, left_ = 0, client_ = 0;
        std::size_t run_ = 0;
    };

private:
    void to_dense() {
        reserve_huge(each_, static_cast<std::size_t>(2 * events_));
        for (const auto& r : runs_)
            each_.insert(each_.end(), static_cast<std::size_t>(r.second), static_cast<std::uint16_t>(r.first));
        Runs().swap(runs_);
        dense_ = true;
    }
    void to_runs() {
        for (const std::uint16_t c : each_) {
            if (!runs_.empty() && runs_.back().first == c)
                ++runs_.back().second;
            else
                runs_.emplace_back(c, 1);
        }
        std::vector<std::uint16_t>().swap(each_);
        dense_ = false;
    }
    Runs runs_;
    std::vector<std::uint16_t> each_;
    std::uint64_t events_ = 0;
    std::uint32_t top_ = 0;
    bool dense_ = false;
};

class Writer {
public:
    // path empty: no file, only the event count (callbacks-only mode).
    // thread: hand full caches to a write thread (Options::write_thread, as resolved).
    // tag: writes attributes into the new file before it has its real name.
    Writer(const std::string& path, const Options& o, bool thread, const std::function<void(hid_t)>& tag = {})
        : opt_(o), has_file_(!path.empty()), async_(has_file_ && thread), path_(path),
          io_(file_, path_, reserve_, o.chunk_bytes, o.compression), budget_(o.cache_memory),
          track_order_(o.time_order) {
        budget_.set_threaded(async_);
        if (has_file_) {
            H5Quiet q;
            hold_spare(path, o.checkpoint_seconds > 0);  // before the file is made
            if (o.checkpoint_seconds > 0) {
                create_swmr(path, tag);
                checkpoint_period_ = o.checkpoint_seconds * checkpoint_share;
                rearm();
            } else {
                DirLock dir;  // as in create_swmr
                dir.take_unclaimed(path, Errc::option, "cannot write '" + path + "'");
                file_ = h5_create_file(path, !io_.filtered());
                claim_.take(path);
                dir.release();
                if (tag) tag(file_.get());
            }
            if (o.preallocate) reserve_.open(file_.get(), path);
        }
        FieldMeta ts;
        ts.name = "timestamp";
        ts.dtype = DType::i64;
        ts.bytes = 8;
        add_field(ts, "the library");
    }

    // The writer's index of a field, creating it at first sight. Errc::type_mismatch,
    // shape_mismatch or name when it contradicts what the writer already has.
    std::size_t field_index(const FieldMeta& m, const std::string& source) {
        auto it = by_name_.find(m.name);
        if (it != by_name_.end()) {
            const WField& f = fields_[it->second];
            check_same_kind(f.meta, m.dtype, m.shape, "from " + f.source, "from " + source);
            return it->second;
        }
        names_.check(m.name, "field");  // the name itself was validated by make_meta()
        std::size_t len = 0;
        if (m.var) {  // its group's length field (each client defines it first; made here if not)
            const std::string ln = length_name(m.name);
            auto l = by_name_.find(ln);
            if (l == by_name_.end()) {
                names_.check(ln, "field");
                len = add_field(make_meta(ln, DType::i64, Shape{}), source);
            } else {
                len = l->second;
                if (!fields_[len].meta.length) throw_error(Errc::protocol, "'" + ln + "' is not a length field");
            }
        }
        const std::size_t i = add_field(m, source);
        fields_[i].len_index = len;
        return i;
    }
    std::uint64_t events() const { return n_events_; }
    // Payload bytes of the rows given so far (fill rows of aligned fields included). The
    // thread that calls put()/end_event() only.
    std::uint64_t payload_bytes() const {
        std::uint64_t b = 0;
        for (const WField& f : fields_) b += (f.meta.aligned ? n_events_ : f.cache.rows()) * f.meta.bytes;
        return b;
    }
    // Calls `f` every `period` seconds (progress lines), from the same clock checks as the
    // checkpoints: between events, or from checkpoint_if_due(). period <= 0: never.
    void set_progress(double period, std::function<void()> f) {
        progress_period_ = period > 0 && f ? period : 0;
        progress_ = std::move(f);
        rearm();
    }
    // Any thread (stats() while the write thread runs).
    double write_seconds() const { return write_seconds_.load(std::memory_order_relaxed); }
    // Bytes of cache buffers held now, and the most ever held at once (<= cache_memory).
    // The thread that calls put()/end_event() only.
    std::size_t cache_bytes() const { return budget_.bytes(); }
    std::size_t cache_peak_bytes() const { return budget_.peak(); }
    // The write thread's own counters (jobs, bytes, seconds). Any thread.
    WriteQueue::Counters write_queue_counters() const { return queue_.counters(); }

    WField* field(std::size_t i) { return &fields_[i]; }
    std::size_t field_count() const { return fields_.size(); }
    hid_t file() const noexcept { return file_.get(); }  // for the run's attributes (section 16)
    const std::string& path() const noexcept { return path_; }

    // Options::time_order (section 19): the events that follow come from `client` (the
    // decoder says so at each batch; the serial process is client 0). The writer keeps
    // the client of every event as runs, and whether the events so far are in order:
    // timestamps increasing, ties by client index, arrival order within a client.
    void set_client(int client) noexcept { client_ = client; }
    // Before the first event: the caches' cap, when less than cache_memory is theirs.
    void set_cache_memory(std::size_t bytes) noexcept { budget_.set_memory(bytes); }
    bool in_order() const noexcept { return in_order_; }
    // The (timestamp, client) of the first and the last event (in arrival order).
    struct Ends {
        std::int64_t first_ts = 0, last_ts = 0;
        int first_client = 0, last_client = 0;
    };
    Ends order_ends() const noexcept { return Ends{first_ts_, last_ts_, first_client_, std::max(last_client_, 0)}; }
    const ClientRuns& client_runs() const noexcept { return client_runs_; }
    // Options::time_order with several servers (routed streams, section 15): the part is a
    // sequence of cells of the run's timestamp grid (TimeGrid), each noted with every
    // field's rows where it begins: the cell table the join maps in turn. event_start() is
    // told each event's timestamp before its values are given (put_gather: `ahead` events
    // of the window before it). Before the grid is known every event is in cell 0.
    void track_cells() noexcept { cells_on_ = true; }
    void set_grid(const TimeGrid& g) noexcept {
        grid_ = g;
        if (!cells_.empty()) grid_.range(cells_.back().id, cell_lo_, cell_hi_);  // cell 0 ends now
    }
    const TimeGrid& grid() const noexcept { return grid_; }
    void event_start(std::int64_t ts, std::uint64_t ahead = 0) {
        if (cells_on_ && (cells_.empty() || ((ts < cell_lo_ || ts >= cell_hi_) && grid_.cell(ts) != cells_.back().id)))
            new_cell(ts, ahead);
    }
    struct Cell {
        std::uint64_t id;
        std::uint64_t events;             // where the cell begins: the events before it,
        std::vector<std::uint64_t> rows;  // the rows of each field there was,
        std::vector<std::uint64_t> group; // and a length field's group rows
    };
    // The cells, each with every field's rows at its start, then the rows at the end. A
    // field made after a cell began has, there, the rows it was given as fill once made:
    // an aligned one a row per event, a var_ one its group's rows, an unaligned one none.
    std::vector<Cell> cell_table() const {
        std::vector<Cell> out = cells_;
        for (Cell& c : out) {
            const std::size_t known = c.rows.size();
            c.rows.resize(fields_.size(), 0);
            for (std::size_t j = known; j < fields_.size(); ++j) {
                const WField& f = fields_[j];
                if (f.meta.aligned)
                    c.rows[j] = c.events;
                else if (f.meta.var && f.len_index < known)
                    c.rows[j] = c.group[f.len_index];
            }
        }
        out.push_back(Cell{std::numeric_limits<std::uint64_t>::max(), n_events_, rows_now(n_events_), {}});
        return out;
    }
    // Whether every cell of this part is one that server `me` of `servers` owns.
    bool cells_owned(int me, int servers) const noexcept {
        for (const Cell& c : cells_)
            if (TimeGrid::owner(c.id, servers) != me) return false;
        return true;
    }
    // After finish(): every cache buffer is freed (for the ordering's memory).
    void release_caches() {
        free_spares();
        for (WField& f : fields_)
            if (f.cache.cached() == 0) f.cache.free_buffer();  // none cached after finish()
    }

    // The hot path, once per value: the open event's value of f, then end_event() once the
    // event's values are all given. Without a file only the events are counted. After a
    // failed write both throw that error (Errc::hdf5) and the event count stays.
    void put(WField& f, const unsigned char* data) {
        if (!has_file_) return;
        if (track_order_ && !f.meta.aligned && !f.meta.var) mark_given(f, n_events_, 1);
        if (f.meta.length) note_length(f, data);
        append(f, f.meta.aligned ? n_events_ : f.cache.rows(), data);
    }
    // A var_ field's n rows in the open event (its group's length is a put() of its own,
    // before). Rows its group had in earlier events that this field did not give (it came
    // late, or was left out) are fill rows first: pad_groups.
    void put_rows(WField& f, const unsigned char* data, std::uint64_t n) {
        if (!has_file_) return;
        const std::uint64_t at = f.meta.var ? std::max(f.cache.rows(), group_rows_before(fields_[f.len_index]))
                                            : f.cache.rows();  // (the ordering's unaligned rows)
        append_run(f, at, data, f.meta.bytes, static_cast<std::size_t>(n));
    }
    void end_event(std::int64_t ts) {
        if (has_file_) append(fields_[0], n_events_, reinterpret_cast<const unsigned char*>(&ts));
        if (track_order_) note_order(reinterpret_cast<const unsigned char*>(&ts), 8, 1);
        ++n_events_;
        if (clock_.tick()) on_clock();
    }

    // Runs of n events at once (the decoder's uniform batches): value i of f, at
    // src + i * stride, belongs to the i-th event from now; then the n events end, with
    // their timestamps at ts + i * stride. The same as n put()s and end_event()s.
    void put_run(WField& f, const unsigned char* src, std::size_t stride, std::size_t n) {
        if (!has_file_) return;
        if (track_order_ && !f.meta.aligned && !f.meta.var) mark_given(f, n_events_, n);
        append_run(f, f.meta.aligned ? n_events_ : f.cache.rows(), src, stride, n);
    }
    // The same for an aligned field whose n values lie each at its own place, row_of(i)
    // (RowCache::append_gather); the events end with end_events().
    template <class RowOf> void put_gather(WField& f, std::size_t n, RowOf&& row_of) {
        if (!has_file_) return;
        FieldSink s(*this, f);
        f.cache.append_gather(n_events_, n, row_of, s);
    }
    // Holds this writer's HDF5 lock (h5_): another thread's HDF5 calls made while the write
    // thread may run (HDF5 need not be thread-safe; see h5_ below).
    std::unique_lock<std::mutex> hdf5_lock() { return std::unique_lock<std::mutex>(h5_); }
    void end_events(const unsigned char* ts, std::size_t stride, std::size_t n) {
        if (has_file_) append_run(fields_[0], n_events_, ts, stride, n);
        if (track_order_) note_order(ts, stride, n);
        n_events_ += n;
        if (clock_.tick(n)) on_clock();
    }
    // The same for events of several clients (StreamMerge): event i came from client[i].
    void end_events(const std::int64_t* ts, const int* client, std::size_t n) {
        if (has_file_) append_run(fields_[0], n_events_, reinterpret_cast<const unsigned char*>(ts), 8, n);
        if (track_order_)
            for (std::size_t i = 0; i < n; ++i) {
                client_ = client[i];
                note_order(reinterpret_cast<const unsigned char*>(ts + i), 8, 1);
            }
        n_events_ += n;
        if (clock_.tick(n)) on_clock();
    }
    // Between events, from a loop that may have nothing else to do (a server waiting).
    void checkpoint_if_due() {
        if (clock_.tick()) on_clock();
    }

    // Makes everything given so far durable: every cache written, every aligned dataset
    // as long as the events, unaligned ones as their rows, then the file flushed. The file
    // is in SWMR mode, so what is on disk is a valid file at every instant; after this,
    // one that holds these events. Between events only. After a failed write: throws it.
    // With compression and a write thread (unless `now`) the checkpoint is queued for the
    // thread instead (checkpoint_queued()); `now` waits for the thread and takes it here.
    void checkpoint(bool now = false) {
        if (!has_file_ || !file_.valid()) return;
        if (io_.filtered() && async_ && !now) {
            checkpoint_queued();
            return;
        }
        if (checkpoint_hook) checkpoint_hook(0);
        if (failed()) fail();
        pad_groups();
        wait_written();  // what the write thread holds first (it stays, for the next full caches)
        try {
            std::lock_guard<std::mutex> g(h5_);
            H5Quiet q;
            const double t0 = now_seconds();
            for (WField& f : fields_) {
                // The cached rows go out and stay cached: the cache keeps its place in the
                // chunk grid, and writes them again, whole, when it is full.
                const std::uint64_t want = f.meta.aligned ? n_events_ : f.cache.rows();
                const RowCache& c = f.cache;
                if (c.cached() > 0) {
                    write_cache(f, c.data(), c.start(), c.cached(), want, c.limit());
                    f.written_end = c.start() + c.cached();
                }
                if (!f.ds.dset.valid()) continue;
                // Aligned: at least the events (an image dataset may run ahead: recovery
                // stops at attr_events). Unaligned: exactly its rows.
                if (f.meta.aligned ? f.ds.extent < want : f.ds.extent != want) io_.extend(f.ds, f.meta, want);
            }
            flush_file(n_events_, fields_.size(), t0);
        } catch (...) {
            set_error(fields_[0], n_events_);
            fail();
        }
    }
    // The queued checkpoint (compression): every field's cached rows go to the write thread
    // as a job of their own (the field goes on filling a copy of its cache, in its spare
    // buffer: no new memory), then a mark that sets the extents and flushes the file, on
    // the thread, after them. So the compressing stays off this thread; it waits only for
    // a field whose last full cache is still queued (as its next hand-over would). At most
    // one checkpoint is queued: while one is, the clock's next tick takes the next.
    void checkpoint_queued() {
        {
            auto lk = queue_.lock();
            if (checkpoint_queued_) return;
        }
        if (checkpoint_hook) checkpoint_hook(0);
        if (failed()) fail();
        pad_groups();
        const std::uint64_t events = n_events_;
        std::vector<std::pair<WField*, std::uint64_t>> marks;  // each field's rows
        for (WField& f : fields_) {
            const std::uint64_t want = f.meta.aligned ? n_events_ : f.cache.rows();
            const RowCache& c = f.cache;
            if (c.cached() > 0) {
                const std::uint64_t known = std::max(c.start() + c.cached(), want);
                const std::size_t limit = c.limit();
                if (!hand_over(f, known, limit, true)) {  // no thread, or no room for a copy: here
                    write_now(f, c.data(), c.start(), c.cached(), known, limit);
                    auto lk = queue_.lock();
                    f.written_end = c.start() + c.cached();
                }
            }
            marks.emplace_back(&f, want);
        }
        WriteQueue::Job mark;
        mark.write = [this, events, marks = std::move(marks)](const unsigned char*) {
            std::lock_guard<std::mutex> g(h5_);
            H5Quiet q;
            write_mark(events, marks);
        };
        WField* ts = &fields_[0];
        mark.done = [this, events, ts](bool written) {
            if (!written)  // as a checkpoint taken on the caller's thread (set_error)
                ts->lost_from = std::min(ts->lost_from, std::max(events, ts->written_end));
            checkpoint_queued_ = false;
        };
        auto lk = queue_.lock();
        if (queue_.failed()) {
            lk.unlock();
            fail();
        }
        checkpoint_queued_ = true;
        queue_.push(lk, std::move(mark));
    }
    // A checkpoint's end: the events made durable recorded, the file flushed (the caller
    // holds h5_). fields: the number of fields (room for the next flush grows with it).
    void flush_file(std::uint64_t events, std::size_t fields, double t0) {
        h5_set_attr_u64(file_.get(), attr_events, events);
        // The flush writes metadata: room for it is held back from the data (like the
        // close's), given to it now and taken again after. A file system too full to give
        // it back is an error now, while the file is flushed and the close's room is kept.
        const bool had_room = spare_flush_.held();
        spare_flush_.release();
        if (H5Fflush(file_.get(), H5F_SCOPE_LOCAL) < 0) throw_h5("cannot flush '" + path_ + "'");
        if (checkpoint_hook) checkpoint_hook(1);
        add_write_seconds(now_seconds() - t0);
        checkpoints_.fetch_add(1, std::memory_order_relaxed);
        if (had_room) {
            const int err = spare_flush_.hold(path_, spare_space_bytes + fields * spare_space_per_field);
            if (SpareSpace::no_room(err))
                throw_error(Errc::hdf5, "the file system of '" + path_ +
                                            "' is full: no room left for the next checkpoint (every event up to "
                                            "this one is in the file)", err);
            if (err)  // not the disk: the writes go on, without room held for the flushes
                log(LogLevel::warning, "cannot hold disk space back for the checkpoints of '" + path_ + "' any more (" +
                                           std::strerror(err) + "); writing on without it");
        }
    }
    std::uint64_t checkpoints() const noexcept { return checkpoints_.load(std::memory_order_relaxed); }

    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    // A file still open here (finish() was never reached: an error before it in done(), or
    // an exception) is closed as close_on_abort() does: readable, aligned.
    ~Writer() {
        close_on_abort();
        stop_thread();
    }

    // Flushes every cache, gives aligned datasets their final length, writes the summary
    // (serial mode) and closes the file; then the attributes (serial mode), in the file
    // opened again without SWMR: HDF5's SWMR writer may not add attributes (several on a
    // dataset it wrote hang or crash HDF5 1.10), and the file is complete on disk before.
    // Errors are thrown; the file is closed either way (after a failed write as
    // close_on_abort() leaves it). An attribute that cannot be written (its path names
    // nothing) is left out, and thrown once the others are written.
    void finish(const std::vector<SummaryItem>* summary, const std::vector<AttributeItem>* attributes = nullptr) {
        if (!has_file_ || !file_.valid()) return;
        if (checkpoint_hook) checkpoint_hook(2);
        try {
            pad_groups();
            for (WField& f : fields_) flush(f);
            drain();
        } catch (...) {
            close_on_abort();
            throw;
        }
        H5Quiet q;
        try {
            for (WField& f : fields_) {
                const std::uint64_t want = f.meta.aligned ? n_events_ : f.cache.rows();
                if (!f.ds.dset.valid()) io_.create(f.ds, f.meta, want, f.cache.limit());
                if (f.ds.extent != want) io_.extend(f.ds, f.meta, want);
                f.ds.dset.reset();
                f.ds.memtype.reset();
            }
            if (summary) write_summary(file_.get(), *summary);
            h5_set_attr_u64(file_.get(), attr_events, n_events_);
        } catch (...) {
            close_on_abort();
            throw;
        }
        spare_space_.release();  // room for the metadata written by the close
        spare_flush_.release();
        const herr_t closed = file_.close();
        reserve_.trim();
        if (closed < 0) throw_h5("closing '" + path_ + "'");
        if (attributes && !attributes->empty()) {
            spare_space_.hold(path_, spare_space_bytes);  // room for the close, whatever the writes
            H5Id f = h5_open_write(path_);
            if (!f.valid()) throw_h5("cannot open '" + path_ + "' again to write its attributes");
            Errc code = Errc::name;
            const std::string problems = write_attributes(f.get(), *attributes, code);
            spare_space_.release();
            if (f.close() < 0) throw_h5("closing '" + path_ + "' after writing its attributes");
            claim_.release();
            if (!problems.empty()) throw_error(code, problems + " (everything else is in the file)");
        }
        claim_.release();
    }

    // Best effort when the job is being aborted, or after a failed write: keep what was
    // given readable. Without a write error every cache is written first and the aligned
    // datasets end at the events so far. After one, nothing more is written: every aligned
    // dataset is cut to the rows complete in all of them (the smallest lost_from), so they
    // stay as long as `timestamp`.
    void close_on_abort() noexcept {
        if (!has_file_ || !file_.valid()) return;
        stop_thread();  // what was handed over is written first (unless a write failed)
        H5Quiet q;
        if (!failed()) {
            try {
                pad_groups();
            } catch (...) {
            }
            for (WField& f : fields_) {
                try {
                    flush(f);
                } catch (...) {
                }
            }
        }
        std::uint64_t common = n_events_;
        std::vector<std::uint64_t> var_rows;  // after a failed write: each var_ field's rows kept
        if (failed()) {
            give_up_caches();
            spare_space_.release();  // the disk may be full: the cuts and the close need room
            spare_flush_.release();
            for (const WField& f : fields_)
                if (f.meta.aligned) common = std::min(common, f.lost_from);
            common = var_complete(common, var_rows);
        }
        for (std::size_t i = 0; i < fields_.size(); ++i) {
            WField& f = fields_[i];
            std::uint64_t want = f.meta.aligned ? common : std::min(f.cache.rows(), f.lost_from);
            if (f.meta.var && !var_rows.empty()) want = var_rows[i];
            try {
                if (!f.ds.dset.valid() && f.ds.chunk_rows == 0)  // never written
                    io_.create(f.ds, f.meta, want, f.cache.limit());
                if (f.ds.dset.valid() && f.ds.extent != want) io_.extend(f.ds, f.meta, want);
            } catch (...) {
            }
            f.ds.dset.reset();
            f.ds.memtype.reset();
        }
        try {
            h5_set_attr_u64(file_.get(), attr_events, common);
        } catch (...) {
        }
        spare_space_.release();
        spare_flush_.release();
        (void)file_.close();  // strong close degree: nothing of the file stays open in HDF5
        reserve_.trim();
        claim_.release();
    }

    // What the join needs to know of this part: events, then each field's description.
    std::vector<unsigned char> describe() const {
        std::vector<unsigned char> out;
        append_pod(out, n_events_);
        append_pod(out, static_cast<std::uint32_t>(fields_.size()));
        for (const WField& f : fields_) {
            append_pod(out, static_cast<std::uint8_t>(f.meta.dtype));
            append_pod(out, f.meta.shape.rank);
            append_pod(out, static_cast<std::uint8_t>(f.meta.aligned));
            append_pod(out, static_cast<std::uint16_t>(f.meta.name.size()));
            append_pod(out, f.meta.aligned ? n_events_ : f.cache.rows());
            for (int i = 0; i < f.meta.shape.rank; ++i) append_pod(out, f.meta.shape.dims[static_cast<std::size_t>(i)]);
            out.insert(out.end(), f.meta.name.begin(), f.meta.name.end());
        }
        return out;
    }

private:
    // The disk space held back for the close's metadata (and the checkpoints'), taken
    // before the file is made: a file system without that room is an error now, with
    // nothing made or replaced, instead of a file a full disk leaves unreadable later.
    // Room that cannot be held for another reason (a file system that refuses the spare
    // file) is a warning.
    void hold_spare(const std::string& path, bool checkpoints) {
        int err = spare_space_.hold(path, spare_space_bytes);
        if (!err && checkpoints) err = spare_flush_.hold(path, spare_space_bytes);
        if (SpareSpace::no_room(err)) {
            spare_space_.release();
            throw_error(Errc::hdf5, "the file system of '" + path + "' has no room for the " +
                                        std::to_string((checkpoints ? 2 : 1) * (spare_space_bytes >> 20)) +
                                        " MiB a writer keeps free for its file's metadata (" + std::strerror(err) + ")",
                        err);
        }
        if (err)
            log(LogLevel::warning, "cannot hold disk space back for the metadata of '" + path + "' (" + std::strerror(err) +
                                       "): a disk that fills up may leave the file unreadable");
    }

    // The file is made under <path>.tmp, switched to SWMR writing (from then on valid on
    // disk at every instant), claimed, and only then renamed to `path`: a crash never
    // leaves a half-made file under the real name. All of it under the directory's lock,
    // after checking that no other writer has claimed `path` since it was checked: of two
    // runs of one name, the second to get here is refused (not the first replaced, nor
    // its <path>.tmp truncated).
    void create_swmr(const std::string& path, const std::function<void(hid_t)>& tag) {
        const std::string creating = path + ".tmp";
        DirLock dir;
        dir.take_unclaimed(path, Errc::option, "cannot write '" + path + "'");
        file_ = h5_create_file(creating, !io_.filtered());
        try {
            if (tag) tag(file_.get());
            if (H5Fstart_swmr_write(file_.get()) < 0) throw_h5("cannot start SWMR writing of '" + creating + "'");
            claim_.take(creating);  // the inode's: it goes with the file to its real name
            if (std::rename(creating.c_str(), path.c_str()) != 0) {
                const int err = errno;
                throw_error(Errc::hdf5, "cannot rename '" + creating + "' to '" + path + "': " + std::strerror(err), err);
            }
        } catch (...) {
            claim_.release();
            (void)file_.close();
            ::unlink(creating.c_str());
            throw;
        }
    }

    // After a failed write: the events, at most `common`, whose var_ rows are all in the
    // file (a var_ field's lost rows end the events at the first one they belong to), and
    // in rows[i] each var_ field's rows for those events, from its group's lengths read
    // back (rows below `common` of a length field are in the file, or gaps: 0). Without
    // var_ fields, or if the lengths cannot be read: common, and rows left empty (each
    // var_ field then keeps its own complete rows).
    std::uint64_t var_complete(std::uint64_t common, std::vector<std::uint64_t>& rows) noexcept {
        try {
            for (const WField& f : fields_) {
                if (!f.meta.var) continue;
                const WField& len = fields_[f.len_index];
                const std::uint64_t have = len.ds.dset.valid() ? len.ds.extent : 0;
                const std::uint64_t kept = std::min(f.cache.rows(), f.lost_from);
                common = std::min(common, events_within(len.ds.dset.get(), common, have, kept));
            }
            rows.assign(fields_.size(), 0);
            for (std::size_t i = 0; i < fields_.size(); ++i) {
                const WField& f = fields_[i];
                if (!f.meta.var) continue;
                const WField& len = fields_[f.len_index];
                rows[i] = rows_of(len.ds.dset.get(), common, len.ds.dset.valid() ? len.ds.extent : 0);
            }
        } catch (...) {
            rows.clear();
        }
        return common;
    }

    // var_ groups. Every field of a group has as many rows as the group's lengths add up
    // to over the events so far: a field that an event did not give (the event gave others
    // of its group), or that first came after events of its group, gets fill rows there.
    // Rows before the open event are padded when the field's next rows come (put_rows),
    // and for every field at each checkpoint, at finish() and on abort (pad_groups).
    void note_length(WField& len, const unsigned char* data) noexcept {
        std::int64_t v;
        std::memcpy(&v, data, 8);
        len.var_rows += static_cast<std::uint64_t>(v);
        len.var_last = static_cast<std::uint64_t>(v);
    }
    // The rows of len's group in the events before the open one (the open event gave a
    // length when len, aligned, has a row for it).
    std::uint64_t group_rows_before(const WField& len) const noexcept {
        return len.var_rows - (len.cache.rows() > n_events_ ? len.var_last : 0);
    }
    void pad_groups() {
        for (WField& f : fields_) {
            if (!f.meta.var) continue;
            const std::uint64_t want = group_rows_before(fields_[f.len_index]);
            if (f.cache.rows() < want) append(f, want - 1, f.fill_row.data());
        }
    }

    std::size_t add_field(const FieldMeta& m, const std::string& source) {
        std::vector<unsigned char> fill_row(m.bytes);
        const auto fb = fill_bytes(m.dtype, m.length);
        const std::size_t es = dtype_size(m.dtype);
        for (std::size_t i = 0; i + es <= m.bytes; i += es) std::memcpy(fill_row.data() + i, fb.data(), es);
        fields_.emplace_back(m, source, std::move(fill_row), opt_.cache_size, opt_.cache_bytes, budget_);
        budget_.set_fields(fields_.size());
        by_name_.emplace(m.name, fields_.size() - 1);
        names_.add(m.name);
        spare_space_.grow(spare_space_bytes + fields_.size() * spare_space_per_field);
        {
            std::lock_guard<std::mutex> g(h5_);  // a queued checkpoint's mark may be using it
            spare_flush_.grow(spare_space_bytes + fields_.size() * spare_space_per_field);
        }
        return fields_.size() - 1;
    }

    // Where a field's cache sends its rows: the write thread, or the dataset writer here.
    class FieldSink final : public RowCache::Sink {
    public:
        FieldSink(Writer& w, WField& f) noexcept : w_(w), f_(f) {}
        void check() override {
            if (w_.failed()) w_.fail();
        }
        std::uint64_t rows_known() override { return f_.meta.aligned ? w_.n_events_ : f_.cache.rows(); }
        bool put_big(std::uint64_t row, const unsigned char* data) override { return w_.write_big(f_, row, data); }
        bool hand_over(RowCache&, std::uint64_t known, std::size_t limit) override {
            return w_.async_ && w_.hand_over(f_, known, limit);
        }
        void write(const unsigned char* data, std::uint64_t start, std::uint64_t n, std::uint64_t known,
                   std::size_t limit) override {
            w_.write_now(f_, data, start, n, known, limit);
        }
        bool take_spare(RowCache&) override { return w_.take_spare(f_); }
        bool free_spares() override { return w_.free_spares(); }

    private:
        Writer& w_;
        WField& f_;
    };

    // Forced inline: it runs once per value, in the decoder's and event()'s loops.
#if defined(__GNUC__)
    __attribute__((always_inline))
#endif
    void append(WField& f, std::uint64_t row, const unsigned char* data) {
        if (!f.cache.try_append(row, data)) append_slow(f, row, data);
    }
    void append_slow(WField& f, std::uint64_t row, const unsigned char* data) {
        FieldSink s(*this, f);
        f.cache.append_slow(row, data, s);
    }
    void append_run(WField& f, std::uint64_t row0, const unsigned char* src, std::size_t stride, std::size_t n) {
        FieldSink s(*this, f);
        f.cache.append_run(row0, src, stride, n, s);
    }
    // Empties f's cache: to the write thread, or written here. known: rows the run is known
    // to have (at least; for the chunk size). After a failed write nothing more is written:
    // every later flush throws that first error again.
    void flush(WField& f, std::uint64_t known = 0) {
        FieldSink s(*this, f);
        f.cache.flush(s, known);
    }

    // The write thread's idle spare caches are freed (they are made again when needed).
    // false: there were none.
    bool free_spares() {
        std::size_t freed = 0;
        const bool any = queue_.free_spares(freed);
        budget_.give(freed);
        return any;
    }
    // Waits until f's cache handed to the write thread is written, and takes it back as
    // f's cache (no new memory). false: f has none (no write thread, or none handed over).
    bool take_spare(WField& f) {
        auto lk = queue_.lock();
        if (!queue_.wait_slot(lk, f.slot)) {
            lk.unlock();
            fail();
        }
        std::vector<unsigned char> b = queue_.take_spare(f.slot);
        if (b.empty()) return false;
        return f.cache.adopt(std::move(b));
    }

    // A big row straight from the batch, one row per chunk, the extent growing by doubling.
    // false: the layouts differ (no raw writes), so the row goes through the cache.
    // With compression: always false, before any HDF5 call (the row is compressed with the
    // others of its cache, on the write thread; the dataset is made there too).
    bool write_big(WField& f, std::uint64_t row, const unsigned char* data) {
        if (io_.filtered()) return false;
        if (failed()) fail();
        try {
            std::lock_guard<std::mutex> g(h5_);
            if (!f.ds.dset.valid()) io_.create(f.ds, f.meta, row + 1, f.cache.limit());
            if (!f.ds.direct) return false;
            const double t0 = now_seconds();
            io_.write_big(f.ds, f.meta, row, data);
            add_write_seconds(now_seconds() - t0);
            return true;
        } catch (...) {
            set_error(f, row);
            fail();
        }
    }

    // Rows [start, start + n) of f from `data`, on this thread; a failure becomes the
    // sticky error.
    void write_now(WField& f, const unsigned char* data, std::uint64_t start, std::uint64_t n, std::uint64_t known,
                   std::size_t limit) {
        try {
            std::lock_guard<std::mutex> g(h5_);
            H5Quiet q;
            write_cache(f, data, start, n, known, limit);
        } catch (...) {
            set_error(f, start);
            fail();
        }
    }

    // Rows [start, start + n) of f from `data`. The caller holds h5_. known, limit: see
    // DatasetWriter::create().
    void write_cache(WField& f, const unsigned char* data, std::uint64_t start, std::uint64_t n, std::uint64_t known,
                     std::size_t limit) {
        const double t0 = now_seconds();
        io_.write(f.ds, f.meta, data, start, n, known, limit);
        add_write_seconds(now_seconds() - t0);
    }
    // The caller holds h5_ (the only writers), so a load and a store do not lose time.
    void add_write_seconds(double s) {
        write_seconds_.store(write_seconds_.load(std::memory_order_relaxed) + s, std::memory_order_relaxed);
    }

    // ---- errors
    bool failed() const noexcept { return queue_.failed(); }
    // Records the current exception as the sticky error (the first one wins) and that f's
    // rows from `start` on may be lost.
    void set_error(WField& f, std::uint64_t start) {
        auto lk = queue_.lock();
        queue_.note_error(std::current_exception());
        f.lost_from = std::min(f.lost_from, std::max(start, f.written_end));  // a checkpoint wrote those
    }
    // Every field's cached rows are given up: they will never be written, and with no
    // cached row every value takes the slow path, which throws. The caller's thread.
    void give_up_caches() {
        auto lk = queue_.lock();
        for (WField& g : fields_) {
            if (g.cache.cached() == 0) continue;
            g.lost_from = std::min(g.lost_from, std::max(g.cache.start(), g.written_end));  // a checkpoint wrote those
            g.cache.drop();
        }
    }
    // Throws the sticky error on the caller's thread, after giving up the caches.
    [[noreturn]] void fail() {
        give_up_caches();
        std::rethrow_exception(queue_.error());
    }

    // ---- write thread
    // With or without one: the budget's share per field (limit_rows) follows.
    void set_async(bool on) noexcept {
        async_ = on;
        budget_.set_threaded(on);
    }

    // The mark of a queued checkpoint, on the write thread, which holds h5_: the rows before
    // it are written. Extents only grow here (the caller's thread may have written rows of
    // its own since, write_now). events: the events it makes durable; marks: each field's rows.
    void write_mark(std::uint64_t events, const std::vector<std::pair<WField*, std::uint64_t>>& marks) {
        const double t0 = now_seconds();
        for (const auto& m : marks) {
            WField& f = *m.first;
            if (f.ds.dset.valid() && f.ds.extent < m.second) io_.extend(f.ds, f.meta, m.second);
        }
        flush_file(events, marks.size(), t0);  // not fields_.size(): the caller may add one now
    }

    // Queues f's cache for the write thread and gives f its spare one (or none: a new one
    // is made on the next row, within the budget); waits while f already has a cache
    // queued (back-pressure). false: no thread could be started (write here).
    // keep (a queued checkpoint): f keeps its rows, copied into the spare (or a new buffer
    // of the same size, within the budget); false also when there is no room for it.
    bool hand_over(WField& f, std::uint64_t known, std::size_t limit, bool keep = false) {
        auto lk = queue_.lock();
        if (!queue_.start()) {
            set_async(false);
            return false;
        }
        if (!queue_.wait_slot(lk, f.slot)) {
            lk.unlock();
            fail();
        }
        RowCache& c = f.cache;
        std::vector<unsigned char> next = queue_.take_spare(f.slot);
        if (next.size() > limit * f.meta.bytes) {  // above the limit now: freed
            budget_.give(next.size());
            std::vector<unsigned char>().swap(next);
        }
        const std::size_t kept = c.cached() * f.meta.bytes;
        if (keep && next.size() < kept) {
            if (next.size() + budget_.room() < c.buffer_bytes()) {  // no room for a copy: f keeps its cache
                if (!next.empty()) queue_.keep_spare(f.slot, std::move(next));
                return false;
            }
            budget_.give(next.size());
            std::vector<unsigned char>(c.buffer_bytes()).swap(next);
            budget_.take(next.size());
        }
        if (keep) std::memcpy(next.data(), c.data(), kept);
        const std::uint64_t start = c.start(), rows = c.cached();
        WField* fp = &f;
        WriteQueue::Job j;
        j.slot = &f.slot;
        j.bytes = rows * f.meta.bytes;
        j.write = [this, fp, start, rows, known, limit](const unsigned char* data) {
            std::lock_guard<std::mutex> g(h5_);
            H5Quiet q;
            write_cache(*fp, data, start, rows, known, limit);
        };
        j.done = [fp, start, rows, keep](bool written) {
            if (keep && written)  // the checkpoint's copy is on disk
                fp->written_end = std::max(fp->written_end, start + rows);
            if (!written)  // rows a checkpoint wrote (below written_end) stay
                fp->lost_from = std::min(fp->lost_from, std::max(start, fp->written_end));
        };
        j.buf = c.swap_buffer(std::move(next), keep);
        queue_.push(lk, std::move(j));
        return true;
    }

    // Lets the write thread finish what was handed over, then ends it. From then on the
    // caller's thread writes (also when no thread was started yet: none is started later).
    void stop_thread() noexcept {
        set_async(false);
        queue_.stop();
    }
    // Waits until every cache handed to the write thread is written, and throws a write
    // error, if any. The thread stays (a checkpoint, between two full caches).
    void wait_written() {
        queue_.wait_idle();
        if (failed()) fail();
    }
    // stop_thread(), then a write error, if any, is thrown here.
    void drain() {
        stop_thread();
        if (failed()) fail();
    }
    const Options& opt_;
    // One clock for the periodic work: it ticks at the next task's time (its period is the
    // shorter one, which sets how often it reads the clock); each task keeps its own grid
    // (no drift).
    Periodic clock_;
    double checkpoint_period_ = 0, checkpoint_next_ = 0;  // Options::checkpoint_seconds x share
    double progress_period_ = 0, progress_next_ = 0;      // set_progress()
    std::function<void()> progress_;
    void rearm() {
        const double a = checkpoint_period_, b = progress_period_;
        const double t = now_seconds();  // before the clock's own start: never after its ticks
        clock_ = Periodic(a > 0 && b > 0 ? std::min(a, b) : a > 0 ? a : b);
        checkpoint_next_ = t + a;
        progress_next_ = t + b;
        clock_.set_next(next_task());
    }
    double next_task() const {
        return checkpoint_period_ <= 0 ? progress_next_
               : progress_period_ <= 0 ? checkpoint_next_
                                       : std::min(checkpoint_next_, progress_next_);
    }
    static bool due(double t, double& next, double period) {
        if (period <= 0 || t < next) return false;
        next = next + period > t ? next + period : t + period;  // after a pause: from now
        return true;
    }
    void on_clock() {
        const double t = now_seconds();
        const bool c = due(t, checkpoint_next_, checkpoint_period_), p = due(t, progress_next_, progress_period_);
        clock_.set_next(next_task());  // before the tasks: a checkpoint may throw
        if (c) checkpoint();
        if (p) progress_();
    }
    std::atomic<std::uint64_t> checkpoints_{0};  // taken (a queued one counts once flushed)
    bool has_file_;
    bool async_;  // full caches go to the write thread
    std::string path_;
    H5Id file_;
    FileReserve reserve_;
    WriteClaim claim_;        // held on the file from its making to its close
    SpareSpace spare_flush_;  // room for a checkpoint's metadata (given to it, then taken again)
    SpareSpace spare_space_;
    DatasetWriter io_;     // every HDF5 call on the datasets
    CacheBudget budget_;   // the memory of every field's cache
    std::deque<WField> fields_;  // deque: FieldMeta addresses stay valid for EntryRef
    std::unordered_map<std::string, std::size_t> by_name_;
    NameSet names_;
    std::uint64_t n_events_ = 0;
    // Options::time_order (set_client, in_order, client_runs; WField::given).
    bool track_order_ = false;
    bool in_order_ = true;
    int client_ = 0, last_client_ = -1, first_client_ = 0;
    std::int64_t last_ts_ = 0, first_ts_ = 0;
    ClientRuns client_runs_;
    bool cells_on_ = false;  // track_cells(): the cell table (set_grid, event_start)
    TimeGrid grid_;
    std::int64_t cell_lo_ = 0, cell_hi_ = 0;  // the current cell's timestamps
    std::vector<Cell> cells_;
    // Every field's rows after `events` events: aligned ones the events, var_ fields their
    // group's rows, other unaligned ones the rows given (between events only).
    std::vector<std::uint64_t> rows_now(std::uint64_t events) const {
        std::vector<std::uint64_t> r(fields_.size());
        for (std::size_t i = 0; i < fields_.size(); ++i) {
            const WField& f = fields_[i];
            r[i] = f.meta.aligned ? events : f.meta.var ? std::max(f.cache.rows(), group_rows_before(fields_[f.len_index]))
                                                        : f.cache.rows();
        }
        return r;
    }
    void new_cell(std::int64_t ts, std::uint64_t ahead) {
        const std::uint64_t id = grid_.cell(ts);
        grid_.range(id, cell_lo_, cell_hi_);
        Cell c{id, n_events_ + ahead, rows_now(n_events_ + ahead), std::vector<std::uint64_t>(fields_.size(), 0)};
        for (std::size_t i = 0; i < fields_.size(); ++i)
            if (fields_[i].meta.length) c.group[i] = group_rows_before(fields_[i]);
        cells_.push_back(std::move(c));
    }
    void note_order(const unsigned char* ts, std::size_t stride, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            std::int64_t t;
            std::memcpy(&t, ts + i * stride, 8);
            if (last_client_ < 0) {
                first_ts_ = t;
                first_client_ = client_;
            } else if (t < last_ts_ || (t == last_ts_ && client_ < last_client_)) {
                in_order_ = false;
            }
            last_ts_ = t;
            last_client_ = client_;
        }
        client_runs_.add(static_cast<std::uint32_t>(client_), n);
    }
    static void mark_given(WField& f, std::uint64_t e0, std::size_t n) {
        const std::uint64_t end = e0 + n;
        if (f.given.size() * 64 < end) f.given.resize(static_cast<std::size_t>(std::max<std::uint64_t>((end + 63) / 64, f.given.size() * 2)));
        for (std::uint64_t e = e0; e < end; ++e) f.given[static_cast<std::size_t>(e / 64)] |= std::uint64_t(1) << (e % 64);
    }
    std::atomic<double> write_seconds_{0};  // added to under h5_, read from any thread
    // Every HDF5 call of this writer holds h5_ (the caller's thread and the write thread).
    std::mutex h5_;
    // Guarded by the queue's mutex (queue_.lock()): every WField's slot, lost_from and
    // written_end, and checkpoint_queued_.
    bool checkpoint_queued_ = false;  // a checkpoint's mark is queued or being written
    WriteQueue queue_;
};

// ============================================================================ [>>impl-decoder]
// 14. Decoder: reads one batch of one client's stream, checks it, runs the callbacks on
//     each complete event, and hands the event to the writer (a batch whose events all
//     have the same fields goes to it field by field). Also the merge of a server's
//     client streams in time order (StreamMerge: time_order, one server), and the serial
//     sink, which without callbacks skips batches and feeds the writer's columns directly.

// The shared-memory slots of one client (section 15), in the client's segment of the
// node's window: `count` release flags, each on its own cache line (1: the client may fill
// the slot, 0: the server owns it), then `count` slots of `slot_bytes`, each starting on a
// cache line. The segment is one line larger than needed, and both sides align its start
// up to a line themselves, so the layout does not depend on where MPI places the segment.
struct ShmSlots {
    unsigned char* base = nullptr;   // aligned to `line`
    std::size_t slot_bytes = 0;
    std::uint32_t count = 0;
    static constexpr std::size_t line = 64;
    static std::size_t stride(std::size_t b) { return (b + line - 1) / line * line; }
    static std::size_t bytes(std::uint32_t k, std::size_t b) { return line + (line + stride(b)) * k; }
    static unsigned char* align(void* segment) {
        const auto a = reinterpret_cast<std::uintptr_t>(segment);
        return static_cast<unsigned char*>(segment) + ((line - a % line) % line);
    }
    std::atomic<std::uint32_t>* flag(std::uint32_t j) const {
        return reinterpret_cast<std::atomic<std::uint32_t>*>(base + line * j);
    }
    unsigned char* slot(std::uint32_t j) const { return base + line * count + stride(slot_bytes) * j; }
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "shared-memory flags need lock-free atomics");

struct Stream {
    std::vector<WField*> map;        // client field id -> writer field
    ShmSlots shm;                    // the client's slots when it shares this server's node
    std::uint32_t next_seq = 0;
    std::uint64_t events = 0;
    bool done = false;
    std::string source;              // "client 2 (rank 4)", for error messages
    int client = 0;                  // its client index (Options::time_order: ties)
};

class Decoder {
public:
    Decoder(Writer& w, const std::vector<Callback>& callbacks) : w_(w), callbacks_(callbacks) {}
    bool plain() const noexcept { return callbacks_.empty(); }  // no callback sees the events
    // Whether the exception in flight came from a callback (the failure report says so).
    bool in_callback() const noexcept { return in_callback_; }

    void batch(Stream& s, const unsigned char* data, std::size_t n) {
        Reader r{data, data + n, &s.source};
        const WireHeader h = open(s, r);
        rest(s, r, h.n_events);
    }
    // The header of a batch of s read by r (which spans exactly the batch), checked with
    // its place in the stream; r is left at the first event. (StreamMerge: at arrival.)
    WireHeader open(Stream& s, Reader& r) {
        const auto n = static_cast<std::size_t>(r.end - r.p);
        const auto h = r.get<WireHeader>();
        if (h.magic != wire_magic || h.version != wire_version || h.bytes != n)
            throw_error(Errc::protocol, "malformed batch from " + s.source);
        if (h.seq != s.next_seq)
            throw_error(Errc::protocol, "batch " + std::to_string(h.seq) + " from " + s.source + " arrived, expected " +
                                            std::to_string(s.next_seq));
        ++s.next_seq;
        return h;
    }
    // The last n events of a batch of s, from r to the batch's end (uniform ones as runs).
    void rest(Stream& s, Reader& r, std::uint32_t n) {
        w_.set_client(s.client);
        if (n > 0) {  // (a routed batch lies within one cell of the grid)
            r.need(8);
            std::int64_t ts;
            std::memcpy(&ts, r.p, 8);
            w_.event_start(ts);
        }
        if (callbacks_.empty() && uniform(s, r, n)) return;
        for (std::uint32_t e = 0; e < n; ++e) event(s, r);
        end(s, r);
    }
    // One event of s from r; the caller has set the writer's client (set_client).
    void event(Stream& s, Reader& r) {
        const auto ts = r.get<std::int64_t>();
        const auto ne = r.get<std::uint32_t>();
        ++mark_;  // entry() refuses a field given twice in this event
        if (callbacks_.empty()) {  // fast path: values go straight to the columns
            for (std::uint32_t k = 0; k < ne; ++k) {
                WField& f = entry(s, r);
                if (f.meta.var) {
                    const std::uint64_t n = rows(s, f, r);
                    if (WField* len = group_length(s, f, n)) {
                        const auto v = static_cast<std::int64_t>(n);
                        w_.put(*len, reinterpret_cast<const unsigned char*>(&v));
                    }
                    w_.put_rows(f, r.p, n);
                    r.p += n * f.meta.bytes;
                } else {
                    w_.put(f, r.p);
                    r.p += f.meta.bytes;
                }
            }
        } else {  // the event is complete before callbacks see it, and written after
            entries_.clear();
            fptr_.clear();
            lengths_.resize(ne);  // stays put while the event's entries point into it
            for (std::uint32_t k = 0; k < ne; ++k) {
                WField& f = entry(s, r);
                const std::uint64_t n = f.meta.var ? rows(s, f, r) : 1;
                if (f.meta.var) {
                    if (WField* len = group_length(s, f, n)) {  // the group's length, as a field
                        lengths_[k] = static_cast<std::int64_t>(n);
                        entries_.push_back(EntryRef{&len->meta, reinterpret_cast<const unsigned char*>(&lengths_[k])});
                        fptr_.push_back(len);
                    }
                }
                entries_.push_back(EntryRef{&f.meta, r.p, n});
                fptr_.push_back(&f);
                r.p += n * f.meta.bytes;
            }
            const Event ev(ts, entries_.data(), entries_.size());
            in_callback_ = true;  // left set by an exception
            for (const Callback& cb : callbacks_) cb(ev);
            in_callback_ = false;
            for (std::size_t i = 0; i < entries_.size(); ++i) {
                if (fptr_[i]->meta.var)
                    w_.put_rows(*fptr_[i], entries_[i].data, entries_[i].rows);
                else
                    w_.put(*fptr_[i], entries_[i].data);
            }
        }
        w_.end_event(ts);
        ++s.events;
    }
    void end(const Stream& s, const Reader& r) const {
        if (r.p != r.end) throw_error(Errc::protocol, "trailing bytes in a batch from " + s.source);
    }
    // A definitions message (WireKind::define, routed streams): definition records, each
    // after its wire_define, from r to its end. Taken when it arrives, ahead of batches of
    // s still held: they define nothing new (a definition met again is checked, skipped).
    void definitions(Stream& s, Reader& r) {
        while (r.p != r.end) {
            if (r.get<std::uint32_t>() != wire_define) throw_error(Errc::protocol, "malformed definitions from " + s.source);
            define(s, r);
        }
    }

    // A field's value in each event record of a uniform batch.
    struct Slot {
        WField* f;
        std::uint32_t id;
        std::size_t at;  // offset of the value in the event record
    };
    // Uniform batches: every event has the same fields in the same order and no field is
    // defined inside the batch, which is the common case once a stream has started. The
    // n events left in a batch of s, from r, are checked whole: true and their layout (the
    // slots, and `rec`, the bytes of each event's record) when they are uniform.
    bool layout(Stream& s, const Reader& r, std::uint32_t n, std::vector<Slot>& out, std::size_t& rec) {
        if (n < 2) return false;
        const unsigned char* base = r.p;
        const std::size_t avail = static_cast<std::size_t>(r.end - r.p);
        if (avail < event_header_bytes) return false;
        std::uint32_t ne;
        std::memcpy(&ne, base + 8, 4);
        out.clear();
        ++mark_;
        std::size_t off = event_header_bytes;
        for (std::uint32_t k = 0; k < ne; ++k) {
            if (avail < off + 4) return false;
            std::uint32_t id;
            std::memcpy(&id, base + off, 4);
            if (id >= s.map.size()) return false;  // a definition, or an error the general path reports
            WField* f = s.map[id];
            if (f->mark == mark_ || f->meta.var) return false;  // a field given twice in one event; rows
                                                                // of any number (var_): not uniform
            f->mark = mark_;
            out.push_back(Slot{f, id, off + 4});
            off += 4 + f->meta.bytes;
        }
        rec = off;
        if (rec == 0 || avail != rec * n) return false;
        for (std::uint32_t e = 1; e < n; ++e) {  // every event: same count, same ids
            const unsigned char* ev = base + static_cast<std::size_t>(e) * rec;
            std::uint32_t c;
            std::memcpy(&c, ev + 8, 4);
            if (c != ne) return false;
            for (const Slot& l : out) {
                std::uint32_t id;
                std::memcpy(&id, ev + l.at - 4, 4);
                if (id != l.id) return false;
            }
        }
        return true;
    }

private:
    // A uniform batch's events are written field by field as runs of rows (put_run): one
    // tight copy loop per field instead of a parse and a call per value. false: not
    // uniform, nothing consumed.
    bool uniform(Stream& s, const Reader& r, std::uint32_t n) {
        std::size_t rec = 0;
        if (!layout(s, r, n, layout_, rec)) return false;
        for (const Slot& l : layout_) w_.put_run(*l.f, r.p + l.at, rec, n);
        w_.end_events(r.p, rec, n);
        s.events += n;
        return true;
    }

    // The field of the next entry (reading any definitions before it); its value, whose
    // bytes are checked to be there, starts at r.p.
    WField& entry(Stream& s, Reader& r) {
        auto id = r.get<std::uint32_t>();
        while (id == wire_define) {
            define(s, r);
            id = r.get<std::uint32_t>();
        }
        if (id >= s.map.size()) throw_error(Errc::protocol, "unknown field id from " + s.source);
        WField& f = *s.map[id];
        if (f.mark == mark_) throw_error(Errc::protocol, "field '" + f.meta.name + "' twice in one event from " + s.source);
        f.mark = mark_;
        if (!f.meta.var) r.need(f.meta.bytes);
        return f;
    }
    // A var_ entry's row count, whose rows are checked to be there; they start at r.p.
    static std::uint64_t rows(const Stream& s, const WField& f, Reader& r) {
        const std::uint64_t n = r.get<std::uint32_t>();
        const std::size_t left = static_cast<std::size_t>(r.end - r.p);
        if (f.meta.bytes != 0 && n > left / f.meta.bytes)
            throw_error(Errc::protocol, "truncated message from " + s.source);
        return n;
    }

    void define(Stream& s, Reader& r) {
        const auto id = r.get<std::uint32_t>();
        const auto dt = r.get<std::uint8_t>();
        const auto rank = r.get<std::uint8_t>();
        const auto len = r.get<std::uint16_t>();
        if (id > s.map.size() || !valid_dtype(dt) || rank > max_rank)
            throw_error(Errc::protocol, "malformed field definition from " + s.source);
        Shape shape;
        shape.rank = rank;
        for (int i = 0; i < rank; ++i) shape.dims[static_cast<std::size_t>(i)] = r.get<std::uint64_t>();
        const std::string_view name = r.bytes(len);
        if (id < s.map.size()) {  // sent ahead (definitions()): the same field, or an error
            const FieldMeta& known = s.map[id]->meta;
            if (known.name != name || known.dtype != static_cast<DType>(dt))
                throw_error(Errc::protocol, "field id " + std::to_string(id) + " defined twice by " + s.source);
            return;
        }
        const FieldMeta m = make_meta(name, static_cast<DType>(dt), shape);
        s.map.push_back(w_.field(w_.field_index(m, s.source)));
    }

    // The length field of var_ field f's group, the first time the group appears in this
    // event (null after that: a later field of the group must have as many rows).
    WField* group_length(const Stream& s, const WField& f, std::uint64_t n) {
        WField& len = *w_.field(f.len_index);
        if (len.mark != mark_) {
            len.mark = mark_;
            len.group_rows = n;
            return &len;
        }
        if (len.group_rows != n)
            throw_error(Errc::protocol, "var_ field '" + f.meta.name + "' from " + s.source + " has " +
                                            std::to_string(n) + " rows, another field of its group " +
                                            std::to_string(len.group_rows) + " in the same event");
        return nullptr;
    }

    Writer& w_;
    const std::vector<Callback>& callbacks_;
    bool in_callback_ = false;
    std::vector<std::int64_t> lengths_;  // the var_ groups' lengths of the event being called back
    std::vector<EntryRef> entries_;
    std::vector<WField*> fptr_;
    std::vector<Slot> layout_;  // of the uniform batch being checked
    std::uint64_t mark_ = 0;    // one per check, to find a field given twice
};

// Options::time_order with several clients: each server decodes its clients' batches in
// timestamp order (ties by client), a merge of streams that each increase (event() refuses
// a smaller timestamp), so its part is written in order once and the ordering at done()
// has nothing to move (section 19). With several servers every client is a stream of
// every server, which gets the events of the cells of the time grid it owns (routed
// streams, section 15). A batch is held until no client can still send an event before
// its next one: a client's next event is no earlier than its last, nor than its last
// batch's bound (WireHeader::extra), nor than the bound of an empty batch (a routed
// client passed this server's cells); a client not heard from yet holds everything. Uniform batches of several clients are merged
// field by field (gather), others event by event (emit); a batch in a shared-memory slot
// is held in place (a client that runs ahead then waits for a slot), a message keeps its
// receive buffer (the receive gets a spare one), or, if under half full, is copied into
// a buffer of its size. Held batches are all released, in
// merge order,
//   - when the oldest was held hold_seconds (0.5 s, merge_hold_seconds, or a tenth of
//     checkpoint_seconds if less: the checkpoint promise keeps its room; and clients
//     that wait for each other, one for a slot the server holds, are never stuck) and
//     the server waits with nothing come (poll: a server busy or blocked in a write first
//     takes what came meanwhile), and before the server's forced checkpoint, an abort,
//     or the end of the streams;
//   - when their buffers pass `budget` bytes (clients further apart than that).
// `budget` is an eighth of cache_memory, at most 32 MiB, and no merge below 4 batches.
// The merge stops for good when the writer's ClientRuns (2 bytes per event when clients
// alternate) pass `budget` too. Holding costs no event, and a release at worst order:
// the part is then out of order and the ordering at done() moves its events.
class StreamMerge {
public:
    // The bytes a server's merge may hold, and as many for the writer's client runs, both
    // taken from cache_memory; 0: the server does not merge.
    // With several servers every server merges every client's stream (routed streams).
    static std::size_t budget(const Options& o, int clients) {
        if (!o.time_order || o.filename.empty() || clients < 2) return 0;
        const std::size_t b = std::min<std::size_t>(o.cache_memory / 8, std::size_t(32) << 20);
        return b >= 4 * o.batch_bytes ? b : 0;  // room for a few full batches, or no merge
    }

    StreamMerge(Decoder& d, Writer& w, std::size_t budget, double hold_seconds)
        : d_(d), w_(w), budget_(budget), hold_seconds_(hold_seconds) {}
    void add_stream(Stream& s) {
        lanes_.emplace_back();
        lanes_.back().s = &s;
    }
    bool active() const noexcept { return active_; }
    // A batch of s, buf[0, n): its header is checked now, then it is held and everything
    // that may be is decoded. A batch filling at least half of buf keeps it (buf is then
    // swapped for a spare buffer of at least `keep` bytes); a smaller one is copied.
    void add(Stream& s, std::vector<unsigned char>& buf, std::size_t n, std::size_t keep) {
        if (n < keep / 2) return add_copy(s, buf.data(), n);
        Held h;
        h.buf.swap(buf);
        if (!spares_.empty()) {
            buf.swap(spares_.back());
            spares_.pop_back();
        }
        if (buf.size() < keep) resize_huge(buf, keep);
        hold(s, std::move(h), n);
    }
    // The same for a batch that is copied (a small one, in add): into a buffer of its own
    // size, freed once decoded, so that the budget counts what it holds (in a spare it
    // counted as a full batch: small batches, shipped because they got old, ended holds
    // long before the merge held `budget` bytes).
    void add_copy(Stream& s, const unsigned char* data, std::size_t n) {
        Held h;
        h.copy = true;
        h.buf.assign(data, data + n);
        hold(s, std::move(h), n);
    }
    // The same for a batch in a client's shared-memory slot: held where it is, and the slot
    // given back (`flag` set) once it is decoded. A client whose slots are all held waits,
    // which keeps a client that runs ahead from filling the server's memory.
    void add_slot(Stream& s, const unsigned char* data, std::size_t n, std::atomic<std::uint32_t>* flag) {
        Held h;
        h.slot_flag = flag;
        h.slot_data = data;
        hold(s, std::move(h), n);
    }
    // Events of s received and not yet decoded.
    std::uint64_t held_events(const Stream& s) const {
        for (const Lane& l : lanes_)
            if (l.s == &s) return l.held_events;
        return 0;
    }
    // Decodes what no stream can precede any more (after a stream ended, say).
    void drain() { merge(false); }
    // Decodes everything held, in merge order.
    void release() { merge(true); }
    // Between messages: the oldest held batch's deadline.
    void poll(double now) {
        if (held_batches_ == 0) return;
        for (const Lane& l : lanes_)
            if (!l.held.empty() && now - l.held.front().arrived > hold_seconds_) {
                release();
                return;
            }
    }

private:
    struct Held {
        std::vector<unsigned char> buf;
        Reader r{};
        std::uint32_t left = 0;       // its events not decoded yet
        std::int64_t max_ts = 0;      // its bound (WireHeader::extra)
        double arrived = 0;
        bool whole = true;            // none decoded yet
        bool copy = false;            // add_copy: buf is its own (not a spare)
        std::atomic<std::uint32_t>* slot_flag = nullptr;  // add_slot: its slot's flag, and
        const unsigned char* slot_data = nullptr;          // its bytes (buf is empty)
        int uniform = -1;             // gather(): its events left are uniform, all aligned
        std::vector<Decoder::Slot> slots;  // (1: with this layout), or not (0); -1 not known
        std::size_t rec = 0;
    };
    struct Lane {
        Stream* s = nullptr;
        std::deque<Held> held;
        std::uint64_t held_events = 0;
        std::int64_t last_ts = 0;     // no later than its next event's timestamp,
        std::int64_t floor = std::numeric_limits<std::int64_t>::min();  // nor this: the bound of
                                      // its last batch decoded, or of an empty one
        bool seen = false;            // last_ts is known
    };
    struct Key {  // an event's place in the merge
        std::int64_t ts;
        int client;
        bool operator<(const Key& o) const noexcept { return ts < o.ts || (ts == o.ts && client < o.client); }
    };
    static Key head(const Lane& l) {
        const Held& h = l.held.front();
        h.r.need(8);
        std::int64_t ts;
        std::memcpy(&ts, h.r.p, 8);
        return Key{ts, l.s->client};
    }

    void hold(Stream& s, Held&& h, std::size_t n) {
        const unsigned char* data = h.slot_data ? h.slot_data : h.buf.data();
        h.r = Reader{data, data + n, &s.source};
        const WireHeader wh = d_.open(s, h.r);
        h.left = wh.n_events;
        h.max_ts = static_cast<std::int64_t>(wh.extra);
        h.arrived = now_seconds();
        Lane& l = lane(s);
        if (h.left == 0) {  // a bound: how far the stream has come (routed streams)
            d_.end(s, h.r);
            give_back(h);
            if (!l.seen) l.last_ts = h.max_ts;
            l.seen = true;
            l.floor = std::max(l.floor, h.max_ts);
            drain();
            return;
        }
        held_bytes_ += h.buf.size();  // a slot's bytes are the client's
        ++held_batches_;
        l.held_events += h.left;
        l.held.push_back(std::move(h));
        drain();
        if (held_bytes_ > budget_) release();
        if (w_.client_runs().bytes() > budget_) {  // from now on in arrival order
            release();
            active_ = false;
        }
    }
    Lane& lane(const Stream& s) {
        for (Lane& l : lanes_)
            if (l.s == &s) return l;
        throw_error(Errc::protocol, "a batch from " + s.source + ", which this server does not merge");
    }

    // Decodes the earliest held events while they come before every stream's next (all:
    // before every held one only): a batch whose bound comes first whole, events of
    // several streams that interleave gathered field by field (gather), the rest event by
    // event (emit).
    void merge(bool all) {
        if (failed_) return;
        const Key none{std::numeric_limits<std::int64_t>::min(), -1};
        for (;;) {
            Lane* best = nullptr;
            const Key top{std::numeric_limits<std::int64_t>::max(), std::numeric_limits<int>::max()};
            Key bk{}, second = top, outer = top;  // outer: the streams that hold nothing
            std::size_t holding = 0;
            for (Lane& l : lanes_) {
                if (!l.held.empty()) {
                    ++holding;
                    const Key k = head(l);
                    if (!best || k < bk) {
                        if (best) second = std::min(second, bk);
                        best = &l;
                        bk = k;
                    } else {
                        second = std::min(second, k);
                    }
                } else if (!all && !l.s->done) {
                    outer = std::min(outer, l.seen ? Key{std::max(l.last_ts, l.floor), l.s->client} : none);
                }
            }
            if (!best || !(bk < outer)) return;
            try {
                const Key limit = std::min(second, outer);
                const Held& h = best->held.front();
                if (holding > 1 && !(h.whole && Key{h.max_ts, best->s->client} < limit) && gather(outer)) continue;
                emit(*best, limit);
            } catch (...) {
                failed_ = true;  // a reader stopped inside an event: nothing more from here
                throw;
            }
        }
    }
    // The first held batches of the streams that hold any, merged while their events come
    // before `outer` and until one of them is used up, when they are uniform with one
    // layout of aligned fields (as clients that give the same fields send): each field is
    // gathered in merge order in one loop (Writer::put_gather). false: not so, nothing done.
    bool gather(Key outer) {
        if (!d_.plain()) return false;
        cursors_.clear();
        const Held* first = nullptr;
        for (Lane& l : lanes_) {
            if (l.held.empty()) continue;
            Held& h = l.held.front();
            if (h.uniform < 0) {
                h.uniform = d_.layout(*l.s, h.r, h.left, h.slots, h.rec) ? 1 : 0;
                for (const Decoder::Slot& sl : h.slots) h.uniform = h.uniform && sl.f->meta.aligned;
            }
            if (!h.uniform) return false;
            if (!first) {
                first = &h;
            } else {
                if (h.rec != first->rec || h.slots.size() != first->slots.size()) return false;
                for (std::size_t k = 0; k < h.slots.size(); ++k)
                    if (h.slots[k].f != first->slots[k].f || h.slots[k].at != first->slots[k].at) return false;
            }
            cursors_.push_back(Cursor{&l, h.r.p, h.left});
        }
        const std::size_t rec = first->rec;
        recs_.clear();
        ts_.clear();
        clients_.clear();
        for (;;) {
            Cursor* c = nullptr;
            Key kc{};
            for (Cursor& g : cursors_) {
                if (g.left == 0) continue;
                Key k{0, g.lane->s->client};
                std::memcpy(&k.ts, g.p, 8);
                if (!c || k < kc) {
                    c = &g;
                    kc = k;
                }
            }
            if (!c || !(kc < outer)) break;
            w_.event_start(kc.ts, recs_.size());
            recs_.push_back(c->p);
            ts_.push_back(kc.ts);
            clients_.push_back(kc.client);
            c->p += rec;
            if (--c->left == 0) break;  // its next batch (or its bound) decides what follows
        }
        const std::size_t n = recs_.size();
        for (const Decoder::Slot& sl : first->slots)
            w_.put_gather(*sl.f, n, [&](std::size_t i) { return recs_[i] + sl.at; });
        w_.end_events(ts_.data(), clients_.data(), n);
        for (Cursor& g : cursors_) {
            Lane& l = *g.lane;
            Held& h = l.held.front();
            const std::uint32_t used = h.left - g.left;
            if (used == 0) continue;
            std::memcpy(&l.last_ts, g.p - rec, 8);
            l.seen = true;
            l.s->events += used;
            l.held_events -= used;
            h.r.p = g.p;
            h.left = g.left;
            h.whole = false;
            if (h.left == 0) {
                d_.end(*l.s, h.r);
                pop(l);
            }
        }
        return true;
    }
    // Decodes the first held batch of l while its events come before `limit`: the whole
    // batch at once when its bound does (uniform batches go as runs).
    void emit(Lane& l, Key limit) {
        Held& h = l.held.front();
        Stream& s = *l.s;
        const std::uint32_t before = h.left;
        if (h.whole && Key{h.max_ts, s.client} < limit) {
            d_.rest(s, h.r, h.left);
            h.left = 0;
            l.last_ts = h.max_ts;
        } else {
            w_.set_client(s.client);
            while (h.left > 0) {
                const Key k = head(l);
                if (!(k < limit)) break;
                w_.event_start(k.ts);
                d_.event(s, h.r);
                --h.left;
                h.whole = false;
                l.last_ts = k.ts;
            }
            if (h.left == 0) d_.end(s, h.r);
        }
        l.seen = true;
        l.held_events -= before - h.left;
        if (h.left == 0) pop(l);
    }
    // The first held batch of l is decoded: its buffer is kept for reuse, or its slot
    // given back.
    void pop(Lane& l) {
        Held& h = l.held.front();
        l.floor = std::max(l.floor, h.max_ts);
        held_bytes_ -= h.buf.size();
        --held_batches_;
        give_back(h);
        l.held.pop_front();
    }
    // A slot batch has no buffer of its own: none goes to the spares for it. (An empty one
    // there would be taken by the next message batch, which then allocated afresh while
    // the real spares beneath stayed unused: a buffer lost per message where slot and
    // message batches alternate, as beside events larger than batch_bytes.)
    void give_back(Held& h) {
        if (h.slot_flag)
            h.slot_flag->store(1, std::memory_order_release);
        else if (!h.copy)
            spares_.push_back(std::move(h.buf));
    }

    Decoder& d_;
    Writer& w_;
    std::size_t budget_;
    double hold_seconds_;
    std::vector<Lane> lanes_;
    struct Cursor {  // gather(): a stream's place in its first held batch
        Lane* lane;
        const unsigned char* p;
        std::uint32_t left;
    };
    std::vector<Cursor> cursors_;
    std::vector<const unsigned char*> recs_;  // gather(): the events' records in merge order,
    std::vector<std::int64_t> ts_;            // their timestamps
    std::vector<int> clients_;                // and clients
    std::vector<std::vector<unsigned char>> spares_;  // buffers of decoded batches, reused
    std::size_t held_bytes_ = 0, held_batches_ = 0;
    bool active_ = true, failed_ = false;
};

// Serial mode. Without callbacks, direct mode: each value goes from event() straight into
// its writer column (no batch, no decoding). With callbacks, which need whole events, full
// batches are decoded and written in-process and the buffer is reused at once.
class SerialSink : public Sink {
public:
    SerialSink(Writer& w, const std::vector<Callback>& cb) : w_(w), decoder_(w, cb), direct_(cb.empty()) {
        stream_.source = "this process";
    }
    bool direct() const noexcept { return direct_; }
    void define(std::uint32_t id, const FieldMeta& meta) override {
        (void)id;  // ids come in order 0, 1, ... (a definition that throws is not recorded)
        stream_.map.push_back(w_.field(w_.field_index(meta, stream_.source)));
    }
    void value(std::uint32_t id, const void* data) override {
        w_.put(*stream_.map[id], static_cast<const unsigned char*>(data));
    }
    void rows(std::uint32_t id, const void* data, std::uint64_t n) override {
        w_.put_rows(*stream_.map[id], static_cast<const unsigned char*>(data), n);
    }
    void end_event(std::int64_t timestamp) override { w_.end_event(timestamp); }
    std::vector<unsigned char>* ship(std::vector<unsigned char>* buf, std::size_t used, std::uint32_t n_events,
                                     std::int64_t max_ts) override {
        WireHeader h{wire_magic, wire_version, static_cast<std::uint16_t>(WireKind::batch), stream_.next_seq, n_events,
                     used, static_cast<std::uint64_t>(max_ts)};
        std::memcpy(buf->data(), &h, sizeof h);
        decoder_.batch(stream_, buf->data(), used);
        return buf;
    }
private:
    Writer& w_;
    Decoder decoder_;
    bool direct_;
    Stream stream_;  // direct mode uses its map too: packer field id -> writer column
};

}  // namespace detail

namespace detail {

// ============================================================================ [>>impl-transport]
// 15. Transport: the state of one rank (Impl), the client's bounded hand-over of batches
//     (shared-memory slots on its server's node, else nonblocking sends; with time_order
//     and several servers, each batch to the server of its cell of the time grid: Sender),
//     the node's shared window, and the server's loop over receives posted ahead (a large
//     batch's data received without waiting for it: Inbox).

struct Impl;
[[noreturn]] void abort_job(Impl& im, const std::string& reason) noexcept;
[[noreturn]] void on_terminate();
inline Impl*& active_impl() {  // the live SmallData of this process, for the exit paths
    static Impl* p = nullptr;
    return p;
}

// While a SmallData is live, an exception that escapes the program (std::terminate) and a
// process that exits before done() (std::exit, an atexit handler) are routed to the
// failure path of section 20, which closes the files and, in parallel mode, ends the job.
// The guard installs the terminate handler and restores the previous one when the
// SmallData goes away, whatever way that happens.
class ExitGuard {
public:
    ExitGuard() = default;
    ExitGuard(const ExitGuard&) = delete;
    ExitGuard& operator=(const ExitGuard&) = delete;
    void install(Impl* im);
    ~ExitGuard() { uninstall(); }
    void uninstall() noexcept;
    std::terminate_handler previous() const noexcept { return prev_; }
private:
    Impl* im_ = nullptr;
    std::terminate_handler prev_ = nullptr;
    bool handles_[2] = {false, false};  // SIGTERM, SIGINT: the library's handler is installed
};

// Server k's part file of the final file `filename`: <stem>_part<k>.h5 (API.md).
inline std::string part_path_of(const std::string& filename, int k) {
    const std::size_t slash = filename.rfind('/');
    const std::size_t dot = filename.rfind('.');
    const std::string stem = (dot != std::string::npos && (slash == std::string::npos || dot > slash + 1))
                                 ? filename.substr(0, dot)
                                 : filename;
    return stem + "_part" + std::to_string(k) + ".h5";
}

// How a final (or serial) file is copied into one self-contained file, and what the copy
// did (section 18, [>>impl-flatten]): done() with Options::self_contained, `smalldata flatten`.
struct FlattenSpec {
    std::size_t chunk_bytes = std::size_t(1) << 20;   // target chunk size (Options::chunk_bytes)
    bool source_filters = true;       // each dataset keeps the filters of its source (the tool);
    Compression compression;          // false: these instead (done(): Options::compression)
    std::size_t block_bytes = std::size_t(4) << 20;   // bytes per read and write (whole chunks)
    bool preallocate = true;          // reserve disk space ahead of the writes (Options::preallocate)
};
struct FlattenStats {
    std::uint64_t bytes = 0;      // data bytes of the per-event datasets copied
    double seconds = 0;           // the whole flatten: checks, copy, close, rename
    double copy_seconds = 0;      // of which moving the per-event datasets' data
    std::size_t datasets = 0;     // per-event datasets made chunked
    std::size_t copied = 0;       // other datasets copied as they are (summaries)
};
void flatten_file(const std::string& in, const std::string& out, const FlattenSpec& spec, FlattenStats* stats = nullptr);

// What a final file is built from, besides the parts' descriptions (Writer::describe()):
// used by the join and by `smalldata recover`.
struct FinalSpec {
    std::string filename;
    int parts = 0;                                // servers
    std::uint64_t run_token = 0;                  // every part must carry it
    const std::vector<SummaryItem>* summary = nullptr;
    std::string builder;                          // who builds it, for messages
    const std::vector<AttributeItem>* attributes = nullptr;
    const FlattenSpec* flatten = nullptr;         // set: `filename` is made self-contained
    FlattenStats* flattened = nullptr;            // then what the flatten did, if set
};
void build_final_file(const FinalSpec& spec, const std::vector<unsigned char>& all, const std::vector<int>& lens);

// Progress lines (section 21): a server other than server 0 sends its figures to server 0
// every half interval; server 0 (or the serial process) prints one line every interval.
struct ProgressState {
    // events, payload bytes, seconds since the stream began, idle seconds, write seconds,
    // and 1 in a server's final message (after its loop), else 0
    using Figures = std::array<double, 6>;
    bool on = false;
    bool finished = false;               // a server sent its final message
    Figures out{}, in{};
    MPI_Request out_req = MPI_REQUEST_NULL, in_req = MPI_REQUEST_NULL;
    std::vector<Figures> latest, shown;  // by server (serial: one): newest, and at the last line
    double shown_t = 0;                  // when the last line was printed (or the start)
    int finals = 0;                      // server 0: final messages received
};

// Parallel mode, one SmallData at a time per process: a second one before the first's
// done() could never run (a server stays in its first constructor until its clients are
// done). Held from the constructor to done() (or the Impl's end, when a constructor fails).
inline std::atomic<int> parallel_running{0};
struct ParallelSlot {
    bool held = false;
    void take() {
        if (parallel_running.fetch_add(1) > 0) {
            --parallel_running;
            throw_error(Errc::usage, "another SmallData of this process runs in parallel mode and its done() has not "
                                     "been called: one at a time per process (its servers stay in its constructor "
                                     "until its clients are done)");
        }
        held = true;
    }
    void release() noexcept {
        if (held) --parallel_running;
        held = false;
    }
    ~ParallelSlot() { release(); }
};

struct Impl {
    Options opt;
    LogScope log_scope{&opt.logger};        // this run's logger is current while it lives
    double t_start = now_seconds();         // the constructor's start
    double t_stream_start = 0;              // this rank's event stream began: the end of the
    double t_stream_end = 0;                // constructor, or a server's loop; and ended
    double idle_since = 0;                  // server: waiting for a batch since then (0: not)
    ProgressState progress;
    Report report;                          // made by done()
    Role role = Role::serial;
    int rank = 0, size = 1;
    int n_servers = 0, n_clients = 0;
    int client_idx = -1, server_idx = -1;
    std::uint64_t run_token = 0;            // random, the same on every rank: tags this run's parts
    CommOwner comm;                         // duplicate of opt.comm: library traffic only
    CommOwner clients_comm;                 // the clients, for reductions
    CommOwner servers_comm;                 // the servers, for Options::time_order (section 19)
    bool routed = false;                    // time_order, several servers and clients: routed streams
    CommOwner grid_comm;                    // routed: the clients, for the grid's agreement (Sender)
    bool cell_join = false;                 // routed: the join maps the parts' cells in turn
    CommOwner node_comm;                    // ranks sharing this node's memory (shared memory,
    int ranks_on_node = 1;                  // automatic write thread), and how many
    int servers_on_node = 1;                // of them servers (Options::time_order: the ordering's write thread)
    WinOwner shm_win;                       // one segment per client that shares its server's node
    ShmSlots my_shm;                        // client: its own slots (count 0: messages)
    std::vector<ShmSlots> shm_of;           // server: slots by client rank
    bool finished = false;                  // done() was called
    std::unique_ptr<Writer> writer;         // serial process, or server
    StreamMerge* merge = nullptr;           // a server's, while run_server merges its streams
    std::unique_ptr<Writer> ordered;        // Options::time_order, a server: its range, in
    Options order_opt;                      // time order (section 19), and its options
    std::exception_ptr order_error;         // the ordering failed: thrown after the join
    std::unique_ptr<Sink> sink;
    std::unique_ptr<Packer> packer;
    std::vector<unsigned char> serial_buf;
    std::vector<SummaryItem> summary;
    std::vector<AttributeItem> attributes;  // save_attribute(), client 0 or serial
    Stats stats;
    std::vector<std::uint64_t> agreement;   // a reduction's agreement (outlives one that a stop abandoned)
    std::vector<std::uint64_t> done_agreement;  // done()'s (SmallData::agree), never the same buffer
    SmallData* owner = nullptr;             // the SmallData of this Impl (finalize_hook)
    ParallelSlot parallel_slot;             // parallel mode, until done()
    ExitGuard exit_guard;                   // last member: uninstalled first

    bool parallel() const { return role != Role::serial; }
    int join_root() const { return n_servers; }  // client 0 builds the final file
    std::string part_path(int k) const { return part_path_of(opt.filename, k); }
    std::string rank_text(int r) const {
        if (r < n_servers) return "server " + std::to_string(r) + " (rank " + std::to_string(r) + ")";
        if (r < n_servers + n_clients) return "client " + std::to_string(r - n_servers) + " (rank " + std::to_string(r) + ")";
        return "rank " + std::to_string(r);
    }
    void setup_parallel();
    void setup_shared_memory();
    void open_outputs();
    void run_server();
    void join();
    void build_final(const std::vector<unsigned char>& all, const std::vector<int>& lens);
    void remove_parts();
    void order_by_time();
    void order_parts(std::string& why, Errc& code, int& lib);
    void answer_abort(int from) noexcept;
    void on_abort_notice(int from) noexcept;
    void release_held() noexcept;
    int abort_token = 0;                      // answer_abort's message
    MPI_Request abort_ack = MPI_REQUEST_NULL;  // its "closing" answer
    // Section 20: progress lines and the report.
    ProgressState::Figures progress_figures(bool final) const;
    void progress_start();
    void progress_tick();
    void progress_drain();
    void progress_line();
    void progress_finish(const std::function<void()>& poll);
    void make_report();
    // Collective over comm: every rank learns whether `ok` held on all of them; if not,
    // every rank throws the error of the lowest failing rank (code and text).
    void agree_or_throw(bool ok, Errc code, const std::string& text, int library_code = 0);
    // The same without the throw: false, and that rank's error in code/text/library_code
    // (text with "[reported by ...]" on the other ranks).
    bool agree(bool ok, Errc& code, std::string& text, int& library_code);
};

// The client's end of its streams. Without routing, one stream to its server (client
// index % servers). Routed (Options::time_order with several servers and clients): a
// stream to every server, and every batch goes to the server that owns its cell of the
// run's TimeGrid, so each server can merge its streams into a part written once, in time
// order (StreamMerge), and the join maps the parts' cells in turn (section 16).
//   - The grid is agreed once among the clients (grid_comm, one MPI_Iallreduce MAX): each
//     gives, at its first batch (or at its first reduction, or done(), if earlier), the
//     largest timestamp it has packed and the width that would give it cell_batches
//     batches per cell (at least cell_min_events events), from its first batch's events.
//     g0 is one more than the largest timestamp, w the smallest width. The first batches
//     go to server 0 (cell 0). The next event waits for the agreement, at most
//     grid_wait_seconds; a client that waits longer (another is stuck before its first
//     batch, in a collective of the program's own, say) gives routing up: all its events
//     go to server 0, the others are told it sends them nothing more, and done() orders
//     the parts as without routing (section 19). Nothing is lost either way.
//   - Before a batch to a server that lacks some of the client's field definitions, they
//     are sent (WireKind::define); when the grid is known, it is sent to every server
//     (WireKind::grid, before any batch of a later cell); and when an event passes into a
//     later cell, every server that owns a cell passed over hears the event's timestamp
//     as a bound (an empty batch), so that its merge need not wait for this client.
//   - The end of the stream says to each server how many events it was sent, and (in
//     WireHeader::n_events) 1 if this client's events were not routed by the grid.

class Sender : public Sink {
public:
    explicit Sender(Impl& im);
    std::vector<unsigned char>* first() { return &slots_[0].data; }
    void set_packer(const Packer* p) noexcept { packer_ = p; }
    const std::int64_t* cut() const noexcept override { return &cut_; }

    std::vector<unsigned char>* ship(std::vector<unsigned char>* buf, std::size_t used, std::uint32_t n_events,
                                     std::int64_t max_ts) override {
        Slot& s = slots_[cur_];
        // The Packer keeps every batch under max_batch_bytes; checked here before anything
        // is counted, so a refused batch leaves no gap in the sequence numbers.
        if (used > max_batch_bytes)
            throw_error(Errc::usage, "a batch of " + std::to_string(used) + " bytes exceeds the 2 GiB message limit");
        const int d = routed_ ? route(*buf, n_events, max_ts) : home_;
        Dest& to = dests_[static_cast<std::size_t>(d)];
        WireHeader h{wire_magic, wire_version, static_cast<std::uint16_t>(WireKind::batch), to.seq++, n_events, used,
                     static_cast<std::uint64_t>(max_ts)};
        to.events += n_events;
        to.floor = std::max(to.floor, max_ts);
        std::memcpy(buf->data(), &h, sizeof h);
        if (shm_.count && used <= im_.opt.batch_bytes) {  // into the next shared slot; keep buf
            hand_over(buf->data(), used, h, d);
            ++im_.stats.batches;
            im_.stats.bytes += used;
            return buf;
        }
        if (used <= im_.opt.batch_bytes) {
            check_mpi(MPI_Isend(buf->data(), static_cast<int>(used), MPI_BYTE, d, tag_data, im_.comm, &s.req[0]),
                      "MPI_Isend");
        } else {  // one event larger than batch_bytes: announce it, then send it on its own tag
            s.notice = h;
            s.notice.kind = static_cast<std::uint16_t>(WireKind::large);
            s.notice.bytes = sizeof(WireHeader);
            s.notice.extra = used;
            check_mpi(MPI_Isend(&s.notice, sizeof(WireHeader), MPI_BYTE, d, tag_data, im_.comm, &s.req[0]), "MPI_Isend");
            check_mpi(MPI_Isend(buf->data(), static_cast<int>(used), MPI_BYTE, d, tag_large, im_.comm, &s.req[1]),
                      "MPI_Isend");
        }
        ++im_.stats.batches;
        im_.stats.bytes += used;
        cur_ = (cur_ + 1) % slots_.size();
        Slot& next = slots_[cur_];
        if (next.data.size() < im_.opt.batch_bytes) next.data.resize(im_.opt.batch_bytes);  // first use
        back_pressure([&] { return all_done(next.req, 2); });  // until the buffer's sends are done
        return &next.data;
    }

    // Routed: the next event (timestamp ts) is in a later cell than the batch before it
    // (or the grid is still being agreed: waits for it).
    void cross(std::int64_t ts) override;
    // Routed: this client's part of the grid's agreement, once (before a reduction, say,
    // so that no client waits for the agreement while this one waits for the reduction).
    void join_grid();

    // A failing client (abort_job), after its last flush: every send it began completes.
    // Returns how many messages it has sent to each server (each takes them all before it
    // closes).
    std::vector<std::uint32_t> complete_sends() {
        for (Slot& s : slots_) wait_all_gently(s.req, 2, im_.opt.idle_sleep_max_us);
        if (!notice_reqs_.empty()) wait_all_gently(notice_reqs_.data(), static_cast<int>(notice_reqs_.size()), im_.opt.idle_sleep_max_us);
        wait_control();
        std::vector<std::uint32_t> out;
        for (const Dest& x : dests_) out.push_back(x.seq);
        return out;
    }

    // After the last batch: tell each server how many events it should have, wait for all sends.
    void finish(std::uint64_t events);

private:
    struct Dest {  // this client's stream to one server
        std::uint32_t seq = 0;          // messages sent
        std::uint64_t events = 0;       // events sent
        std::size_t defined = 0;        // routed: field definitions it has
        std::int64_t floor = std::numeric_limits<std::int64_t>::min();  // the largest bound it has
    };
    struct Control {  // a small message in flight (definitions, grid, bound, end)
        std::vector<unsigned char> bytes;
        MPI_Request req = MPI_REQUEST_NULL;
    };
    enum class Grid { none, pending, known, off };

    // Routed: the server of a batch (its first event's cell), after the definitions it lacks.
    int route(const std::vector<unsigned char>& buf, std::uint32_t n_events, std::int64_t max_ts);
    void send_control(int d, WireKind kind, std::uint32_t n_events, std::uint64_t extra, const void* payload,
                      std::size_t n);
    void send_definitions(int d);
    void start_grid(std::int64_t last, std::int64_t w);
    bool grid_ready(bool wait);
    void give_up_routing(const std::string& why);
    void wait_control() {
        for (Control& c : control_) wait_gently(c.req, im_.opt.idle_sleep_max_us);
        control_.clear();
    }

    // Shared memory: wait until the server has released the next slot (back-pressure),
    // copy the batch in, then tell the server with a 32-byte notice on the data tag, so
    // notices, large messages and the end of stream stay in one ordered stream.
    void hand_over(const unsigned char* data, std::size_t used, const WireHeader& h, int d) {
        const std::uint32_t j = shm_next_;
        std::atomic<std::uint32_t>& free = *shm_.flag(j);
        // Until the server frees the slot. Testing keeps this client's sends moving: the
        // queued notices, and a large event's data, which the server may be waiting for
        // before it decodes (and frees) anything more; an MPI without single-copy
        // transfers moves a large message only while its sender is in MPI.
        back_pressure([&] {
            if (free.load(std::memory_order_acquire) != 0) return true;
            all_done(notice_reqs_.data(), static_cast<int>(notice_reqs_.size()));
            for (Slot& s : slots_) all_done(s.req, 2);
            return false;
        });
        wait_gently(notice_reqs_[j], im_.opt.idle_sleep_max_us);
        std::memcpy(shm_.slot(j), data, used);
        free.store(0, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        check_mpi(MPI_Win_sync(im_.shm_win), "MPI_Win_sync");
        notices_[j] = WireHeader{wire_magic, wire_version, static_cast<std::uint16_t>(WireKind::shm), h.seq, h.n_events,
                                 sizeof(WireHeader), j};
        check_mpi(MPI_Isend(&notices_[j], sizeof(WireHeader), MPI_BYTE, d, tag_data, im_.comm, &notice_reqs_[j]),
                  "MPI_Isend");
        shm_next_ = (j + 1) % shm_.count;
    }

    // Every buffer or slot in flight: wait until ready(), counted as Stats::wait_seconds.
    template <class Ready>
    void back_pressure(Ready&& ready) {
        if (ready()) return;
        const double t0 = now_seconds();
        wait_until(ready, im_.opt.idle_sleep_max_us);
        im_.stats.wait_seconds += now_seconds() - t0;
    }

    struct Slot {
        std::vector<unsigned char> data;
        WireHeader notice{};
        MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    };
    Impl& im_;
    ShmSlots shm_;
    std::vector<Slot> slots_;
    std::vector<WireHeader> notices_;
    std::vector<MPI_Request> notice_reqs_;
    std::uint32_t shm_next_ = 0;
    std::size_t cur_ = 0;
    int home_ = 0;                      // not routed: the one server
    std::vector<Dest> dests_;           // by server
    std::deque<Control> control_;
    // Routed streams.
    bool routed_ = false;
    const Packer* packer_ = nullptr;
    std::int64_t cut_ = std::numeric_limits<std::int64_t>::max();  // the Packer's: the current cell's end
    Grid grid_state_ = Grid::none;
    TimeGrid grid_;
    std::uint64_t cell_ = 0;            // the cell of the last event routed
    std::int64_t agree_[2] = {0, 0};    // the agreement: largest timestamp, minus the width
    MPI_Request agree_req_ = MPI_REQUEST_NULL;
    double wait_since_ = 0;
    std::vector<unsigned char> def_buf_;
};

inline Sender::Sender(Impl& im)
    : im_(im), shm_(im.my_shm), slots_(static_cast<std::size_t>(im.opt.send_buffers)), notices_(shm_.count),
      notice_reqs_(shm_.count, MPI_REQUEST_NULL) {
    home_ = im.client_idx % im.n_servers;
    dests_.resize(static_cast<std::size_t>(im.n_servers));
    routed_ = im.routed;
    // The others are sized when first used (with shared memory only events larger
    // than batch_bytes rotate through them).
    slots_[0].data.resize(im.opt.batch_bytes);
}

inline int Sender::route(const std::vector<unsigned char>& buf, std::uint32_t n_events, std::int64_t max_ts) {
    std::int64_t first = max_ts;  // the batch's first timestamp
    if (n_events > 0) std::memcpy(&first, buf.data() + sizeof(WireHeader), 8);
    if (grid_state_ == Grid::none) {  // the first batch: this client's share of the grid
        std::int64_t w = 0;
        if (n_events >= 2 && max_ts > first) {
            const double per = (static_cast<double>(max_ts) - static_cast<double>(first)) / (n_events - 1);
            const double events = std::max(double(cell_batches) * n_events, double(cell_min_events));
            w = static_cast<std::int64_t>(std::min(std::max(per * events, 1.0), 4e18));
        }
        const std::int64_t last = packer_ && packer_->events() > 0 ? std::max(packer_->last_ts(), max_ts) : max_ts;
        start_grid(last, w);
    }
    const int d = grid_state_ == Grid::known ? TimeGrid::owner(grid_.cell(first), im_.n_servers) : 0;
    if (packer_ && dests_[static_cast<std::size_t>(d)].defined < packer_->field_count()) send_definitions(d);
    return d;
}

inline void Sender::join_grid() {
    if (!routed_ || grid_state_ != Grid::none) return;
    start_grid(packer_ && packer_->events() > 0 ? packer_->last_ts() : std::numeric_limits<std::int64_t>::min(), 0);
}

inline void Sender::start_grid(std::int64_t last, std::int64_t w) {
    agree_[0] = last;
    agree_[1] = w > 0 ? -w : std::numeric_limits<std::int64_t>::min();
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, agree_, 2, MPI_INT64_T, MPI_MAX, im_.grid_comm, &agree_req_), "MPI_Iallreduce");
    grid_state_ = Grid::pending;
    cut_ = std::numeric_limits<std::int64_t>::min();  // the next event waits for the grid
}

inline bool Sender::grid_ready(bool wait) {
    if (grid_state_ != Grid::pending) return grid_state_ == Grid::known;
    int flag = 0;
    auto test = [&] {
        check_mpi(MPI_Test(&agree_req_, &flag, MPI_STATUS_IGNORE), "MPI_Test");
        return flag != 0;
    };
    if (!test() && wait) {
        const double t0 = now_seconds();
        wait_until([&] { return test() || now_seconds() - t0 > grid_wait_seconds; }, im_.opt.idle_sleep_max_us);
        im_.stats.wait_seconds += now_seconds() - t0;
    }
    if (!flag) {
        if (wait) {
            char t[32];
            std::snprintf(t, sizeof t, "%g", grid_wait_seconds);
            give_up_routing(std::string("the clients did not agree on a time grid within ") + t +
                            " s (a client has not given its first batch)");
        }
        return false;
    }
    constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
    if (agree_[0] == lo || agree_[0] == hi || agree_[1] == lo) {  // no client gave a width: no grid
        give_up_routing("no client's first batch spanned any time");
        return false;
    }
    grid_.g0 = agree_[0] + 1;
    grid_.w = -agree_[1];
    grid_state_ = Grid::known;
    const std::int64_t g[2] = {grid_.g0, grid_.w};
    for (int d = 0; d < im_.n_servers; ++d) send_control(d, WireKind::grid, 0, 0, g, sizeof g);
    cell_ = 0;
    std::int64_t a = 0;
    grid_.range(0, a, cut_);
    return true;
}

// Every later event goes to server 0, and the others hear that this client sends them
// nothing more (a bound at the largest timestamp).
inline void Sender::give_up_routing(const std::string& why) {
    grid_state_ = Grid::off;
    cut_ = std::numeric_limits<std::int64_t>::max();
    for (int d = 1; d < im_.n_servers; ++d) {
        send_control(d, WireKind::batch, 0, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()), nullptr, 0);
        dests_[static_cast<std::size_t>(d)].floor = std::numeric_limits<std::int64_t>::max();
    }
    log(LogLevel::info, "time order: " + why + "; this client's events all go to server 0 (done() orders the parts "
                        "if they need it)");
}

inline void Sender::cross(std::int64_t ts) {
    if (grid_state_ == Grid::pending && !grid_ready(true)) return;
    if (grid_state_ != Grid::known) {
        cut_ = std::numeric_limits<std::int64_t>::max();
        return;
    }
    const std::uint64_t k = grid_.cell(ts);
    const auto S = static_cast<std::uint64_t>(im_.n_servers);
    if (k > cell_) {  // the servers of the cells passed over: ts bounds what they get next
        const std::uint64_t passed = k - cell_;
        for (std::uint64_t i = 0; i < std::min(passed, S); ++i) {
            const int d = TimeGrid::owner(cell_ + i, im_.n_servers);
            Dest& to = dests_[static_cast<std::size_t>(d)];
            if (to.floor >= ts) continue;
            send_control(d, WireKind::batch, 0, static_cast<std::uint64_t>(ts), nullptr, 0);
            to.floor = ts;
        }
        cell_ = k;
    }
    std::int64_t lo = 0;
    grid_.range(k, lo, cut_);
}

inline void Sender::send_control(int d, WireKind kind, std::uint32_t n_events, std::uint64_t extra, const void* payload,
                                 std::size_t n) {
    while (!control_.empty()) {  // the ones sent already are forgotten
        int flag = 0;
        check_mpi(MPI_Test(&control_.front().req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
        if (!flag) break;
        control_.pop_front();
    }
    Dest& to = dests_[static_cast<std::size_t>(d)];
    control_.emplace_back();
    Control& c = control_.back();
    c.bytes.resize(sizeof(WireHeader) + n);
    const WireHeader h{wire_magic, wire_version, static_cast<std::uint16_t>(kind), to.seq++, n_events,
                       sizeof(WireHeader) + n, extra};
    std::memcpy(c.bytes.data(), &h, sizeof h);
    if (n) std::memcpy(c.bytes.data() + sizeof h, payload, n);
    check_mpi(MPI_Isend(c.bytes.data(), static_cast<int>(c.bytes.size()), MPI_BYTE, d, tag_data, im_.comm, &c.req),
              "MPI_Isend");
}

// The definitions server d lacks (every field defined so far), as the Packer writes them.
inline void Sender::send_definitions(int d) {
    Dest& to = dests_[static_cast<std::size_t>(d)];
    const std::size_t n = packer_->field_count();
    def_buf_.clear();
    for (std::size_t i = to.defined; i < n; ++i) {
        const FieldMeta& m = packer_->field_meta(static_cast<std::uint32_t>(i));
        const std::size_t at = def_buf_.size();
        def_buf_.resize(at + definition_bytes(m.name, m.shape));
        put_definition(def_buf_.data() + at, static_cast<std::uint32_t>(i), m.name, m.dtype, m.shape);
    }
    send_control(d, WireKind::define, 0, 0, def_buf_.data(), def_buf_.size());
    to.defined = n;
}

inline void Sender::finish(std::uint64_t events) {
    if (routed_) {
        join_grid();  // (no batch before: its share is still due)
        if (agree_req_ != MPI_REQUEST_NULL) wait_gently(agree_req_, im_.opt.idle_sleep_max_us);
        for (int d = 0; d < im_.n_servers; ++d)
            send_control(d, WireKind::done, 0, dests_[static_cast<std::size_t>(d)].events, nullptr, 0);
    } else {
        send_control(home_, WireKind::done, 0, events, nullptr, 0);
    }
    wait_control();
    for (Slot& s : slots_) wait_all_gently(s.req, 2, im_.opt.idle_sleep_max_us);
    if (!notice_reqs_.empty()) wait_all_gently(notice_reqs_.data(), static_cast<int>(notice_reqs_.size()), im_.opt.idle_sleep_max_us);
}

// Shared memory (Options::shared_memory): every rank of a node joins one MPI-3 shared
// window; each client whose server is on its node contributes send_buffers slots. Its
// server maps them once and decodes batches in place, with no copy through MPI.
inline void Impl::setup_shared_memory() {
    GroupOwner all, node;
    check_mpi(MPI_Comm_group(comm, all.out()), "MPI_Comm_group");
    check_mpi(MPI_Comm_group(node_comm, node.out()), "MPI_Comm_group");
    auto node_rank = [&](int r) {
        int out = MPI_UNDEFINED;
        check_mpi(MPI_Group_translate_ranks(all, 1, &r, node, &out), "MPI_Group_translate_ranks");
        return out;
    };
    const auto k = static_cast<std::uint32_t>(opt.send_buffers);
    // Routed streams: a client's slots go to any server, so it has them only when every
    // server is on its node (and every server maps every client's).
    bool near = role == Role::client && node_rank(server_idx) != MPI_UNDEFINED;
    for (int s = 0; routed && near && s < n_servers; ++s) near = node_rank(s) != MPI_UNDEFINED;
    const std::size_t mine = near ? ShmSlots::bytes(k, opt.batch_bytes) : 0;
    InfoOwner info;
    check_mpi(MPI_Info_create(info.out()), "MPI_Info_create");
    check_mpi(MPI_Info_set(info, "alloc_shared_noncontig", "true"), "MPI_Info_set");  // each segment near its owner
    void* base = nullptr;
    check_mpi(MPI_Win_allocate_shared(static_cast<MPI_Aint>(mine), 1, info, node_comm, &base, shm_win.out()),
              "MPI_Win_allocate_shared");
    // Errors of window calls are returned to us (not fatal), like those of comm.
    check_mpi(MPI_Win_set_errhandler(shm_win, MPI_ERRORS_RETURN), "MPI_Win_set_errhandler");
    check_mpi(MPI_Win_lock_all(MPI_MODE_NOCHECK, shm_win), "MPI_Win_lock_all");
    shm_win.set_locked();
    if (mine) {
        my_shm = ShmSlots{ShmSlots::align(base), opt.batch_bytes, k};
        for (std::uint32_t j = 0; j < k; ++j) new (my_shm.flag(j)) std::atomic<std::uint32_t>(1);
    }
    if (role == Role::server) {
        shm_of.assign(static_cast<std::size_t>(size), ShmSlots{});
        for (int c = routed ? 0 : server_idx; c < n_clients; c += routed ? 1 : n_servers) {
            const int nr = node_rank(n_servers + c);
            if (nr == MPI_UNDEFINED) continue;
            MPI_Aint bytes = 0;
            int unit = 0;
            void* p = nullptr;
            check_mpi(MPI_Win_shared_query(shm_win, nr, &bytes, &unit, &p), "MPI_Win_shared_query");
            if (bytes > 0) shm_of[static_cast<std::size_t>(n_servers + c)] = ShmSlots{ShmSlots::align(p), opt.batch_bytes, k};
        }
    }
}

// The server's loop: `recv_buffers` receives stay posted (ANY_SOURCE); they are handled in
// the order they were posted, which is the order messages matched them, so each client's
// batches are decoded in sequence. Waiting is gentle (section 10). Every iteration, busy
// or idle, also tests for an abort notice from a failing rank (section 20), and any error
// at all (an HDF5 write, a callback, a malformed message) ends the job through abort_job:
// nothing escapes from here to leave the clients waiting. The part file was created by
// open_outputs() in the constructor.
// The name of a stop signal, for messages.
inline const char* stop_name(int sig) {
    return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : sig > 0 ? "a signal" : "request_stop()";
}

// After done(), when a signal asked the run to stop: the process ends as that signal's
// default action would have ended it, now that the files are complete.
inline void end_by_stop_signal(const Impl& im) {
    const int sig = stop_requested.load();
    if (sig <= 0) return;
    log(LogLevel::info, std::string("the run ended early (") + stop_name(sig) + "): " + std::to_string(im.stats.events) +
                            " events " + (im.role == Role::server ? "written by this server" : "handed over by this rank") +
                            "; the file" + (im.opt.filename.empty() ? "s are" : " '" + im.opt.filename + "' is") +
                            " complete");
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

// Cancels the pending receive r. true: it had already matched a message (st describes
// it), which the caller must still handle; false: cancelled, nothing arrived.
inline bool cancel_receive(MPI_Request& r, MPI_Status& st) {
    if (r == MPI_REQUEST_NULL) return false;
    check_mpi(MPI_Cancel(&r), "MPI_Cancel");
    check_mpi(MPI_Wait(&r, &st), "MPI_Wait");
    int cancelled = 0;
    check_mpi(MPI_Test_cancelled(&st, &cancelled), "MPI_Test_cancelled");
    return !cancelled;
}

// A server's state for one client beside its Stream: the receive of a large batch's data
// (tag_large, its own message) while it comes, and the messages the client sent after it,
// which wait their turn there (a client's messages are handled in the order it sent them;
// the other clients' meanwhile as they come).
struct Inbox {
    MPI_Request large = MPI_REQUEST_NULL;
    std::vector<unsigned char> large_buf;
    std::size_t large_n = 0;
    bool here = false;  // `large` has completed; its batch is not decoded yet
    struct Later {
        std::vector<unsigned char> buf;
        int count = 0;
    };
    std::deque<Later> later;
};

inline void Impl::run_server() {
    std::int64_t abort_notice[2] = {-1, -1};  // the failing rank; for a client, the batches it sent
    MPI_Request abort_req = MPI_REQUEST_NULL;
    // A failing client of this server: its batches are taken (up to the number it sent, for
    // at most half of abort_close_ms, 5 s at most) before the part is closed.
    struct {
        int from = -1;
        std::uint32_t batches = 0;
        double until = 0;
    } last;
    bool stop_seen = false;
    // Outside the try: a failure below still writes what the merge holds (abort_job), and
    // a large batch's receive may still be writing into its Inbox.
    std::vector<Stream> streams;
    std::vector<Inbox> inbox;
    Decoder decoder(*writer, opt.callbacks);
    const std::size_t merge_bytes = StreamMerge::budget(opt, n_clients);  // 0: no merge
    StreamMerge merger(decoder, *writer, merge_bytes,
                       opt.checkpoint_seconds > 0 ? std::min(opt.checkpoint_seconds / 10, merge_hold_seconds)
                                                  : merge_hold_seconds);
    try {
        streams.resize(static_cast<std::size_t>(size));
        inbox.resize(static_cast<std::size_t>(size));
        std::vector<int> coming;  // the clients (ranks) whose large batch is coming
        std::vector<std::vector<unsigned char>> spare_bufs;  // receive buffers, for reuse
        const bool merging = merge_bytes > 0;
        int remaining = 0;
        for (int c = routed ? 0 : server_idx; c < n_clients; c += routed ? 1 : n_servers) {  // its clients
            Stream& s = streams[static_cast<std::size_t>(n_servers + c)];
            s.source = rank_text(n_servers + c);
            s.client = c;
            if (!shm_of.empty()) s.shm = shm_of[static_cast<std::size_t>(n_servers + c)];
            if (merging) merger.add_stream(s);
            ++remaining;
        }
        if (merging) merge = &merger;
        const int streams_of_mine = remaining;
        const std::size_t R = static_cast<std::size_t>(opt.recv_buffers);
        std::vector<std::vector<unsigned char>> bufs(R, std::vector<unsigned char>(opt.batch_bytes));
        std::vector<MPI_Request> reqs(R, MPI_REQUEST_NULL);
        // Receives that completed early (see `progress`), with their statuses.
        std::vector<char> arrived(R, 0);
        std::vector<MPI_Status> arrived_st(R), some_st(R);
        std::vector<int> some_idx(R);
        auto post = [&](std::size_t i) {
            arrived[i] = 0;
            check_mpi(MPI_Irecv(bufs[i].data(), static_cast<int>(opt.batch_bytes), MPI_BYTE, MPI_ANY_SOURCE, tag_data,
                                comm, &reqs[i]),
                      "MPI_Irecv");
        };
        check_mpi(MPI_Irecv(abort_notice, 2, MPI_INT64_T, MPI_ANY_SOURCE, tag_abort, comm, &abort_req), "MPI_Irecv");
        const std::function<void()> poll = [&] {
            int flag = 0;
            MPI_Status st;
            // Tested once it has come (a null request tests complete, from no source).
            if (abort_req != MPI_REQUEST_NULL) check_mpi(MPI_Test(&abort_req, &flag, &st), "MPI_Test");
            if (flag) {
                const int from = st.MPI_SOURCE;
                const bool mine = from >= n_servers && from < size && !streams[static_cast<std::size_t>(from)].source.empty();
                if (!mine || abort_notice[1] < 0 || abort_notice[1] > std::int64_t(UINT32_MAX)) on_abort_notice(from);
                answer_abort(from);
                last.from = from;
                last.batches = static_cast<std::uint32_t>(abort_notice[1]);
                last.until = now_seconds() + std::min(opt.abort_close_ms / 2, 5000) / 1000.0;
            }
            if (last.from >= 0) {
                const Stream& s = streams[static_cast<std::size_t>(last.from)];
                const Inbox& box = inbox[static_cast<std::size_t>(last.from)];
                const bool all = s.done || (s.next_seq >= last.batches && box.large == MPI_REQUEST_NULL && !box.here &&
                                            box.later.empty());
                if (all || now_seconds() > last.until) on_abort_notice(last.from);
            }
            if (stop_requested.load(std::memory_order_relaxed) != 0 && !stop_seen) {
                stop_seen = true;  // the clients end at their next event(): make all held durable now
                if (merge) merge->release();
                writer->checkpoint(true);
                log(LogLevel::info, std::string("interrupted by ") + stop_name(stop_requested.load()) + ": " +
                                        std::to_string(writer->events()) + " events are durable in '" +
                                        (opt.filename.empty() ? std::string() : part_path(server_idx)) + "'");
            }
            writer->checkpoint_if_due();  // also while no batch comes
        };
        // While nothing has come: also the merge's deadline (StreamMerge::poll). Only here,
        // so that a server that was busy (or blocked in a write) takes what came meanwhile,
        // from the client the merge waits for perhaps, before it gives up waiting.
        const std::function<void()> poll_idle = [&] {
            poll();
            if (merge) merge->poll(now_seconds());
        };
        // Completes every receive whose message is here. Called before each decode: a large
        // message is copied only when the receiver drives MPI, so doing it now frees the
        // client's send buffers while this server decodes, instead of after.
        auto progress = [&] {
            int n = 0;
            check_mpi(MPI_Testsome(static_cast<int>(R), reqs.data(), &n, some_idx.data(), some_st.data()), "MPI_Testsome");
            for (int k = 0; k < n && n != MPI_UNDEFINED; ++k) {
                const auto i = static_cast<std::size_t>(some_idx[static_cast<std::size_t>(k)]);
                arrived[i] = 1;
                arrived_st[i] = some_st[static_cast<std::size_t>(k)];
            }
        };
        // One message of s, in buf[0, count): decoded, held by the merge, or (a large
        // batch's notice) its data's receive posted, not waited for (take_large).
        auto handle = [&](Stream& s, int src, std::vector<unsigned char>& buf, int count) {
            const unsigned char* msg = buf.data();
            WireHeader h{};
            if (static_cast<std::size_t>(count) < sizeof h) throw_error(Errc::protocol, "short message from " + s.source);
            std::memcpy(&h, msg, sizeof h);
            if (h.magic != wire_magic || h.version != wire_version)
                throw_error(Errc::protocol, "message with a bad header from " + s.source +
                                                " (is every rank running the same smalldata version?)");
            std::uint64_t got = 0;  // batch bytes decoded
            switch (static_cast<WireKind>(h.kind)) {
                case WireKind::batch:
                    if (merge && merge->active())  // held: the receive gets another buffer
                        merge->add(s, buf, static_cast<std::size_t>(count), opt.batch_bytes);
                    else
                        decoder.batch(s, msg, static_cast<std::size_t>(count));
                    got = static_cast<std::uint64_t>(count);
                    break;
                case WireKind::shm: {  // the batch waits in the client's slot h.extra
                    const ShmSlots& q = s.shm;
                    if (q.count == 0 || h.extra >= q.count || h.seq != s.next_seq)
                        throw_error(Errc::protocol, "bad shared-memory notice from " + s.source);
                    check_mpi(MPI_Win_sync(shm_win), "MPI_Win_sync");
                    const auto j = static_cast<std::uint32_t>(h.extra);
                    WireHeader in{};
                    std::memcpy(&in, q.slot(j), sizeof in);
                    if (in.bytes < sizeof in || in.bytes > q.slot_bytes)
                        throw_error(Errc::protocol, "bad shared-memory batch from " + s.source);
                    if (merge && merge->active()) {  // gives the slot back once decoded
                        merge->add_slot(s, q.slot(j), static_cast<std::size_t>(in.bytes), q.flag(j));
                    } else {
                        decoder.batch(s, q.slot(j), static_cast<std::size_t>(in.bytes));
                        q.flag(j)->store(1, std::memory_order_release);
                    }
                    got = in.bytes;
                    break;
                }
                case WireKind::large: {
                    const std::uint64_t n = h.extra;
                    if (h.seq != s.next_seq || n > max_batch_bytes)
                        throw_error(Errc::protocol, "bad large-batch notice from " + s.source);
                    Inbox& box = inbox[static_cast<std::size_t>(src)];
                    if (box.large_buf.size() < n) box.large_buf.resize(static_cast<std::size_t>(n));
                    box.large_n = static_cast<std::size_t>(n);
                    check_mpi(MPI_Irecv(box.large_buf.data(), static_cast<int>(n), MPI_BYTE, src, tag_large, comm, &box.large),
                              "MPI_Irecv");
                    coming.push_back(src);
                    break;
                }
                case WireKind::define:  // routed: definitions ahead of a batch
                case WireKind::grid: {  // routed: the run's TimeGrid
                    if (h.seq != s.next_seq || h.bytes != static_cast<std::uint64_t>(count))
                        throw_error(Errc::protocol, "bad message from " + s.source);
                    ++s.next_seq;
                    Reader r{msg + sizeof h, msg + count, &s.source};
                    if (static_cast<WireKind>(h.kind) == WireKind::define) {
                        decoder.definitions(s, r);
                        break;
                    }
                    TimeGrid g;
                    g.g0 = r.get<std::int64_t>();
                    g.w = r.get<std::int64_t>();
                    if (!routed || !g.known() || (writer->grid().known() && !(writer->grid() == g)))
                        throw_error(Errc::protocol, "a time grid from " + s.source + " that differs from the others'");
                    writer->set_grid(g);
                    break;
                }
                case WireKind::done:
                    if (s.done || h.seq != s.next_seq)
                        throw_error(Errc::protocol, "unexpected end-of-stream message from " + s.source);
                    if (h.extra != s.events + (merge ? merge->held_events(s) : 0))
                        throw_error(Errc::protocol, s.source + " sent " + std::to_string(h.extra) +
                                                        " events but this server received " + std::to_string(s.events));
                    s.done = true;
                    --remaining;
                    if (merge) merge->drain();  // s no longer holds the others back
                    break;
                default:
                    throw_error(Errc::protocol, "unknown message kind from " + s.source);
            }
            if (got) {
                ++stats.batches;
                stats.bytes += got;
            }
        };
        // Whether a large batch's data has come (tests every pending receive).
        auto large_here = [&] {
            bool any = false;
            for (const int src : coming) {
                Inbox& box = inbox[static_cast<std::size_t>(src)];
                if (!box.here) {
                    int flag = 0;
                    check_mpi(MPI_Test(&box.large, &flag, MPI_STATUS_IGNORE), "MPI_Test");
                    box.here = flag != 0;
                }
                any = any || box.here;
            }
            return any;
        };
        // Decodes every large batch that has come, then the messages its client sent after
        // it, in order, up to the next large batch still coming.
        auto take_large = [&] {
            if (coming.empty() || !large_here()) return;
            for (std::size_t k = 0; k < coming.size();) {
                const int src = coming[k];
                Inbox& box = inbox[static_cast<std::size_t>(src)];
                if (!box.here) {
                    ++k;
                    continue;
                }
                coming.erase(coming.begin() + static_cast<std::ptrdiff_t>(k));
                box.here = false;
                Stream& s = streams[static_cast<std::size_t>(src)];
                if (merge && merge->active())
                    merge->add(s, box.large_buf, box.large_n, 0);
                else
                    decoder.batch(s, box.large_buf.data(), box.large_n);
                ++stats.batches;
                stats.bytes += box.large_n;
                while (!box.later.empty() && box.large == MPI_REQUEST_NULL) {
                    Inbox::Later m = std::move(box.later.front());
                    box.later.pop_front();
                    handle(s, src, m.buf, m.count);
                    spare_bufs.push_back(std::move(m.buf));
                }
            }
        };
        t_stream_start = now_seconds();
        progress_start();
        if (remaining > 0)
            for (std::size_t i = 0; i < R; ++i) post(i);
        std::size_t head = 0;
        while (remaining > 0) {
            poll();
            take_large();
            if (remaining == 0) break;
            MPI_Status st;
            if (!arrived[head]) {
                idle_since = now_seconds();
                bool message = false;  // else a large batch's data came
                wait_until(
                    [&] {
                        int flag = 0;
                        check_mpi(MPI_Test(&reqs[head], &flag, &st), "MPI_Test");
                        if (flag) return message = true;
                        if (!coming.empty() && large_here()) return true;
                        poll_idle();
                        return false;
                    },
                    opt.idle_sleep_max_us);
                stats.idle_seconds += now_seconds() - idle_since;
                idle_since = 0;
                if (!message) continue;
            } else {
                st = arrived_st[head];
            }
            progress();
            int count = 0;
            check_mpi(MPI_Get_count(&st, MPI_BYTE, &count), "MPI_Get_count");
            const int src = st.MPI_SOURCE;
            if (src < n_servers || src >= size || streams[static_cast<std::size_t>(src)].source.empty())
                throw_error(Errc::protocol, "a batch arrived from " + rank_text(src) + ", which is not a client of this server");
            Inbox& box = inbox[static_cast<std::size_t>(src)];
            if (box.large != MPI_REQUEST_NULL || box.here || !box.later.empty()) {
                // Behind its client's large batch, still coming: waits, in its buffer (the
                // receive gets a spare one).
                box.later.emplace_back();
                box.later.back().count = count;
                box.later.back().buf.swap(bufs[head]);
                if (!spare_bufs.empty()) {
                    bufs[head].swap(spare_bufs.back());
                    spare_bufs.pop_back();
                }
                if (bufs[head].size() < opt.batch_bytes) bufs[head].resize(opt.batch_bytes);
            } else {
                handle(streams[static_cast<std::size_t>(src)], src, bufs[head], count);
            }
            if (remaining > 0) post(head);
            head = (head + 1) % R;
        }
        for (MPI_Request& r : reqs)
            if (r != MPI_REQUEST_NULL) {
                check_mpi(MPI_Cancel(&r), "MPI_Cancel");
                check_mpi(MPI_Wait(&r, MPI_STATUS_IGNORE), "MPI_Wait");
            }
        if (merge) {
            merge->release();  // nothing is held once every stream has ended; to be sure
            merge = nullptr;
        }
        progress_finish(poll);  // server 0: until every other server's last figures are in
        // A notice that matched just before the cancel is still a notice: answer it.
        MPI_Status st;
        if (cancel_receive(abort_req, st)) on_abort_notice(st.MPI_SOURCE);
        writer->finish(nullptr);
        t_stream_end = now_seconds();
        if (streams_of_mine == 0) stats.idle_seconds = t_stream_end - t_stream_start;  // nothing to do at all
        stats.events = writer->events();
        stats.write_seconds = writer->write_seconds();
    } catch (const std::exception& e) {
        abort_job(*this, decoder.in_callback() ? "a callback threw: " + bare_message(e) : std::string(e.what()));
    } catch (...) {
        abort_job(*this, decoder.in_callback() ? "a callback threw an exception of unknown type (not a std::exception)"
                                               : "an exception of unknown type (not a std::exception) on this server");
    }
}

// ============================================================================ [>>impl-join]
// 16. Join: in done(), every server describes its part over MPI; client 0 builds the final
//     file (one virtual dataset per field, the summary, the attributes) and tells every
//     rank the outcome.
//     Also the output checks of the constructor: which files a run may replace.
//
//     Runs never mix. Every part file carries the run's random token and the name of its
//     final file as attributes of its root group. The constructor refuses to replace a file
//     at a part path unless it is a part of the same final file (a rerun), removes the old
//     final file of a rerun before any part is truncated, and checks that the final file
//     can be created. Nor does it replace a file a writer has claimed (another run writing
//     the same filename; WriteClaim, checked again under the directory's lock right before
//     the removal: replace_old_file), or, as the final file, another run's part
//     (final_in_the_way). The join opens each part and checks its token, builds the final file
//     under a temporary name next to it and renames it into place when it is complete.
//     With Options::self_contained the complete virtual file is instead copied into the
//     final name (section 18) and removed; once every rank knows the outcome each server
//     removes its part. A kill before the copy is in place leaves the parts whole, for
//     `smalldata recover`; a failed copy is the join's error on every rank, parts kept.

inline constexpr const char* attr_run = "smalldata_run";      // u64: the run token
inline constexpr const char* attr_final = "smalldata_final";  // string: the final file's name
inline constexpr const char* attr_part = "smalldata_part";    // u64: this part's server index
inline constexpr const char* attr_parts = "smalldata_parts";  // u64: the run's number of parts
// u64 on a part of an Options::time_order run: 0 as the server makes it (its events in the
// order they came), 1 on the part done() rewrote in order (its .ordered file). recover warns
// when a file it rebuilds from such parts is not in timestamp order (killed before the sort).
inline constexpr const char* attr_time_order = "smalldata_time_order";

struct JoinField {
    DType dtype = DType::f64;
    Shape shape;
    bool aligned = true;
    int first_part = -1;
    std::vector<std::uint64_t> rows;   // per part; 0 where the part lacks the field
    std::vector<bool> present;
    std::vector<std::vector<std::uint64_t>> starts;  // routed: per part, its rows where each cell
};                                                   // begins, then at its end

inline std::string base_name(const std::string& path) {
    const std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// H5Pset_virtual reads source file and dataset names as patterns: '%' must be doubled.
inline std::string vds_escape(const std::string& name) {
    std::string out;
    for (char c : name) {
        out += c;
        if (c == '%') out += '%';
    }
    return out;
}

inline bool path_exists(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}
inline bool path_is_dir(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Removes an old output file before a new one is created at its path: a reader that holds
// the old file open keeps it intact (HDF5's own truncation would empty it under the
// reader), and the new file is a new inode with no lock held on it.
inline void remove_old_file(const std::string& path) {
    if (!path_exists(path)) return;
    if (path_is_dir(path)) throw_error(Errc::hdf5, "cannot create file '" + path + "': a directory has that name");
    if (::unlink(path.c_str()) != 0) {
        const int err = errno;
        throw_error(Errc::hdf5, "cannot replace '" + path + "': " + std::strerror(err), err);
    }
}

// Can a file be created at `path`? Errc::hdf5 naming `path` (the user's name, not the
// temporary one it is made under) and the system's reason (a missing or read-only
// directory), library_code its errno: tried with a small file beside it, removed at once.
inline void check_creatable(const std::string& path, const char* what, std::uint64_t token) {
    const std::string p = path + ".probe" + std::to_string(token % 1000000) + ".tmp";
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        const int err = errno;
        throw_error(Errc::hdf5, std::string("cannot create ") + what + " '" + path + "': " + std::strerror(err), err);
    }
    ::close(fd);
    ::unlink(p.c_str());
}

// Empty when the file at `part` (which exists) may be replaced by a part of `final_name`;
// otherwise why not.
inline std::string part_in_the_way(const std::string& part, const std::string& final_name) {
    if (path_is_dir(part)) return "a directory has that name";
    if (WriteClaim::claimed(part)) return being_written;
    H5Quiet q;
    H5Id f = h5_open_read(part);
    std::string owner;
    if (!f.valid()) {
        H5Eclear2(H5E_DEFAULT);
        return "it exists and is not a readable HDF5 file (a part of a run that crashed? recover or remove it)";
    }
    if (!h5_get_attr_string(f.get(), attr_final, owner)) return "it exists and is not a smalldata part file";
    if (owner != base_name(final_name))
        return "it is a part of '" + owner + "', another final file with the same stem; choose another filename "
               "or remove it";
    return {};
}

// Empty when the file at `path` may be replaced by a run writing its final (or serial)
// file there; otherwise why not: a writer holds it (another run writing the same name), it
// is a part file of another final file (which would then read this run's rows), or its
// writer never closed it (a crashed run's file, kept for recovery). Any other file is
// replaced (a rerun), a directory is check_creatable's error.
inline H5Id h5_open_recovering(const std::string& path, bool write, bool* cleared = nullptr,
                               std::uint64_t* missing = nullptr);  // section 17
inline std::string final_in_the_way(const std::string& path) {
    if (!path_exists(path) || path_is_dir(path)) return {};
    if (WriteClaim::claimed(path)) return being_written;
    H5Quiet q;
    H5Id f = h5_open_read(path);
    if (!f.valid()) {  // a writer's file it never closed (status flags set) is kept, as a part is
        H5Eclear2(H5E_DEFAULT);
        bool crashed = false;
        try {
            (void)h5_open_recovering(path, false, &crashed);
        } catch (const Error&) {
            crashed = false;  // not an HDF5 file this library could read: replaced
        }
        H5Eclear2(H5E_DEFAULT);
        if (crashed)
            return "it is a file its writer never closed (a run that crashed, not recovered), kept for recovery: "
                   "`smalldata recover` it to keep its events, or remove it";
        return {};
    }
    std::string owner;
    if (h5_get_attr_string(f.get(), attr_final, owner))
        return "it is a part file of '" + owner + "' (another run's), which would then read this run's rows; choose "
               "another filename, or remove '" + owner + "' and its parts first";
    return {};
}

// Removes the old file at `path` (a rerun) under its directory's lock, unless a writer has
// claimed it meanwhile (a run with the same filename started since it was checked). The
// new file is checked again as it is made (Writer::create_swmr).
inline void replace_old_file(const std::string& path) {
    DirLock dir;
    dir.take_unclaimed(path, Errc::option, "cannot replace '" + path + "'");
    remove_old_file(path);
}

inline void Impl::agree_or_throw(bool ok, Errc code, const std::string& text, int library_code) {
    std::string t = text;
    if (agree(ok, code, t, library_code)) return;
    shm_win.free();  // every rank of every node gets here: the free is collective
    throw Error(code, t, library_code);
}

inline bool Impl::agree(bool ok, Errc& code, std::string& text, int& library_code) {
    int first_bad = ok ? size : rank;
    MPI_Request r = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, &first_bad, 1, MPI_INT, MPI_MIN, comm, &r), "MPI_Iallreduce");
    wait_gently(r, opt.idle_sleep_max_us);
    if (first_bad == size) return true;
    struct {
        int code;
        int library_code;
        char text[2000];
    } msg{static_cast<int>(code), library_code, {0}};
    if (rank == first_bad) std::snprintf(msg.text, sizeof msg.text, "%s", text.c_str());
    check_mpi(MPI_Ibcast(&msg, sizeof msg, MPI_BYTE, first_bad, comm, &r), "MPI_Ibcast");
    wait_gently(r, opt.idle_sleep_max_us);
    msg.text[sizeof msg.text - 1] = 0;
    if (rank == first_bad) return false;
    code = static_cast<Errc>(msg.code);
    text = std::string(msg.text) + " [reported by " + rank_text(first_bad) + "]";
    library_code = msg.library_code;
    return false;
}

// Constructor, parallel mode: decides collectively which files this run writes, then the
// servers create their part files, and a failure anywhere is an error on every rank.
inline void Impl::open_outputs() {
    const bool root = rank == join_root();
    std::string why;
    Errc code = Errc::hdf5;
    int lib = 0;  // Error::library_code
    try {
        if (!opt.filename.empty()) {
            if (role == Role::server) {
                const std::string part = part_path(server_idx);
                if (path_exists(part)) {
                    const std::string bad = part_in_the_way(part, opt.filename);
                    if (!bad.empty())
                        throw_error(Errc::option, "part file '" + part + "' is in the way of '" + opt.filename + "': " + bad);
                } else {
                    check_creatable(part, "part file", run_token);
                }
            }
            if (root) {  // the final file must be creatable next to where it goes
                if (path_is_dir(opt.filename))
                    throw_error(Errc::hdf5, "cannot create file '" + opt.filename + "': a directory has that name");
                const std::string bad = final_in_the_way(opt.filename);
                if (!bad.empty()) throw_error(Errc::option, "cannot write the final file '" + opt.filename + "': " + bad);
                check_creatable(opt.filename, "final file", run_token);
            }
        }
    } catch (const Error& e) {
        why = e.what();
        code = e.code();
        lib = e.library_code();
    }
    agree_or_throw(why.empty(), code, why, lib);

    // A rerun: the old final file maps the parts about to be truncated. Remove it first.
    try {
        if (root && !opt.filename.empty()) replace_old_file(opt.filename);
    } catch (const Error& e) {
        why = e.what();
        code = e.code();
        lib = e.library_code();
    }
    agree_or_throw(why.empty(), code, why, lib);

    if (role == Role::server) {
        try {
            // Of two runs writing the same filename at once, the second to check (here, or
            // as the Writer makes its part) sees the first's claim.
            const std::string path = opt.filename.empty() ? std::string() : part_path(server_idx);
            if (!path.empty()) replace_old_file(path);
            // The part's identity goes in before the file gets its real name (and SWMR
            // writing starts): a part killed at any instant says which run it belongs to.
            auto tag = [&](hid_t file) {
                h5_set_attr_u64(file, attr_run, run_token);
                h5_set_attr_u64(file, attr_part, static_cast<std::uint64_t>(server_idx));
                h5_set_attr_u64(file, attr_parts, static_cast<std::uint64_t>(n_servers));
                h5_set_attr_string(file, attr_final, base_name(opt.filename));
                if (opt.time_order) h5_set_attr_u64(file, attr_time_order, 0);  // not yet ordered
            };
            writer = std::make_unique<Writer>(path, opt, use_write_thread(opt, ranks_on_node, true), tag);
            writer->set_cache_memory(opt.cache_memory - 2 * StreamMerge::budget(opt, n_clients));
            if (routed) writer->track_cells();
        } catch (const Error& e) {
            why = e.what();
            code = e.code();
            lib = e.library_code();
        } catch (const std::exception& e) {
            why = who() + ": " + e.what();
            code = Errc::hdf5;
        }
    }
    agree_or_throw(why.empty(), code, why, lib);
}

void build_final_file(const FinalSpec& spec, const std::vector<unsigned char>& all, const std::vector<int>& lens) {
    auto part_path = [&](int k) { return part_path_of(spec.filename, k); };
    static const std::vector<SummaryItem> no_summary;
    const std::vector<SummaryItem>& summary = spec.summary ? *spec.summary : no_summary;
    const std::size_t P = static_cast<std::size_t>(spec.parts);
    std::vector<std::uint64_t> part_events(P, 0);
    std::map<std::string, JoinField> fields;
    std::vector<JoinField*> order;  // a part's fields, in its order
    struct JoinCell {
        std::uint64_t id;
        std::size_t part;
        std::size_t index;  // in its part's table
    };
    std::vector<JoinCell> cells;  // routed streams: every part's cells
    bool by_cells = false;
    std::size_t off = 0;
    const std::string src = "the join metadata";
    for (std::size_t k = 0; k < P; ++k) {
        Reader r{all.data() + off, all.data() + off + lens[k], &src};
        off += static_cast<std::size_t>(lens[k]);
        part_events[k] = r.get<std::uint64_t>();
        const auto nf = r.get<std::uint32_t>();
        for (std::uint32_t i = 0; i < nf; ++i) {
            const auto dtb = r.get<std::uint8_t>();
            Shape sh;
            sh.rank = r.get<std::uint8_t>();
            const bool aligned = r.get<std::uint8_t>() != 0;
            const auto len = r.get<std::uint16_t>();
            const auto rows = r.get<std::uint64_t>();
            if (!valid_dtype(dtb) || sh.rank > max_rank) throw_error(Errc::protocol, "malformed " + src);
            const auto dt = static_cast<DType>(dtb);
            for (int d = 0; d < sh.rank; ++d) sh.dims[static_cast<std::size_t>(d)] = r.get<std::uint64_t>();
            const std::string name(r.bytes(len));
            JoinField& f = fields[name];
            if (f.first_part < 0) {
                f.dtype = dt;
                f.shape = sh;
                f.aligned = aligned;
                f.first_part = static_cast<int>(k);
                f.rows.assign(P, 0);
                f.present.assign(P, false);
            } else if (f.dtype != dt || f.shape != sh) {
                throw_error(Errc::join, "field '" + name + "' is " + dtype_name(f.dtype) + " " + f.shape.str() +
                                            " in part " + std::to_string(f.first_part) + " ('" +
                                            base_name(part_path(f.first_part)) + "') but " + dtype_name(dt) + " " +
                                            sh.str() + " in part " + std::to_string(k) + " ('" +
                                            base_name(part_path(static_cast<int>(k))) + "')");
            }
            f.rows[k] = rows;
            f.present[k] = true;
            order.push_back(&f);
        }
        // Routed streams: the part's cells (id, every field's rows where it begins), then
        // every field's rows at its end (Impl::join).
        if (r.p != r.end) {
            const auto n = r.get<std::uint64_t>();
            const auto nf2 = r.get<std::uint32_t>();
            if (nf2 != nf || n == 0) throw_error(Errc::protocol, "malformed " + src);
            by_cells = true;
            for (JoinField* f : order) f->starts.resize(P);
            for (std::uint64_t i = 0; i < n; ++i) {
                const auto id = r.get<std::uint64_t>();
                if (i + 1 < n) cells.push_back(JoinCell{id, k, static_cast<std::size_t>(i)});
                for (std::uint32_t x = 0; x < nf; ++x) order[x]->starts[k].push_back(r.get<std::uint64_t>());
            }
        }
        order.clear();
    }
    std::sort(cells.begin(), cells.end(), [](const JoinCell& a, const JoinCell& b) { return a.id < b.id; });
    for (std::size_t i = 1; i < cells.size(); ++i)
        if (cells[i].id == cells[i - 1].id) throw_error(Errc::protocol, "malformed " + src + " (a cell in two parts)");
    NameSet names;
    for (const auto& kv : fields) {
        try {
            names.check(kv.first, "field");
        } catch (const Error& e) {
            throw_error(Errc::join, std::string("parts disagree on the layout: ") + e.what());
        }
        names.add(kv.first);
    }
    // A summary that clashes with a field only another client gave: the events are joined
    // all the same, the summary is left out and reported after the file is in place.
    std::vector<const SummaryItem*> summaries;
    std::string clashes;
    for (const SummaryItem& it : summary) {
        try {
            if (names.has(it.name)) throw_error(Errc::name, "summary '" + it.name + "' has the name of an event field");
            names.check(it.name, "summary");
            summaries.push_back(&it);
        } catch (const Error& e) {
            clashes += (clashes.empty() ? "" : "; ") + bare_message(e);
        }
    }

    // The final file refers to the parts, so each part with rows must be readable from here
    // (an output directory local to each node would read back as fill values everywhere),
    // and must be this run's (not a stale part of an earlier run in this rank's directory).
    H5Quiet q;
    for (std::size_t k = 0; k < P; ++k) {
        bool used = part_events[k] > 0;
        for (const auto& kv : fields) used = used || kv.second.rows[k] > 0;
        if (!used) continue;
        const std::string part = part_path(static_cast<int>(k));
        H5Id pf = h5_open_read(part);
        if (!pf.valid()) {
            const int err = errno;
            H5Eclear2(H5E_DEFAULT);
            throw_error(Errc::join, "part file '" + part + "' of server " + std::to_string(k) + " cannot be opened by " +
                                        spec.builder + ", which builds '" + spec.filename + "'" +
                                        (path_exists(part) ? std::string() : std::string(" (") + std::strerror(err) + ")") +
                                        ": every rank must see the same output directory");
        }
        std::uint64_t token = 0;
        if (!h5_get_attr_u64(pf.get(), attr_run, token) || token != spec.run_token)
            throw_error(Errc::join, "part file '" + part + "' seen by " + spec.builder + ", which builds '" +
                                        spec.filename + "', is not the one server " + std::to_string(k) +
                                        " wrote in this run (a stale part of an earlier run?): every rank must see the "
                                        "same output directory");
    }

    char token_hex[17];
    std::snprintf(token_hex, sizeof token_hex, "%016llx", static_cast<unsigned long long>(spec.run_token));
    const std::string tmp = spec.filename + "." + token_hex + ".tmp";
    std::string attribute_problems;
    Errc attribute_code = Errc::name;
    try {
        H5Id file = h5_create_file(tmp);
        for (const auto& kv : fields) {
            const std::string& name = kv.first;
            const JoinField& f = kv.second;
            std::uint64_t total = 0;
            for (std::size_t k = 0; k < P; ++k) total += f.aligned ? part_events[k] : f.rows[k];
            H5Id ftype = h5_type(f.dtype, true), mtype = h5_type(f.dtype, false);
            H5Id dcpl(h5check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
            const auto fill = fill_bytes(f.dtype, is_length_name(name));
            h5check_herr(H5Pset_fill_value(dcpl.get(), mtype.get(), fill.data()), "H5Pset_fill_value");
            H5Id vspace = h5_space(static_cast<long long>(total), f.shape);
            std::uint64_t at = 0;
            int mapped = 0;
            // Rows [from, from + n) of part k at rows [at, at + n) of the virtual dataset.
            auto map_rows = [&](std::size_t k, std::uint64_t from, std::uint64_t n) {
                const std::uint64_t rows = f.aligned ? part_events[k] : f.rows[k];
                if (from + n > rows) throw_error(Errc::protocol, "malformed " + src + " (a cell beyond its part)");
                h5_select_rows(vspace.get(), at, n, f.shape);
                H5Id sspace = h5_space(static_cast<long long>(rows), f.shape);
                if (from != 0 || n != rows) h5_select_rows(sspace.get(), from, n, f.shape);
                const std::string part = base_name(part_path(static_cast<int>(k)));
                h5check_herr(H5Pset_virtual(dcpl.get(), vspace.get(), vds_escape(part).c_str(), vds_escape(name).c_str(),
                                            sspace.get()),
                             "cannot map '" + name + "' of '" + part + "'");
                ++mapped;
            };
            if (!by_cells) {  // the parts one after the other
                for (std::size_t k = 0; k < P; ++k) {
                    const std::uint64_t rows = f.aligned ? part_events[k] : f.rows[k];
                    if (f.present[k] && rows > 0) map_rows(k, 0, rows);
                    at += rows;
                }
            } else {
                // The cells in turn, each from the part that holds it. A part's cells follow
                // each other in it, so a mapping takes a run of them: its rows, in order, at
                // the union of the cells' places, up to join_cells_per_mapping cells (one
                // mapping per cell costs HDF5 about 10 KiB of memory, and every read a walk
                // over them all; a union grows in time quadratic in its cells).
                const JoinField& ts = fields.at("timestamp");
                struct Pending {
                    std::uint64_t src_from = 0, src_to = 0;  // the part's rows of the mapping
                    std::uint64_t at = 0, n = 0;             // a block not yet in the selection
                    std::size_t blocks = 0;                  // in the selection
                    H5Id vsel;                               // the places, in the virtual dataset
                    bool seen = false;                       // a cell of the part so far
                };
                std::vector<Pending> pend(P);
                auto map_pending = [&](std::size_t k) {  // part k's mapping made, a new one begun
                    Pending& q = pend[k];
                    const std::uint64_t rows = f.aligned ? part_events[k] : f.rows[k];
                    if (q.src_to > rows) throw_error(Errc::protocol, "malformed " + src + " (a cell beyond its part)");
                    H5Id sspace = h5_space(static_cast<long long>(rows), f.shape);
                    h5_select_rows(sspace.get(), q.src_from, q.src_to - q.src_from, f.shape);
                    const std::string part = base_name(part_path(static_cast<int>(k)));
                    h5check_herr(H5Pset_virtual(dcpl.get(), q.vsel.get(), vds_escape(part).c_str(),
                                                vds_escape(name).c_str(), sspace.get()),
                                 "cannot map '" + name + "' of '" + part + "'");
                    ++mapped;
                    q.vsel = H5Id();
                    q.blocks = 0;
                    q.src_from = q.src_to;
                };
                auto add = [&](std::size_t k) {  // part k's pending block into its selection
                    Pending& q = pend[k];
                    if (q.n == 0) return;
                    if (!q.vsel.valid()) {
                        q.vsel = h5_space(static_cast<long long>(total), f.shape);
                        h5_select_rows(q.vsel.get(), q.at, q.n, f.shape);
                    } else {
                        h5_select_rows(q.vsel.get(), q.at, q.n, f.shape, H5S_SELECT_OR);
                    }
                    q.n = 0;
                    if (++q.blocks == join_cells_per_mapping) map_pending(k);
                };
                for (const JoinCell& c : cells) {
                    const std::size_t k = c.part, i = c.index;
                    const bool has = f.present[k] && k < f.starts.size() && i + 1 < f.starts[k].size();
                    std::uint64_t a = 0, b = 0;
                    if (has) {
                        a = f.starts[k][i];
                        b = f.starts[k][i + 1];
                    } else if (f.aligned && k < ts.starts.size() && i + 1 < ts.starts[k].size()) {
                        a = ts.starts[k][i];  // an aligned field the part lacks: fill rows
                        b = ts.starts[k][i + 1];
                    }
                    if (b < a) throw_error(Errc::protocol, "malformed " + src);
                    if (has && b > a) {
                        Pending& q = pend[k];
                        if (q.seen && a != q.src_to) throw_error(Errc::protocol, "malformed " + src + " (cells apart)");
                        q.seen = true;
                        if (q.n > 0 && q.at + q.n != at) add(k);  // (adjacent cells: one block)
                        if (!q.vsel.valid() && q.n == 0) q.src_from = a;
                        if (q.n == 0) q.at = at;
                        q.n += b - a;
                        q.src_to = b;
                    }
                    at += b - a;
                }
                if (at != total) throw_error(Errc::protocol, "malformed " + src + " (cells do not cover '" + name + "')");
                for (std::size_t k = 0; k < P; ++k) {
                    add(k);
                    if (pend[k].vsel.valid()) map_pending(k);
                }
            }
            if (mapped == 0) {  // nothing to map (no rows anywhere): an ordinary empty dataset
                h5check_herr(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), "H5Pset_layout");
            }
            H5Id d(h5check(H5Dcreate2(file.get(), name.c_str(), ftype.get(), vspace.get(), h5_lcpl().get(), dcpl.get(),
                                      H5P_DEFAULT),
                           "cannot create virtual dataset '" + name + "' in '" + spec.filename + "'"),
                   H5Dclose);
        }
        for (const SummaryItem* it : summaries) write_summary_item(file.get(), *it);
        // After the summaries (an attribute may be on one). One whose path names nothing
        // is left out and reported with the clashes, once the file is in place.
        if (spec.attributes) attribute_problems = write_attributes(file.get(), *spec.attributes, attribute_code);
        h5_set_attr_u64(file.get(), attr_run, spec.run_token);
        if (file.close() < 0) throw_h5("closing '" + tmp + "'");
        if (spec.flatten) {
            // Options::self_contained: the virtual file, complete under its temporary name,
            // is copied into `filename` (made under a name of its own, renamed when
            // complete), then removed. The parts stay until every rank knows the outcome.
            flatten_file(tmp, spec.filename, *spec.flatten, spec.flattened);
            ::unlink(tmp.c_str());
        } else {
            DirLock dir;  // a writer that claimed the name since the constructor keeps it
            dir.take(spec.filename);
            if (WriteClaim::claimed(spec.filename))
                throw_error(Errc::join, "cannot put the final file '" + spec.filename + "' in place: " + being_written +
                                            " (the parts are kept)");
            if (std::rename(tmp.c_str(), spec.filename.c_str()) != 0) {
                const int err = errno;
                throw_error(Errc::hdf5, "cannot rename '" + tmp + "' to '" + spec.filename + "': " + std::strerror(err), err);
            }
        }
    } catch (...) {
        ::unlink(tmp.c_str());  // never leave a half-built final file
        throw;
    }
    std::string problems = clashes;
    if (!clashes.empty()) problems += " (the events were joined; that summary was not written)";
    if (!attribute_problems.empty())
        problems += (problems.empty() ? "" : "; ") + attribute_problems + " (everything else is in the file)";
    if (!problems.empty()) throw_error(clashes.empty() ? attribute_code : Errc::name, problems);
}

inline void Impl::build_final(const std::vector<unsigned char>& all, const std::vector<int>& lens) {
    FinalSpec spec;
    spec.filename = opt.filename;
    spec.parts = n_servers;
    spec.run_token = run_token;
    spec.summary = &summary;
    spec.attributes = &attributes;
    spec.builder = rank_text(rank);
    FlattenSpec flat;
    flat.chunk_bytes = opt.chunk_bytes;
    flat.source_filters = false;  // the run's own compression, on every per-event dataset
    flat.compression = opt.compression;
    flat.preallocate = opt.preallocate;
    FlattenStats done;
    if (opt.self_contained) {
        spec.flatten = &flat;
        spec.flattened = &done;
    }
    struct Keep {  // the flatten's figures, also when the join throws after it
        Stats& stats;
        const FlattenStats& flat;
        ~Keep() {
            stats.flatten_seconds = flat.seconds;
            stats.flatten_bytes = flat.bytes;
        }
    } keep{stats, done};
    build_final_file(spec, all, lens);
}

// Options::self_contained, once every rank knows that the join succeeded: the final file
// holds every row, so each server removes its own part file. One it cannot remove is
// Errc::hdf5 on every rank (the final file is complete all the same).
inline void Impl::remove_parts() {
    std::string why;
    int lib = 0;
    if (role == Role::server) {
        const std::string part = part_path(server_idx);
        if (::unlink(part.c_str()) != 0 && errno != ENOENT) {
            lib = errno;
            why = who() + ": the final file '" + opt.filename + "' is complete and self-contained, but part file '" +
                  part + "' cannot be removed: " + std::strerror(lib);
        }
    }
    agree_or_throw(why.empty(), Errc::hdf5, why, lib);
}

inline void Impl::join() {
    const int root = join_root();
    std::vector<unsigned char> blob;
    if (role == Role::server && !opt.filename.empty()) {
        blob = (ordered ? ordered : writer)->describe();
        if (cell_join && !ordered) {  // its cells, after the fields (build_final_file)
            const auto table = writer->cell_table();
            append_pod(blob, static_cast<std::uint64_t>(table.size()));
            append_pod(blob, static_cast<std::uint32_t>(writer->field_count()));
            for (const auto& c : table) {
                append_pod(blob, c.id);
                for (const std::uint64_t v : c.rows) append_pod(blob, v);
            }
        }
    }
    // The metadata of one part travels as one message: refuse what an int cannot count.
    const int len = blob.size() <= max_batch_bytes ? static_cast<int>(blob.size()) : -1;
    std::vector<int> lens(rank == root ? static_cast<std::size_t>(size) : 0);
    MPI_Request r = MPI_REQUEST_NULL;
    check_mpi(MPI_Igather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm, &r), "MPI_Igather");
    wait_gently(r, opt.idle_sleep_max_us);
    std::vector<unsigned char> all;
    std::vector<int> displs;
    int too_big = 0;  // decided by the root, told to every rank: then nobody sends
    if (rank == root) {
        displs.resize(static_cast<std::size_t>(size));
        std::uint64_t total = 0;
        for (std::size_t i = 0; i < lens.size(); ++i) {
            if (lens[i] < 0 || total + static_cast<std::uint64_t>(lens[i]) > max_batch_bytes) too_big = 1;
            displs[i] = too_big ? 0 : static_cast<int>(total);
            if (!too_big) total += static_cast<std::uint64_t>(lens[i]);
        }
        if (too_big) std::fill(lens.begin(), lens.end(), 0);
        all.resize(too_big ? 0 : static_cast<std::size_t>(total));
    }
    check_mpi(MPI_Ibcast(&too_big, 1, MPI_INT, root, comm, &r), "MPI_Ibcast");
    wait_gently(r, opt.idle_sleep_max_us);
    check_mpi(MPI_Igatherv(blob.data(), too_big ? 0 : len, MPI_BYTE, all.data(), lens.data(), displs.data(), MPI_BYTE,
                           root, comm, &r),
              "MPI_Igatherv");
    wait_gently(r, opt.idle_sleep_max_us);

    struct Status {
        int code;
        int flat;  // Options::self_contained: the final file is in place, self-contained
        char text[4000];
    } status{-1, 0, {0}};
    if (rank == root && !opt.filename.empty()) {
        const double t0 = now_seconds();
        try {
            if (too_big) throw_error(Errc::join, "the descriptions of the part files exceed 2 GiB (too many fields)");
            build_final(all, lens);
        } catch (const Error& e) {
            status.code = static_cast<int>(e.code());
            std::snprintf(status.text, sizeof status.text, "%s", e.what());
        } catch (const std::exception& e) {
            status.code = static_cast<int>(Errc::join);
            std::snprintf(status.text, sizeof status.text, "%s: %s", who().c_str(), e.what());
        }
        stats.join_seconds = now_seconds() - t0;
        status.flat = opt.self_contained && stats.flatten_seconds > 0;  // set once the flat file is in place
        if (status.flat && flatten_hook) flatten_hook(1);
    }
    check_mpi(MPI_Ibcast(&status, sizeof status, MPI_BYTE, root, comm, &r), "MPI_Ibcast");
    wait_gently(r, opt.idle_sleep_max_us);
    // The parts go once the self-contained final file is in place, also when the join then
    // reports a problem of its own (a summary or attribute left out): nothing reads them.
    std::string not_removed;
    if (status.flat) {
        try {
            remove_parts();
        } catch (const Error& e) {
            if (status.code < 0) throw;
            not_removed = std::string("; ") + e.what();
        }
    }
    if (status.code >= 0) {
        status.text[sizeof status.text - 1] = 0;
        throw Error(static_cast<Errc>(status.code),
                    std::string(status.text) + (rank == root ? "" : " [reported by the joining rank]") + not_removed);
    }
}

// ============================================================================ [>>impl-recover]
// 17. Recovery: opening a part or serial file in whatever state a crash left it, cutting
//     its aligned datasets to the complete rows, and reading back what a file holds.
//
//     Used by the `smalldata` tool (tools/smalldata.cpp: recover, check) and its tests, not
//     by a run. A file killed while open in SWMR write mode has its superblock status flags
//     set, so a plain H5Fopen refuses it; opening it read-write with HDF5's
//     "clear_status_flags" file-access property (the one h5clear sets) clears them, and the
//     close drops whatever was not flushed. Recovery then cuts every aligned dataset to the
//     rows complete in all of them (the shortest, `timestamp` included): the rows of the
//     last checkpoint. Unaligned datasets keep their rows. Recovering a file twice, or a
//     file that was closed cleanly, changes nothing. A file killed inside an HDF5 flush can
//     be shorter than its superblock says (h5_open_recovering): opened all the same, only
//     the rows whose chunks lie within its bytes count (rows_within), and the close extends
//     it to the superblock's end.

// Whether an open part file lies under the name its own attributes give it: part k of final
// file F is <stem of F>_part<k>.h5. A copy of another part of the same run (same token)
// would otherwise pass for this one. Empty when it does (or carries no such attributes);
// else what is wrong, naming the file.
inline std::string misplaced_part(hid_t f, const std::string& path) {
    std::uint64_t k = 0;
    std::string final_name;
    const bool tagged = h5_get_attr_u64(f, attr_part, k) && h5_get_attr_string(f, attr_final, final_name);
    H5Eclear2(H5E_DEFAULT);
    if (!tagged || k > static_cast<std::uint64_t>(INT_MAX)) return {};
    const std::string want = base_name(part_path_of(final_name, static_cast<int>(k)));
    if (want == base_name(path)) return {};
    return "part file '" + path + "' says it is part " + std::to_string(k) + " of '" + final_name + "', which is '" + want +
           "' (a copy of another part?)";
}

// The dtype of an HDF5 type as the writer stores it (the inverse of h5_type): integers
// and floats by class, size and sign, bool as the enum {FALSE = 0, TRUE = 1} over int8.
// false for any other type (strings, compounds, other enums).
inline bool dtype_of_h5(hid_t type, DType& out) {
    const H5T_class_t cls = H5Tget_class(type);
    const std::size_t size = H5Tget_size(type);
    if (cls == H5T_INTEGER) {
        const bool sign = H5Tget_sign(type) == H5T_SGN_2;
        switch (size) {
            case 1: out = sign ? DType::i8 : DType::u8; return true;
            case 2: out = sign ? DType::i16 : DType::u16; return true;
            case 4: out = sign ? DType::i32 : DType::u32; return true;
            case 8: out = sign ? DType::i64 : DType::u64; return true;
            default: return false;
        }
    }
    if (cls == H5T_FLOAT) {
        if (size == 4) { out = DType::f32; return true; }
        if (size == 8) { out = DType::f64; return true; }
        return false;
    }
    if (cls == H5T_ENUM && size == 1 && H5Tget_nmembers(type) == 2) {
        H5Id base(H5Tget_super(type), H5Tclose);
        if (!base.valid() || H5Tget_class(base.get()) != H5T_INTEGER || H5Tget_sign(base.get()) != H5T_SGN_2) return false;
        std::int8_t v = -1;
        if (H5Tenum_valueof(type, "FALSE", &v) < 0 || v != 0) return false;
        if (H5Tenum_valueof(type, "TRUE", &v) < 0 || v != 1) return false;
        out = DType::boolean;
        return true;
    }
    return false;
}

// One dataset of a file, as recovery and `smalldata check` see it.
struct DatasetInfo {
    std::string name;            // path from the root, without the leading '/'
    bool known_type = false;     // dtype is meaningful (a type the writer stores)
    bool is_string = false;      // a string summary
    DType dtype = DType::f64;
    int rank = 0;                // of the dataspace (0: scalar)
    std::uint64_t rows = 0;      // dims[0], when rank > 0
    Shape shape;                 // dims[1..]: the shape of one row (rank <= max_rank + 1)
    bool event_axis = false;     // a field: chunked with an unlimited first axis, or virtual
    bool is_virtual = false;
    bool aligned = false;        // event_axis and not unaligned_ or var_
    bool empty_field = false;    // a final file's field the join found no rows of: contiguous,
                                 // 0 rows, with a fill value (a summary has none)
};

inline herr_t collect_link_name(hid_t, const char* name, const H5L_info_t* info, void* out) {
    if (info->type == H5L_TYPE_HARD) static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
}

// Every dataset of an open file, found recursively in its groups, in name order.
inline std::vector<DatasetInfo> list_datasets(hid_t file, const std::string& path) {
    std::vector<std::string> names;
    if (H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_link_name, &names) < 0)
        throw_h5("cannot list the objects of '" + path + "'");
    std::vector<DatasetInfo> out;
    for (const std::string& n : names) {
        H5Id obj(H5Oopen(file, n.c_str(), H5P_DEFAULT), H5Oclose);
        if (!obj.valid()) throw_h5("cannot open '" + n + "' in '" + path + "'");
        if (H5Iget_type(obj.get()) != H5I_DATASET) continue;
        DatasetInfo d;
        d.name = n;
        H5Id type(h5check(H5Dget_type(obj.get()), "H5Dget_type"), H5Tclose);
        d.is_string = H5Tget_class(type.get()) == H5T_STRING;
        d.known_type = dtype_of_h5(type.get(), d.dtype);
        H5Id space(h5check(H5Dget_space(obj.get()), "H5Dget_space"), H5Sclose);
        const int rank = H5Sget_simple_extent_ndims(space.get());
        if (rank < 0) throw_h5("cannot read the shape of '" + n + "' in '" + path + "'");
        d.rank = rank;
        hsize_t dims[H5S_MAX_RANK], maxd[H5S_MAX_RANK];
        H5Sget_simple_extent_dims(space.get(), dims, maxd);
        H5Id dcpl(h5check(H5Dget_create_plist(obj.get()), "H5Dget_create_plist"), H5Pclose);
        const H5D_layout_t layout = H5Pget_layout(dcpl.get());
        d.is_virtual = layout == H5D_VIRTUAL;
        if (rank > 0 && rank <= max_rank + 1) {
            d.rows = dims[0];
            d.shape.rank = static_cast<std::uint8_t>(rank - 1);
            for (int i = 1; i < rank; ++i) d.shape.dims[static_cast<std::size_t>(i - 1)] = dims[i];
            d.event_axis = d.known_type && (d.is_virtual || (layout == H5D_CHUNKED && maxd[0] == H5S_UNLIMITED));
            H5D_fill_value_t fill = H5D_FILL_VALUE_UNDEFINED;
            d.empty_field = d.known_type && !d.event_axis && layout == H5D_CONTIGUOUS && dims[0] == 0 &&
                            H5Pfill_value_defined(dcpl.get(), &fill) >= 0 && fill == H5D_FILL_VALUE_USER_DEFINED;
            H5Eclear2(H5E_DEFAULT);
        }
        d.aligned = d.event_axis && !is_unaligned(d.name) && !is_var_name(d.name);
        out.push_back(std::move(d));
    }
    return out;
}

// The events of a file's datasets: the shortest aligned dataset (0 without `timestamp`).
inline std::uint64_t complete_rows(const std::vector<DatasetInfo>& ds) {
    bool has_ts = false;
    std::uint64_t n = std::numeric_limits<std::uint64_t>::max();
    for (const DatasetInfo& d : ds) {
        if (!d.aligned) continue;
        has_ts = has_ts || d.name == "timestamp";
        n = std::min(n, d.rows);
    }
    return has_ts ? n : 0;
}

// The end of file a file's superblock gives (version 2 or 3, the one this library writes,
// 8-byte addresses), and 0 when it has no such superblock at its start; `flags`: its
// status flags (nonzero: a writer had it open). A file shorter than that end was cut
// inside an HDF5 flush (below).
inline std::uint64_t superblock_eof(const std::string& path, unsigned* flags) {
    unsigned char b[48];
    std::FILE* fp = std::fopen(path.c_str(), "rb");
    if (!fp) return 0;
    const std::size_t got = std::fread(b, 1, sizeof b, fp);
    std::fclose(fp);
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (got < sizeof b || std::memcmp(b, sig, 8) != 0 || b[8] < 2 || b[9] != 8) return 0;
    *flags = b[11];
    std::uint64_t eof = 0;
    for (int i = 7; i >= 0; --i) eof = (eof << 8) | b[28 + i];  // little-endian, after base and extension addresses
    return eof;
}

// Opens a file that a crash may have left with its status flags set: plainly first, else
// with the flags cleared. `write`: read-write in either case, and closing a file opened
// with its flags cleared so writes them cleared (HDF5 then also cuts the file to the end
// its superblock gives). Read-only, the flags are cleared in memory only: nothing on
// disk changes, so a file is read through before anything is written to it. `cleared`
// tells which way it went. Errc::hdf5 naming the file when neither works (not an HDF5
// file, or cut before its superblock).
//
// A file killed inside an HDF5 flush can be shorter than its superblock says: HDF5 writes
// the superblock, with an end of file that counts space allocated but not yet written
// (the unused rest of a metadata block), before it extends the file to that end. Such a
// file is opened as well (HDF5's "skip_eof_check", the property h5clear uses), and
// `missing` is the number of bytes it lacks (0 otherwise); reading the missing bytes gives
// zeros, so the caller must not trust a row stored there (recover_file cuts them), and
// metadata stored there fails its checksum. Opened for writing, the close extends the file
// to its superblock's end, as the flush would have.
inline H5Id h5_open_recovering(const std::string& path, bool write, bool* cleared, std::uint64_t* missing) {
    H5Quiet q;
    if (cleared) *cleared = false;
    if (missing) *missing = 0;
    if (!path_exists(path)) {
        const int err = errno;
        throw_error(Errc::hdf5, "cannot open '" + path + "': " + std::strerror(err), err);
    }
    if (path_is_dir(path)) throw_error(Errc::hdf5, "cannot open '" + path + "': it is a directory");
    H5Id f(H5Fopen(path.c_str(), write ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (f.valid()) return f;
    const std::string first = h5_stack();
    H5Id fapl(h5check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
    if (H5Pexist(fapl.get(), "clear_status_flags") <= 0) {
        H5Eclear2(H5E_DEFAULT);
        throw_error(Errc::hdf5, "cannot open '" + path + "' (" + first +
                                    "), and this HDF5 cannot clear a crashed file's status flags");
    }
    hbool_t t = 1;
    h5check_herr(H5Pset(fapl.get(), "clear_status_flags", &t), "H5Pset(clear_status_flags)");
    h5check_herr(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "H5Pset_fclose_degree");
    H5Id g(H5Fopen(path.c_str(), write ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get()), H5Fclose);
    std::uint64_t lacks = 0;
    unsigned flags = 1;
    if (!g.valid()) {
        const std::uint64_t stored = superblock_eof(path, &flags);
        struct stat st;
        if (stored > 0 && ::stat(path.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) < stored &&
            H5Pexist(fapl.get(), "skip_eof_check") > 0) {
            h5check_herr(H5Pset(fapl.get(), "skip_eof_check", &t), "H5Pset(skip_eof_check)");
            g = H5Id(H5Fopen(path.c_str(), write ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get()), H5Fclose);
            lacks = stored - static_cast<std::uint64_t>(st.st_size);
        }
        H5Eclear2(H5E_DEFAULT);
    }
    if (!g.valid())
        throw_error(Errc::hdf5, "cannot open '" + path + "', not even with its status flags cleared (not an HDF5 file, "
                                    "or cut short before its first flush): " + first);
    if (cleared) *cleared = lacks == 0 || flags != 0;  // a short file's flags may have been clear
    if (missing) *missing = lacks;
    return g;
}

// Why a file h5_open_recovering opened short could not be read through (for errors).
inline std::string short_file_text(const std::string& path, std::uint64_t missing) {
    return "'" + path + "' is " + std::to_string(missing) +
           " bytes shorter than its superblock says, and the missing bytes held more than unused space";
}

// The rows of a chunked dataset whose chunks all lie within the first `eof` bytes of its
// file: a chunk that reaches beyond (a file cut short, see h5_open_recovering) and every
// row after its first are not to be trusted. `rows` when every chunk lies within. Needs
// H5Dget_chunk_info (HDF5 1.10.5); older: Errc::hdf5.
inline std::uint64_t rows_within(hid_t dset, std::uint64_t rows, std::uint64_t eof, const std::string& what) {
#if H5_VERSION_GE(1, 10, 5)
    H5Id dcpl(h5check(H5Dget_create_plist(dset), "H5Dget_create_plist"), H5Pclose);
    if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return rows;
    H5Id space(h5check(H5Dget_space(dset), "H5Dget_space"), H5Sclose);
    hsize_t n = 0;
    h5check_herr(H5Dget_num_chunks(dset, space.get(), &n), "cannot list the chunks of " + what);
    std::uint64_t keep = rows;
    hsize_t offset[H5S_MAX_RANK];
    for (hsize_t i = 0; i < n; ++i) {
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        h5check_herr(H5Dget_chunk_info(dset, space.get(), i, offset, &mask, &addr, &size),
                     "cannot read where the chunks of " + what + " lie");
        if (addr != HADDR_UNDEF && addr + size > eof) keep = std::min<std::uint64_t>(keep, offset[0]);
    }
    return keep;
#else
    (void)dset;
    (void)rows;
    (void)eof;
    throw_error(Errc::hdf5, "cannot tell which rows of " + what + " lie in the part of the file that is missing: "
                            "this needs HDF5 1.10.5 or newer");
#endif
}

// What recover_file found and left.
struct Recovered {
    std::uint64_t events = 0;                 // rows of every aligned dataset now
    std::vector<unsigned char> description;   // Writer::describe()'s format, for build_final_file
    bool cleared = false;                     // the status flags were set (a crashed writer)
    std::uint64_t cut_rows = 0;               // aligned rows dropped, over all datasets
    std::uint64_t missing_bytes = 0;          // the file was this much shorter than its superblock
};                                            // says (killed inside a flush): extended

// The description of a file's fields in Writer::describe()'s format (events, then per
// field dtype, rank, aligned, name length, rows, dims, name). Errc::hdf5 for a field of a
// type the writer does not store.
inline std::vector<unsigned char> describe_datasets(const std::vector<DatasetInfo>& ds, std::uint64_t events,
                                                    const std::string& path) {
    std::vector<unsigned char> out;
    std::uint32_t n = 0;
    for (const DatasetInfo& d : ds) n += d.event_axis ? 1u : 0u;
    append_pod(out, events);
    append_pod(out, n);
    for (const DatasetInfo& d : ds) {
        if (!d.event_axis) continue;
        if (d.name.size() > 65535) throw_error(Errc::hdf5, "dataset name too long in '" + path + "'");
        append_pod(out, static_cast<std::uint8_t>(d.dtype));
        append_pod(out, d.shape.rank);
        append_pod(out, static_cast<std::uint8_t>(d.aligned));
        append_pod(out, static_cast<std::uint16_t>(d.name.size()));
        append_pod(out, d.aligned ? events : d.rows);
        for (int i = 0; i < d.shape.rank; ++i) append_pod(out, d.shape.dims[static_cast<std::size_t>(i)]);
        out.insert(out.end(), d.name.begin(), d.name.end());
    }
    return out;
}

// recover_file's work once the file is open (read-only; `r` says how it was opened).
inline Recovered recover_open_file(const std::string& path, H5Id f, Recovered r) {
    std::vector<DatasetInfo> ds = list_datasets(f.get(), path);
    // Cut short inside a flush: only rows whose chunks lie in the bytes on disk count (what
    // lies beyond is unused space allocated ahead; a row there would read back as zeros).
    std::vector<std::uint64_t> given_rows(ds.size());
    struct stat st{};
    if (r.missing_bytes && ::stat(path.c_str(), &st) != 0) throw_error(Errc::hdf5, "cannot stat '" + path + "'", errno);
    for (std::size_t i = 0; i < ds.size(); ++i) {
        DatasetInfo& d = ds[i];
        given_rows[i] = d.rows;
        if (r.missing_bytes == 0 || !d.event_axis || d.rows == 0) continue;
        H5Id dset(h5check(H5Dopen2(f.get(), d.name.c_str(), H5P_DEFAULT), "cannot open '" + d.name + "' in '" + path + "'"),
                  H5Dclose);
        d.rows = rows_within(dset.get(), d.rows, static_cast<std::uint64_t>(st.st_size), "'" + d.name + "' in '" + path + "'");
    }
    r.events = complete_rows(ds);
    if (r.cleared) {  // a crashed writer: no more than its last checkpoint made durable
        std::uint64_t durable = 0;
        if (!h5_get_attr_u64(f.get(), attr_events, durable)) durable = 0;  // killed before its first
        r.events = std::min(r.events, durable);
    }
    // var_ fields: no more events than their rows hold, and then exactly those rows.
    std::vector<std::uint64_t> var_rows(ds.size(), 0);
    auto length_of = [&](const DatasetInfo& d) -> const DatasetInfo* {
        const std::string ln = length_name(d.name);
        for (const DatasetInfo& l : ds)
            if (l.name == ln && l.aligned) return &l;
        return nullptr;
    };
    for (int pass = 0; pass < 2; ++pass) {
        for (std::size_t i = 0; i < ds.size(); ++i) {
            const DatasetInfo& d = ds[i];
            if (!d.event_axis || !is_var_name(d.name)) continue;
            const DatasetInfo* l = length_of(d);
            if (!l) {  // its lengths are gone: no event can say which rows are its
                r.events = 0;
                continue;
            }
            H5Id len(h5check(H5Dopen2(f.get(), l->name.c_str(), H5P_DEFAULT), "cannot open '" + l->name + "' in '" + path + "'"),
                     H5Dclose);
            if (pass == 0)
                r.events = std::min(r.events, events_within(len.get(), r.events, l->rows, d.rows));
            else
                var_rows[i] = rows_of(len.get(), r.events, l->rows);
        }
    }
    bool even = true;
    for (std::size_t i = 0; i < ds.size(); ++i) {
        DatasetInfo& d = ds[i];
        even = even && (!d.aligned || given_rows[i] == r.events) &&
               (!d.event_axis || !is_var_name(d.name) || given_rows[i] == var_rows[i]) && d.rows == given_rows[i];
    }
    if (!even || r.cleared || r.missing_bytes) {  // rows to cut, flags to clear, bytes to add: for writing now
        if (f.close() < 0) throw_h5("closing '" + path + "'");
        f = h5_open_recovering(path, true);
    }
    for (std::size_t i = 0; i < ds.size(); ++i) {
        DatasetInfo& d = ds[i];
        const bool var = d.event_axis && is_var_name(d.name);
        const std::uint64_t want = var ? var_rows[i] : d.aligned ? r.events : d.rows;  // unaligned: within the file
        d.rows = given_rows[i];
        if (!d.event_axis || d.rows == want) continue;
        H5Id dset(h5check(H5Dopen2(f.get(), d.name.c_str(), H5P_DEFAULT), "cannot open '" + d.name + "' in '" + path + "'"),
                  H5Dclose);
        hsize_t dims[max_rank + 1];
        dims[0] = static_cast<hsize_t>(want);
        for (int k = 0; k < d.shape.rank; ++k) dims[k + 1] = d.shape.dims[static_cast<std::size_t>(k)];
        h5check_herr(H5Dset_extent(dset.get(), dims), "cannot cut '" + d.name + "' in '" + path + "'");
        r.cut_rows += d.rows - want;
        d.rows = want;
    }
    if (f.close() < 0) throw_h5("closing '" + path + "'");
    r.description = describe_datasets(ds, r.events, path);
    return r;
}

// Recovers a part or serial file in place (see the top of this section) and describes it.
// Everything is read first, with the file opened read-only: a file that cannot be read
// through (a writer that filled its disk before its first checkpoint, say) is an error
// and stays exactly as it was (HDF5, closing a file opened for writing, cuts it to the end
// its superblock gives: 199 bytes for such a file). Only then is it opened for writing,
// if it has rows to cut or status flags to clear.
inline Recovered recover_file(const std::string& path) {
    // A claim can be a process's that is still ending (recover run the moment a job was
    // killed: its ranks may outlive the launcher by a little): given 5 s to go.
    for (int waited_ms = 0; waited_ms < 5000 && WriteClaim::claimed(path); waited_ms += 50)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (WriteClaim::claimed(path))
        throw_error(Errc::usage, "cannot recover '" + path + "': it is being written by a running process (a run "
                                 "holds it); recover it once that run has ended");
    H5Quiet q;
    Recovered r;
    H5Id f = h5_open_recovering(path, false, &r.cleared, &r.missing_bytes);
    try {
        return recover_open_file(path, std::move(f), r);
    } catch (const Error& e) {
        if (!r.missing_bytes) throw;
        throw_error(e.code(), short_file_text(path, r.missing_bytes) + ": " + bare_text(e.what()));
    }
}

// The summary datasets of a final or serial file (every dataset that is not a field), read
// back as build_final_file takes them: a rebuilt final file keeps the summary of the one it
// replaces. Datasets of other types are left out.
inline std::vector<SummaryItem> read_summary(hid_t file, const std::vector<DatasetInfo>& ds) {
    std::vector<SummaryItem> out;
    for (const DatasetInfo& d : ds) {
        if (d.event_axis || d.is_virtual || d.empty_field || (!d.known_type && !d.is_string)) continue;
        H5Id dset(H5Dopen2(file, d.name.c_str(), H5P_DEFAULT), H5Dclose);
        if (!dset.valid()) continue;
        SummaryItem it;
        it.name = d.name;
        if (d.is_string) {
            H5Id type(h5check(H5Dget_type(dset.get()), "H5Dget_type"), H5Tclose);
            if (H5Tis_variable_str(type.get()) != 0 || d.rank != 0) continue;
            std::string buf(H5Tget_size(type.get()), '\0');
            if (buf.empty() || H5Dread(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &buf[0]) < 0) continue;
            it.is_string = true;
            it.text = buf.substr(0, buf.find('\0'));
        } else {
            if (d.rank > max_rank) continue;
            it.dtype = d.dtype;
            it.shape.rank = static_cast<std::uint8_t>(d.rank);  // a summary has no event axis
            if (d.rank > 0) it.shape.dims[0] = d.rows;
            for (int i = 1; i < d.rank; ++i) it.shape.dims[static_cast<std::size_t>(i)] = d.shape.dims[static_cast<std::size_t>(i - 1)];
            std::size_t n = dtype_size(d.dtype);
            for (int i = 0; i < it.shape.rank; ++i) n *= static_cast<std::size_t>(it.shape.dims[static_cast<std::size_t>(i)]);
            it.bytes.resize(n);
            H5Id mem = h5_type(d.dtype, false);
            if (n > 0 && H5Dread(dset.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, it.bytes.data()) < 0) continue;
        }
        out.push_back(std::move(it));
    }
    H5Eclear2(H5E_DEFAULT);
    return out;
}

// The attributes save_attribute() gave a final or serial file (on its root group, groups and
// datasets), read back as build_final_file takes them: a rebuilt final file keeps them as it
// keeps its summary. The library's own ("smalldata_...") and attributes of other types (not
// a number, the bool enum or a scalar string) are left out.
inline std::vector<AttributeItem> read_attributes(hid_t file) {
    std::vector<AttributeItem> out;
    std::vector<std::string> objects{""};  // "": the root group
    if (H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_link_name, &objects) < 0) objects.resize(1);
    for (const std::string& path : objects) {
        H5Id obj(H5Oopen(file, path.empty() ? "/" : path.c_str(), H5P_DEFAULT), H5Oclose);
        if (!obj.valid()) continue;
        std::vector<std::string> names;
        auto collect = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
            static_cast<std::vector<std::string>*>(data)->emplace_back(name);
            return 0;
        };
        hsize_t at = 0;
        if (H5Aiterate2(obj.get(), H5_INDEX_NAME, H5_ITER_INC, &at, collect, &names) < 0) continue;
        for (const std::string& name : names) {
            if (name.compare(0, 10, "smalldata_") == 0) continue;
            H5Id a(H5Aopen(obj.get(), name.c_str(), H5P_DEFAULT), H5Aclose);
            if (!a.valid()) continue;
            H5Id type(H5Aget_type(a.get()), H5Tclose);
            H5Id space(H5Aget_space(a.get()), H5Sclose);
            const int rank = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
            if (!type.valid() || rank < 0 || rank > max_rank) continue;
            AttributeItem it;
            it.path = path;
            it.value.name = name;
            if (H5Tget_class(type.get()) == H5T_STRING) {
                if (rank != 0) continue;
                if (H5Tis_variable_str(type.get()) > 0) {
                    H5Id mem(h5check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
                    h5check_herr(H5Tset_size(mem.get(), H5T_VARIABLE), "H5Tset_size");
                    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
                    char* p = nullptr;
                    if (H5Aread(a.get(), mem.get(), &p) < 0) continue;
                    it.value.text = p ? p : "";
                    if (p) H5free_memory(p);
                } else {
                    std::string buf(H5Tget_size(type.get()), '\0');
                    if (buf.empty() || H5Aread(a.get(), type.get(), &buf[0]) < 0) continue;
                    it.value.text = buf.substr(0, buf.find('\0'));
                }
                it.value.is_string = true;
            } else {
                if (!dtype_of_h5(type.get(), it.value.dtype)) continue;
                hsize_t dims[H5S_MAX_RANK];
                H5Sget_simple_extent_dims(space.get(), dims, nullptr);
                it.value.shape.rank = static_cast<std::uint8_t>(rank);
                std::size_t n = dtype_size(it.value.dtype);
                for (int i = 0; i < rank; ++i) {
                    it.value.shape.dims[static_cast<std::size_t>(i)] = dims[i];
                    n *= static_cast<std::size_t>(dims[i]);
                }
                it.value.bytes.resize(std::max<std::size_t>(n, 1));
                H5Id mem = h5_type(it.value.dtype, false);
                if (n > 0 && H5Aread(a.get(), mem.get(), it.value.bytes.data()) < 0) continue;
            }
            out.push_back(std::move(it));
        }
    }
    H5Eclear2(H5E_DEFAULT);
    return out;
}

// One mapping of a virtual dataset: the source file and dataset as stored (patterns, '%'
// doubled, relative to the file holding the mapping) and the rows the source must have:
// up to the end of the rows it takes (a mapping of a time-ordered run's cells takes rows
// from the middle of its part).
struct VirtualSource {
    std::string file, dataset;
    std::uint64_t rows = 0;
};
inline std::vector<VirtualSource> virtual_sources(hid_t file, const std::string& dataset) {
    std::vector<VirtualSource> out;
    H5Id d(h5check(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), "cannot open '" + dataset + "'"), H5Dclose);
    H5Id dcpl(h5check(H5Dget_create_plist(d.get()), "H5Dget_create_plist"), H5Pclose);
    if (H5Pget_layout(dcpl.get()) != H5D_VIRTUAL) return out;
    std::size_t n = 0;
    h5check_herr(H5Pget_virtual_count(dcpl.get(), &n), "H5Pget_virtual_count");
    for (std::size_t i = 0; i < n; ++i) {
        VirtualSource s;
        auto text = [&](ssize_t (*get)(hid_t, size_t, char*, size_t)) {
            const ssize_t len = get(dcpl.get(), i, nullptr, 0);
            if (len < 0) throw_h5("cannot read a mapping of '" + dataset + "'");
            std::string buf(static_cast<std::size_t>(len) + 1, '\0');
            get(dcpl.get(), i, &buf[0], buf.size());
            buf.resize(static_cast<std::size_t>(len));
            return buf;
        };
        s.file = text(H5Pget_virtual_filename);
        s.dataset = text(H5Pget_virtual_dsetname);
        H5Id sspace(h5check(H5Pget_virtual_srcspace(dcpl.get(), i), "H5Pget_virtual_srcspace"), H5Sclose);
        hsize_t lo[H5S_MAX_RANK], hi[H5S_MAX_RANK];
        const int rank = H5Sget_simple_extent_ndims(sspace.get());
        s.rows = rank > 0 && H5Sget_select_npoints(sspace.get()) > 0 && H5Sget_select_bounds(sspace.get(), lo, hi) >= 0
                     ? static_cast<std::uint64_t>(hi[0]) + 1
                     : 0;
        out.push_back(std::move(s));
    }
    return out;
}
// A virtual dataset's stored source name back to a file name ("%%" -> "%").
inline std::string vds_unescape(const std::string& name) {
    std::string out;
    for (std::size_t i = 0; i < name.size(); ++i) {
        out += name[i];
        if (name[i] == '%' && i + 1 < name.size() && name[i + 1] == '%') ++i;
    }
    return out;
}

// ============================================================================ [>>impl-flatten]
// 18. Flatten: a final file -> one self-contained file. Copies a parallel run's final file
//     (virtual datasets reading through part files) or a serial file into one file of
//     ordinary chunked datasets: done() with Options::self_contained, `smalldata flatten`.
//
//     What the copy holds. Every group, dataset and attribute of the source, by the same
//     names. A per-event dataset (virtual; chunked with an unlimited first axis, as the
//     writer makes them; or contiguous, empty and with a fill value: a field the join found
//     no rows of) becomes a chunked dataset with the same type, shape and fill value and an
//     unlimited first axis, as in a serial file. Its chunks: the largest power of two of rows
//     within FlattenSpec::chunk_bytes (the writer's rule without its cache bound: the copy is
//     written from one block buffer, not from per-field caches), at most the next power of
//     two >= its rows; one row per chunk for rows of 64 KiB or more. Its filters: the source's
//     (a virtual dataset's: those of its first source dataset) or FlattenSpec::compression.
//     Other datasets (summaries) are copied as they are (H5Ocopy, attributes included). Soft
//     and external links are not copied (the library makes none). The root group drops the
//     attributes that tie a file to its parts (smalldata_run, _part, _parts, _final) and,
//     when the source had a run token, gets it as smalldata_flat_run: without a run token the
//     copy is what the tools call a serial file (`smalldata check` verifies it as one,
//     `smalldata recover` leaves it as it is), and a rerun replaces it as any final file.
//     Speed. Data moves in blocks of whole chunks (FlattenSpec::block_bytes; one buffer, reused
//     for every dataset): one H5Dread from the source, then each whole chunk goes to the file
//     raw (H5Dwrite_chunk) when nothing is to be compressed, else one H5Dwrite through the
//     filters. No chunk cache on the output (every chunk is written whole), nor on a source
//     without filters (its chunks are read straight into the block): the data is copied
//     twice, by the kernel, from the page cache and back into it. A block of 4 MiB stays in
//     the CPU's caches between the read and the write: blocks of 16 MiB copied ~10 % slower,
//     of 64 MiB ~45 % (bench/flatten_bench, docs/performance.md). Disk space is reserved ahead of the writes as the writer does
//     (FileReserve, FlattenSpec::preallocate): on ext4 the copy then runs ~20 % faster.
//     Safety. The sources of every virtual dataset are checked first: they open, carry the
//     file's run token, and hold the rows mapped (a missing part would read as fill values).
//     The copy is made under OUT.<16 hex digits>.tmp next to OUT, which `smalldata recover`
//     removes as a leftover, and renamed to OUT when complete. On any error that file is
//     removed, OUT is untouched, and the error (Errc::hdf5; Errc::join for a part file;
//     Errc::usage when OUT is the input or a part it reads) names the files and the dataset.

inline constexpr const char* attr_flat_run = "smalldata_flat_run";  // u64: the run a flat file was made from

// The root attributes that tie a file to its parts (section 16), which a flat file drops.
inline bool is_part_attribute(const std::string& name) {
    return name == attr_run || name == attr_part || name == attr_parts || name == attr_final;
}

// Rows per chunk of a flat dataset of `rows` rows of `row_bytes` bytes (see above).
inline std::uint64_t flat_chunk_rows(std::uint64_t rows, std::uint64_t row_bytes, std::size_t chunk_bytes) {
    if (row_bytes >= big_row_bytes) return 1;
    const std::uint64_t per_chunk = pow2_floor(std::max<std::uint64_t>(1, chunk_bytes / std::max<std::uint64_t>(row_bytes, 1)));
    return std::min(per_chunk, pow2_ceil(std::min<std::uint64_t>(std::max<std::uint64_t>(rows, 1), std::uint64_t(1) << 62)));
}

// The file a virtual dataset's stored source name refers to, as HDF5 finds it from `in`:
// "." is `in` itself, a relative name is in in's directory.
inline std::string flat_source_path(const std::string& in, const std::string& stored) {
    const std::string name = vds_unescape(stored);
    if (name == ".") return in;
    if (!name.empty() && name[0] == '/') return name;
    const std::size_t slash = in.rfind('/');
    return slash == std::string::npos ? name : in.substr(0, slash + 1) + name;
}

// Whether a type holds variable-length data (pointers in memory, freed after use).
inline bool h5_has_vlen(hid_t type) {
    H5Quiet q;
    const bool v = H5Tdetect_class(type, H5T_VLEN) > 0 || H5Tis_variable_str(type) > 0;
    H5Eclear2(H5E_DEFAULT);
    return v;
}
inline void h5_reclaim(hid_t type, hid_t space, void* buf) {
#if H5_VERSION_GE(1, 12, 0)
    (void)H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
    (void)H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
}

// Copies every attribute of object `from` to object `to` (another file), with its own type
// and shape; the root's part attributes are left out. `what` names the object for messages.
inline void copy_attributes(hid_t from, hid_t to, bool root, const std::string& what) {
    std::vector<std::string> names;
    auto collect = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
        static_cast<std::vector<std::string>*>(data)->emplace_back(name);
        return 0;
    };
    hsize_t at = 0;
    h5check_herr(H5Aiterate2(from, H5_INDEX_NAME, H5_ITER_INC, &at, collect, &names),
                 "cannot list the attributes of " + what);
    std::vector<unsigned char> buf;
    for (const std::string& name : names) {
        if (root && is_part_attribute(name)) continue;
        const std::string an = "attribute '" + attribute_text(name) + "' of " + what;
        H5Id a(h5check(H5Aopen(from, name.c_str(), H5P_DEFAULT), "cannot open " + an), H5Aclose);
        H5Id type(h5check(H5Aget_type(a.get()), "cannot read the type of " + an), H5Tclose);
        H5Id space(h5check(H5Aget_space(a.get()), "cannot read the shape of " + an), H5Sclose);
        const hssize_t n = H5Sget_select_npoints(space.get());
        const std::size_t size = H5Tget_size(type.get());
        if (n < 0 || size == 0) throw_h5("cannot read the shape of " + an);
        H5Id b(h5check(H5Acreate2(to, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                       "cannot create " + an),
               H5Aclose);
        if (n == 0) continue;  // an empty or null dataspace: nothing to write
        buf.assign(static_cast<std::size_t>(n) * size, 0);
        h5check_herr(H5Aread(a.get(), type.get(), buf.data()), "cannot read " + an);
        const herr_t w = H5Awrite(b.get(), type.get(), buf.data());
        if (h5_has_vlen(type.get())) h5_reclaim(type.get(), space.get(), buf.data());
        h5check_herr(w, "cannot write " + an);
    }
}

// Adds the filter pipeline of dataset creation property list `from` to `to`, each filter
// with its flags and parameters.
inline void copy_filters(hid_t from, hid_t to, const std::string& what) {
    const int n = H5Pget_nfilters(from);
    if (n < 0) throw_h5("cannot read the filters of " + what);
    for (int i = 0; i < n; ++i) {
        std::vector<unsigned> cd(32);
        unsigned flags = 0, config = 0;
        std::size_t count = cd.size();
        char name[256] = "";
        H5Z_filter_t id = H5Pget_filter2(from, static_cast<unsigned>(i), &flags, &count, cd.data(), sizeof name, name, &config);
        if (id >= 0 && count > cd.size()) {  // more parameters than room: again, with room
            cd.resize(count);
            id = H5Pget_filter2(from, static_cast<unsigned>(i), &flags, &count, cd.data(), sizeof name, name, &config);
        }
        if (id < 0) throw_h5("cannot read the filters of " + what);
        count = std::min(count, cd.size());
        h5check_herr(H5Pset_filter(to, id, flags, count, count ? cd.data() : nullptr),
                     "cannot set " + filter_text(static_cast<unsigned>(id)) + " on " + what);
    }
}

// The copy of one file into another (flatten_file): the checks, then object by object.
class Flattener {
public:
    Flattener(const std::string& in, const std::string& out, const FlattenSpec& spec)
        : in_(in), out_(out), spec_(spec) {}

    void run(FlattenStats& st) {
        H5Quiet q;
        if (path_is_dir(in_)) throw_error(Errc::hdf5, "cannot open '" + in_ + "': it is a directory");
        src_ = H5Id(H5Fopen(in_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
        if (!src_.valid()) {
            const bool exists = path_exists(in_);
            throw_error(Errc::hdf5, "cannot open '" + in_ + "'" +
                                        (exists ? (WriteClaim::claimed(in_)
                                                       ? " (it is being written by a running process: flatten it once that "
                                                         "run has ended): "
                                                       : " (a crashed file? `smalldata recover` it first): ") +
                                                      h5_stack()
                                                : std::string(": ") + std::strerror(ENOENT)));
        }
        has_run_ = h5_get_attr_u64(src_.get(), attr_run, run_);
        H5Eclear2(H5E_DEFAULT);
        plan();
        check_out();
        tmp_ = temp_name();
        try {
            write(st);
        } catch (...) {
            spare_.release();
            dst_.close();
            ::unlink(tmp_.c_str());  // never leave a half-made copy
            throw;
        }
    }

private:
    enum class Kind { group, event, copy };
    struct Object {
        std::string name;
        Kind kind = Kind::copy;
        H5Id filters;  // event: the dcpl whose filters it keeps (its own, or its first source's)
        bool filtered = false;  // that dcpl has filters (then the source is read through a chunk cache)
    };

    std::string what(const std::string& name) const { return "dataset '" + name + "' of '" + in_ + "'"; }

    // Lists the objects, sorts out the datasets, checks every virtual dataset's sources.
    void plan() {
        std::vector<std::string> names;
        if (H5Lvisit(src_.get(), H5_INDEX_NAME, H5_ITER_INC, collect_link_name, &names) < 0)
            throw_h5("cannot list the objects of '" + in_ + "'");
        std::map<std::string, H5Id> sources;  // opened once each, closed before the copy
        for (const std::string& n : names) {
            H5Id obj(H5Oopen(src_.get(), n.c_str(), H5P_DEFAULT), H5Oclose);
            if (!obj.valid()) throw_h5("cannot open '" + n + "' in '" + in_ + "'");
            Object o;
            o.name = n;
            const H5I_type_t t = H5Iget_type(obj.get());
            if (t == H5I_GROUP) {
                o.kind = Kind::group;
            } else if (t == H5I_DATASET) {
                H5Id dcpl(h5check(H5Dget_create_plist(obj.get()), "cannot read the layout of " + what(n)), H5Pclose);
                H5Id space(h5check(H5Dget_space(obj.get()), "cannot read the shape of " + what(n)), H5Sclose);
                const int rank = H5Sget_simple_extent_ndims(space.get());
                hsize_t dims[H5S_MAX_RANK], maxd[H5S_MAX_RANK];
                if (rank < 0 || H5Sget_simple_extent_dims(space.get(), dims, maxd) < 0)
                    throw_h5("cannot read the shape of " + what(n));
                const H5D_layout_t layout = H5Pget_layout(dcpl.get());
                H5D_fill_value_t fill = H5D_FILL_VALUE_UNDEFINED;
                if (H5Pfill_value_defined(dcpl.get(), &fill) < 0) fill = H5D_FILL_VALUE_UNDEFINED;
                H5Eclear2(H5E_DEFAULT);
                if (layout == H5D_VIRTUAL) {
                    o.kind = Kind::event;
                    o.filters = check_sources(n, rank, sources);
                } else if (rank >= 1 && layout == H5D_CHUNKED && maxd[0] == H5S_UNLIMITED) {
                    o.kind = Kind::event;  // a writer's dataset
                    o.filters = std::move(dcpl);
                } else if (rank >= 1 && layout == H5D_CONTIGUOUS && dims[0] == 0 && fill == H5D_FILL_VALUE_USER_DEFINED) {
                    o.kind = Kind::event;  // a field the join found no rows of (summaries have no fill value)
                }
                if (o.kind == Kind::event) {
                    H5Id type(h5check(H5Dget_type(obj.get()), "cannot read the type of " + what(n)), H5Tclose);
                    if (h5_has_vlen(type.get()))
                        throw_error(Errc::hdf5, what(n) + " has a variable-length type: not a per-event dataset of "
                                                          "smalldata, which flatten copies");
                    o.filtered = o.filters.valid() && H5Pget_nfilters(o.filters.get()) > 0;
                }
            } else if (t != H5I_DATATYPE) {
                continue;  // nothing else is an object HDF5 stores
            }
            objects_.push_back(std::move(o));
        }
        H5Eclear2(H5E_DEFAULT);
    }

    // The sources of virtual dataset `n` exist, are of the run, hold the rows mapped. Returns
    // the creation properties of the first one (for its filters).
    H5Id check_sources(const std::string& n, int rank, std::map<std::string, H5Id>& open) {
        H5Id first;
        for (const VirtualSource& s : virtual_sources(src_.get(), n)) {
            const std::string path = flat_source_path(in_, s.file);
            auto it = open.find(path);
            if (it == open.end()) {
                H5Id f = path == in_ ? H5Id() : h5_open_read(path);
                if (path != in_ && !f.valid()) {
                    H5Eclear2(H5E_DEFAULT);
                    throw_error(Errc::join, "part file '" + path + "', which '" + n + "' of '" + in_ + "' reads, " +
                                                (!path_exists(path)           ? "is missing"
                                                 : WriteClaim::claimed(path) ? "is being written by a running process"
                                                                             : "cannot be opened (crashed? `smalldata recover`)"));
                }
                std::uint64_t token = 0;
                if (f.valid() && has_run_ && (!h5_get_attr_u64(f.get(), attr_run, token) || token != run_))
                    throw_error(Errc::join, "part file '" + path + "', which '" + n + "' of '" + in_ +
                                                "' reads, is not of that file's run");
                H5Eclear2(H5E_DEFAULT);
                if (f.valid()) {
                    const std::string wrong = misplaced_part(f.get(), path);
                    if (!wrong.empty()) throw_error(Errc::join, wrong + ", which '" + n + "' of '" + in_ + "' reads");
                    remember_input(path);
                }
                it = open.emplace(path, std::move(f)).first;
            }
            const hid_t file = it->second.valid() ? it->second.get() : src_.get();
            const std::string dname = vds_unescape(s.dataset);
            if (!h5_object_exists(file, dname))
                throw_error(Errc::join, "'" + n + "' of '" + in_ + "' reads '" + dname + "' of '" + path +
                                            "', which has no such dataset");
            H5Id d(h5check(H5Dopen2(file, dname.c_str(), H5P_DEFAULT), "cannot open '" + dname + "' in '" + path + "'"),
                   H5Dclose);
            H5Id space(h5check(H5Dget_space(d.get()), "H5Dget_space"), H5Sclose);
            hsize_t dims[H5S_MAX_RANK];
            if (H5Sget_simple_extent_ndims(space.get()) != rank || H5Sget_simple_extent_dims(space.get(), dims, nullptr) < 0 ||
                dims[0] < s.rows)
                throw_error(Errc::join, "'" + n + "' of '" + in_ + "' reads " + std::to_string(s.rows) + " rows of '" +
                                            dname + "' in '" + path + "', which has fewer, or another shape");
            if (!first.valid())
                first = H5Id(h5check(H5Dget_create_plist(d.get()), "cannot read the layout of '" + dname + "' in '" + path + "'"),
                             H5Pclose);
        }
        return first;
    }
    // Remembers a source file's identity, to refuse an OUT that is one of them.
    void remember_input(const std::string& path) {
        struct stat s;
        if (::stat(path.c_str(), &s) == 0) inputs_.emplace_back(s.st_dev, s.st_ino);
    }

    // OUT must not be IN or a file IN reads (the copy would replace what it copies).
    void check_out() {
        remember_input(in_);
        struct stat s;
        if (::stat(out_.c_str(), &s) != 0) return;
        if (S_ISDIR(s.st_mode)) throw_error(Errc::hdf5, "cannot flatten '" + in_ + "' into '" + out_ + "': it is a directory");
        for (const auto& id : inputs_)
            if (id.first == s.st_dev && id.second == s.st_ino)
                throw_error(Errc::usage, "cannot flatten '" + in_ + "' into '" + out_ + "': that is " +
                                             (id == inputs_.back() ? "the input file itself" : "a part file the input reads"));
        const std::string bad = final_in_the_way(out_);
        if (!bad.empty()) throw_error(Errc::usage, "cannot flatten '" + in_ + "' into '" + out_ + "': " + bad);
    }

    std::string temp_name() const {
        std::random_device rd;
        std::uint64_t r = (std::uint64_t(rd()) << 32) ^ rd();
        r ^= static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        r ^= static_cast<std::uint64_t>(::getpid()) << 20;
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r));
        return out_ + "." + hex + ".tmp";
    }

    void write(FlattenStats& st) {
        // Compressed chunks vary in size: no 64 KiB alignment then (h5_create_file).
        bool compressed = !spec_.source_filters && spec_.compression.kind != Compression::Kind::none;
        for (const Object& o : objects_) compressed = compressed || (spec_.source_filters && o.filtered);
        dst_ = h5_create_file(tmp_, !compressed);
        spare_.hold(tmp_, spare_space_bytes + objects_.size() * spare_space_per_field);
        if (spec_.preallocate) reserve_.open(dst_.get(), tmp_);
        {
            H5Id from(h5check(H5Oopen(src_.get(), "/", H5P_DEFAULT), "cannot open the root group of '" + in_ + "'"), H5Oclose);
            H5Id to(h5check(H5Oopen(dst_.get(), "/", H5P_DEFAULT), "cannot open the root group of '" + tmp_ + "'"), H5Oclose);
            copy_attributes(from.get(), to.get(), true, "the root group of '" + in_ + "'");
            if (has_run_) h5_set_attr_u64(to.get(), attr_flat_run, run_);
        }
        for (const Object& o : objects_) {
            try {
                if (o.kind == Kind::group) {
                    H5Id from(h5check(H5Oopen(src_.get(), o.name.c_str(), H5P_DEFAULT), "cannot open the group"), H5Oclose);
                    H5Id to(h5check(H5Gcreate2(dst_.get(), o.name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                                    "cannot create the group in '" + tmp_ + "'"),
                            H5Gclose);
                    copy_attributes(from.get(), to.get(), false, "group '" + o.name + "'");
                } else if (o.kind == Kind::event) {
                    flatten_dataset(o, st);
                    if (++st.datasets == 1 && flatten_hook) flatten_hook(0);
                } else {
                    h5check_herr(H5Ocopy(src_.get(), o.name.c_str(), dst_.get(), o.name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                                 "cannot copy it into '" + tmp_ + "'");
                    ++st.copied;
                }
            } catch (const Error& e) {
                std::string m = e.what();
                const std::string prefix = who() + ": ";
                if (m.compare(0, prefix.size(), prefix) == 0) m.erase(0, prefix.size());
                throw_error(e.code(), "cannot flatten '" + in_ + "' into '" + out_ + "': " +
                                          (o.kind == Kind::group ? "group '" : "dataset '") + o.name + "': " + m,
                            e.library_code());
            }
        }
        spare_.release();  // room for the metadata the close writes
        if (dst_.close() < 0) throw_h5("cannot flatten '" + in_ + "' into '" + out_ + "': closing '" + tmp_ + "'");
        reserve_.trim();
        DirLock dir;
        dir.take_unclaimed(out_, Errc::usage, "cannot replace '" + out_ + "'");
        if (std::rename(tmp_.c_str(), out_.c_str()) != 0) {
            const int err = errno;
            throw_error(Errc::hdf5, "cannot rename '" + tmp_ + "' to '" + out_ + "': " + std::strerror(err), err);
        }
    }

    // One per-event dataset: created chunked, its data copied in blocks of whole chunks.
    void flatten_dataset(const Object& o, FlattenStats& st) {
        H5Id dapl_in(h5check(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate"), H5Pclose);
        if (!o.filtered)  // whole chunks go straight into the block (a virtual dataset passes it on)
            h5check_herr(H5Pset_chunk_cache(dapl_in.get(), 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT), "H5Pset_chunk_cache");
        H5Id src(h5check(H5Dopen2(src_.get(), o.name.c_str(), dapl_in.get()), "cannot open it"), H5Dclose);
        H5Id type(h5check(H5Dget_type(src.get()), "cannot read its type"), H5Tclose);
        H5Id sspace(h5check(H5Dget_space(src.get()), "cannot read its shape"), H5Sclose);
        H5Id sdcpl(h5check(H5Dget_create_plist(src.get()), "cannot read its layout"), H5Pclose);
        const int rank = H5Sget_simple_extent_ndims(sspace.get());
        hsize_t dims[H5S_MAX_RANK], maxd[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
        if (rank < 1 || H5Sget_simple_extent_dims(sspace.get(), dims, nullptr) < 0) throw_h5("cannot read its shape");
        std::uint64_t row_bytes = H5Tget_size(type.get());
        for (int i = 1; i < rank; ++i) row_bytes *= dims[i];
        const std::uint64_t rows = dims[0];
        const std::uint64_t chunk_rows = flat_chunk_rows(rows, row_bytes, spec_.chunk_bytes);
        maxd[0] = H5S_UNLIMITED;
        chunk[0] = static_cast<hsize_t>(chunk_rows);
        for (int i = 1; i < rank; ++i) {
            maxd[i] = dims[i];
            chunk[i] = std::max<hsize_t>(1, dims[i]);
        }
        H5Id dcpl(h5check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
        h5check_herr(H5Pset_chunk(dcpl.get(), rank, chunk), "H5Pset_chunk");
        if (!spec_.source_filters)
            h5_set_compression(dcpl.get(), spec_.compression);
        else if (o.filters.valid())
            copy_filters(o.filters.get(), dcpl.get(), what(o.name));
        H5D_fill_value_t fill = H5D_FILL_VALUE_UNDEFINED;
        if (H5Pfill_value_defined(sdcpl.get(), &fill) >= 0 && fill == H5D_FILL_VALUE_USER_DEFINED) {
            std::vector<unsigned char> value(H5Tget_size(type.get()));
            h5check_herr(H5Pget_fill_value(sdcpl.get(), type.get(), value.data()), "cannot read its fill value");
            h5check_herr(H5Pset_fill_value(dcpl.get(), type.get(), value.data()), "H5Pset_fill_value");
        }
        H5Eclear2(H5E_DEFAULT);
        const bool filtered = H5Pget_nfilters(dcpl.get()) > 0;
        H5Id dapl(h5check(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate"), H5Pclose);
        h5check_herr(H5Pset_chunk_cache(dapl.get(), 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT), "H5Pset_chunk_cache");
        H5Id dspace(h5check(H5Screate_simple(rank, dims, maxd), "H5Screate_simple"), H5Sclose);
        H5Id dst(h5check(H5Dcreate2(dst_.get(), o.name.c_str(), type.get(), dspace.get(), H5P_DEFAULT, dcpl.get(), dapl.get()),
                         "cannot create it in '" + tmp_ + "'"),
                 H5Dclose);
        copy_attributes(src.get(), dst.get(), false, what(o.name));
        if (rows == 0 || row_bytes == 0) return;

        // Blocks of whole chunks, at least one chunk, at most the dataset.
        const std::uint64_t chunk_bytes = chunk_rows * row_bytes;
        const std::uint64_t block_rows =
            std::min<std::uint64_t>(rows, std::max<std::uint64_t>(1, spec_.block_bytes / chunk_bytes) * chunk_rows);
        const std::size_t need = static_cast<std::size_t>(block_rows * row_bytes);
        if (block_.size() < need) {
            block_.clear();
            block_.shrink_to_fit();
            block_.resize(need);
        }
        const double t0 = now_seconds();
        hsize_t start[H5S_MAX_RANK] = {}, count[H5S_MAX_RANK];
        for (int i = 1; i < rank; ++i) count[i] = dims[i];
        for (std::uint64_t at = 0; at < rows; at += block_rows) {
            const std::uint64_t n = std::min(block_rows, rows - at);
            start[0] = static_cast<hsize_t>(at);
            count[0] = static_cast<hsize_t>(n);
            const std::string range = "rows " + std::to_string(at) + " to " + std::to_string(at + n - 1);
            H5Id mem(h5check(H5Screate_simple(rank, count, nullptr), "H5Screate_simple"), H5Sclose);
            h5check_herr(H5Sselect_hyperslab(sspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), "H5Sselect_hyperslab");
            h5check_herr(H5Dread(src.get(), type.get(), mem.get(), sspace.get(), H5P_DEFAULT, block_.data()),
                         "cannot read " + range);
            std::uint64_t done = 0;
#if H5_VERSION_GE(1, 10, 3)
            if (!filtered) {  // whole chunks raw: no selection, no copy
                for (; done + chunk_rows <= n; done += chunk_rows) {
                    hsize_t offset[H5S_MAX_RANK] = {};
                    offset[0] = static_cast<hsize_t>(at + done);
                    if (H5Dwrite_chunk(dst.get(), H5P_DEFAULT, 0, offset, static_cast<std::size_t>(chunk_bytes),
                                       block_.data() + done * row_bytes) < 0)
                        throw_h5("cannot write " + range + " into '" + tmp_ + "'");
                    reserve_.wrote(dst_.get(), static_cast<std::size_t>(chunk_bytes));
                }
            }
#endif
            if (done < n) {  // through the filters, or the dataset's last, partial chunk
                start[0] = static_cast<hsize_t>(at + done);
                count[0] = static_cast<hsize_t>(n - done);
                H5Id part(h5check(H5Screate_simple(rank, count, nullptr), "H5Screate_simple"), H5Sclose);
                H5Id fspace(h5check(H5Dget_space(dst.get()), "H5Dget_space"), H5Sclose);
                h5check_herr(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), "H5Sselect_hyperslab");
                h5check_herr(H5Dwrite(dst.get(), type.get(), part.get(), fspace.get(), H5P_DEFAULT, block_.data() + done * row_bytes),
                             "cannot write " + range + " into '" + tmp_ + "'");
                reserve_.wrote(dst_.get(), static_cast<std::size_t>((n - done) * row_bytes));
            }
        }
        st.copy_seconds += now_seconds() - t0;
        st.bytes += rows * row_bytes;
    }

    std::string in_, out_, tmp_;
    FlattenSpec spec_;
    H5Id src_, dst_;
    bool has_run_ = false;
    std::uint64_t run_ = 0;
    std::vector<Object> objects_;
    std::vector<std::pair<dev_t, ino_t>> inputs_;  // the sources' identities, then IN's (last)
    std::vector<unsigned char> block_;
    SpareSpace spare_;
    FileReserve reserve_;
};

void flatten_file(const std::string& in, const std::string& out, const FlattenSpec& spec, FlattenStats* stats) {
    FlattenStats st;
    const double t0 = now_seconds();
    Flattener(in, out, spec).run(st);
    st.seconds = now_seconds() - t0;
    if (stats) *stats = st;
}

// ============================================================================ [>>impl-order]
// 19. Order: Options::time_order at done(): once every part file is closed, the events
//     are sorted over the servers, and each server writes one contiguous time range.
//     The common cases need none of it: each server merges its streams as they arrive
//     (StreamMerge, section 14), and with several servers each writes the cells of the
//     time grid it owns (routed streams, section 15), which the join maps in turn
//     (Impl::cell_join, decided in order_parts). What follows runs when events did not
//     arrive so (a merge that gave up its hold, a client that gave routing up, ...).
//
//     Key of an event: (timestamp, client index, row in its part). A client's timestamps
//     increase (event() refuses a smaller one), so a client's events are in order in its
//     part, and no two events have the same key. The servers, over servers_comm:
//       1. each server reads its part's timestamps and sorts its keys: each client's are
//          in order already, so they are merged client by client (sort_part_keys; a
//          part the writer saw arrive in order is not touched; Writer::in_order);
//       2. samples of every sorted part, evenly spaced and weighted by the part's events,
//          give the splitters: server t's range is [splitter t-1, splitter t). Server 0
//          computes them from every server's samples and sends them to all (it holds at
//          most an eighth of cache_memory of samples: order_coarsen);
//       3. MPI_Ialltoallv sends each server the keys of its range from every part; merged,
//          they are its output: (part, row) for each of its events, in order;
//       4. each server writes its range into <part>.ordered with a Writer of its own (the
//          same chunking, compression and fill values as any part), taking the rows it
//          needs from every part file, a window of events at a time. An aligned field's
//          rows are read straight from their chunks in the part files (PartFile, pread;
//          chunk addresses from HDF5 1.10.5 or newer), each part's rows of the window in
//          clusters of nearby rows into one buffer, and gathered from it into the
//          writer's caches (Writer::put_gather, OrderCopy::plan_clusters). Compressed
//          parts, var_ and unaligned fields, and an older HDF5 read through HDF5
//          instead: the rows of a window from one part lie close together in ordinary
//          data (clients' events interleave batch by batch), so they are read in spans
//          and copied out of them.
//          Every HDF5 call of the copy holds the ordering writer's HDF5 lock (its write
//          thread, with compression, calls HDF5 meanwhile).
//     A run already in order (every part in order, the parts' time ranges in server
//     order, from what each writer saw: Writer::in_order, order_ends) is neither read nor
//     rewritten: one server, whose clients' streams it merges as they arrive (StreamMerge,
//     section 14), or one client per server giving increasing timestamps, ... Nor is a
//     routed run whose parts are each in order and hold only cells their server owns
//     (Writer::cells_owned): the join maps the cells in turn.
//     Rows of a field: an aligned field's is its event's row. A var_ field's rows are
//     found from its group's lengths in the part (a sparse index of their sums, then the
//     lengths near the window), an unaligned_ field's from the bitmap of the events that
//     gave it (WField::given, which the servers exchange).
//     The switch: once every .ordered file is complete (agreed by all ranks) each server
//     removes its part and renames its .ordered file to the part's name, then the join
//     runs as always. A kill before the switch leaves the old parts whole: `smalldata
//     recover` removes the .ordered files. A kill during it leaves every remaining
//     .ordered file complete: recover renames them (a part with the attribute
//     smalldata_time_order, or a part missing beside its .ordered file, says the switch
//     had begun).
//     Failure: an error of the ordering on any server (a full disk, ...) leaves every part
//     as it was; the join builds the final file from them, in arrival order, and done()
//     throws that error on every rank.
//     Memory: the part's writer first frees its caches. Then 16 bytes per event of the
//     server's part (keys; 16 more while its clients' keys are merged, if both fit in
//     cache_memory; else they are sorted in place), 16 more per event of its range while
//     they travel, then 8 per event of its range (one server: its keys are its output, no
//     exchange); the window's buffers (at most 1/8 of cache_memory, 32 MiB), with
//     compression as much again for the compressed parts' chunk caches (one chunk per
//     field and part while they fit: OrderCopy::dset), and the ordering Writer's caches
//     take what is left of cache_memory, and never less than a quarter of it.
//     Rounds: keys that would not fit so (order_rounds) are sorted a slice at a time. The
//     splitters cut the keys into servers x R buckets, from samples taken in one pass over
//     the parts (every k-th event of each client: in order on its own), and server t's
//     range is buckets tR to tR + R - 1. Round r: each server scans its part's timestamps
//     again, keeps the keys of buckets tR + r (every t), and steps 1 (sort), 3 and 4 run
//     on them; each server appends its bucket to its one ordering Writer, so its .ordered
//     file is still one contiguous time range. A round's keys take at most half of
//     cache_memory, the ordering Writer's caches and the window the other half. That
//     holds for the range side by the splitters, but a part whose events cluster in time
//     (clients given contiguous blocks of the run) can have up to S buckets' worth of its
//     keys in one round: so each server counts its part's keys per bucket (one more pass),
//     the servers share the counts (order_round_peak), and where a round would exceed its
//     half, more rounds are taken (order_rounds_for_peak), from samples taken anew and
//     counted again (at most three times).
//     Serial mode is in order already: one stream of increasing timestamps.

inline std::string ordered_path(const std::string& part) { return part + ".ordered"; }

struct OrderKey {
    std::int64_t ts;
    std::uint64_t tie;  // client << 40 | row in the part
};
inline bool operator<(const OrderKey& a, const OrderKey& b) noexcept {
    return a.ts != b.ts ? a.ts < b.ts : a.tie < b.tie;
}
inline constexpr std::uint64_t order_row_mask = (std::uint64_t(1) << 40) - 1;

// The keys of a part in arrival order, sorted: each client's keys are in order (its
// timestamps increase, its rows too), so they are merged, client by client, through a
// second array, when both arrays fit in `memory` bytes (the ordering's share of
// cache_memory). Otherwise, or with more than 64 clients, they are sorted in place.
inline void sort_part_keys(std::vector<OrderKey>& keys, const std::vector<std::pair<std::uint32_t, std::uint64_t>>& runs,
                           std::size_t memory) {
    std::map<std::uint32_t, std::vector<std::pair<std::uint64_t, std::uint64_t>>> by_client;  // runs: [begin, end)
    std::uint64_t at = 0;
    for (const auto& r : runs) {
        auto& v = by_client[r.first];
        if (!v.empty() && v.back().second == at)
            v.back().second += r.second;
        else
            v.emplace_back(at, at + r.second);
        at += r.second;
    }
    if (at != keys.size() || by_client.size() > 64 || keys.size() > memory / (2 * sizeof(OrderKey))) {
        std::sort(keys.begin(), keys.end());
        return;
    }
    if (by_client.size() < 2) return;  // one client: in order already
    struct Stream {
        const std::vector<std::pair<std::uint64_t, std::uint64_t>>* runs;
        std::size_t run;
        std::uint64_t next;
    };
    std::vector<Stream> streams;
    for (const auto& kv : by_client) streams.push_back({&kv.second, 0, kv.second.front().first});
    std::vector<OrderKey> out;
    resize_huge(out, keys.size());
    // The stream with the smallest next key, by a linear scan (few clients per server).
    auto next = [&](std::size_t i) -> const OrderKey& { return keys[static_cast<std::size_t>(streams[i].next)]; };
    for (OrderKey& o : out) {
        std::size_t best = SIZE_MAX;
        for (std::size_t i = 0; i < streams.size(); ++i)
            if (streams[i].run < streams[i].runs->size() && (best == SIZE_MAX || next(i) < next(best))) best = i;
        Stream& b = streams[best];
        o = keys[static_cast<std::size_t>(b.next)];
        if (++b.next == (*b.runs)[b.run].second && ++b.run < b.runs->size()) b.next = (*b.runs)[b.run].first;
    }
    keys.swap(out);
}

// Calls f(key) for every event of a part file, in row order: its timestamps read in
// blocks, the client of each row from the writer's runs.
template <class F>
void scan_part_keys(const std::string& path, std::uint64_t events, const ClientRuns& runs, F&& f) {
    if (events == 0) return;
    H5Quiet q;
    H5Id file = h5_open_read(path);
    if (!file.valid()) throw_h5("cannot open '" + path + "' to sort its events");
    H5Id d(H5Dopen2(file.get(), "timestamp", H5P_DEFAULT), H5Dclose);
    if (!d.valid()) throw_h5("cannot open the timestamps of '" + path + "'");
    ClientRuns::Cursor client(runs);
    const std::uint64_t block = std::uint64_t(1) << 16;  // 512 KiB of timestamps at a time
    std::vector<std::int64_t> ts;
    for (std::uint64_t at = 0; at < events; at += block) {
        const std::uint64_t n = std::min(block, events - at);
        ts.resize(static_cast<std::size_t>(n));
        H5Id fspace(h5check(H5Dget_space(d.get()), "H5Dget_space"), H5Sclose);
        h5_select_rows(fspace.get(), at, n, Shape{});
        H5Id mspace = h5_space(static_cast<long long>(n), Shape{});
        if (H5Dread(d.get(), H5T_NATIVE_INT64, mspace.get(), fspace.get(), H5P_DEFAULT, ts.data()) < 0)
            throw_h5("cannot read the timestamps of '" + path + "'");
        for (std::uint64_t i = 0; i < n; ++i)
            f(OrderKey{ts[static_cast<std::size_t>(i)], client.next() << 40 | (at + i)});
    }
}

// The keys of one part file, sorted. `sorted`: the writer saw them arrive in order.
inline std::vector<OrderKey> part_keys(const std::string& path, std::uint64_t events, const ClientRuns& runs,
                                       bool sorted, std::size_t memory) {
    std::vector<OrderKey> keys;
    reserve_huge(keys, static_cast<std::size_t>(events));
    scan_part_keys(path, events, runs, [&](const OrderKey& k) { keys.push_back(k); });
    if (sorted) return keys;
    if (runs.dense())  // runs too short to merge by
        std::sort(keys.begin(), keys.end());
    else
        sort_part_keys(keys, runs.runs(), memory);
    return keys;
}

// The bytes of the copy's window buffers (OrderCopy's budget).
inline std::size_t order_window_bytes(std::size_t cache_memory) {
    return std::min<std::size_t>(cache_memory / 8, std::size_t(32) << 20);
}

// The bytes for the chunk caches of the parts' datasets while the copy reads them through
// HDF5 (OrderCopy::dset): only compressed parts have them.
inline std::size_t order_chunk_cache_bytes(const Options& o) {
    return o.compression.kind == Compression::Kind::none ? 0 : order_window_bytes(o.cache_memory);
}

// How many rounds the ordering takes at first, the same on every server (the counts may
// ask for more: order_rounds_for_peak). One when each server's keys fit beside the copy's
// window in cache_memory: 16 bytes per event of its part and 24 per event of its range
// (while they travel, and its output), with a quarter's margin for the splitters. Else
// as many as bring a round's keys within half of cache_memory with a quarter's margin on
// both (a round's buckets are within a quarter of a bucket each, and so is a part's share
// of them), but no round under 256 events.
inline std::uint64_t order_rounds(std::uint64_t total, std::uint64_t largest_part, std::size_t servers,
                                  std::size_t cache_memory) {
    const std::uint64_t range = total / std::max<std::size_t>(servers, 1) + 1;
    const std::uint64_t need = 16 * largest_part + 24 * (range + range / 4);
    const std::uint64_t window = order_window_bytes(cache_memory);
    if (need + window <= cache_memory) return 1;
    const std::uint64_t half = std::max<std::uint64_t>(1, cache_memory / 2);
    const std::uint64_t need_rounds = need + 4 * largest_part;  // 20 per event of the part
    return std::max<std::uint64_t>(2, std::min((need_rounds + half - 1) / half, total / 256));
}

// A sample of the keys (rounds: every k-th event of each client; weight k).
struct OrderSample {
    OrderKey key;
    double weight;
};

// The bucket of `key` among B: bucket j is [split[j], split[j + 1]) (split[0] and split[B]
// unused: the first and last buckets are open).
inline std::size_t order_bucket(const std::vector<OrderKey>& split, std::size_t B, const OrderKey& key) {
    return static_cast<std::size_t>(std::upper_bound(split.begin() + 1, split.begin() + static_cast<std::ptrdiff_t>(B), key) -
                                    split.begin()) - 1;
}

// The splitters of B buckets of about equal events, from every server's samples (sorted
// by key): B + 1 keys, the ends unused.
inline std::vector<OrderKey> order_splitters(const std::vector<OrderSample>& every, std::size_t B) {
    std::vector<OrderKey> split(B + 1, OrderKey{});
    double sum = 0;
    for (const OrderSample& s : every) sum += s.weight;
    double cum = 0;
    std::size_t i = 0;
    for (std::size_t j = 1; j < B; ++j) {
        const double target = sum * static_cast<double>(j) / static_cast<double>(B);
        while (i < every.size() && cum + every[i].weight / 2 < target) cum += every[i++].weight;
        split[j] = i < every.size() ? every[i].key : OrderKey{INT64_MAX, UINT64_MAX};
    }
    return split;
}

// At most about `m` samples (sorted by key) standing for the same events: consecutive
// samples merged into one at the last key of each run whose weights add up to
// sum / m (the total weight is kept). A server sends its samples so coarsened to the one
// that plans, so that the planner holds a bounded number whatever the clients, servers
// and rounds; each merge moves the estimate of any key's rank by less than one run's
// weight, which the counted rounds then absorb (order_round_peak).
inline void order_coarsen(std::vector<OrderSample>& samples, std::size_t m) {
    if (samples.size() <= m || m == 0) return;
    double sum = 0;
    for (const OrderSample& s : samples) sum += s.weight;
    const double g = sum / static_cast<double>(m);
    std::size_t out = 0;
    double acc = 0;
    for (std::size_t i = 0; i < samples.size(); ++i) {
        acc += samples[i].weight;
        if (acc >= g || i + 1 == samples.size()) {
            samples[out++] = {samples[i].key, acc};
            acc = 0;
        }
    }
    samples.resize(out);
    samples.shrink_to_fit();
}

// What the largest round holds on any server, in bytes, from the keys every part has in
// every bucket (counts[p * B + j], B = S x R; counted, not estimated): round r holds on
// server t 16 bytes per key of part t in buckets u R + r (one per server u) and 24 per key
// of its own bucket t R + r (received, then its output). The splitters bound the buckets,
// not a part's share of them: a part whose events cluster in time (clients given
// contiguous blocks of a run) can have up to S buckets' worth in one round.
inline std::uint64_t order_round_peak(const std::vector<std::uint64_t>& counts, std::size_t S, std::uint64_t R) {
    const std::size_t B = S * static_cast<std::size_t>(R);
    std::vector<std::uint64_t> bucket(B, 0);
    for (std::size_t p = 0; p < S; ++p)
        for (std::size_t j = 0; j < B; ++j) bucket[j] += counts[p * B + j];
    std::uint64_t peak = 0;
    for (std::size_t t = 0; t < S; ++t)
        for (std::size_t r = 0; r < R; ++r) {
            std::uint64_t part = 0;
            for (std::size_t u = 0; u < S; ++u) part += counts[t * B + u * R + r];
            peak = std::max(peak, 16 * part + 24 * bucket[t * R + r]);
        }
    return peak;
}

// The rounds to take once the keys per bucket are counted: R when its largest round fits
// in `budget` (half of cache_memory); else enough for that round to take 80 % of it (a
// round shrinks with the rounds: its buckets hold at most total / R keys), but no round
// under 256 events.
inline std::uint64_t order_rounds_for_peak(std::uint64_t R, std::uint64_t peak_bytes, std::size_t budget, std::uint64_t total) {
    if (R <= 1 || peak_bytes <= budget) return R;
    const double want = std::ceil(static_cast<double>(R) * static_cast<double>(peak_bytes) /
                                  (0.8 * static_cast<double>(std::max<std::size_t>(budget, 1))));
    const std::uint64_t cap = std::max(R, total / 256);
    return want >= static_cast<double>(cap) ? cap : std::max(R, static_cast<std::uint64_t>(want));
}

// A closed part file, read with pread(): the ordering reads a field's rows of a window
// straight from their chunks (no HDF5 call, no chunk cache) into one buffer, from which
// they go to the writer's caches. Not mapped: every page of a mapping is faulted in (slow
// on virtual machines) and must be given back (a TLB flush on every core), and a read
// error there is a SIGBUS; here it is an Error naming the file. The descriptor is the one
// HDF5 opened the part with (OrderCopy::direct: no second descriptor per part, with
// hundreds of servers), borrowed: its owner closes it. Nothing writes a part while the
// ordering reads it: every part is closed before, and removed only after.
class PartFile {
public:
    PartFile(const std::string& path, int fd) : path_(path), fd_(fd) {
        struct stat st {};
        if (fd_ >= 0 && ::fstat(fd_, &st) == 0) size_ = static_cast<std::uint64_t>(st.st_size);
    }
    bool ok() const noexcept { return fd_ >= 0 && size_ > 0; }
    std::uint64_t size() const noexcept { return size_; }
    // Bytes [at, at + n) into `to`; an error, or a file cut short since, throws.
    void read(std::uint64_t at, std::size_t n, unsigned char* to) const {
        while (n > 0) {
            const ssize_t got = ::pread(fd_, to, n, static_cast<off_t>(at));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {  // an I/O error (errno, as library_code), or the file cut short
                const int err = got < 0 ? errno : 0;
                const std::string why =
                    err != 0 ? std::strerror(err) : "the file ends before it (cut short since it was written?)";
                throw_error(Errc::hdf5,
                            "cannot read part file '" + path_ + "' at byte " + std::to_string(at) + ": " + why, err);
            }
            to += got;
            at += static_cast<std::uint64_t>(got);
            n -= static_cast<std::size_t>(got);
        }
    }

private:
    std::string path_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

// One field of the ordered file: the union of the parts' descriptions.
struct OrderField {
    FieldMeta meta;
    std::vector<std::uint64_t> rows;     // per part: its rows there (0: absent)
    std::vector<bool> present;
    std::size_t len = SIZE_MAX;          // a var_ field: index of its group's length field
    std::size_t bits = SIZE_MAX;         // an unaligned field: index of its bitmaps
    WField* out = nullptr;               // in the ordered writer
};

// Writes events, given in order as (part << 40 | row) locations, from the closed part
// files into a Writer: window by window, every field.
class OrderCopy {
public:
    // descs: each part's Writer::describe(); bitmaps[b][part]: unaligned field b's
    // WField::given of that part (words); budget: bytes for this copy's buffers.
    // chunk_cache: bytes for the chunk caches of compressed parts' datasets (dset()).
    OrderCopy(const std::vector<std::string>& paths, const std::vector<std::vector<unsigned char>>& descs,
              std::vector<std::vector<std::vector<std::uint64_t>>> bitmaps, std::size_t budget, std::size_t chunk_cache)
        : paths_(paths), bitmaps_(std::move(bitmaps)), budget_(budget), cache_left_(chunk_cache) {
        const std::size_t P = paths.size();
        events_.assign(P, 0);
        const std::string src = "a part's description";
        for (std::size_t k = 0; k < P; ++k) {
            Reader r{descs[k].data(), descs[k].data() + descs[k].size(), &src};
            events_[k] = r.get<std::uint64_t>();
            const auto nf = r.get<std::uint32_t>();
            for (std::uint32_t i = 0; i < nf; ++i) {
                const auto dt = static_cast<DType>(r.get<std::uint8_t>());
                Shape sh;
                sh.rank = r.get<std::uint8_t>();
                (void)r.get<std::uint8_t>();  // aligned: from the name
                const auto len = r.get<std::uint16_t>();
                const auto rows = r.get<std::uint64_t>();
                if (sh.rank > max_rank) throw_error(Errc::protocol, "malformed " + src);
                for (int d = 0; d < sh.rank; ++d) sh.dims[static_cast<std::size_t>(d)] = r.get<std::uint64_t>();
                const std::string name(r.bytes(len));
                auto it = index_.find(name);
                if (it == index_.end()) {
                    OrderField f;
                    if (name == "timestamp") {  // the library's own (make_meta refuses the name)
                        f.meta.name = name;
                        f.meta.dtype = DType::i64;
                        f.meta.bytes = 8;
                    } else {
                        f.meta = make_meta(name, dt, sh);
                    }
                    f.rows.assign(P, 0);
                    f.present.assign(P, false);
                    it = index_.emplace(name, fields_.size()).first;
                    fields_.push_back(std::move(f));
                }
                OrderField& f = fields_[it->second];
                if (f.meta.dtype != dt || f.meta.shape != sh)
                    throw_error(Errc::join, "field '" + name + "' has different types or shapes in the parts");
                f.rows[k] = rows;
                f.present[k] = true;
            }
        }
        std::size_t b = 0;
        for (const auto& kv : index_) {  // name order: the same on every server
            OrderField& f = fields_[kv.second];
            if (f.meta.var) f.len = index_.at(length_name(f.meta.name));
            if (!f.meta.aligned && !f.meta.var) f.bits = b++;
        }
        files_.resize(P);
        dsets_.resize(P);
        for (auto& d : dsets_) d.resize(fields_.size());
        chunks_.assign(P, std::vector<Chunks>(fields_.size()));
        base_.assign(P, 0);
        parts_.resize(P);
    }
    // The part files' handles are closed under the writer's HDF5 lock (its write thread
    // may still run when a copy fails).
    ~OrderCopy() {
        std::unique_lock<std::mutex> lk = lock();
        dsets_.clear();
        files_.clear();
    }
    OrderCopy(const OrderCopy&) = delete;
    OrderCopy& operator=(const OrderCopy&) = delete;
    // Unaligned fields, in name order (their bitmaps come in this order).
    static std::vector<std::string> unaligned_names(const std::vector<std::vector<unsigned char>>& descs);
    std::uint64_t events(std::size_t part) const { return events_[part]; }
    // The bytes of chunk cache HDF5 holds for the part datasets opened so far, as HDF5
    // reports them (dset()).
    std::size_t chunk_cache_bytes() {
        std::unique_lock<std::mutex> lk = lock();
        std::size_t sum = 0;
        for (const auto& part : dsets_)
            for (const H5Id& d : part) {
                if (!d.valid()) continue;
                H5Id dapl(h5check(H5Dget_access_plist(d.get()), "H5Dget_access_plist"), H5Pclose);
                std::size_t slots = 0, bytes = 0;
                double w0 = 0;
                h5check_herr(H5Pget_chunk_cache(dapl.get(), &slots, &bytes, &w0), "H5Pget_chunk_cache");
                sum += bytes;
            }
        return sum;
    }

    // Defines every field in `w`, then copies n events, event i from loc(i): its
    // (part << 40 | row).
    template <class Loc> void copy(Writer& w, Loc loc, std::uint64_t n);

private:
    struct Item {  // one piece of a part's rows, and where it goes in the window's buffer
        std::uint64_t row;
        std::uint64_t rows;
        std::uint64_t dst;
        bool operator<(const Item& o) const noexcept { return row < o.row; }
    };
    // Every HDF5 call here holds the ordering writer's HDF5 lock: its write thread (with
    // compression) calls HDF5 meanwhile, and HDF5 need not be thread-safe.
    std::unique_lock<std::mutex> lock() {
        return writer_ ? writer_->hdf5_lock() : std::unique_lock<std::mutex>();
    }
    // A field's dataset in a part, under lock(). HDF5's chunk cache (1 MiB per dataset by
    // default, P parts x F fields of them) would lie outside cache_memory, so a dataset has
    // none (HDF5 then reads a selection of an uncompressed chunk straight from the file),
    // unless it is compressed: then it gets room for one chunk while the copy's allowance
    // lasts (cache_left_), so that a chunk is decompressed once and not again for each
    // window that reads from it. Past the allowance it is decompressed again each time.
    hid_t dset(std::size_t part, std::size_t field) {
        H5Id& d = dsets_[part][field];
        if (d.valid()) return d.get();
        if (!files_[part].valid()) {
            files_[part] = h5_open_read(paths_[part]);
            if (!files_[part].valid()) throw_h5("cannot open part file '" + paths_[part] + "' to order its events");
        }
        const std::string& name = fields_[field].meta.name;
        auto open = [&](std::size_t cache) {  // HDF5's default slots (521) and w0 with a cache
            H5Id dapl(h5check(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate"), H5Pclose);
            h5check_herr(H5Pset_chunk_cache(dapl.get(), cache ? 521 : 0, cache, H5D_CHUNK_CACHE_W0_DEFAULT),
                         "H5Pset_chunk_cache");
            d = H5Id(H5Dopen2(files_[part].get(), name.c_str(), dapl.get()), H5Dclose);
            if (!d.valid()) throw_h5("cannot open '" + name + "' in '" + paths_[part] + "'");
        };
        open(0);
        H5Id dcpl(h5check(H5Dget_create_plist(d.get()), "H5Dget_create_plist"), H5Pclose);
        if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED && H5Pget_nfilters(dcpl.get()) > 0) {
            hsize_t cd[max_rank + 1] = {};
            const int rank = H5Pget_chunk(dcpl.get(), max_rank + 1, cd);
            H5Id type(h5check(H5Dget_type(d.get()), "H5Dget_type"), H5Tclose);
            std::uint64_t bytes = H5Tget_size(type.get());
            for (int i = 0; i < rank; ++i) bytes *= cd[i];
            if (rank > 0 && bytes > 0 && bytes <= cache_left_) {
                cache_left_ -= static_cast<std::size_t>(bytes);
                d = H5Id();
                open(static_cast<std::size_t>(bytes));
            }
        }
        return d.get();
    }
    // Rows [a, a + n) of a field of a part, into `to`.
    void read(std::size_t part, std::size_t field, std::uint64_t a, std::uint64_t n, unsigned char* to) {
        const OrderField& f = fields_[field];
        std::unique_lock<std::mutex> lk = lock();
        const hid_t d = dset(part, field);
        H5Id fspace(h5check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
        h5_select_rows(fspace.get(), a, n, f.meta.shape);
        H5Id mspace = h5_space(static_cast<long long>(n), f.meta.shape);
        H5Id mtype = h5_type(f.meta.dtype, false);
        if (H5Dread(d, mtype.get(), mspace.get(), fspace.get(), H5P_DEFAULT, to) < 0)
            throw_h5("cannot read '" + f.meta.name + "' of '" + paths_[part] + "'");
    }
    // Copies the items (sorted by row) of one part from field `field` into out (rows of
    // rb bytes at item.dst): rows close together are read as one span.
    void gather(std::size_t part, std::size_t field, const std::vector<Item>& items, unsigned char* out) {
        const std::size_t rb = fields_[field].meta.bytes;
        if (rb == 0) return;
        const std::uint64_t span_max = std::max<std::uint64_t>(1, span_bytes_ / rb);
        const std::uint64_t gap_max = std::max<std::uint64_t>(1, (std::uint64_t(64) << 10) / rb);
        std::size_t i = 0;
        while (i < items.size()) {
            const std::uint64_t a = items[i].row;
            std::uint64_t b = a + items[i].rows;
            bool straight = true;  // the span's rows go to consecutive rows of out
            std::size_t j = i + 1;
            for (; j < items.size(); ++j) {
                const Item& it = items[j];
                if (it.row + it.rows - a > span_max || it.row > b + gap_max || it.row < b) break;
                straight = straight && it.row == b && it.dst == items[j - 1].dst + items[j - 1].rows;
                b = it.row + it.rows;
            }
            if (b - a > span_max) {  // one item larger than the span buffer: read in place
                read(part, field, a, b - a, out + items[i].dst * rb);
            } else if (straight) {
                read(part, field, a, b - a, out + items[i].dst * rb);
            } else {
                unsigned char* span = span_.get(static_cast<std::size_t>((b - a) * rb));
                read(part, field, a, b - a, span);
                for (std::size_t k = i; k < j; ++k)
                    std::memcpy(out + items[k].dst * rb, span + (items[k].row - a) * rb,
                                static_cast<std::size_t>(items[k].rows * rb));
            }
            i = j;
        }
    }
    // A part's window rows that lie within one span's reach, most of it used (the usual
    // case): read as one span and copied out without sorting them.
    bool dense(const std::vector<Item>& items) const {
        if (items.empty()) return false;
        std::uint64_t lo = items[0].row, hi = lo;
        for (const Item& it : items) {
            lo = std::min(lo, it.row);
            hi = std::max(hi, it.row);
        }
        return hi - lo + 1 <= 2 * items.size();
    }
    void gather_dense(std::size_t part, std::size_t field, const std::vector<Item>& items, unsigned char* out) {
        const std::size_t rb = fields_[field].meta.bytes;
        if (rb == 0) return;
        std::uint64_t lo = items[0].row, hi = lo;
        for (const Item& it : items) {
            lo = std::min(lo, it.row);
            hi = std::max(hi, it.row);
        }
        const std::uint64_t span_max = std::max<std::uint64_t>(1, span_bytes_ / rb);
        if (hi - lo + 1 > span_max) {  // more than the span buffer holds
            gather(part, field, sorted_items(items), out);
            return;
        }
        unsigned char* span = span_.get(static_cast<std::size_t>((hi - lo + 1) * rb));
        read(part, field, lo, hi - lo + 1, span);
        switch (rb) {  // fixed sizes: plain moves
        case 1: for (const Item& it : items) std::memcpy(out + it.dst, span + (it.row - lo), 1); break;
        case 2: for (const Item& it : items) std::memcpy(out + it.dst * 2, span + (it.row - lo) * 2, 2); break;
        case 4: for (const Item& it : items) std::memcpy(out + it.dst * 4, span + (it.row - lo) * 4, 4); break;
        case 8: for (const Item& it : items) std::memcpy(out + it.dst * 8, span + (it.row - lo) * 8, 8); break;
        default:
            for (const Item& it : items) std::memcpy(out + it.dst * rb, span + (it.row - lo) * rb, rb);
            break;
        }
    }
    // A part's window items sorted by row (sorted once per window, when first needed).
    const std::vector<Item>& sorted(std::size_t part, std::vector<std::vector<Item>>& by_part) {
        if (!sorted_[part]) {
            std::vector<Item>& v = by_part[part];
            if (!std::is_sorted(v.begin(), v.end())) std::sort(v.begin(), v.end());
            sorted_[part] = true;
        }
        return by_part[part];
    }
    static std::vector<Item> sorted_items(std::vector<Item> v) {
        std::sort(v.begin(), v.end());
        return v;
    }
    // The direct path: a field's dataset in a part, where its rows lie in the part file.
    // An aligned field whose dataset is chunked, unfiltered, of the memory type, one row
    // of every chunk contiguous (the writer's layout), and HDF5 1.10.5 or newer (chunk
    // addresses); anything else is read through HDF5 (read(), gather()).
    struct Chunks {
        int state = 0;                 // 0: not looked at yet; 1: direct; -1: read through HDF5
        std::uint64_t rows = 0;        // the dataset's extent
        std::uint64_t chunk_rows = 1;  // a power of two: 1 << shift
        unsigned shift = 0;
        std::vector<std::uint64_t> at;  // per chunk: 0 not looked up, chunk_none, or offset + 1
    };
    static constexpr std::uint64_t chunk_none = UINT64_MAX;  // never written: fill values
    bool direct(std::size_t part, std::size_t field) {
        Chunks& c = chunks_[part][field];
        if (c.state != 0) return c.state > 0;
        c.state = -1;
        const OrderField& f = fields_[field];
        if (f.meta.bytes == 0 || !f.meta.aligned) return false;
#if H5_VERSION_GE(1, 10, 5)
        std::unique_lock<std::mutex> lk = lock();
        H5Quiet q;
        const hid_t d = dset(part, field);
        if (!parts_[part]) {  // HDF5's descriptor of the part: the default (sec2) driver's
            int fd = -1;
            void* handle = nullptr;
            H5Id fapl(H5Fget_access_plist(files_[part].get()), H5Pclose);
            if (fapl.valid() && H5Pget_driver(fapl.get()) == H5FD_SEC2 &&
                H5Fget_vfd_handle(files_[part].get(), H5P_DEFAULT, &handle) >= 0 && handle)
                fd = *static_cast<int*>(handle);
            parts_[part] = std::make_unique<PartFile>(paths_[part], fd);
        }
        if (!parts_[part]->ok()) return false;
        H5Id dcpl(H5Dget_create_plist(d), H5Pclose);
        if (!dcpl.valid() || H5Pget_layout(dcpl.get()) != H5D_CHUNKED || H5Pget_nfilters(dcpl.get()) != 0) return false;
        const int rank = f.meta.shape.rank + 1;
        hsize_t cd[max_rank + 1] = {}, dims[max_rank + 1] = {};
        if (H5Pget_chunk(dcpl.get(), max_rank + 1, cd) != rank || cd[0] == 0 || (cd[0] & (cd[0] - 1)) != 0) return false;
        for (int i = 1; i < rank; ++i)
            if (cd[i] != f.meta.shape.dims[static_cast<std::size_t>(i - 1)]) return false;
        H5Id ftype(H5Dget_type(d), H5Tclose);
        H5Id mtype = h5_type(f.meta.dtype, false);
        if (!ftype.valid() || H5Tequal(ftype.get(), mtype.get()) <= 0) return false;
        H5Id space(H5Dget_space(d), H5Sclose);
        if (!space.valid() || H5Sget_simple_extent_dims(space.get(), dims, nullptr) != rank) return false;
        H5Id fcpl(H5Fget_create_plist(files_[part].get()), H5Pclose);
        hsize_t userblock = 0;
        if (!fcpl.valid() || H5Pget_userblock(fcpl.get(), &userblock) < 0) return false;
        c.rows = dims[0];
        c.chunk_rows = cd[0];
        while ((std::uint64_t(1) << c.shift) < c.chunk_rows) ++c.shift;
        c.at.assign(static_cast<std::size_t>((c.rows + c.chunk_rows - 1) >> c.shift), 0);
        base_[part] = userblock;  // chunk addresses count from the end of the user block
        c.state = 1;
        return true;
#else
        return false;
#endif
    }
    // The direct path's window: each part's rows of the window in clusters of nearby rows
    // (runs of rows, with gaps of less than a page between them, while they hold at most
    // twice the part's window events), laid end to end in the part's piece of one buffer;
    // slot_[i] is the row in that piece of the window's event i. The clusters are in rows:
    // the same for every field, whatever its row size.
    struct Cluster {
        std::uint64_t row, rows, at;  // rows [row, row + rows) at row `at` of the piece
    };
    void plan_clusters(std::size_t part, const std::vector<Item>& items) {  // items sorted by row
        std::vector<Cluster>& out = clusters_[part];
        out.clear();
        std::uint64_t at = 0;
        const std::uint64_t room = 2 * static_cast<std::uint64_t>(items.size());
        for (const Item& it : items) {  // a part's rows in the window are distinct
            if (!out.empty()) {
                Cluster& c = out.back();
                const std::uint64_t end = c.row + c.rows;
                if (it.row - end <= gap_rows_ && at + (it.row - end) + 1 <= room) {
                    at += it.row - end + 1;
                    c.rows = it.row + 1 - c.row;
                    slot_[it.dst] = c.at + (it.row - c.row);
                    continue;
                }
            }
            out.push_back({it.row, 1, at});
            slot_[it.dst] = at++;
        }
    }
    std::uint64_t piece_rows(std::size_t part) const {  // rows of a part's clusters
        const std::vector<Cluster>& c = clusters_[part];
        return c.empty() ? 0 : c.back().at + c.back().rows;
    }
    // n rows of the fill value `fill` (rb bytes each) at `to`.
    static void fill_rows(unsigned char* to, std::uint64_t n, const unsigned char* fill, std::size_t rb) {
        for (std::uint64_t r = 0; r < n; ++r) std::memcpy(to + r * rb, fill, rb);
    }
    // Rows [row, row + n) of a direct field of a part into `to`, chunk by chunk (chunks
    // that follow each other in the file in one read); rows the part never wrote (beyond
    // its extent, a chunk never written) take the fill value.
    void read_rows(std::size_t part, std::size_t field, std::uint64_t row, std::uint64_t n, unsigned char* to) {
        Chunks& c = chunks_[part][field];
        const std::size_t rb = fields_[field].meta.bytes;
        const unsigned char* fill = fields_[field].out->fill_row.data();
        std::uint64_t from = 0, len = 0;  // a read not made yet: file bytes [from, from + len) to `dst`
        unsigned char* dst = nullptr;
        auto flush = [&] {
            if (len > 0) parts_[part]->read(from, static_cast<std::size_t>(len), dst);
            len = 0;
        };
        const std::uint64_t end = row + n;
        while (row < end) {
            if (row >= c.rows) {
                flush();
                fill_rows(to, end - row, fill, rb);
                break;
            }
            const auto k = static_cast<std::size_t>(row >> c.shift);
            const std::uint64_t stop = std::min({end, (static_cast<std::uint64_t>(k) + 1) << c.shift, c.rows});
            if (c.at[k] == 0) c.at[k] = chunk_at(part, field, k);  // first use of the chunk
            const std::uint64_t bytes = (stop - row) * rb;
            if (c.at[k] == chunk_none) {
                flush();
                fill_rows(to, stop - row, fill, rb);
            } else {
                const std::uint64_t at = (c.at[k] - 1) + (row & (c.chunk_rows - 1)) * rb;
                if (len > 0 && from + len == at) {
                    len += bytes;
                } else {
                    flush();
                    from = at;
                    len = bytes;
                    dst = to;
                }
            }
            to += bytes;
            row = stop;
        }
        flush();
    }
    std::uint64_t chunk_at(std::size_t part, std::size_t field, std::size_t k) {
#if H5_VERSION_GE(1, 10, 5)
        const Chunks& c = chunks_[part][field];
        const OrderField& f = fields_[field];
        std::unique_lock<std::mutex> lk = lock();
        H5Quiet q;
        hsize_t offset[max_rank + 1] = {};
        offset[0] = static_cast<hsize_t>(k) << c.shift;
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        if (H5Dget_chunk_info_by_coord(dset(part, field), offset, &mask, &addr, &size) < 0)
            throw_h5("cannot locate a chunk of '" + f.meta.name + "' in '" + paths_[part] + "'");
        if (addr == HADDR_UNDEF || size == 0) return chunk_none;
        const std::uint64_t at = base_[part] + addr, n = parts_[part]->size();
        if (size != c.chunk_rows * f.meta.bytes || at > n || n - at < size)
            throw_error(Errc::hdf5, "part file '" + paths_[part] + "': chunk " + std::to_string(k) + " of '" +
                                        f.meta.name + "' lies outside the file");
        return at + 1;
#else
        (void)part, (void)field, (void)k;
        return chunk_none;
#endif
    }

    // Rows per event of a var_ group (from its length field) or an unaligned field (its
    // bitmap), for the window's events of one part: the item of each event with rows.
    void locate(std::size_t field, std::size_t part, const std::vector<Item>& events, std::vector<Item>& out);

    std::vector<std::string> paths_;
    std::vector<std::uint64_t> events_;
    std::vector<OrderField> fields_;
    std::map<std::string, std::size_t> index_;
    std::vector<std::vector<std::vector<std::uint64_t>>> bitmaps_;   // [bits][part]
    std::vector<std::vector<std::vector<std::uint64_t>>> bit_sums_;  // [bits][part]: ones before each 4096
    std::map<std::pair<std::size_t, std::size_t>, std::vector<std::uint64_t>> len_sums_;  // (len field, part)
    std::vector<H5Id> files_;
    std::vector<std::vector<H5Id>> dsets_;
    std::vector<std::unique_ptr<PartFile>> parts_;   // per part, made by direct() (null until then)
    std::vector<std::uint64_t> base_;                // per part: its user block's bytes
    std::vector<std::vector<Chunks>> chunks_;        // [part][field]
    std::vector<std::vector<Cluster>> clusters_;     // per part, this window (direct path)
    std::vector<std::uint64_t> slot_;                // per event of the window: its row in its piece
    std::uint64_t gap_rows_ = 1;                     // clusters: rows within a page
    std::vector<unsigned char*> pieces_;             // per part: its piece of the buffer (direct path)
    std::vector<std::uint64_t> locs_;                // the window's events: (part << 40 | row)
    Writer* writer_ = nullptr;                       // during copy(): the ordering writer
    std::size_t budget_;
    std::size_t cache_left_;  // bytes still free for compressed datasets' chunk caches (dset())
    std::size_t span_bytes_ = std::size_t(4) << 20;
    // Buffers that grow and are reused, never initialised (every byte used is written first).
    struct Scratch {
        std::unique_ptr<unsigned char[]> p;
        std::size_t n = 0;
        unsigned char* get(std::size_t bytes) {
            if (bytes > n) {
                p.reset(new unsigned char[bytes]);
                advise_huge_pages(p.get(), bytes);
                n = bytes;
            }
            return p.get();
        }
    };
    Scratch span_, buf_;  // buf_: a window's rows of one field (direct path: every part's pieces)
    std::vector<bool> dense_, sorted_;  // per part, this window: dense(); items sorted by row
    std::vector<std::int64_t> lens_;
};

inline std::vector<std::string> OrderCopy::unaligned_names(const std::vector<std::vector<unsigned char>>& descs) {
    std::set<std::string> names;
    const std::string src = "a part's description";
    for (const auto& d : descs) {
        Reader r{d.data(), d.data() + d.size(), &src};
        (void)r.get<std::uint64_t>();
        const auto nf = r.get<std::uint32_t>();
        for (std::uint32_t i = 0; i < nf; ++i) {
            (void)r.get<std::uint8_t>();
            const auto rank = r.get<std::uint8_t>();
            (void)r.get<std::uint8_t>();
            const auto len = r.get<std::uint16_t>();
            (void)r.get<std::uint64_t>();
            for (int k = 0; k < rank; ++k) (void)r.get<std::uint64_t>();
            const std::string name(r.bytes(len));
            if (!is_var_name(name) && !is_length_name(name) && is_unaligned(name)) names.insert(name);
        }
    }
    return {names.begin(), names.end()};
}

inline void OrderCopy::locate(std::size_t field, std::size_t part, const std::vector<Item>& events, std::vector<Item>& out) {
    out.clear();
    const OrderField& f = fields_[field];
    if (!f.present[part] || events.empty()) return;
    constexpr std::uint64_t block = 4096;
    if (f.bits != SIZE_MAX) {  // unaligned: rank in the bitmap
        const std::vector<std::uint64_t>& bm = bitmaps_[f.bits][part];
        std::vector<std::uint64_t>& sums = bit_sums_[f.bits][part];
        if (sums.empty()) {
            const std::size_t words = bm.size();
            sums.resize(words / (block / 64) + 1);
            std::uint64_t c = 0;
            for (std::size_t w = 0; w < words; ++w) {
                if (w % (block / 64) == 0) sums[w / (block / 64)] = c;
                c += static_cast<std::uint64_t>(__builtin_popcountll(bm[w]));
            }
        }
        for (const Item& e : events) {
            const std::uint64_t ev = e.row, w = ev / 64;
            if (w >= bm.size() || !(bm[static_cast<std::size_t>(w)] >> (ev % 64) & 1)) continue;
            std::uint64_t r = sums[static_cast<std::size_t>(ev / block)];
            for (std::uint64_t k = ev / block * (block / 64); k < w; ++k)
                r += static_cast<std::uint64_t>(__builtin_popcountll(bm[static_cast<std::size_t>(k)]));
            r += static_cast<std::uint64_t>(__builtin_popcountll(bm[static_cast<std::size_t>(w)] & ((std::uint64_t(1) << (ev % 64)) - 1)));
            out.push_back({r, 1, e.dst});
        }
        return;
    }
    // var_: the sums of the lengths at every 4096th event of the part (made once), then
    // the lengths from the block of the window's first event to its last.
    const std::size_t lf = f.len;
    std::vector<std::uint64_t>& sums = len_sums_[{lf, part}];
    const std::uint64_t n_ev = events_[part];
    if (sums.empty()) {
        sums.assign(static_cast<std::size_t>(n_ev / block + 1), 0);
        std::uint64_t c = 0;
        for (std::uint64_t at = 0; at < n_ev; at += block) {
            const std::uint64_t n = std::min(block, n_ev - at);
            lens_.resize(static_cast<std::size_t>(n));
            read(part, lf, at, n, reinterpret_cast<unsigned char*>(lens_.data()));
            sums[static_cast<std::size_t>(at / block)] = c;
            for (std::int64_t v : lens_) c += static_cast<std::uint64_t>(std::max<std::int64_t>(v, 0));
        }
    }
    // The lengths are read a stretch at a time from the block of the event met: the
    // window's events of one part are sorted, and usually close together.
    const std::uint64_t stretch = std::uint64_t(1) << 16;
    std::uint64_t lo = 0, hi = 0, pos = 0, row = 0;
    for (const Item& e : events) {
        if (e.row < lo || e.row >= hi) {
            lo = e.row / block * block;
            hi = std::min(n_ev, std::max(e.row + 1, lo + stretch));
            lens_.resize(static_cast<std::size_t>(hi - lo));
            read(part, lf, lo, hi - lo, reinterpret_cast<unsigned char*>(lens_.data()));
            pos = lo;
            row = sums[static_cast<std::size_t>(lo / block)];
        }
        for (; pos < e.row; ++pos) row += static_cast<std::uint64_t>(std::max<std::int64_t>(lens_[static_cast<std::size_t>(pos - lo)], 0));
        const auto n = static_cast<std::uint64_t>(std::max<std::int64_t>(lens_[static_cast<std::size_t>(e.row - lo)], 0));
        if (n > 0) out.push_back({row, n, e.dst});
    }
}

template <class Loc> void OrderCopy::copy(Writer& w, Loc loc, std::uint64_t n) {
    const std::size_t P = paths_.size();
    writer_ = &w;
    clusters_.resize(P);
    bit_sums_.assign(bitmaps_.size(), std::vector<std::vector<std::uint64_t>>(P));
    std::size_t max_rb = 8;
    for (OrderField& f : fields_) {
        f.out = w.field(w.field_index(f.meta, "the time ordering"));
        if (f.meta.aligned) max_rb = std::max(max_rb, f.meta.bytes);
    }
    span_bytes_ = std::max<std::size_t>(budget_ / 2, max_rb);
    gap_rows_ = std::max<std::uint64_t>(1, 4096 / max_rb);
    // A window's buffer (the direct path's pieces too: at most twice the window's rows, see
    // plan_clusters) takes at most half the budget, and a dense part's span (at most twice
    // its rows, see dense()) the other half.
    const std::uint64_t W = std::max<std::uint64_t>(1, std::min<std::uint64_t>(std::uint64_t(1) << 16, (budget_ / 4) / max_rb));
    std::vector<std::vector<Item>> by_part(P);  // the window's events of each part: (row, 1, position)
    dense_.assign(P, false);
    sorted_.assign(P, false);
    std::vector<Item> located;
    std::vector<std::int64_t> ts;
    for (std::uint64_t w0 = 0; w0 < n; w0 += W) {
        const std::uint64_t wn = std::min(W, n - w0);
        for (auto& v : by_part) v.clear();
        std::fill(sorted_.begin(), sorted_.end(), false);
        locs_.resize(static_cast<std::size_t>(wn));
        for (std::uint64_t i = 0; i < wn; ++i) {
            const std::uint64_t l = loc(w0 + i);
            locs_[static_cast<std::size_t>(i)] = l;
            by_part[static_cast<std::size_t>(l >> 40)].push_back({l & order_row_mask, 1, i});
        }
        for (std::size_t k = 0; k < P; ++k) dense_[k] = dense(by_part[k]);
        ts.resize(static_cast<std::size_t>(wn));
        bool planned = false;  // the direct path's clusters of this window
        for (std::size_t fi = 0; fi < fields_.size(); ++fi) {
            OrderField& f = fields_[fi];
            const std::size_t rb = f.meta.bytes;
            if (f.meta.aligned) {
                const bool ts_field = f.meta.name == "timestamp";
                bool all = true, direct_path = rb > 0;
                for (std::size_t k = 0; k < P; ++k) {
                    if (by_part[k].empty()) continue;
                    all = all && f.present[k];
                    direct_path = direct_path && (!f.present[k] || direct(k, fi));
                }
                if (direct_path) {  // each part's clusters read straight from its file, then gathered
                    if (!planned) {
                        slot_.resize(static_cast<std::size_t>(wn));
                        for (std::size_t k = 0; k < P; ++k) plan_clusters(k, sorted(k, by_part));
                        planned = true;
                    }
                    std::uint64_t rows = 0;
                    for (std::size_t k = 0; k < P; ++k) rows += piece_rows(k);
                    unsigned char* const buf = buf_.get(static_cast<std::size_t>(rows * rb));
                    pieces_.assign(P, nullptr);
                    unsigned char* at = buf;
                    for (std::size_t k = 0; k < P; ++k) {
                        if (by_part[k].empty()) continue;
                        pieces_[k] = at;
                        if (!f.present[k]) {  // a part without the field: fill values
                            fill_rows(at, piece_rows(k), f.out->fill_row.data(), rb);
                        } else {
                            for (const Cluster& c : clusters_[k])
                                read_rows(k, fi, c.row, c.rows, at + c.at * rb);
                        }
                        at += piece_rows(k) * rb;
                    }
                    const std::uint64_t* const locs = locs_.data();
                    const std::uint64_t* const slot = slot_.data();
                    unsigned char* const* const piece = pieces_.data();
                    auto row_of = [&](std::size_t i) -> const unsigned char* {
                        return piece[locs[i] >> 40] + slot[i] * rb;
                    };
                    if (ts_field) {
                        for (std::size_t i = 0; i < static_cast<std::size_t>(wn); ++i)
                            std::memcpy(&ts[i], row_of(i), 8);
                    } else {
                        w.put_gather(*f.out, static_cast<std::size_t>(wn), row_of);
                    }
                    continue;
                }
                unsigned char* out = ts_field ? reinterpret_cast<unsigned char*>(ts.data()) : nullptr;
                if (!ts_field) {
                    out = buf_.get(static_cast<std::size_t>(wn * rb));
                }
                if (!all && rb > 0)  // a part without the field: its events take the fill value
                    fill_rows(out, wn, f.out->fill_row.data(), rb);
                for (std::size_t k = 0; k < P; ++k) {
                    if (!f.present[k] || by_part[k].empty()) continue;
                    if (dense_[k])
                        gather_dense(k, fi, by_part[k], out);
                    else
                        gather(k, fi, sorted(k, by_part), out);
                }
                if (!ts_field) w.put_run(*f.out, out, rb, static_cast<std::size_t>(wn));
                continue;
            }
            // var_ data or unaligned rows: the window's rows in event order, in pieces that
            // fit the budget (one event's rows at least).
            std::vector<Item> all;  // (part, rows) per event with rows, in output order
            for (std::size_t k = 0; k < P; ++k) {
                locate(fi, k, sorted(k, by_part), located);
                for (const Item& it : located) all.push_back({it.row | (std::uint64_t(k) << 48), it.rows, it.dst});
            }
            std::sort(all.begin(), all.end(), [](const Item& a, const Item& b) { return a.dst < b.dst; });
            const std::uint64_t piece = std::max<std::uint64_t>(1, (budget_ / 2) / std::max<std::size_t>(rb, 1));
            std::size_t i = 0;
            while (i < all.size()) {
                std::uint64_t rows = 0;
                std::size_t j = i;
                std::vector<std::vector<Item>> parts(P);
                while (j < all.size() && (j == i || rows + all[j].rows <= piece)) {
                    const Item& it = all[j];
                    parts[static_cast<std::size_t>(it.row >> 48)].push_back({it.row & ((std::uint64_t(1) << 48) - 1), it.rows, rows});
                    rows += it.rows;
                    ++j;
                }
                unsigned char* out = buf_.get(static_cast<std::size_t>(rows * rb));
                for (std::size_t k = 0; k < P; ++k) {
                    std::sort(parts[k].begin(), parts[k].end());
                    if (!parts[k].empty()) gather(k, fi, parts[k], out);
                }
                w.put_rows(*f.out, out, rows);
                i = j;
            }
        }
        w.end_events(reinterpret_cast<const unsigned char*>(ts.data()), 8, static_cast<std::size_t>(wn));
    }
}

// The ordering Writer's options: no checkpoints, progress or callbacks, and its caches
// within what the keys (index_bytes) and the copy's window leave of cache_memory.
inline Options order_writer_options(const Options& o, std::uint64_t index_bytes) {
    Options w = o;
    w.checkpoint_seconds = 0;  // a crash leaves an .ordered file that recovery removes
    w.progress_seconds = 0;
    w.time_order = false;
    w.callbacks.clear();
    const std::uint64_t used = index_bytes + order_window_bytes(o.cache_memory) + order_chunk_cache_bytes(o);
    w.cache_memory = static_cast<std::size_t>(std::max<std::uint64_t>(o.cache_memory / 4, o.cache_memory > used ? o.cache_memory - used : 0));
    return w;
}

// Unaligned fields' WField::given of one writer, in the order of `names`, each cut or
// padded to the writer's events.
inline std::vector<std::vector<std::uint64_t>> given_bitmaps(Writer& w, const std::vector<std::string>& names) {
    std::vector<std::vector<std::uint64_t>> out;
    const std::size_t words = static_cast<std::size_t>((w.events() + 63) / 64);
    for (const std::string& n : names) {
        std::vector<std::uint64_t> bm;
        for (std::size_t i = 0; i < w.field_count(); ++i)
            if (w.field(i)->meta.name == n) bm = w.field(i)->given;
        bm.resize(words, 0);
        out.push_back(std::move(bm));
    }
    return out;
}

// Parallel mode, every rank (in done(), before the join): the servers order the events;
// then every rank learns whether that went well everywhere. Went well: each server's
// .ordered file replaces its part (and `ordered` describes it to the join). Did not:
// the .ordered files go, the parts stay, and order_error is what done() throws after the
// join.
inline void Impl::order_by_time() {
    if (!opt.time_order || opt.filename.empty() || !parallel()) return;
    const double t0 = now_seconds();
    std::string why;
    Errc code = Errc::hdf5;
    int lib = 0;
    if (role == Role::server) {
        try {
            order_parts(why, code, lib);
        } catch (const std::exception& e) {  // in the servers' collectives: none can go on
            abort_job(*this, "time order: " + bare_message(e));
        }
    }
    const bool ok = agree(why.empty(), code, why, lib);
    if (role == Role::server) {
        const std::string part = part_path(server_idx), from = ordered_path(part);
        if (ok && ordered) {
            // The old part goes first, then the new one takes its name: a rename onto an
            // existing file makes ext4 write the new file's data back at once (its
            // auto_da_alloc), a fraction of a second per GB. The old part's blocks are
            // freed when its last descriptor closes: held open across the unlink, closed
            // by a thread of its own, beside the join.
            const int old = ::open(part.c_str(), O_RDONLY | O_CLOEXEC);
            if (::unlink(part.c_str()) != 0 || std::rename(from.c_str(), part.c_str()) != 0) {
                // Every .ordered file is complete: `smalldata recover` finishes the switch.
                const int err = errno;
                abort_job(*this, "time order: cannot rename '" + from + "' to '" + part + "': " + std::strerror(err));
            }
            if (old >= 0) std::thread([old] { ::close(old); }).detach();
        } else if (!ok) {
            ordered.reset();
            if (!path_is_dir(from)) ::unlink(from.c_str());
        }
    }
    if (!ok) {
        order_error = std::make_exception_ptr(
            Error(code, "time order: " + why + "; the final file holds every event, in the order they arrived", lib));
        if (role == Role::server) stats.order_events = stats.order_rounds = 0;
    }
    stats.order_seconds = now_seconds() - t0;
}

// A server's part of order_by_time(). An error of its own (reading the parts, writing
// its range) comes back in why/code/lib; one in the servers' collectives is thrown.
inline void Impl::order_parts(std::string& why, Errc& code, int& lib) {
    const std::size_t S = static_cast<std::size_t>(n_servers);
    const MPI_Comm sc = servers_comm;
    const std::string part = part_path(server_idx);
    const std::uint64_t N = writer->events();
    MPI_Request r = MPI_REQUEST_NULL;
    auto wait = [&] { wait_gently(r, opt.idle_sleep_max_us); };
    auto caught = [&](const std::function<void()>& f) {
        try {
            f();
        } catch (const Error& e) {
            why = e.what();
            code = e.code();
            lib = e.library_code();
        } catch (const std::exception& e) {
            why = who() + ": " + e.what();
            code = Errc::hdf5;
        }
    };
    auto all_ok = [&] {
        int ok = why.empty() ? 1 : 0;
        check_mpi(MPI_Iallreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, sc, &r), "MPI_Iallreduce");
        wait();
        return ok == 1;
    };
    auto allgather_bytes = [&](const void* mine, std::size_t bytes, std::vector<unsigned char>& all, std::vector<int>& lens,
                               std::vector<int>& displs) {
        if (bytes > static_cast<std::size_t>(INT_MAX)) throw_error(Errc::protocol, "time order: a message exceeds 2 GiB");
        int len = static_cast<int>(bytes);
        lens.assign(S, 0);
        check_mpi(MPI_Iallgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, sc, &r), "MPI_Iallgather");
        wait();
        displs.assign(S, 0);
        std::uint64_t total = 0;
        for (std::size_t k = 0; k < S; ++k) {
            if (total > static_cast<std::uint64_t>(INT_MAX)) throw_error(Errc::protocol, "time order: messages exceed 2 GiB");
            displs[k] = static_cast<int>(total);
            total += static_cast<std::uint64_t>(lens[k]);
        }
        all.resize(static_cast<std::size_t>(total));
        check_mpi(MPI_Iallgatherv(mine, len, MPI_BYTE, all.data(), lens.data(), displs.data(), MPI_BYTE, sc, &r),
                  "MPI_Iallgatherv");
        wait();
    };

    writer->release_caches();  // the memory is the ordering's now
    const auto& runs = writer->client_runs();

    // 0. How many rounds: the same on every server, from every part's events.
    std::vector<std::uint64_t> counts(S);
    check_mpi(MPI_Iallgather(&N, 1, MPI_UINT64_T, counts.data(), 1, MPI_UINT64_T, sc, &r), "MPI_Iallgather");
    wait();
    std::uint64_t total = 0, largest = 0;
    for (std::uint64_t c : counts) {
        total += c;
        largest = std::max(largest, c);
    }
    // Already in order: every part in order, and each part's first event after the last
    // of the parts before it (keys compared without the row; the writer saw its part's
    // first and last). Nothing to rewrite, nothing to read: `ordered` stays empty.
    {
        const Writer::Ends e = writer->order_ends();
        struct Edge {
            std::int64_t first_ts, last_ts;
            std::uint64_t first_client, last_client, events, in_order, cells;
        } mine{e.first_ts, e.last_ts, static_cast<std::uint64_t>(e.first_client),
               static_cast<std::uint64_t>(e.last_client), N, writer->in_order() ? 1u : 0u,
               routed && writer->cells_owned(server_idx, n_servers) ? 1u : 0u};
        std::vector<Edge> edges(S);
        check_mpi(MPI_Iallgather(&mine, sizeof mine, MPI_BYTE, edges.data(), sizeof mine, MPI_BYTE, sc, &r),
                  "MPI_Iallgather");
        wait();
        bool in_order = true, cells = true;
        for (const Edge& x : edges) {
            in_order = in_order && x.in_order;
            cells = cells && x.cells;
        }
        // Routed streams: every part is its own cells of the grid, in order; the join maps
        // the cells in turn (section 16).
        if (in_order && cells) {
            cell_join = true;
            return;
        }
        const Edge* prev = nullptr;
        for (const Edge& x : edges) {
            if (x.events == 0) continue;
            if (prev &&
                (x.first_ts < prev->last_ts || (x.first_ts == prev->last_ts && x.first_client < prev->last_client)))
                in_order = false;
            prev = &x;
        }
        if (in_order) return;
    }

    std::uint64_t R = order_rounds(total, largest, S, opt.cache_memory);  // more if the counts say (step 3)
    const std::size_t key_memory = R == 1 ? opt.cache_memory : opt.cache_memory / 2;

    // 1. One round: this part's keys, sorted. Rounds: samples of them (every k-th event of
    //    each client, in order on its own) and their ends, from one pass over the part.
    std::vector<OrderSample> samples;
    std::vector<OrderKey> keys;
    // k: a splitter of S x `rounds` buckets is then off by at most a quarter of a bucket.
    auto take_samples = [&](std::uint64_t rounds) {
        samples.clear();
        const std::uint64_t k =
            std::max<std::uint64_t>(1, total / (S * rounds) / (4 * static_cast<std::uint64_t>(std::max(1, n_clients))));
        std::vector<std::uint64_t> seen;  // events by client
        scan_part_keys(part, N, runs, [&](const OrderKey& key) {
            const auto c = static_cast<std::size_t>(key.tie >> 40);
            if (c >= seen.size()) seen.resize(c + 1, 0);
            if (++seen[c] % k == 0) samples.push_back({key, static_cast<double>(k)});
        });
    };
    caught([&] {
        if (R == 1) {
            keys = part_keys(part, N, runs, writer->in_order(), key_memory);
            const std::size_t m = std::min<std::size_t>(static_cast<std::size_t>(N), 64 * S);
            for (std::size_t i = 0; i < m; ++i)
                samples.push_back({keys[static_cast<std::size_t>((2 * i + 1) * N / (2 * m))],
                                   static_cast<double>(N) / static_cast<double>(m)});
            return;
        }
        take_samples(R);
    });
    if (!all_ok()) return;

    // 2. What every part holds: descriptions, and the unaligned fields' bitmaps.
    std::vector<std::vector<unsigned char>> descs(S);
    {
        const std::vector<unsigned char> d = writer->describe();
        std::vector<unsigned char> all;
        std::vector<int> lens, displs;
        allgather_bytes(d.data(), d.size(), all, lens, displs);
        for (std::size_t k = 0; k < S; ++k)
            descs[k].assign(all.begin() + displs[k], all.begin() + displs[k] + lens[k]);
    }
    const std::vector<std::string> names = OrderCopy::unaligned_names(descs);
    std::vector<std::vector<std::vector<std::uint64_t>>> bitmaps;
    {
        std::vector<std::vector<std::uint64_t>> given = given_bitmaps(*writer, names);
        for (auto& bm : given) {
            std::vector<unsigned char> all;
            std::vector<int> lens, displs;
            allgather_bytes(bm.data(), bm.size() * 8, all, lens, displs);
            std::vector<std::vector<std::uint64_t>> per(S);
            for (std::size_t k = 0; k < S; ++k) {
                per[k].resize(static_cast<std::size_t>(lens[k]) / 8);
                if (lens[k] > 0) std::memcpy(per[k].data(), all.data() + displs[k], static_cast<std::size_t>(lens[k]));
            }
            bitmaps.push_back(std::move(per));
            bm = {};
        }
    }

    // 3. Splitters from the weighted samples of every part: S x R buckets of about equal
    //    events; bucket j is [split[j], split[j + 1]), and server t's range is buckets
    //    t R to t R + R - 1, written one per round. Rounds: each server then counts its
    //    part's keys in every bucket (one more pass); where a round would hold more than
    //    its half of cache_memory on some server (a part's events clustered in the
    //    round's buckets), more rounds, from samples taken anew, counted again.
    //    Server 0 plans: every server sends it its samples, coarsened (order_coarsen) so
    //    that server 0 holds at most an eighth of cache_memory of them (and at least 8 per
    //    bucket), and it sends every server the splitters.
    std::vector<OrderKey> split;
    auto plan = [&] {  // collective over the servers
        const std::size_t B = S * static_cast<std::size_t>(R);
        const auto by_key = [](const OrderSample& a, const OrderSample& b) { return a.key < b.key; };
        std::sort(samples.begin(), samples.end(), by_key);
        // (and all of them well within one message: 2 GiB)
        const std::size_t most = std::min<std::size_t>(std::max<std::size_t>(8 * B, opt.cache_memory / 8 / sizeof(OrderSample)),
                                                       static_cast<std::size_t>(INT_MAX) / sizeof(OrderSample) / 4);
        order_coarsen(samples, std::max<std::size_t>(1, most / S));
        int len = static_cast<int>(samples.size() * sizeof(OrderSample));
        std::vector<int> lens(server_idx == 0 ? S : 0), displs(lens.size(), 0);
        check_mpi(MPI_Igather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, sc, &r), "MPI_Igather");
        wait();
        std::size_t bytes = 0;
        for (std::size_t k = 0; k < lens.size(); ++k) {
            displs[k] = static_cast<int>(bytes);
            bytes += static_cast<std::size_t>(lens[k]);
        }
        std::vector<OrderSample> every(bytes / sizeof(OrderSample));
        check_mpi(MPI_Igatherv(samples.data(), len, MPI_BYTE, every.data(), lens.data(), displs.data(), MPI_BYTE, 0, sc, &r),
                  "MPI_Igatherv");
        wait();
        std::vector<OrderSample>().swap(samples);
        if (server_idx == 0) {
            std::sort(every.begin(), every.end(), by_key);
            split = order_splitters(every, B);
        } else {
            split.assign(B + 1, OrderKey{});
        }
        std::vector<OrderSample>().swap(every);
        check_mpi(MPI_Ibcast(split.data(), static_cast<int>((B + 1) * sizeof(OrderKey)), MPI_BYTE, 0, sc, &r), "MPI_Ibcast");
        wait();
    };
    plan();
    for (int tries = 0; R > 1; ++tries) {
        const std::size_t buckets = S * static_cast<std::size_t>(R);
        std::vector<std::uint64_t> mine(buckets, 0), counts(S * buckets, 0);
        caught([&] { scan_part_keys(part, N, runs, [&](const OrderKey& key) { ++mine[order_bucket(split, buckets, key)]; }); });
        if (!all_ok()) return;
        check_mpi(MPI_Iallgather(mine.data(), static_cast<int>(buckets), MPI_UINT64_T, counts.data(), static_cast<int>(buckets),
                                 MPI_UINT64_T, sc, &r),
                  "MPI_Iallgather");
        wait();
        const std::uint64_t more = order_rounds_for_peak(R, order_round_peak(counts, S, R), key_memory, total);
        if (more == R || tries == 2) break;  // fits (or the last try: it goes as it is)
        R = more;
        caught([&] { take_samples(R); });
        if (!all_ok()) return;
        plan();
    }
    const std::size_t B = S * static_cast<std::size_t>(R);

    std::vector<std::string> paths;
    for (std::size_t k = 0; k < S; ++k) paths.push_back(part_path(static_cast<int>(k)));
    std::unique_ptr<OrderCopy> copy;  // destroyed before `ordered` (its lock)
    // Appends n events of this server's range to <part>.ordered, event i from loc(i); the
    // ordering writer and the copy are made by the first round, the writer's caches within
    // what the keys leave of cache_memory (rounds: half of it; else the round's output,
    // 8 bytes per event, or one server's keys, 16).
    auto write_range = [&](std::uint64_t n, const std::function<std::uint64_t(std::uint64_t)>& loc) {
        caught([&] {
            if (!ordered) {
                const std::string to = ordered_path(part);
                const std::uint64_t index_bytes = R > 1 ? key_memory : n * (S == 1 ? sizeof(OrderKey) : 8);
                order_opt = order_writer_options(opt, index_bytes);
                remove_old_file(to);
                auto tag = [&](hid_t file) {
                    h5_set_attr_u64(file, attr_run, run_token);
                    h5_set_attr_u64(file, attr_part, static_cast<std::uint64_t>(server_idx));
                    h5_set_attr_u64(file, attr_parts, static_cast<std::uint64_t>(n_servers));
                    h5_set_attr_string(file, attr_final, base_name(opt.filename));
                    h5_set_attr_u64(file, attr_time_order, 1);
                };
                // While the servers order, the clients wait: only the servers count for
                // whether a core is free for the ordering writer's write thread.
                ordered = std::make_unique<Writer>(to, order_opt, use_write_thread(opt, servers_on_node, true), tag);
                copy = std::make_unique<OrderCopy>(paths, descs, std::move(bitmaps),
                                                   order_window_bytes(opt.cache_memory), order_chunk_cache_bytes(opt));
            }
            copy->copy(*ordered, loc, n);
            stats.order_events += n;
        });
    };

    // 4. Round by round: this part's keys of the round's buckets; each server's from every
    //    part, merged into its output; written.
    std::vector<std::uint64_t> out;
    for (std::uint64_t rr = 0; rr < R; ++rr) {
        if (R > 1) {
            caught([&] {
                keys.clear();
                if (rr == 0) reserve_huge(keys, static_cast<std::size_t>(N / R + N / (4 * R) + 64));
                std::vector<std::pair<std::uint32_t, std::uint64_t>> kept;  // their clients' runs
                bool track = true;
                // Under the ordering writer's HDF5 lock from round 1 on: with compression
                // its write thread calls HDF5 meanwhile.
                std::unique_lock<std::mutex> lk;
                if (ordered) lk = ordered->hdf5_lock();
                scan_part_keys(part, N, runs, [&](const OrderKey& key) {
                    if (order_bucket(split, B, key) % R != rr) return;
                    keys.push_back(key);
                    if (!track) return;
                    const auto c = static_cast<std::uint32_t>(key.tie >> 40);
                    if (!kept.empty() && kept.back().first == c)
                        ++kept.back().second;
                    else if (kept.size() < keys.size() / 8 + 64)  // else too many: sorted in place
                        kept.emplace_back(c, 1);
                    else
                        track = false;
                });
                if (lk.owns_lock()) lk.unlock();
                if (!track) kept.clear();
                const std::size_t held = out.capacity() * 8;  // the last round's output, kept for its memory
                sort_part_keys(keys, kept, key_memory > held ? key_memory - held : 0);
            });
            if (!all_ok()) return;
        }
        if (S == 1) {  // one server: its sorted keys are the output, (part 0, row)
            if (order_round_hook && R > 1) order_round_hook(server_idx, rr, 16 * keys.size(), key_memory);
            write_range(keys.size(), [&](std::uint64_t i) { return keys[static_cast<std::size_t>(i)].tie & order_row_mask; });
            if (!all_ok()) return;
            continue;
        }
        std::vector<std::uint64_t> send(S), recv(S);
        std::vector<std::size_t> bound(S + 1);
        bound[0] = 0;
        bound[S] = keys.size();
        for (std::size_t t = 1; t < S; ++t)
            bound[t] = static_cast<std::size_t>(std::lower_bound(keys.begin(), keys.end(), split[t * R + rr]) - keys.begin());
        for (std::size_t t = 0; t < S; ++t) send[t] = bound[t + 1] - std::min(bound[t + 1], bound[t]);
        check_mpi(MPI_Ialltoall(send.data(), 1, MPI_UINT64_T, recv.data(), 1, MPI_UINT64_T, sc, &r), "MPI_Ialltoall");
        wait();
        std::vector<int> sc_n(S), sd(S), rc_n(S), rd(S);
        std::uint64_t at_s = 0, at_r = 0;
        for (std::size_t t = 0; t < S; ++t) {
            if (send[t] > static_cast<std::uint64_t>(INT_MAX) || recv[t] > static_cast<std::uint64_t>(INT_MAX) ||
                at_s > static_cast<std::uint64_t>(INT_MAX) || at_r > static_cast<std::uint64_t>(INT_MAX))
                throw_error(Errc::protocol, "time order: more than 2^31 events between two servers");
            sc_n[t] = static_cast<int>(send[t]);
            sd[t] = static_cast<int>(at_s);
            rc_n[t] = static_cast<int>(recv[t]);
            rd[t] = static_cast<int>(at_r);
            at_s += send[t];
            at_r += recv[t];
        }
        std::vector<OrderKey> got;
        resize_huge(got, static_cast<std::size_t>(at_r));
        MPI_Datatype key_type;
        check_mpi(MPI_Type_contiguous(sizeof(OrderKey), MPI_BYTE, &key_type), "MPI_Type_contiguous");
        check_mpi(MPI_Type_commit(&key_type), "MPI_Type_commit");
        check_mpi(MPI_Ialltoallv(keys.data(), sc_n.data(), sd.data(), key_type, got.data(), rc_n.data(), rd.data(),
                                 key_type, sc, &r),
                  "MPI_Ialltoallv");
        wait();
        MPI_Type_free(&key_type);
        if (R == 1) std::vector<OrderKey>().swap(keys);  // rounds: kept for the next
        out.clear();
        reserve_huge(out, got.size());
        {
            using Head = std::pair<OrderKey, std::size_t>;  // a part's next key, and the part
            auto later = [](const Head& a, const Head& b) { return b.first < a.first; };
            std::priority_queue<Head, std::vector<Head>, decltype(later)> heads(later);
            std::vector<std::size_t> next(S), end(S);
            for (std::size_t k = 0; k < S; ++k) {
                next[k] = static_cast<std::size_t>(rd[k]);
                end[k] = next[k] + static_cast<std::size_t>(rc_n[k]);
                if (next[k] < end[k]) heads.push({got[next[k]], k});
            }
            while (!heads.empty()) {
                const std::size_t k = heads.top().second;
                heads.pop();
                out.push_back(static_cast<std::uint64_t>(k) << 40 | (got[next[k]].tie & order_row_mask));
                if (++next[k] < end[k]) heads.push({got[next[k]], k});
            }
        }
        if (order_round_hook && R > 1) order_round_hook(server_idx, rr, 16 * keys.size() + 24 * got.size(), key_memory);
        std::vector<OrderKey>().swap(got);
        write_range(out.size(), [&](std::uint64_t i) { return out[static_cast<std::size_t>(i)]; });
        if (!all_ok()) return;
    }
    caught([&] {
        if (!ordered) return;
        ordered->finish(nullptr);
        stats.order_rounds = R;
        if (order_hook) order_hook(server_idx);
    });
}

// ============================================================================ [>>impl-abort]
// 20. Failure: every way a live SmallData can end badly. The abort protocol (a failing
//     rank closes its own file, asks every server to close its part file and waits for
//     their two-phase answer, then MPI_Abort), the terminate handler (an exception escapes
//     the program) and the exit hook (the process exits before done()).
//
//     The handshake. The failing rank sends a notice to every server. A server answers
//     "closing" at once (tag_abort_ack) from its loop, which tests for notices on every
//     iteration, closes its part file, then answers "closed" (tag_abort_closed). The failing
//     rank waits up to abort_grace_ms for the "closing" answers (a server that does not
//     answer is stuck or gone), then up to abort_close_ms for the "closed" answer of each
//     server that said "closing", then ends the job. A server that answered waits to be
//     ended, and ends the job itself if that does not happen.
//     A failing client first ships the events it still holds (every wait then gives up
//     after abort_grace_ms: give_up_waits_at) and its notice says how many batches it has
//     sent; its server answers "closing" at once but takes those batches before it closes
//     (run_server's `last`, at most half of abort_close_ms and 5 s). So a client's own
//     failure loses none of its events, as in serial mode.

[[noreturn]] inline void end_job() noexcept {
    aborting() = true;
    // MPI_COMM_WORLD: aborting a sub-communicator may end only this process (MPICH).
    if (!mpi_finalized()) MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();
}

// Waits (sleeping 1 ms between tests) until every request is complete or `seconds` pass.
inline bool wait_deadline(std::vector<MPI_Request>& reqs, double seconds) noexcept {
    const double deadline = now_seconds() + seconds;
    for (;;) {
        int flag = 0;
        if (reqs.empty() || MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            return false;
        if (flag) return true;
        if (now_seconds() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

[[noreturn]] void abort_job(Impl& im, const std::string& reason) noexcept {
    static std::atomic<bool> busy{false};
    if (busy.exchange(true)) end_job();  // a failure during the abort: no second round
    try {
        emit(LogLevel::error,
             who() + ": fatal: " + bare_text(reason) + "\n" + who() +
                 ": ending the job; servers close their part files first");
    } catch (...) {
        std::fprintf(stderr, "smalldata: fatal: %s\n", reason.c_str());
    }
    im.release_held();
    if (im.writer) im.writer->close_on_abort();
    if (im.comm != MPI_COMM_NULL && !mpi_finalized()) {
        // The notice to each server: this rank, and for a client the messages it has sent
        // that server (it takes them all before it closes its part), else -1.
        std::vector<std::uint32_t> sent;  // a client: the messages it sent to each server
        if (im.role == Role::client && im.sink && im.packer && !im.finished) {
            // The events this client handed over and had not shipped go to its server first,
            // as serial mode keeps them: the failure is its own, its server is alive. Every
            // wait gives up after abort_grace_ms (a server that cannot take them).
            give_up_waits_at().store(now_seconds() + im.opt.abort_grace_ms / 1000.0);
            try {
                im.packer->flush();
                sent = static_cast<Sender&>(*im.sink).complete_sends();
            } catch (...) {
                sent.clear();  // what reached the servers is not known: they close at once
            }
            give_up_waits_at().store(0);
        }
        const auto n = static_cast<std::size_t>(im.n_servers);
        std::vector<std::array<std::int64_t, 2>> notices(n, std::array<std::int64_t, 2>{im.rank, -1});
        for (std::size_t s = 0; s < n && s < sent.size(); ++s) notices[s][1] = sent[s];
        std::vector<int> closing(n, 0), closed(n, 0);
        std::vector<MPI_Request> sends, phase1;
        std::vector<int> asked;
        for (int s = 0; s < im.n_servers; ++s) {
            if (s == im.rank) continue;
            MPI_Request a = MPI_REQUEST_NULL, b = MPI_REQUEST_NULL;
            if (MPI_Isend(notices[static_cast<std::size_t>(s)].data(), 2, MPI_INT64_T, s, tag_abort, im.comm, &a) != MPI_SUCCESS)
                continue;
            if (MPI_Irecv(&closing[static_cast<std::size_t>(s)], 1, MPI_INT, s, tag_abort_ack, im.comm, &b) != MPI_SUCCESS)
                continue;
            sends.push_back(a);
            phase1.push_back(b);
            asked.push_back(s);
        }
        wait_deadline(phase1, im.opt.abort_grace_ms / 1000.0);
        std::vector<MPI_Request> phase2;
        for (std::size_t i = 0; i < asked.size(); ++i) {
            int done = 0;
            if (phase1[i] != MPI_REQUEST_NULL && (MPI_Test(&phase1[i], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done)) {
                log(LogLevel::warning, im.rank_text(asked[i]) + " did not answer within abort_grace_ms");
                continue;
            }
            MPI_Request c = MPI_REQUEST_NULL;
            const int s = asked[i];
            if (MPI_Irecv(&closed[static_cast<std::size_t>(s)], 1, MPI_INT, s, tag_abort_closed, im.comm, &c) == MPI_SUCCESS)
                phase2.push_back(c);
        }
        if (!wait_deadline(phase2, im.opt.abort_close_ms / 1000.0) && !phase2.empty())
            log(LogLevel::warning, "a server did not close its part file within abort_close_ms");
    }
    end_job();
}

// A server, from its loop: a rank failed. Answer, close the part file, answer again, and
// wait to be ended by the failing rank's MPI_Abort.
// A server merging its streams (StreamMerge) writes the batches it holds before its part
// is closed on a failure: they were received, so they are kept. A batch that fails to
// decode (the failure itself, perhaps) ends the release; those before it are written.
inline void Impl::release_held() noexcept {
    if (!merge) return;
    try {
        merge->release();
    } catch (...) {
    }
    merge = nullptr;
}

// The "closing" answer to a failing rank, once.
inline void Impl::answer_abort(int from) noexcept {
    if (abort_ack != MPI_REQUEST_NULL) return;
    abort_token = rank;
    MPI_Isend(&abort_token, 1, MPI_INT, from, tag_abort_ack, comm, &abort_ack);
}

inline void Impl::on_abort_notice(int from) noexcept {
    answer_abort(from);
    MPI_Request r2 = MPI_REQUEST_NULL;
    try {
        emit(LogLevel::error, who() + ": " + rank_text(from) + " failed; closing part file '" +
                                  (writer && !opt.filename.empty() ? part_path(server_idx) : std::string()) + "'");
    } catch (...) {
    }
    release_held();
    if (writer) writer->close_on_abort();
    MPI_Isend(&abort_token, 1, MPI_INT, from, tag_abort_closed, comm, &r2);
    std::vector<MPI_Request> reqs{abort_ack, r2};
    wait_deadline(reqs, 1.0 + (opt.abort_grace_ms + opt.abort_close_ms) / 1000.0);
    std::this_thread::sleep_for(std::chrono::milliseconds(opt.abort_grace_ms));  // the failing rank ends the job
    end_job();
}

// Why the program is terminating, from the exception in flight (if any).
inline std::string terminate_reason() {
    std::string why = "std::terminate called";
    if (std::exception_ptr e = std::current_exception()) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            why = "uncaught exception: " + bare_message(x);
        } catch (...) {
            why = "uncaught exception of unknown type";
        }
    }
    return why;
}

// Serial mode's failure path: the file is closed with every event given so far (its
// datasets aligned), so it stays readable; the summary is not written.
inline void close_serial_on_failure(Impl& im, const std::string& reason) noexcept {
    try {
        emit(LogLevel::error, who() + ": fatal: " + bare_text(reason) + "\n" + who() + ": closing '" + im.opt.filename +
                                  "' with the events given so far (no summary)");
    } catch (...) {
        std::fprintf(stderr, "smalldata: fatal: %s\n", reason.c_str());
    }
    im.finished = true;
    if (im.packer) {
        try {
            im.packer->flush();  // the last event given is complete too
        } catch (...) {
        }
    }
    if (im.writer) im.writer->close_on_abort();
}

[[noreturn]] inline void on_terminate() {
    Impl* im = active_impl();
    const std::terminate_handler prev = im ? im->exit_guard.previous() : nullptr;
    if (im && !im->finished) {
        if (im->parallel()) abort_job(*im, terminate_reason());
        close_serial_on_failure(*im, terminate_reason());
    }
    if (prev && prev != on_terminate) prev();
    std::abort();
}

// MPI_Finalize called by the program while its parallel SmallData is not done: the
// clients' done() would never come, and the servers would wait for them. Run from
// MPI_Finalize itself (the delete callback of an attribute on MPI_COMM_SELF, which MPI
// calls first, with MPI still working: MPI's way for a library to finish its work):
// done() runs there, on every rank that finalizes, as the destructor would have run it;
// if it fails, the job ends through abort_job. Installed once per process, by the first
// parallel SmallData.
inline int finalize_hook(MPI_Comm, int, void*, void*) {
    Impl* im = active_impl();
    if (!im || !im->parallel() || im->finished || !im->owner || aborting()) return MPI_SUCCESS;
    warn("MPI_Finalize was called before done(): done() runs now");
    try {
        im->owner->done();
    } catch (const std::exception& e) {
        abort_job(*im, std::string("done(), run by MPI_Finalize, failed: ") + bare_message(e));
    } catch (...) {
        abort_job(*im, "done(), run by MPI_Finalize, failed");
    }
    return MPI_SUCCESS;
}
inline void install_finalize_hook() {
    static int keyval = MPI_KEYVAL_INVALID;
    if (keyval != MPI_KEYVAL_INVALID) return;
    check_mpi(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, finalize_hook, &keyval, nullptr), "MPI_Comm_create_keyval");
    check_mpi(MPI_Comm_set_attr(MPI_COMM_SELF, keyval, nullptr), "MPI_Comm_set_attr");
}

// Registered with std::atexit once per process. Automatic objects are not destroyed by
// std::exit, so a SmallData still live here was never finished: its clients' and servers'
// peers would wait for it forever.
inline void exit_hook() {
    Impl* im = active_impl();
    if (!im || im->finished || aborting()) return;
    const std::string why = "the process is exiting (std::exit, or the end of main with the SmallData still alive) "
                            "before done() was called";
    if (im->parallel()) abort_job(*im, why);
    close_serial_on_failure(*im, why);
}

// The library's SIGTERM/SIGINT handler: the first signal this process receives asks the
// run to stop (see request_stop), a second one ends the process at once (the default
// action). A stop already asked without a signal counts no signal: one learnt from another
// client in a reduction keeps its cause, and after request_stop() the run ends by this one.
inline void on_stop_signal(int sig) {
    if (stop_signals.fetch_add(1) > 0) {
        std::signal(sig, SIG_DFL);
        std::raise(sig);
        return;
    }
    int none = 0, asked = -1;  // (after request_stop(): the run ends by this signal)
    if (!stop_requested.compare_exchange_strong(none, sig)) stop_requested.compare_exchange_strong(asked, sig);
}

void ExitGuard::install(Impl* im) {
    static bool hooked = false;
    if (!hooked) {
        hooked = std::atexit(exit_hook) == 0;
    }
    im_ = im;
    active_impl() = im;
    prev_ = std::set_terminate(on_terminate);
    // SIGTERM and SIGINT end the run gracefully, where the program has no handler of its own.
    stop_requested.store(0);
    stop_signals.store(0);
    const int sigs[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; ++i) {
        struct sigaction old {};
        if (sigaction(sigs[i], nullptr, &old) != 0 || (old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) continue;
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        handles_[i] = sigaction(sigs[i], &sa, nullptr) == 0;
    }
}

void ExitGuard::uninstall() noexcept {
    if (!im_) return;
    const int sigs[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; ++i) {
        struct sigaction now {};
        if (handles_[i] && sigaction(sigs[i], nullptr, &now) == 0 && now.sa_handler == on_stop_signal)
            std::signal(sigs[i], SIG_DFL);
        handles_[i] = false;
    }
    std::set_terminate(prev_);
    if (active_impl() == im_) active_impl() = nullptr;
    im_ = nullptr;
}

}  // namespace detail

// ============================================================================ [>>impl-report]
// 21. Progress and report: the periodic progress line (Options::progress_seconds) and the
//     end-of-run report (Options::report, SmallData::report()) with its verdict.
//
// Progress travels only between servers (clients send nothing: no cost on event()). Each
// server other than server 0 sends its figures to server 0 every half interval (one small
// message, only once the previous one has gone) and a final message after its loop;
// server 0 prints from the newest figures it has and, after its own loop, keeps printing
// until every final message is in, so none is left unreceived. The serial process prints
// its own. All of it runs from the writer's clock (Writer::set_progress): between events,
// or from a waiting server's poll. The report is made in done(), after the join, from one
// MPI_Iallgather of every rank's figures, so every rank holds the same Report.

namespace detail {

// "12,345,678"
inline std::string group_digits(std::uint64_t v) {
    std::string d = std::to_string(v), out;
    for (std::size_t i = 0; i < d.size(); ++i) {
        if (i > 0 && (d.size() - i) % 3 == 0) out += ',';
        out += d[i];
    }
    return out;
}
// "4.83 GB", "512 kB", "17 B" (powers of 1000)
inline std::string human_bytes(double b) {
    const char* unit[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    while (b >= 1000 && u < 5) {
        b /= 1000;
        ++u;
    }
    char t[32];
    std::snprintf(t, sizeof t, u == 0 ? "%.0f %s" : b < 10 ? "%.2f %s" : b < 100 ? "%.1f %s" : "%.0f %s", b, unit[u]);
    return t;
}
inline std::string percent(double f) {
    char t[16];
    std::snprintf(t, sizeof t, f > 0 && f < 0.1 ? "%.1f%%" : "%.0f%%", 100 * f);
    return t;
}
inline double ratio(double a, double b) { return b > 0 ? a / b : 0; }

inline ProgressState::Figures Impl::progress_figures(bool final) const {
    const double t = now_seconds();
    return {static_cast<double>(writer->events()), static_cast<double>(writer->payload_bytes()), t - t_stream_start,
            stats.idle_seconds + (idle_since > 0 ? t - idle_since : 0), writer->write_seconds(), final ? 1.0 : 0.0};
}

// Serial process and servers, once the writer exists.
inline void Impl::progress_start() {
    const double p = opt.progress_seconds;
    if (p <= 0 || !writer) return;
    ProgressState& g = progress;
    g.on = true;
    g.shown_t = t_start;
    const bool printer = role == Role::serial || server_idx == 0;
    if (printer) {
        g.latest.assign(role == Role::serial ? 1 : static_cast<std::size_t>(n_servers), ProgressState::Figures{});
        g.shown = g.latest;
        if (role == Role::server && n_servers > 1)
            check_mpi(MPI_Irecv(g.in.data(), 6, MPI_DOUBLE, MPI_ANY_SOURCE, tag_progress, comm, &g.in_req), "MPI_Irecv");
    }
    writer->set_progress(printer ? p : p / 2, [this] { progress_tick(); });
}

inline void Impl::progress_tick() {
    ProgressState& g = progress;
    if (role == Role::server && server_idx != 0) {  // send, if the last message has gone
        int flag = 0;
        check_mpi(MPI_Test(&g.out_req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
        if (!flag || g.finished) return;
        g.out = progress_figures(false);
        check_mpi(MPI_Isend(g.out.data(), 6, MPI_DOUBLE, 0, tag_progress, comm, &g.out_req), "MPI_Isend");
        return;
    }
    progress_drain();
    progress_line();
}

// Server 0: takes in every progress message that has arrived.
inline void Impl::progress_drain() {
    ProgressState& g = progress;
    while (g.in_req != MPI_REQUEST_NULL) {
        int flag = 0;
        MPI_Status st;
        check_mpi(MPI_Test(&g.in_req, &flag, &st), "MPI_Test");
        if (!flag) return;
        if (st.MPI_SOURCE <= 0 || st.MPI_SOURCE >= n_servers)
            throw_error(Errc::protocol, "a progress message came from " + rank_text(st.MPI_SOURCE) + ", not a server");
        g.latest[static_cast<std::size_t>(st.MPI_SOURCE)] = g.in;
        if (g.in[5] != 0) ++g.finals;
        if (g.finals < n_servers - 1)
            check_mpi(MPI_Irecv(g.in.data(), 6, MPI_DOUBLE, MPI_ANY_SOURCE, tag_progress, comm, &g.in_req), "MPI_Irecv");
    }
}

// Server 0 or the serial process: one line from the newest figures.
inline void Impl::progress_line() {
    ProgressState& g = progress;
    const double t = now_seconds();
    g.latest[0] = progress_figures(false);
    double total = 0, before = 0, top = -1;
    std::size_t top_k = 0;
    for (std::size_t k = 0; k < g.latest.size(); ++k) {
        const ProgressState::Figures &a = g.latest[k], &b = g.shown[k];
        total += a[0];
        before += b[0];
        const double span = a[2] - b[2];
        if (span <= 0) continue;  // nothing new from this server
        const double busy = role == Role::serial ? (a[4] - b[4]) / span : 1 - (a[3] - b[3]) / span;
        if (busy > top) {
            top = busy;
            top_k = k;
        }
    }
    char line[400];
    const std::string n = group_digits(static_cast<std::uint64_t>(total));
    const std::string last = group_digits(static_cast<std::uint64_t>(ratio(total - before, t - g.shown_t)));
    const std::string all = group_digits(static_cast<std::uint64_t>(ratio(total, t - t_start)));
    const std::string busiest =
        top < 0 ? std::string()
                : role == Role::serial
                      ? "; writing " + percent(std::min(1.0, std::max(0.0, top))) + " of the time"
                      : "; busiest server: server " + std::to_string(top_k) + ", " +
                            percent(std::min(1.0, std::max(0.0, top))) + " busy";
    const double span = t - g.shown_t;
    std::snprintf(line, sizeof line, "progress: %s events written in %.0f s, %s events/s in the last %.*f s, %s overall%s",
                  n.c_str(), t - t_start, last.c_str(), span < 10 ? 1 : 0, span, all.c_str(), busiest.c_str());
    log(LogLevel::info, line);
    g.shown = g.latest;
    g.shown_t = t;
}

// A server after its loop (poll: the loop's, which answers abort notices meanwhile).
inline void Impl::progress_finish(const std::function<void()>& poll) {
    ProgressState& g = progress;
    if (!g.on || n_servers < 2) return;
    if (server_idx != 0) {
        g.finished = true;  // no more ticks: the final message is the last one
        const double t0 = now_seconds();
        wait_gently(g.out_req, opt.idle_sleep_max_us, MPI_STATUS_IGNORE, poll);
        g.out = progress_figures(true);
        check_mpi(MPI_Isend(g.out.data(), 6, MPI_DOUBLE, 0, tag_progress, comm, &g.out_req), "MPI_Isend");
        wait_gently(g.out_req, opt.idle_sleep_max_us, MPI_STATUS_IGNORE, poll);
        stats.idle_seconds += now_seconds() - t0;
        return;
    }
    idle_since = now_seconds();  // waiting for the other servers counts as idle
    wait_until(
        [&] {
            progress_drain();
            if (g.finals >= n_servers - 1) return true;
            poll();  // prints the progress lines meanwhile (the writer's clock)
            return false;
        },
        opt.idle_sleep_max_us);
    stats.idle_seconds += now_seconds() - idle_since;
    idle_since = 0;
}

// The verdict (Report::suggested_servers and verdict) from the servers' and clients'
// figures, by the scaling model of docs/performance.md: a server should be busy at most
// half the time. The clients' waiting shows the real demand: had they not waited, the
// same work would have come in (1 - wait) of the time. Never more servers than clients
// (a server without a client has nothing to write).
inline void judge(Report& rep) {
    const int S = static_cast<int>(rep.servers.size());
    const int C = static_cast<int>(rep.clients.size());
    rep.suggested_servers = 0;
    if (!rep.parallel) {
        const double w = rep.servers.empty() ? 0 : rep.servers[0].write_fraction;
        rep.verdict = "serial mode: writing took " + percent(w) + " of the run" +
                      (w >= 0.5 ? "; the writing limits the run: parallel mode (mpiexec) spreads it over servers"
                                : "; the writing is not the limit");
        return;
    }
    if (S == 0 || C == 0) {
        rep.verdict = "no client wrote: nothing to judge";
        return;
    }
    double busy = 0, wait = 0;
    for (const ServerReport& s : rep.servers) busy += s.busy_fraction;
    for (const ClientReport& c : rep.clients) wait += c.wait_fraction;
    wait /= C;
    const double demand = busy / (1 - std::min(wait, 0.9));  // busy servers at full client speed
    const int needed = std::max(1, static_cast<int>(std::ceil(2 * demand - 1e-9)));
    if (wait >= 0.05) {
        const std::string head = "the servers were the bottleneck (clients waited " + percent(wait) + " of their time)";
        if (S >= C) {
            rep.verdict = head + ", with a server for every client already: the limit is the file system or the nodes";
            return;
        }
        rep.suggested_servers = std::min(C, std::max(S + 1, needed));
        rep.verdict = head + ": try servers = " + std::to_string(rep.suggested_servers);
    } else if (needed < S) {
        rep.suggested_servers = needed;
        rep.verdict = "servers were idle " + percent(1 - busy / S) + " of the time: fewer servers would do (servers = " +
                      std::to_string(needed) + ")";
    } else {
        rep.verdict = "the servers kept up (clients waited " + percent(wait) + " of their time): servers = " +
                      std::to_string(S) + " fits";
    }
}

// In done() (collective over comm in parallel mode): every rank's figures to every rank,
// then the same Report everywhere; printed by rank 0 (the serial process).
inline void Impl::make_report() {
    enum : std::size_t { f_role, f_events, f_bytes, f_seconds, f_idle, f_wait, f_write, f_join, f_flat, f_flat_bytes,
                         f_order, f_order_events, f_order_rounds, f_wall, f_n };
    std::array<double, f_n> mine{};
    mine[f_role] = static_cast<double>(static_cast<int>(role));
    const bool writes = role == Role::serial || role == Role::server;
    mine[f_events] = static_cast<double>(writes ? writer->events() : stats.events);
    mine[f_bytes] = writes ? static_cast<double>(writer->payload_bytes()) : 0;  // clients' bytes: not reported
    mine[f_seconds] = t_stream_end - t_stream_start;
    mine[f_idle] = stats.idle_seconds;
    mine[f_wait] = stats.wait_seconds;
    mine[f_write] = writes ? writer->write_seconds() : 0;
    mine[f_join] = stats.join_seconds;
    mine[f_flat] = stats.flatten_seconds;
    mine[f_flat_bytes] = static_cast<double>(stats.flatten_bytes);
    mine[f_order] = role == Role::server ? stats.order_seconds : 0;
    mine[f_order_events] = static_cast<double>(stats.order_events);
    mine[f_order_rounds] = static_cast<double>(stats.order_rounds);
    mine[f_wall] = now_seconds() - t_start;
    std::vector<double> all(mine.begin(), mine.end());
    if (parallel()) {
        all.resize(static_cast<std::size_t>(size) * f_n);
        MPI_Request r = MPI_REQUEST_NULL;
        check_mpi(MPI_Iallgather(mine.data(), f_n, MPI_DOUBLE, all.data(), f_n, MPI_DOUBLE, comm, &r), "MPI_Iallgather");
        wait_gently(r, opt.idle_sleep_max_us);
    }
    Report& rep = report;
    rep = Report{};
    rep.parallel = parallel();
    rep.time_order = parallel() && opt.time_order && !opt.filename.empty();
    rep.order_failed = rep.time_order && order_error != nullptr;  // agreed: the same on every rank
    for (int k = 0; k < (parallel() ? size : 1); ++k) {
        const double* f = &all[static_cast<std::size_t>(k) * f_n];
        rep.wall_seconds = std::max(rep.wall_seconds, f[f_wall]);
        rep.join_seconds = std::max(rep.join_seconds, f[f_join]);
        if (f[f_flat] > rep.flatten_seconds) {
            rep.flatten_seconds = f[f_flat];
            rep.flatten_bytes = static_cast<std::uint64_t>(f[f_flat_bytes]);
        }
        rep.order_seconds = std::max(rep.order_seconds, f[f_order]);
        rep.order_events += static_cast<std::uint64_t>(f[f_order_events]);
        rep.order_rounds = std::max(rep.order_rounds, static_cast<std::uint64_t>(f[f_order_rounds]));
        const auto r = static_cast<Role>(static_cast<int>(f[f_role]));
        if (r == Role::serial || r == Role::server) {
            ServerReport s;
            s.rank = k;
            s.events = static_cast<std::uint64_t>(f[f_events]);
            s.bytes = static_cast<std::uint64_t>(f[f_bytes]);
            s.seconds = f[f_seconds];
            s.idle_fraction = std::min(1.0, ratio(f[f_idle], s.seconds));
            s.busy_fraction = 1 - s.idle_fraction;
            s.write_fraction = std::min(1.0, ratio(f[f_write], s.seconds));
            s.bytes_per_second = ratio(static_cast<double>(s.bytes), s.seconds);
            rep.events += s.events;
            rep.bytes += s.bytes;
            rep.servers.push_back(s);
        } else if (r == Role::client) {
            ClientReport c;
            c.rank = k;
            c.events = static_cast<std::uint64_t>(f[f_events]);
            c.seconds = f[f_seconds];
            c.wait_seconds = f[f_wait];
            c.wait_fraction = std::min(1.0, ratio(c.wait_seconds, c.seconds));
            rep.clients.push_back(c);
        }
    }
    rep.events_per_second = ratio(static_cast<double>(rep.events), rep.wall_seconds);
    rep.bytes_per_second = ratio(static_cast<double>(rep.bytes), rep.wall_seconds);
    judge(rep);
    rep.complete = true;
    if (opt.report && rank == 0) {
        std::string text = rep.text();
        for (std::size_t i = 0; (i = text.find('\n', i)) != std::string::npos; i += 3) text.replace(i, 1, "\n  ");
        emit(LogLevel::info, who() + ": " + text);
    }
}

}  // namespace detail

std::string Report::text() const {
    using namespace detail;
    std::string t = "report: " + group_digits(events) + " events, " + human_bytes(static_cast<double>(bytes));
    char b[160];
    std::snprintf(b, sizeof b, " in %.2f s: %s events/s, %s/s", wall_seconds,
                  group_digits(static_cast<std::uint64_t>(events_per_second)).c_str(), human_bytes(bytes_per_second).c_str());
    t += b;
    if (time_order) {
        if (order_failed)
            std::snprintf(b, sizeof b, "; time order %.2f s (failed: the events are in arrival order)", order_seconds);
        else if (order_events > 0 && order_rounds > 1)
            std::snprintf(b, sizeof b, "; time order %.2f s (%s events rewritten, in %s rounds)", order_seconds,
                          group_digits(order_events).c_str(), group_digits(order_rounds).c_str());
        else if (order_events > 0)
            std::snprintf(b, sizeof b, "; time order %.2f s (%s events rewritten)", order_seconds,
                          group_digits(order_events).c_str());
        else
            std::snprintf(b, sizeof b, "; time order %.2f s (in order already)", order_seconds);
        t += b;
    }
    if (parallel) {
        std::snprintf(b, sizeof b, "; join %.2f s", join_seconds);
        t += b;
        if (flatten_seconds > 0) {
            std::snprintf(b, sizeof b, " (self-contained: %s copied in %.2f s)",
                          human_bytes(static_cast<double>(flatten_bytes)).c_str(), flatten_seconds);
            t += b;
        }
    }
    auto server_line = [&](const ServerReport& s, const std::string& name) {
        return "\n" + name + ": " + group_digits(s.events) + " events, busy " + percent(s.busy_fraction) + " (writing " +
               percent(s.write_fraction) + "), idle " + percent(s.idle_fraction) + ", " +
               human_bytes(s.bytes_per_second) + "/s";
    };
    if (!parallel && !servers.empty()) {
        const ServerReport& s = servers[0];
        const double writing = s.write_fraction * s.seconds;
        t += "\nwriting " + percent(s.write_fraction) + " of the time";
        if (writing > 0) t += ", " + human_bytes(static_cast<double>(s.bytes) / writing) + "/s while writing";
    } else if (servers.size() <= 8) {
        for (std::size_t k = 0; k < servers.size(); ++k)
            t += server_line(servers[k], "server " + std::to_string(k) + " (rank " + std::to_string(servers[k].rank) + ")");
    } else {
        std::size_t top = 0;
        double busy = 0;
        for (std::size_t k = 0; k < servers.size(); ++k) {
            busy += servers[k].busy_fraction;
            if (servers[k].busy_fraction > servers[top].busy_fraction) top = k;
        }
        t += "\nservers (" + std::to_string(servers.size()) + "): busy " + percent(busy / static_cast<double>(servers.size())) +
             " on average" + server_line(servers[top], "busiest, server " + std::to_string(top));
    }
    if (!clients.empty()) {
        std::size_t top = 0;
        double wait = 0;
        for (std::size_t k = 0; k < clients.size(); ++k) {
            wait += clients[k].wait_fraction;
            if (clients[k].wait_fraction > clients[top].wait_fraction) top = k;
        }
        t += "\nclients (" + std::to_string(clients.size()) + "): waited on back-pressure " +
             percent(wait / static_cast<double>(clients.size())) + " of their time on average, at most " +
             percent(clients[top].wait_fraction) + " (client " + std::to_string(top) + ")";
    }
    t += "\nverdict: " + verdict;
    return t;
}

// ============================================================================ [>>impl-api]
// 22. SmallData out-of-line API: construction (roles, checks, the server loop), done(),
//     summaries and attributes, reductions, accessors.

namespace detail {
// A random token, drawn once per run by rank 0 of comm, that tags its part files.
inline std::uint64_t new_run_token() {
    std::random_device rd;
    std::uint64_t t = (std::uint64_t(rd()) << 32) ^ rd();
    t ^= static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    t ^= static_cast<std::uint64_t>(::getpid()) << 17;
    return t ? t : 1;
}

inline void Impl::setup_parallel() {
    const Options& o = opt;
    who() = "smalldata[rank " + std::to_string(rank) + "]";
    // SMALLDATA_SERVERS=N at launch overrides Options::servers (as psana's PS_SRV_NODES).
    std::string problem = servers_from_environment(opt);
    if (problem.empty()) problem = option_problem(o);
    Errc code = Errc::option;
    if (problem.empty()) {
        problem = layout_problem(o, size);
        code = Errc::layout;
    }
    if (problem.empty()) {
        n_servers = o.servers;
        n_clients = o.clients == -1 ? size - o.servers : o.clients;
        if (rank < n_servers) {
            role = Role::server;
            server_idx = rank;
        } else if (rank < n_servers + n_clients) {
            role = Role::client;
            client_idx = rank - n_servers;
            server_idx = client_idx % n_servers;
        } else {
            role = Role::other;
        }
        who() = "smalldata[rank " + std::to_string(rank) + ", " + role_name(role) +
                (role == Role::client ? " " + std::to_string(client_idx)
                                      : role == Role::server ? " " + std::to_string(server_idx) : std::string()) +
                "]";
    } else {
        role = Role::other;
    }
    check_mpi(MPI_Comm_dup(o.comm, comm.out()), "MPI_Comm_dup");
    check_mpi(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    // Every rank's own options first (an invalid option on one rank is an error on all),
    // then whether they agree: the minimum and the maximum of each.
    agree_or_throw(problem.empty(), code, problem);
    const std::array<long long, 5> ck = compression_key(o.compression);
    const std::pair<const char*, long long> agree[] = {
        {"servers", o.servers},
        {"clients", o.clients},
        {"filename", static_cast<long long>(std::hash<std::string>{}(o.filename) & 0x7fffffffffffLL)},
        {"batch_size", static_cast<long long>(o.batch_size)},
        {"cache_size", static_cast<long long>(o.cache_size)},
        {"batch_bytes", static_cast<long long>(o.batch_bytes)},
        {"send_buffers", o.send_buffers},
        {"recv_buffers", o.recv_buffers},
        {"shared_memory", o.shared_memory ? 1 : 0},
        {"checkpoint_seconds", std::llround(o.checkpoint_seconds * 1e6)},
        {"progress_seconds", std::llround(o.progress_seconds * 1e3)},
        {"report", o.report ? 1 : 0},
        {"cache_bytes", static_cast<long long>(o.cache_bytes)},
        {"chunk_bytes", static_cast<long long>(o.chunk_bytes)},
        {"idle_sleep_max_us", o.idle_sleep_max_us},
        {"abort_grace_ms", o.abort_grace_ms},
        {"abort_close_ms", o.abort_close_ms},
        {"preallocate", o.preallocate ? 1 : 0},
        {"write_thread", o.write_thread},
        {"cache_memory", static_cast<long long>(o.cache_memory)},
        {"compression (kind)", ck[0]},
        {"compression (level)", ck[1]},
        {"compression (shuffle)", ck[2]},
        {"compression (filter_id)", ck[3]},
        {"compression (params)", ck[4]},
        {"self_contained", o.self_contained ? 1 : 0},
        {"time_order", o.time_order ? 1 : 0},
    };
    constexpr std::size_t n = sizeof agree / sizeof agree[0];
    long long mm[2 * n + 1];
    for (std::size_t i = 0; i < n; ++i) {
        mm[i] = agree[i].second;
        mm[i + n] = -agree[i].second;
    }
    run_token = rank == 0 ? new_run_token() : 0;
    mm[2 * n] = -static_cast<long long>(run_token >> 1);  // rank 0's token: the minimum
    MPI_Request r = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, mm, static_cast<int>(2 * n + 1), MPI_LONG_LONG, MPI_MIN, comm, &r),
              "MPI_Iallreduce");
    wait_gently(r, o.idle_sleep_max_us);
    run_token = static_cast<std::uint64_t>(-mm[2 * n]) << 1 | 1;
    for (std::size_t i = 0; i < n; ++i)
        if (mm[i] != -mm[i + n]) throw_error(Errc::option, std::string("option '") + agree[i].first + "' differs between ranks");
    check_mpi(MPI_Comm_split(comm, role == Role::client ? 0 : MPI_UNDEFINED, rank, clients_comm.out()), "MPI_Comm_split");
    if (o.time_order)  // agreed above: collective
        check_mpi(MPI_Comm_split(comm, role == Role::server ? 0 : MPI_UNDEFINED, rank, servers_comm.out()), "MPI_Comm_split");
    routed = route_time_order && n_servers > 1 && StreamMerge::budget(o, n_clients) > 0;  // agreed options
    if (routed)
        check_mpi(MPI_Comm_split(comm, role == Role::client ? 0 : MPI_UNDEFINED, rank, grid_comm.out()), "MPI_Comm_split");
    if (o.shared_memory || o.write_thread < 0) {  // both options agreed above: collective
        check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, node_comm.out()),
                  "MPI_Comm_split_type");
        check_mpi(MPI_Comm_size(node_comm, &ranks_on_node), "MPI_Comm_size");
        if (o.time_order) {  // agreed: collective over the node
            int mine = role == Role::server ? 1 : 0;
            check_mpi(MPI_Allreduce(&mine, &servers_on_node, 1, MPI_INT, MPI_SUM, node_comm), "MPI_Allreduce");
        }
    }
    if (o.shared_memory) setup_shared_memory();
    if (rank == 0) {  // the layout in use, once per run
        char line[200];
        std::snprintf(line, sizeof line, "smalldata: parallel mode, %d ranks: %d server%s, %d client%s, %d other (servers from %s)",
                      size, n_servers, n_servers == 1 ? "" : "s", n_clients, n_clients == 1 ? "" : "s",
                      size - n_servers - n_clients, std::getenv("SMALLDATA_SERVERS") ? "SMALLDATA_SERVERS" : "Options::servers");
        emit(LogLevel::info, line);
    }
    if (rank == 0 && n_servers > n_clients)
        warn(std::to_string(n_servers - n_clients) + " of the " + std::to_string(n_servers) +
             " servers have no client; their part files stay empty");
    exit_guard.install(this);
    install_finalize_hook();
    open_outputs();
}

template <class T>
void fill_neutral_as(void* p, std::size_t n, int op) {
    T v{};
    if (op == op_min) v = std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
    if (op == op_max) v = std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
    for (std::size_t i = 0; i < n; ++i) std::memcpy(static_cast<unsigned char*>(p) + i * sizeof(T), &v, sizeof(T));
}
// Unsigned elements under min and max: their top bit flipped, reduced as the signed type of
// their size, flipped back (the same order; measured: MPICH 4.0.2, Debian 12's, compares every
// unsigned type as signed under MPI_MIN and MPI_MAX: min(255, 2) of uint8 came out 255).
template <class U>
void flip_top_bits(void* p, std::size_t n) {
    constexpr U top = static_cast<U>(U(1) << (8 * sizeof(U) - 1));
    U* u = static_cast<U*>(p);
    for (std::size_t i = 0; i < n; ++i) u[i] = static_cast<U>(u[i] ^ top);
}
inline bool flip_unsigned(void* p, std::size_t n, DType dt) {  // false: not unsigned, nothing done
    switch (dt) {
        case DType::u8: flip_top_bits<std::uint8_t>(p, n); return true;
        case DType::u16: flip_top_bits<std::uint16_t>(p, n); return true;
        case DType::u32: flip_top_bits<std::uint32_t>(p, n); return true;
        case DType::u64: flip_top_bits<std::uint64_t>(p, n); return true;
        default: return false;
    }
}

// One element-wise reduction among the clients, in place, in pieces of at most
// reduce_piece_bytes and INT_MAX elements (MPI counts are int).
inline void allreduce_in_pieces(Impl& im, void* inout, std::size_t count, DType dt, int op) {
    const MPI_Op mop = op == op_sum ? MPI_SUM : op == op_min ? MPI_MIN : MPI_MAX;
    const bool flipped = op != op_sum && flip_unsigned(inout, count, dt);
    // The signed type of the same size: DType lists i8..i64, then u8..u64.
    const MPI_Datatype type = mpi_type(flipped ? static_cast<DType>(static_cast<int>(dt) - static_cast<int>(DType::u8)) : dt);
    const std::size_t size = dtype_size(dt);
    const std::size_t piece = std::min(std::max(reduce_piece_bytes / size, std::size_t(1)),
                                       static_cast<std::size_t>(INT_MAX));
    for (std::size_t at = 0; at < count; at += piece) {
        const std::size_t n = std::min(piece, count - at);
        MPI_Request r = MPI_REQUEST_NULL;
        check_mpi(MPI_Iallreduce(MPI_IN_PLACE, static_cast<unsigned char*>(inout) + at * size, static_cast<int>(n),
                                 type, mop, im.clients_comm, &r),
                  "MPI_Iallreduce");
        wait_gently(r, im.opt.idle_sleep_max_us);
    }
    if (flipped) flip_unsigned(inout, count, dt);
}

// The in-place reductions' description of one client's call (SmallData::reduce_buffer):
// op, dtype, rank, max_rank dims, then a problem of the call on its own and whether the
// client contributes.
inline constexpr std::size_t ip_problem = 3 + static_cast<std::size_t>(max_rank);
inline constexpr std::size_t ip_contributes = ip_problem + 1;
inline constexpr std::size_t ip_fields = ip_problem + 2;

// Every agreement among the clients is one MPI_Iallreduce (MPI_MIN over each field and its
// complement: each field's minimum and maximum) of ag_fields fields: a header, then the
// call's own fields (a value reduction's vr_fields, an in-place one's ip_fields). One size
// for every call, so that whatever two clients call, their collectives meet: a value
// reduction and an in-place one are told apart, and a client in done() meets a client
// waiting in a reduction, which so learns that it will not come (SmallData::agree).
// Every field stays within INT64_MAX: MPICH 4.0 compares MPI_UINT64_T under MPI_MIN as
// signed, and x and ~x then still compare alike.
inline constexpr std::size_t vr_fields = 5;  // op, dtype, kind, count, contributes (agree_call)
enum AgreeFamily : std::uint64_t { ag_value = 0, ag_in_place = 1, ag_done = 2 };
inline constexpr std::size_t ag_family = 0;           // AgreeFamily
inline constexpr std::size_t ag_done_client = 1;      // the client's index in done(), else ag_none
inline constexpr std::size_t ag_stop = 2;             // in done(): the stop that sent it there (stop_code)
inline constexpr std::size_t ag_value_client = 3;     // the client's index in a value reduction, else ag_none
inline constexpr std::size_t ag_in_place_client = 4;  // the client's index in an in-place one, else ag_none
inline constexpr std::size_t ag_header = 5;
inline constexpr std::size_t ag_fields = ag_header + (ip_fields > vr_fields ? ip_fields : vr_fields);
inline constexpr std::uint64_t ag_none = static_cast<std::uint64_t>(INT64_MAX);
// detail::stop_requested as an agreement field (0 none, 255 request_stop(), else the signal), and back.
inline std::uint64_t stop_code(int stop) { return stop > 0 ? static_cast<std::uint64_t>(stop) : stop < 0 ? 255 : 0; }
inline int stop_of_code(std::uint64_t code) { return code == 255 ? -1 : static_cast<int>(code); }
enum InPlaceProblem : std::uint64_t { ip_ok = 0, ip_null = 1, ip_rank = 2, ip_size = 3 };

// What is wrong with one client's buffer on its own, and its element count.
inline std::uint64_t in_place_problem(const void* data, DType dt, const std::uint64_t* dims, std::size_t rank,
                                      std::size_t& count) {
    count = 0;
    if (rank > static_cast<std::size_t>(max_rank)) return ip_rank;
    for (std::size_t i = 0; i < rank; ++i)
        if (dims[i] == 0) return ip_ok;  // no elements
    const std::uint64_t most = std::numeric_limits<std::size_t>::max() / dtype_size(dt);
    std::uint64_t n = 1;
    for (std::size_t i = 0; i < rank; ++i) {
        if (n > most / dims[i]) return ip_size;
        n *= dims[i];
    }
    count = static_cast<std::size_t>(n);
    return data == nullptr ? ip_null : ip_ok;
}

// The error text of an in-place reduction, from every client's description (n of them,
// ip_fields each): the calls with a problem of their own if any, else every call; calls
// alike are listed once, with their clients (parallel mode).
inline std::string in_place_text(const std::uint64_t* all, std::size_t n, bool parallel) {
    auto call = [](const std::uint64_t* d) {
        std::string s = d[0] == op_sum ? "sum" : d[0] == op_min ? "min" : "max";
        s += "() of ";
        s += dtype_name(static_cast<DType>(d[1]));
        if (d[2] > static_cast<std::uint64_t>(max_rank)) return s + " with " + std::to_string(d[2]) + " dimensions";
        Shape sh;
        sh.rank = static_cast<std::uint8_t>(d[2]);
        for (std::size_t i = 0; i < sh.rank; ++i) sh.dims[i] = d[3 + i];
        return s + " " + sh.str();
    };
    auto problem = [](std::uint64_t p) -> std::string {
        if (p == ip_null) return "a null pointer for ";
        if (p == ip_rank) return "more than " + std::to_string(max_rank) + " dimensions: ";
        if (p == ip_size) return "a shape too large to address: ";
        return "";
    };
    bool problems = false;
    for (std::size_t c = 0; c < n; ++c) problems = problems || all[c * ip_fields + ip_problem] != ip_ok;
    std::vector<std::pair<std::string, std::vector<std::size_t>>> kinds;  // a call, its clients
    for (std::size_t c = 0; c < n; ++c) {
        const std::uint64_t* d = all + c * ip_fields;
        if (problems && d[ip_problem] == ip_ok) continue;
        const std::string k = problem(d[ip_problem]) + call(d);
        auto it = std::find_if(kinds.begin(), kinds.end(), [&](const auto& x) { return x.first == k; });
        if (it == kinds.end()) it = kinds.insert(kinds.end(), {k, {}});
        it->second.push_back(c);
    }
    std::string text = problems ? "in-place reduction: a buffer that cannot be reduced:"
                                : "in-place reduction: the clients' buffers differ (each client must give the "
                                  "same op, element type and shape):";
    for (std::size_t i = 0; i < kinds.size(); ++i) {
        const std::vector<std::size_t>& cs = kinds[i].second;
        text += std::string(i ? ";" : "") + " " + kinds[i].first;
        if (!parallel) continue;
        text += cs.size() == 1 ? " on client " : " on clients ";
        for (std::size_t j = 0; j < cs.size(); ++j) text += (j ? ", " : "") + std::to_string(cs[j]);
    }
    return text;
}

inline void fill_neutral(void* p, std::size_t n, DType t, int op) {
    switch (t) {
        case DType::i8: fill_neutral_as<std::int8_t>(p, n, op); break;
        case DType::i16: fill_neutral_as<std::int16_t>(p, n, op); break;
        case DType::i32: fill_neutral_as<std::int32_t>(p, n, op); break;
        case DType::i64: fill_neutral_as<std::int64_t>(p, n, op); break;
        case DType::u8: fill_neutral_as<std::uint8_t>(p, n, op); break;
        case DType::u16: fill_neutral_as<std::uint16_t>(p, n, op); break;
        case DType::u32: fill_neutral_as<std::uint32_t>(p, n, op); break;
        case DType::u64: fill_neutral_as<std::uint64_t>(p, n, op); break;
        case DType::f32: fill_neutral_as<float>(p, n, op); break;
        case DType::f64: fill_neutral_as<double>(p, n, op); break;
        case DType::boolean: fill_neutral_as<std::uint8_t>(p, n, op); break;
    }
}
}  // namespace detail

SmallData::SmallData(Options options) : impl_(std::make_unique<detail::Impl>()) {
    using namespace detail;
    Impl& im = *impl_;
    im.owner = this;
    im.opt = std::move(options);
    const Options& o = im.opt;
    ensure_mpi();
    int world = 1;
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &world), "MPI_Comm_size");
    const std::string launcher = launcher_problem(world);
    if (!launcher.empty()) throw_error(Errc::layout, launcher);
    if (o.comm == MPI_COMM_NULL) throw_error(Errc::option, "comm is MPI_COMM_NULL");
    check_mpi(MPI_Comm_size(o.comm, &im.size), "MPI_Comm_size");
    check_mpi(MPI_Comm_rank(o.comm, &im.rank), "MPI_Comm_rank");

    if (im.size == 1) {  // serial mode: the writer runs in this process
        who() = "smalldata";
        const std::string problem = option_problem(o);
        if (!problem.empty()) throw_error(Errc::option, problem);
        im.role = Role::serial;
        im.client_idx = 0;
        im.n_clients = 1;
        if (!o.filename.empty()) {
            check_creatable(o.filename, "file", static_cast<std::uint64_t>(::getpid()));
            const std::string bad = final_in_the_way(o.filename);
            if (!bad.empty()) throw_error(Errc::option, "cannot write '" + o.filename + "': " + bad);
            replace_old_file(o.filename);
        }
        im.writer = std::make_unique<Writer>(o.filename, im.opt, use_write_thread(o, 1, false));
        auto sink = std::make_unique<SerialSink>(*im.writer, im.opt.callbacks);
        const bool direct = sink->direct();
        im.sink = std::move(sink);
        im.serial_buf.resize(direct ? sizeof(WireHeader) : o.batch_bytes);  // direct: never filled
        im.packer = std::make_unique<Packer>(im.sink.get(), &im.serial_buf, o.batch_size, o.batch_bytes);
        if (direct) im.packer->set_direct();
        if (!o.filename.empty()) im.packer->set_max_age(o.checkpoint_seconds * checkpoint_share);
        packer_ = im.packer.get();
        im.exit_guard.install(&im);
        im.t_stream_start = now_seconds();
        im.progress_start();
        return;
    }

    im.parallel_slot.take();  // before any collective: a second one would hang in them
    im.setup_parallel();      // roles, agreed options, communicators, part files: fails on all ranks
    if (im.role == Role::client) {
        auto sender = std::make_unique<Sender>(im);
        std::vector<unsigned char>* first = sender->first();
        Sender& snd = *sender;
        im.sink = std::move(sender);
        im.packer = std::make_unique<Packer>(im.sink.get(), first, o.batch_size, o.batch_bytes);
        snd.set_packer(im.packer.get());
        if (!o.filename.empty()) im.packer->set_max_age(o.checkpoint_seconds * checkpoint_share);
        packer_ = im.packer.get();
        im.t_stream_start = now_seconds();
    } else if (im.role == Role::server) {
        im.run_server();  // returns when every client of this server is done; never throws
    }
}

SmallData::~SmallData() {
    if (!impl_ || impl_->finished) return;
    if (impl_->parallel() && std::uncaught_exceptions() > 0)
        detail::abort_job(*impl_, "SmallData destroyed by an exception before done() was called");
    try {
        done();
    } catch (const std::exception& e) {
        if (impl_->parallel()) detail::abort_job(*impl_, "done() failed in the destructor: " + detail::bare_message(e));
        detail::warn(std::string("done() failed in the destructor: ") + e.what());
    } catch (...) {
        if (impl_->parallel()) detail::abort_job(*impl_, "done() failed in the destructor");
        detail::warn("done() failed in the destructor");
    }
}

namespace detail {
// Options::filename "" writes no file: what save_summary() and save_attribute() were given
// has nowhere to go. Said once, at done(), by the rank that holds it, naming it.
inline void warn_unsaved(const Impl& im) {
    if (!im.opt.filename.empty() || (im.summary.empty() && im.attributes.empty())) return;
    std::vector<std::string> what;
    for (const SummaryItem& s : im.summary) what.push_back("summary '" + attribute_text(s.name) + "'");
    for (const AttributeItem& a : im.attributes) what.push_back(attribute_what(a.path, a.value.name));
    std::string list;
    const std::size_t shown = std::min<std::size_t>(what.size(), 5);
    for (std::size_t i = 0; i < shown; ++i) list += (i ? ", " : "") + what[i];
    if (what.size() > shown) list += " and " + std::to_string(what.size() - shown) + " more";
    warn("no output file (Options::filename is empty): not saved: " + list);
}
}  // namespace detail

void SmallData::done() {
    using namespace detail;
    Impl& im = *impl_;
    if (im.finished) return;
    im.finished = true;
    im.parallel_slot.release();  // another SmallData may start once this one is done
    packer_ = nullptr;
    warn_unsaved(im);
    if (im.role != Role::server) im.t_stream_end = now_seconds();
    if (im.role == Role::serial) {
        // Whatever fails (a callback in the last batch, a write), the writer is finished:
        // the events handed over are written, the datasets aligned, the summary saved. The
        // first error is thrown afterwards.
        std::exception_ptr first;
        try {
            im.packer->flush();
        } catch (...) {
            first = std::current_exception();
        }
        im.stats.events = im.packer->events();
        try {
            im.writer->finish(&im.summary, &im.attributes);
        } catch (...) {
            if (!first) first = std::current_exception();
        }
        im.stats.write_seconds = im.writer->write_seconds();

        im.exit_guard.uninstall();
        if (first) std::rethrow_exception(first);
        im.make_report();
        end_by_stop_signal(im);
        return;
    }
    if (im.role == Role::client) {
        try {
            im.packer->flush();
            im.stats.events = im.packer->events();
            static_cast<Sender*>(im.sink.get())->finish(im.packer->events());
            agree_done();
        } catch (const std::exception& e) {
            abort_job(im, e.what());
        } catch (...) {
            abort_job(im, "an exception of unknown type while finishing the event stream");
        }
    }
    try {
        im.order_by_time();
        im.join();
    } catch (...) {
        im.shm_win.free();  // every rank gets the join's outcome: still collective
        im.exit_guard.uninstall();
        throw;
    }
    im.shm_win.free();
    im.make_report();  // collective, like the join: every rank gets the same report
    im.exit_guard.uninstall();
    if (im.order_error) std::rethrow_exception(im.order_error);  // the file is complete, in arrival order
    end_by_stop_signal(im);
}

void request_stop() noexcept {
    int none = 0;
    detail::stop_requested.compare_exchange_strong(none, -1);
}

void SmallData::stop_at_event() {
    const int sig = detail::stop_requested.load();
    detail::log(LogLevel::info, std::string("interrupted by ") + detail::stop_name(sig) + ": ending the run now (done())");
    done();  // with a signal, ends the process (below); throws if the run cannot end well
    detail::throw_error(Errc::interrupted, std::string("the run was stopped by ") + detail::stop_name(sig) +
                                               " after this rank's events so far were written (done() has run)");
}

void SmallData::event_after_done() const {
    const detail::Impl& im = *impl_;
    if (im.finished && (im.role == Role::serial || im.role == Role::client))
        detail::throw_error(Errc::usage, "event() after done(): the event is not written");
}

Role SmallData::role() const noexcept { return impl_->role; }
bool SmallData::summary() const noexcept { return impl_->role == Role::serial || impl_->role == Role::client; }
int SmallData::rank() const noexcept { return impl_->rank; }
int SmallData::size() const noexcept { return impl_->size; }
int SmallData::client_index() const noexcept { return impl_->client_idx; }
int SmallData::client_count() const noexcept { return impl_->n_clients; }
int SmallData::server_index() const noexcept { return impl_->server_idx; }
const Options& SmallData::options() const noexcept { return impl_->opt; }

Share SmallData::share(std::int64_t begin, std::int64_t end) const noexcept {
    const detail::Impl& im = *impl_;
    if (im.role == Role::serial) return Share(begin, end, begin, 1);
    if (im.role == Role::client) return Share(begin, end, begin + im.client_idx, im.n_clients);
    return Share(begin, begin, begin, 1);
}

const Report& SmallData::report() const noexcept { return impl_->report; }

Stats SmallData::stats() const noexcept {
    const detail::Impl& im = *impl_;
    Stats s = im.stats;
    if (im.packer) s.events = im.packer->events();
    if (im.writer) s.write_seconds = im.writer->write_seconds();
    return s;
}

void SmallData::warn_skipped_summary(std::string_view name) const {
    const detail::Impl& im = *impl_;
    if (im.role == Role::serial || im.client_idx == 0)
        detail::warn("save_summary: '" + std::string(name) + "' has no value (empty std::optional); skipped");
}

namespace detail {
inline SummaryItem* summary_slot(Impl& im, std::string_view name) {
    if (im.finished) throw_error(Errc::usage, "save_summary('" + std::string(name) + "') after done()");
    validate_name(name, "summary");
    if (im.packer) im.packer->check_summary_name(name);
    for (SummaryItem& s : im.summary) {
        if (s.name == name) return &s;  // saving a name again replaces its value
        if (is_group_of(s.name, name) || is_group_of(name, s.name))
            throw_error(Errc::name, "summary '" + std::string(name) + "' clashes with the summary '" + s.name +
                                        "' (one would be a group of the other)");
    }
    if (im.packer) im.packer->add_summary_name(name);  // later fields are checked against it
    im.summary.emplace_back();
    im.summary.back().name = std::string(name);
    return &im.summary.back();
}
}  // namespace detail

// save_summary() and save_attribute() keep what they are given on one rank (the serial
// process, or client 0) and ignore it on the other clients; what can be checked without
// that rank's state (done() called, the name, the value) is checked on every client, so
// that the same bad call fails alike on each.
void SmallData::save_summary_raw(std::string_view name, DType dt, const Shape& shape, const void* data) {
    detail::Impl& im = *impl_;
    if (im.finished) detail::throw_error(Errc::usage, "save_summary('" + std::string(name) + "') after done()");
    detail::validate_name(name, "summary");
    std::uint64_t bytes = 0;
    if (shape.rank > max_rank || !detail::value_bytes(dt, shape, bytes))
        detail::throw_error(Errc::usage, "summary '" + std::string(name) + "': a value of " + dtype_name(dt) + " " +
                                             shape.str() + " is larger than 2 GiB");
    if (data == nullptr && bytes != 0)
        detail::throw_error(Errc::usage, "summary '" + std::string(name) + "': the value of " + dtype_name(dt) + " " +
                                             shape.str() + " is a null pointer");
    if (im.role != Role::serial && im.client_idx != 0) return;
    detail::SummaryItem* s = detail::summary_slot(im, name);
    s->dtype = dt;
    s->shape = shape;
    s->is_string = false;
    const auto* p = static_cast<const unsigned char*>(data);
    s->bytes.assign(p, p + static_cast<std::size_t>(bytes));
    if (s->bytes.empty()) s->bytes.resize(1);  // H5Dwrite wants a valid pointer
}

void SmallData::save_summary_string(std::string_view name, const std::string& text) {
    detail::Impl& im = *impl_;
    if (im.finished) detail::throw_error(Errc::usage, "save_summary('" + std::string(name) + "') after done()");
    detail::validate_name(name, "summary");
    if (im.role != Role::serial && im.client_idx != 0) return;
    detail::SummaryItem* s = detail::summary_slot(im, name);
    s->is_string = true;
    s->text = text;
}

namespace detail {
// Before the value is looked at: Errc::usage after done(), Errc::name for a bad path or name.
inline void check_attribute_call(const Impl& im, std::string_view path, std::string_view name) {
    if (im.finished)
        throw_error(Errc::usage, "save_attribute(): " + attribute_what(path, name) + " after done()");
    validate_attribute(path, name);
}
// The item of (path, name): the one saved before (its value is replaced), or a new one.
inline AttributeItem* attribute_slot(Impl& im, std::string_view path, std::string_view name) {
    for (AttributeItem& a : im.attributes)
        if (a.path == path && a.value.name == name) return &a;
    im.attributes.emplace_back();
    im.attributes.back().path = std::string(path);
    im.attributes.back().value.name = std::string(name);
    return &im.attributes.back();
}
}  // namespace detail

void SmallData::save_attribute_raw(std::string_view path, std::string_view name, DType dt, const Shape& shape,
                                   const void* data) {
    detail::Impl& im = *impl_;
    detail::check_attribute_call(im, path, name);
    std::uint64_t bytes = 0;
    if (shape.rank > max_rank || !detail::value_bytes(dt, shape, bytes))
        detail::throw_error(Errc::usage, detail::attribute_what(path, name) + ": a value of " + dtype_name(dt) + " " +
                                             shape.str() + " is larger than 2 GiB");
    if (data == nullptr && bytes != 0)
        detail::throw_error(Errc::usage, detail::attribute_what(path, name) + ": the value of " + dtype_name(dt) + " " +
                                             shape.str() + " is a null pointer");
    if (im.role != Role::serial && im.client_idx != 0) return;
    detail::AttributeItem* a = detail::attribute_slot(im, path, name);
    detail::SummaryItem& v = a->value;
    v.dtype = dt;
    v.shape = shape;
    v.is_string = false;
    v.text.clear();
    const auto* p = static_cast<const unsigned char*>(data);
    v.bytes.assign(p, p + static_cast<std::size_t>(bytes));
    if (v.bytes.empty()) v.bytes.resize(1);  // H5Awrite wants a valid pointer
}

void SmallData::save_attribute_string(std::string_view path, std::string_view name, std::string_view text) {
    detail::Impl& im = *impl_;
    detail::check_attribute_call(im, path, name);
    if (text.find('\0') != std::string_view::npos)
        detail::throw_error(Errc::usage, detail::attribute_what(path, name) +
                                             ": the string has a NUL byte, where an HDF5 string would end");
    if (im.role != Role::serial && im.client_idx != 0) return;
    detail::AttributeItem* a = detail::attribute_slot(im, path, name);
    a->value.is_string = true;
    a->value.text = std::string(text);
    a->value.bytes.clear();
}

void SmallData::check_reduce_role(int op) const {
    const detail::Impl& im = *impl_;
    const char* what = op == detail::op_sum ? "sum" : op == detail::op_min ? "min" : "max";
    if (im.role == Role::server || im.role == Role::other)
        detail::throw_error(Errc::usage, std::string(what) + "() called on a " + role_name(im.role) +
                                             " rank: reductions are collective over the clients; call them where "
                                             "summary() is true");
    if (im.finished) detail::throw_error(Errc::usage, std::string(what) + "() after done()");
}

// A reduction's first collective (its agreement) is where a client waits for the others to
// come. A stop (SIGTERM or SIGINT to every rank, as a scheduler sends it, or
// request_stop()) sends the clients still in their loops to done() at their next event(),
// never into this reduction; their done() meets this agreement (SmallData::agree) once
// their events are shipped. A client waiting here that has seen the stop itself waits
// stop_reduction_grace more (a client merely late still comes), then leaves the reduction
// unfinished (its buffer is the Impl's, which outlives it, and done()'s agreement has
// another) and runs done() as event() would: the others' done() agreements meet this one,
// then its own. The data's own collective comes only once every client has agreed:
// nothing can keep it waiting.
void SmallData::wait_agreement(MPI_Request& r) {
    detail::Impl& im = *impl_;
    double stop_seen = 0;
    detail::wait_until(
        [&] {
            int flag = 0;
            detail::check_mpi(MPI_Test(&r, &flag, MPI_STATUS_IGNORE), "MPI_Test");
            if (flag) return true;
            if (detail::stop_requested.load(std::memory_order_relaxed) == 0) return false;
            const double now = detail::now_seconds();
            if (stop_seen == 0) stop_seen = now;
            return now - stop_seen > detail::stop_reduction_grace;
        },
        im.opt.idle_sleep_max_us);
    if (r != MPI_REQUEST_NULL) stop_at_event();  // ends the process, or throws Errc::interrupted
}

// A client's call to an agreement among the clients: its family, its own fields (n of
// them: `call` for the minimum, `call_max` for the maximum, null: the same), and the header
// (detail::ag_*). Returns the agreement: field i's minimum at [i], the complement of its
// maximum at [ag_fields + i]. done()'s (family ag_done; SmallData::agree_done) is waited for
// plainly and returned as it is. A reduction's is waited for in wait_agreement, and goes on
// only if every client came with the same family: a client in done() with a stop (a signal
// or request_stop() that reached it, perhaps it alone) stops this client too (done(), then
// the process ends by that signal, or Errc::interrupted); one in done() without a stop is
// Errc::reduction naming it (every client must call each reduction before done()); a value
// reduction against an in-place one is Errc::reduction naming a client of each. Every
// client sees the same agreement, so all take the same way.
const std::uint64_t* SmallData::agree(std::uint64_t family, const std::uint64_t* call, const std::uint64_t* call_max,
                                      std::size_t n) {
    using namespace detail;
    Impl& im = *impl_;
    const bool in_done = family == ag_done;
    // Routed streams: this client's share of the grid first (the others may wait for it).
    if (im.routed && im.sink) static_cast<Sender&>(*im.sink).join_grid();
    std::vector<std::uint64_t>& buf = in_done ? im.done_agreement : im.agreement;
    buf.resize(2 * ag_fields);  // every field written below
    const auto me = static_cast<std::uint64_t>(im.client_idx);
    std::uint64_t lo[ag_fields] = {}, hi[ag_fields] = {};
    lo[ag_family] = family;
    lo[ag_done_client] = in_done ? me : ag_none;
    lo[ag_stop] = in_done ? stop_code(stop_requested.load()) : 0;
    lo[ag_value_client] = family == ag_value ? me : ag_none;
    lo[ag_in_place_client] = family == ag_in_place ? me : ag_none;
    std::copy(lo, lo + ag_header, hi);
    for (std::size_t i = 0; i < n; ++i) {
        lo[ag_header + i] = call[i];
        hi[ag_header + i] = call_max ? call_max[i] : call[i];
    }
    for (std::size_t i = 0; i < ag_fields; ++i) {
        buf[i] = lo[i];
        buf[ag_fields + i] = ~hi[i];
    }
    MPI_Request r = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(2 * ag_fields), MPI_UINT64_T, MPI_MIN,
                             im.clients_comm, &r),
              "MPI_Iallreduce");
    if (in_done) {
        wait_gently(r, im.opt.idle_sleep_max_us);
        return buf.data();
    }
    wait_agreement(r);
    const std::uint64_t* mm = buf.data();
    if (~mm[ag_fields + ag_family] == ag_done) {  // a client in done(): it will not come
        const std::uint64_t stop = ~mm[ag_fields + ag_stop];
        const std::string who = "client " + std::to_string(mm[ag_done_client]);
        if (stop != 0) {
            int none = 0;
            stop_requested.compare_exchange_strong(none, stop_of_code(stop));
            log(LogLevel::info, who + " ended its run early (" + stop_name(stop_of_code(stop)) +
                                    ") instead of coming to this reduction: this client ends its run too");
            stop_at_event();  // ends the process, or throws Errc::interrupted
        }
        throw_error(Errc::reduction, who + " called done() instead of this reduction (every client must call each "
                                           "reduction, in the same order, before done())");
    }
    if (mm[ag_family] != ~mm[ag_fields + ag_family])
        throw_error(Errc::reduction, "the clients' reductions do not agree: client " + std::to_string(mm[ag_value_client]) +
                                         " reduces a value (a number, std::array or std::vector), client " +
                                         std::to_string(mm[ag_in_place_client]) + " a buffer in place");
    return mm;
}

// done() of a client, once its events are shipped: the agreement every client calls there,
// in rounds until every client has (a client still in a reduction meets it instead, and
// so learns that this one will not come: SmallData::agree). Without it a client waiting
// in a reduction for one that went to done() (a stop that reached that one alone) waited
// for ever, and so did the whole job.
void SmallData::agree_done() {
    using namespace detail;
    Impl& im = *impl_;
    if (im.role != Role::client || im.n_clients < 2) return;
    for (;;) {
        const std::uint64_t* mm = agree(ag_done, nullptr, nullptr, 0);
        if (mm[ag_family] == ag_done) return;  // the smallest family: every client is here
    }
}

std::size_t SmallData::agree_call(int op, DType dt, int kind, std::size_t count, bool contributes, bool& any) {
    using namespace detail;
    Impl& im = *impl_;
    any = contributes;
    if (im.role == Role::serial) return count;
    // A vector's length is known from the clients that contribute; the rest is every client's.
    // "Not given" is ag_none (INT64_MAX), as the minimum; as the maximum, 0.
    const bool given = contributes || kind != 2;
    constexpr std::uint64_t none = ag_none;
    constexpr std::size_t F = vr_fields;  // op, dtype, kind, count (min among those given), contributes
    const std::uint64_t mine[F] = {static_cast<std::uint64_t>(op), static_cast<std::uint64_t>(dt),
                                   static_cast<std::uint64_t>(kind), given ? count : none, contributes ? 1u : 0u};
    std::uint64_t mine_max[F];
    std::copy(mine, mine + F, mine_max);
    mine_max[3] = given ? static_cast<std::uint64_t>(count) : 0;
    const std::uint64_t* mm = agree(ag_value, mine, mine_max, F);
    const std::uint64_t* lo = mm + ag_header;              // each field's minimum
    const std::uint64_t* hi = mm + ag_fields + ag_header;  // the complement of its maximum
    const bool nobody_gave = lo[3] == none;
    bool same = nobody_gave || lo[3] == ~hi[3];
    for (std::size_t i = 0; i < 3; ++i) same = same && lo[i] == ~hi[i];
    MPI_Request r = MPI_REQUEST_NULL;
    if (!same) {  // every client sees it: gather every client's call to name them
        std::vector<std::uint64_t> all(F * static_cast<std::size_t>(im.n_clients));
        check_mpi(MPI_Iallgather(mine, static_cast<int>(F), MPI_UINT64_T, all.data(), static_cast<int>(F), MPI_UINT64_T,
                                 im.clients_comm, &r),
                  "MPI_Iallgather");
        wait_gently(r, im.opt.idle_sleep_max_us);
        auto call = [&](const std::uint64_t* c) {
            const int o = static_cast<int>(c[0]);
            std::string t = std::string(o == op_sum ? "sum" : o == op_min ? "min" : "max") + "() of " +
                            dtype_name(static_cast<DType>(c[1]));
            if (c[2] == 0) return t;
            t = t + (c[2] == 1 ? " std::array" : " std::vector");
            return c[3] == none ? t + " (none given)" : t + " of " + std::to_string(c[3]);
        };
        // Clients with the same call together: "client 0: ..., clients 1-3: ...".
        std::string text;
        std::vector<bool> shown(static_cast<std::size_t>(im.n_clients), false);
        std::size_t groups = 0;
        for (std::size_t c = 0; c < shown.size(); ++c) {
            if (shown[c]) continue;
            const std::string mine_call = call(&all[F * c]);
            std::vector<std::size_t> same;
            for (std::size_t d = c; d < shown.size(); ++d)
                if (!shown[d] && call(&all[F * d]) == mine_call) {
                    shown[d] = true;
                    same.push_back(d);
                }
            if (++groups > 8) {
                text += "; ...";
                break;
            }
            std::string who = same.size() == 1 ? "client " + std::to_string(same[0]) : "clients ";
            for (std::size_t k = 0; same.size() > 1 && k < same.size() && k < 8; ++k)
                who += (k ? "," : "") + std::to_string(same[k]);
            if (same.size() > 8) who += ",...";
            text += (text.empty() ? "" : "; ") + who + ": " + mine_call;
        }
        throw_error(Errc::reduction, "the clients' reductions do not agree (" + text + ")");
    }
    any = ~hi[4] != 0;
    return nobody_gave ? 0 : static_cast<std::size_t>(lo[3]);
}

void SmallData::reduce_raw(void* inout, std::size_t count, DType dt, int op, bool contributes) {
    detail::Impl& im = *impl_;
    if (im.role == Role::serial) return;
    if (!contributes) detail::fill_neutral(inout, count, dt, op);
    detail::allreduce_in_pieces(im, inout, count, dt, op);
}

bool SmallData::reduce_buffer(void* data, DType dt, const std::uint64_t* dims, std::size_t rank, int op,
                              bool contributes) {
    using namespace detail;
    check_reduce_role(op);
    Impl& im = *impl_;
    // This client's call: op, dtype, rank, dims (agreed between the clients), then what is
    // wrong with it on its own (ip_problem) and whether it contributes.
    std::uint64_t mine[ip_fields] = {};
    mine[0] = static_cast<std::uint64_t>(op);
    mine[1] = static_cast<std::uint64_t>(dt);
    mine[2] = rank;
    for (std::size_t i = 0; i < rank && i < static_cast<std::size_t>(max_rank); ++i) mine[3 + i] = dims[i];
    std::size_t count = 0;
    mine[ip_problem] = in_place_problem(data, dt, dims, rank, count);
    mine[ip_contributes] = contributes ? 1 : 0;
    if (im.role == Role::serial) {
        if (mine[ip_problem] != 0) throw_error(Errc::usage, in_place_text(mine, 1, false));
        return contributes;
    }
    const std::uint64_t* mm = agree(ag_in_place, mine, nullptr, ip_fields);
    const std::uint64_t* lo = mm + ag_header;              // each field's minimum
    const std::uint64_t* hi = mm + ag_fields + ag_header;  // the complement of its maximum
    bool same = ~hi[ip_problem] == 0;
    for (std::size_t i = 0; i < ip_problem; ++i) same = same && lo[i] == ~hi[i];
    MPI_Request r = MPI_REQUEST_NULL;
    if (!same) {  // every client sees it: gather every client's call to name the culprits
        std::vector<std::uint64_t> all(ip_fields * static_cast<std::size_t>(im.n_clients));
        check_mpi(MPI_Iallgather(mine, static_cast<int>(ip_fields), MPI_UINT64_T, all.data(), static_cast<int>(ip_fields),
                                 MPI_UINT64_T, im.clients_comm, &r),
                  "MPI_Iallgather");
        wait_gently(r, im.opt.idle_sleep_max_us);
        const bool usage = ~hi[ip_problem] != 0;
        throw_error(usage ? Errc::usage : Errc::reduction,
                    in_place_text(all.data(), static_cast<std::size_t>(im.n_clients), true));
    }
    if (~hi[ip_contributes] == 0) return false;  // nobody contributed: buffers as they were
    if (!contributes) fill_neutral(data, count, dt, op);
    allreduce_in_pieces(im, data, count, dt, op);
    return true;
}

Field Event::field(std::string_view name) const {
    const detail::EntryRef* e = find(name);
    if (!e)
        detail::throw_error(Errc::missing_field, "event " + std::to_string(ts_) + " has no field '" + std::string(name) + "'");
    return Field(*e);
}

}  // namespace smalldata

#endif  // SMALLDATA_IMPLEMENTATION

// ============================================================================ [>>license]
/*
MIT License

Copyright (c) 2026 the smalldata.hpp authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify, merge,
publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.
*/
