// catch_main.cpp - the one Catch2 main shared by every test executable (serial and MPI).
//
// Compiled once into a static library (tests/meson.build: catch_main_lib) so that the
// slow implementation of Catch2 2.x (catch.hpp) is built a single time. Catch2 3.x is a
// compiled library already; this file then uses only its Catch::Session. Both come in
// through catch_compat.hpp.
//
// What it does around Catch::Session::run():
//   * initialises MPI (MPI_Init_thread) unless something already did, so tests can use
//     MPI_COMM_WORLD freely; a plain process is a one-rank world, which smalldata treats as
//     serial mode. MPI is finalised at the end if this main initialised it.
//   * creates one temporary directory for the run (rank 0 creates it, every rank gets its
//     name) and exports it as SMALLDATA_TEST_DIR; h5read.hpp's h5r::test_path() builds
//     file names in it. The directory is removed at the end when every rank passed, and
//     kept (its path printed) when something failed or SMALLDATA_KEEP_TEST_FILES is set.
//     If SMALLDATA_TEST_DIR is already set, that directory is used and never removed.
//   * under mpiexec with more than one rank: tells which ranks failed (every rank's
//     failure count is gathered) and makes every rank exit nonzero if any rank failed, so
//     the job fails as a whole.
//
// Parallel tests use this same main: write TEST_CASEs that call MPI collectively (every
// rank runs the same test cases in the same order), and register the executable in
// tests/parallel/meson.build at fixed rank counts (as test_parallel is). Give them a tag
// such as [mpi] and filter with a Catch test spec if one executable mixes rank counts.
#define CATCH_CONFIG_RUNNER  // v2: the implementation, without Catch2's own main (v3 ignores it)
#include "catch_compat.hpp"

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace {

// Rank 0 makes the directory; its name is broadcast so every rank writes to the same one.
std::string make_test_dir(int rank, bool* owned) {
    *owned = false;
    if (const char* given = std::getenv("SMALLDATA_TEST_DIR"); given && *given) return given;
    std::string dir;
    if (rank == 0) {
        std::error_code ec;
        std::string tmpl = (std::filesystem::temp_directory_path(ec) / "smalldata-tests-XXXXXX").string();
        if (ec) tmpl = "/tmp/smalldata-tests-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (mkdtemp(buf.data()) == nullptr) {
            std::perror("catch_main: mkdtemp");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        dir = buf.data();
    }
    int len = static_cast<int>(dir.size());
    MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
    dir.resize(static_cast<std::size_t>(len));
    MPI_Bcast(dir.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
    *owned = true;
    return dir;
}

}  // namespace

int main(int argc, char** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    const bool we_initialized = !initialized;
    if (we_initialized) {
        int provided = 0;
        if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            std::fprintf(stderr, "catch_main: MPI_Init_thread failed\n");
            return 2;
        }
    }
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    bool owned_dir = false;
    const std::string dir = make_test_dir(rank, &owned_dir);
    setenv("SMALLDATA_TEST_DIR", dir.c_str(), 1);

    Catch::Session session;
    int failed = 0;
    const int cl = session.applyCommandLine(argc, argv);
    if (cl != 0) failed = cl;
    else failed = session.run();

    // A test (or the library) must not finalise an MPI it did not initialise.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) {
        std::fprintf(stderr, "catch_main[rank %d]: MPI was finalised during the tests\n", rank);
        return 3;
    }

    int any_failed = failed != 0 ? 1 : 0;
    if (size > 1) {
        std::vector<int> per_rank(static_cast<std::size_t>(size), 0);
        MPI_Allgather(&failed, 1, MPI_INT, per_rank.data(), 1, MPI_INT, MPI_COMM_WORLD);
        std::string ranks;
        int n_failed_ranks = 0;
        for (int r = 0; r < size; ++r) {
            if (per_rank[static_cast<std::size_t>(r)] != 0) {
                ranks += (ranks.empty() ? "" : ", ") + std::to_string(r) + " (" +
                         std::to_string(per_rank[static_cast<std::size_t>(r)]) + " failed)";
                ++n_failed_ranks;
            }
        }
        any_failed = n_failed_ranks > 0 ? 1 : 0;
        if (rank == 0) {
            if (n_failed_ranks)
                std::fprintf(stderr, "catch_main: %d of %d ranks failed: rank %s\n", n_failed_ranks, size, ranks.c_str());
            else
                std::printf("catch_main: all %d ranks passed\n", size);
            std::fflush(stdout);
            std::fflush(stderr);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }

    if (owned_dir && rank == 0) {
        const char* keep = std::getenv("SMALLDATA_KEEP_TEST_FILES");
        if (any_failed || (keep && *keep)) {
            std::fprintf(stderr, "catch_main: test files kept in %s\n", dir.c_str());
        } else {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    }

    if (we_initialized) MPI_Finalize();
    if (failed != 0) return failed > 255 ? 255 : failed;
    return any_failed ? 1 : 0;
}
