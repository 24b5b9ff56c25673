#pragma once

/// @file cacheserialize.hpp
/// The whole core library. Storages for shared stores (file system, PostgreSQL, Redis) have
/// headers of their own under cacheserialize/storage/.

#include "cache_key.hpp"
#include "cancellation.hpp"
#include "clock.hpp"
#include "default_manager.hpp"
#include "errors.hpp"
#include "events.hpp"
#include "options.hpp"
#include "reservation.hpp"
#include "serialize_cached.hpp"
#include "serializer.hpp"
#include "signal.hpp"
#include "storage.hpp"
#include "storage/memory.hpp"
#include "time.hpp"
#include "version.hpp"
