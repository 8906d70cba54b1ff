// A user's program built against an installed or embedded smalldata (tests/consumers):
// writes N events in serial mode (a plain process), then reads the file back with the HDF5
// C API and checks every value. Exit status 0 only if the file holds exactly the events.
//
//   consumer FILE.h5
//
// It includes only the header; the implementation comes from the library it links. It
// includes <hdf5.h> itself, so the HDF5 include path must reach it through the package.
#include "smalldata.hpp"

#include <hdf5.h>

#include <cstdint>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer FILE.h5\n");
        return 2;
    }
    const std::int64_t n_events = 100;
    {
        smalldata::Options opt;
        opt.filename = argv[1];
        smalldata::SmallData smd(opt);
        for (std::int64_t i : smd.share(n_events))
            smd.event(i, "x", static_cast<double>(i) * 0.5);
        smd.done();
    }

    const hid_t file = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        std::fprintf(stderr, "consumer: cannot open %s\n", argv[1]);
        return 1;
    }
    int status = 1;
    const hid_t dset = H5Dopen2(file, "x", H5P_DEFAULT);
    if (dset >= 0) {
        const hid_t space = H5Dget_space(dset);
        hsize_t dims[1] = {0};
        if (H5Sget_simple_extent_ndims(space) == 1 && H5Sget_simple_extent_dims(space, dims, nullptr) == 1 &&
            dims[0] == static_cast<hsize_t>(n_events)) {
            std::vector<double> x(static_cast<std::size_t>(dims[0]));
            if (H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data()) >= 0) {
                status = 0;
                for (std::size_t i = 0; i < x.size(); ++i)
                    if (x[i] != static_cast<double>(i) * 0.5) status = 1;
            }
        } else {
            std::fprintf(stderr, "consumer: dataset x has %llu rows, expected %lld\n",
                         static_cast<unsigned long long>(dims[0]), static_cast<long long>(n_events));
        }
        H5Sclose(space);
        H5Dclose(dset);
    }
    H5Fclose(file);
    std::printf("consumer: %s: %s\n", argv[1], status == 0 ? "100 events read back" : "WRONG CONTENTS");
    return status;
}
