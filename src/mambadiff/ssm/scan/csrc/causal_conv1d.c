/* Fused causal depthwise conv1d + SiLU for CPU (the Mamba block's short convolution), forward and
 * backward, in plain C + OpenMP (no torch headers). Compiled twice by cpu.py (see ss_math.h).
 * With anti != 0 the same kernels compute the anti-causal conv (tap j reads step t + (k - 1) - j),
 * which is the causal conv of the time-flipped sequence, flipped back: the backward direction of a
 * bidirectional block. Memory is still walked in ascending time (walking it backwards through
 * negative strides measured about 1.6x slower here).
 *
 * Glossary: b batch, l length, e channels, k kernel width, t time step, c channel,
 *           j tap (0 .. k-1; tap k-1 multiplies the current step), task (batch element, time chunk).
 *
 * Layout: every sequence tensor is time-major, (b, l, e) with channels adjacent (element stride 1),
 * and any batch / time strides. That is the layout in which the Mamba block's in_proj produces x
 * (a column slice of its (b, l, 2e) output, so the time stride is 2e) and in which x_proj and the
 * selective scan read the result, so no transposing copies are needed on either side.
 *
 *   pre[t, c] = bias[c] + sum_j w[j, c] x[t + off_j, c]           (x = 0 outside 0 .. l - 1)
 *   y[t, c]   = silu(pre[t, c]) = pre * sigmoid(pre)
 *   off_j     = -(k - 1 - j) causal, +(k - 1 - j) anti-causal
 *
 * w arrives transposed, (k, e) contiguous, so each tap's weights are one contiguous row that the
 * channel loop reads with vector loads. Every inner loop runs over c, which the compiler vectorises.
 *
 * Backward (recomputes pre, stores nothing from the forward):
 *   gpre[t, c] = gy[t, c] silu'(pre[t, c])
 *   gx[t, c]   = sum_j w[j, c] gpre[t - off_j, c]                  (0 <= t - off_j < l)
 *   gw[j, c]   = sum_{b, t} gpre[t, c] x[t + off_j, c]            per task, summed by the caller
 *   gbias[c]   = sum_{b, t} gpre[t, c]                             per task, summed by the caller
 * A task recomputes gpre for its chunk plus the k - 1 neighbouring steps that its gx needs (the
 * following ones causal, the preceding ones anti-causal) into a small scratch, and accumulates its
 * gw / gbias over its own chunk only, so no step is counted twice and no two threads write the same
 * address.
 */
#include "ss_math.h"

/* sigmoid(p) through exp(-|p|) in (0, 1]: no overflow for large |p|. */
static inline real SS_FN(cc_sigmoid)(real p) {
    real e = ss_exp(p < 0 ? p : -p);
    return (p >= 0 ? (real)1 : e) / ((real)1 + e);
}

/* The step that tap j of step t reads (see off_j above). */
static inline int64_t cc_src(int64_t t, int64_t j, int64_t nk, int anti) {
    return anti ? t + (nk - 1 - j) : t - (nk - 1 - j);
}

/* pre-activation of step t into out[c] for all channels (k known at compile time when inlined). */
static inline void SS_FN(cc_pre_row)(real *restrict out, const real *restrict xb, int64_t sl,
                                     const real *restrict w, const real *restrict bias, int64_t t,
                                     int64_t nl, int64_t ne, int64_t nk, int anti) {
#pragma omp simd
    for (int64_t c = 0; c < ne; c++) out[c] = bias ? bias[c] : (real)0;
    for (int64_t j = 0; j < nk; j++) {
        const int64_t src = cc_src(t, j, nk, anti);
        if (src < 0 || src >= nl) continue;
        const real *restrict xr = xb + src * sl;
        const real *restrict wr = w + j * ne;
#pragma omp simd
        for (int64_t c = 0; c < ne; c++) out[c] += wr[c] * xr[c];
    }
}

#define CC_DISPATCH_K(nk, CALL)    \
    do {                           \
        if ((nk) == 4) CALL(4);    \
        else if ((nk) == 2) CALL(2); \
        else if ((nk) == 3) CALL(3); \
        else CALL(nk);             \
    } while (0)

static inline void SS_FN(cc_fwd_task)(const real *xb, int64_t xsl, const real *w,
                                      const real *bias, real *yb, int64_t ysl, int64_t t0,
                                      int64_t t1, int64_t nl, int64_t ne, int64_t nk, int anti) {
    for (int64_t t = t0; t < t1; t++) {
        real *restrict yr = yb + t * ysl;
        SS_FN(cc_pre_row)(yr, xb, xsl, w, bias, t, nl, ne, nk, anti);
#pragma omp simd
        for (int64_t c = 0; c < ne; c++) yr[c] = yr[c] * SS_FN(cc_sigmoid)(yr[c]);
    }
}

/* y = silu(causal_conv(x)), or the anti-causal conv when anti != 0. strides: x (sb, sl), y (sb, sl),
 * channel stride 1 for both. Parallel over (batch element, chunk of `chunk` steps). Returns 0. */
int SS_FN(cc_fwd)(const real *x, const real *w, const real *bias, real *y, const int64_t *strides,
                  int64_t nb, int64_t nl, int64_t ne, int64_t nk, int64_t chunk, int anti,
                  int nthreads) {
    const int64_t nch = (nl + chunk - 1) / chunk, ntasks = nb * nch;
    (void)nthreads; /* unused without OpenMP */
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; task++) {
        const int64_t bi = task / nch, t0 = (task % nch) * chunk;
        const int64_t t1 = t0 + chunk < nl ? t0 + chunk : nl;
        const real *xb = x + bi * strides[0];
        real *yb = y + bi * strides[2];
#define CC_CALL(NK) SS_FN(cc_fwd_task)(xb, strides[1], w, bias, yb, strides[3], t0, t1, nl, ne, NK, anti)
        CC_DISPATCH_K(nk, CC_CALL);
#undef CC_CALL
    }
    return 0;
}

/* One task's backward: G (rows r0 .. r1-1, e) scratch; gw (k, e), gb (e) this task's partials.
 * Rows r0 .. r1-1 are the task's own steps t0 .. t1-1 plus the k - 1 neighbours its gx reads. */
static inline void SS_FN(cc_bwd_task)(const real *xb, int64_t xsl, const real *w, const real *bias,
                                      const real *gyb, int64_t gysl, real *gxb, int64_t gxsl,
                                      real *restrict G, real *restrict gw, real *restrict gb,
                                      int64_t t0, int64_t t1, int64_t nl, int64_t ne, int64_t nk,
                                      int anti) {
    const int64_t r0 = anti ? (t0 - (nk - 1) > 0 ? t0 - (nk - 1) : 0) : t0;
    const int64_t r1 = anti ? t1 : (t1 + nk - 1 < nl ? t1 + nk - 1 : nl);
    memset(gw, 0, sizeof(real) * (size_t)(nk * ne));
    if (gb) memset(gb, 0, sizeof(real) * (size_t)ne);
    for (int64_t t = r0; t < r1; t++) {
        real *restrict g = G + (t - r0) * ne;
        SS_FN(cc_pre_row)(g, xb, xsl, w, bias, t, nl, ne, nk, anti); /* pre, turned into gpre below */
        const real *restrict gyr = gyb + t * gysl;
#pragma omp simd
        for (int64_t c = 0; c < ne; c++) {
            real p = g[c];
            real s = SS_FN(cc_sigmoid)(p);
            g[c] = gyr[c] * s * ((real)1 + p * ((real)1 - s)); /* silu'(p) = s (1 + p (1 - s)) */
        }
        if (t < t0 || t >= t1) continue; /* a neighbour: only needed for gx, owned by another task */
        if (gb) {
#pragma omp simd
            for (int64_t c = 0; c < ne; c++) gb[c] += g[c];
        }
        for (int64_t j = 0; j < nk; j++) {
            const int64_t src = cc_src(t, j, nk, anti);
            if (src < 0 || src >= nl) continue;
            const real *restrict xr = xb + src * xsl;
            real *restrict gwr = gw + j * ne;
#pragma omp simd
            for (int64_t c = 0; c < ne; c++) gwr[c] += g[c] * xr[c];
        }
    }
    for (int64_t t = t0; t < t1; t++) {
        real *restrict gxr = gxb + t * gxsl;
#pragma omp simd
        for (int64_t c = 0; c < ne; c++) gxr[c] = 0;
        for (int64_t j = 0; j < nk; j++) {
            /* the output step whose tap j reads step t: the opposite direction's source */
            const int64_t dst = cc_src(t, j, nk, !anti);
            if (dst < r0 || dst >= r1) continue;
            const real *restrict g = G + (dst - r0) * ne;
            const real *restrict wr = w + j * ne;
#pragma omp simd
            for (int64_t c = 0; c < ne; c++) gxr[c] += wr[c] * g[c];
        }
    }
}

/* Backward. strides: x, gy, gx (sb, sl) each, channel stride 1. gw_part (ntasks, k, e) and gb_part
 * (ntasks, e) (or NULL without bias), ntasks = nb * ceil(nl / chunk), are summed over tasks by the
 * caller. Returns 0, or -1 if scratch allocation failed. */
int SS_FN(cc_bwd)(const real *x, const real *w, const real *bias, const real *gy, real *gx,
                  real *gw_part, real *gb_part, const int64_t *strides, int64_t nb, int64_t nl,
                  int64_t ne, int64_t nk, int64_t chunk, int anti, int nthreads) {
    const int64_t nch = (nl + chunk - 1) / chunk, ntasks = nb * nch;
    int err = 0;
    (void)nthreads; /* unused without OpenMP */
#pragma omp parallel num_threads(nthreads)
    {
        real *G = (real *)malloc(sizeof(real) * (size_t)((chunk + nk - 1) * ne));
        if (!G) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntasks; task++) {
            if (!G) continue;
            const int64_t bi = task / nch, t0 = (task % nch) * chunk;
            const int64_t t1 = t0 + chunk < nl ? t0 + chunk : nl;
            real *gw = gw_part + task * nk * ne;
            real *gb = gb_part ? gb_part + task * ne : NULL;
#define CC_CALL(NK)                                                                              \
    SS_FN(cc_bwd_task)(x + bi * strides[0], strides[1], w, bias, gy + bi * strides[2], strides[3], \
                       gx + bi * strides[4], strides[5], G, gw, gb, t0, t1, nl, ne, NK, anti)
            CC_DISPATCH_K(nk, CC_CALL);
#undef CC_CALL
        }
        free(G);
    }
    return err ? -1 : 0;
}
