/* Process-wide CPU math settings, kept in the kernel library because it shares torch's OpenMP runtime
 * (libgomp): a parallel region here runs on the same threads as torch's intra-op work. Compiled twice
 * by kernels/build.py like the kernels (see ss_math.h); mambadiff.runtime calls the float32 copy.
 */
#include "ss_math.h"

/* Flush-to-zero / denormals-are-zero on every thread of the OpenMP pool. The FP control register is
 * per thread; torch.set_flush_denormal only sets the calling thread's. Returns 1 if set, 0 where
 * unsupported. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
int SS_FN(md_flush_denormals)(int nthreads) {
    (void)nthreads;
#pragma omp parallel num_threads(nthreads)
    _mm_setcsr(_mm_getcsr() | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return 1;
}
#else
int SS_FN(md_flush_denormals)(int nthreads) {
    (void)nthreads;
    return 0;
}
#endif
