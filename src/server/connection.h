// File: connection.h
// -----------------------------------------------------------------------------
// One accepted connection of the HTTP server: it reads requests (Beast's
// parser), hands each to the handler as an HttpExchange, writes the answer,
// and keeps the connection alive or closes it. The type stays opaque here so
// that only connection.cc compiles Beast.
//
// Thread safety: every function here may be called from any thread; the work
// runs on the connection's strand.

#ifndef SLUICE_SRC_SERVER_CONNECTION_H_
#define SLUICE_SRC_SERVER_CONNECTION_H_

#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "src/server/server_core.h"

namespace sluice::server_internal {

// Serves `socket`, whose executor must be a strand of core->ioc. The
// connection registers itself in core->connections while open.
void StartConnection(std::shared_ptr<ServerCore> core, boost::asio::ip::tcp::socket socket);

// What Stop asks of a connection.
enum class StopStage {
  kIdle,  // close unless an exchange is in progress (its answer may finish)
  kAll,   // close now; a cut exchange's OnClose runs
};
void StopConnection(const std::shared_ptr<Connection>& connection, StopStage stage);

}  // namespace sluice::server_internal

#endif  // SLUICE_SRC_SERVER_CONNECTION_H_
