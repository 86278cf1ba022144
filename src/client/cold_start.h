// The client's cold start: until a provider's buckets have seen the
// provider's rate-limit headers (Policy::ProviderCold), one request at a time
// goes to them. The first request to cold buckets is their probe; others for
// the same buckets wait until the probe's attempt ends. A response (any HTTP
// status: its headers, if any, have sized the buckets' burst through the
// scheduler's feedback) ends the cold start for good in this client; an
// attempt that got no response (a connection error) lets the next request
// probe. A provider that sends no rate-limit headers is thus sent one request
// alone, then as the configuration says.
//
// Thread safety: none; used by the scheduler's loop only. Internal to the
// client.
#ifndef SLUICE_SRC_CLIENT_COLD_START_H_
#define SLUICE_SRC_CLIENT_COLD_START_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "sluice/policy.h"

namespace sluice {

class ColdStart {
 public:
  // REQUIRES: `policy` outlives this.
  explicit ColdStart(const Policy* policy) : policy_(policy) {}

  // Whether request `id` on `route` must wait: its buckets are cold and
  // another request is probing them.
  bool MustWait(const Route& route, uint64_t id) const;
  // Request `id` on `route` is about to take its permits and go: it becomes
  // the probe when the buckets are cold. Returns whether it did.
  bool Go(const Route& route, uint64_t id);
  // The probe `id` on `route` ended its attempt (`responded`: an HTTP
  // response came back) or went away unsent.
  void End(const Route& route, uint64_t id, bool responded);

 private:
  bool Cold(const Route& route) const;

  const Policy* const policy_;
  absl::flat_hash_set<std::string> heard_;             // provider owners that answered
  absl::flat_hash_map<std::string, uint64_t> probes_;  // provider owner -> probing request
};

}  // namespace sluice

#endif  // SLUICE_SRC_CLIENT_COLD_START_H_
