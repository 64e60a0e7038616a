// pybind11 module fastinit._C_tensor: the drop-in call's native entry point that takes a torch
// tensor and generator themselves (fastinit._C takes raw addresses and sizes). Built against one
// libtorch and linked to it (setup.py), stamped with that torch's version; fastinit loads it only
// under that exact version (backends/cpu.py), else keeps the raw-metadata call of fastinit._C.
//
// The metadata is read through THPVariable_Unpack, the seed drawn from the generator as torch's
// random_(0, 2**63 - 1) on an int64 CPU tensor draws it, the tensor planned and checked by
// csrc/cpu/plan_cpu.h and filled by fastinit._C's fill_cpu (one thread pool, reached through a
// capsule), and the version counter bumped: one call, no torch operator, no Python callback.
#include <Python.h>

#include <pybind11/pybind11.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/FunctionalTensorWrapper.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/headeronly/version.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <typeinfo>
#include <vector>

#include "cpu/fill_range.h"
#include "cpu/plan_cpu.h"
#include "descriptor_check.h"
#include "fastinit/fill.h"

#ifndef FASTINIT_TORCH_BUILD_VERSION
#error "setup.py defines FASTINIT_TORCH_BUILD_VERSION (torch.__version__ at build time)"
#endif

namespace py = pybind11;

namespace {

// fastinit._C's fill_cpu (csrc/cpu/fill_cpu.h), taken from its capsule when this module loads.
using FillCpu = int (*)(const fastinit::FillDescriptor*, int64_t, int);
FillCpu fill_cpu = nullptr;

// The contract's dtype code of a dtype fastinit fills, else -1 (contract.DTYPE_CODES).
int32_t dtype_code(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float: return fastinit::kFloat32;
    case c10::ScalarType::Double: return fastinit::kFloat64;
    case c10::ScalarType::Half: return fastinit::kFloat16;
    case c10::ScalarType::BFloat16: return fastinit::kBFloat16;
    default: return -1;
  }
}

// Whether this call fills `t`: a plain dense CPU tensor (a c10::TensorImpl itself, no wrapper),
// strided, not nested, mkldnn, quantized or sparse, of a dtype fastinit fills, at most kMaxDims
// dims, no negative or conjugate bit, not functional, not an inference tensor outside inference
// mode, non-empty, with a storage. Reads metadata only.
bool takes(const at::Tensor& t) {
  if (!t.defined() || t.layout() != c10::kStrided || !t.device().is_cpu() || t.is_nested() ||
      t.is_mkldnn() || t.is_quantized() || t.is_sparse() || !t.has_storage()) {
    return false;
  }
  const c10::TensorImpl* impl = t.unsafeGetTensorImpl();
  if (typeid(*impl) != typeid(c10::TensorImpl)) return false;  // functional, batched, ... wrappers
  return dtype_code(t.scalar_type()) >= 0 && t.dim() <= fastinit::kMaxDims && !t.is_neg() &&
         !t.is_conj() && !at::functionalization::impl::isFunctionalTensor(t) &&
         !(t.is_inference() && !c10::InferenceMode::is_enabled()) && t.numel() > 0;
}

// The CPU generator a seed is drawn from: `generator`, or torch's default CPU generator for None;
// an undefined Generator for any other device (the caller declines). Raises TypeError (a Python
// error set, py::error_already_set) for an object that is not a torch.Generator.
at::Generator cpu_generator(PyObject* generator) {
  if (generator == Py_None) return at::detail::getDefaultCPUGenerator();
  const int is_generator = THPGenerator_Check(generator);
  if (is_generator < 0) throw py::error_already_set();
  if (!is_generator) {
    throw py::type_error(std::string("argument 'generator' must be torch.Generator, not ") +
                         Py_TYPE(generator)->tp_name);
  }
  at::Generator gen = THPGenerator_Unwrap(generator);
  if (gen.device().type() != c10::DeviceType::CPU) return at::Generator();
  return gen;
}

// One seed as torch's random_(0, 2**63 - 1) draws it into an int64 CPU tensor (aten's CPU
// random_from_to_kernel): under the generator's lock, random64() % range + from, range = to -
// from = 2**63 - 1 (>= 2**32, so one 64-bit draw). contract.draw_seed's Python draw is that call.
uint64_t draw_seed(at::CPUGeneratorImpl* generator) {
  constexpr uint64_t kRange = (uint64_t{1} << 63) - 1;
  std::lock_guard<std::mutex> lock(generator->mutex_);
  return generator->random64() % kRange;
}

std::vector<double> parameters(PyObject* params) {
  PyObject* fast = PySequence_Fast(params, "params must be a sequence of floats");
  if (fast == nullptr) throw py::error_already_set();
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  std::vector<double> out(static_cast<size_t>(count));
  for (Py_ssize_t i = 0; i < count; ++i) {
    out[static_cast<size_t>(i)] = PyFloat_AsDouble(items[i]);
  }
  Py_DECREF(fast);
  if (PyErr_Occurred()) throw py::error_already_set();
  return out;
}

uint64_t unsigned_value(PyObject* value) {
  const unsigned long long out = PyLong_AsUnsignedLongLong(value);
  if (out == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    throw py::error_already_set();
  }
  return out;
}

// fill_tensor(tensor, dist, params, seed, generator, stream) -> bool; see the docstring below.
bool fill_tensor(PyObject* const* args) {
  PyObject* tensor = args[0];
  if (!THPVariable_Check(tensor)) return false;
  const at::Tensor& t = THPVariable_Unpack(tensor);
  if (!takes(t)) return false;
  at::Generator generator = cpu_generator(args[4]);
  if (!generator.defined()) return false;
  const long dist = PyLong_AsLong(args[1]);
  if (dist == -1 && PyErr_Occurred()) throw py::error_already_set();
  const bool seeded = args[3] != Py_None;
  const uint64_t seed = seeded ? unsigned_value(args[3]) : 0;
  const uint64_t stream = unsigned_value(args[5]);
  const c10::Storage& storage = t.storage();
  // The storage's address as Python's untyped_storage().data_ptr() reads it (a copy-on-write
  // storage is materialised first); element 0 lies storage_offset elements further on.
  const auto storage_data = reinterpret_cast<uint64_t>(storage.mutable_data());
  const int32_t code = dtype_code(t.scalar_type());
  const uint64_t data = storage_data == 0 ? 0
      : storage_data + static_cast<uint64_t>(t.storage_offset()) * fastinit::element_size(code);
  fastinit::FillDescriptor d = fastinit::plan_tensor(
      {data, storage_data, static_cast<uint64_t>(storage.nbytes()), t.storage_offset(),
       t.sizes().vec(), t.strides().vec(), code, static_cast<int32_t>(dist),
       parameters(args[2]), 0, stream});
  fastinit::check_descriptors(&d, 1);
  d.seed = seeded ? seed : draw_seed(generator.get<at::CPUGeneratorImpl>());
  const int threads = at::get_num_threads();
  if (d.numel < fastinit::cpu::kChunkElements) {
    fill_cpu(&d, 1, threads);
  } else {
    py::gil_scoped_release release;
    fill_cpu(&d, 1, threads);
  }
  // as torch._C._increment_version (an inference tensor, only ever reached inside inference
  // mode, has no counter and is left as it is)
  t.unsafeGetTensorImpl()->bump_version();
  return true;
}

// The METH_FASTCALL form: positional arguments only, C++ exceptions as Python's (plan_cpu.h's
// std::out_of_range: IndexError; std::invalid_argument: ValueError).
PyObject* fill_tensor_fastcall(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 6) {
    PyErr_Format(PyExc_TypeError,
                 "fill_tensor(tensor, dist, params, seed, generator, stream) takes 6 positional "
                 "arguments, got %zd", nargs);
    return nullptr;
  }
  try {
    return PyBool_FromLong(fill_tensor(args));
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (py::builtin_exception& e) {
    e.set_error();
  } catch (const std::out_of_range& e) {
    PyErr_SetString(PyExc_IndexError, e.what());
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyMethodDef methods[] = {
    {"fill_tensor", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                        &fill_tensor_fastcall)),
     METH_FASTCALL,
     "fill_tensor(tensor, dist, params, seed, generator, stream) -> bool\n\n"
     "Plan, check and fill one whole tensor from contract index 0, when this call takes it: a "
     "plain dense CPU tensor of a dtype fastinit fills, at most MAX_DIMS dims, no negative or "
     "conjugate bit, not functional, not an inference tensor outside inference mode, non-empty, "
     "and `generator` (None: torch's default CPU generator) a CPU generator. Otherwise returns "
     "False having drawn and written nothing. The storage's bounds and alignment are checked as "
     "fastinit._C.fill_tensors checks them (IndexError with torch's message, ValueError; "
     "nothing drawn or written); then the seed: `seed`, or when it is None one draw from the "
     "generator, as torch's random_(0, 2**63 - 1) on an int64 CPU tensor; then the fill on "
     "torch.get_num_threads() threads (the GIL released for 65,536 elements or more); then the "
     "tensor's version counter is bumped. Returns True."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PYBIND11_MODULE(_C_tensor, m) {
  m.doc() = "fastinit native entry points that take torch tensors (built against one libtorch)";
  py::capsule capsule = py::module_::import("fastinit._C").attr("_fill_cpu");
  fill_cpu = reinterpret_cast<FillCpu>(
      PyCapsule_GetPointer(capsule.ptr(), "fastinit._C.fill_cpu"));
  if (fill_cpu == nullptr) throw py::error_already_set();
  if (PyModule_AddFunctions(m.ptr(), methods) != 0) throw py::error_already_set();
  m.attr("TORCH_VERSION") = TORCH_VERSION;  // torch/version.h of the build
  m.attr("TORCH_BUILD_VERSION") = FASTINIT_TORCH_BUILD_VERSION;  // torch.__version__ of the build
  m.attr("CXX11_ABI") = static_cast<bool>(_GLIBCXX_USE_CXX11_ABI);
  m.attr("COMPILER") = __VERSION__;
}
