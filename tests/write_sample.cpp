// write_sample: writes a small smalldata file for check_h5py.py (read back with h5py).
// Usage: write_sample OUTPUT.h5
// Serial mode; the program does not call MPI_Init (the library does).
#include "smalldata.hpp"

#include <array>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s OUTPUT.h5\n", argv[0]);
        return 2;
    }
    try {
        smalldata::Options opt;
        opt.filename = argv[1];
        opt.cache_size = 4;
        smalldata::SmallData smd(opt);
        for (std::int64_t i = 0; i < 6; ++i) {
            const std::int64_t ts = 100 + i;
            smd.event(ts, "x", static_cast<double>(i) + 0.25, "flag", i % 2 == 1);
            if (i != 2 && i != 3) smd.event(ts, "n", static_cast<std::int32_t>(i * 10));  // gap: events 2, 3
            if (i == 5) smd.event(ts, "u", std::uint16_t(7));                            // back-filled 0-4
            if (i == 1) smd.event(ts, "f", 1.5f);                                         // float fill
            smd.event(ts, "det/roi", std::array<std::int16_t, 3>{static_cast<std::int16_t>(i), 0, -1});
            const float img[4] = {static_cast<float>(i), 1, 2, 3};
            smd.event(ts, "det/img", smalldata::view(img, {2, 2}));
            if (i == 1 || i == 4) smd.event(ts, "unaligned_hits", static_cast<std::int64_t>(i * 100));
            // var_: event i has i % 4 peaks (none at all in event 3), rows of 2 in "var_pix"
            if (i != 3) {
                std::vector<double> px(static_cast<std::size_t>(i % 4)), py(px.size());
                for (std::size_t j = 0; j < px.size(); ++j) {
                    px[j] = static_cast<double>(ts) + 0.5 * static_cast<double>(j);
                    py[j] = -px[j];
                }
                smd.event(ts, "peaks/var_p/x", px, "peaks/var_p/y", py);
            }
            const std::int32_t pix[4] = {static_cast<std::int32_t>(ts), 1, static_cast<std::int32_t>(ts), 2};
            smd.event(ts, "var_pix", smalldata::view(pix, {static_cast<std::uint64_t>(i % 3), 2}));
            smd.event(ts, "mask", std::vector<bool>{i % 2 == 0, true, i == 3});
        }
        if (smd.summary()) {
            smd.save_summary("n_events", smd.sum(std::int64_t(6)), "note", std::string("written by write_sample"),
                             "hist", std::vector<double>{1, 2, 3}, "flags", std::vector<bool>{true, false});
            smd.save_attribute("", "run", std::int32_t(42));
            smd.save_attribute("", "experiment", "mfx12345");
            smd.save_attribute("x", "units", "keV");
            smd.save_attribute("det", "geometry", std::array<double, 3>{0.5, -1.5, 2.0});
            smd.save_attribute("mask", "valid", std::vector<bool>{true, false, true});
            smd.save_attribute("hist", "calibrated", true);
        }
        smd.done();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "write_sample: %s\n", e.what());
        return 1;
    }
    return 0;
}
