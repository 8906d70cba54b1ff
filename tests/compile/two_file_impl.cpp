// Compile-shape test, file 1 of 2: defines the implementation and also calls into the API.
#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"

std::int64_t two_file_total(smalldata::SmallData& smd, std::int64_t mine) {
    smd.save_summary("from_impl_tu", mine);
    return smd.sum(mine);
}
