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
#include <ATen/MemoryOverlap.h>
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

long distribution(PyObject* dist) {
  const long out = PyLong_AsLong(dist);
  if (out == -1 && PyErr_Occurred()) throw py::error_already_set();
  return out;
}

// The descriptor of the whole tensor `t` (one `takes` accepts), its seed left 0, the storage's
// bounds checked as fastinit._C.fill_tensors checks them (plan_cpu.h); the caller then checks the
// descriptors (descriptor_check.h: alignment, ...).
fastinit::FillDescriptor planned(const at::Tensor& t, PyObject* dist, PyObject* params,
                                 PyObject* stream) {
  const long code_dist = distribution(dist);
  const uint64_t stream_value = unsigned_value(stream);
  const c10::Storage& storage = t.storage();
  // The storage's address as Python's untyped_storage().data_ptr() reads it (a copy-on-write
  // storage is materialised first); element 0 lies storage_offset elements further on.
  const auto storage_data = reinterpret_cast<uint64_t>(storage.mutable_data());
  const int32_t code = dtype_code(t.scalar_type());
  const uint64_t data = storage_data == 0 ? 0
      : storage_data + static_cast<uint64_t>(t.storage_offset()) * fastinit::element_size(code);
  return fastinit::plan_tensor(
      {data, storage_data, static_cast<uint64_t>(storage.nbytes()), t.storage_offset(),
       t.sizes().vec(), t.strides().vec(), code, static_cast<int32_t>(code_dist),
       parameters(params), 0, stream_value});
}

// fill_cpu on torch.get_num_threads() threads, the GIL released only for a fill of at least one
// whole chunk (kChunkElements): a smaller one takes less time than the release and reacquisition.
void fill(const fastinit::FillDescriptor* d, int64_t count, int64_t numel) {
  const int threads = at::get_num_threads();
  if (numel < fastinit::cpu::kChunkElements) {
    fill_cpu(d, count, threads);
  } else {
    py::gil_scoped_release release;
    fill_cpu(d, count, threads);
  }
}

// as torch._C._increment_version (an inference tensor, only ever reached inside inference
// mode, has no counter and is left as it is)
void bump_version(const at::Tensor& t) { t.unsafeGetTensorImpl()->bump_version(); }

// fill_tensor(tensor, dist, params, seed, generator, stream) -> bool; see the docstring below.
bool fill_tensor(PyObject* const* args) {
  PyObject* tensor = args[0];
  if (!THPVariable_Check(tensor)) return false;
  const at::Tensor& t = THPVariable_Unpack(tensor);
  if (!takes(t)) return false;
  at::Generator generator = cpu_generator(args[4]);
  if (!generator.defined()) return false;
  const bool seeded = args[3] != Py_None;
  const uint64_t seed = seeded ? unsigned_value(args[3]) : 0;
  fastinit::FillDescriptor d = planned(t, args[1], args[2], args[5]);
  fastinit::check_descriptors(&d, 1);
  d.seed = seeded ? seed : draw_seed(generator.get<at::CPUGeneratorImpl>());
  fill(&d, 1, d.numel);
  bump_version(t);
  return true;
}

// The memory a recorded fill writes, held by a capsule (record_tensor's `memory`): a tensor of
// `t`'s storage, sizes, strides and offset made without a torch operator, so the memory stays
// alive, and fillable, after `t` itself is moved elsewhere (set_, .data =).
constexpr const char* kMemoryCapsule = "fastinit._C_tensor.memory";

void release_memory(PyObject* capsule) {
  delete static_cast<at::Tensor*>(PyCapsule_GetPointer(capsule, kMemoryCapsule));
}

PyObject* memory_capsule(const at::Tensor& t) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(
      c10::Storage(t.storage()), c10::DispatchKeySet(c10::DispatchKey::CPU), t.dtype());
  impl->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
  auto* held = new at::Tensor(std::move(impl));
  PyObject* capsule = PyCapsule_New(held, kMemoryCapsule, release_memory);
  if (capsule == nullptr) {
    delete held;
    throw py::error_already_set();
  }
  return capsule;
}

// record_tensor(tensor, seed, generator) -> tuple or None; see the docstring below. The checks,
// and the draw, are fill_tensor's up to its fill; `planned` also materialises a copy-on-write
// storage, so that the address returned is the one Python's data_ptr() reads from then on.
PyObject* record_tensor(PyObject* const* args) {
  PyObject* tensor = args[0];
  if (!THPVariable_Check(tensor)) Py_RETURN_NONE;
  const at::Tensor& t = THPVariable_Unpack(tensor);
  if (!takes(t)) Py_RETURN_NONE;
  at::Generator generator = cpu_generator(args[2]);
  if (!generator.defined()) Py_RETURN_NONE;
  const bool seeded = args[1] != Py_None;
  const uint64_t seed = seeded ? unsigned_value(args[1]) : 0;
  const c10::Storage& storage = t.storage();
  const auto storage_data = reinterpret_cast<uint64_t>(storage.mutable_data());
  const int32_t code = dtype_code(t.scalar_type());
  const int64_t item = static_cast<int64_t>(fastinit::element_size(code));
  const int64_t offset = t.storage_offset();
  const int64_t numel = t.numel();
  fastinit::check_storage_bounds(
      {storage_data == 0 ? 0 : storage_data + static_cast<uint64_t>(offset * item), storage_data,
       static_cast<uint64_t>(storage.nbytes()), offset, t.sizes().vec(), t.strides().vec(), code,
       0, {}, 0, 0},
      numel);
  // the bytes [lo, hi) of the storage the tensor spans, and whether it writes each exactly once
  // (recorder._footprint)
  int64_t lo = offset, hi = offset + numel;
  bool dense = true;
  if (!t.is_contiguous()) {
    hi = offset;
    for (int64_t d = 0; d < t.dim(); ++d) {
      const int64_t step = (t.size(d) - 1) * t.stride(d);
      (step < 0 ? lo : hi) += step;
    }
    hi += 1;
    dense = hi - lo == numel && at::has_internal_overlap(t) == at::MemOverlap::No;
  }
  PyObject* memory = memory_capsule(t);
  const uint64_t drawn = seeded ? seed : draw_seed(generator.get<at::CPUGeneratorImpl>());
  return Py_BuildValue("(KLLOKN)", static_cast<unsigned long long>(storage_data),
                       static_cast<long long>(lo * item), static_cast<long long>(hi * item),
                       dense ? Py_True : Py_False, static_cast<unsigned long long>(drawn), memory);
}

// memory_tensor(memory) -> Tensor: the tensor a record_tensor capsule holds.
PyObject* memory_tensor(PyObject* capsule) {
  void* held = PyCapsule_GetPointer(capsule, kMemoryCapsule);
  if (held == nullptr) throw py::error_already_set();
  return THPVariable_Wrap(*static_cast<at::Tensor*>(held));
}

// fill_tensors(rows) -> bool; see the docstring below. Every tensor is looked at before any is
// planned (a declined batch materialises no copy-on-write storage), every one planned and
// checked before any is filled.
bool fill_tensors(PyObject* rows) {
  PyObject* fast = PySequence_Fast(rows, "fill_tensors: rows must be a sequence");
  if (fast == nullptr) throw py::error_already_set();
  py::object owner = py::reinterpret_steal<py::object>(fast);
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  // held, not borrowed: the rows' list may change while the GIL is released for the fill
  std::vector<at::Tensor> tensors;
  tensors.reserve(static_cast<size_t>(count));
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* row = items[i];
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 5) {
      throw py::type_error("fill_tensors: row " + std::to_string(i) +
                           " must be a tuple (tensor, dist, params, seed, stream)");
    }
    PyObject* tensor = PyTuple_GET_ITEM(row, 0);
    if (!THPVariable_Check(tensor)) return false;
    const at::Tensor& t = THPVariable_Unpack(tensor);
    if (!takes(t)) return false;
    tensors.push_back(t);
  }
  std::vector<fastinit::FillDescriptor> descriptors;
  descriptors.reserve(static_cast<size_t>(count));
  int64_t numel = 0;
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* row = items[i];
    const uint64_t seed = unsigned_value(PyTuple_GET_ITEM(row, 3));
    descriptors.push_back(planned(tensors[static_cast<size_t>(i)], PyTuple_GET_ITEM(row, 1),
                                  PyTuple_GET_ITEM(row, 2), PyTuple_GET_ITEM(row, 4)));
    descriptors.back().seed = seed;
    numel += descriptors.back().numel;
  }
  fastinit::check_descriptors(descriptors.data(), static_cast<int64_t>(count));
  if (count == 0) return true;
  fill(descriptors.data(), static_cast<int64_t>(count), numel);
  for (const at::Tensor& t : tensors) bump_version(t);
  return true;
}

// dense_codes(tensors, types) -> list; see the docstring below.
PyObject* dense_codes(PyObject* tensors, PyObject* types) {
  if (!PyTuple_Check(types)) throw py::type_error("dense_codes: types must be a tuple");
  PyObject* fast = PySequence_Fast(tensors, "dense_codes: tensors must be a sequence");
  if (fast == nullptr) throw py::error_already_set();
  py::object owner = py::reinterpret_steal<py::object>(fast);
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  py::list out(count);
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* tensor = items[i];
    bool plain = false;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(types); ++k) {
      plain = plain || Py_TYPE(tensor) == reinterpret_cast<PyTypeObject*>(
                                              PyTuple_GET_ITEM(types, k));
    }
    int32_t code = -1;
    if (plain && THPVariable_Check(tensor)) {
      const at::Tensor& t = THPVariable_Unpack(tensor);
      if (takes(t) && t.is_contiguous()) code = dtype_code(t.scalar_type());
    }
    out[static_cast<size_t>(i)] = code < 0 ? py::object(py::none()) : py::object(py::int_(code));
  }
  return out.release().ptr();
}

// C++ exceptions as Python's (plan_cpu.h's std::out_of_range: IndexError;
// std::invalid_argument: ValueError); nullptr with the Python error set.
template <typename Call>
PyObject* as_python(Call call) {
  try {
    return call();
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

// The METH_FASTCALL forms: positional arguments only.
PyObject* fill_tensor_fastcall(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 6) {
    PyErr_Format(PyExc_TypeError,
                 "fill_tensor(tensor, dist, params, seed, generator, stream) takes 6 positional "
                 "arguments, got %zd", nargs);
    return nullptr;
  }
  return as_python([args] { return PyBool_FromLong(fill_tensor(args)); });
}

PyObject* record_tensor_fastcall(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 3) {
    PyErr_Format(PyExc_TypeError,
                 "record_tensor(tensor, seed, generator) takes 3 positional arguments, got %zd",
                 nargs);
    return nullptr;
  }
  return as_python([args] { return record_tensor(args); });
}

PyObject* memory_tensor_fastcall(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 1) {
    PyErr_Format(PyExc_TypeError, "memory_tensor(memory) takes 1 positional argument, got %zd",
                 nargs);
    return nullptr;
  }
  return as_python([args] { return memory_tensor(args[0]); });
}

PyObject* fill_tensors_fastcall(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 1) {
    PyErr_Format(PyExc_TypeError, "fill_tensors(rows) takes 1 positional argument, got %zd",
                 nargs);
    return nullptr;
  }
  return as_python([args] { return PyBool_FromLong(fill_tensors(args[0])); });
}

PyObject* dense_codes_fastcall(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_Format(PyExc_TypeError, "dense_codes(tensors, types) takes 2 positional arguments, "
                 "got %zd", nargs);
    return nullptr;
  }
  return as_python([args] { return dense_codes(args[0], args[1]); });
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
    {"record_tensor", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                          &record_tensor_fastcall)),
     METH_FASTCALL,
     "record_tensor(tensor, seed, generator) -> (storage, lo, hi, dense, seed, memory) or None\n\n"
     "What a fused() block records of a fill of the whole tensor, when fill_tensor would take it "
     "(and `generator`); otherwise None, having drawn nothing. The storage's bounds are checked "
     "as fill_tensor checks them (IndexError with torch's message; nothing drawn); then the "
     "seed: `seed`, or when it is None one draw from the generator, exactly fill_tensor's. "
     "Returns the storage's address, the bytes [lo, hi) of it the tensor spans, whether the "
     "tensor writes each of them exactly once, the seed, and a capsule holding the tensor's "
     "memory (memory_tensor). Nothing is written."},
    {"memory_tensor", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                          &memory_tensor_fastcall)),
     METH_FASTCALL,
     "memory_tensor(memory) -> Tensor\n\n"
     "A tensor of the memory a record_tensor capsule holds (the recorded tensor's storage, "
     "sizes, strides and offset at the time it was recorded)."},
    {"fill_tensors", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                         &fill_tensors_fastcall)),
     METH_FASTCALL,
     "fill_tensors(rows) -> bool\n\n"
     "Plan, check and fill whole tensors from contract index 0 in one call, each row a tuple "
     "(tensor, dist, params, seed, stream) with its seed an int. Returns False, having written "
     "nothing, when any tensor is not one fill_tensor takes. Every storage's bounds and "
     "alignment are checked as fastinit._C.fill_tensors checks them (IndexError with torch's "
     "message, ValueError) before anything is written; then one fill of all of them on "
     "torch.get_num_threads() threads (the GIL released for 65,536 elements or more in all); "
     "then each tensor's version counter is bumped. Returns True."},
    {"dense_codes", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                        &dense_codes_fastcall)),
     METH_FASTCALL,
     "dense_codes(tensors, types) -> list\n\n"
     "For each tensor, its contract dtype code when it is of one of the Python `types` (a "
     "tuple), fill_tensor takes it and it is contiguous, else None. Reads metadata only."},
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
