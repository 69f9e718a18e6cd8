// What schedule() and update() return: every array is a zero-copy numpy view whose base is the output.
#include <pybind11/numpy.h>

#include "../core/scheduler_output.h"
#include "numpy_view.h"
#include "registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {
namespace {

template <typename Output, typename T>
auto view(std::vector<T> Output::*field) {
  return [field](py::object self) { return numpy_view(self.cast<const Output&>().*field, self); };
}

// A [R, width] row-major table.
auto table_view(std::vector<int32_t> SchedulerOutput::*field, int32_t SchedulerOutput::*width) {
  return [field, width](py::object self) {
    const auto& o = self.cast<const SchedulerOutput&>();
    return numpy_view_2d(o.*field, o.num_reqs(), o.*width, self);
  };
}

void register_step_stats(py::module_& m) {
  py::class_<StepStats>(m, "StepStats", "One step's counts (deltas, never cumulative)")
      .def_readonly("num_running", &StepStats::num_running)
      .def_readonly("num_waiting", &StepStats::num_waiting)
      .def_readonly("num_used_blocks", &StepStats::num_used_blocks)
      .def_readonly("num_free_blocks", &StepStats::num_free_blocks)
      .def_readonly("num_total_blocks", &StepStats::num_total_blocks)
      .def_readonly("prefix_cache_queries", &StepStats::prefix_cache_queries)
      .def_readonly("prefix_cache_hits", &StepStats::prefix_cache_hits)
      .def_readonly("num_preemptions", &StepStats::num_preemptions)
      .def_readonly("num_scheduled_tokens", &StepStats::num_scheduled_tokens)
      .def_readonly("num_scheduled_reqs", &StepStats::num_scheduled_reqs)
      .def_readonly("num_encoder_tokens", &StepStats::num_encoder_tokens);
}

}  // namespace

void register_scheduler_outputs(py::module_& m) {
  register_step_stats(m);
  using O = SchedulerOutput;
  py::class_<O, std::shared_ptr<O>>(m, "SchedulerOutput")
      .def_property_readonly("num_reqs", &O::num_reqs)
      .def_property_readonly("num_tokens", &O::num_tokens)
      .def_readonly("max_query_len", &O::max_query_len)
      .def_readonly("max_seq_len", &O::max_seq_len)
      .def_readonly("stats", &O::stats)
      .def_property_readonly("req_handles", view(&O::req_handles))
      .def_property_readonly("req_slots", view(&O::req_slots))
      .def_property_readonly("input_ids", view(&O::input_ids))
      .def_property_readonly("positions", view(&O::positions))
      .def_property_readonly("slot_mapping", view(&O::slot_mapping))
      .def_property_readonly("block_tables", table_view(&O::block_tables, &O::block_table_width))
      .def_property_readonly("query_start_loc", view(&O::query_start_loc))
      .def_property_readonly("seq_lens", view(&O::seq_lens))
      .def_property_readonly("logits_indices", view(&O::logits_indices))
      .def_property_readonly("sample_handles", view(&O::sample_handles))
      .def_property_readonly("sample_slots", view(&O::sample_slots))
      .def_property_readonly("pool_handles", view(&O::pool_handles))
      .def_property_readonly("pool_req_indices", view(&O::pool_req_indices))
      .def_property_readonly("pool_slots", view(&O::pool_slots))
      .def_property_readonly("encoder_handles", view(&O::encoder_handles))
      .def_property_readonly("encoder_req_indices", view(&O::encoder_req_indices))
      .def_property_readonly("cross_block_tables",
                             table_view(&O::cross_block_tables, &O::cross_block_table_width))
      .def_property_readonly("cross_seq_lens", view(&O::cross_seq_lens))
      .def_property_readonly("cross_slot_mapping", view(&O::cross_slot_mapping))
      .def_property_readonly("preempted_handles", view(&O::preempted_handles))
      .def_property_readonly("placeholder_indices", view(&O::placeholder_indices))
      .def_property_readonly("placeholder_slots", view(&O::placeholder_slots));

  using U = UpdateOutput;
  py::class_<U, std::shared_ptr<U>>(m, "UpdateOutput")
      .def("__len__", [](const U& o) { return o.handles.size(); })
      .def_property_readonly("handles", view(&U::handles))
      .def_property_readonly("token_ids", view(&U::token_ids))
      .def_property_readonly("finish_reasons", view(&U::finish_reasons))
      .def_property_readonly("stop_reasons", view(&U::stop_reasons))
      .def_property_readonly("num_cached_tokens", view(&U::num_cached_tokens))
      .def_property_readonly("pooled_handles", view(&U::pooled_handles));
}

}  // namespace kvserve::bindings
