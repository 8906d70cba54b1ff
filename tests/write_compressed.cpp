// write_compressed: a small compressed smalldata file for check_compression.py (read back
// with h5py). Serial mode as a plain process, parallel mode under mpiexec (1 server).
// Usage: write_compressed OUTPUT.h5 deflate|lz4 [EVENTS]
//   deflate: Compression::deflate(1) (with shuffle); lz4: Compression::filter(32004), the
//   LZ4 plugin of hdf5-filter-plugin.
// Fields: x = i / 2 (double), det/img = (i + k) % 1000 (uint16, 32 x 32), and the var_
// group peaks/var_p: i % 4 rows of float, row j = i + j / 4.
#include "smalldata.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s OUTPUT.h5 deflate|lz4 [EVENTS]\n", argv[0]);
        return 2;
    }
    const std::string kind = argv[2];
    const std::int64_t n = argc > 3 ? std::atoll(argv[3]) : 2000;
    try {
        smalldata::Options opt;
        opt.filename = argv[1];
        if (kind == "deflate") {
            opt.compression = smalldata::Compression::deflate(1);
        } else if (kind == "lz4") {
            opt.compression = smalldata::Compression::filter(32004);
        } else {
            std::fprintf(stderr, "write_compressed: unknown compression '%s'\n", kind.c_str());
            return 2;
        }
        smalldata::SmallData smd(opt);
        std::vector<std::uint16_t> img(32 * 32);
        std::vector<float> peaks;
        for (std::int64_t i : smd.share(n)) {
            for (std::size_t k = 0; k < img.size(); ++k) img[k] = static_cast<std::uint16_t>((i + static_cast<std::int64_t>(k)) % 1000);
            peaks.resize(static_cast<std::size_t>(i % 4));
            for (std::size_t j = 0; j < peaks.size(); ++j) peaks[j] = static_cast<float>(i) + static_cast<float>(j) / 4;
            smd.event(i, "x", static_cast<double>(i) / 2, "det/img", smalldata::view(img.data(), {32, 32}),
                      "peaks/var_p", peaks);
        }
        smd.done();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "write_compressed: %s\n", e.what());
        return 1;
    }
    return 0;
}
