// alloc_counter.cpp - counts every C++ heap allocation of the test process, so tests can
// show that event() does not allocate in steady state.
//
// Every replaceable form of operator new and delete is replaced here, and all of them sit
// on malloc/free. Replacing only some forms would pair, say, the runtime's nothrow or
// aligned new with our free(), which is undefined (AddressSanitizer reports it as
// alloc-dealloc-mismatch), and it would miss allocations made through those forms.
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

std::atomic<long long> g_cxx_allocations{0};

namespace {

void* counted_alloc(std::size_t n, std::size_t align) noexcept {
    ++g_cxx_allocations;
    if (n == 0) n = 1;  // a zero-size new still returns a distinct pointer
    if (align <= alignof(std::max_align_t)) return std::malloc(n);
    void* p = nullptr;
    // posix_memalign, not aligned_alloc: it takes any size, and the block goes to free().
    return posix_memalign(&p, align, n) == 0 ? p : nullptr;
}

void* counted_alloc_or_throw(std::size_t n, std::size_t align) {
    if (void* p = counted_alloc(n, align)) return p;
    throw std::bad_alloc();
}

std::size_t al(std::align_val_t a) { return static_cast<std::size_t>(a); }

}  // namespace

// Throwing forms.
void* operator new(std::size_t n) { return counted_alloc_or_throw(n, 0); }
void* operator new[](std::size_t n) { return counted_alloc_or_throw(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return counted_alloc_or_throw(n, al(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_alloc_or_throw(n, al(a)); }

// Non-throwing forms.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return counted_alloc(n, al(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return counted_alloc(n, al(a));
}

// Every delete form frees what any of the forms above returned.
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
