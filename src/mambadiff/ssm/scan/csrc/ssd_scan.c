/* Fused SSD recurrence (Mamba-2: one scalar decay per head) for CPU: forward and backward in plain
 * C + OpenMP (no torch headers). Compiled twice by cpu.py (see ss_math.h).
 *
 * Glossary: b batch, l length, h heads, p head dim (channels of a head), n state size,
 *           t time step, q steps per chunk (checkpoint interval), g head group (a backward task's heads).
 *
 * Recurrence per (batch row, head), state S (n, p), B and C shared by all heads (ngroups = 1):
 *   a_t      = exp(dt_t A)                                   one exp per (b, t, h): the saving over S6,
 *   S_t[k,:] = a_t S_{t-1}[k,:] + B_t[k] dt_t x_t[:]          which needs one per state element
 *   y_t[:]   = sum_k C_t[k] S_t[k,:] + D x_t[:]
 *
 * Layouts: every sequence tensor is (b, l, last) with the last axis contiguous and explicit element
 * strides (sb, sl) for the first two, so the Mamba-2 block's split views are read in place:
 *   x, gx, y, gy   (b, l, h*p)   channel head*p + j
 *   dt, gdt        (b, l, h)     already positive (softplus is applied by the caller)
 *   B, C           (b, l, n)     gB_part, gC_part (g, b, l, n): zeroed and summed over g by the caller
 *   A, D           (h,)          gA_part, gD_part (b, h): summed over b by the caller
 *   ckpt           (b, h, nchunks, n, p)  the state entering every chunk of q steps
 * The inner loops run over the p channels of a head (contiguous in x, y and the state rows), which
 * the compiler vectorises; B_t[k], C_t[k] and a_t are scalars of the step.
 *
 * Forward: stores no states except, when ckpt is given (a gradient will be needed), the state at
 * each chunk start. Backward per (b, head): chunks last to first; recompute the chunk's states from
 * its checkpoint into scratch (q + 1 states of n * p), then run the adjoint backwards through them.
 * Every task owns its slices of the outputs, so no two threads write the same address.
 */
#include <math.h>
#include "ss_math.h"

static inline real SS_FN(ssd_exp)(real v) {
#if SS_DOUBLE
    return exp(v);
#else
    return expf(v);
#endif
}

#define SSD_INLINE static inline __attribute__((always_inline))

/* The head dim p is the trip count of every inner loop. The task bodies are inlined into their
 * callers with p fixed at the common sizes, so the compiler fully unrolls those loops (p = 32 is
 * four AVX2 vectors); other sizes take the general copy. */
#define SSD_DISPATCH_P(p, call)                                                                    \
    switch (p) {                                                                                   \
    case 16: { const int64_t P_ = 16; call; } break;                                               \
    case 32: { const int64_t P_ = 32; call; } break;                                               \
    case 64: { const int64_t P_ = 64; call; } break;                                               \
    default: { const int64_t P_ = p; call; } break;                                                \
    }

/* One forward step of one head: S <- a S + B (dt x); y = C . S + D x. Four state rows per pass,
 * so the adds into y form one dependency chain per four rows instead of one per row. */
SSD_INLINE void SS_FN(ssd_step)(real *restrict S, real *restrict y, const real *restrict x,
                                const real *restrict Bt, const real *restrict Ct, real a, real dt,
                                real Dh, int64_t n, int64_t p, real *restrict u) {
#pragma omp simd
    for (int64_t j = 0; j < p; j++) {
        u[j] = dt * x[j];
        y[j] = Dh * x[j];
    }
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        real *restrict r0 = S + k * p, *restrict r1 = r0 + p, *restrict r2 = r1 + p,
             *restrict r3 = r2 + p;
        const real b0 = Bt[k], b1 = Bt[k + 1], b2 = Bt[k + 2], b3 = Bt[k + 3];
        const real c0 = Ct[k], c1 = Ct[k + 1], c2 = Ct[k + 2], c3 = Ct[k + 3];
#pragma omp simd
        for (int64_t j = 0; j < p; j++) {
            real s0 = a * r0[j] + b0 * u[j], s1 = a * r1[j] + b1 * u[j];
            real s2 = a * r2[j] + b2 * u[j], s3 = a * r3[j] + b3 * u[j];
            r0[j] = s0;
            r1[j] = s1;
            r2[j] = s2;
            r3[j] = s3;
            y[j] += (c0 * s0 + c1 * s1) + (c2 * s2 + c3 * s3);
        }
    }
    for (; k < n; k++) {
        real *restrict row = S + k * p;
        const real bk = Bt[k], ck = Ct[k];
#pragma omp simd
        for (int64_t j = 0; j < p; j++) {
            real s = a * row[j] + bk * u[j];
            row[j] = s;
            y[j] += ck * s;
        }
    }
}

/* Same recurrence without an output, for recomputation: S_next = a S_prev + B (dt x). */
SSD_INLINE void SS_FN(ssd_state_step)(real *restrict Snext, const real *restrict Sprev,
                                      const real *restrict x, const real *restrict Bt, real a,
                                      real dt, int64_t n, int64_t p, real *restrict u) {
#pragma omp simd
    for (int64_t j = 0; j < p; j++) u[j] = dt * x[j];
    for (int64_t k = 0; k < n; k++) {
        const real bk = Bt[k];
        const real *restrict src = Sprev + k * p;
        real *restrict dst = Snext + k * p;
#pragma omp simd
        for (int64_t j = 0; j < p; j++) dst[j] = a * src[j] + bk * u[j];
    }
}

/* Adjoint of step t. G holds dL/dS_t from later steps (already times a_{t+1}); the step's own
 * output term is added, the gradients of step t are read off, and G leaves as a_t dL/dS_t.
 *
 * The decay's gradient needs <dL/dS_t, a_t S_{t-1}>. Since a_t S_{t-1} = S_t - B_t (dt_t x_t)^T, it is
 * <dL/dS_t, S_t> - dt_t sum_k B_t[k] (dL/dS_t[k,:] . x_t): the first term reads the state row that
 * dC reads anyway, the second reuses dB's dot products, so the previous state is never read
 * (one state-sized stream fewer per step). *ga_out receives that product, a_t included. */
SSD_INLINE void SS_FN(ssd_adjoint_step)(real *restrict G, const real *restrict Snow,
                                        const real *restrict xt,
                                        const real *restrict gyt, const real *restrict Bt,
                                        const real *restrict Ct, real *restrict gBt,
                                        real *restrict gCt, real a, real dtv, int64_t n, int64_t p,
                                        real *restrict gsum, real *ga_out) {
    real ga = 0;
#pragma omp simd
    for (int64_t j = 0; j < p; j++) gsum[j] = 0;
    for (int64_t k = 0; k < n; k++) {
        real *restrict Gk = G + k * p;
        const real *restrict Sk = Snow + k * p;
        const real bk = Bt[k], ck = Ct[k];
        real accC = 0, accB = 0, accA = 0;
#pragma omp simd reduction(+ : accC, accB, accA)
        for (int64_t j = 0; j < p; j++) {
            real gk = Gk[j] + ck * gyt[j];
            accC += gyt[j] * Sk[j];
            accB += gk * xt[j];
            accA += gk * Sk[j];
            gsum[j] += bk * gk;
            Gk[j] = a * gk;
        }
        gCt[k] += accC;
        gBt[k] += dtv * accB;
        ga += accA - dtv * bk * accB;
    }
    *ga_out = ga;
}

#if defined(__AVX2__) && defined(__FMA__) && !SS_DOUBLE
#include <immintrin.h>
#define SSD_HAVE_AVX2 1

/* r[i] = sum of the 8 lanes of v[i], for 8 vectors at once (a transposing hadd tree: 9 operations
 * for 8 sums, where one horizontal sum alone takes about 5). */
static inline __m256 ssd_hsum8(const float *v) {
    __m256 t0 = _mm256_hadd_ps(_mm256_loadu_ps(v), _mm256_loadu_ps(v + 8));
    __m256 t1 = _mm256_hadd_ps(_mm256_loadu_ps(v + 16), _mm256_loadu_ps(v + 24));
    __m256 t2 = _mm256_hadd_ps(_mm256_loadu_ps(v + 32), _mm256_loadu_ps(v + 40));
    __m256 t3 = _mm256_hadd_ps(_mm256_loadu_ps(v + 48), _mm256_loadu_ps(v + 56));
    __m256 u0 = _mm256_hadd_ps(t0, t1); /* per 128-bit half: partial sums of v0..v3 */
    __m256 u1 = _mm256_hadd_ps(t2, t3); /* of v4..v7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

static inline float ssd_hsum1(const float *v) {
    float s = 0;
    for (int i = 0; i < 8; i++) s += v[i];
    return s;
}

/* gC[k] += sum of laneC[k, :], gB[k] += dt * sum of laneB[k, :], for k < n (lanes (n, 8)).
 * Returns sum_k B[k] * (sum of laneB[k, :]), the dB term of the decay gradient. */
static inline float ssd_reduce_lanes(float *restrict gBt, float *restrict gCt, const float *laneB,
                                     const float *laneC, const float *Bt, float dtv, int64_t n) {
    const __m256 vdt = _mm256_set1_ps(dtv);
    __m256 bdot = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 sb = ssd_hsum8(laneB + 8 * k);
        _mm256_storeu_ps(gCt + k, _mm256_add_ps(_mm256_loadu_ps(gCt + k), ssd_hsum8(laneC + 8 * k)));
        _mm256_storeu_ps(gBt + k, _mm256_fmadd_ps(vdt, sb, _mm256_loadu_ps(gBt + k)));
        bdot = _mm256_fmadd_ps(_mm256_loadu_ps(Bt + k), sb, bdot);
    }
    float tmp[8], out;
    _mm256_storeu_ps(tmp, bdot);
    out = ssd_hsum1(tmp);
    for (; k < n; k++) {
        const float sb = ssd_hsum1(laneB + 8 * k);
        gCt[k] += ssd_hsum1(laneC + 8 * k);
        gBt[k] += dtv * sb;
        out += Bt[k] * sb;
    }
    return out;
}

/* ssd_adjoint_step for p a multiple of 8, float32: the per-k dot products over p (for dB and dC)
 * are kept as 8-lane partial sums in lanes (n, 8) and reduced 8 state rows at a time afterwards,
 * instead of one horizontal reduction per (k, dot) inside the loop. */
SSD_INLINE void ssd_adjoint_step_avx2(float *restrict G, const float *restrict Snow,
                                      const float *restrict xt,
                                      const float *restrict gyt, const float *restrict Bt,
                                      const float *restrict Ct, float *restrict gBt,
                                      float *restrict gCt, float a, float dtv, int64_t n, int64_t p,
                                      float *restrict gsum, float *restrict lanes, float *ga_out) {
    const __m256 va = _mm256_set1_ps(a);
    __m256 accA[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                      _mm256_setzero_ps()}; /* four chains: the sum runs over all n * p */
    float *laneC = lanes, *laneB = lanes + 8 * n;
    for (int64_t j0 = 0; j0 < p; j0 += 32) { /* 32 channels at a time: gsum stays in registers */
        const int64_t jn = (p - j0 < 32 ? p - j0 : 32) / 8;
        __m256 gs[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                        _mm256_setzero_ps()};
        for (int64_t k = 0; k < n; k++) {
            const __m256 bk = _mm256_set1_ps(Bt[k]), ck = _mm256_set1_ps(Ct[k]);
            float *Gk = G + k * p + j0;
            const float *Sk = Snow + k * p + j0;
            __m256 vc = _mm256_setzero_ps(), vb = _mm256_setzero_ps();
            for (int64_t jb = 0; jb < jn; jb++) {
                const __m256 gy = _mm256_loadu_ps(gyt + j0 + 8 * jb);
                const __m256 gk = _mm256_fmadd_ps(ck, gy, _mm256_loadu_ps(Gk + 8 * jb));
                const __m256 sv = _mm256_loadu_ps(Sk + 8 * jb);
                vc = _mm256_fmadd_ps(gy, sv, vc);
                vb = _mm256_fmadd_ps(gk, _mm256_loadu_ps(xt + j0 + 8 * jb), vb);
                accA[jb] = _mm256_fmadd_ps(gk, sv, accA[jb]);
                gs[jb] = _mm256_fmadd_ps(bk, gk, gs[jb]);
                _mm256_storeu_ps(Gk + 8 * jb, _mm256_mul_ps(va, gk));
            }
            /* partial dot products over this block of channels, reduced over lanes below */
            if (j0 == 0) {
                _mm256_storeu_ps(laneC + 8 * k, vc);
                _mm256_storeu_ps(laneB + 8 * k, vb);
            } else {
                _mm256_storeu_ps(laneC + 8 * k, _mm256_add_ps(_mm256_loadu_ps(laneC + 8 * k), vc));
                _mm256_storeu_ps(laneB + 8 * k, _mm256_add_ps(_mm256_loadu_ps(laneB + 8 * k), vb));
            }
        }
        for (int64_t jb = 0; jb < jn; jb++) _mm256_storeu_ps(gsum + j0 + 8 * jb, gs[jb]);
    }
    accA[0] = _mm256_add_ps(_mm256_add_ps(accA[0], accA[1]), _mm256_add_ps(accA[2], accA[3]));
    const float bdot = ssd_reduce_lanes(gBt, gCt, laneB, laneC, Bt, dtv, n);
    float tmp[8];
    _mm256_storeu_ps(tmp, accA[0]);
    *ga_out = ssd_hsum1(tmp) - dtv * bdot;
}
#else
#define SSD_HAVE_AVX2 0
#endif

#if SSD_HAVE_AVX2 && defined(__AVX512F__)
#define SSD_HAVE_AVX512 1
/* 16 lanes -> 8: the sum of the two 256-bit halves. */
static inline __m256 ssd_fold16(__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* ssd_adjoint_step_avx2 with 16-lane vectors, for p a multiple of 16 (half the instructions). The
 * per-k partial dot products are folded to 8 lanes and reduced the same way. */
SSD_INLINE void ssd_adjoint_step_avx512(float *restrict G, const float *restrict Snow,
                                        const float *restrict xt,
                                        const float *restrict gyt, const float *restrict Bt,
                                        const float *restrict Ct, float *restrict gBt,
                                        float *restrict gCt, float a, float dtv, int64_t n, int64_t p,
                                        float *restrict gsum, float *restrict lanes, float *ga_out) {
    const __m512 va = _mm512_set1_ps(a);
    __m512 accA[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                      _mm512_setzero_ps()};
    float *laneC = lanes, *laneB = lanes + 8 * n;
    for (int64_t j0 = 0; j0 < p; j0 += 64) { /* 64 channels at a time: gsum stays in registers */
        const int64_t jn = (p - j0 < 64 ? p - j0 : 64) / 16;
        __m512 gs[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                        _mm512_setzero_ps()};
        for (int64_t k = 0; k < n; k++) {
            const __m512 bk = _mm512_set1_ps(Bt[k]), ck = _mm512_set1_ps(Ct[k]);
            float *Gk = G + k * p + j0;
            const float *Sk = Snow + k * p + j0;
            __m512 vc = _mm512_setzero_ps(), vb = _mm512_setzero_ps();
            for (int64_t jb = 0; jb < jn; jb++) {
                const __m512 gy = _mm512_loadu_ps(gyt + j0 + 16 * jb);
                const __m512 gk = _mm512_fmadd_ps(ck, gy, _mm512_loadu_ps(Gk + 16 * jb));
                const __m512 sv = _mm512_loadu_ps(Sk + 16 * jb);
                vc = _mm512_fmadd_ps(gy, sv, vc);
                vb = _mm512_fmadd_ps(gk, _mm512_loadu_ps(xt + j0 + 16 * jb), vb);
                accA[jb] = _mm512_fmadd_ps(gk, sv, accA[jb]);
                gs[jb] = _mm512_fmadd_ps(bk, gk, gs[jb]);
                _mm512_storeu_ps(Gk + 16 * jb, _mm512_mul_ps(va, gk));
            }
            const __m256 vc8 = ssd_fold16(vc), vb8 = ssd_fold16(vb);
            if (j0 == 0) {
                _mm256_storeu_ps(laneC + 8 * k, vc8);
                _mm256_storeu_ps(laneB + 8 * k, vb8);
            } else {
                _mm256_storeu_ps(laneC + 8 * k, _mm256_add_ps(_mm256_loadu_ps(laneC + 8 * k), vc8));
                _mm256_storeu_ps(laneB + 8 * k, _mm256_add_ps(_mm256_loadu_ps(laneB + 8 * k), vb8));
            }
        }
        for (int64_t jb = 0; jb < jn; jb++) _mm512_storeu_ps(gsum + j0 + 16 * jb, gs[jb]);
    }
    const __m512 acc = _mm512_add_ps(_mm512_add_ps(accA[0], accA[1]), _mm512_add_ps(accA[2], accA[3]));
    const float bdot = ssd_reduce_lanes(gBt, gCt, laneB, laneC, Bt, dtv, n);
    float tmp[8];
    _mm256_storeu_ps(tmp, ssd_fold16(acc));
    *ga_out = ssd_hsum1(tmp) - dtv * bdot;
}
#else
#define SSD_HAVE_AVX512 0
#endif

typedef struct {
    int64_t sb, sl;
} ssd_io; /* element strides of a (b, l, .) tensor's first two axes */

/* Forward of one (batch row, head); S and u are the task's scratch. */
SSD_INLINE void SS_FN(ssd_fwd_task)(const real *x, const real *dt, const real *B, const real *C,
                                    real *y, real *ckpt, ssd_io xs, ssd_io ds, ssd_io bs, ssd_io cs,
                                    ssd_io ys, int64_t bi, int64_t hi, int64_t l, int64_t h,
                                    int64_t p, int64_t n, int64_t q, real Ah, real Dh, real *S,
                                    real *u) {
    const int64_t nchunks = (l + q - 1) / q;
    memset(S, 0, sizeof(real) * (size_t)(n * p));
    for (int64_t t = 0; t < l; t++) {
        if (ckpt && t % q == 0)
            memcpy(ckpt + ((bi * h + hi) * nchunks + t / q) * n * p, S, sizeof(real) * (size_t)(n * p));
        const real dtv = dt[bi * ds.sb + t * ds.sl + hi];
        SS_FN(ssd_step)(S, y + bi * ys.sb + t * ys.sl + hi * p, x + bi * xs.sb + t * xs.sl + hi * p,
                        B + bi * bs.sb + t * bs.sl, C + bi * cs.sb + t * cs.sl,
                        SS_FN(ssd_exp)(dtv * Ah), dtv, Dh, n, p, u);
    }
}

int SS_FN(ssd_fwd)(const real *x, const real *dt, const real *A, const real *B, const real *C,
                   const real *D, real *y, real *ckpt, const int64_t *strides, int64_t b,
                   int64_t l, int64_t h, int64_t p, int64_t n, int64_t q, int nthreads) {
    /* strides: x, dt, B, C, y as (sb, sl) pairs */
    const ssd_io xs = {strides[0], strides[1]}, ds = {strides[2], strides[3]},
                 bs = {strides[4], strides[5]}, cs = {strides[6], strides[7]},
                 ys = {strides[8], strides[9]};
    int failed = 0;
    (void)nthreads;
#pragma omp parallel num_threads(nthreads)
    {
        real *scratch = (real *)malloc(sizeof(real) * (size_t)(n * p + p));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < b * h; task++) {
            if (!scratch) continue;
            const int64_t bi = task / h, hi = task % h;
            const real Ah = A[hi], Dh = D ? D[hi] : (real)0;
            SSD_DISPATCH_P(p, SS_FN(ssd_fwd_task)(x, dt, B, C, y, ckpt, xs, ds, bs, cs, ys, bi, hi, l,
                                                  h, P_, n, q, Ah, Dh, scratch, scratch + n * P_));
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}

/* Backward of one (batch row, head): chunks last to first, each recomputed from its checkpoint. */
SSD_INLINE void SS_FN(ssd_bwd_task)(const real *x, const real *dt, const real *B, const real *C,
                                    const real *gy, const real *ckpt, real *gx, real *gdt, real *gB,
                                    real *gC, ssd_io xs, ssd_io ds, ssd_io bs, ssd_io cs,
                                    ssd_io gys, ssd_io gxs, ssd_io gds, int64_t bi, int64_t hi,
                                    int64_t l, int64_t h, int64_t p, int64_t n, int64_t q, real Ah,
                                    real Dh, real *scratch, real *gA_out, real *gD_out) {
    const int64_t np = n * p, nchunks = (l + q - 1) / q;
    /* (q + 1) states of the chunk, the adjoint G (n, p), per-step vectors u, gsum (p), decays (q),
     * lane partial sums (2n, 8) */
    real *States = scratch, *G = scratch + (q + 1) * np, *u = G + np, *gsum = u + p, *decay = gsum + p,
         *lanes = decay + q;
    (void)lanes;
    real gA = 0, gD = 0;
    memset(G, 0, sizeof(real) * (size_t)np);
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t t0 = c * q, tc = (l - t0 < q) ? l - t0 : q;
        /* States[0] = state entering the chunk; States[i + 1] = state after step t0 + i */
        if (c == 0)
            memset(States, 0, sizeof(real) * (size_t)np);
        else
            memcpy(States, ckpt + ((bi * h + hi) * nchunks + c) * np, sizeof(real) * (size_t)np);
        for (int64_t i = 0; i < tc; i++) {
            const int64_t t = t0 + i;
            const real dtv = dt[bi * ds.sb + t * ds.sl + hi];
            decay[i] = SS_FN(ssd_exp)(dtv * Ah);
            SS_FN(ssd_state_step)(States + (i + 1) * np, States + i * np,
                                  x + bi * xs.sb + t * xs.sl + hi * p, B + bi * bs.sb + t * bs.sl,
                                  decay[i], dtv, n, p, u);
        }
        for (int64_t i = tc - 1; i >= 0; i--) {
            const int64_t t = t0 + i;
            const real dtv = dt[bi * ds.sb + t * ds.sl + hi], a = decay[i];
            const real *xt = x + bi * xs.sb + t * xs.sl + hi * p;
            const real *gyt = gy + bi * gys.sb + t * gys.sl + hi * p;
            real ga;
#if SSD_HAVE_AVX512
            if (p % 16 == 0)
                ssd_adjoint_step_avx512(G, States + (i + 1) * np, xt, gyt,
                                        B + bi * bs.sb + t * bs.sl, C + bi * cs.sb + t * cs.sl,
                                        gB + t * n, gC + t * n, a, dtv, n, p, gsum, lanes, &ga);
            else
#endif
#if SSD_HAVE_AVX2
            if (p % 8 == 0)
                ssd_adjoint_step_avx2(G, States + (i + 1) * np, xt, gyt,
                                      B + bi * bs.sb + t * bs.sl, C + bi * cs.sb + t * cs.sl,
                                      gB + t * n, gC + t * n, a, dtv, n, p, gsum, lanes, &ga);
            else
#endif
                SS_FN(ssd_adjoint_step)(G, States + (i + 1) * np, xt, gyt,
                                        B + bi * bs.sb + t * bs.sl, C + bi * cs.sb + t * cs.sl,
                                        gB + t * n, gC + t * n, a, dtv, n, p, gsum, &ga);
            real *gxt = gx + bi * gxs.sb + t * gxs.sl + hi * p;
            real gdot = 0, accD = 0;
#pragma omp simd reduction(+ : gdot, accD)
            for (int64_t j = 0; j < p; j++) {
                gdot += xt[j] * gsum[j];
                accD += gyt[j] * xt[j];
                gxt[j] = dtv * gsum[j] + Dh * gyt[j];
            }
            gD += accD;
            /* a = exp(dt A): da/ddt = A a, da/dA = dt a; ga = <dL/dS_t, a S_{t-1}> has the a in it */
            gdt[bi * gds.sb + t * gds.sl + hi] = gdot + ga * Ah;
            gA += ga * dtv;
        }
    }
    *gA_out = gA;
    *gD_out = gD;
}

int SS_FN(ssd_bwd)(const real *x, const real *dt, const real *A, const real *B, const real *C,
                   const real *D, const real *gy, const real *ckpt, real *gx, real *gdt,
                   real *gA_part, real *gB_part, real *gC_part, real *gD_part,
                   const int64_t *strides, int64_t b, int64_t l, int64_t h, int64_t p, int64_t n,
                   int64_t q, int64_t g, int nthreads) {
    /* strides: x, dt, B, C, gy, gx, gdt as (sb, sl) pairs */
    const ssd_io xs = {strides[0], strides[1]}, ds = {strides[2], strides[3]},
                 bs = {strides[4], strides[5]}, cs = {strides[6], strides[7]},
                 gys = {strides[8], strides[9]}, gxs = {strides[10], strides[11]},
                 gds = {strides[12], strides[13]};
    if (l > q && !ckpt) return -2;
    const int64_t heads_per_group = (h + g - 1) / g, np = n * p;
    int failed = 0;
    (void)nthreads;
#pragma omp parallel num_threads(nthreads)
    {
        real *scratch = (real *)malloc(sizeof(real) * (size_t)((q + 2) * np + 2 * p + q + 16 * n));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < g * b; task++) {
            if (!scratch) continue;
            const int64_t gi = task / b, bi = task % b;
            /* this task's heads all add into its own (l, n) slices of gB_part, gC_part */
            real *gB = gB_part + (gi * b + bi) * l * n, *gC = gC_part + (gi * b + bi) * l * n;
            for (int64_t hi = gi * heads_per_group; hi < h && hi < (gi + 1) * heads_per_group; hi++) {
                const real Ah = A[hi], Dh = D ? D[hi] : (real)0;
                real gA, gD;
                SSD_DISPATCH_P(p, SS_FN(ssd_bwd_task)(x, dt, B, C, gy, ckpt, gx, gdt, gB, gC, xs, ds,
                                                      bs, cs, gys, gxs, gds, bi, hi, l, h, P_, n, q,
                                                      Ah, Dh, scratch, &gA, &gD));
                gA_part[bi * h + hi] = gA;
                if (gD_part) gD_part[bi * h + hi] = gD;
            }
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}
