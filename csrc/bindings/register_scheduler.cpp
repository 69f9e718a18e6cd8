#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "../core/scheduler.h"
#include "named_fields.h"
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
  py::enum_<TaskKind>(m, "TaskKind")
      .value("GENERATE", TaskKind::kGenerate)
      .value("PREFILL_ONLY", TaskKind::kPrefillOnly)
      .value("ENCODER_DECODER", TaskKind::kEncoderDecoder);
}

void register_config(py::module_& m) {
  // No validation here: the Scheduler validates the config it is built from (SchedulerConfig::validate),
  // and add_request validates each request's params.
  NamedFields<SchedulerConfig>(m, "SchedulerConfig", "Scheduler limits; 0 for max_num_encoder_input_tokens "
                                                     "means max_num_batched_tokens")
      .field("num_blocks", &SchedulerConfig::num_blocks)
      .field("block_size", &SchedulerConfig::block_size)
      .field("max_num_seqs", &SchedulerConfig::max_num_seqs)
      .field("max_num_batched_tokens", &SchedulerConfig::max_num_batched_tokens)
      .field("max_model_len", &SchedulerConfig::max_model_len)
      .field("enable_prefix_caching", &SchedulerConfig::enable_prefix_caching)
      .field("enable_chunked_prefill", &SchedulerConfig::enable_chunked_prefill)
      .field("policy", &SchedulerConfig::policy)
      .field("max_num_encoder_input_tokens", &SchedulerConfig::max_num_encoder_input_tokens)
      .finish()
      .def("validate", &SchedulerConfig::validate);

  NamedFields<RequestParams>(m, "RequestParams", "One request's kind, stopping rules and queueing attributes")
      .field("max_tokens", &RequestParams::max_tokens)
      .field("min_tokens", &RequestParams::min_tokens)
      .field("eos_token_ids", &RequestParams::eos_token_ids)
      .field("stop_token_ids", &RequestParams::stop_token_ids)
      .field("ignore_eos", &RequestParams::ignore_eos)
      .field("priority", &RequestParams::priority)
      .field("arrival_time", &RequestParams::arrival_time)
      .field("cache_salt", &RequestParams::cache_salt)
      .field("skip_prefix_cache", &RequestParams::skip_prefix_cache)
      .field("task", &RequestParams::task)
      .field("num_encoder_tokens", &RequestParams::num_encoder_tokens)
      .field("allow_overlap", &RequestParams::allow_overlap)
      .finish();

  py::class_<RequestState>(m, "RequestState")
      .def_readonly("handle", &RequestState::handle)
      .def_readonly("status", &RequestState::status)
      .def_readonly("num_prompt_tokens", &RequestState::num_prompt_tokens)
      .def_readonly("num_computed_tokens", &RequestState::num_computed_tokens)
      .def_readonly("num_output_placeholders", &RequestState::num_output_placeholders)
      .def_readonly("num_cached_tokens", &RequestState::num_cached_tokens)
      .def_readonly("token_ids", &RequestState::token_ids)
      .def_readonly("block_ids", &RequestState::block_ids)
      .def_readonly("cross_block_ids", &RequestState::cross_block_ids)
      .def_readonly("slot", &RequestState::slot);
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
      .def_property_readonly("num_pending_updates", &Scheduler::num_pending_updates)
      .def_property_readonly("num_slots", &Scheduler::num_slots)
      .def("request_state", &Scheduler::request_state, py::arg("request_id"))
      .def("reset_prefix_cache", &Scheduler::reset_prefix_cache)
      .def("check_invariants", &Scheduler::check_invariants);
}

}  // namespace

void register_scheduler(py::module_& m) {
  register_enums(m);
  register_config(m);
  register_scheduler_class(m);
}

}  // namespace kvserve::bindings
