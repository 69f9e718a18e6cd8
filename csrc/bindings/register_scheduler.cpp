#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "../core/scheduler.h"
#include "numpy_view.h"
#include "registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {
namespace {

using TokenArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

void register_enums(py::module_& m) {
  py::enum_<FinishReason>(m, "FinishReason")
      .value("NONE", FinishReason::kNone)
      .value("STOP", FinishReason::kStop)
      .value("LENGTH", FinishReason::kLength)
      .value("ABORT", FinishReason::kAbort);
  py::enum_<RequestStatus>(m, "RequestStatus")
      .value("WAITING", RequestStatus::kWaiting)
      .value("RUNNING", RequestStatus::kRunning)
      .value("FINISHED", RequestStatus::kFinished);
  py::enum_<SchedulingPolicy>(m, "SchedulingPolicy")
      .value("FCFS", SchedulingPolicy::kFcfs)
      .value("PRIORITY", SchedulingPolicy::kPriority);
}

void register_config(py::module_& m) {
  py::class_<SchedulerConfig>(m, "SchedulerConfig")
      .def(py::init([](int32_t num_blocks, int32_t block_size, int32_t max_num_seqs,
                       int32_t max_num_batched_tokens, int32_t max_model_len, bool enable_prefix_caching,
                       bool enable_chunked_prefill, SchedulingPolicy policy) {
             SchedulerConfig c{num_blocks,    block_size,           max_num_seqs,           max_num_batched_tokens,
                               max_model_len, enable_prefix_caching, enable_chunked_prefill, policy};
             c.validate();
             return c;
           }),
           py::kw_only(), py::arg("num_blocks"), py::arg("block_size") = 16, py::arg("max_num_seqs") = 256,
           py::arg("max_num_batched_tokens") = 2048, py::arg("max_model_len") = 2048,
           py::arg("enable_prefix_caching") = true, py::arg("enable_chunked_prefill") = true,
           py::arg("policy") = SchedulingPolicy::kFcfs)
      .def_readonly("num_blocks", &SchedulerConfig::num_blocks)
      .def_readonly("block_size", &SchedulerConfig::block_size)
      .def_readonly("max_num_seqs", &SchedulerConfig::max_num_seqs)
      .def_readonly("max_num_batched_tokens", &SchedulerConfig::max_num_batched_tokens)
      .def_readonly("max_model_len", &SchedulerConfig::max_model_len)
      .def_readonly("enable_prefix_caching", &SchedulerConfig::enable_prefix_caching)
      .def_readonly("enable_chunked_prefill", &SchedulerConfig::enable_chunked_prefill)
      .def_readonly("policy", &SchedulerConfig::policy);

  py::class_<RequestParams>(m, "RequestParams")
      .def(py::init([](int32_t max_tokens, int32_t min_tokens, std::vector<int32_t> eos_token_ids,
                       std::vector<int32_t> stop_token_ids, bool ignore_eos, int64_t priority, double arrival_time,
                       std::string cache_salt, bool skip_prefix_cache) {
             return RequestParams{max_tokens, min_tokens,   std::move(eos_token_ids), std::move(stop_token_ids),
                                  ignore_eos, priority,     arrival_time,             std::move(cache_salt),
                                  skip_prefix_cache};
           }),
           py::kw_only(), py::arg("max_tokens") = 16, py::arg("min_tokens") = 0,
           py::arg("eos_token_ids") = std::vector<int32_t>{}, py::arg("stop_token_ids") = std::vector<int32_t>{},
           py::arg("ignore_eos") = false, py::arg("priority") = 0, py::arg("arrival_time") = 0.0,
           py::arg("cache_salt") = "", py::arg("skip_prefix_cache") = false)
      .def_readonly("max_tokens", &RequestParams::max_tokens)
      .def_readonly("min_tokens", &RequestParams::min_tokens)
      .def_readonly("eos_token_ids", &RequestParams::eos_token_ids)
      .def_readonly("stop_token_ids", &RequestParams::stop_token_ids)
      .def_readonly("ignore_eos", &RequestParams::ignore_eos)
      .def_readonly("priority", &RequestParams::priority)
      .def_readonly("arrival_time", &RequestParams::arrival_time)
      .def_readonly("cache_salt", &RequestParams::cache_salt)
      .def_readonly("skip_prefix_cache", &RequestParams::skip_prefix_cache);

  py::class_<RequestState>(m, "RequestState")
      .def_readonly("handle", &RequestState::handle)
      .def_readonly("status", &RequestState::status)
      .def_readonly("num_prompt_tokens", &RequestState::num_prompt_tokens)
      .def_readonly("num_computed_tokens", &RequestState::num_computed_tokens)
      .def_readonly("num_cached_tokens", &RequestState::num_cached_tokens)
      .def_readonly("token_ids", &RequestState::token_ids)
      .def_readonly("block_ids", &RequestState::block_ids);
}

template <typename T>
auto vector_view(std::vector<T> SchedulerOutput::*field) {
  return [field](py::object self) { return numpy_view(self.cast<const SchedulerOutput&>().*field, self); };
}

template <typename T>
auto update_view(std::vector<T> UpdateOutput::*field) {
  return [field](py::object self) { return numpy_view(self.cast<const UpdateOutput&>().*field, self); };
}

void register_outputs(py::module_& m) {
  py::class_<SchedulerOutput, std::shared_ptr<SchedulerOutput>>(m, "SchedulerOutput")
      .def_property_readonly("num_reqs", &SchedulerOutput::num_reqs)
      .def_property_readonly("num_tokens", &SchedulerOutput::num_tokens)
      .def_property_readonly("max_query_len", [](const SchedulerOutput& o) { return o.max_query_len; })
      .def_property_readonly("max_seq_len", [](const SchedulerOutput& o) { return o.max_seq_len; })
      .def_property_readonly("req_handles", vector_view(&SchedulerOutput::req_handles))
      .def_property_readonly("input_ids", vector_view(&SchedulerOutput::input_ids))
      .def_property_readonly("positions", vector_view(&SchedulerOutput::positions))
      .def_property_readonly("slot_mapping", vector_view(&SchedulerOutput::slot_mapping))
      .def_property_readonly("block_tables",
                             [](py::object self) {
                               const auto& o = self.cast<const SchedulerOutput&>();
                               return numpy_view_2d(o.block_tables, o.num_reqs(), o.block_table_width, self);
                             })
      .def_property_readonly("query_start_loc", vector_view(&SchedulerOutput::query_start_loc))
      .def_property_readonly("seq_lens", vector_view(&SchedulerOutput::seq_lens))
      .def_property_readonly("logits_indices", vector_view(&SchedulerOutput::logits_indices))
      .def_property_readonly("sample_handles", vector_view(&SchedulerOutput::sample_handles))
      .def_property_readonly("preempted_handles", vector_view(&SchedulerOutput::preempted_handles));

  py::class_<UpdateOutput, std::shared_ptr<UpdateOutput>>(m, "UpdateOutput")
      .def("__len__", [](const UpdateOutput& o) { return o.handles.size(); })
      .def_property_readonly("handles", update_view(&UpdateOutput::handles))
      .def_property_readonly("token_ids", update_view(&UpdateOutput::token_ids))
      .def_property_readonly("finish_reasons", update_view(&UpdateOutput::finish_reasons))
      .def_property_readonly("stop_reasons", update_view(&UpdateOutput::stop_reasons))
      .def_property_readonly("num_cached_tokens", update_view(&UpdateOutput::num_cached_tokens));
}

void register_scheduler_class(py::module_& m) {
  py::class_<Scheduler>(m, "Scheduler")
      .def(py::init<SchedulerConfig>(), py::arg("config"))
      .def(
          "add_request",
          [](Scheduler& s, std::string request_id, TokenArray prompt_token_ids, RequestParams params) {
            std::vector<int32_t> tokens(prompt_token_ids.data(), prompt_token_ids.data() + prompt_token_ids.size());
            return s.add_request(std::move(request_id), std::move(tokens), std::move(params));
          },
          py::arg("request_id"), py::arg("prompt_token_ids"), py::arg("params"))
      .def("abort", &Scheduler::abort, py::arg("request_id"))
      .def("schedule", &Scheduler::schedule, py::call_guard<py::gil_scoped_release>())
      .def(
          "update",
          [](Scheduler& s, TokenArray sampled_token_ids) {
            const int32_t* data = sampled_token_ids.data();
            const int64_t size = sampled_token_ids.size();
            py::gil_scoped_release release;
            return s.update(data, size);
          },
          py::arg("sampled_token_ids"))
      .def_property_readonly("config", &Scheduler::config, py::return_value_policy::copy)
      .def_property_readonly("block_pool", &Scheduler::block_pool, py::return_value_policy::reference_internal)
      .def_property_readonly("num_waiting", &Scheduler::num_waiting)
      .def_property_readonly("num_running", &Scheduler::num_running)
      .def_property_readonly("has_unfinished", &Scheduler::has_unfinished)
      .def_property_readonly("has_pending_update", &Scheduler::has_pending_update)
      .def("request_state", &Scheduler::request_state, py::arg("request_id"))
      .def("reset_prefix_cache", &Scheduler::reset_prefix_cache)
      .def("check_invariants", &Scheduler::check_invariants);
}

}  // namespace

void register_scheduler(py::module_& m) {
  register_enums(m);
  register_config(m);
  register_outputs(m);
  register_scheduler_class(m);
}

}  // namespace kvserve::bindings
