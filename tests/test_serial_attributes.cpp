// Serial mode: save_attribute() and std::vector<bool> values. Attributes on the root, a
// group, a field, a summary and `timestamp`, with their HDF5 types and values, replaced
// values, paths that name nothing (found by done(), after the file is complete), invalid
// paths and names; std::vector<bool> fields (direct and through callbacks: get_vector<bool>,
// values<bool>) and summaries. Every test reads its file back through h5read.hpp.
#include "smalldata.hpp"

#include "h5read.hpp"

#include "catch_compat.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

using smalldata::DType;
using smalldata::Errc;

namespace {

#include "test_util.hpp"

// The attributes of an object other than the library's own ("smalldata_..." on the root).
std::vector<std::string> user_attrs(const h5r::File& f, const std::string& obj) {
    std::vector<std::string> out;
    for (const std::string& n : f.attr_names(obj))
        if (n.rfind("smalldata_", 0) != 0) out.push_back(n);
    return out;
}

bool is_int(const h5r::TypeInfo& t, std::size_t size, bool is_signed) {
    return t.cls == H5T_INTEGER && t.size == size && t.sign == (is_signed ? H5T_SGN_2 : H5T_SGN_NONE);
}
bool is_bool(const h5r::TypeInfo& t) {
    return t.cls == H5T_ENUM && t.size == 1 && t.super_cls == H5T_INTEGER && t.super_sign == H5T_SGN_2;
}

}  // namespace

// ==================================================================== attributes

TEST_CASE("save_attribute writes typed attributes on the root, a group, a field, a summary and timestamp",
          "[serial][attributes]") {
    double checkpoint_seconds = 5;
    std::string name = "attrs_swmr.h5";
    SECTION("checkpoints on (SWMR file)") {}
    SECTION("checkpoints off") {
        checkpoint_seconds = 0;
        name = "attrs_plain.h5";
    }
    const std::string path = fresh(name);
    std::vector<double> big(20000);  // 160 KB: more than an object header holds (dense storage)
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = 0.5 * static_cast<double>(i);
    const float matrix[6] = {1, 2, 3, 4, 5, 6};
    {
        smalldata::Options o = file_opts(path);
        o.checkpoint_seconds = checkpoint_seconds;
        o.cache_size = 16;
        smalldata::SmallData smd(o);
        // Before the field exists: the path is resolved in the final file.
        smd.save_attribute("late", "units", "V");
        for (std::int64_t i = 0; i < 50; ++i) {
            smd.event(i, "x", static_cast<double>(i), "det/roi",
                      std::array<std::int16_t, 4>{static_cast<std::int16_t>(i), 1, 2, 3});
            if (i >= 40) smd.event(i, "late", static_cast<float>(i));
        }
        smd.save_summary("n_events", std::int64_t(50), "hist", std::vector<double>{1, 2, 3});
        smd.save_attribute("", "run", std::int32_t(42));
        smd.save_attribute("", "experiment", "mfx12345");                       // const char*
        smd.save_attribute("", "operator", std::string("J. Doe"));              // std::string
        smd.save_attribute("", "comment", std::string_view("\xce\xb1\xce\xb2 utf-8"));  // string_view, UTF-8
        smd.save_attribute("", "empty", std::string());
        smd.save_attribute("", "calibrated", true);
        smd.save_attribute("det", "geometry", std::array<double, 3>{0.1, -0.2, 1.5});
        smd.save_attribute("det", "pixels", std::vector<std::uint16_t>{1, 65535});
        smd.save_attribute("det/roi", "bad_pixels", std::vector<bool>{true, false, false, true});
        smd.save_attribute("det/roi", "matrix", smalldata::view(matrix, {2, 3}));
        smd.save_attribute("x", "units", "mm");
        smd.save_attribute("x", "scale", 0.5);
        smd.save_attribute("x", "scale", 2.5f);    // replaced, with another type
        smd.save_attribute("x", "units", "keV");   // replaced
        smd.save_attribute("x", "none", std::vector<double>{});
        smd.save_attribute("x", "big", big);
        smd.save_attribute("x", "long", 5LL);      // long long: int64
        smd.save_attribute("hist", "units", "counts");
        smd.save_attribute("n_events", "max", std::numeric_limits<std::uint64_t>::max());
        smd.save_attribute("timestamp", "units", "ns");
        CHECK_NOTHROW(smd.done());
    }
    h5r::File f(path);
    // The data is untouched.
    CHECK(f.read<std::int64_t>("timestamp").size() == 50);
    CHECK(f.read<double>("x").at(49) == 49.0);
    CHECK(f.scalar<std::int64_t>("n_events") == 50);

    CHECK(user_attrs(f, "") ==
          std::vector<std::string>{"calibrated", "comment", "empty", "experiment", "operator", "run"});
    CHECK(is_int(f.attr_type_info("", "run"), 4, true));
    CHECK(f.attr_dims("", "run").empty());
    CHECK(f.read_attr<std::int32_t>("", "run") == std::vector<std::int32_t>{42});
    CHECK(f.attr_type_info("", "experiment").cls == H5T_STRING);
    CHECK(f.attr_is_variable_string("", "experiment"));
    CHECK(f.attr_dims("", "experiment").empty());
    CHECK(f.read_attr_string("", "experiment") == "mfx12345");
    CHECK(f.read_attr_string("", "operator") == "J. Doe");
    CHECK(f.read_attr_string("", "comment") == "\xce\xb1\xce\xb2 utf-8");
    CHECK(f.read_attr_string("", "empty").empty());
    CHECK(is_bool(f.attr_type_info("", "calibrated")));
    CHECK(f.read_attr<bool>("", "calibrated") == std::vector<bool>{true});

    CHECK(user_attrs(f, "det") == std::vector<std::string>{"geometry", "pixels"});
    CHECK(f.attr_type_info("det", "geometry").cls == H5T_FLOAT);
    CHECK(f.attr_type_info("det", "geometry").size == 8);
    CHECK(f.attr_dims("det", "geometry") == std::vector<hsize_t>{3});
    CHECK(f.read_attr<double>("det", "geometry") == std::vector<double>{0.1, -0.2, 1.5});
    CHECK(is_int(f.attr_type_info("det", "pixels"), 2, false));
    CHECK(f.read_attr<std::uint16_t>("det", "pixels") == std::vector<std::uint16_t>{1, 65535});

    CHECK(user_attrs(f, "det/roi") == std::vector<std::string>{"bad_pixels", "matrix"});
    CHECK(is_bool(f.attr_type_info("det/roi", "bad_pixels")));
    CHECK(f.attr_dims("det/roi", "bad_pixels") == std::vector<hsize_t>{4});
    CHECK(f.read_attr<bool>("det/roi", "bad_pixels") == std::vector<bool>{true, false, false, true});
    CHECK(f.attr_dims("det/roi", "matrix") == std::vector<hsize_t>{2, 3});
    CHECK(f.attr_type_info("det/roi", "matrix").size == 4);
    CHECK(f.read_attr<float>("det/roi", "matrix") == std::vector<float>{1, 2, 3, 4, 5, 6});

    CHECK(user_attrs(f, "x") == std::vector<std::string>{"big", "long", "none", "scale", "units"});
    CHECK(f.read_attr_string("x", "units") == "keV");
    CHECK(f.attr_type_info("x", "scale").cls == H5T_FLOAT);
    CHECK(f.attr_type_info("x", "scale").size == 4);
    CHECK(f.read_attr<float>("x", "scale") == std::vector<float>{2.5f});
    CHECK(f.attr_dims("x", "none") == std::vector<hsize_t>{0});
    CHECK(f.attr_dims("x", "big") == std::vector<hsize_t>{big.size()});
    CHECK(mismatch(f.read_attr<double>("x", "big"), big) == "");
    CHECK(is_int(f.attr_type_info("x", "long"), 8, true));
    CHECK(f.read_attr<std::int64_t>("x", "long") == std::vector<std::int64_t>{5});

    CHECK(f.read_attr_string("late", "units") == "V");
    CHECK(f.read_attr_string("hist", "units") == "counts");
    CHECK(is_int(f.attr_type_info("n_events", "max"), 8, false));
    CHECK(f.read_attr<std::uint64_t>("n_events", "max") ==
          std::vector<std::uint64_t>{std::numeric_limits<std::uint64_t>::max()});
    CHECK(f.read_attr_string("timestamp", "units") == "ns");
}

TEST_CASE("an attribute whose path names nothing: the file is complete, then done() throws Errc::name",
          "[serial][attributes][errors]") {
    const std::string path = fresh("attr_missing.h5");
    const std::int64_t n = 3000;  // more than one cache of rows
    Thrown t;
    {
        smalldata::Options o = file_opts(path);
        o.cache_size = 1024;
        smalldata::SmallData smd(o);
        smd.save_attribute("nope", "units", "mm");        // never a field, group or summary
        for (std::int64_t i = 0; i < n; ++i) smd.event(i, "x", static_cast<double>(i), "det/roi", std::int16_t(1));
        smd.save_summary("kept", 5.0);
        smd.save_attribute("x", "units", "mm");
        smd.save_attribute("x/below", "offset", 1.0);     // below a dataset
        smd.save_attribute("kept", "units", "s");
        smd.save_attribute("det", "distance", 0.25);
        t = thrown([&] { smd.done(); });
        CHECK(thrown([&] { smd.done(); }).code == "none");  // done() once: the second call does nothing
    }
    CAPTURE(t.what);
    CHECK(t.code == "name");
    CHECK(t.what.find("'nope'") != std::string::npos);
    CHECK(t.what.find("'units'") != std::string::npos);
    CHECK(t.what.find("'x/below'") != std::string::npos);
    CHECK(t.what.find("'offset'") != std::string::npos);
    h5r::File f(path);
    CHECK(mismatch(f.read<std::int64_t>("timestamp"), ramp<std::int64_t>(n)) == "");
    CHECK(mismatch(f.read<double>("x"), ramp<double>(n)) == "");
    CHECK(f.read<std::int16_t>("det/roi").size() == static_cast<std::size_t>(n));
    CHECK(f.scalar<double>("kept") == 5.0);
    CHECK(f.read_attr_string("x", "units") == "mm");
    CHECK(f.read_attr_string("kept", "units") == "s");
    CHECK(f.read_attr<double>("det", "distance") == std::vector<double>{0.25});
    CHECK_FALSE(f.exists("nope"));
    CHECK(user_attrs(f, "x") == std::vector<std::string>{"units"});
}

TEST_CASE("invalid attribute paths and names are refused at save_attribute(); the run goes on",
          "[serial][attributes][errors]") {
    const std::string path = fresh("attr_names.h5");
    const std::string long_name(65534, 'a');  // the longest HDF5 stores
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "x", 1.0);
        const auto code = [](auto&& f) { return thrown(f).code; };
        CHECK(code([&] { smd.save_attribute("x", "", 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("x", std::string("a\0b", 3), 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("", "smalldata_run", std::uint64_t(1)); }) == "name");
        CHECK(code([&] { smd.save_attribute("x", "smalldata_x", 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("x", std::string(65535, 'a'), 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("a//b", "u", 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("/x", "u", 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("x/", "u", 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("x/../x", "u", 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute(std::string("x\0y", 3), "u", 1.0); }) == "name");
        CHECK(code([&] { smd.save_attribute("timestamp/x", "u", 1.0); }) == "name");
        const Thrown root = thrown([&] { smd.save_attribute("/", "u", 1.0); });
        CHECK(root.code == "name");
        CHECK(root.what.find("\"\"") != std::string::npos);  // says how to name the root group
        const Thrown nul = thrown([&] { smd.save_attribute("x", "note", std::string("a\0b", 3)); });
        CHECK(nul.code == "usage");
        CHECK(nul.what.find("'note'") != std::string::npos);
        // A refused call records nothing; the run goes on.
        smd.save_attribute("x", "units", "mm");
        smd.save_attribute("x", long_name, 1);  // the longest name
        smd.event(1, "x", 2.0);
        CHECK_NOTHROW(smd.done());
        CHECK(code([&] { smd.save_attribute("x", "late", 1.0); }) == "usage");
    }
    h5r::File f(path);
    CHECK(f.read<double>("x") == std::vector<double>{1.0, 2.0});
    CHECK(user_attrs(f, "x") == std::vector<std::string>{long_name, "units"});
    CHECK(f.read_attr<std::int32_t>("x", long_name) == std::vector<std::int32_t>{1});
    CHECK(user_attrs(f, "").empty());
}

TEST_CASE("with an empty filename attributes are accepted and nothing is written", "[serial][attributes]") {
    std::vector<std::string> warnings;
    smalldata::Options o;
    o.logger = warnings_into(warnings);
    smalldata::SmallData smd(o);
    smd.event(0, "x", 1.0);
    smd.save_attribute("x", "units", "mm");
    smd.save_attribute("nope", "units", "mm");  // no file: no object to look for
    CHECK(thrown([&] { smd.save_attribute("x", "", 1.0); }).code == "name");
    CHECK_NOTHROW(smd.done());
    REQUIRE(warnings.size() == 1);  // what was not saved, named
    CHECK(warnings[0].find("not saved: attribute 'units' of 'x', attribute 'units' of 'nope'") != std::string::npos);
}

// ==================================================================== std::vector<bool>

namespace {
std::vector<bool> mask_of(std::int64_t i, std::size_t n) {
    std::vector<bool> m(n);
    for (std::size_t k = 0; k < n; ++k) m[k] = (i + static_cast<std::int64_t>(k)) % 3 == 0;
    return m;
}
}  // namespace

TEST_CASE("std::vector<bool> fields round trip, written directly or through callbacks", "[serial][values]") {
    bool with_callback = false;
    std::string name = "vector_bool_direct.h5";
    SECTION("direct (no callbacks)") {}
    SECTION("through batches and a callback") {
        with_callback = true;
        name = "vector_bool_callback.h5";
    }
    const std::string path = fresh(name);
    const std::int64_t n = 300;
    std::int64_t seen = 0, bad = 0;
    std::string mismatch_code, shape_code;
    {
        smalldata::Options o = file_opts(path);
        o.cache_size = 64;
        o.batch_size = 50;
        if (with_callback)
            o.callbacks.push_back([&](const smalldata::Event& ev) {
                const std::int64_t i = ev.timestamp();
                ++seen;
                if (i == n) {  // the last event: what the refused calls below left of it
                    bad += ev.size() != 2 || ev.get_vector<bool>("x2") != std::vector<bool>{true};
                    return;
                }
                bad += ev.get_vector<bool>("mask") != mask_of(i, 5);
                bad += ev.field("mask").values<bool>() != mask_of(i, 5);
                bad += ev.get_vector<bool>("wide") != mask_of(i, 1000);
                bad += ev.field("mask").dtype() != DType::boolean;
                if (i % 4 == 0) bad += ev.get_vector<bool>("unaligned_bits") != std::vector<bool>{true, i % 8 == 0};
                else bad += ev.has("unaligned_bits");
                bad += !ev.get_vector<bool>("none").empty();
            });
        smalldata::SmallData smd(o);
        for (std::int64_t i = 0; i < n; ++i) {
            if (i % 2 == 0) {
                smd.event(i, "mask", mask_of(i, 5));
            } else {  // the same field from a std::array<bool, 5>
                const std::vector<bool> m = mask_of(i, 5);
                smd.event(i, "mask", std::array<bool, 5>{m[0], m[1], m[2], m[3], m[4]});
            }
            smd.event(i, "wide", mask_of(i, 1000), "none", std::vector<bool>{});
            if (i % 4 == 0) smd.event(i, "unaligned_bits", std::vector<bool>{true, i % 8 == 0});
            if (i % 10 != 5) smd.event(i, "gappy", std::vector<bool>{true, true});
        }
        // Pairs are taken left to right: "x" and "x2" are recorded, "mask" is refused.
        mismatch_code = thrown([&] { smd.event(n, "x", 1.0, "x2", std::vector<bool>{true}, "mask", 1.0); }).code;
        shape_code = thrown([&] { smd.event(n, "mask", std::vector<bool>{true, false}); }).code;
        smd.done();
    }
    CHECK(mismatch_code == "type_mismatch");
    CHECK(shape_code == "shape_mismatch");
    if (with_callback) {
        CHECK(seen == n + 1);
        CHECK(bad == 0);
    }
    h5r::File f(path);
    const std::size_t N = static_cast<std::size_t>(n) + 1;  // event n exists (x, x2)
    CHECK(f.dims("mask") == std::vector<hsize_t>{N, 5});
    CHECK(f.type_info("mask").cls == H5T_ENUM);
    CHECK(f.enum_members("mask") == std::vector<std::pair<std::string, long long>>{{"FALSE", 0}, {"TRUE", 1}});
    std::vector<bool> mask, wide, gappy, bits;
    for (std::int64_t i = 0; i < n; ++i) {
        for (bool b : mask_of(i, 5)) mask.push_back(b);
        for (bool b : mask_of(i, 1000)) wide.push_back(b);
        gappy.push_back(i % 10 != 5);
        gappy.push_back(i % 10 != 5);
        if (i % 4 == 0) {
            bits.push_back(true);
            bits.push_back(i % 8 == 0);
        }
    }
    mask.insert(mask.end(), 5, false);  // event n lacks it: fill value false
    wide.insert(wide.end(), 1000, false);
    gappy.insert(gappy.end(), 2, false);
    CHECK(f.read<bool>("mask") == mask);
    CHECK(f.read<bool>("wide") == wide);
    CHECK(f.read<bool>("gappy") == gappy);
    CHECK(f.read<bool>("unaligned_bits") == bits);
    CHECK(f.dims("none") == std::vector<hsize_t>{N, 0});
    std::vector<bool> x2(N, false);
    x2.back() = true;
    CHECK(f.read<bool>("x2") == x2);
}

TEST_CASE("std::vector<bool> summaries are bool datasets", "[serial][summary][values]") {
    const std::string path = fresh("vector_bool_summary.h5");
    {
        smalldata::SmallData smd(file_opts(path));
        smd.event(0, "x", 1.0);
        smd.save_summary("flags", std::vector<bool>{true, false, true}, "none", std::vector<bool>{});
        smd.save_summary("maybe", std::optional<std::vector<bool>>{std::vector<bool>{false, true}});
        smd.save_summary("flags", std::vector<bool>{false, true, true, true});  // replaced
        smd.done();
    }
    h5r::File f(path);
    CHECK(f.type_info("flags").cls == H5T_ENUM);
    CHECK(f.dims("flags") == std::vector<hsize_t>{4});
    CHECK(f.read<bool>("flags") == std::vector<bool>{false, true, true, true});
    CHECK(f.dims("none") == std::vector<hsize_t>{0});
    CHECK(f.read<bool>("maybe") == std::vector<bool>{false, true});
}
