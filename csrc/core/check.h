// Errors that cross into Python with a clear type: bad caller input is ValueError, an unknown request id
// is KeyError, and a broken internal invariant is RuntimeError carrying file:line.
#pragma once

#include <stdexcept>
#include <string>

namespace kvserve {

// Bad input from the caller (maps to ValueError).
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A request id that the scheduler does not hold (maps to KeyError).
class UnknownRequest : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A violated invariant: a bug in kvserve, never the caller's fault (maps to RuntimeError).
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

#define KV_STRINGIFY_DETAIL(x) #x
#define KV_STRINGIFY(x) KV_STRINGIFY_DETAIL(x)

#define KV_CHECK(cond, msg)                                                                       \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      throw ::kvserve::InternalError(std::string(__FILE__ ":" KV_STRINGIFY(__LINE__) ": check `") + \
                                     #cond "` failed: " + (msg));                                 \
    }                                                                                             \
  } while (0)

#define KV_REQUIRE(cond, msg)                        \
  do {                                               \
    if (!(cond)) throw ::kvserve::InvalidArgument(msg); \
  } while (0)

}  // namespace kvserve
