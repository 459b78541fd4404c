/* Fused selective scan (S6) for CPU: forward and backward in plain C + OpenMP (no torch headers).
 *
 * Glossary: b batch, d channels (inner width), l length, n state size,
 *           w lane (one of SS_W consecutive channels processed together in SIMD),
 *           t time step inside a chunk of at most SS_T steps, g d-group (a backward task's channels).
 *
 * Compiled twice by kernels/build.py from this one file and linked into one shared library:
 *   -DSS_DOUBLE=0 (float32, functions *_f32)   and   -DSS_DOUBLE=1 (float64, functions *_f64)
 * All tensors arrive as raw pointers. Optional pointers may be NULL.
 *
 * Layouts (row = one (b, d) pair, row index = bi * d + di):
 *   u, delta, z, out, gout, gu, gdelta, gz   (b, d, l) with explicit element strides (see ss_io):
 *                                             channel-major, time-major or any other
 *   everything else                           contiguous:
 *   A                                         (d, n)       gA_part (b, d, n): summed over b by caller
 *   Bt, Ct                                    (b, l, n)    transposed by the caller (n contiguous)
 *   gB_part, gC_part                          (g, b, l, n) summed over g by the caller; zeroed by it
 *   D, bias                                   (d,)         gD_part, gbias_part (b, d)
 *   h0, hlast, gh0, ghlast                    (b, d, n)
 *
 * Recurrence per row (k indexes n):
 *   dt_t   = softplus(delta_t + bias)   (or delta_t + bias)
 *   h_t[k] = exp(dt_t A[k]) h_{t-1}[k] + dt_t u_t B_t[k]
 *   y_t    = sum_k C_t[k] h_t[k] + D u_t ;   out_t = y_t * silu(z_t)
 *
 * Vectorisation: SS_W channels of one batch element form a block; every inner loop runs over the
 * lanes w of a block, so the sums over k are plain per-lane adds (no horizontal reductions) and the
 * per-time-step scalars (softplus, gating) are vectorised too. Per block the time axis is staged in
 * chunks of SS_T steps through small transposed (t, w) buffers that stay in L1/L2 (moved with
 * in-register tile transposes when AVX-512 is available, element by element otherwise).
 *
 * exp / log1p are inlined polynomial versions (below) so the loops vectorise with any compiler and
 * keep their values in registers; they are accurate to ~1-2 ulp. Build WITHOUT -ffast-math: the
 * range reductions rely on exact IEEE evaluation order.
 *
 * Forward: stores no states, except, when the caller asks (a gradient will be needed), the state at
 * each chunk start, ckpt (b, ceil(d / SS_W), nchunks, n, w): 1 / SS_T of them. Backward: per block,
 * the chunk-start states come from ckpt (required when l > SS_T); then chunks are processed last to first: recompute the chunk's states
 * and decays into scratch, then run the reverse-time adjoint through them. dB, dC (sums over d) are
 * accumulated per lane into chunk buffers shared by all blocks of a task, and reduced over lanes
 * once per (task, chunk). Each task (batch element, d-group) owns its gB_part / gC_part slice, so
 * no two threads ever write the same address.
 */
#include "ss_math.h"

#define SS_W 16  /* lanes (channels) per block */
#define SS_T 128 /* time steps per chunk */

/* ------------------------------------------------------------------------------------------------
 * Chunk staging: gather one block's chunk of the (b, d, l) row-major inputs into (t, w) buffers and
 * compute the per-step scalars. Lanes past the last channel (nv <= w < SS_W) are zero-filled, which
 * makes them inert: u = 0 and h0 = 0 keep h = 0, gout = 0 keeps every gradient 0. */
typedef struct {
    real *U, *DT, *DTU, *DSP, *GATE, *DGATE, *GO, *GY; /* each (SS_T, SS_W) */
} ss_stage;

/* A (b, d, l) tensor given by pointer and element strides. The kernel reads and writes two layouts
 * without copies: channel-major (sl == 1, rows of l values: torch's contiguous (b, d, l)) and
 * time-major (sd == 1: a transposed (b, l, d) tensor, the Mamba block's natural layout); any other
 * strides work element by element. */
typedef struct {
    real *p;
    int64_t sb, sd, sl;
} ss_io;

static inline ss_io SS_FN(ss_io_make)(const real *p, const int64_t *strides) {
    ss_io io = {(real *)p, strides[0], strides[1], strides[2]};
    return io;
}

/* ---- (b, d, l) <-> (t, w) chunk buffers -------------------------------------------------------
 * Channel-major with AVX-512: tiles of 16 lanes x 16 (float) or 8 (double) time steps are moved
 * with full-width loads / stores and an in-register transpose. */
#if defined(__AVX512F__)
#include <immintrin.h>
#if SS_DOUBLE
#define SS_TT 8 /* time steps per tile: one zmm of doubles */
typedef __m512d ss_vec;
typedef __m512i ss_idx;
#define SS_LOADU(mask, p) _mm512_maskz_loadu_pd((__mmask8)(mask), (p))
#define SS_STOREU(p, mask, v) _mm512_mask_storeu_pd((p), (__mmask8)(mask), (v))
#define SS_PERM2(a, idx, b) _mm512_permutex2var_pd((a), (idx), (b))
#define SS_ZERO() _mm512_setzero_pd()
#else
#define SS_TT 16
typedef __m512 ss_vec;
typedef __m512i ss_idx;
#define SS_LOADU(mask, p) _mm512_maskz_loadu_ps((__mmask16)(mask), (p))
#define SS_STOREU(p, mask, v) _mm512_mask_storeu_ps((p), (__mmask16)(mask), (v))
#define SS_PERM2(a, idx, b) _mm512_permutex2var_ps((a), (idx), (b))
#define SS_ZERO() _mm512_setzero_ps()
#endif

/* Permutation indices of the butterfly transpose: stage q handles s = SS_TT >> (q + 1) and swaps
 * the off-diagonal s x s blocks of each 2s x 2s block; idx[q][0] builds row i, idx[q][1] row i + s
 * from the pair (a = row i, b = row i + s). */
#define SS_STAGES (SS_TT == 16 ? 4 : 3)
static void SS_FN(ss_transpose_indices)(ss_idx idx[4][2]) {
    for (int q = 0; q < SS_STAGES; q++) {
        const int s = SS_TT >> (q + 1);
        int32_t lo32[16], hi32[16];
        int64_t lo64[8], hi64[8];
        for (int j = 0; j < SS_TT; j++) {
            int lo = (j & s) ? SS_TT + j - s : j; /* a_j, or b_{j-s} */
            int hi = (j & s) ? SS_TT + j : j + s; /* a_{j+s}, or b_j */
            if (SS_TT == 16) {
                lo32[j] = lo;
                hi32[j] = hi;
            } else {
                lo64[j & 7] = lo;
                hi64[j & 7] = hi;
            }
        }
        idx[q][0] = SS_TT == 16 ? _mm512_loadu_si512(lo32) : _mm512_loadu_si512(lo64);
        idx[q][1] = SS_TT == 16 ? _mm512_loadu_si512(hi32) : _mm512_loadu_si512(hi64);
    }
}

/* In-place transpose of an SS_TT x SS_TT tile held in SS_TT vectors. */
static inline void SS_FN(ss_transpose_tile)(ss_vec *r, ss_idx idx[4][2]) {
    for (int q = 0; q < SS_STAGES; q++) {
        const int s = SS_TT >> (q + 1);
        for (int i = 0; i < SS_TT; i++) {
            if (i & s) continue;
            ss_vec a = r[i], b = r[i + s];
            r[i] = SS_PERM2(a, idx[q][0], b);
            r[i + s] = SS_PERM2(a, idx[q][1], b);
        }
    }
}

/* channel-major rows (row w at base + w * sd, unit time stride) -> dst (t, w) */
static void SS_FN(ss_rows_to_tw)(real *dst, const real *base, int64_t sd, int nv, int64_t tc) {
    ss_idx idx[4][2];
    SS_FN(ss_transpose_indices)(idx);
    for (int64_t tt = 0; tt < tc; tt += SS_TT) {
        const int cnt = (int)(tc - tt < SS_TT ? tc - tt : SS_TT);
        const unsigned mask = (1u << cnt) - 1u;
        for (int w0 = 0; w0 < SS_W; w0 += SS_TT) { /* lane groups of SS_TT */
            ss_vec r[SS_TT];
            for (int i = 0; i < SS_TT; i++)
                r[i] = (w0 + i < nv) ? SS_LOADU(mask, base + (w0 + i) * sd + tt) : SS_ZERO();
            SS_FN(ss_transpose_tile)(r, idx); /* r[i] = lanes w0.. at time tt + i */
            for (int i = 0; i < cnt; i++) SS_STOREU(dst + (tt + i) * SS_W + w0, ~0u, r[i]);
        }
    }
}

/* src (t, w) -> channel-major rows */
static void SS_FN(ss_tw_to_rows)(real *base, int64_t sd, const real *src, int nv, int64_t tc) {
    ss_idx idx[4][2];
    SS_FN(ss_transpose_indices)(idx);
    for (int64_t tt = 0; tt < tc; tt += SS_TT) {
        const int cnt = (int)(tc - tt < SS_TT ? tc - tt : SS_TT);
        const unsigned mask = (1u << cnt) - 1u;
        for (int w0 = 0; w0 < SS_W && w0 < nv; w0 += SS_TT) {
            ss_vec r[SS_TT];
            for (int i = 0; i < SS_TT; i++)
                r[i] = i < cnt ? SS_LOADU(~0u, src + (tt + i) * SS_W + w0) : SS_ZERO();
            SS_FN(ss_transpose_tile)(r, idx); /* r[i] = times tt.. of lane w0 + i */
            for (int i = 0; i < SS_TT && w0 + i < nv; i++)
                SS_STOREU(base + (w0 + i) * sd + tt, mask, r[i]);
        }
    }
}
#else
static void SS_FN(ss_rows_to_tw)(real *dst, const real *base, int64_t sd, int nv, int64_t tc) {
    for (int w = 0; w < nv; w++) {
        const real *s = base + w * sd;
        for (int64_t t = 0; t < tc; t++) dst[t * SS_W + w] = s[t];
    }
    for (int w = nv; w < SS_W; w++)
        for (int64_t t = 0; t < tc; t++) dst[t * SS_W + w] = 0;
}

static void SS_FN(ss_tw_to_rows)(real *base, int64_t sd, const real *src, int nv, int64_t tc) {
    for (int w = 0; w < nv; w++) {
        real *d = base + w * sd;
        for (int64_t t = 0; t < tc; t++) d[t] = src[t * SS_W + w];
    }
}
#endif

/* Chunk [t0, t0 + tc) of lanes d0 .. d0 + nv of batch element bi -> dst (t, w), zero-padded. */
static void SS_FN(ss_gather)(real *dst, const ss_io *io, int64_t bi, int64_t d0, int nv,
                             int64_t t0, int64_t tc) {
    const real *base = io->p + bi * io->sb + d0 * io->sd + t0 * io->sl;
    if (io->sl == 1) {
        SS_FN(ss_rows_to_tw)(dst, base, io->sd, nv, tc);
    } else if (io->sd == 1) { /* time-major: each step's lanes are adjacent */
        for (int64_t t = 0; t < tc; t++) {
            const real *s = base + t * io->sl;
            real *d = dst + t * SS_W;
            if (nv == SS_W) {
#pragma omp simd
                for (int w = 0; w < SS_W; w++) d[w] = s[w];
            } else {
                for (int w = 0; w < SS_W; w++) d[w] = w < nv ? s[w] : (real)0;
            }
        }
    } else {
        for (int64_t t = 0; t < tc; t++)
            for (int w = 0; w < SS_W; w++)
                dst[t * SS_W + w] = w < nv ? base[w * io->sd + t * io->sl] : (real)0;
    }
}

/* src (t, w) -> chunk [t0, t0 + tc) of lanes d0 .. d0 + nv of batch element bi. */
static void SS_FN(ss_scatter)(const ss_io *io, const real *src, int64_t bi, int64_t d0, int nv,
                              int64_t t0, int64_t tc) {
    real *base = io->p + bi * io->sb + d0 * io->sd + t0 * io->sl;
    if (io->sl == 1) {
        SS_FN(ss_tw_to_rows)(base, io->sd, src, nv, tc);
    } else if (io->sd == 1) {
        for (int64_t t = 0; t < tc; t++) {
            real *d = base + t * io->sl;
            const real *s = src + t * SS_W;
            if (nv == SS_W) {
#pragma omp simd
                for (int w = 0; w < SS_W; w++) d[w] = s[w];
            } else {
                for (int w = 0; w < nv; w++) d[w] = s[w];
            }
        }
    } else {
        for (int64_t t = 0; t < tc; t++)
            for (int w = 0; w < nv; w++) base[w * io->sd + t * io->sl] = src[t * SS_W + w];
    }
}

/* Software prefetch of a block's chunk (channel-major rows are short, l values each, so the
 * hardware stream prefetchers barely ramp up; the next block is requested while this one runs). */
static inline void SS_FN(ss_prefetch)(const ss_io *io, int rw, int64_t bi, int64_t d0, int nv,
                                      int64_t t0, int64_t tc) {
    if (!io->p) return;
    const char *base = (const char *)(io->p + bi * io->sb + d0 * io->sd + t0 * io->sl);
    const int64_t esz = (int64_t)sizeof(real);
    if (io->sl == 1) {
        for (int w = 0; w < nv; w++) {
            const char *p = base + w * io->sd * esz;
            for (int64_t off = 0; off < tc * esz; off += 64) {
                if (rw) __builtin_prefetch(p + off, 1, 3);
                else __builtin_prefetch(p + off, 0, 3);
            }
        }
    } else if (io->sd == 1) {
        for (int64_t t = 0; t < tc; t++) {
            const char *p = base + t * io->sl * esz;
            for (int64_t off = 0; off < nv * esz; off += 64) {
                if (rw) __builtin_prefetch(p + off, 1, 3);
                else __builtin_prefetch(p + off, 0, 3);
            }
        }
    }
}

/* Fills U, DT, DTU; GATE if z; with for_backward also DSP and (if z) DGATE; GO / GY if gout. */
static void SS_FN(ss_stage_chunk)(const ss_stage *S, const ss_io *u, const ss_io *delta,
                                  const ss_io *z, const ss_io *gout, const real *bias, int64_t bi,
                                  int64_t d0, int nv, int64_t t0, int64_t tc, int softplus,
                                  int for_backward) {
    SS_FN(ss_gather)(S->U, u, bi, d0, nv, t0, tc);
    SS_FN(ss_gather)(S->DT, delta, bi, d0, nv, t0, tc); /* raw delta, turned into dt below */
    real bw[SS_W];
    for (int w = 0; w < SS_W; w++) bw[w] = (bias && w < nv) ? bias[d0 + w] : (real)0;
    for (int64_t t = 0; t < tc; t++)
        for (int w = 0; w < SS_W; w++) S->DT[t * SS_W + w] += bw[w];
    int64_t m = tc * SS_W;
    if (softplus) {
#pragma omp simd
        for (int64_t i = 0; i < m; i++) {
            real x = S->DT[i];
            real e = ss_exp(x < 0 ? x : -x); /* exp(-|x|) in (0, 1] */
            real sp = (x > 0 ? x : (real)0) + ss_log1p_unit(e);
            real dt = x > SS_SOFTPLUS_THRESHOLD ? x : sp;
            S->DT[i] = dt;
            S->DTU[i] = dt * S->U[i];
            if (for_backward) { /* d softplus / dx = sigmoid(x) */
                real sig = (x >= 0 ? (real)1 : e) / ((real)1 + e);
                S->DSP[i] = x > SS_SOFTPLUS_THRESHOLD ? (real)1 : sig;
            }
        }
    } else {
#pragma omp simd
        for (int64_t i = 0; i < m; i++) {
            real dt = S->DT[i];
            S->DT[i] = dt;
            S->DTU[i] = dt * S->U[i];
            if (for_backward) S->DSP[i] = (real)1;
        }
    }
    if (z) {
        SS_FN(ss_gather)(S->GATE, z, bi, d0, nv, t0, tc); /* raw z, turned into silu(z) */
#pragma omp simd
        for (int64_t i = 0; i < m; i++) {
            real zv = S->GATE[i];
            real e = ss_exp(zv < 0 ? zv : -zv);
            real s = (zv >= 0 ? (real)1 : e) / ((real)1 + e); /* sigmoid(z) */
            S->GATE[i] = zv * s;
            if (for_backward) S->DGATE[i] = s * ((real)1 + zv * ((real)1 - s)); /* d silu / dz */
        }
    }
    if (gout) {
        SS_FN(ss_gather)(S->GO, gout, bi, d0, nv, t0, tc);
        if (z) {
#pragma omp simd
            for (int64_t i = 0; i < m; i++) S->GY[i] = S->GO[i] * S->GATE[i];
        } else {
            memcpy(S->GY, S->GO, sizeof(real) * (size_t)m);
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * Block kernels over one chunk. Arrays with k are laid out (k, w): h[k * SS_W + w]. Written with a
 * runtime nn and inlined at constant nn for the common sizes so the k loop is unrolled. */

/* Forward over tc steps: updates h (n, w); writes Y (t, w) = y * gate if Y != NULL. */
static inline void SS_FN(ss_block_fwd)(int64_t tc, int64_t nn, const real *restrict Bp,
                                       const real *restrict Cp, const real *restrict At,
                                       const real *restrict Dv, const ss_stage *S, int gated,
                                       real *restrict h, real *restrict Y) {
    const real *restrict DT = S->DT, *restrict DTU = S->DTU, *restrict U = S->U;
    for (int64_t t = 0; t < tc; t++) {
        real acc[SS_W];
        for (int w = 0; w < SS_W; w++) acc[w] = 0;
        for (int64_t k = 0; k < nn; k++) {
            const real bk = Bp[t * nn + k], ck = Cp[t * nn + k];
#pragma omp simd
            for (int w = 0; w < SS_W; w++) {
                real a = ss_decay(DT[t * SS_W + w] * At[k * SS_W + w]);
                real hv = a * h[k * SS_W + w] + DTU[t * SS_W + w] * bk;
                h[k * SS_W + w] = hv;
                acc[w] += hv * ck;
            }
        }
        if (Y) {
#pragma omp simd
            for (int w = 0; w < SS_W; w++) {
                real y = acc[w] + Dv[w] * U[t * SS_W + w];
                Y[t * SS_W + w] = gated ? y * S->GATE[t * SS_W + w] : y;
            }
        }
    }
}

/* Backward recompute over one chunk: H (tc + 1, n, w) with H[0] = chunk start state, DA (tc, n, w),
 * PC (tc, n, w) += gy * h, GZ (t, w) = dL/dz if gated. */
static inline void SS_FN(ss_block_recompute)(int64_t tc, int64_t nn, const real *restrict Bp,
                                             const real *restrict Cp, const real *restrict At,
                                             const real *restrict Dv, const ss_stage *S, int gated,
                                             real *restrict H, real *restrict DA,
                                             real *restrict PC, real *restrict GZ) {
    const real *restrict DT = S->DT, *restrict DTU = S->DTU, *restrict GY = S->GY;
    const int64_t nw = nn * SS_W;
    for (int64_t t = 0; t < tc; t++) {
        const real *restrict hp = H + t * nw;
        real *restrict hn = H + (t + 1) * nw;
        real *restrict da = DA + t * nw;
        real *restrict pc = PC + t * nw;
        real acc[SS_W];
        for (int w = 0; w < SS_W; w++) acc[w] = 0;
        for (int64_t k = 0; k < nn; k++) {
            const real bk = Bp[t * nn + k], ck = Cp[t * nn + k];
#pragma omp simd
            for (int w = 0; w < SS_W; w++) {
                real a = ss_decay(DT[t * SS_W + w] * At[k * SS_W + w]);
                real hv = a * hp[k * SS_W + w] + DTU[t * SS_W + w] * bk;
                da[k * SS_W + w] = a;
                hn[k * SS_W + w] = hv;
                pc[k * SS_W + w] += GY[t * SS_W + w] * hv;
                acc[w] += hv * ck;
            }
        }
        if (gated) {
#pragma omp simd
            for (int w = 0; w < SS_W; w++) {
                real y = acc[w] + Dv[w] * S->U[t * SS_W + w];
                GZ[t * SS_W + w] = S->GO[t * SS_W + w] * y * S->DGATE[t * SS_W + w];
            }
        }
    }
}

/* Backward reverse-time adjoint over one chunk. gh (n, w): dL/dh at the chunk end on entry, at the
 * chunk start (before its first step) on exit. Accumulates gA (n, w), gDv, gbv (w), PB (tc, n, w);
 * writes GU, GDL (t, w). */
static inline void SS_FN(ss_block_reverse)(int64_t tc, int64_t nn, const real *restrict Bp,
                                           const real *restrict Cp, const real *restrict At,
                                           const real *restrict Dv, const ss_stage *S,
                                           const real *restrict H, const real *restrict DA,
                                           real *restrict gh, real *restrict gA,
                                           real *restrict gDv, real *restrict gbv,
                                           real *restrict PB, real *restrict GU,
                                           real *restrict GDL) {
    const real *restrict DT = S->DT, *restrict DTU = S->DTU, *restrict GY = S->GY;
    const real *restrict U = S->U, *restrict DSP = S->DSP;
    const int64_t nw = nn * SS_W;
    for (int64_t t = tc - 1; t >= 0; t--) {
        const real *restrict hp = H + t * nw; /* h_{t-1} */
        const real *restrict da = DA + t * nw;
        real *restrict pb = PB + t * nw;
        real s_ah[SS_W], s_b[SS_W]; /* sum_k g a h_{t-1} A SS_DECAY_SCALE ; sum_k g B */
        for (int w = 0; w < SS_W; w++) s_ah[w] = s_b[w] = 0;
        for (int64_t k = 0; k < nn; k++) {
            const real bk = Bp[t * nn + k], ck = Cp[t * nn + k];
#pragma omp simd
            for (int w = 0; w < SS_W; w++) {
                const int64_t i = k * SS_W + w;
                real g = gh[i] + GY[t * SS_W + w] * ck; /* total dL/dh_t */
                real wv = g * da[i] * hp[i];             /* dL/d(dt A[k]) */
                s_ah[w] += wv * At[i];
                s_b[w] += g * bk;
                gA[i] += wv * DT[t * SS_W + w];
                pb[i] += g * DTU[t * SS_W + w];
                gh[i] = g * da[i];
            }
        }
#pragma omp simd
        for (int w = 0; w < SS_W; w++) {
            const int64_t i = t * SS_W + w;
            real gx = (s_ah[w] * ((real)1 / SS_DECAY_SCALE) + U[i] * s_b[w]) * DSP[i]; /* dL/d(delta + bias) */
            GU[i] = DT[i] * s_b[w] + GY[i] * Dv[w];
            GDL[i] = gx;
            gbv[w] += gx;
            gDv[w] += GY[i] * U[i];
        }
    }
}

/* Loads A (d, n) -> At (n, w) scaled by SS_DECAY_SCALE (see ss_decay), D -> Dv (w), zero-padded. */
static void SS_FN(ss_block_params)(const real *A, const real *D, int64_t d0, int nv, int64_t nn,
                                   real *At, real *Dv) {
    for (int64_t k = 0; k < nn; k++)
        for (int w = 0; w < SS_W; w++)
            At[k * SS_W + w] = w < nv ? A[(d0 + w) * nn + k] * SS_DECAY_SCALE : (real)0;
    for (int w = 0; w < SS_W; w++) Dv[w] = (D && w < nv) ? D[d0 + w] : (real)0;
}

/* (b, d, n) rows <-> (n, w) block state */
static void SS_FN(ss_state_load)(real *h, const real *src, int64_t row0, int nv, int64_t nn) {
    for (int64_t k = 0; k < nn; k++)
        for (int w = 0; w < SS_W; w++)
            h[k * SS_W + w] = (src && w < nv) ? src[(row0 + w) * nn + k] : (real)0;
}

static void SS_FN(ss_state_store)(real *dst, const real *h, int64_t row0, int nv, int64_t nn) {
    for (int w = 0; w < nv; w++)
        for (int64_t k = 0; k < nn; k++) dst[(row0 + w) * nn + k] = h[k * SS_W + w];
}

static real *SS_FN(ss_stage_alloc)(ss_stage *S, size_t extra) {
    size_t per = (size_t)SS_T * SS_W;
    real *buf = (real *)malloc(sizeof(real) * (8 * per + extra));
    if (!buf) return NULL;
    S->U = buf;
    S->DT = S->U + per;
    S->DTU = S->DT + per;
    S->DSP = S->DTU + per;
    S->GATE = S->DSP + per;
    S->DGATE = S->GATE + per;
    S->GO = S->DGATE + per;
    S->GY = S->GO + per;
    return buf;
}

/* Dispatch helper: call F with a compile-time n for common sizes. */
#define SS_DISPATCH_N(nn, CALL)        \
    do {                               \
        if ((nn) == 16) CALL(16);      \
        else if ((nn) == 8) CALL(8);   \
        else if ((nn) == 4) CALL(4);   \
        else if ((nn) == 32) CALL(32); \
        else CALL(nn);                 \
    } while (0)

/* ------------------------------------------------------------------------------------------------
 * Forward. out (b, d, l); hlast (b, d, n) or NULL. Parallel over (batch, block) tasks.
 * Returns 0, or -1 if scratch allocation failed. */
int SS_FN(ss_fwd)(const real *u, const real *delta, const real *A, const real *Bt,
                  const real *Ct, const real *D, const real *z, const real *bias, const real *h0,
                  real *out, real *hlast, real *ckpt, const int64_t *strides, int64_t nb,
                  int64_t nd, int64_t nl, int64_t nn, int softplus, int nthreads) {
    /* strides: (b, d, l) element strides of u, delta, z, out, 3 each */
    const ss_io io_u = SS_FN(ss_io_make)(u, strides), io_dl = SS_FN(ss_io_make)(delta, strides + 3);
    const ss_io io_z = SS_FN(ss_io_make)(z, strides + 6), io_o = SS_FN(ss_io_make)(out, strides + 9);
    const int64_t nblk = (nd + SS_W - 1) / SS_W;
    const int64_t ntasks = nb * nblk;
    const int64_t nw = nn * SS_W;
    const int64_t nchunks = (nl + SS_T - 1) / SS_T;
    int err = 0;
    (void)nthreads; /* unused without OpenMP */
#pragma omp parallel num_threads(nthreads)
    {
        ss_stage S = {0};
        /* extra: Y (T, w), h (n, w), At (n, w), Dv (w) */
        real *buf = SS_FN(ss_stage_alloc)(&S, (size_t)(SS_T * SS_W + 2 * nw + SS_W));
        real *Y = NULL, *h = NULL, *At = NULL, *Dv = NULL;
        if (buf) {
            Y = S.GY + SS_T * SS_W;
            h = Y + SS_T * SS_W;
            At = h + nw;
            Dv = At + nw;
        } else {
#pragma omp atomic write
            err = 1;
        }
        /* dynamic: on a busy machine a descheduled thread must not hold up the others */
#pragma omp for schedule(dynamic, 4)
        for (int64_t task = 0; task < ntasks; task++) {
            if (!buf) continue;
            const int64_t bi = task / nblk, d0 = (task % nblk) * SS_W;
            const int nv = (int)(nd - d0 < SS_W ? nd - d0 : SS_W);
            const int64_t row0 = bi * nd + d0;
            SS_FN(ss_block_params)(A, D, d0, nv, nn, At, Dv);
            SS_FN(ss_state_load)(h, h0, row0, nv, nn);
            for (int64_t t0 = 0; t0 < nl; t0 += SS_T) {
                const int64_t tc = nl - t0 < SS_T ? nl - t0 : SS_T;
                if (ckpt) /* the state at this chunk's start, for the backward (see ss_bwd) */
                    memcpy(ckpt + ((bi * nblk + d0 / SS_W) * nchunks + t0 / SS_T) * nw, h,
                           sizeof(real) * (size_t)nw);
                SS_FN(ss_stage_chunk)(&S, &io_u, &io_dl, z ? &io_z : NULL, NULL, bias, bi, d0, nv,
                                      t0, tc, softplus, 0);
                { /* the next chunk of this block, or the next task's first chunk */
                    int64_t pb = bi, pd0 = d0, pt = t0 + SS_T;
                    if (pt >= nl && task + 1 < ntasks) {
                        pb = (task + 1) / nblk;
                        pd0 = ((task + 1) % nblk) * SS_W;
                        pt = 0;
                    }
                    if (pt < nl) {
                        const int64_t pc = nl - pt < SS_T ? nl - pt : SS_T;
                        const int pv = (int)(nd - pd0 < SS_W ? nd - pd0 : SS_W);
                        SS_FN(ss_prefetch)(&io_u, 0, pb, pd0, pv, pt, pc);
                        SS_FN(ss_prefetch)(&io_dl, 0, pb, pd0, pv, pt, pc);
                        SS_FN(ss_prefetch)(&io_z, 0, pb, pd0, pv, pt, pc);
                        SS_FN(ss_prefetch)(&io_o, 1, pb, pd0, pv, pt, pc);
                    }
                }
                const real *Bp = Bt + (bi * nl + t0) * nn, *Cp = Ct + (bi * nl + t0) * nn;
#define SS_CALL(NN) SS_FN(ss_block_fwd)(tc, NN, Bp, Cp, At, Dv, &S, z != NULL, h, Y)
                SS_DISPATCH_N(nn, SS_CALL);
#undef SS_CALL
                SS_FN(ss_scatter)(&io_o, Y, bi, d0, nv, t0, tc);
            }
            if (hlast) SS_FN(ss_state_store)(hlast, h, row0, nv, nn);
        }
        free(buf);
    }
    return err ? -1 : 0;
}

/* Per-block persistent backward state, one record of per_block values:
 * At (n, w), Dv (w), gh (n, w), gA (n, w), gDv (w), gbv (w), ck (nchunks, n, w) checkpoints.
 * gA, gDv, gbv are adjacent so one memset zeroes them. */
#define SS_BLOCK_VIEW(P)                                                                    \
    real *At = (P), *Dv = At + nw, *gh = Dv + SS_W, *gA = gh + nw, *gDv = gA + nw;           \
    real *gbv = gDv + SS_W, *ck = gbv + SS_W

/* ------------------------------------------------------------------------------------------------
 * Backward. Tasks are (batch element, d-group of consecutive blocks); ng groups per batch element.
 * Returns 0, or -1 if scratch allocation failed. */
int SS_FN(ss_bwd)(const real *u, const real *delta, const real *A, const real *Bt,
                  const real *Ct, const real *D, const real *z, const real *bias, const real *h0,
                  const real *gout, const real *ghlast, real *gu, real *gdelta, real *gA_part,
                  real *gB_part, real *gC_part, real *gD_part, real *gz, real *gbias_part,
                  real *gh0, const real *ckpt, const int64_t *strides, int64_t nb, int64_t nd,
                  int64_t nl, int64_t nn, int64_t ng, int softplus, int nthreads) {
    /* strides: (b, d, l) element strides of u, delta, z, gout, gu, gdelta, gz, 3 each */
    const ss_io io_u = SS_FN(ss_io_make)(u, strides), io_dl = SS_FN(ss_io_make)(delta, strides + 3);
    const ss_io io_z = SS_FN(ss_io_make)(z, strides + 6);
    const ss_io io_go = SS_FN(ss_io_make)(gout, strides + 9);
    const ss_io io_gu = SS_FN(ss_io_make)(gu, strides + 12);
    const ss_io io_gdl = SS_FN(ss_io_make)(gdelta, strides + 15);
    const ss_io io_gz = SS_FN(ss_io_make)(gz, strides + 18);
    const int64_t nblk = (nd + SS_W - 1) / SS_W;
    if (ng > nblk) ng = nblk;
    const int64_t bpg = (nblk + ng - 1) / ng; /* blocks per group */
    const int64_t ntasks = nb * ng;
    const int64_t nchunks = (nl + SS_T - 1) / SS_T;
    const int64_t nw = nn * SS_W;
    int err = 0;
    if (nchunks > 1 && !ckpt) return -2; /* the forward's chunk-start states are needed */
    (void)nthreads; /* unused without OpenMP */
#pragma omp parallel num_threads(nthreads)
    {
        ss_stage S = {0};
        /* extra: GU, GDL, GZ (T, w); H ((T + 1), n, w); DA, PB, PC (T, n, w);
         * per block of the group: At, gh, gA (n, w), Dv, gDv, gbv (w), checkpoints (nchunks, n, w) */
        const size_t per_block = (size_t)(3 * nw + 3 * SS_W + nchunks * nw);
        const size_t extra = (size_t)(3 * SS_T * SS_W + (SS_T + 1) * nw + 3 * SS_T * nw) +
                             (size_t)bpg * per_block;
        real *buf = SS_FN(ss_stage_alloc)(&S, extra);
        real *GU = NULL, *GDL = NULL, *GZ = NULL, *H = NULL, *DA = NULL, *PB = NULL, *PC = NULL;
        real *blk = NULL;
        if (buf) {
            GU = S.GY + SS_T * SS_W;
            GDL = GU + SS_T * SS_W;
            GZ = GDL + SS_T * SS_W;
            H = GZ + SS_T * SS_W;
            DA = H + (SS_T + 1) * nw;
            PB = DA + SS_T * nw;
            PC = PB + SS_T * nw;
            blk = PC + SS_T * nw;
        } else {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntasks; task++) {
            if (!buf) continue;
            const int64_t bi = task / ng, g = task % ng;
            const int64_t j0 = g * bpg, j1 = j0 + bpg < nblk ? j0 + bpg : nblk;
            real *gBp = gB_part + (g * nb + bi) * nl * nn; /* (l, n) owned by this task */
            real *gCp = gC_part + (g * nb + bi) * nl * nn;
            const real *Bb = Bt + bi * nl * nn, *Cb = Ct + bi * nl * nn;

            /* per-block setup */
            for (int64_t j = j0; j < j1; j++) {
                SS_BLOCK_VIEW(blk + (j - j0) * per_block);
                const int64_t d0 = j * SS_W, row0 = bi * nd + d0;
                const int nv = (int)(nd - d0 < SS_W ? nd - d0 : SS_W);
                SS_FN(ss_block_params)(A, D, d0, nv, nn, At, Dv);
                SS_FN(ss_state_load)(gh, ghlast, row0, nv, nn);
                memset(gA, 0, sizeof(real) * (size_t)(nw + 2 * SS_W)); /* gA, gDv, gbv */
                if (ckpt) /* chunk-start states stored by the forward */
                    memcpy(ck, ckpt + (bi * nblk + j) * nchunks * nw,
                           sizeof(real) * (size_t)(nchunks * nw));
                else /* one chunk: it starts from h0 */
                    SS_FN(ss_state_load)(ck, h0, row0, nv, nn);
            }

            /* chunks last to first; within a chunk every block of the group */
            for (int64_t c = nchunks - 1; c >= 0; c--) {
                const int64_t t0 = c * SS_T, tc = nl - t0 < SS_T ? nl - t0 : SS_T;
                const real *Bp = Bb + t0 * nn, *Cp = Cb + t0 * nn;
                memset(PB, 0, sizeof(real) * (size_t)(tc * nw));
                memset(PC, 0, sizeof(real) * (size_t)(tc * nw));
                for (int64_t j = j0; j < j1; j++) {
                    SS_BLOCK_VIEW(blk + (j - j0) * per_block);
                    const int64_t d0 = j * SS_W;
                    const int nv = (int)(nd - d0 < SS_W ? nd - d0 : SS_W);
                    SS_FN(ss_stage_chunk)(&S, &io_u, &io_dl, z ? &io_z : NULL, &io_go, bias, bi,
                                          d0, nv, t0, tc, softplus, 1);
                    { /* the next block of this chunk, or the first block of the previous chunk */
                        int64_t pj = j + 1, pt = t0, pc = tc;
                        if (pj >= j1) {
                            pj = j0;
                            pt = t0 - SS_T;
                            pc = SS_T;
                        }
                        if (pt >= 0) {
                            const int64_t pd0 = pj * SS_W;
                            const int pv = (int)(nd - pd0 < SS_W ? nd - pd0 : SS_W);
                            SS_FN(ss_prefetch)(&io_u, 0, bi, pd0, pv, pt, pc);
                            SS_FN(ss_prefetch)(&io_dl, 0, bi, pd0, pv, pt, pc);
                            SS_FN(ss_prefetch)(&io_z, 0, bi, pd0, pv, pt, pc);
                            SS_FN(ss_prefetch)(&io_go, 0, bi, pd0, pv, pt, pc);
                            SS_FN(ss_prefetch)(&io_gu, 1, bi, pd0, pv, pt, pc);
                            SS_FN(ss_prefetch)(&io_gdl, 1, bi, pd0, pv, pt, pc);
                            SS_FN(ss_prefetch)(&io_gz, 1, bi, pd0, pv, pt, pc);
                        }
                    }
                    memcpy(H, ck + c * nw, sizeof(real) * (size_t)nw);
#define SS_CALL(NN)                                                                             \
    do {                                                                                        \
        SS_FN(ss_block_recompute)(tc, NN, Bp, Cp, At, Dv, &S, z != NULL, H, DA, PC, GZ);         \
        SS_FN(ss_block_reverse)(tc, NN, Bp, Cp, At, Dv, &S, H, DA, gh, gA, gDv, gbv, PB, GU, GDL); \
    } while (0)
                    SS_DISPATCH_N(nn, SS_CALL);
#undef SS_CALL
                    SS_FN(ss_scatter)(&io_gu, GU, bi, d0, nv, t0, tc);
                    SS_FN(ss_scatter)(&io_gdl, GDL, bi, d0, nv, t0, tc);
                    if (z) SS_FN(ss_scatter)(&io_gz, GZ, bi, d0, nv, t0, tc);
                }
                /* reduce the lane partials of dB, dC into this task's slice */
                for (int64_t i = 0; i < tc * nn; i++) {
                    real sb = 0, sc = 0;
                    for (int w = 0; w < SS_W; w++) {
                        sb += PB[i * SS_W + w];
                        sc += PC[i * SS_W + w];
                    }
                    gBp[t0 * nn + i] += sb;
                    gCp[t0 * nn + i] += sc;
                }
            }

            /* per-block results */
            for (int64_t j = j0; j < j1; j++) {
                SS_BLOCK_VIEW(blk + (j - j0) * per_block);
                (void)At, (void)Dv, (void)ck;
                const int64_t d0 = j * SS_W, row0 = bi * nd + d0;
                const int nv = (int)(nd - d0 < SS_W ? nd - d0 : SS_W);
                SS_FN(ss_state_store)(gA_part, gA, row0, nv, nn);
                if (gh0) SS_FN(ss_state_store)(gh0, gh, row0, nv, nn);
                for (int w = 0; w < nv; w++) {
                    if (gD_part) gD_part[row0 + w] = gDv[w];
                    if (gbias_part) gbias_part[row0 + w] = gbv[w];
                }
            }
        }
        free(buf);
    }
    return err ? -1 : 0;
}

/* Lets the loader check the library (element size, and whether OpenMP threading is compiled in). */
int SS_FN(ss_abi_version)(void) {
#ifdef _OPENMP
    return 2000 + (int)sizeof(real);
#else
    return 1000 + (int)sizeof(real);
#endif
}
