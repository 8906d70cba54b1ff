// Compile-shape test (the stb convention): the header is first included WITHOUT the
// implementation (as another header of the user's would), then the implementation macro
// is defined and the header included again. The implementation lives outside the include
// guard, so this TU must still emit it: it is linked without smalldata_dep.
#include "smalldata.hpp"

#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"

#include <cstdio>

int main() {
    int events = 0;
    smalldata::Options opt;
    opt.callbacks.push_back([&](const smalldata::Event&) { ++events; });
    smalldata::SmallData smd(opt);
    smd.event(1, "a", 1);
    smd.event(2, "a", 2);
    smd.done();
    if (events != 2) {
        std::fprintf(stderr, "late_implementation: %d events seen, expected 2\n", events);
        return 1;
    }
    std::printf("late_implementation: ok\n");
    return 0;
}
