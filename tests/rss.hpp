// rss.hpp - the peak resident memory of this process, for the tests that bound it (Linux:
// /proc/self/status VmHWM, reset through /proc/self/clear_refs), and whether this build runs
// under a sanitizer (shadow memory and quarantine multiply memory use: limits mean nothing).
#pragma once

#include <cstddef>
#include <fstream>
#include <string>

namespace rss {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#else
constexpr bool sanitized = false;
#endif

// Resets the peak to the present resident memory; false where that is not possible.
inline bool reset_peak() {
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
    f.flush();
    return static_cast<bool>(f);
}
// Peak resident memory since the last reset_peak(), in bytes (0 where unknown).
inline std::size_t peak() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmHWM:", 0) == 0) return static_cast<std::size_t>(std::stoull(line.substr(6))) * 1024;
    return 0;
}

}  // namespace rss
