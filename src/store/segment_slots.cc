// The segment's slot table: buckets, window counters and concurrency caps
// found or claimed by name under the segment lock, limits learned from the
// provider, reclaiming idle buckets, and inspecting (sluice/segment.h).
#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "sluice/pool.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "src/store/process.h"
#include "src/store/segment_internal.h"
#include "src/store/segment_layout.h"
#include "src/store/segment_testing.h"

namespace sluice {

using segment_internal::ConfigOf;
using segment_internal::Describe;
using segment_internal::EffectiveConfig;
using segment_internal::KindName;
using segment_internal::LearnedOf;
using segment_internal::SameConfig;
using segment_internal::SlotName;
using segment_internal::View;
using segment_layout::ProcessEntry;
using segment_layout::Slot;

namespace {

absl::Status CheckBucketName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxBucketNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket name '", name, "' must be 1 to ", kMaxBucketNameLength, " bytes"));
  }
  for (char c : name) {
    if (absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("bucket name '", absl::CHexEscape(name), "' contains a control character"));
    }
  }
  return absl::OkStatus();
}

uint64_t HashName(absl::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Converges a bucket slot's cell on what its configuration and learned limit
// say. The record of the idle parameter slot is written first, then the cell
// is reconfigured to it (which switches the cell to that slot), so the record
// of the slot in use equals the cell's parameters at every instant: a kill at
// any point leaves a segment that opens, and the next open finishes the job.
// REQUIRES: the segment lock.
absl::Status ApplyLocked(Slot& slot, const SegmentOptions& options) {
  const BucketConfig target = EffectiveConfig(slot);
  BucketCell* cell = segment_layout::BucketCellOf(slot);
  const int in_use = BucketRef::ParamSlot(*cell);
  if (SameConfig(ConfigOf(slot.params[in_use]), target)) return absl::OkStatus();
  segment_internal::Store(slot.params[in_use ^ 1], target);
  absl::Status s = BucketRef::Reconfigure(cell, target, options.clock.Now());
  if (const auto& hook = segment_testing::ReconfigureFaultHook()) hook();
  return s;
}

}  // namespace

absl::StatusOr<SharedBucket> Segment::OpenBucket(absl::string_view name, const BucketConfig& config,
                                                 bool reconfigure) {
  if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return s;
  return OpenBucketLocked(name, &config, reconfigure);
}

absl::StatusOr<SharedBucket> Segment::OpenPool(absl::string_view name, const BucketConfig& config) {
  if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return s;
  return OpenBucketLocked(name, &config, /*reconfigure=*/true, /*pool=*/true);
}

absl::StatusOr<SharedBucket> Segment::FindBucket(absl::string_view name) {
  return OpenBucketLocked(name, nullptr, false);
}

// A slot found or claimed under the lock. A claimed slot is named and kinded
// but not yet ready: the caller sets up its cell, then publishes it.
struct Segment::Claim {
  Slot* slot;
  uint32_t index;
  bool created;
};

absl::StatusOr<Segment::Claim> Segment::FindOrClaimLocked(absl::string_view name, uint32_t kind,
                                                          bool create) {
  // Whoever holds a handle is registered, with the slot marked in its bitmap
  // (register_process = false only spares processes that merely look).
  if (process_entry_ < 0) {
    if (absl::Status s = RegisterLocked(); !s.ok()) return s;
  }
  const View view = View::Of(base_);
  // Open addressing with linear probing. Free ends a probe; tombstones
  // (reclaimed slots) and claims left by a dead process are reusable but do
  // not end it. Claims only happen under the lock, so one found here is dead.
  int64_t found = -1, reusable = -1;
  const uint64_t start = HashName(name) % view.slot_count;
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    const uint32_t index = static_cast<uint32_t>((start + i) % view.slot_count);
    const uint32_t state = view.slots[index].state.load(std::memory_order_acquire);
    if (state == segment_layout::kSlotReady) {
      if (SlotName(view.slots[index]) == name) {
        found = index;
        break;
      }
      continue;
    }
    if (reusable < 0) reusable = index;
    if (state == segment_layout::kSlotFree) break;
  }
  if (found >= 0) {
    Slot& slot = view.slots[found];
    if (slot.kind != kind) {
      return absl::FailedPreconditionError(absl::StrCat(
          path_, ": '", name, "' is a ", KindName(slot.kind), ", not a ", KindName(kind)));
    }
    MarkOpenedLocked(static_cast<uint32_t>(found));
    return Claim{&slot, static_cast<uint32_t>(found), false};
  }
  if (!create)
    return absl::NotFoundError(absl::StrCat(path_, ": no ", KindName(kind), " named '", name, "'"));
  if (reusable < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        path_, ": all ", view.slot_count,
        " slots are in use; reclaim idle buckets or create the segment with more slots"));
  }
  Slot& slot = view.slots[reusable];
  slot.state.store(segment_layout::kSlotClaiming, std::memory_order_relaxed);
  memset(slot.cell, 0, sizeof(slot.cell));
  memset(slot.name, 0, sizeof(slot.name));
  memcpy(slot.name, name.data(), name.size());
  slot.name_length = static_cast<uint32_t>(name.size());
  slot.kind = kind;
  memset(static_cast<void*>(slot.params), 0, sizeof(slot.params));
  memset(static_cast<void*>(&slot.configured), 0, sizeof(slot.configured));
  slot.learned_permits = 0;
  slot.learned_period_ns = 0;
  slot.learned_burst = 0;
  slot.bottlenecks.store(0, std::memory_order_relaxed);
  MarkOpenedLocked(static_cast<uint32_t>(reusable));
  return Claim{&slot, static_cast<uint32_t>(reusable), true};
}

void Segment::MarkOpenedLocked(uint32_t index) {
  const size_t words = segment_layout::BitmapWords(View::Of(base_).slot_count);
  if (opened_.size() < words) opened_.resize(words, 0);
  opened_[index / 64] |= uint64_t{1} << (index % 64);
  if (process_entry_ < 0) return;
  View::Of(base_).Bitmap(process_entry_)[index / 64] |= uint64_t{1} << (index % 64);
}

absl::StatusOr<SharedBucket> Segment::OpenBucketLocked(absl::string_view name,
                                                       const BucketConfig* config, bool reconfigure,
                                                       bool pool) {
  if (absl::Status s = CheckBucketName(name); !s.ok()) return s;
  std::lock_guard<std::mutex> guard(mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  absl::StatusOr<Claim> claim =
      FindOrClaimLocked(name, segment_layout::kKindBucket, config != nullptr);
  if (!claim.ok()) return claim.status();
  Slot& slot = *claim->slot;
  BucketCell* cell = segment_layout::BucketCellOf(slot);
  if (claim->created) {
    absl::Status s =
        pool ? PoolRef::Init(cell, *config) : BucketRef::Init(cell, *config, options_.clock.Now());
    if (!s.ok()) return s;
    segment_internal::Store(slot.configured, *config);
    segment_internal::Store(slot.params[0], *config);
    segment_internal::Store(slot.params[1], *config);
    slot.state.store(segment_layout::kSlotReady, std::memory_order_release);
  } else if (config != nullptr) {
    if (pool && !PoolRef::IsPool(*cell)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path_, ": '", name,
          "' is a bucket that refills by itself, not a pool of a fleet's leases; remove it "
          "(sluice rm) before this host joins the fleet"));
    }
    const BucketConfig current = ConfigOf(slot.configured);
    if (!SameConfig(current, *config)) {
      if (!reconfigure) {
        return absl::FailedPreconditionError(
            absl::StrCat(path_, ": bucket '", name, "' exists with ", Describe(current),
                         "; asked for ", Describe(*config), " (reconfigure to change it)"));
      }
      // The intent first: a kill after this line is finished by the next open.
      segment_internal::Store(slot.configured, *config);
    }
    // Under the segment lock, so reconfigurations are serialized host-wide.
    if (absl::Status s = ApplyLocked(slot, options_); !s.ok()) return s;
  }
  return SharedBucket(cell, options_.clock, std::string(name), claim->index, &slot.bottlenecks,
                      LearnedOf(slot), slot.learned_burst);
}

absl::Status Segment::LearnLocked(absl::string_view name,
                                  const std::function<bool(const Claim&)>& record) {
  if (absl::Status s = CheckBucketName(name); !s.ok()) return s;
  std::lock_guard<std::mutex> guard(mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  absl::StatusOr<Claim> claim = FindOrClaimLocked(name, segment_layout::kKindBucket, false);
  if (!claim.ok()) return claim.status();
  if (!record(*claim)) return absl::OkStatus();
  return ApplyLocked(*claim->slot, options_);
}

absl::Status Segment::LearnBucket(absl::string_view name, std::optional<Rate> learned) {
  if (learned) {
    if (absl::Status s = learned->Validate(); !s.ok()) return s;
  }
  return LearnLocked(name, [&](const Claim& claim) {
    claim.slot->learned_permits = learned ? learned->permits() : 0;
    claim.slot->learned_period_ns = learned ? absl::ToInt64Nanoseconds(learned->period()) : 0;
    return true;
  });
}

absl::Status Segment::LearnBucketBurst(absl::string_view name, uint64_t burst) {
  if (burst == 0) return absl::InvalidArgumentError("a learned burst must be at least 1 permit");
  const uint32_t recorded =
      static_cast<uint32_t>(std::min<uint64_t>(burst, std::numeric_limits<uint32_t>::max()));
  return LearnLocked(name, [&](const Claim& claim) {
    if (recorded <= claim.slot->learned_burst) return false;  // evidence only raises it
    claim.slot->learned_burst = recorded;
    return true;
  });
}

absl::StatusOr<SharedCounter> Segment::OpenCounter(absl::string_view name) {
  if (absl::Status s = CheckBucketName(name); !s.ok()) return s;
  std::lock_guard<std::mutex> guard(mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  absl::StatusOr<Claim> claim = FindOrClaimLocked(name, segment_layout::kKindCounter, true);
  if (!claim.ok()) return claim.status();
  Slot& slot = *claim->slot;
  // A zeroed cell is window 0 with nothing used: ready as it is.
  if (claim->created) slot.state.store(segment_layout::kSlotReady, std::memory_order_release);
  return SharedCounter(segment_layout::CounterCellOf(slot), &slot.bottlenecks, std::string(name));
}

absl::StatusOr<SharedLeases> Segment::OpenLeases(absl::string_view name, uint32_t count) {
  if (absl::Status s = CheckBucketName(name); !s.ok()) return s;
  if (count < 1) return absl::InvalidArgumentError("a concurrency cap needs at least 1 lease");
  std::lock_guard<std::mutex> guard(mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  const View view = View::Of(base_);
  if (count > view.header->lease_count - view.header->lease_next) {
    // Checked before claiming, so a refusal leaves no half-made slot.
    absl::StatusOr<Claim> existing = FindOrClaimLocked(name, segment_layout::kKindLeases, false);
    if (!existing.ok() && existing.status().code() == absl::StatusCode::kNotFound) {
      return absl::ResourceExhaustedError(absl::StrCat(
          path_, ": ", count, " leases for '", name, "' do not fit: ",
          view.header->lease_count - view.header->lease_next, " of ", view.header->lease_count,
          " lease words are free (create the segment with more max_leases)"));
    }
  }
  absl::StatusOr<Claim> claim = FindOrClaimLocked(name, segment_layout::kKindLeases, true);
  if (!claim.ok()) return claim.status();
  Slot& slot = *claim->slot;
  if (claim->created) {
    slot.configured.permits = view.header->lease_next;  // first lease word
    slot.configured.capacity = count;
    view.header->lease_next += count;
    slot.state.store(segment_layout::kSlotReady, std::memory_order_release);
  } else if (slot.configured.capacity != count) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": concurrency cap '", name, "' exists with ", slot.configured.capacity,
                     " leases; asked for ", count, " (caps cannot be resized in place)"));
  }
  return SharedLeases(
      view.leases + slot.configured.permits, static_cast<uint32_t>(slot.configured.capacity),
      &segment_layout::LeaseHeadOf(slot)->generation, &slot.bottlenecks, std::string(name));
}

absl::StatusOr<int> Segment::ReclaimIdle(absl::Duration idle) {
  std::lock_guard<std::mutex> guard(mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  const View view = View::Of(base_);
  // Slots any live process has opened stay, however idle.
  std::vector<uint64_t> held(segment_layout::BitmapWords(view.slot_count), 0);
  for (uint32_t p = 0; p < view.process_count; ++p) {
    const ProcessEntry& e = view.processes[p];
    // Slots of a process that cannot be checked stay too: unknown is not dead.
    if (e.pid != 0 && MaybeAlive(e.pid, e.start_time)) {
      const uint64_t* bits = view.Bitmap(static_cast<int32_t>(p));
      for (size_t w = 0; w < held.size(); ++w) held[w] |= bits[w];
      continue;
    }
    // Every process that opens a handle is registered with its slot marked,
    // and a forked child that registers marks what it inherited. A handle
    // outside the marks of the living can only be a dead process's, copied
    // into a child that has not registered: the dead process's entry lock,
    // which the child shares, says so. It may hold any slot: free nothing.
    if (segment_internal::EntryLockHeldElsewhere(fd_, static_cast<int32_t>(p))) {
      return absl::FailedPreconditionError(absl::StrCat(
          path_, ": process ", e.pid,
          " died, but a process it forked still uses the segment without being registered in "
          "it, and may hold a handle to any slot; nothing is reclaimed until it registers "
          "(opens anything) or exits"));
    }
  }
  const int64_t now = options_.clock.Now();
  const int64_t idle_ns = absl::ToInt64Nanoseconds(idle);
  int freed = 0;
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    Slot& slot = view.slots[i];
    if (slot.state.load(std::memory_order_acquire) != segment_layout::kSlotReady) continue;
    // Only buckets: a counter holds a budget's spend and a cap holds leases.
    if (slot.kind != segment_layout::kKindBucket) continue;
    if ((held[i / 64] >> (i % 64)) & 1) continue;
    // A pool holds permits leased from a fleet, however idle it is.
    if (PoolRef::IsPool(*segment_layout::BucketCellOf(slot))) continue;
    if (BucketRef(segment_layout::BucketCellOf(slot), options_.clock).FullForNanos(now) < idle_ns)
      continue;
    slot.state.store(segment_layout::kSlotTombstone, std::memory_order_release);
    ++freed;
  }
  return freed;
}

absl::StatusOr<SegmentInfo> Segment::Inspect() {
  std::lock_guard<std::mutex> guard(mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  const View view = View::Of(base_);
  SegmentInfo info;
  info.path = path_;
  info.abi_major = view.header->abi_major;
  info.abi_minor = view.header->abi_minor;
  info.size_bytes = view.header->total_size;
  info.slots = view.slot_count;
  info.slots_used = 0;
  info.max_processes = view.process_count;
  info.created_unix_ns = view.header->created_unix_ns;
  const absl::Status tsc = TscStatus();
  info.clock = TscClock().name();
  info.clock_reason = std::string(tsc.message());
  if (view.header->tsc.ready()) info.tsc_generation = view.header->tsc.generation();
  const int64_t now = options_.clock.Now();
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    Slot& slot = view.slots[i];
    if (slot.state.load(std::memory_order_acquire) != segment_layout::kSlotReady) continue;
    ++info.slots_used;
    std::string name(SlotName(slot));
    const uint64_t bottlenecks = slot.bottlenecks.load(std::memory_order_relaxed);
    if (slot.kind == segment_layout::kKindCounter) {
      const WindowCounterRef::Reading counter =
          WindowCounterRef(segment_layout::CounterCellOf(slot)).Load();
      info.counters.push_back({std::move(name), i, counter.window, counter.used, bottlenecks});
    } else if (slot.kind == segment_layout::kKindLeases) {
      const LeaseSetRef leases(view.leases + slot.configured.permits,
                               static_cast<uint32_t>(slot.configured.capacity),
                               &segment_layout::LeaseHeadOf(slot)->generation);
      info.leases.push_back({std::move(name), i, static_cast<uint32_t>(slot.configured.capacity),
                             leases.InFlight(), bottlenecks});
    } else {
      const BucketRef ref(segment_layout::BucketCellOf(slot), options_.clock);
      const BucketConfig in_use =
          ConfigOf(slot.params[BucketRef::ParamSlot(*segment_layout::BucketCellOf(slot))]);
      info.buckets.push_back({std::move(name), i, in_use, ConfigOf(slot.configured),
                              LearnedOf(slot), ref.Available(now), ref.GetPressure(now),
                              bottlenecks});
    }
  }
  for (uint32_t p = 0; p < view.process_count; ++p) {
    const ProcessEntry& e = view.processes[p];
    if (e.pid == 0) continue;
    info.processes.push_back(
        {e.pid, e.start_time, MaybeAlive(e.pid, e.start_time), e.attached_unix_ns});
  }
  return info;
}

}  // namespace sluice
