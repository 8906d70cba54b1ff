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
//     9.  Errors, logging, names                    [>>impl-errors]
//     10. MPI environment, requests, gentle waits   [>>impl-mpi]
//     11. HDF5 handles and types                    [>>impl-hdf5]
//     12. Packer slow paths                         [>>impl-packer]
//     13. Writer: decoded events -> HDF5 columns    [>>impl-writer]
//     14. Decoder: batch -> events -> writer        [>>impl-decoder]
//     15. Transport: client sender, server loop     [>>impl-transport]
//     16. Join: part files -> virtual datasets      [>>impl-join]
//     17. Failure: abort protocol                   [>>impl-abort]
//     18. SmallData out-of-line API                 [>>impl-api]
//   License                                         [>>license]
//
// DOES NOT
//   - sort events by timestamp across clients: each part file holds events in arrival
//     order; events of one client stay in their timestamp order (see docs/design.md).
//   - support heterogeneous clusters (mixed byte orders between ranks).
//   - make SmallData thread-safe: call it from one thread per rank.
//   - keep more than one SmallData alive at once per process in parallel mode.
//
// CONCEPTS
//   Roles.  With one rank in Options::comm the library runs in serial mode. Otherwise the
//     first `servers` ranks are servers (they write), the next `clients` ranks are clients
//     (they run the user's loop), the rest are `other`. Client c sends to server
//     c % servers. Server ranks return from the constructor when all their clients are
//     done; their event() calls then do nothing.
//   Batches.  event() appends to a binary batch (field names are sent once per stream and
//     referred to by ids). A batch leaves when it holds batch_size events or would exceed
//     batch_bytes; it is sent with MPI_Isend from a pool of send_buffers buffers. With
//     every buffer in flight the client waits (back-pressure, bounded memory).
//   Writer.  A server decodes batches into per-field column caches (cache_size rows) and
//     appends them to its part file `<stem>_part<k>.h5`. Aligned fields have one row per
//     event (fill values for missing rows); fields whose last path component starts with
//     `unaligned_` have only the rows given. Serial mode runs the same writer in-process.
//   Join.  done() gives `filename` one virtual dataset per field concatenating the parts
//     (named relative to the final file), plus the summary datasets.
//
// OPTIONS   (all in smalldata::Options; see section 3 for defaults)
//   servers, clients, filename, batch_size, cache_size, callbacks, comm    (API contract)
//   batch_bytes, send_buffers, recv_buffers, cache_bytes, chunk_bytes,
//   idle_sleep_max_us, abort_grace_ms                                       (tuning)
//
// ERRORS AND LOGGING
//   Every error is a smalldata::Error (a std::runtime_error) with a code() from
//   smalldata::Errc and a message naming the rank, the field or file at fault and, when
//   relevant, the HDF5 or MPI message underneath. In parallel mode an error that cannot be
//   reported to the caller (a server failing while writing, an exception escaping a
//   client) ends the job: the reason is printed with the rank, every server closes its part
//   file (so rows already written stay readable), then MPI_Abort. Warnings go to stderr
//   prefixed "smalldata[rank N]".
//
// REQUIREMENTS
//   C++17 or later, MPI 3.0 or later (Open MPI, MPICH), HDF5 1.10 or later (serial or
//   parallel build; only the implementation file needs <hdf5.h>).

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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
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
    X(name, "a field or summary name is invalid or clashes with another")                \
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
    X(protocol, "a message between ranks was malformed or events were lost")

enum class Errc : int {
#define SMALLDATA_X_ENUM(id, text) id,
    SMALLDATA_ERRORS(SMALLDATA_X_ENUM)
#undef SMALLDATA_X_ENUM
};
const char* errc_name(Errc c) noexcept;         // "layout", "type_mismatch", ...
const char* errc_description(Errc c) noexcept;  // the text of the list above

class Error : public std::runtime_error {
public:
    Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
    Errc code() const noexcept { return code_; }
private:
    Errc code_;
};

// ============================================================================ [>>options]
// 3. Options and roles: every runtime setting, with its default, in one aggregate.

class Event;
using Callback = std::function<void(const Event&)>;

struct Options {
    int servers = 1;                  // writer ranks in parallel mode
    int clients = -1;                 // client ranks; -1 = every rank that is not a server
    std::string filename;             // final HDF5 file; empty = write nothing, callbacks only
    std::size_t batch_size = 4096;    // events per client->server message (at most)
    std::size_t cache_size = 8192;    // rows a server holds per dataset before writing
    std::vector<Callback> callbacks;  // called once per complete event, before writing
    MPI_Comm comm = MPI_COMM_WORLD;   // the ranks that take part (duplicated internally)

    // Tuning. All must be equal on every rank.
    std::size_t batch_bytes = std::size_t(1) << 20;  // bytes per message (at most, unless
                                                      // one event is larger)
    int send_buffers = 4;             // batches in flight per client (back-pressure bound)
    int recv_buffers = 4;             // receives a server keeps posted
    std::size_t cache_bytes = std::size_t(32) << 20; // cap of one field's cache, in bytes
    std::size_t chunk_bytes = std::size_t(1) << 20;  // target HDF5 chunk size, in bytes
    int idle_sleep_max_us = 200;      // longest sleep of an idle wait (see docs/design.md)
    int abort_grace_ms = 3000;        // how long a failing rank waits for servers to close
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
};

// The indices [begin, end) that belong to one client, round-robin. Empty on servers and
// other ranks; everything in serial mode. Iterate it with a range-for.
class Share {
public:
    Share(std::int64_t begin, std::int64_t end, std::int64_t first, std::int64_t step) noexcept
        : end_(end), first_(first < begin ? begin : first), step_(step) {}
    class iterator {
    public:
        iterator(std::int64_t i, std::int64_t step) noexcept : i_(i), step_(step) {}
        std::int64_t operator*() const noexcept { return i_; }
        iterator& operator++() noexcept { i_ += step_; return *this; }
        bool operator!=(const iterator& o) const noexcept { return i_ < o.i_; }
    private:
        std::int64_t i_, step_;
    };
    iterator begin() const noexcept { return {first_, step_}; }
    iterator end() const noexcept { return {end_, step_}; }
    std::int64_t size() const noexcept {
        return first_ >= end_ ? 0 : (end_ - first_ + step_ - 1) / step_;
    }
private:
    std::int64_t end_, first_, step_;
};

namespace detail {
// What the library knows of one field: shared by the Event view and the writer.
struct FieldMeta {
    std::string name;
    DType dtype = DType::f64;
    Shape shape;
    std::size_t bytes = 0;   // payload bytes of one value
    bool aligned = true;     // false for `unaligned_` fields
};
struct EntryRef {
    const FieldMeta* meta;
    const unsigned char* data;  // not necessarily aligned for the element type
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
    const Shape& shape() const noexcept { return e_->meta->shape; }
    bool aligned() const noexcept { return e_->meta->aligned; }
    std::size_t bytes() const noexcept { return e_->meta->bytes; }
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

namespace detail { class Packer; struct Impl; }

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
    // std::array of those, smalldata::View. Names: "field" or "group/field".
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

    // Save name/value pairs into the final file, not per event. Done by client 0 (or the
    // serial process) only; other ranks ignore it. Scalars become scalar datasets, vectors
    // and arrays 1-d datasets, std::string a string dataset; an empty std::optional is
    // skipped with a warning. Saving a name again replaces the value.
    template <class... NameValue>
    void save_summary(NameValue&&... name_value_pairs);

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

private:
    template <class N, class V, class... Rest> void put_pairs(N&& name, V&& value, Rest&&... rest);
    template <class N, class V, class... Rest> void summary_pairs(N&& name, V&& value, Rest&&... rest);
    void save_summary_raw(std::string_view name, DType dt, const Shape& shape, const void* data);
    void save_summary_string(std::string_view name, const std::string& s);
    void warn_skipped_summary(std::string_view name) const;
    // Collective among clients. agree_count: the common length of the contributors'
    // vectors (Errc::reduction if they differ). reduce_raw: element-wise op in place, a
    // non-contributor adding the neutral element; returns whether any client contributed.
    std::size_t agree_count(std::size_t count, bool contributes);
    bool reduce_raw(void* inout, std::size_t count, DType dt, int op, bool contributes);
    void check_reduce_role(int op) const;
    template <class T> T reduce(const T& value, int op);
    template <class T> std::optional<T> reduce_opt(const std::optional<T>& value, int op);

    std::unique_ptr<detail::Impl> impl_;
    detail::Packer* packer_ = nullptr;       // null on servers, other ranks, after done()
};

// ---------------------------------------------------------------------------------------
// Everything below this line is internal: smalldata::detail is not part of the API.
// ---------------------------------------------------------------------------------------

// ============================================================================ [>>traits]
// 6. Value traits: one table maps each supported C++ type to its dtype and shape.
namespace detail {

template <class T> struct dependent_false : std::false_type {};

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

[[noreturn]] void throw_error(Errc code, const std::string& message);
std::string shape_mismatch_text(const Shape& want, const Shape& got);

// ============================================================================ [>>packer]
// 7. Packer: turns event() calls into the binary batch format (docs/design.md, "Wire
//    format"). The common case (same fields in the same order as the previous event) is
//    inline and allocation-free; everything else is out of line in section 12.

struct WireHeader {                 // at offset 0 of every message
    std::uint32_t magic;            // wire_magic
    std::uint16_t version;          // wire_version
    std::uint16_t kind;             // WireKind
    std::uint32_t seq;              // message number in this client's stream
    std::uint32_t n_events;         // events in this batch
    std::uint64_t bytes;            // total bytes of the batch (header included)
    std::uint64_t extra;            // done: events sent in total; large: unused
};
inline constexpr std::uint32_t wire_magic = 0x31445353u;  // "SSD1"
inline constexpr std::uint16_t wire_version = 1;
enum class WireKind : std::uint16_t { batch = 1, large = 2, done = 3 };
inline constexpr std::uint32_t wire_define = 0xFFFFFFFFu;  // field id announcing a definition
inline constexpr std::size_t event_header_bytes = 12;      // i64 timestamp + u32 entries

struct ClientField {
    FieldMeta meta;
    std::uint64_t last_event = 0;   // event number in which it was last given
};

// Where full batches go: the in-process writer (serial) or the MPI sender (client).
class Sink {
public:
    virtual ~Sink() = default;
    // Takes buf[0, used) holding n_events complete events; returns the buffer to fill next.
    virtual std::vector<unsigned char>* ship(std::vector<unsigned char>* buf, std::size_t used,
                                             std::uint32_t n_events) = 0;
};

class Packer {
public:
    Packer(Sink* sink, std::vector<unsigned char>* first, std::size_t batch_size,
           std::size_t batch_bytes, int rank);

    void begin(std::int64_t ts) {
        if (open_ && ts == ts_) return;
        start_event(ts);
    }
    void put(std::string_view name, DType dt, const Shape& shape, const void* data, std::size_t bytes) {
        std::uint32_t id;
        if (pos_ < seq_.size()) {
            id = seq_[pos_];
            const ClientField& f = fields_[id];
            if (f.last_event != event_no_ && f.meta.dtype == dt && f.meta.name == name &&
                f.meta.shape == shape)
                goto hit;
        }
        id = resolve(name, dt, shape);
    hit:
        fields_[id].last_event = event_no_;
        ++pos_;
        const std::size_t need = 4 + bytes;
        if (static_cast<std::size_t>(end_ - cur_) < need) make_room(need);
        std::memcpy(cur_, &id, 4);
        if (bytes) std::memcpy(cur_ + 4, data, bytes);
        cur_ += need;
        ++entries_;
    }
    template <class T>
    void put_scalar(std::string_view name, const T& v) {   // scalars: shape known statically
        constexpr DType dt = value_traits<T>::dtype;
        std::uint32_t id;
        if (pos_ < seq_.size()) {
            id = seq_[pos_];
            const ClientField& f = fields_[id];
            if (f.last_event != event_no_ && f.meta.dtype == dt && f.meta.shape.rank == 0 &&
                f.meta.name == name)
                goto hit;
        }
        id = resolve(name, dt, Shape{});
    hit:
        fields_[id].last_event = event_no_;
        ++pos_;
        if (static_cast<std::size_t>(end_ - cur_) < 4 + sizeof(T)) make_room(4 + sizeof(T));
        std::memcpy(cur_, &id, 4);
        std::memcpy(cur_ + 4, &v, sizeof(T));
        cur_ += 4 + sizeof(T);
        ++entries_;
    }
    // Closes the open event and ships the current batch (done(), or before a summary).
    void flush();
    std::uint64_t events() const noexcept { return event_no_; }
    // Validates a summary name against the fields this packer has seen.
    void check_summary_name(std::string_view name) const;

private:
    void start_event(std::int64_t ts);
    void close_event();
    std::uint32_t resolve(std::string_view name, DType dt, const Shape& shape);
    void make_room(std::size_t need);
    void ship_completed();
    std::uint32_t lookup(std::string_view name) const noexcept;
    void index_insert(std::uint32_t id);

    Sink* sink_;
    std::vector<unsigned char>* buf_;
    unsigned char* cur_ = nullptr;
    unsigned char* end_ = nullptr;
    std::size_t batch_size_, batch_bytes_;
    int rank_;
    std::size_t ev_off_ = 0;          // offset of the open event in buf_
    std::uint32_t entries_ = 0;       // entries of the open event
    std::uint32_t done_events_ = 0;   // complete events in buf_
    bool open_ = false;
    std::int64_t ts_ = 0;
    std::uint64_t event_no_ = 0;      // events started so far (1-based number of the open one)
    std::size_t pos_ = 0;             // entry position in the open event
    std::vector<std::uint32_t> seq_;  // field ids of the previous events, by position
    std::vector<ClientField> fields_;
    std::vector<std::uint32_t> index_;  // open-addressing hash: name -> id + 1 (0 = empty)
    std::vector<std::string> groups_;   // every group path implied by a field name, sorted
    std::vector<unsigned char> scratch_;
};

// Shared by Field::value/values: copy out of a possibly unaligned entry after checking type.
void check_field_type(const FieldMeta& meta, DType want, bool scalar);

}  // namespace detail

// ============================================================================ [>>templates]
// 8. SmallData templates: event(), summaries, reductions, views, Field access.

template <class T>
View<T> view(const T* data, std::initializer_list<std::uint64_t> shape) {
    if (shape.size() > static_cast<std::size_t>(max_rank))
        detail::throw_error(Errc::usage, "smalldata::view: at most " + std::to_string(max_rank) +
                                             " dimensions, got " + std::to_string(shape.size()));
    View<T> v;
    v.data = data;
    v.shape.rank = static_cast<std::uint8_t>(shape.size());
    std::size_t i = 0;
    for (auto d : shape) v.shape.dims[i++] = d;
    return v;
}
template <class T>
View<T> view(const T* data, const std::vector<std::uint64_t>& shape) {
    if (shape.size() > static_cast<std::size_t>(max_rank))
        detail::throw_error(Errc::usage, "smalldata::view: at most " + std::to_string(max_rank) +
                                             " dimensions, got " + std::to_string(shape.size()));
    View<T> v;
    v.data = data;
    v.shape.rank = static_cast<std::uint8_t>(shape.size());
    for (std::size_t i = 0; i < shape.size(); ++i) v.shape.dims[i] = shape[i];
    return v;
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
    std::vector<T> v(static_cast<std::size_t>(e_->meta->shape.count()));
    if (!v.empty()) std::memcpy(static_cast<void*>(v.data()), e_->data, v.size() * sizeof(T));
    return v;
}

template <class Timestamp, class... NameValue>
void SmallData::event(Timestamp timestamp, NameValue&&... name_value_pairs) {
    static_assert(std::is_integral_v<Timestamp> && !std::is_same_v<Timestamp, bool>,
                  "smalldata::event: the timestamp must be an integer");
    static_assert(sizeof...(NameValue) % 2 == 0,
                  "smalldata::event: arguments after the timestamp must be name/value pairs "
                  "(an even count)");
    if (!packer_) return;
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
    static_assert(!detail::is_vector_bool<Val>,
                  "smalldata::event: std::vector<bool> is not contiguous; use std::vector<uint8_t> "
                  "or std::array<bool, N>");
    static_assert(detail::is_vector_bool<Val> || detail::value_traits<Val>::ok,
                  "smalldata::event: unsupported value type (supported: fixed-width integers, "
                  "float, double, bool, std::vector or std::array of those, smalldata::View)");
    if constexpr (detail::value_traits<Val>::ok) {
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

namespace detail {
enum ReduceOp : int { op_sum = 0, op_min = 1, op_max = 2 };
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
    if constexpr (std::is_arithmetic_v<T>) {
        reduce_raw(&out, 1, detail::scalar_dtype<T>::value, op, true);
    } else {
        using E = typename detail::reduce_traits<T>::element;
        if constexpr (std::is_same_v<T, std::vector<E>>) agree_count(out.size(), true);
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
    bool any;
    if constexpr (std::is_arithmetic_v<T>) {
        any = reduce_raw(&out, 1, detail::scalar_dtype<T>::value, op, mine);
    } else {
        using E = typename detail::reduce_traits<T>::element;
        if constexpr (std::is_same_v<T, std::vector<E>>) out.resize(agree_count(out.size(), mine));
        any = reduce_raw(out.data(), out.size(), detail::scalar_dtype<E>::value, op, mine);
    }
    if (!any) return std::nullopt;
    return out;
}
template <class T> T SmallData::sum(const T& value) { return reduce(value, detail::op_sum); }
template <class T> T SmallData::min(const T& value) { return reduce(value, detail::op_min); }
template <class T> T SmallData::max(const T& value) { return reduce(value, detail::op_max); }
template <class T> std::optional<T> SmallData::sum(const std::optional<T>& v) { return reduce_opt(v, detail::op_sum); }
template <class T> std::optional<T> SmallData::min(const std::optional<T>& v) { return reduce_opt(v, detail::op_min); }
template <class T> std::optional<T> SmallData::max(const std::optional<T>& v) { return reduce_opt(v, detail::op_max); }

}  // namespace smalldata

#endif  // SMALLDATA_HPP_INCLUDED
