/* Fused RMSNorm, optionally gated by SiLU (the Mamba-2 output norm), for CPU: forward and backward
 * in plain C + OpenMP (no torch headers). Compiled twice by kernels/build.py (see ss_math.h).
 *
 * Glossary: r row (one token: all leading dims flattened), e normalised width, j channel.
 *
 *   g[r, j] = x[r, j] * silu(z[r, j])            (g = x without z)
 *   y[r, j] = g[r, j] * rstd[r] * w[j],           rstd[r] = 1 / sqrt(mean_j g[r, j]^2 + eps)
 *
 * One pass over the row forward (two reads of it: sum of squares, then the output); the backward
 * recomputes g from x and z and uses the rstd the forward stored, so nothing of width e is kept.
 * Backward, with gg = gy * w:
 *   dg = rstd * (gg - g * rstd^2 * mean_j(gg * g))
 *   gx = dg * silu(z),  gz = dg * x * silu'(z),  silu'(z) = s (1 + z (1 - s)),  s = sigmoid(z)
 *   gw = sum_r gy * g * rstd      (one partial row per task, summed by the caller)
 *
 * Layouts: x, z, y, gy, gx, gz are (rows, e) with a row stride each and unit channel stride;
 * rstd (rows,); w (e,); gw_part (ntasks, e).
 */
#include <math.h>
#include "ss_math.h"

int SS_FN(rn_fwd)(const real *x, const real *z, const real *w, real *y, real *rstd,
                  const int64_t *strides, int64_t rows, int64_t e, real eps, int nthreads) {
    /* strides: row strides of x, z, y */
    const int64_t sx = strides[0], sz = strides[1], sy = strides[2];
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const real *xr = x + r * sx;
        real *yr = y + r * sy;
        real ss = 0;
        if (z) {
            const real *zr = z + r * sz;
            /* y holds exp(-z), then g until it is scaled below. The exp has a loop of its own: fused
             * with the division and the reduction (gcc 12) the loop ran 6x slower than split. */
#pragma omp simd
            for (int64_t j = 0; j < e; j++) yr[j] = ss_exp(-zr[j]);
#pragma omp simd reduction(+ : ss)
            for (int64_t j = 0; j < e; j++) {
                real g = xr[j] * zr[j] / ((real)1 + yr[j]);
                yr[j] = g;
                ss += g * g;
            }
        } else {
#pragma omp simd reduction(+ : ss)
            for (int64_t j = 0; j < e; j++) {
                yr[j] = xr[j];
                ss += xr[j] * xr[j];
            }
        }
        const real rs = (real)1 / sqrt(ss / (real)e + eps);
        rstd[r] = rs;
#pragma omp simd
        for (int64_t j = 0; j < e; j++) yr[j] = yr[j] * rs * w[j];
    }
    return 0;
}

int SS_FN(rn_bwd)(const real *x, const real *z, const real *w, const real *rstd, const real *gy,
                  real *gx, real *gz, real *gw_part, const int64_t *strides, int64_t rows, int64_t e,
                  int64_t ntasks, int nthreads) {
    /* strides: row strides of x, z, gy, gx, gz */
    const int64_t sx = strides[0], sz = strides[1], sgy = strides[2], sgx = strides[3],
                  sgz = strides[4];
    int failed = 0;
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t task = 0; task < ntasks; task++) {
        real *gw = gw_part + task * e;
        real *gate = z ? (real *)malloc(sizeof(real) * (size_t)(2 * e)) : NULL; /* silu, silu' */
        if (z && !gate) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        memset(gw, 0, sizeof(real) * (size_t)e);
        const int64_t r0 = rows * task / ntasks, r1 = rows * (task + 1) / ntasks;
        for (int64_t r = r0; r < r1; r++) {
            const real *xr = x + r * sx, *gyr = gy + r * sgy;
            real *gxr = gx + r * sgx;
            const real rs = rstd[r];
            real dot = 0;
            if (z) {
                const real *zr = z + r * sz;
#pragma omp simd
                for (int64_t j = 0; j < e; j++) gate[e + j] = ss_exp(-zr[j]); /* own loop: see forward */
#pragma omp simd reduction(+ : dot)
                for (int64_t j = 0; j < e; j++) {
                    real s = (real)1 / ((real)1 + gate[e + j]);
                    real silu = zr[j] * s;
                    gate[j] = silu;
                    gate[e + j] = s * ((real)1 + zr[j] * ((real)1 - s));
                    real g = xr[j] * silu;
                    dot += gyr[j] * w[j] * g;
                    gw[j] += gyr[j] * g * rs;
                }
                const real c = rs * rs * dot / (real)e;
                real *gzr = gz + r * sgz;
#pragma omp simd
                for (int64_t j = 0; j < e; j++) {
                    real g = xr[j] * gate[j];
                    real dg = rs * (gyr[j] * w[j] - g * c);
                    gxr[j] = dg * gate[j];
                    gzr[j] = dg * xr[j] * gate[e + j];
                }
            } else {
#pragma omp simd reduction(+ : dot)
                for (int64_t j = 0; j < e; j++) {
                    dot += gyr[j] * w[j] * xr[j];
                    gw[j] += gyr[j] * xr[j] * rs;
                }
                const real c = rs * rs * dot / (real)e;
#pragma omp simd
                for (int64_t j = 0; j < e; j++) gxr[j] = rs * (gyr[j] * w[j] - xr[j] * c);
            }
        }
        free(gate);
    }
    return failed ? -1 : 0;
}
