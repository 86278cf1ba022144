// The simulated provider's reset fault: dropping the connection a request
// arrived on without answering. Internal to the simulated provider.
#ifndef SLUICE_TOOLS_FAKE_PROVIDER_CONNECTION_RESET_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_CONNECTION_RESET_H_

#include "httplib.h"

namespace sluice {
namespace fake_provider_internal {

// Drops the connection `req` arrived on, without a response: a reset.
// httplib does not hand a handler its connection, so the socket is found
// among this process's descriptors by the addresses httplib recorded in the
// request. It stays open (httplib closes it); shutting it down makes every
// write fail, and a zero linger makes the close send RST. The connection is
// served by the calling thread, so it cannot be closed while this runs.
// Returns false if the socket was not found.
bool DropConnection(const httplib::Request& req);

}  // namespace fake_provider_internal
}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_CONNECTION_RESET_H_
