// Serial mode: what event() stores. Value types, shapes, groups, timestamps, the errors
// event() raises, fill values, unaligned fields. Every test writes its own file and reads
// it back with the HDF5 C API (h5read.hpp), independently of the library's HDF5 code.
#include "smalldata.hpp"

#include "h5read.hpp"

#include "catch_compat.hpp"

#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using smalldata::Errc;

namespace {

#include "test_util.hpp"

// Whether `tok` occurs in `s` as a whole word ("int8" is not found in "uint8").
bool has_token(const std::string& s, const std::string& tok) {
    auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; };
    for (std::size_t pos = s.find(tok); pos != std::string::npos; pos = s.find(tok, pos + 1)) {
        const bool left = pos == 0 || !word(s[pos - 1]);
        const bool right = pos + tok.size() >= s.size() || !word(s[pos + tok.size()]);
        if (left && right) return true;
    }
    return false;
}

std::vector<hsize_t> dims(std::initializer_list<hsize_t> d) { return std::vector<hsize_t>(d); }

// The HDF5 type a field of element type T must have.
template <class T>
void check_type(const h5r::File& f, const std::string& name) {
    INFO("dataset " << name);
    const h5r::TypeInfo t = f.type_info(name);
    if constexpr (std::is_same_v<T, bool>) {
        CHECK(t.cls == H5T_ENUM);
        CHECK(t.size == 1);
        CHECK(t.super_cls == H5T_INTEGER);
        CHECK(t.super_size == 1);
        CHECK(t.super_sign == H5T_SGN_2);
        using M = std::vector<std::pair<std::string, long long>>;
        CHECK(f.enum_members(name) == M{{"FALSE", 0}, {"TRUE", 1}});
    } else if constexpr (std::is_floating_point_v<T>) {
        CHECK(t.cls == H5T_FLOAT);
        CHECK(t.size == sizeof(T));
        CHECK(t.order == H5T_ORDER_LE);
    } else {
        CHECK(t.cls == H5T_INTEGER);
        CHECK(t.size == sizeof(T));
        CHECK(t.sign == (std::is_signed_v<T> ? H5T_SGN_2 : H5T_SGN_NONE));
        CHECK(t.order == H5T_ORDER_LE);
    }
}

template <class T>
void check_column(const h5r::File& f, const std::string& name, const std::vector<hsize_t>& want_dims,
                  const std::vector<T>& want) {
    INFO("dataset " << name);
    REQUIRE(f.is_dataset(name));
    check_type<T>(f, name);
    CHECK(f.dims(name) == want_dims);
    CHECK(mismatch(f.read<T>(name), want) == "");
}

template <class T>
T fill_of() {
    if constexpr (std::is_same_v<T, bool>) return false;
    else if constexpr (std::is_floating_point_v<T>) return std::numeric_limits<T>::quiet_NaN();
    else if constexpr (std::is_unsigned_v<T>) return std::numeric_limits<T>::max();
    else if constexpr (sizeof(T) == 1) return T(-128);
    else if constexpr (sizeof(T) == 2) return T(-32768);
    else return T(-99999);
}

std::vector<std::int64_t> iota64(std::int64_t n, std::int64_t first = 0) {
    std::vector<std::int64_t> v;
    for (std::int64_t i = 0; i < n; ++i) v.push_back(first + i);
    return v;
}

}  // namespace

// ==================================================================== value types

TEST_CASE("every scalar type is stored with its HDF5 class, size, sign and values", "[serial][types]") {
    const std::string path = fresh("scalar_types.h5");
    const std::vector<std::int8_t> i8{-127, 0, 127, -1};
    const std::vector<std::int16_t> i16{-32767, 0, 32767, 1000};
    const std::vector<std::int32_t> i32{std::numeric_limits<std::int32_t>::min(), 0, std::numeric_limits<std::int32_t>::max(), -99998};
    const std::vector<std::int64_t> i64{std::numeric_limits<std::int64_t>::min(), 0, std::numeric_limits<std::int64_t>::max(), 123456789012345};
    const std::vector<std::uint8_t> u8{0, 1, 254, 128};
    const std::vector<std::uint16_t> u16{0, 1, 65534, 40000};
    const std::vector<std::uint32_t> u32{0, 1, 4294967294u, 3000000000u};
    const std::vector<std::uint64_t> u64{0, 1, std::numeric_limits<std::uint64_t>::max() - 1, std::uint64_t(1) << 63};
    const std::vector<float> f32{1.5f, -0.25f, 3.0e38f, -1.0e-30f};
    const std::vector<double> f64{1.0 / 3.0, -2.5, 1.0e300, -0.0};
    const std::array<bool, 4> b{true, false, true, true};
    const std::vector<long long> ll{-5, std::numeric_limits<long long>::min(), 7, std::numeric_limits<long long>::max()};
    const std::vector<unsigned long long> ull{5, std::numeric_limits<unsigned long long>::max() - 2, 0, 9};
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::size_t i = 0; i < 4; ++i)
            smd.event(static_cast<std::int64_t>(i), "i8", i8[i], "i16", i16[i], "i32", i32[i], "i64", i64[i],
                      "u8", u8[i], "u16", u16[i], "u32", u32[i], "u64", u64[i], "f32", f32[i], "f64", f64[i],
                      "b", b[i], "ll", ll[i], "ull", ull[i]);
        smd.done();
    }
    h5r::File f(path);
    check_column<std::int64_t>(f, "timestamp", dims({4}), {0, 1, 2, 3});
    check_column(f, "i8", dims({4}), i8);
    check_column(f, "i16", dims({4}), i16);
    check_column(f, "i32", dims({4}), i32);
    check_column(f, "i64", dims({4}), i64);
    check_column(f, "u8", dims({4}), u8);
    check_column(f, "u16", dims({4}), u16);
    check_column(f, "u32", dims({4}), u32);
    check_column(f, "u64", dims({4}), u64);
    check_column(f, "f32", dims({4}), f32);
    check_column(f, "f64", dims({4}), f64);
    check_column(f, "b", dims({4}), std::vector<bool>(b.begin(), b.end()));
    // long long is not std::int64_t on LP64 (that is long) but has its size: int64.
    check_column(f, "ll", dims({4}), std::vector<std::int64_t>(ll.begin(), ll.end()));
    check_column(f, "ull", dims({4}), std::vector<std::uint64_t>(ull.begin(), ull.end()));
    // -0.0 keeps its sign bit.
    CHECK(std::signbit(f.read<double>("f64")[3]));
}

TEST_CASE("vectors, arrays and views keep their element type and shape", "[serial][types]") {
    const std::string path = fresh("array_types.h5");
    constexpr std::size_t n = 5;
    std::vector<float> want_vf;
    std::vector<std::uint8_t> want_au8;
    std::vector<bool> want_ab;
    std::vector<std::int64_t> want_vll;
    std::vector<double> want_img;
    std::vector<std::int32_t> want_cube;
    std::vector<std::uint16_t> want_line;
    std::vector<std::uint64_t> want_one;
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::size_t e = 0; e < n; ++e) {
            const float x = static_cast<float>(e);
            const std::vector<float> vf{x, x + 0.5f, -x};
            const std::array<std::uint8_t, 4> au8{static_cast<std::uint8_t>(e), 2, 250, static_cast<std::uint8_t>(e * 3)};
            const std::array<bool, 3> ab{e % 2 == 0, true, false};
            const std::vector<long long> vll{static_cast<long long>(e) * -1000000000000LL, 42};
            double img[2][3];
            for (std::size_t r = 0; r < 2; ++r)
                for (std::size_t c = 0; c < 3; ++c) img[r][c] = static_cast<double>(e * 100 + r * 10 + c) + 0.5;
            std::vector<std::int32_t> cube(8);
            for (std::size_t k = 0; k < 8; ++k) cube[k] = static_cast<std::int32_t>(e * 8 + k) - 20;
            const std::uint16_t line[5] = {1, 2, 3, static_cast<std::uint16_t>(e), 65535};
            const std::array<std::uint64_t, 1> one{std::uint64_t(1) << (40 + e)};

            smd.event(e, "vf", vf, "au8", au8, "ab", ab, "vll", vll,
                      "img", smalldata::view(&img[0][0], {2, 3}),
                      "cube", smalldata::view(cube.data(), std::vector<std::uint64_t>{2, 2, 2}),
                      "line", smalldata::view(static_cast<const std::uint16_t*>(line), {5}), "one", one);

            want_vf.insert(want_vf.end(), vf.begin(), vf.end());
            want_au8.insert(want_au8.end(), au8.begin(), au8.end());
            want_ab.insert(want_ab.end(), ab.begin(), ab.end());
            want_vll.insert(want_vll.end(), vll.begin(), vll.end());
            want_img.insert(want_img.end(), &img[0][0], &img[0][0] + 6);
            want_cube.insert(want_cube.end(), cube.begin(), cube.end());
            want_line.insert(want_line.end(), line, line + 5);
            want_one.push_back(one[0]);
        }
        smd.done();
    }
    h5r::File f(path);
    check_column<std::int64_t>(f, "timestamp", dims({n}), iota64(n));
    check_column(f, "vf", dims({n, 3}), want_vf);
    check_column(f, "au8", dims({n, 4}), want_au8);
    check_column(f, "ab", dims({n, 3}), want_ab);
    check_column(f, "vll", dims({n, 2}), want_vll);
    check_column(f, "img", dims({n, 2, 3}), want_img);
    check_column(f, "cube", dims({n, 2, 2, 2}), want_cube);
    check_column(f, "line", dims({n, 5}), want_line);
    check_column(f, "one", dims({n, 1}), want_one);
}

TEST_CASE("view() rejects more than max_rank dimensions", "[serial][types]") {
    const double x[1] = {1.0};
    CHECK(thrown([&] { (void)smalldata::view(x, {1, 1, 1, 1, 1, 1, 1, 1}); }).code == "usage");
    CHECK(thrown([&] { (void)smalldata::view(x, std::vector<std::uint64_t>(8, 1)); }).code == "usage");
    const auto v = smalldata::view(x, {1, 1, 1, 1, 1, 1, 1});
    CHECK(int(v.shape.rank) == smalldata::max_rank);
    CHECK(v.shape.count() == 1);
}

// ==================================================================== groups

TEST_CASE("names with '/' create HDF5 groups", "[serial][names]") {
    const std::string path = fresh("groups.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 3; ++i)
            smd.event(i, "det/roi", std::array<std::int16_t, 2>{static_cast<std::int16_t>(i), 7}, "det/sum",
                      static_cast<double>(i) * 2.0, "a/b/c/x", static_cast<std::int32_t>(i), "top", 1.0f);
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.is_group("det"));
    CHECK(f.is_group("a"));
    CHECK(f.is_group("a/b"));
    CHECK(f.is_group("a/b/c"));
    CHECK(f.is_dataset("det/roi"));
    CHECK(f.is_dataset("det/sum"));
    CHECK(f.is_dataset("a/b/c/x"));
    CHECK(f.is_dataset("top"));
    CHECK(f.children("det") == std::vector<std::string>{"roi", "sum"});
    CHECK(f.children("a/b/c") == std::vector<std::string>{"x"});
    CHECK(f.children("/") == std::vector<std::string>{"a", "det", "timestamp", "top"});
    check_column<std::int16_t>(f, "det/roi", dims({3, 2}), {0, 7, 1, 7, 2, 7});
    check_column<double>(f, "det/sum", dims({3}), {0.0, 2.0, 4.0});
    check_column<std::int32_t>(f, "a/b/c/x", dims({3}), {0, 1, 2});
}

TEST_CASE("fields may come in any order and any number", "[serial][names]") {
    const std::string path = fresh("field_order.h5");
    constexpr std::size_t n_fields = 300;
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 6; ++i) {
            // The order of a and b flips every event; c sometimes comes between them.
            if (i % 2 == 0)
                smd.event(i, "a", static_cast<std::int32_t>(i), "b", static_cast<double>(-i));
            else if (i % 3 == 0)
                smd.event(i, "b", static_cast<double>(-i), "c", std::uint8_t(3), "a", static_cast<std::int32_t>(i));
            else
                smd.event(i, "b", static_cast<double>(-i), "a", static_cast<std::int32_t>(i));
            // Many fields (forward on even events, backward on odd ones).
            for (std::size_t k = 0; k < n_fields; ++k) {
                const std::size_t j = i % 2 == 0 ? k : n_fields - 1 - k;
                smd.event(i, "many/f" + std::to_string(j), static_cast<std::int64_t>(i * 1000) + static_cast<std::int64_t>(j));
            }
        }
        smd.done();
    }
    h5r::File f(path);
    check_column<std::int32_t>(f, "a", dims({6}), {0, 1, 2, 3, 4, 5});
    check_column<double>(f, "b", dims({6}), {0, -1, -2, -3, -4, -5});
    check_column<std::uint8_t>(f, "c", dims({6}), {255, 255, 255, 3, 255, 255});
    CHECK(f.children("many").size() == n_fields);
    for (std::size_t j = 0; j < n_fields; j += 37) {
        std::vector<std::int64_t> want;
        for (std::int64_t i = 0; i < 6; ++i) want.push_back(i * 1000 + static_cast<std::int64_t>(j));
        check_column<std::int64_t>(f, "many/f" + std::to_string(j), dims({6}), want);
    }
}

// ==================================================================== timestamps

TEST_CASE("equal timestamps merge into one event, larger ones start a new event", "[serial][timestamp]") {
    const std::string path = fresh("merge.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "a", 1.0);
        smd.event(0, "b", std::int32_t(1));
        smd.event(5, "a", 2.0);
        smd.event(5, "b", std::int32_t(2));
        smd.event(5, "c/d", std::uint8_t(9));
        smd.event(7, "b", std::int32_t(3));
        smd.event(100, "a", 4.0);
        smd.done();
    }
    h5r::File f(path);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    check_column<std::int64_t>(f, "timestamp", dims({4}), {0, 5, 7, 100});
    check_column<double>(f, "a", dims({4}), {1.0, 2.0, nan, 4.0});
    check_column<std::int32_t>(f, "b", dims({4}), {1, 2, 3, -99999});
    check_column<std::uint8_t>(f, "c/d", dims({4}), {255, 9, 255, 255});
}

TEST_CASE("the timestamp can be any integer type and is stored as int64", "[serial][timestamp]") {
    const std::string path = fresh("timestamp_types.h5");
    const std::int64_t big = std::numeric_limits<std::int64_t>::max();
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(-5, "x", 1.0);                                  // int, negative
        smd.event(static_cast<short>(0), "x", 2.0);               // short
        smd.event(std::uint8_t(7), "x", 3.0);                     // uint8
        smd.event(std::uint32_t(4000000000u), "x", 4.0);          // beyond int32
        smd.event(5000000000LL, "x", 5.0);                        // long long
        smd.event(static_cast<std::uint64_t>(big), "x", 6.0);     // uint64 == INT64_MAX: fits
        smd.done();
    }
    h5r::File f(path);
    check_column<std::int64_t>(f, "timestamp", dims({6}), {-5, 0, 7, 4000000000LL, 5000000000LL, big});
    check_column<double>(f, "x", dims({6}), {1, 2, 3, 4, 5, 6});
}

TEST_CASE("a decreasing timestamp throws timestamp_order", "[serial][timestamp][errors]") {
    const std::string path = fresh("ts_order.h5");
    smalldata::SmallData smd(file_opts(path));
    smd.event(10, "a", 1.0);
    smd.event(11, "a", 2.0);
    CHECK(thrown([&] { smd.event(9, "a", 3.0); }).code == "timestamp_order");
    CHECK(thrown([&] { smd.event(10, "a", 3.0); }).code == "timestamp_order");
    CHECK(thrown([&] { smd.event(std::int64_t(-1)); }).code == "timestamp_order");
}

TEST_CASE("an unsigned 64-bit timestamp above INT64_MAX throws usage", "[serial][timestamp][errors]") {
    const std::string path = fresh("ts_u64.h5");
    smalldata::SmallData smd(file_opts(path));
    const std::uint64_t too_big = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1u;
    CHECK(thrown([&] { smd.event(too_big, "a", 1.0); }).code == "usage");
    CHECK(thrown([&] { smd.event(std::numeric_limits<std::uint64_t>::max(), "a", 1.0); }).code == "usage");
    CHECK(thrown([&] { smd.event(std::numeric_limits<unsigned long long>::max()); }).code == "usage");
}

// ==================================================================== type / shape errors

TEST_CASE("a value of another type throws type_mismatch naming the field and both types",
          "[serial][errors]") {
    const std::string path = fresh("type_mismatch.h5");
    smalldata::SmallData smd(file_opts(path));
    smd.event(0, "energy_x", 1.0, "det/img", std::vector<float>{1, 2});
    SECTION("scalar double then int32") {
        const Thrown t = thrown([&] { smd.event(1, "energy_x", std::int32_t(1)); });
        CHECK(t.code == "type_mismatch");
        CHECK_THAT(t.what, Catch::Contains("energy_x"));
        CHECK(has_token(t.what, "float64"));
        CHECK(has_token(t.what, "int32"));
    }
    SECTION("in a later call of the same event") {
        smd.event(1, "det/img", std::vector<float>{3, 4});
        const Thrown t = thrown([&] { smd.event(1, "energy_x", 2.0f); });
        CHECK(t.code == "type_mismatch");
        CHECK_THAT(t.what, Catch::Contains("energy_x"));
        CHECK(has_token(t.what, "float64"));
        CHECK(has_token(t.what, "float32"));
    }
    SECTION("vector<float> then vector<double>") {
        const Thrown t = thrown([&] { smd.event(1, "det/img", std::vector<double>{1, 2}); });
        CHECK(t.code == "type_mismatch");
        CHECK_THAT(t.what, Catch::Contains("det/img"));
        CHECK(has_token(t.what, "float32"));
        CHECK(has_token(t.what, "float64"));
    }
    SECTION("double then bool") {
        const Thrown t = thrown([&] { smd.event(1, "energy_x", true); });
        CHECK(t.code == "type_mismatch");
        CHECK(has_token(t.what, "bool"));
    }
    SECTION("signedness counts: uint8 then int8") {
        smd.event(1, "count", std::uint8_t(1));
        const Thrown t = thrown([&] { smd.event(2, "count", std::int8_t(1)); });
        CHECK(t.code == "type_mismatch");
        CHECK(has_token(t.what, "uint8"));
        CHECK(has_token(t.what, "int8"));
    }
}

TEST_CASE("a value of another shape throws shape_mismatch naming the field and both shapes",
          "[serial][errors]") {
    const std::string path = fresh("shape_mismatch.h5");
    smalldata::SmallData smd(file_opts(path));
    SECTION("vector of 3 then of 4") {
        smd.event(0, "spectrum", std::vector<double>{1, 2, 3});
        smd.event(1, "spectrum", std::vector<double>{4, 5, 6});
        const Thrown t = thrown([&] { smd.event(2, "spectrum", std::vector<double>{1, 2, 3, 4}); });
        CHECK(t.code == "shape_mismatch");
        CHECK_THAT(t.what, Catch::Contains("spectrum"));
        CHECK_THAT(t.what, Catch::Contains("(3)"));
        CHECK_THAT(t.what, Catch::Contains("(4)"));
    }
    SECTION("array of 2 then vector of 3") {
        smd.event(0, "pair", std::array<std::int32_t, 2>{1, 2});
        const Thrown t = thrown([&] { smd.event(1, "pair", std::vector<std::int32_t>{1, 2, 3}); });
        CHECK(t.code == "shape_mismatch");
        CHECK_THAT(t.what, Catch::Contains("pair"));
        CHECK_THAT(t.what, Catch::Contains("(2)"));
        CHECK_THAT(t.what, Catch::Contains("(3)"));
    }
    SECTION("scalar then vector of 1") {
        smd.event(0, "s", 1.0);
        const Thrown t = thrown([&] { smd.event(1, "s", std::vector<double>{1.0}); });
        CHECK(t.code == "shape_mismatch");
        CHECK_THAT(t.what, Catch::Contains("()"));
        CHECK_THAT(t.what, Catch::Contains("(1)"));
    }
    SECTION("view (2, 3) then (3, 2)") {
        const float img[6] = {0, 1, 2, 3, 4, 5};
        smd.event(0, "img", smalldata::view(img, {2, 3}));
        const Thrown t = thrown([&] { smd.event(1, "img", smalldata::view(img, {3, 2})); });
        CHECK(t.code == "shape_mismatch");
        CHECK_THAT(t.what, Catch::Contains("img"));
        CHECK_THAT(t.what, Catch::Contains("(2, 3)"));
        CHECK_THAT(t.what, Catch::Contains("(3, 2)"));
    }
}

TEST_CASE("the same field twice in one event throws duplicate_field", "[serial][errors]") {
    const std::string path = fresh("duplicate.h5");
    smalldata::SmallData smd(file_opts(path));
    SECTION("in two calls with the same timestamp") {
        smd.event(1, "pulse_energy", 1.0);
        const Thrown t = thrown([&] { smd.event(1, "pulse_energy", 2.0); });
        CHECK(t.code == "duplicate_field");
        CHECK_THAT(t.what, Catch::Contains("pulse_energy"));
    }
    SECTION("in one call") {
        CHECK(thrown([&] { smd.event(1, "b", 1.0, "b", 2.0); }).code == "duplicate_field");
    }
    SECTION("after the field was seen in an earlier event") {
        smd.event(1, "c", 1.0, "d", 1.0);
        smd.event(2, "c", 2.0, "d", 2.0);
        CHECK(thrown([&] { smd.event(2, "d", 3.0); }).code == "duplicate_field");
    }
}

// ==================================================================== names

TEST_CASE("invalid field names throw Errc::name", "[serial][names][errors]") {
    const char* bad[] = {"", "/a", "a/", "a//b", "a/./b", "a/../b", ".", "..", "timestamp", "timestamp/x", "./a", "a/.."};
    int k = 0;
    for (const char* name : bad) {
        INFO("name '" << name << "'");
        const std::string path = fresh("bad_name_" + std::to_string(k++) + ".h5");
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "ok", 1.0);
        CHECK(thrown([&] { smd.event(1, name, 1.0); }).code == "name");
    }
}

TEST_CASE("a field name that clashes with a group throws Errc::name", "[serial][names][errors]") {
    const std::string path = fresh("name_clash.h5");
    smalldata::SmallData smd(file_opts(path));
    SECTION("'a' then 'a/b'") {
        smd.event(0, "a", 1.0);
        CHECK(thrown([&] { smd.event(1, "a/b", 1.0); }).code == "name");
    }
    SECTION("'a/b' then 'a'") {
        smd.event(0, "a/b", 1.0);
        CHECK(thrown([&] { smd.event(1, "a", 1.0); }).code == "name");
    }
    SECTION("'a/b' then 'a/b/c'") {
        smd.event(0, "a/b", 1.0);
        CHECK(thrown([&] { smd.event(1, "a/b/c", 1.0); }).code == "name");
    }
    SECTION("'x' then 'x/y' in the same event") {
        CHECK(thrown([&] { smd.event(0, "x", 1.0, "x/y", 2.0); }).code == "name");
    }
}

TEST_CASE("names that merely look alike are valid", "[serial][names]") {
    const std::string path = fresh("names_ok.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "a", 1.0, "ab/c", 2.0, "a.b", 3.0, "timestamps", 5.0, "g/timestamp", 6.0);
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.is_dataset("a"));
    CHECK(f.is_dataset("ab/c"));
    CHECK(f.is_dataset("a.b"));
    CHECK(f.is_dataset("timestamps"));
    CHECK(f.is_dataset("g/timestamp"));
    CHECK(f.read<double>("g/timestamp") == std::vector<double>{6.0});
}

// ==================================================================== fill values

namespace {
template <class T>
void check_fill_column(const h5r::File& f, const std::string& name, T given, std::size_t row_elems) {
    INFO("dataset " << name);
    const T fill = fill_of<T>();
    // Row 0 holds the given value, rows 1 and 2 the fill value.
    std::vector<T> want(row_elems, given);
    want.insert(want.end(), 2 * row_elems, fill);
    CHECK(mismatch(f.read<T>(name), want) == "");
    const T recorded = f.fill_value<T>(name);
    CHECK(same<T>(recorded, fill));
    CHECK(show<T>(recorded) == show<T>(fill));
}
}  // namespace

TEST_CASE("missing rows hold the type's fill value, recorded as the HDF5 fill value", "[serial][fill]") {
    // int8 and int16 cannot hold -99999: they use their minimum instead.
    CHECK(fill_of<std::int8_t>() == -128);
    CHECK(fill_of<std::int16_t>() == -32768);
    const std::string path = fresh("fill_values.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "i8", std::int8_t(1), "i16", std::int16_t(2), "i32", std::int32_t(3), "i64", std::int64_t(4),
                  "u8", std::uint8_t(5), "u16", std::uint16_t(6), "u32", std::uint32_t(7), "u64", std::uint64_t(8),
                  "f32", 9.5f, "f64", 10.5, "b", true, "marker", std::int32_t(0));
        smd.event(0, "arr/i32", std::array<std::int32_t, 3>{1, 1, 1}, "arr/u16", std::vector<std::uint16_t>{2, 2},
                  "arr/f32", std::array<float, 2>{3, 3}, "arr/b", std::array<bool, 2>{true, true},
                  "arr/i8", std::vector<std::int8_t>{4, 4});
        smd.event(1, "marker", std::int32_t(1));
        smd.event(2, "marker", std::int32_t(2));
        smd.done();
    }
    h5r::File f(path);
    check_column<std::int64_t>(f, "timestamp", dims({3}), {0, 1, 2});
    check_fill_column<std::int8_t>(f, "i8", 1, 1);
    check_fill_column<std::int16_t>(f, "i16", 2, 1);
    check_fill_column<std::int32_t>(f, "i32", 3, 1);
    check_fill_column<std::int64_t>(f, "i64", 4, 1);
    check_fill_column<std::uint8_t>(f, "u8", 5, 1);
    check_fill_column<std::uint16_t>(f, "u16", 6, 1);
    check_fill_column<std::uint32_t>(f, "u32", 7, 1);
    check_fill_column<std::uint64_t>(f, "u64", 8, 1);
    check_fill_column<float>(f, "f32", 9.5f, 1);
    check_fill_column<double>(f, "f64", 10.5, 1);
    check_fill_column<bool>(f, "b", true, 1);
    check_fill_column<std::int32_t>(f, "arr/i32", 1, 3);
    check_fill_column<std::uint16_t>(f, "arr/u16", 2, 2);
    check_fill_column<float>(f, "arr/f32", 3, 2);
    check_fill_column<bool>(f, "arr/b", true, 2);
    check_fill_column<std::int8_t>(f, "arr/i8", 4, 2);
    CHECK(f.dims("arr/i32") == dims({3, 3}));
    // The recorded fill value is a user-defined one (not HDF5's default 0).
    CHECK(f.fill_value_defined("i32"));
    CHECK(f.fill_value_defined("u8"));
    CHECK(f.fill_value_defined("f64"));
}

TEST_CASE("a field that first appears at event 5 is back-filled for events 0-4", "[serial][fill]") {
    const std::string path = fresh("backfill.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 10; ++i) {
            smd.event(i, "always", static_cast<std::int32_t>(i));
            if (i >= 5)
                smd.event(i, "late", static_cast<double>(i) + 0.5, "g/late_u", static_cast<std::uint32_t>(i),
                          "g/late_v", std::array<std::int16_t, 2>{static_cast<std::int16_t>(i), -1});
        }
        smd.done();
    }
    h5r::File f(path);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const std::uint32_t um = std::numeric_limits<std::uint32_t>::max();
    check_column<std::int64_t>(f, "timestamp", dims({10}), iota64(10));
    check_column<std::int32_t>(f, "always", dims({10}), {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    check_column<double>(f, "late", dims({10}), {nan, nan, nan, nan, nan, 5.5, 6.5, 7.5, 8.5, 9.5});
    check_column<std::uint32_t>(f, "g/late_u", dims({10}), {um, um, um, um, um, 5, 6, 7, 8, 9});
    std::vector<std::int16_t> v(10, -32768);
    for (std::int16_t i = 5; i < 10; ++i) {
        v.push_back(i);
        v.push_back(-1);
    }
    check_column<std::int16_t>(f, "g/late_v", dims({10, 2}), v);
}

TEST_CASE("every aligned dataset is exactly as long as timestamp", "[serial][fill]") {
    const std::string path = fresh("aligned_lengths.h5");
    constexpr std::int64_t n = 50;
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < n; ++i) {
            if (i % 2 == 0) smd.event(i * 3, "even", static_cast<std::int64_t>(i));
            if (i % 3 == 0) smd.event(i * 3, "third", std::vector<float>{1, 2, 3});
            if (i == 0) smd.event(i * 3, "first_only", std::uint8_t(1));
            if (i == n - 1) smd.event(i * 3, "g/last_only", std::int16_t(1));
            if (i % 2 == 1) smd.event(i * 3, "odd", true);
        }
        smd.done();
    }
    h5r::File f(path);
    const std::vector<std::int64_t> ts = f.read<std::int64_t>("timestamp");
    REQUIRE(ts.size() == std::size_t(n));
    for (std::int64_t i = 0; i < n; ++i) CHECK(ts[std::size_t(i)] == 3 * i);
    for (const char* name : {"even", "third", "first_only", "g/last_only", "odd"}) {
        INFO("dataset " << name);
        REQUIRE(f.is_dataset(name));
        CHECK(f.dims(name).at(0) == hsize_t(n));
    }
    const auto even = f.read<std::int64_t>("even");
    const auto first = f.read<std::uint8_t>("first_only");
    const auto last = f.read<std::int16_t>("g/last_only");
    const auto odd = f.read<bool>("odd");
    const auto third = f.read<float>("third");
    for (std::size_t i = 0; i < std::size_t(n); ++i) {
        INFO("row " << i);
        CHECK(even[i] == (i % 2 == 0 ? std::int64_t(i) : -99999));
        CHECK(first[i] == (i == 0 ? 1 : 255));
        CHECK(last[i] == (i == std::size_t(n) - 1 ? 1 : -32768));
        CHECK(odd[i] == (i % 2 == 1));
        CHECK((i % 3 == 0 ? third[3 * i + 2] == 3.0f : std::isnan(third[3 * i + 2])));
    }
}

TEST_CASE("an event() call with no fields still makes an event", "[serial][fill]") {
    const std::string path = fresh("empty_event.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(1, "x", 1.0);
        smd.event(2);
        smd.event(3, "x", 3.0);
        smd.event(4);
        smd.done();
    }
    h5r::File f(path);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    check_column<std::int64_t>(f, "timestamp", dims({4}), {1, 2, 3, 4});
    check_column<double>(f, "x", dims({4}), {1.0, nan, 3.0, nan});
}

// ==================================================================== unaligned

TEST_CASE("unaligned_ fields hold only the rows given", "[serial][unaligned]") {
    const std::string path = fresh("unaligned.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        for (std::int64_t i = 0; i < 8; ++i) {
            smd.event(i, "x", static_cast<double>(i));
            if (i == 1 || i == 4 || i == 5) smd.event(i, "unaligned_x", static_cast<std::int32_t>(i * 10));
            if (i == 6) smd.event(i, "grp/unaligned_y", std::array<std::uint16_t, 2>{6, 66});
            if (i == 2 || i == 3) smd.event(i, "unaligned_g/x", static_cast<float>(i));
            if (i >= 3) smd.event(i, "unaligned_late", static_cast<std::int64_t>(i));
        }
        smd.done();
    }
    h5r::File f(path);
    const float fnan = std::numeric_limits<float>::quiet_NaN();
    check_column<std::int64_t>(f, "timestamp", dims({8}), iota64(8));
    check_column<std::int32_t>(f, "unaligned_x", dims({3}), {10, 40, 50});
    CHECK(f.is_group("grp"));
    check_column<std::uint16_t>(f, "grp/unaligned_y", dims({1, 2}), {6, 66});
    // Only the last path component decides: this one is aligned (filled).
    CHECK(f.is_group("unaligned_g"));
    check_column<float>(f, "unaligned_g/x", dims({8}), {fnan, fnan, 2.0f, 3.0f, fnan, fnan, fnan, fnan});
    // An unaligned field appearing late is not back-filled.
    check_column<std::int64_t>(f, "unaligned_late", dims({5}), {3, 4, 5, 6, 7});
}
