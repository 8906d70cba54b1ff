// h5read.hpp - small read-only helpers over the HDF5 C API, for the tests.
//
// The tests write files through smalldata and read them back here, independently of the
// library's own HDF5 code. Every hid_t is owned by an RAII Hid; every failure throws
// std::runtime_error naming the file and the object.
//
//   h5r::File f(path);
//   f.exists("det/roi");  f.is_group("det");  f.is_dataset("det/roi");
//   f.dims("det/roi")                      -> {n_events, 4}   ({} for a scalar dataset)
//   f.chunk_dims("det/roi")                -> {rows per chunk, 4} ({} if not chunked)
//   f.layout("det/roi")                    -> H5D_CHUNKED, H5D_VIRTUAL, H5D_CONTIGUOUS, ...
//   f.filters("det/roi")                   -> the filter pipeline of its dcpl, in order:
//                                             {id, cd_values} each ({} if none)
//   f.storage_bytes("det/roi")             -> bytes its data takes in the file (compressed)
//   f.read<std::int16_t>("det/roi")        -> every element, row-major
//   f.read_rows<float>("det/proj", 10, 5)  -> rows [10, 15) (first axis), row-major
//   f.scalar<double>("x")                  -> a rank-0 dataset's value
//   f.read_string("note")                  -> a string dataset (fixed or variable length)
//   f.fill_value<std::int32_t>("x")        -> the dataset's HDF5 fill value (from its dcpl)
//   f.type_info("x")                       -> class, size, sign, byte order of the file type
//   f.enum_members("flag")                 -> {{"FALSE", 0}, {"TRUE", 1}}
//   f.children("det")                      -> names of the links in a group, sorted
//   f.attr_names("det/roi")                -> names of an object's attributes, sorted ("" = root)
//   f.has_attr("det/roi", "units")         -> whether the object has that attribute
//   f.attr_type_info("", "run")            -> as type_info, of an attribute
//   f.attr_dims("det", "geometry")         -> dims of an attribute ({} for a scalar)
//   f.read_attr<double>("det", "geometry") -> every element of an attribute (bool too)
//   f.read_attr_string("x", "units")       -> a string attribute (fixed or variable length)
//   f.attr_is_variable_string("x", "units") -> whether it is a variable-length string
//
// Also disk_bytes(path): the bytes the file system holds for a file (st_blocks), and
// reserve_supported(dir): whether space can be reserved beyond a file's end there.
// Also test_path(name): a file path in the per-run temporary directory that
// catch_main.cpp creates (environment variable SMALLDATA_TEST_DIR).
#ifndef SMALLDATA_TESTS_H5READ_HPP
#define SMALLDATA_TESTS_H5READ_HPP

#include <hdf5.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <fcntl.h>
#include <sys/vfs.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace h5r {

// ---------------------------------------------------------------------------- handles
class Hid {
public:
    using Closer = herr_t (*)(hid_t);
    Hid() noexcept = default;
    Hid(hid_t id, Closer closer) noexcept : id_(id), closer_(closer) {}
    Hid(const Hid&) = delete;
    Hid& operator=(const Hid&) = delete;
    Hid(Hid&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = H5I_INVALID_HID; }
    Hid& operator=(Hid&& o) noexcept {
        if (this != &o) {
            reset();
            id_ = o.id_;
            closer_ = o.closer_;
            o.id_ = H5I_INVALID_HID;
        }
        return *this;
    }
    ~Hid() { reset(); }
    void reset() noexcept {
        if (id_ >= 0 && closer_) closer_(id_);
        id_ = H5I_INVALID_HID;
    }
    hid_t get() const noexcept { return id_; }
    explicit operator bool() const noexcept { return id_ >= 0; }

private:
    hid_t id_ = H5I_INVALID_HID;
    Closer closer_ = nullptr;
};

// Silences HDF5's automatic error printing while a failure is expected.
class QuietErrors {
public:
    QuietErrors() noexcept {
        H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
    ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
    QuietErrors(const QuietErrors&) = delete;
    QuietErrors& operator=(const QuietErrors&) = delete;

private:
    H5E_auto2_t func_ = nullptr;
    void* data_ = nullptr;
};

// ---------------------------------------------------------------------------- types
// The native memory type for a C++ element type. bool has no fixed native type: it is
// read through the file's own (enum) type, see File::read.
template <class T>
inline hid_t mem_type() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, float>) return H5T_NATIVE_FLOAT;
    else if constexpr (std::is_same_v<U, double>) return H5T_NATIVE_DOUBLE;
    else if constexpr (std::is_integral_v<U> && !std::is_same_v<U, bool>) {
        if constexpr (std::is_signed_v<U>) {
            if constexpr (sizeof(U) == 1) return H5T_NATIVE_INT8;
            else if constexpr (sizeof(U) == 2) return H5T_NATIVE_INT16;
            else if constexpr (sizeof(U) == 4) return H5T_NATIVE_INT32;
            else return H5T_NATIVE_INT64;
        } else {
            if constexpr (sizeof(U) == 1) return H5T_NATIVE_UINT8;
            else if constexpr (sizeof(U) == 2) return H5T_NATIVE_UINT16;
            else if constexpr (sizeof(U) == 4) return H5T_NATIVE_UINT32;
            else return H5T_NATIVE_UINT64;
        }
    } else {
        static_assert(!std::is_same_v<U, U>, "h5r::mem_type: unsupported element type");
    }
}

struct TypeInfo {
    H5T_class_t cls = H5T_NO_CLASS;
    std::size_t size = 0;
    H5T_sign_t sign = H5T_SGN_ERROR;     // integers (and an enum's base type)
    H5T_order_t order = H5T_ORDER_ERROR;
    H5T_class_t super_cls = H5T_NO_CLASS; // enums: class of the base type
    std::size_t super_size = 0;
    H5T_sign_t super_sign = H5T_SGN_ERROR;
};

// ---------------------------------------------------------------------------- helpers
inline std::vector<std::string> split_path(const std::string& path) {
    std::vector<std::string> parts;
    std::string cur;
    for (char c : path) {
        if (c == '/') {
            if (!cur.empty()) parts.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    if (!cur.empty()) parts.push_back(cur);
    return parts;
}

// A file in the temporary directory of this test run.
inline std::string test_path(const std::string& name) {
    const char* dir = std::getenv("SMALLDATA_TEST_DIR");
    std::filesystem::path p = dir && *dir ? std::filesystem::path(dir) : std::filesystem::temp_directory_path();
    return (p / name).string();
}

inline bool file_exists(const std::string& path) {
    std::error_code ec;
    return std::filesystem::exists(path, ec);
}

// Bytes allocated on disk for `path` (may exceed its size when space is reserved).
inline std::uint64_t disk_bytes(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat '" + path + "'");
    return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

// Whether the file system of `dir` keeps space reserved beyond a file's end (Linux
// fallocate with FALLOC_FL_KEEP_SIZE; tmpfs excluded, as the library excludes it).
inline bool reserve_supported(const std::string& dir) {
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
    const std::string probe = dir + "/.reserve_probe";
    const int fd = ::open(probe.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) return false;
    struct statfs fs;
    const bool ok = fstatfs(fd, &fs) == 0 && fs.f_type != 0x01021994 &&
                    fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0;
    ::close(fd);
    ::unlink(probe.c_str());
    return ok;
#else
    (void)dir;
    return false;
#endif
}

// ---------------------------------------------------------------------------- File
class File {
public:
    explicit File(const std::string& path) : path_(path) {
        hid_t id;
        {
            QuietErrors quiet;
            id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
        }
        if (id < 0) throw std::runtime_error("h5r: cannot open HDF5 file " + path);
        file_ = Hid(id, H5Fclose);
    }
    const std::string& path() const noexcept { return path_; }
    hid_t id() const noexcept { return file_.get(); }

    // Whether every component of `name` exists (a link that resolves to an object).
    bool exists(const std::string& name) const {
        QuietErrors quiet;
        std::string cur;
        for (const auto& part : split_path(name)) {
            cur += (cur.empty() ? "" : "/") + part;
            if (H5Lexists(file_.get(), cur.c_str(), H5P_DEFAULT) <= 0) return false;
            if (H5Oexists_by_name(file_.get(), cur.c_str(), H5P_DEFAULT) <= 0) return false;
        }
        return !cur.empty();
    }
    bool is_group(const std::string& name) const { return object_type(name) == H5I_GROUP; }
    bool is_dataset(const std::string& name) const { return object_type(name) == H5I_DATASET; }

    // Dimensions of a dataset; empty for a scalar dataspace.
    std::vector<hsize_t> dims(const std::string& name) const {
        Hid d = open_dataset(name);
        Hid s(H5Dget_space(d.get()), H5Sclose);
        check(s.get(), "H5Dget_space", name);
        return space_dims(s.get(), name);
    }
    // The storage layout of a dataset (H5Pget_layout).
    H5D_layout_t layout(const std::string& name) const {
        Hid p = create_plist(open_dataset(name), name);
        const H5D_layout_t l = H5Pget_layout(p.get());
        check(static_cast<int>(l), "H5Pget_layout", name);
        return l;
    }
    // Chunk dimensions of a chunked dataset; empty when it is not chunked.
    std::vector<hsize_t> chunk_dims(const std::string& name) const {
        Hid p = create_plist(open_dataset(name), name);
        if (H5Pget_layout(p.get()) != H5D_CHUNKED) return {};
        std::vector<hsize_t> c(32);
        const int r = H5Pget_chunk(p.get(), static_cast<int>(c.size()), c.data());
        check(r, "H5Pget_chunk", name);
        c.resize(static_cast<std::size_t>(r));
        return c;
    }
    // The filters of a dataset's creation property list (H5Pget_filter2), in pipeline order.
    struct Filter {
        int id = -1;
        std::vector<unsigned> params;  // cd_values
    };
    std::vector<Filter> filters(const std::string& name) const {
        Hid p = create_plist(open_dataset(name), name);
        const int n = H5Pget_nfilters(p.get());
        check(n, "H5Pget_nfilters", name);
        std::vector<Filter> out;
        for (int i = 0; i < n; ++i) {
            unsigned flags = 0, config = 0;
            std::size_t nelmts = 32;
            std::vector<unsigned> cd(nelmts);
            char fname[256] = "";
            const H5Z_filter_t id = H5Pget_filter2(p.get(), static_cast<unsigned>(i), &flags, &nelmts, cd.data(),
                                                   sizeof fname, fname, &config);
            check(id, "H5Pget_filter2", name);
            cd.resize(std::min<std::size_t>(nelmts, cd.size()));
            out.push_back(Filter{static_cast<int>(id), cd});
        }
        return out;
    }
    // Bytes the dataset's data takes in the file (after compression).
    hsize_t storage_bytes(const std::string& name) const {
        Hid d = open_dataset(name);
        return H5Dget_storage_size(d.get());
    }
    // The number of elements of a dataset (1 for a scalar).
    hsize_t count(const std::string& name) const {
        hsize_t n = 1;
        for (hsize_t d : dims(name)) n *= d;
        return n;
    }

    TypeInfo type_info(const std::string& name) const {
        Hid d = open_dataset(name);
        Hid t(H5Dget_type(d.get()), H5Tclose);
        check(t.get(), "H5Dget_type", name);
        return describe_type(t.get(), name);
    }

    // Members of an enum dataset's type, in declaration order, with their integer values.
    std::vector<std::pair<std::string, long long>> enum_members(const std::string& name) const {
        Hid d = open_dataset(name);
        Hid t(H5Dget_type(d.get()), H5Tclose);
        check(t.get(), "H5Dget_type", name);
        if (H5Tget_class(t.get()) != H5T_ENUM) throw std::runtime_error("h5r: " + where(name) + " is not an enum");
        const int n = H5Tget_nmembers(t.get());
        check(n, "H5Tget_nmembers", name);
        std::vector<std::pair<std::string, long long>> out;
        for (int i = 0; i < n; ++i) {
            char* mname = H5Tget_member_name(t.get(), static_cast<unsigned>(i));
            if (!mname) throw std::runtime_error("h5r: H5Tget_member_name failed on " + where(name));
            std::string s(mname);
            H5free_memory(mname);
            // The value is in the base type's representation: widen it.
            Hid super(H5Tget_super(t.get()), H5Tclose);
            check(super.get(), "H5Tget_super", name);
            const std::size_t sz = H5Tget_size(super.get());
            const bool is_signed = H5Tget_sign(super.get()) == H5T_SGN_2;
            unsigned char raw[16] = {};
            if (sz > sizeof raw) throw std::runtime_error("h5r: enum base type too large in " + where(name));
            check(H5Tget_member_value(t.get(), static_cast<unsigned>(i), raw), "H5Tget_member_value", name);
            const long long v = widen(raw, sz, is_signed);
            out.emplace_back(std::move(s), v);
        }
        return out;
    }

    // Every element of a dataset, row-major. T = bool reads an enum (or integer) dataset
    // through its own type and maps nonzero to true.
    template <class T>
    std::vector<T> read(const std::string& name) const {
        Hid d = open_dataset(name);
        const std::size_t n = static_cast<std::size_t>(count_of(d.get(), name));
        if constexpr (std::is_same_v<T, bool>) {
            std::vector<std::uint8_t> raw(n);
            Hid mt = bool_mem_type(d.get(), name);
            if (n) check(H5Dread(d.get(), mt.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()), "H5Dread", name);
            std::vector<T> out(n);
            for (std::size_t i = 0; i < n; ++i) out[i] = raw[i] != 0;
            return out;
        } else {
            std::vector<T> out(n);
            if (n) check(H5Dread(d.get(), mem_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), "H5Dread", name);
            return out;
        }
    }

    // Rows [first, first + n) along the first axis, row-major.
    template <class T>
    std::vector<T> read_rows(const std::string& name, hsize_t first, hsize_t n) const {
        static_assert(!std::is_same_v<T, bool>, "h5r::read_rows: use read<bool>");
        Hid d = open_dataset(name);
        Hid fs(H5Dget_space(d.get()), H5Sclose);
        check(fs.get(), "H5Dget_space", name);
        std::vector<hsize_t> dm = space_dims(fs.get(), name);
        if (dm.empty()) throw std::runtime_error("h5r: read_rows on scalar dataset " + where(name));
        if (first + n > dm[0])
            throw std::runtime_error("h5r: read_rows past the end of " + where(name) + " (" +
                                     std::to_string(first + n) + " > " + std::to_string(dm[0]) + ")");
        std::vector<hsize_t> start(dm.size(), 0), cnt = dm;
        start[0] = first;
        cnt[0] = n;
        hsize_t row = 1;
        for (std::size_t i = 1; i < dm.size(); ++i) row *= dm[i];
        std::vector<T> out(static_cast<std::size_t>(n * row));
        if (out.empty()) return out;
        check(H5Sselect_hyperslab(fs.get(), H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr),
              "H5Sselect_hyperslab", name);
        Hid ms(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr), H5Sclose);
        check(ms.get(), "H5Screate_simple", name);
        check(H5Dread(d.get(), mem_type<T>(), ms.get(), fs.get(), H5P_DEFAULT, out.data()), "H5Dread", name);
        return out;
    }

    // The value of a scalar (rank 0) dataset.
    template <class T>
    T scalar(const std::string& name) const {
        if (!dims(name).empty()) throw std::runtime_error("h5r: " + where(name) + " is not a scalar dataset");
        return read<T>(name).at(0);
    }

    // A string dataset (scalar or one element), fixed or variable length.
    std::string read_string(const std::string& name) const {
        Hid d = open_dataset(name);
        if (count_of(d.get(), name) != 1)
            throw std::runtime_error("h5r: string dataset " + where(name) + " does not hold exactly one string");
        Hid ft(H5Dget_type(d.get()), H5Tclose);
        check(ft.get(), "H5Dget_type", name);
        if (H5Tget_class(ft.get()) != H5T_STRING) throw std::runtime_error("h5r: " + where(name) + " is not a string");
        const htri_t vlen = H5Tis_variable_str(ft.get());
        check(vlen < 0 ? -1 : 0, "H5Tis_variable_str", name);
        Hid mt(H5Tcopy(H5T_C_S1), H5Tclose);
        check(mt.get(), "H5Tcopy", name);
        H5Tset_cset(mt.get(), H5Tget_cset(ft.get()));
        if (vlen) {
            check(H5Tset_size(mt.get(), H5T_VARIABLE), "H5Tset_size", name);
            char* p = nullptr;
            check(H5Dread(d.get(), mt.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), "H5Dread", name);
            std::string s = p ? std::string(p) : std::string();
            if (p) H5free_memory(p);
            return s;
        }
        const std::size_t size = H5Tget_size(ft.get());
        check(H5Tset_size(mt.get(), size), "H5Tset_size", name);
        H5Tset_strpad(mt.get(), H5T_STR_NULLPAD);
        std::vector<char> buf(size + 1, '\0');
        check(H5Dread(d.get(), mt.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), "H5Dread", name);
        std::string s(buf.data(), size);
        const auto nul = s.find('\0');
        if (nul != std::string::npos) s.resize(nul);
        if (H5Tget_strpad(ft.get()) == H5T_STR_SPACEPAD)
            while (!s.empty() && s.back() == ' ') s.pop_back();
        return s;
    }

    // Whether the dataset has a user-defined fill value (H5Pfill_value_defined).
    bool fill_value_defined(const std::string& name) const {
        Hid dcpl = create_plist(open_dataset(name), name);
        H5D_fill_value_t status;
        check(H5Pfill_value_defined(dcpl.get(), &status), "H5Pfill_value_defined", name);
        return status == H5D_FILL_VALUE_USER_DEFINED;
    }

    // The dataset's fill value as recorded in its creation property list, converted to T.
    template <class T>
    T fill_value(const std::string& name) const {
        Hid d = open_dataset(name);
        Hid dcpl = create_plist(d, name);
        if constexpr (std::is_same_v<T, bool>) {
            Hid mt = bool_mem_type(d.get(), name);
            std::uint8_t raw = 0xAA;
            check(H5Pget_fill_value(dcpl.get(), mt.get(), &raw), "H5Pget_fill_value", name);
            return raw != 0;
        } else {
            T v{};
            check(H5Pget_fill_value(dcpl.get(), mem_type<T>(), &v), "H5Pget_fill_value", name);
            return v;
        }
    }

    // Names of the links in a group ("" or "/" = root), sorted by name.
    std::vector<std::string> children(const std::string& group) const {
        const std::string g = group.empty() ? "/" : group;
        Hid gid(H5Gopen2(file_.get(), g.c_str(), H5P_DEFAULT), H5Gclose);
        check(gid.get(), "H5Gopen2", group);
        H5G_info_t info;
        check(H5Gget_info(gid.get(), &info), "H5Gget_info", group);
        std::vector<std::string> out;
        for (hsize_t i = 0; i < info.nlinks; ++i) {
            const ssize_t len = H5Lget_name_by_idx(gid.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
            check(len < 0 ? -1 : 0, "H5Lget_name_by_idx", group);
            std::vector<char> buf(static_cast<std::size_t>(len) + 1, '\0');
            H5Lget_name_by_idx(gid.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, buf.data(), buf.size(), H5P_DEFAULT);
            out.emplace_back(buf.data());
        }
        return out;
    }

    // ------------------------------------------------------------------ attributes
    // `obj` is a path from the root; "" (or "/") is the root group.
    std::vector<std::string> attr_names(const std::string& obj) const {
        Hid o = open_object(obj);
        std::vector<std::string> out;
        auto collect = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
            static_cast<std::vector<std::string>*>(data)->emplace_back(name);
            return 0;
        };
        hsize_t idx = 0;
        check(H5Aiterate2(o.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect, &out), "H5Aiterate2", obj);
        return out;
    }
    bool has_attr(const std::string& obj, const std::string& name) const {
        Hid o = open_object(obj);
        const htri_t e = H5Aexists(o.get(), name.c_str());
        check(e < 0 ? -1 : 0, "H5Aexists", obj);
        return e > 0;
    }
    TypeInfo attr_type_info(const std::string& obj, const std::string& name) const {
        Hid a = open_attr(obj, name);
        Hid t(H5Aget_type(a.get()), H5Tclose);
        check(t.get(), "H5Aget_type", obj);
        return describe_type(t.get(), obj);
    }
    std::vector<hsize_t> attr_dims(const std::string& obj, const std::string& name) const {
        Hid a = open_attr(obj, name);
        Hid s(H5Aget_space(a.get()), H5Sclose);
        check(s.get(), "H5Aget_space", obj);
        return space_dims(s.get(), obj);
    }
    // Every element, row-major; T = bool reads through the attribute's own one-byte type.
    template <class T>
    std::vector<T> read_attr(const std::string& obj, const std::string& name) const {
        Hid a = open_attr(obj, name);
        Hid s(H5Aget_space(a.get()), H5Sclose);
        check(s.get(), "H5Aget_space", obj);
        const hssize_t np = H5Sget_simple_extent_npoints(s.get());
        check(np, "H5Sget_simple_extent_npoints", obj);
        const std::size_t n = static_cast<std::size_t>(np);
        if constexpr (std::is_same_v<T, bool>) {
            Hid ft(H5Aget_type(a.get()), H5Tclose);
            check(ft.get(), "H5Aget_type", obj);
            if (H5Tget_size(ft.get()) != 1)
                throw std::runtime_error("h5r: bool read of attribute '" + name + "' of " + where(obj) +
                                         " whose type is not one byte");
            Hid mt(H5Tget_native_type(ft.get(), H5T_DIR_ASCEND), H5Tclose);
            check(mt.get(), "H5Tget_native_type", obj);
            std::vector<std::uint8_t> raw(n);
            if (n) check(H5Aread(a.get(), mt.get(), raw.data()), "H5Aread", obj);
            std::vector<T> out(n);
            for (std::size_t i = 0; i < n; ++i) out[i] = raw[i] != 0;
            return out;
        } else {
            std::vector<T> out(n);
            if (n) check(H5Aread(a.get(), mem_type<T>(), out.data()), "H5Aread", obj);
            return out;
        }
    }
    bool attr_is_variable_string(const std::string& obj, const std::string& name) const {
        Hid a = open_attr(obj, name);
        Hid t(H5Aget_type(a.get()), H5Tclose);
        check(t.get(), "H5Aget_type", obj);
        return H5Tget_class(t.get()) == H5T_STRING && H5Tis_variable_str(t.get()) > 0;
    }
    // A scalar string attribute, fixed or variable length.
    std::string read_attr_string(const std::string& obj, const std::string& name) const {
        Hid a = open_attr(obj, name);
        Hid ft(H5Aget_type(a.get()), H5Tclose);
        check(ft.get(), "H5Aget_type", obj);
        if (H5Tget_class(ft.get()) != H5T_STRING)
            throw std::runtime_error("h5r: attribute '" + name + "' of " + where(obj) + " is not a string");
        Hid mt(H5Tcopy(H5T_C_S1), H5Tclose);
        check(mt.get(), "H5Tcopy", obj);
        H5Tset_cset(mt.get(), H5Tget_cset(ft.get()));
        if (H5Tis_variable_str(ft.get()) > 0) {
            check(H5Tset_size(mt.get(), H5T_VARIABLE), "H5Tset_size", obj);
            char* p = nullptr;
            check(H5Aread(a.get(), mt.get(), &p), "H5Aread", obj);
            std::string out = p ? std::string(p) : std::string();
            if (p) H5free_memory(p);
            return out;
        }
        const std::size_t size = H5Tget_size(ft.get());
        check(H5Tset_size(mt.get(), size), "H5Tset_size", obj);
        std::vector<char> buf(size + 1, '\0');
        check(H5Aread(a.get(), mt.get(), buf.data()), "H5Aread", obj);
        return std::string(buf.data());
    }

    Hid create_plist(const Hid& dataset, const std::string& name) const {
        Hid p(H5Dget_create_plist(dataset.get()), H5Pclose);
        check(p.get(), "H5Dget_create_plist", name);
        return p;
    }
    Hid open_dataset(const std::string& name) const {
        hid_t id;
        {
            QuietErrors quiet;
            id = H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT);
        }
        if (id < 0) throw std::runtime_error("h5r: no dataset " + where(name));
        return Hid(id, H5Dclose);
    }

private:
    std::string where(const std::string& name) const { return "'" + name + "' in " + path_; }

    Hid open_object(const std::string& obj) const {
        const std::string p = obj.empty() ? "/" : obj;
        hid_t id;
        {
            QuietErrors quiet;
            id = H5Oopen(file_.get(), p.c_str(), H5P_DEFAULT);
        }
        if (id < 0) throw std::runtime_error("h5r: no object " + where(p));
        return Hid(id, H5Oclose);
    }
    Hid open_attr(const std::string& obj, const std::string& name) const {
        Hid o = open_object(obj);
        hid_t id;
        {
            QuietErrors quiet;
            id = H5Aopen(o.get(), name.c_str(), H5P_DEFAULT);
        }
        if (id < 0) throw std::runtime_error("h5r: no attribute '" + name + "' of " + where(obj));
        return Hid(id, H5Aclose);
    }

    // Class, size, sign, byte order of a type (and of an enum's base type); `name` is the
    // object it belongs to, for errors.
    TypeInfo describe_type(hid_t t, const std::string& name) const {
        TypeInfo info;
        info.cls = H5Tget_class(t);
        info.size = H5Tget_size(t);
        if (info.cls == H5T_INTEGER) info.sign = H5Tget_sign(t);
        if (info.cls == H5T_INTEGER || info.cls == H5T_FLOAT || info.cls == H5T_ENUM) info.order = H5Tget_order(t);
        if (info.cls == H5T_ENUM) {
            Hid super(H5Tget_super(t), H5Tclose);
            check(super.get(), "H5Tget_super", name);
            info.super_cls = H5Tget_class(super.get());
            info.super_size = H5Tget_size(super.get());
            if (info.super_cls == H5T_INTEGER) info.super_sign = H5Tget_sign(super.get());
        }
        return info;
    }

    void check(long long status, const char* what, const std::string& name) const {
        if (status < 0) throw std::runtime_error(std::string("h5r: ") + what + " failed on " + where(name));
    }

    H5I_type_t object_type(const std::string& name) const {
        if (!exists(name)) return H5I_BADID;
        QuietErrors quiet;
        Hid o(H5Oopen(file_.get(), name.c_str(), H5P_DEFAULT), H5Oclose);
        if (!o) return H5I_BADID;
        return H5Iget_type(o.get());
    }

    std::vector<hsize_t> space_dims(hid_t space, const std::string& name) const {
        const int rank = H5Sget_simple_extent_ndims(space);
        check(rank, "H5Sget_simple_extent_ndims", name);
        std::vector<hsize_t> dm(static_cast<std::size_t>(rank));
        if (rank > 0) check(H5Sget_simple_extent_dims(space, dm.data(), nullptr), "H5Sget_simple_extent_dims", name);
        return dm;
    }

    hsize_t count_of(hid_t dset, const std::string& name) const {
        Hid s(H5Dget_space(dset), H5Sclose);
        check(s.get(), "H5Dget_space", name);
        const hssize_t n = H5Sget_simple_extent_npoints(s.get());
        check(n, "H5Sget_simple_extent_npoints", name);
        return static_cast<hsize_t>(n);
    }

    // A one-byte memory type for reading a bool dataset: the native form of its own type.
    Hid bool_mem_type(hid_t dset, const std::string& name) const {
        Hid ft(H5Dget_type(dset), H5Tclose);
        check(ft.get(), "H5Dget_type", name);
        if (H5Tget_size(ft.get()) != 1)
            throw std::runtime_error("h5r: bool read of " + where(name) + " whose type is not one byte");
        Hid mt(H5Tget_native_type(ft.get(), H5T_DIR_ASCEND), H5Tclose);
        check(mt.get(), "H5Tget_native_type", name);
        return mt;
    }

    static long long widen(const unsigned char* raw, std::size_t size, bool is_signed) {
        // Little-endian host assumed (x86-64, aarch64).
        unsigned long long u = 0;
        for (std::size_t i = 0; i < size && i < 8; ++i) u |= static_cast<unsigned long long>(raw[i]) << (8 * i);
        if (is_signed && size < 8 && (u >> (8 * size - 1)) & 1ull) u |= ~0ull << (8 * size);
        return static_cast<long long>(u);
    }

    std::string path_;
    Hid file_;
};

}  // namespace h5r

#endif  // SMALLDATA_TESTS_H5READ_HPP
