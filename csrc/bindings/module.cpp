#include "registrations.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "kvserve's C++ core: paged-KV block manager and continuous-batching scheduler";
  kvserve::bindings::register_errors(m);
  kvserve::bindings::register_block_pool(m);
  kvserve::bindings::register_scheduler(m);
}
