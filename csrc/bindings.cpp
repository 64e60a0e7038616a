// pybind11 module fastinit._C: the CPU backend and the Philox known-answer entry point.
// It takes raw addresses and sizes (packed FillDescriptors) and never links against libtorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu/fill_cpu.h"
#include "cpu/fill_range.h"
#include "cpu/plan_cpu.h"
#include "descriptor_buffer.h"
#include "descriptor_check.h"
#include "overlap_phases.h"
#include "fastinit/fill.h"
#include "fastinit/philox.h"

namespace py = pybind11;

namespace {

int fill(py::buffer descriptors, int num_threads) {
  const py::buffer_info info = descriptors.request();
  const fastinit::DescriptorSpan span = fastinit::descriptor_span(info);
  fastinit::check_descriptors(span.data, span.count);
  py::gil_scoped_release release;
  return fastinit::fill_cpu(span.data, span.count, num_threads);
}

// (data, storage_data, storage_nbytes, storage_offset, sizes, strides, dtype, dist, params,
// seed, stream) of each whole tensor: planned (plan_cpu.h), every one checked, then filled.
using TensorTuple = std::tuple<uint64_t, uint64_t, uint64_t, int64_t, std::vector<int64_t>,
                               std::vector<int64_t>, int32_t, int32_t, std::vector<double>,
                               uint64_t, uint64_t>;

// Every tensor planned (plan_cpu.h) and every descriptor checked, or an exception.
std::vector<fastinit::FillDescriptor> planned(const std::vector<TensorTuple>& tensors) {
  std::vector<fastinit::FillDescriptor> descriptors;
  descriptors.reserve(tensors.size());
  for (const TensorTuple& t : tensors) {
    fastinit::TensorPlan plan{std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t),
                              std::get<4>(t), std::get<5>(t), std::get<6>(t), std::get<7>(t),
                              std::get<8>(t), std::get<9>(t), std::get<10>(t)};
    descriptors.push_back(fastinit::plan_tensor(plan));
  }
  fastinit::check_descriptors(descriptors.data(), static_cast<int64_t>(descriptors.size()));
  return descriptors;
}

int fill_tensors(const std::vector<TensorTuple>& tensors, int num_threads) {
  const std::vector<fastinit::FillDescriptor> descriptors = planned(tensors);
  py::gil_scoped_release release;
  return fastinit::fill_cpu(descriptors.data(), static_cast<int64_t>(descriptors.size()),
                            num_threads);
}

// One whole tensor (a drop-in call): planned and checked as fill_tensors does, then, only when
// every check has passed, its seed (`seed`, else the int `draw_seed(generator)` returns), then
// filled. The GIL is released only for a fill of at least one whole chunk (kChunkElements); a
// smaller one takes less time than the release and reacquisition.
int fill_tensor(uint64_t data, uint64_t storage_data, uint64_t storage_nbytes,
                int64_t storage_offset, std::vector<int64_t> sizes, std::vector<int64_t> strides,
                int32_t dtype, int32_t dist, std::vector<double> params,
                std::optional<uint64_t> seed, uint64_t stream, const py::object& draw_seed,
                const py::object& generator, int num_threads) {
  fastinit::FillDescriptor d = fastinit::plan_tensor(
      {data, storage_data, storage_nbytes, storage_offset, std::move(sizes), std::move(strides),
       dtype, dist, std::move(params), 0, stream});
  fastinit::check_descriptors(&d, 1);
  d.seed = seed ? *seed : draw_seed(generator).cast<uint64_t>();
  if (d.numel < fastinit::cpu::kChunkElements) return fastinit::fill_cpu(&d, 1, num_threads);
  py::gil_scoped_release release;
  return fastinit::fill_cpu(&d, 1, num_threads);
}

// The same planning as fill_tensors, without the fill: the packed, checked descriptors (for a
// launch on another device: the Triton backend's descriptor rows).
py::bytes plan_tensors(const std::vector<TensorTuple>& tensors) {
  const std::vector<fastinit::FillDescriptor> descriptors = planned(tensors);
  return py::bytes(reinterpret_cast<const char*>(descriptors.data()),
                   descriptors.size() * sizeof(fastinit::FillDescriptor));
}

// The phase of each packed descriptor (overlap_phases.h), checked first; [] when none overlap.
std::vector<int32_t> overlap_phases(py::buffer descriptors) {
  const py::buffer_info info = descriptors.request();
  const fastinit::DescriptorSpan span = fastinit::descriptor_span(info);
  fastinit::check_descriptors(span.data, span.count);
  return fastinit::overlap_phases(span.data, span.count);
}

std::array<uint32_t, 4> philox(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
  const fastinit::Words4 w =
      fastinit::philox4x32_10(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
  return {w.w[0], w.w[1], w.w[2], w.w[3]};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastinit C++ CPU backend";
  m.def("fill", &fill, py::arg("descriptors"), py::arg("num_threads") = 0,
        "Fill every tensor described by a buffer of packed FillDescriptors on up to "
        "num_threads threads (<= 0: one per CPU this process may run on). Every descriptor is validated first: a bad "
        "one raises ValueError naming its index and field, and nothing is written. Returns the "
        "number of threads that ran the fill.");
  m.def("fill_tensors", &fill_tensors, py::arg("tensors"), py::arg("num_threads") = 0,
        "Plan and fill whole dense tensors in one call: each a tuple (data, storage_data, "
        "storage_nbytes, storage_offset, sizes, strides, dtype, dist, params, seed, stream). "
        "Every tensor is checked first (storage bounds: IndexError with torch's message; a bad "
        "layout or descriptor: ValueError), its dims collapsed and its descriptor packed; "
        "nothing is written unless all pass. Returns the number of threads that ran the fill.");
  m.def("fill_tensor", &fill_tensor, py::arg("data"), py::arg("storage_data"),
        py::arg("storage_nbytes"), py::arg("storage_offset"), py::arg("sizes"),
        py::arg("strides"), py::arg("dtype"), py::arg("dist"), py::arg("params"),
        py::arg("seed"), py::arg("stream"), py::arg("draw_seed"), py::arg("generator"),
        py::arg("num_threads") = 0,
        "Plan and fill one whole dense tensor, its fields as one tuple of "
        "fill_tensors. Every check of fill_tensors comes first (IndexError, ValueError; "
        "nothing drawn or written); then the seed: `seed`, or when it is None the int "
        "draw_seed(generator) returns. Returns the number of threads that ran the fill.");
  m.def("plan_tensors", &plan_tensors, py::arg("tensors"),
        "Plan whole dense tensors as fill_tensors does (the same tuples, the same checks) and "
        "return their packed descriptors as bytes, without filling.");
  m.def("overlap_phases", &overlap_phases, py::arg("descriptors"),
        "The launch phase of each packed FillDescriptor, or [] when no two of them overlap in "
        "memory: descriptors of one phase are disjoint, and of two that overlap the later one "
        "has the later phase, so filling phase after phase gives the values of filling them "
        "in order. Every descriptor is validated first (ValueError naming its index and field).");
  m.def("philox4x32_10", &philox, py::arg("counter"), py::arg("key"),
        "Philox4x32-10 of one counter and key (for known-answer tests).");
  m.def("simd_level", &fastinit::cpu_simd_level);
  m.attr("DESCRIPTOR_SIZE") = sizeof(fastinit::FillDescriptor);
  // fill_cpu for fastinit._C_tensor (csrc/torch), which fills on this module's thread pool
  m.attr("_fill_cpu") = py::capsule(reinterpret_cast<void*>(&fastinit::fill_cpu),
                                    "fastinit._C.fill_cpu");
  m.attr("COMPILER") = __VERSION__;  // the compiler that built this module
}
