#include <pybind11/stl.h>

#include "../core/block_pool.h"
#include "registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {

void register_block_pool(py::module_& m) {
  py::class_<PrefixCacheStats>(m, "PrefixCacheStats")
      .def_readonly("num_requests", &PrefixCacheStats::num_requests)
      .def_readonly("num_query_tokens", &PrefixCacheStats::num_query_tokens)
      .def_readonly("num_hit_tokens", &PrefixCacheStats::num_hit_tokens)
      .def("__repr__", [](const PrefixCacheStats& s) {
        return "PrefixCacheStats(num_requests=" + std::to_string(s.num_requests) +
               ", num_query_tokens=" + std::to_string(s.num_query_tokens) +
               ", num_hit_tokens=" + std::to_string(s.num_hit_tokens) + ")";
      });

  // Read-only view; the pool belongs to its Scheduler, which the view keeps alive.
  py::class_<BlockPool>(m, "BlockPool")
      .def_property_readonly("num_blocks", &BlockPool::num_blocks)
      .def_property_readonly("block_size", &BlockPool::block_size)
      .def_property_readonly("num_free_blocks", &BlockPool::num_free_blocks)
      .def_property_readonly("num_cached_blocks", &BlockPool::num_cached_blocks)
      .def_property_readonly("usage", &BlockPool::usage)
      .def_property_readonly("stats", &BlockPool::stats, py::return_value_policy::copy)
      .def("ref_count", &BlockPool::ref_count, py::arg("block_id"))
      .def("block_hash", &BlockPool::block_hash, py::arg("block_id"))
      .def("free_block_ids", &BlockPool::free_block_ids)
      .def("check_invariants", &BlockPool::check_invariants);
}

}  // namespace kvserve::bindings
