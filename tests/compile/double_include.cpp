// Compile-shape test: the implementation macro defined, then the header included twice.
// The second include must be harmless (no redefinitions). Linked WITHOUT smalldata_dep,
// so the program links only if this TU really emitted the implementation.
#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"
#include "smalldata.hpp"

#include <cstdio>

int main() {
    int events = 0;
    smalldata::Options opt;
    opt.callbacks.push_back([&](const smalldata::Event& ev) { events += ev.has("x") ? 1 : 0; });
    smalldata::SmallData smd(opt);
    for (std::int64_t i = 0; i < 5; ++i) smd.event(i, "x", static_cast<float>(i));
    smd.done();
    if (events != 5) {
        std::fprintf(stderr, "double_include: %d events seen, expected 5\n", events);
        return 1;
    }
    std::printf("double_include: ok\n");
    return 0;
}
