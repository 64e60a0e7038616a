// pybind11 module fastinit._cuda: the CUDA backend's host side. A module of its own, so that
// fastinit._C (the CPU backend) loads even where this one cannot. It takes raw addresses and
// sizes, links the CUDA runtime statically (only the driver is needed at run time) and never
// links against libtorch; Python owns every buffer (backends/cuda.py).
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "../descriptor_buffer.h"
#include "../fastinit/fill.h"
#include "fill_cuda.h"
#include "launch_table.h"

namespace py = pybind11;

namespace {

// (table, num_descriptors, num_chunks, chunk_shift, dtype): the bytes to copy to the device and
// the arguments of launch() that go with them.
py::tuple build_table(py::buffer descriptors, int num_sms, int chunk_shift) {
  const py::buffer_info info = descriptors.request();
  const fastinit::DescriptorSpan span = fastinit::descriptor_span(info);
  const fastinit::cuda::LaunchTable table =
      fastinit::cuda::build_launch_table(span.data, span.count, num_sms, chunk_shift);
  py::bytearray bytes(reinterpret_cast<const char*>(table.bytes.data()), table.bytes.size());
  return py::make_tuple(bytes, table.num_descriptors, table.num_chunks, table.chunk_shift,
                        table.dtype);
}

void launch(uint64_t table_address, int64_t num_descriptors, int64_t num_chunks,
            int chunk_shift, int32_t dtype, uint64_t stream, int device) {
  py::gil_scoped_release release;
  fastinit::cuda::launch_fill(table_address, num_descriptors, num_chunks, chunk_shift, dtype,
                              stream, device);
}

void launch_by_value(py::buffer descriptors, int num_sms, uint64_t stream, int device) {
  const py::buffer_info info = descriptors.request();
  const fastinit::DescriptorSpan span = fastinit::descriptor_span(info);
  py::gil_scoped_release release;
  fastinit::cuda::launch_fill_by_value(span.data, span.count, num_sms, stream, device);
}

void emulate(py::buffer descriptors, int chunk_shift, int num_sms, bool by_value) {
  const py::buffer_info info = descriptors.request();
  const fastinit::DescriptorSpan span = fastinit::descriptor_span(info);
  py::gil_scoped_release release;
  fastinit::cuda::emulate_fill(span.data, span.count, chunk_shift, num_sms, by_value);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastinit CUDA backend (fused multi-tensor fill kernels)";
  m.def("build_table", &build_table, py::arg("descriptors"), py::arg("num_sms"),
        py::arg("chunk_shift") = 0,
        "Validate packed FillDescriptors of one dtype and lay out their launch table: returns "
        "(table bytes, num_descriptors, num_chunks, chunk_shift, dtype code).");
  m.def("launch", &launch, py::arg("table_address"), py::arg("num_descriptors"),
        py::arg("num_chunks"), py::arg("chunk_shift"), py::arg("dtype"), py::arg("stream"),
        py::arg("device"),
        "Launch the fused fill on a cudaStream_t (as an int) of a device, reading the table at "
        "a device address; raises RuntimeError with the CUDA error if the launch fails.");
  m.def("launch_by_value", &launch_by_value, py::arg("descriptors"), py::arg("num_sms"),
        py::arg("stream"), py::arg("device"),
        "Validate up to ARG_TABLE_CAPACITY packed FillDescriptors of one dtype and launch their "
        "fill on a cudaStream_t (as an int) of a device with the table as the kernel's "
        "argument: no host staging and no copy, so it can be captured in a CUDA graph. Raises "
        "ValueError for a bad descriptor, RuntimeError with the CUDA error if the launch fails.");
  m.def("emulate", &emulate, py::arg("descriptors"), py::arg("chunk_shift") = 0,
        py::arg("num_sms") = 132, py::arg("by_value") = false,
        "Run the kernel's per-thread code on the host over host memory (for tests), with the "
        "block mapping of the by-value table (by_value) or of the uploaded one.");
  m.def("runtime_problem", &fastinit::cuda::runtime_problem,
        "Empty string if the CUDA runtime sees a device, else why not.");
  m.def("device_problem", &fastinit::cuda::device_problem, py::arg("device"),
        "Empty string if the fill kernels can run on the device, else why not.");
  m.def("runtime_version", &fastinit::cuda::runtime_version);
  m.def("driver_version", &fastinit::cuda::driver_version);
  m.attr("THREADS_PER_BLOCK") = fastinit::cuda::kThreadsPerBlock;
  m.attr("MIN_CHUNK_SHIFT") = fastinit::cuda::kMinChunkShift;
  m.attr("MAX_CHUNK_SHIFT") = fastinit::cuda::kMaxChunkShift;
  m.attr("DESCRIPTOR_SIZE") = sizeof(fastinit::FillDescriptor);
  m.attr("ARG_TABLE_CAPACITY") = fastinit::cuda::kArgTableCapacity;
}
