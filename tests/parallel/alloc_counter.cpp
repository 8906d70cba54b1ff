// alloc_counter.cpp - counts every C++ heap allocation of the test process, so tests can
// show that event() does not allocate in steady state.
#include <atomic>
#include <cstdlib>
#include <new>

std::atomic<long long> g_cxx_allocations{0};

void* operator new(std::size_t n) {
    ++g_cxx_allocations;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
