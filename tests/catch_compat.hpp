// catch_compat.hpp - Catch2 for the tests, version 2 or version 3.
//
// Every test source includes this instead of a Catch2 header. Catch2 2.x (Debian 12's
// catch2 2.13) is one header, <catch2/catch.hpp>; Catch2 3.x (Ubuntu 24.04's catch2 3.4,
// or a build from source) is a compiled library with <catch2/catch_all.hpp>.
//
// tests/meson.build defines SMALLDATA_CATCH2_MAJOR from the version of the catch2 it
// found, so the header matches the library it links with even when both versions are
// installed. Without it (a test compiled by hand), whichever header exists is used, v3
// first.
//
// The tests are written against the v2 names. The few that v3 renamed are bridged below:
//   Catch::Contains(s)  v3: Catch::Matchers::ContainsSubstring(s) (a string matcher;
//                       v3's Catch::Matchers::Contains matches an element of a range)
// Everything else the tests use (TEST_CASE, SECTION, CHECK_THAT, CAPTURE, INFO,
// UNSCOPED_INFO, WARN, FAIL, STATIC_REQUIRE, Catch::Session) is the same in both.
#ifndef SMALLDATA_TESTS_CATCH_COMPAT_HPP
#define SMALLDATA_TESTS_CATCH_COMPAT_HPP

#if !defined(SMALLDATA_CATCH2_MAJOR)
#if defined(__has_include)
#if __has_include(<catch2/catch_all.hpp>)
#define SMALLDATA_CATCH2_MAJOR 3
#elif __has_include(<catch2/catch.hpp>)
#define SMALLDATA_CATCH2_MAJOR 2
#endif
#endif
#endif
#if !defined(SMALLDATA_CATCH2_MAJOR)
#error "Catch2 not found: neither <catch2/catch_all.hpp> (v3) nor <catch2/catch.hpp> (v2)"
#endif

#if SMALLDATA_CATCH2_MAJOR >= 3

#include <catch2/catch_all.hpp>

#include <string>

namespace Catch {
// v2's string matcher: CHECK_THAT(e.what(), Catch::Contains("name")).
inline Matchers::StringContainsMatcher Contains(const std::string& text,
                                                CaseSensitive sensitivity = CaseSensitive::Yes) {
    return Matchers::ContainsSubstring(text, sensitivity);
}
}  // namespace Catch

#else

#include <catch2/catch.hpp>

#endif

#endif  // SMALLDATA_TESTS_CATCH_COMPAT_HPP
