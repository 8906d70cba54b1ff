// basic.cpp - the smalldata event loop, end to end.
//
//   ./basic [file.h5 [events]]                one process (serial mode): writes my.h5
//   mpiexec -n 6 ./basic [file.h5 [events]]   2 servers write part files, 4 clients
//                                             analyse events, my.h5 joins the parts
//
// 10,000 events unless told otherwise. Rank 0 prints a progress line every 5 s (try
// 50000000 events) and, at the end, the run's report: events/s, where the time went, and
// whether the number of servers fits.
//
// The implementation is compiled once elsewhere (smalldata.cpp, or Meson's smalldata_dep),
// so this file only includes the header.
#include "smalldata.hpp"

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

// Stand-in for reading one event of a detector: 64 pixels, deterministic per event.
static std::array<std::uint16_t, 64> read_event(std::int64_t i) {
    std::array<std::uint16_t, 64> pixels{};
    for (std::size_t k = 0; k < pixels.size(); ++k)
        pixels[k] = static_cast<std::uint16_t>((i * 37 + static_cast<std::int64_t>(k * k)) % 4096);
    return pixels;
}

int main(int argc, char** argv) {
    const std::int64_t n_events = argc > 2 ? std::atoll(argv[2]) : 10000;

    smalldata::Options opt;
    opt.servers = 2;                           // ignored in serial mode
    opt.filename = argc > 1 ? argv[1] : "my.h5";
    opt.progress_seconds = 5;                  // default 60
    const std::int64_t every = n_events >= 10 ? n_events / 10 : 1;
    opt.callbacks.push_back([every](const smalldata::Event& ev) {   // runs where the event is written
        if (ev.timestamp() % every == 0)
            std::printf("event %lld: mydata = %g\n", static_cast<long long>(ev.timestamp()),
                        ev.get<double>("mydata"));
    });
    smalldata::SmallData smd(opt);             // server ranks return from here at the end

    std::int64_t count = 0;
    for (std::int64_t i : smd.share(n_events)) {   // this client's events; none twice
        const auto pixels = read_event(i);
        double sum = 0;
        for (auto p : pixels) sum += p;
        smd.event(i, "mydata", sum);                               // dataset "mydata"
        smd.event(i, "group/field", std::array<std::uint16_t, 5>{  // same timestamp: same event
                         pixels[0], pixels[1], pixels[2], pixels[3], pixels[4]});
        ++count;
    }

    std::int64_t total = 0;
    if (smd.summary()) {                       // true on clients and in serial mode
        total = smd.sum(count);                // collective over the clients
        smd.save_summary("n_events", total);
        smd.save_attribute("mydata", "units", "ADU");   // an HDF5 attribute of dataset "mydata"
    }
    smd.done();                                // collective; then my.h5 is complete

    if (smd.client_index() == 0 || smd.role() == smalldata::Role::serial)
        std::printf("%lld events written to %s\n", static_cast<long long>(total),
                    opt.filename.c_str());
    return 0;
}
