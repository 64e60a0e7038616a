// Host-side check shared by the pybind11 modules: a descriptor buffer holds whole descriptors.
#pragma once

#include <stdexcept>
#include <string>

#include "fastinit/fill.h"

#define CHECK_DESCRIPTOR_BYTES(size)                                                   \
  if ((size) % sizeof(fastinit::FillDescriptor) != 0) {                               \
    throw std::invalid_argument("descriptor buffer of " + std::to_string(size) +      \
                                " bytes is not a whole number of " +                  \
                                std::to_string(sizeof(fastinit::FillDescriptor)) +    \
                                "-byte descriptors");                                 \
  }
