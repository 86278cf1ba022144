// File: wide_atomic.h
// -----------------------------------------------------------------------------
// A 16-byte word read and compare-and-swapped atomically, lock-free, by any
// number of threads and processes: the bucket cell's state (token_bucket.h).
//
// std::atomic<__int128> will not do: GCC sends it to libatomic, whose loads
// may write and whose fallback is a lock in process memory, which other
// processes mapping the same segment would not see. So the two operations are
// single instructions here:
//   CompareExchange  lock cmpxchg16b (every x86-64 CPU since 2008);
//   Load             one aligned 16-byte vector load (vmovdqa), which Intel
//                    and AMD guarantee atomic on every processor that
//                    reports AVX; elsewhere, a cmpxchg16b that writes back the value
//                    it read, so a load never changes the word either way.
// Both are full barriers for the compiler; on x86 the load has acquire and
// the CAS sequentially consistent ordering.
//
// LoadHalves reads the two halves with two 8-byte loads: faster right after
// this core's own CAS (a 16-byte vector load cannot take its value from the
// store just made; measured, the pair saves about 1.3 ns of an admit's load
// and CAS), but the pair may be torn. It is a guess for a CompareExchange to
// confirm, which compares all 16 bytes: a decision acted on without a CAS
// must be made from Load.
//
// Thread safety: Load and CompareExchange are safe from any number of threads
// and processes; Store is for initialization, before anyone else sees the
// word.

#ifndef SLUICE_WIDE_ATOMIC_H_
#define SLUICE_WIDE_ATOMIC_H_

#include <cstdint>

#if !defined(__x86_64__)
#error "sluice's bucket cell needs x86-64: it compare-and-swaps 16 bytes with cmpxchg16b"
#endif

#if defined(__SANITIZE_THREAD__)
#define SLUICE_WIDE_ATOMIC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SLUICE_WIDE_ATOMIC_TSAN 1
#endif
#endif
#ifdef SLUICE_WIDE_ATOMIC_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace sluice {

namespace internal_wide {
// Whether one movdqa reads 16 bytes atomically here (an Intel or AMD CPU that
// reports AVX). Zero until the library's static initializers run, which only
// sends earlier loads down the (always correct) cmpxchg16b path.
extern const bool kAtomicVectorLoad;
}  // namespace internal_wide

class alignas(16) WideAtomic {
 public:
  WideAtomic() = default;
  WideAtomic(const WideAtomic&) = delete;
  WideAtomic& operator=(const WideAtomic&) = delete;

  // The word, read atomically; never writes it.
  __int128 Load() const {
    const __int128 v = internal_wide::kAtomicVectorLoad ? LoadVector() : LoadByCas();
#ifdef SLUICE_WIDE_ATOMIC_TSAN
    __tsan_acquire(const_cast<unsigned __int128*>(&bits_));
#endif
    return v;
  }

  // The two ways Load reads, public so that tests can run both: one movdqa
  // (REQUIRES: kAtomicVectorLoad), and a CAS that swaps 0 for 0 when the word
  // is 0 and otherwise fails, so that it leaves the word as it was.
  __int128 LoadVector() const {
    uint64_t lo, hi;
    using Vector = long long __attribute__((vector_size(16)));
    Vector tmp;
    asm volatile(
        "vmovdqa %3, %2\n\t"
        "vmovq %2, %0\n\t"
        "vpextrq $1, %2, %1"
        : "=r"(lo), "=r"(hi), "=&x"(tmp)
        : "m"(bits_)
        : "memory");
    return Join(lo, hi);
  }
  __int128 LoadHalves() const {
    const auto* half = reinterpret_cast<const uint64_t*>(&bits_);
    const uint64_t lo = __atomic_load_n(&half[0], __ATOMIC_ACQUIRE);
    const uint64_t hi = __atomic_load_n(&half[1], __ATOMIC_ACQUIRE);
#ifdef SLUICE_WIDE_ATOMIC_TSAN
    __tsan_acquire(const_cast<unsigned __int128*>(&bits_));
#endif
    return Join(lo, hi);
  }
  __int128 LoadByCas() const {
    __int128 v = 0;
    Cas(v, 0);
    return v;
  }

  // Replaces the word with `desired` if it holds `expected`; otherwise loads
  // what it holds into `expected`. Returns whether it replaced it.
  bool CompareExchange(__int128& expected, __int128 desired) {
#ifdef SLUICE_WIDE_ATOMIC_TSAN
    __tsan_release(&bits_);
#endif
    const bool done = Cas(expected, desired);
#ifdef SLUICE_WIDE_ATOMIC_TSAN
    __tsan_acquire(&bits_);
#endif
    return done;
  }

  // Sets the word unconditionally (a CAS loop): for initialization and
  // resets, off the hot path.
  void Store(__int128 v) {
    __int128 seen = Load();
    while (!CompareExchange(seen, v)) {
    }
  }

 private:
  static __int128 Join(uint64_t lo, uint64_t hi) {
    return static_cast<__int128>((static_cast<unsigned __int128>(hi) << 64) | lo);
  }

  bool Cas(__int128& expected, __int128 desired) const {
    uint64_t lo = static_cast<uint64_t>(expected);
    uint64_t hi = static_cast<uint64_t>(static_cast<unsigned __int128>(expected) >> 64);
    bool done;
    asm volatile("lock cmpxchg16b %1"
                 : "=@ccz"(done), "+m"(bits_), "+a"(lo), "+d"(hi)
                 : "b"(static_cast<uint64_t>(desired)),
                   "c"(static_cast<uint64_t>(static_cast<unsigned __int128>(desired) >> 64))
                 : "memory");
    expected = Join(lo, hi);
    return done;
  }

  // Mutable: the fallback load is a CAS that leaves the value as it was.
  mutable unsigned __int128 bits_ = 0;
};

static_assert(sizeof(WideAtomic) == 16 && alignof(WideAtomic) == 16);

}  // namespace sluice

#endif  // SLUICE_WIDE_ATOMIC_H_
