// Compile-shape test, file 2 of 2: includes the header only (no implementation) and uses
// the API; the implementation comes from two_file_impl.cpp. Both TUs instantiate the same
// templates, which must not clash at link time.
#include "smalldata.hpp"

#include <cstdio>
#include <vector>

std::int64_t two_file_total(smalldata::SmallData& smd, std::int64_t mine);

int main() {
    int events = 0;
    smalldata::Options opt;
    opt.callbacks.push_back([&](const smalldata::Event& ev) { events += static_cast<int>(ev.size()); });
    smalldata::SmallData smd(opt);
    for (std::int64_t i = 0; i < 4; ++i) smd.event(i, "x", static_cast<double>(i), "v", std::vector<std::int16_t>{1, 2});
    const std::int64_t total = two_file_total(smd, 7);
    smd.save_summary("from_main_tu", smd.sum(std::int64_t(1)));
    smd.done();
    if (total != 7 || events != 8) {
        std::fprintf(stderr, "two_file: total %lld (expected 7), %d entries (expected 8)\n",
                     static_cast<long long>(total), events);
        return 1;
    }
    std::printf("two_file: ok\n");
    return 0;
}
