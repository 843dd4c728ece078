// The CPU entry points of the kernels: split the work over the thread pool, then call the
// version of the kernel built for the active ISA (aigc/isa.h). No math here.
#include <atomic>

#include "aigc/isa.h"
#include "aigc/latent.h"
#include "aigc/norm.h"
#include "aigc/sampling.h"
#include "runtime/thread_pool.h"

namespace aigc {

void sample_latent_cpu(const LatentParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.n, [&](int64_t first, int64_t last) { sample_latent_rows(p, first, last, isa); });
}

int64_t images_to_uint8_cpu(const ToUint8Params& p) {
  const Isa isa = active_isa();
  std::atomic<int64_t> nonfinite{0};
  parallel_for(p.n, [&](int64_t first, int64_t last) {
    nonfinite += AIGC_ISA_CALL(isa, images_to_uint8, p, first, last);
  });
  return nonfinite;
}

void add_layer_norm(const LayerNormParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.rows, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, add_layer_norm_rows, p, first, last); },
               16384 / (p.dim > 0 ? p.dim : 1));
}

void gelu_tanh(float* x, int64_t n) {
  const Isa isa = active_isa();
  parallel_for(n, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, gelu_tanh_range, x, first, last); }, 16384);
}

void sample_cpu(const SampleParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.batch, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, sample_rows, p, first, last); });
}

}  // namespace aigc
