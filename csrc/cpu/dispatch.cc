// The CPU entry points of the kernels: split the work over the thread pool, then call the
// version of the kernel built for the active ISA (aigc/isa.h). No math here.
#include <atomic>

#include "aigc/isa.h"
#include "aigc/latent.h"
#include "aigc/sampling.h"
#include "runtime/thread_pool.h"

namespace aigc {

void sample_latent_cpu(const LatentParams& p) {
  parallel_for(p.n, [&](int64_t first, int64_t last) { sample_latent_rows(p, first, last); });
}

int64_t images_to_uint8_cpu(const ToUint8Params& p) {
  const Isa isa = active_isa();
  std::atomic<int64_t> nonfinite{0};
  parallel_for(p.n, [&](int64_t first, int64_t last) {
    nonfinite += AIGC_ISA_CALL(isa, images_to_uint8, p, first, last);
  });
  return nonfinite;
}

void sample_cpu(const SampleParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.batch, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, sample_rows, p, first, last); });
}

}  // namespace aigc
