#define SMALLDATA_IMPLEMENTATION
#include "smalldata.hpp"
