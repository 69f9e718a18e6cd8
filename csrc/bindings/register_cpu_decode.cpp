// kvserve._core.cpu.DecodeLayers, row_argmax, row_topk, exponential_draws and exponential_race: a decode step's
// decoder layers in one call, and the sampler's row selections and random draws (see kvserve.model.cpu_decode,
// kvserve.model.sampler and kvserve.model.random_draws). Pointers are data_ptr()s of
// tensors the Python side keeps alive and has checked; the GIL is released while the kernels run.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "../cpu/decode_layers.h"
#include "../cpu/kernels.h"
#include "../cpu/random_draws.h"
#include "../cpu/row_select.h"
#include "registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {
namespace {

using cpu::DecoderLayerWeights;
using cpu::StoredProjection;

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// (segments [(data, format, rows), ...], row_stride, out_features, bias or 0, k_padded); a blocked float32
// weight is one segment of format StoredProjection::kBlockedFloat32 (row_stride unused).
using ProjectionSpec =
    std::tuple<std::vector<std::tuple<uintptr_t, int, int64_t>>, int64_t, int64_t, uintptr_t, int64_t>;
// (qkv, o, gate_up, down, input_norm, post_norm, q_norm or 0, k_norm or 0, sliding_window)
using LayerSpec = std::tuple<ProjectionSpec, ProjectionSpec, ProjectionSpec, ProjectionSpec, uintptr_t, uintptr_t,
                             uintptr_t, uintptr_t, int64_t>;

StoredProjection projection(const ProjectionSpec& spec) {
  const auto& [segments, row_stride, out_features, bias, k_padded] = spec;
  if (segments.empty() || segments.size() > StoredProjection::kMaxSegments) {
    throw std::invalid_argument("a projection has 1 to 3 stored segments");
  }
  const bool blocked = std::get<1>(segments[0]) == StoredProjection::kBlockedFloat32;
  if (blocked && (segments.size() != 1 || k_padded <= 0 || !cpu::blocked_matmul_fits())) {
    throw std::invalid_argument("a blocked float32 projection is one segment with its padded in features");
  }
  StoredProjection p;
  p.num_segments = static_cast<int>(segments.size());
  for (size_t s = 0; s < segments.size(); ++s) {
    p.segment_data[s] = ptr<const uint8_t>(std::get<0>(segments[s]));
    p.segment_format[s] = std::get<1>(segments[s]);
    p.segment_rows[s] = std::get<2>(segments[s]);
  }
  p.row_stride = row_stride;
  p.out_features = out_features;
  p.k_padded = k_padded;
  p.bias = ptr<const float>(bias);
  return p;
}

}  // namespace

void register_cpu_decode(py::module_& m) {
  py::module_ cpu = m.attr("cpu");
  const auto release = py::call_guard<py::gil_scoped_release>();
  py::class_<cpu::DecodeLayers>(cpu, "DecodeLayers")
      .def(py::init([](int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t intermediate,
                       int64_t rot_dim, float eps, float scale, const std::vector<LayerSpec>& specs,
                       uintptr_t final_norm) {
             std::vector<DecoderLayerWeights> layers;
             for (const auto& spec : specs) {
               DecoderLayerWeights w;
               w.qkv = projection(std::get<0>(spec));
               w.o = projection(std::get<1>(spec));
               w.gate_up = projection(std::get<2>(spec));
               w.down = projection(std::get<3>(spec));
               w.input_norm = ptr<const float>(std::get<4>(spec));
               w.post_norm = ptr<const float>(std::get<5>(spec));
               w.q_norm = ptr<const float>(std::get<6>(spec));
               w.k_norm = ptr<const float>(std::get<7>(spec));
               w.sliding_window = std::get<8>(spec);
               layers.push_back(w);
             }
             cpu::DecoderShape shape{hidden, heads, kv_heads, head_dim, intermediate, rot_dim, eps, scale};
             return cpu::DecodeLayers(shape, std::move(layers), ptr<const float>(final_norm));
           }),
           py::arg("hidden"), py::arg("heads"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("intermediate"),
           py::arg("rot_dim"), py::arg("eps"), py::arg("scale"), py::arg("layers"), py::arg("final_norm"))
      .def(
          "run",
          [](cpu::DecodeLayers& self, uintptr_t out, uintptr_t hidden, uintptr_t cos, uintptr_t sin,
             const std::vector<uintptr_t>& kv_caches, int cache_dtype, uintptr_t slot_mapping,
             uintptr_t block_tables, uintptr_t seq_lens, int64_t tokens, int64_t num_blocks, int64_t block_size,
             int64_t table_width, int num_threads) {
            std::vector<void*> caches;
            caches.reserve(kv_caches.size());
            for (uintptr_t address : kv_caches) caches.push_back(ptr<void>(address));
            self.run(ptr<float>(out), ptr<const float>(hidden), ptr<const float>(cos), ptr<const float>(sin), caches,
                     cache_dtype, ptr<const int64_t>(slot_mapping), ptr<const int32_t>(block_tables), ptr<const int32_t>(seq_lens),
                     tokens, num_blocks, block_size, table_width, num_threads);
          },
          release);
  cpu.def(
      "row_argmax",
      [](uintptr_t out, uintptr_t x, int64_t rows, int64_t cols, int64_t x_stride, int num_threads) {
        cpu::row_argmax(ptr<int64_t>(out), ptr<const float>(x), rows, cols, x_stride, num_threads);
      },
      release);
  cpu.def(
      "row_topk",
      [](uintptr_t values, uintptr_t indices, uintptr_t x, int64_t rows, int64_t cols, int64_t x_stride, int64_t k,
         int num_threads) {
        cpu::row_topk(ptr<float>(values), ptr<int64_t>(indices), ptr<const float>(x), rows, cols, x_stride, k,
                      num_threads);
      },
      release);
  cpu.def(
      "exponential_draws",
      [](uintptr_t out, int64_t rows, int64_t cols, int64_t out_stride, uintptr_t seeds, uintptr_t counters,
         int num_threads) {
        cpu::exponential_draws(ptr<float>(out), rows, cols, out_stride, ptr<const uint64_t>(seeds),
                               ptr<const uint64_t>(counters), num_threads);
      },
      release);
  cpu.def(
      "exponential_race",
      [](uintptr_t out, uintptr_t logits, int64_t rows, int64_t cols, int64_t logits_stride, uintptr_t temperatures,
         uintptr_t seeds, uintptr_t counters, int num_threads) {
        cpu::exponential_race(ptr<int64_t>(out), ptr<const float>(logits), rows, cols, logits_stride,
                              ptr<const float>(temperatures), ptr<const uint64_t>(seeds),
                              ptr<const uint64_t>(counters), num_threads);
      },
      release);
}

}  // namespace kvserve::bindings
