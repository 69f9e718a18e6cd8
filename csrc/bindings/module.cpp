#include "registrations.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "kvserve's C++ core: paged-KV block manager, continuous-batching scheduler, CPU kernels";
  kvserve::bindings::register_errors(m);
  kvserve::bindings::register_block_pool(m);
  kvserve::bindings::register_scheduler_outputs(m);
  kvserve::bindings::register_scheduler(m);
  kvserve::bindings::register_cpu_kernels(m);
  kvserve::bindings::register_cpu_decode(m);
}
