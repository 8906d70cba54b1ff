// fail_serial.cpp - a serial program (no mpiexec) that fails on purpose, for
// run_fail_serial.py, which checks what the file holds afterwards.
//
//   fail_serial MODE FILE
//
// MODE uncaught         : 300,000 events ("x" = timestamp, "a" = {t, 2t, 3t}), then a
//                         std::runtime_error escapes main (std::terminate)
//      exit             : the same events, then std::exit(0) without done()
//      callback-in-done : 1,000 events ("n" = t, "x" = t / 2) in one batch, so done() ships
//                         them; a callback throws at timestamp 950; summary "total" = 7.0;
//                         main catches the exception of done() and returns 0
#include "smalldata.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace {

void many_events(smalldata::SmallData& smd) {
    for (std::int64_t t = 0; t < 300000; ++t) {
        const auto v = static_cast<std::int32_t>(t);
        smd.event(t, "x", static_cast<double>(t), "a", std::array<std::int32_t, 3>{v, 2 * v, 3 * v});
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: fail_serial MODE FILE\n");
        return 2;
    }
    const std::string mode = argv[1];
    smalldata::Options o;
    o.filename = argv[2];
    if (mode == "uncaught") {
        smalldata::SmallData smd(o);
        many_events(smd);
        throw std::runtime_error("the analysis failed");  // no handler: std::terminate
    }
    if (mode == "exit") {
        smalldata::SmallData smd(o);
        many_events(smd);
        std::exit(0);
    }
    if (mode == "callback-in-done") {
        o.batch_size = 100000;  // every event stays in the batch until done()
        o.callbacks.push_back([](const smalldata::Event& e) {
            if (e.timestamp() == 950) throw std::runtime_error("callback failed at 950");
        });
        smalldata::SmallData smd(o);
        for (std::int64_t t = 0; t < 1000; ++t) smd.event(t, "n", t, "x", static_cast<double>(t) / 2);
        smd.save_summary("total", 7.0);
        try {
            smd.done();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "fail_serial: done() threw: %s\n", e.what());
            return 0;
        }
        std::fprintf(stderr, "fail_serial: done() did not throw\n");
        return 0;
    }
    std::fprintf(stderr, "fail_serial: unknown mode %s\n", mode.c_str());
    return 2;
}
