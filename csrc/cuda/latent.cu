// CUDA latent sampling and uint8 post-processing: the same math as csrc/cpu (the element
// function lives in aigc/latent.h), one thread per element. The entry points take host
// arrays, as the Python API hands them, and move them to and from the device here.
#include "aigc/latent.h"
#include "cuda/device.h"

namespace aigc {
namespace {

using cuda::blocks_for;
using cuda::check;
using cuda::DeviceBuffer;
using cuda::kThreads;

__global__ void sample_latent_kernel(LatentParams p) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= p.n * p.dim) return;
  const int64_t row = k / p.dim;
  p.out[k] = latent_element(p.seed, p.first_index + static_cast<uint64_t>(row), k % p.dim, p.truncation);
}

__global__ void images_to_uint8_kernel(ToUint8Params p, unsigned long long* nonfinite) {
  // k indexes the output (n, H, W, C) so that writes are coalesced.
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t plane = p.height * p.width;
  if (k >= p.n * plane * p.channels) return;
  const int64_t c = k % p.channels;
  const int64_t pixel = (k / p.channels) % plane;
  const int64_t i = k / (p.channels * plane);
  const float x = p.images[(i * p.channels + c) * plane + pixel];
  uint8_t value = 0;
  if (isfinite(x)) {
    // __fmul_rn / __fadd_rn forbid the FMA contraction, matching the CPU's float32 rounding.
    const float scaled = __fmul_rn(__fadd_rn(x, 1.0f), 127.5f);
    value = static_cast<uint8_t>(nearbyintf(fminf(255.0f, fmaxf(0.0f, scaled))));
  } else {
    atomicAdd(nonfinite, 1ull);
  }
  p.out[k] = value;
}

}  // namespace

int cuda_device_count() {
  int count = 0;
  // No driver or no device both mean "none": the CPU build of the same wheel still works.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

void sample_latent_cuda(const LatentParams& p) {
  const int64_t count = p.n * p.dim;
  if (count == 0) return;
  DeviceBuffer<float> out(count);
  LatentParams device_params = p;
  device_params.out = out.get();
  sample_latent_kernel<<<blocks_for(count), kThreads>>>(device_params);
  check(cudaGetLastError(), "sample_latent launch");
  check(cudaMemcpy(p.out, out.get(), count * sizeof(float), cudaMemcpyDeviceToHost), "sample_latent copy");
}

int64_t images_to_uint8_cuda(const ToUint8Params& p) {
  const int64_t count = p.n * p.channels * p.height * p.width;
  if (count == 0) return 0;
  DeviceBuffer<float> images(count);
  DeviceBuffer<uint8_t> out(count);
  DeviceBuffer<unsigned long long> nonfinite(1);
  check(cudaMemcpy(images.get(), p.images, count * sizeof(float), cudaMemcpyHostToDevice), "images copy");
  check(cudaMemset(nonfinite.get(), 0, sizeof(unsigned long long)), "cudaMemset");
  ToUint8Params device_params = p;
  device_params.images = images.get();
  device_params.out = out.get();
  images_to_uint8_kernel<<<blocks_for(count), kThreads>>>(device_params, nonfinite.get());
  check(cudaGetLastError(), "images_to_uint8 launch");
  check(cudaMemcpy(p.out, out.get(), count, cudaMemcpyDeviceToHost), "images_to_uint8 copy");
  unsigned long long host_nonfinite = 0;
  check(cudaMemcpy(&host_nonfinite, nonfinite.get(), sizeof(host_nonfinite), cudaMemcpyDeviceToHost),
        "nonfinite copy");
  return static_cast<int64_t>(host_nonfinite);
}

}  // namespace aigc
