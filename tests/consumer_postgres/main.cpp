// Links against libpq through cacheserialize::postgres and runs without a server: connecting to
// a closed port must fail fast with a storage_error that carries libpq's reason.
#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/postgres.hpp>
#include <iostream>
#include <string>

int main() {
  namespace cs = cacheserialize;
  cs::PostgresOptions o;
  o.conninfo = "host=127.0.0.1 port=1 connect_timeout=2";
  o.connect_timeout = std::chrono::seconds(2);
  try {
    cs::PostgresStorage storage(o);
  } catch (const cs::storage_error& e) {
    const bool ok = std::string(e.what()).find("127.0.0.1") != std::string::npos;
    std::cout << "consumer_postgres: " << (ok ? "ok" : "FAILED") << " (" << e.what() << ")\n";
    return ok ? 0 : 1;
  }
  std::cout << "consumer_postgres: FAILED (connected to port 1?)\n";
  return 1;
}
