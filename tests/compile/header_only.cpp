// Compile-shape test: a user's translation unit that includes smalldata.hpp WITHOUT the
// implementation and uses the whole public API. Linked against smalldata_dep (the
// implementation compiled once in smalldata.cpp). Run as a test: it never calls MPI_Init,
// so it also checks that the library initialises MPI itself and finalises it at exit.
#include "smalldata.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <vector>

#ifdef SMALLDATA_IMPLEMENTATION
#error "this test must not see the implementation"
#endif

namespace {
void check_finalized_at_exit() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        std::fprintf(stderr, "header_only: MPI was initialised by smalldata but not finalised at exit\n");
        std::fflush(stderr);
        std::_Exit(1);
    }
}
}  // namespace

int main() {
    int initialized = 1;
    MPI_Initialized(&initialized);
    if (initialized) {
        std::fprintf(stderr, "header_only: MPI initialised before SmallData?\n");
        return 1;
    }
    // Registered before the library can register anything, so it runs after the library's
    // own exit-time cleanup.
    std::atexit(check_finalized_at_exit);

    int events = 0;
    double total = 0;
    {
        smalldata::Options opt;  // empty filename: callbacks only
        opt.callbacks.push_back([&](const smalldata::Event& ev) {
            ++events;
            total += ev.get<double>("x");
            for (smalldata::Field f : ev) (void)f.name();
        });
        smalldata::SmallData smd(opt);
        MPI_Initialized(&initialized);
        if (!initialized) {
            std::fprintf(stderr, "header_only: SmallData did not initialise MPI\n");
            return 1;
        }
        if (smd.role() != smalldata::Role::serial || !smd.summary()) return 1;
        const float img[4] = {1, 2, 3, 4};
        for (std::int64_t i : smd.share(10))
            smd.event(i, "x", static_cast<double>(i), "v", std::vector<std::int32_t>{1, 2},
                      "a", std::array<std::uint8_t, 2>{1, 2}, "img", smalldata::view(img, {2, 2}), "flag", true);
        const std::int64_t n = smd.sum(std::int64_t(10));
        smd.save_summary("n", n, "text", std::string("ok"));
        smd.done();
        try {
            smd.event(0, "x", 1.0);
        } catch (const smalldata::Error& e) {
            (void)e.code();
        }
    }
    if (events != 10 || total != 45.0) {
        std::fprintf(stderr, "header_only: %d events, total %g (expected 10, 45)\n", events, total);
        return 1;
    }
    std::printf("header_only: ok\n");
    return 0;
}
