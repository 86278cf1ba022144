// File: lease_scripts.h
// -----------------------------------------------------------------------------
// The Lua scripts that keep a fleet's concurrency caps in Redis (one call in
// flight = one concurrency lease; sluice/store.h StoredLeases).
//
// A cap is a sorted set, "{<prefix>}cap:<cap key>": one member per lease
// held, named by its holder (host, process, and a serial of its own, so no
// two acquisitions share a name), scored by the time it expires, in ms on
// Redis's clock (TIME: one clock for every host; ms since the epoch stay far
// below 2^53, so Lua's doubles hold them exactly). A member whose time has
// passed is no lease: every script that counts drops or skips it, so a dead
// holder's leases are free again within their time to live. The set expires
// with its newest lease, so a cap nobody holds leaves nothing behind.
//
// The cap's size is sent with every acquisition: the configuration, not
// Redis, is the source of truth.
//
// Scripts also answer how many hosts the fleet's hosts' set
// ("{<prefix>}hosts", kept by the host leases' script) saw in the last
// minute, counted as that script counts them, for a host's share of a cap
// while Redis is down.
//
// Thread safety: constants.

#ifndef SLUICE_SRC_CLUSTER_LEASE_SCRIPTS_H_
#define SLUICE_SRC_CLUSTER_LEASE_SCRIPTS_H_

#include <string>

namespace sluice {
namespace internal_cluster {

// KEYS: the cap, the hosts' set. ARGV: count, ttl_ms, member. Drops expired
// leases, then takes one for `member` if fewer than `count` are held.
// Returns {1 taken / 0 all held, leases held after, hosts alive}.
const std::string& CapAcquireScript();

// KEYS: the caps, then the hosts' set. ARGV: ttl_ms, then per cap the number
// of members n and the n members. Every member still held gets a new
// expiry, now + ttl; one that is gone or expired (its holder stalled past
// its time to live, or Redis lost it) is removed if present. Returns
// {hosts alive, then per member in order 1 kept / 0 lost}.
const std::string& CapRefreshScript();

// KEYS: the cap. Leases held now (expired ones not counted). Reads only.
const std::string& CapCountScript();

// KEYS: the cap. Drops expired leases; returns how many.
const std::string& CapReclaimScript();

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_LEASE_SCRIPTS_H_
