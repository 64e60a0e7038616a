// pybind11 module fastinit._C: the CPU backend and the Philox known-answer entry point.
// It takes raw addresses and sizes (packed FillDescriptors) and never links against libtorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include "cpu/fill_cpu.h"
#include "descriptor_check.h"
#include "fastinit/fill.h"
#include "fastinit/philox.h"

namespace py = pybind11;

namespace {

int fill(py::buffer descriptors, int num_threads) {
  const py::buffer_info info = descriptors.request();
  const int64_t count = fastinit::descriptor_count(static_cast<size_t>(info.size) *
                                                   static_cast<size_t>(info.itemsize));
  const auto* d = static_cast<const fastinit::FillDescriptor*>(info.ptr);
  fastinit::check_descriptors(d, count);
  py::gil_scoped_release release;
  return fastinit::fill_cpu(d, count, num_threads);
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
        "Fill every tensor described by a buffer of packed FillDescriptors on num_threads "
        "OpenMP threads (<= 0: OpenMP's default). Every descriptor is validated first: a bad "
        "one raises ValueError naming its index and field, and nothing is written. Returns the "
        "number of threads that ran the fill.");
  m.def("philox4x32_10", &philox, py::arg("counter"), py::arg("key"),
        "Philox4x32-10 of one counter and key (for known-answer tests).");
  m.def("simd_level", &fastinit::cpu_simd_level);
  m.attr("DESCRIPTOR_SIZE") = sizeof(fastinit::FillDescriptor);
  m.attr("COMPILER") = __VERSION__;  // the compiler that built this module
}
