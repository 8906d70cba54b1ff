// Serial mode: the reference workload. 1,000,000 events of eight double scalars, two
// int64 scalars, a float[100] projection and an int16[4] ROI; every row of every dataset is
// read back and checked. Prints the write rate (events/s) to stdout.
//
// SMALLDATA_REFERENCE_EVENTS=<n> in the environment runs fewer (or more) events.
#include "smalldata.hpp"

#include "h5read.hpp"

#include "catch_compat.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

namespace {

// The value of each field at event i. Used for writing and for checking, so the doubles
// compare exactly.
double va(std::int64_t i) { return static_cast<double>(i) * 1.0 + 0.1; }
double vb(std::int64_t i) { return static_cast<double>(i) * 2.0; }
double vc(std::int64_t i) { return static_cast<double>(i) * 3.0 - 1.0; }
double vd(std::int64_t i) { return static_cast<double>(i) / 7.0; }
double ve(std::int64_t i) { return -static_cast<double>(i); }
double vf(std::int64_t i) { return static_cast<double>(i) * static_cast<double>(i); }
double vg(std::int64_t i) { return static_cast<double>(i) + 0.5; }
double vh(std::int64_t i) { return std::sqrt(static_cast<double>(i)); }
float vproj(std::int64_t i, std::int64_t j) { return static_cast<float>(i + j); }
std::int16_t vroi(std::int64_t i, std::int64_t k) { return static_cast<std::int16_t>((i + k) % 30000); }

std::int64_t reference_events() {
    if (const char* s = std::getenv("SMALLDATA_REFERENCE_EVENTS"); s && *s) return std::atoll(s);
    return 1000000;
}

}  // namespace

TEST_CASE("1,000,000 reference events read back row by row", "[serial][reference]") {
    const std::int64_t n = reference_events();
    REQUIRE(n > 0);
    const std::string path = h5r::test_path("reference.h5");
    std::filesystem::remove(path);

    const auto t0 = std::chrono::steady_clock::now();
    {
        smalldata::Options o;
        o.filename = path;
        smalldata::SmallData smd(o);
        std::array<float, 100> proj{};
        std::array<std::int16_t, 4> roi{};
        for (std::int64_t i = 0; i < n; ++i) {
            for (std::int64_t j = 0; j < 100; ++j) proj[static_cast<std::size_t>(j)] = vproj(i, j);
            for (std::int64_t k = 0; k < 4; ++k) roi[static_cast<std::size_t>(k)] = vroi(i, k);
            smd.event(i, "a", va(i), "b", vb(i), "c", vc(i), "d", vd(i), "e", ve(i), "f", vf(i), "g", vg(i),
                      "h", vh(i), "n1", i, "n2", -i, "det/proj", proj, "det/roi", roi);
        }
        smd.done();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double bytes_per_event = 8.0 * 8 + 2 * 8 + 100 * 4 + 4 * 2 + 8;
    std::printf("reference: %lld events written in %.3f s: %.0f events/s, %.1f MB/s of payload\n",
                static_cast<long long>(n), seconds, static_cast<double>(n) / seconds,
                static_cast<double>(n) * bytes_per_event / seconds / 1e6);
    std::fflush(stdout);

    h5r::File f(path);
    const hsize_t N = static_cast<hsize_t>(n);
    for (const char* name : {"a", "b", "c", "d", "e", "f", "g", "h"}) {
        INFO("dataset " << name);
        REQUIRE(f.dims(name) == std::vector<hsize_t>{N});
        CHECK(f.type_info(name).cls == H5T_FLOAT);
        CHECK(f.type_info(name).size == 8);
    }
    for (const char* name : {"timestamp", "n1", "n2"}) {
        INFO("dataset " << name);
        REQUIRE(f.dims(name) == std::vector<hsize_t>{N});
        CHECK(f.type_info(name).cls == H5T_INTEGER);
        CHECK(f.type_info(name).size == 8);
        CHECK(f.type_info(name).sign == H5T_SGN_2);
    }
    REQUIRE(f.dims("det/proj") == std::vector<hsize_t>{N, 100});
    CHECK(f.type_info("det/proj").cls == H5T_FLOAT);
    CHECK(f.type_info("det/proj").size == 4);
    REQUIRE(f.dims("det/roi") == std::vector<hsize_t>{N, 4});
    CHECK(f.type_info("det/roi").cls == H5T_INTEGER);
    CHECK(f.type_info("det/roi").size == 2);
    CHECK(f.children("/") == std::vector<std::string>{"a", "b", "c", "d", "det", "e", "f", "g", "h", "n1", "n2", "timestamp"});
    CHECK(f.children("det") == std::vector<std::string>{"proj", "roi"});

    // Row by row, in slabs; report the first wrong row of each dataset.
    using Fn = double (*)(std::int64_t);
    const std::vector<std::pair<const char*, Fn>> doubles{{"a", va}, {"b", vb}, {"c", vc}, {"d", vd},
                                                          {"e", ve}, {"f", vf}, {"g", vg}, {"h", vh}};
    std::vector<std::string> errors;
    std::set<std::string> bad;  // datasets already reported (first wrong row only)
    auto fail = [&](const std::string& name, std::int64_t row, const std::string& what) {
        if (bad.insert(name).second) errors.push_back(name + " row " + std::to_string(row) + ": " + what);
    };
    constexpr hsize_t slab = 50000;
    for (hsize_t first = 0; first < N; first += slab) {
        const hsize_t cnt = std::min(slab, N - first);
        const auto i0 = static_cast<std::int64_t>(first);
        const auto ts = f.read_rows<std::int64_t>("timestamp", first, cnt);
        const auto n1 = f.read_rows<std::int64_t>("n1", first, cnt);
        const auto n2 = f.read_rows<std::int64_t>("n2", first, cnt);
        for (std::size_t r = 0; r < cnt; ++r) {
            const std::int64_t i = i0 + static_cast<std::int64_t>(r);
            if (ts[r] != i) fail("timestamp", i, "got " + std::to_string(ts[r]));
            if (n1[r] != i) fail("n1", i, "got " + std::to_string(n1[r]));
            if (n2[r] != -i) fail("n2", i, "got " + std::to_string(n2[r]));
        }
        for (const auto& [name, fn] : doubles) {
            const auto col = f.read_rows<double>(name, first, cnt);
            for (std::size_t r = 0; r < cnt; ++r) {
                const std::int64_t i = i0 + static_cast<std::int64_t>(r);
                if (col[r] != fn(i)) fail(name, i, "got " + std::to_string(col[r]) + ", expected " + std::to_string(fn(i)));
            }
        }
        const auto proj = f.read_rows<float>("det/proj", first, cnt);
        const auto roi = f.read_rows<std::int16_t>("det/roi", first, cnt);
        for (std::size_t r = 0; r < cnt; ++r) {
            const std::int64_t i = i0 + static_cast<std::int64_t>(r);
            for (std::size_t j = 0; j < 100; ++j)
                if (proj[r * 100 + j] != vproj(i, static_cast<std::int64_t>(j)))
                    fail("det/proj", i, "element " + std::to_string(j) + " = " + std::to_string(proj[r * 100 + j]));
            for (std::size_t k = 0; k < 4; ++k)
                if (roi[r * 4 + k] != vroi(i, static_cast<std::int64_t>(k)))
                    fail("det/roi", i, "element " + std::to_string(k) + " = " + std::to_string(roi[r * 4 + k]));
        }
    }
    for (const auto& e : errors) UNSCOPED_INFO(e);
    CHECK(errors.empty());
}
