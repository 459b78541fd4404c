/* Fused causal depthwise conv1d + SiLU for CPU (the Mamba block's short convolution), forward and
 * backward, in plain C + OpenMP (no torch headers). Compiled twice by kernels/build.py (see ss_math.h).
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
 *
 * On AVX-512 machines float32 with k <= 5 takes the register-window kernels further down (same
 * math, no scratch; see the comment there); float64, other CPUs and wider kernels take the generic
 * loops right below, written for the compiler to vectorise over c.
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

/* ---- AVX-512 float32 path ---------------------------------------------------------------------
 * The generic loops above go row by row: every step re-reads its k rows of x, writes pre to memory
 * and reads it back, and the backward keeps a (chunk + k - 1, e) scratch of gpre plus (k, e) rows of
 * gw partials that each step reads and writes. Here a task instead walks its steps in ascending time
 * for one block of 16 channels (one zmm) at a time, keeping everything the block needs in registers:
 *   xw[i]   = x[lo + i], i < k, the k rows of x that step t reads (lo = t - (k - 1) causal, t anti),
 *             so each row of x is loaded once per block and shifted along, and tap j is
 *             xw[k - 1 - j] anti-causal, xw[j] causal (TAPX below);
 *   gwin[i] = gpre[s - (k - 1) + i], the last k gpre values: the backward emits gx[t] as soon as the
 *             last gpre it needs is known (t = s anti-causal, t = s - (k - 1) causal), so gpre never
 *             goes to memory and the neighbour steps are recomputed in the same walk;
 *   gw / gbias partial sums, k + 1 accumulators stored once per block at the end of the task.
 * k and the direction are compile-time constants (dispatched below), so the windows are registers
 * and their shifts are renames. The last block of e % 16 channels runs the same code under a lane
 * mask (masked loads never touch the lanes outside it). The arithmetic is the generic code's, in the
 * same order (taps in j order, sums over ascending time); only the sigmoid differs: see cc_sigmoid16n.
 * Widths above CC_VK_MAX take the generic loops. Measured at the QQP shape (x (64, 64, 288) of a
 * (64, 64, 552) tensor, k = 4, one thread): forward 0.80 -> 0.46 ms, backward 1.6 -> 0.8 ms. */
#if defined(__AVX512F__) && !SS_DOUBLE
#include <immintrin.h>
#define CC_AVX512 1
#define CC_VK_MAX 5
#define CC_INLINE static inline __attribute__((always_inline))
/* Steps per iteration of the walks' inner loops. A step's sigmoid is a chain of ~15 dependent
 * operations; computing two steps' chains interleaved gave ~15% in the forward (4: no better). */
#define CC_U 2
#define TAPX(xw, j, nk, anti) ((xw)[(anti) ? (nk) - 1 - (j) : (j)])

/* cc_sigmoid for 16 lanes of each of n vectors (n <= CC_U, interleaved), as 1 / (1 + E) with E = exp(-p) for p clamped to [-87, 87], so E and
 * 1 + E stay finite normal numbers and 1 / (1 + E) >= e^-87 ~ 1.6e-38 is normal too. That gives the
 * same values as cc_sigmoid's exp(-|p|) form (which clamps exp's argument at -87): p < -87 yields
 * e^-87 in both and p > 87 yields 1; NaN yields e^-87, so y and gpre are NaN as there. Working on p
 * itself saves cc_sigmoid's |p|, compare and select.
 * E = 2^kf exp(-u), kf = round(-p log2 e), u = p + kf ln2 (|u| <= ln2 / 2, Cody-Waite with ss_exp's
 * two-part ln2), exp(-u) by a degree-5 minimax polynomial (relative error 7.5e-8 in exact
 * arithmetic, 1.9e-7 evaluated in float32; fitted here by Remez exchange on relative error), two
 * multiply-adds fewer than ss_exp's Taylor polynomial. 2^kf is applied by scalef.
 * 1 / (1 + E) from rcp14 (relative error < 2^-14) and one Newton step r (2 - d r), which squares the
 * error to ~2^-28: a division costs several times as much per vector. The sigmoid's relative error
 * is thus about 3e-7 (that of E, scaled by E / (1 + E) <= 1, plus rounding). */
CC_INLINE void cc_sigmoid16n(__m512 *sg, const __m512 *p, const int n) {
    __m512 kf[CC_U], u[CC_U], q[CC_U], d[CC_U], r0[CC_U];
    for (int i = 0; i < n; i++) {
        u[i] = _mm512_min_ps(_mm512_max_ps(p[i], _mm512_set1_ps(-87.0f)), _mm512_set1_ps(87.0f));
        kf[i] = _mm512_roundscale_ps(_mm512_mul_ps(u[i], _mm512_set1_ps(-1.44269504088896340736f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    for (int i = 0; i < n; i++) u[i] = _mm512_fmadd_ps(kf[i], _mm512_set1_ps(0.693145751953125f), u[i]);
    for (int i = 0; i < n; i++)
        u[i] = _mm512_fmadd_ps(kf[i], _mm512_set1_ps(1.428606765330187045e-06f), u[i]);
    for (int i = 0; i < n; i++)
        q[i] = _mm512_fmadd_ps(_mm512_set1_ps(-8.297654800e-03f), u[i], _mm512_set1_ps(4.191538319e-02f));
    for (int i = 0; i < n; i++) q[i] = _mm512_fmadd_ps(q[i], u[i], _mm512_set1_ps(-1.666757464e-01f));
    for (int i = 0; i < n; i++) q[i] = _mm512_fmadd_ps(q[i], u[i], _mm512_set1_ps(4.999889433e-01f));
    for (int i = 0; i < n; i++) q[i] = _mm512_fmadd_ps(q[i], u[i], _mm512_set1_ps(-9.999997020e-01f));
    for (int i = 0; i < n; i++) q[i] = _mm512_fmadd_ps(q[i], u[i], _mm512_set1_ps(1.000000119e+00f));
    for (int i = 0; i < n; i++) /* 1 + E */
        d[i] = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(q[i], kf[i]));
    for (int i = 0; i < n; i++) r0[i] = _mm512_rcp14_ps(d[i]);
    for (int i = 0; i < n; i++)
        sg[i] = _mm512_mul_ps(r0[i], _mm512_fnmadd_ps(d[i], r0[i], _mm512_set1_ps(2.0f)));
}

/* Row t of a (b, l, e) sequence at channels c0 .. c0 + 15 (lanes outside m read as 0); 0 outside
 * 0 .. l - 1 (the conv's zero padding). */
CC_INLINE __m512 cc_row16(const float *base, int64_t sl, int64_t t, int64_t nl, int64_t c0,
                          __mmask16 m) {
    return t >= 0 && t < nl ? _mm512_maskz_loadu_ps(m, base + t * sl + c0) : _mm512_setzero_ps();
}

CC_INLINE __mmask16 cc_lanes16(int64_t ne, int64_t c0) {
    return ne - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ne - c0)) - 1u);
}

/* The rows t0 .. t0 + n - 1 of the next task (n = 0: none): a task's walk down one block of
 * channels reads each row at a stride of one row, which the hardware prefetchers do not follow
 * (strides of several kB, e.g. 2208 bytes for the QQP model's x), so the first block of every task
 * would wait on each row in turn. Instead each step of a block prefetches into L2 the line at the
 * same channel offset in the same row of the next task: over its blocks and steps a task touches
 * every line of the next one's rows once, and that task then finds them in L2. */
typedef struct {
    const float *x, *gy; /* from the first step whose gpre the next task computes, n rows */
    float *out;          /* y forward, gx backward: from its first own step, nout rows */
    int64_t n, nout;
} cc_next;

/* The prefetches of step i of a block at channel c0 (read x, gy; write out). */
CC_INLINE void cc_prefetch_row(cc_next nx, int64_t i, int64_t c0, int64_t xsl, int64_t gysl,
                               int64_t osl) {
    if (i < nx.n) {
        __builtin_prefetch(nx.x + i * xsl + c0, 0, 2);
        if (nx.gy) __builtin_prefetch(nx.gy + i * gysl + c0, 0, 2);
    }
    if (i < nx.nout) __builtin_prefetch(nx.out + i * osl + c0, 1, 2);
}

/* Steps t .. t + n - 1 of one block of the forward. xw[0 .. nk - 2] hold x[lo .. lo + nk - 2] for
 * step t on entry, for step t + n on return. */
CC_INLINE void cc_fwd_steps(const float *xb, int64_t xsl, float *yb, int64_t ysl, int64_t t,
                            int64_t t0, int64_t nl, int64_t c0, __mmask16 m, const __m512 *wj,
                            __m512 bv, __m512 *xw, cc_next nx, const int n, const int nk,
                            const int anti) {
    __m512 pre[CC_U], sg[CC_U];
    for (int i = 0; i < n; i++) {
        xw[nk - 1 + i] = cc_row16(xb, xsl, anti ? t + i + nk - 1 : t + i, nl, c0, m);
        pre[i] = bv;
    }
    for (int j = 0; j < nk; j++)
        for (int i = 0; i < n; i++) pre[i] = _mm512_fmadd_ps(wj[j], TAPX(xw + i, j, nk, anti), pre[i]);
    cc_sigmoid16n(sg, pre, n);
    for (int i = 0; i < n; i++) {
        _mm512_mask_storeu_ps(yb + (t + i) * ysl + c0, m, _mm512_mul_ps(pre[i], sg[i]));
        cc_prefetch_row(nx, t + i - t0, c0, xsl, 0, ysl);
    }
    for (int i = 0; i < nk - 1; i++) xw[i] = xw[i + n];
}

CC_INLINE void cc_fwd_task_avx512(const float *xb, int64_t xsl, const float *w, const float *bias,
                                  float *yb, int64_t ysl, int64_t t0, int64_t t1, int64_t nl,
                                  int64_t ne, cc_next nx, const int nk, const int anti) {
    for (int64_t c0 = 0; c0 < ne; c0 += 16) {
        const __mmask16 m = cc_lanes16(ne, c0);
        __m512 wj[CC_VK_MAX], xw[CC_VK_MAX + CC_U];
        for (int j = 0; j < nk; j++) wj[j] = _mm512_maskz_loadu_ps(m, w + j * ne + c0);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
        const int64_t lo = anti ? t0 : t0 - (nk - 1); /* xw[i] = x[lo + i] at step t0 */
        for (int i = 0; i < nk - 1; i++) xw[i] = cc_row16(xb, xsl, lo + i, nl, c0, m);
        int64_t t = t0;
        for (; t + CC_U <= t1; t += CC_U)
            cc_fwd_steps(xb, xsl, yb, ysl, t, t0, nl, c0, m, wj, bv, xw, nx, CC_U, nk, anti);
        for (; t < t1; t++)
            cc_fwd_steps(xb, xsl, yb, ysl, t, t0, nl, c0, m, wj, bv, xw, nx, 1, nk, anti);
        for (int64_t i = t1 - t0; i < nx.n || i < nx.nout; i++) /* a longer next task */
            cc_prefetch_row(nx, i, c0, xsl, 0, ysl);
    }
}

/* Steps s .. s + n - 1 of one block of the backward. xw[0 .. nk - 2] hold x[lo .. lo + nk - 2] and
 * gwin[0 .. nk - 2] gpre[s - (nk - 1) .. s - 1] on entry, those of step s + n on return.
 * edge = 0: all n steps are own steps (gw / gbias) whose gx is emitted, and s + n <= l: the interior
 * of the walk, CC_U steps at a time. edge = 1: one step (n = 1) with those checks. */
CC_INLINE void cc_bwd_steps(const float *xb, int64_t xsl, const float *gyb, int64_t gysl,
                            float *gxb, int64_t gxsl, int64_t s, int64_t s0, int64_t t0, int64_t t1,
                            int64_t nl, int64_t c0, __mmask16 m, const __m512 *wj, __m512 bv,
                            __m512 *xw, __m512 *gwin, __m512 *gwa, __m512 *gba, cc_next nx,
                            const int n, const int edge, const int nk, const int anti) {
    __m512 pre[CC_U], sg[CC_U], g[CC_U];
    const int64_t t = anti ? s : s - (nk - 1); /* the step whose gx the window completes */
    for (int i = 0; i < n; i++) cc_prefetch_row(nx, s + i - s0, c0, xsl, gysl, gxsl);
    if (!edge || s < nl) {
        for (int i = 0; i < n; i++) {
            xw[nk - 1 + i] = cc_row16(xb, xsl, anti ? s + i + nk - 1 : s + i, nl, c0, m);
            pre[i] = bv;
        }
        for (int j = 0; j < nk; j++)
            for (int i = 0; i < n; i++)
                pre[i] = _mm512_fmadd_ps(wj[j], TAPX(xw + i, j, nk, anti), pre[i]);
        cc_sigmoid16n(sg, pre, n);
        const __m512 one = _mm512_set1_ps(1.0f);
        for (int i = 0; i < n; i++) { /* gy silu'(p), silu'(p) = s (1 + p (1 - s)) */
            const __m512 gyv = _mm512_maskz_loadu_ps(m, gyb + (s + i) * gysl + c0);
            const __m512 dsilu = _mm512_fmadd_ps(pre[i], _mm512_sub_ps(one, sg[i]), one);
            g[i] = _mm512_mul_ps(_mm512_mul_ps(gyv, sg[i]), dsilu);
        }
        if (!edge || (s >= t0 && s < t1)) { /* own steps; a neighbour's belong to its task */
            for (int i = 0; i < n; i++) *gba = _mm512_add_ps(*gba, g[i]);
            for (int j = 0; j < nk; j++)
                for (int i = 0; i < n; i++)
                    gwa[j] = _mm512_fmadd_ps(g[i], TAPX(xw + i, j, nk, anti), gwa[j]);
        }
        for (int i = 0; i < nk - 1; i++) xw[i] = xw[i + n];
    } else {
        g[0] = _mm512_setzero_ps(); /* gpre = 0 past the end */
    }
    for (int i = 0; i < n; i++) gwin[nk - 1 + i] = g[i];
    /* gx[t] = sum_j w_j gpre[t - off_j]: gwin[i + j] anti-causal, gwin[i + k - 1 - j] causal */
    if (!edge || t >= t0) {
        for (int i = 0; i < n; i++) {
            __m512 acc = _mm512_mul_ps(wj[0], anti ? gwin[i] : gwin[i + nk - 1]);
            for (int j = 1; j < nk; j++)
                acc = _mm512_fmadd_ps(wj[j], anti ? gwin[i + j] : gwin[i + nk - 1 - j], acc);
            _mm512_mask_storeu_ps(gxb + (t + i) * gxsl + c0, m, acc);
        }
    }
    for (int i = 0; i < nk - 1; i++) gwin[i] = gwin[i + n];
}

/* One task's backward (see cc_bwd_task for the split into tasks): steps s0 .. s1-1 are its own
 * steps t0 .. t1-1 plus the k - 1 neighbours its gx needs (gpre = 0 at s >= l). */
CC_INLINE void cc_bwd_task_avx512(const float *xb, int64_t xsl, const float *w, const float *bias,
                                  const float *gyb, int64_t gysl, float *gxb, int64_t gxsl,
                                  float *gw, float *gb, int64_t t0, int64_t t1, int64_t nl,
                                  int64_t ne, cc_next nx, const int nk, const int anti) {
    const int64_t s0 = anti ? (t0 - (nk - 1) > 0 ? t0 - (nk - 1) : 0) : t0;
    const int64_t s1 = anti ? t1 : t1 + nk - 1;
    /* interior: own steps with a gx to emit, s0 <= a, t1 <= l */
    const int64_t a = anti ? t0 : t0 + nk - 1;
    for (int64_t c0 = 0; c0 < ne; c0 += 16) {
        const __mmask16 m = cc_lanes16(ne, c0);
        __m512 wj[CC_VK_MAX], xw[CC_VK_MAX + CC_U], gwin[CC_VK_MAX + CC_U], gwa[CC_VK_MAX];
        for (int j = 0; j < nk; j++) {
            wj[j] = _mm512_maskz_loadu_ps(m, w + j * ne + c0);
            gwin[j] = gwa[j] = _mm512_setzero_ps();
        }
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
        __m512 gba = _mm512_setzero_ps();
        const int64_t lo = anti ? s0 : s0 - (nk - 1); /* xw[i] = x[lo + i] at step s0 */
        for (int i = 0; i < nk - 1; i++) xw[i] = cc_row16(xb, xsl, lo + i, nl, c0, m);
        int64_t s = s0;
#define CC_STEPS(N, EDGE)                                                                         \
    cc_bwd_steps(xb, xsl, gyb, gysl, gxb, gxsl, s, s0, t0, t1, nl, c0, m, wj, bv, xw, gwin, gwa, \
                 &gba, nx, N, EDGE, nk, anti)
        for (; s < a && s < s1; s++) CC_STEPS(1, 1);
        for (; s + CC_U <= t1; s += CC_U) CC_STEPS(CC_U, 0);
        for (; s < s1; s++) CC_STEPS(1, 1);
#undef CC_STEPS
        for (int64_t i = s1 - s0; i < nx.n || i < nx.nout; i++) /* a longer next task */
            cc_prefetch_row(nx, i, c0, xsl, gysl, gxsl);
        for (int j = 0; j < nk; j++) _mm512_mask_storeu_ps(gw + j * ne + c0, m, gwa[j]);
        if (gb) _mm512_mask_storeu_ps(gb + c0, m, gba);
    }
}

/* CALL(NK, ANTI) for the compile-time widths 1 .. CC_VK_MAX and both directions. */
#define CC_DISPATCH_AVX512(nk, anti, CALL)                                     \
    do {                                                                       \
        switch ((nk) * 2 + ((anti) != 0)) {                                    \
        case 8: CALL(4, 0); break;                                             \
        case 9: CALL(4, 1); break;                                             \
        case 2: CALL(1, 0); break;                                             \
        case 3: CALL(1, 1); break;                                             \
        case 4: CALL(2, 0); break;                                             \
        case 5: CALL(2, 1); break;                                             \
        case 6: CALL(3, 0); break;                                             \
        case 7: CALL(3, 1); break;                                             \
        case 10: CALL(5, 0); break;                                            \
        case 11: CALL(5, 1); break;                                            \
        }                                                                      \
    } while (0)
#else
#define CC_AVX512 0
#define CC_VK_MAX 0
#endif

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
#if CC_AVX512
        if (nk <= CC_VK_MAX) {
            cc_next nx = {NULL, NULL, NULL, 0, 0};
            if (task + 1 < ntasks) { /* rows t0 .. t1 - 1 of x and y (a neighbour row or two of x is
                                        left to the hardware) */
                const int64_t nb1 = (task + 1) / nch, nt0 = ((task + 1) % nch) * chunk;
                nx.x = x + nb1 * strides[0] + nt0 * strides[1];
                nx.out = y + nb1 * strides[2] + nt0 * strides[3];
                nx.n = nx.nout = (nt0 + chunk < nl ? nt0 + chunk : nl) - nt0;
            }
#define CC_CALL(NK, ANTI) \
    cc_fwd_task_avx512(xb, strides[1], w, bias, yb, strides[3], t0, t1, nl, ne, nx, NK, ANTI)
            CC_DISPATCH_AVX512(nk, anti, CC_CALL);
#undef CC_CALL
            continue;
        }
#endif
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
        /* the generic loops' scratch (the AVX-512 path keeps gpre in registers) */
        const int need_scratch = !(CC_AVX512 && nk <= CC_VK_MAX);
        real *G = need_scratch ? (real *)malloc(sizeof(real) * (size_t)((chunk + nk - 1) * ne)) : NULL;
        if (need_scratch && !G) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntasks; task++) {
            if (need_scratch && !G) continue;
            const int64_t bi = task / nch, t0 = (task % nch) * chunk;
            const int64_t t1 = t0 + chunk < nl ? t0 + chunk : nl;
            real *gw = gw_part + task * nk * ne;
            real *gb = gb_part ? gb_part + task * ne : NULL;
#if CC_AVX512
            if (!need_scratch) {
                cc_next nx = {NULL, NULL, NULL, 0, 0};
                if (task + 1 < ntasks) { /* its x / gy rows r0 .. r1 - 1 and gx rows t0 .. t1 - 1 */
                    const int64_t nb1 = (task + 1) / nch, nt0 = ((task + 1) % nch) * chunk;
                    const int64_t nt1 = nt0 + chunk < nl ? nt0 + chunk : nl;
                    const int64_t r0 = anti ? (nt0 - (nk - 1) > 0 ? nt0 - (nk - 1) : 0) : nt0;
                    const int64_t r1 = anti ? nt1 : (nt1 + nk - 1 < nl ? nt1 + nk - 1 : nl);
                    nx.x = x + nb1 * strides[0] + r0 * strides[1];
                    nx.gy = gy + nb1 * strides[2] + r0 * strides[3];
                    nx.out = gx + nb1 * strides[4] + nt0 * strides[5];
                    nx.n = r1 - r0;
                    nx.nout = nt1 - nt0;
                }
#define CC_CALL(NK, ANTI)                                                                          \
    cc_bwd_task_avx512(x + bi * strides[0], strides[1], w, bias, gy + bi * strides[2], strides[3], \
                       gx + bi * strides[4], strides[5], gw, gb, t0, t1, nl, ne, nx, NK, ANTI)
                CC_DISPATCH_AVX512(nk, anti, CC_CALL);
#undef CC_CALL
                continue;
            }
#endif
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
