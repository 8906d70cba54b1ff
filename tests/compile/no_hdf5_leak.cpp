// Compile-shape test: a user's translation unit sees only <mpi.h> and the standard library.
// Built with the header-only dependency (no HDF5 include path), so an #include <hdf5.h>
// in the public part fails to compile; and should HDF5's headers be reachable anyway, the
// macros they define must not be.
#include "smalldata.hpp"

#if defined(H5_VERS_MAJOR) || defined(H5public_H) || defined(H5_VERSION) || defined(H5Fpublic_H)
#error "<hdf5.h> leaked into a translation unit that includes only smalldata.hpp"
#endif

// Use something so the TU is not empty.
int no_hdf5_leak_probe() { return SMALLDATA_VERSION_MAJOR * 100 + SMALLDATA_VERSION_MINOR; }
