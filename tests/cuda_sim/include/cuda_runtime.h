// Stands in for the CUDA runtime's header in the simulated build (tests/cuda_sim).
#pragma once

#include "simt.h"

typedef void* cudaStream_t;
