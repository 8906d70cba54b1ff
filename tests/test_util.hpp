// test_util.hpp - helpers shared by the serial Catch2 tests: error capture, fresh file
// names, element-wise comparison with readable messages. Include inside an unnamed namespace.
#pragma once

// Our own names for the error codes (not errc_name(): the library's table is under test).
const char* code_id(Errc c) {
    switch (c) {
#define SMALLDATA_TEST_X(id, text) \
    case Errc::id:                 \
        return #id;
        SMALLDATA_ERRORS(SMALLDATA_TEST_X)
#undef SMALLDATA_TEST_X
    }
    return "?";
}

// A logger that keeps the library's warnings in `out` and drops its other messages.
inline smalldata::Logger warnings_into(std::vector<std::string>& out) {
    return [&out](smalldata::LogLevel level, const std::string& m) {
        if (level == smalldata::LogLevel::warning) out.push_back(m);
    };
}

struct Thrown {
    std::string code;  // an Errc id, "none", or "other: <type>"
    std::string what;
};
// Runs f and reports what it threw.
template <class F>
Thrown thrown(F&& f) {
    try {
        f();
    } catch (const smalldata::Error& e) {
        return {code_id(e.code()), e.what()};
    } catch (const std::exception& e) {
        return {"other: std::exception", e.what()};
    } catch (...) {
        return {"other: unknown", ""};
    }
    return {"none", ""};
}

std::string fresh(const std::string& name) {
    const std::string p = h5r::test_path(name);
    std::error_code ec;
    std::filesystem::remove(p, ec);
    return p;
}

smalldata::Options file_opts(const std::string& path) {
    smalldata::Options o;
    o.filename = path;
    return o;
}

// 0, 1, ..., n - 1 as T: the values of a field written as the event number.
template <class T>
std::vector<T> ramp(std::int64_t n) {
    std::vector<T> v;
    for (std::int64_t i = 0; i < n; ++i) v.push_back(static_cast<T>(i));
    return v;
}

template <class T>
bool same(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) return (std::isnan(a) && std::isnan(b)) || a == b;
    else return a == b;
}
template <class T>
std::string show(T v) {
    std::ostringstream os;
    os.precision(17);
    os << +v;
    return os.str();
}
// "" when equal (NaN equals NaN), else where they first differ.
template <class T>
std::string mismatch(const std::vector<T>& got, const std::vector<T>& want) {
    if (got.size() != want.size())
        return "size " + std::to_string(got.size()) + " != expected " + std::to_string(want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        if (!same<T>(got[i], want[i]))
            return "element " + std::to_string(i) + ": got " + show<T>(got[i]) + ", expected " + show<T>(want[i]);
    return "";
}
