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
//      sigterm          : summary "total" = 7.0, then 300,000 events, then SIGTERM to itself
//                         and one more event() call (the library's handler: done() runs
//                         and the process ends by SIGTERM)
//      request-stop     : the same with the program's own SIGTERM handler, which calls
//                         smalldata::request_stop(); event() throws Errc::interrupted,
//                         main catches it and returns 0
//      stop-then-sigterm: as sigterm, but the program calls smalldata::request_stop()
//                         itself just before the signal: the signal is the first this
//                         process received (not a second one, which would end it at once),
//                         so done() runs and the process ends by SIGTERM
//      fill             : checkpoint_seconds 0.2; 5,000 events/s with an 8 KiB row ("img",
//                         every element = t) and t % 5 rows of t in the var_ field "var_pk",
//                         until event() throws (the disk is full), then done();
//                         prints both errors
//      sigkill          : checkpoint_seconds 0.5; the 300,000 events, then more (timestamps
//                         from 300,000 on, one a millisecond) for 1.5 s, then SIGKILL
#include "smalldata.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <thread>
#include <vector>
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
    if (mode == "sigterm" || mode == "request-stop" || mode == "stop-then-sigterm") {
        if (mode == "request-stop") std::signal(SIGTERM, [](int) { smalldata::request_stop(); });
        smalldata::SmallData smd(o);
        smd.save_summary("total", 7.0);
        many_events(smd);
        if (mode == "stop-then-sigterm") smalldata::request_stop();
        std::raise(SIGTERM);
        try {
            smd.event(std::int64_t(300000), "x", 0.0);  // ends the run: not recorded
        } catch (const smalldata::Error& e) {
            std::fprintf(stderr, "fail_serial: event() threw %s: %s\n", smalldata::errc_name(e.code()), e.what());
            return 0;
        }
        std::fprintf(stderr, "fail_serial: still running after SIGTERM\n");
        return 0;
    }
    if (mode == "fill") {
        o.checkpoint_seconds = 0.2;  // what a checkpoint wrote before the disk filled stays
        smalldata::SmallData smd(o);
        std::vector<float> img(2048);
        std::int64_t t = 0;
        try {
            for (;; ++t) {
                std::fill(img.begin(), img.end(), static_cast<float>(t));
                smd.event(t, "x", static_cast<double>(t), "img", img, "var_pk",
                          std::vector<float>(static_cast<std::size_t>(t % 5), static_cast<float>(t)));
                // About 40 MB/s, whatever the machine: checkpoints come before the disk is full.
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
        } catch (const smalldata::Error& e) {
            std::fprintf(stderr, "fail_serial: event() threw %s at %lld: %s\n", smalldata::errc_name(e.code()),
                         static_cast<long long>(t), e.what());
        }
        try {
            smd.done();
        } catch (const smalldata::Error& e) {
            std::fprintf(stderr, "fail_serial: done() threw %s: %s\n", smalldata::errc_name(e.code()), e.what());
        }
        return 0;
    }
    if (mode == "sigkill") {
        o.checkpoint_seconds = 0.5;
        smalldata::SmallData smd(o);
        many_events(smd);
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
        for (std::int64_t t = 300000; std::chrono::steady_clock::now() < end; ++t) {
            const auto v = static_cast<std::int32_t>(t);
            smd.event(t, "x", static_cast<double>(t), "a", std::array<std::int32_t, 3>{v, 2 * v, 3 * v});
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        std::raise(SIGKILL);
    }
    std::fprintf(stderr, "fail_serial: unknown mode %s\n", mode.c_str());
    return 2;
}
