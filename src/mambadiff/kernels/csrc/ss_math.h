/* Shared by the CPU library sources (selective_scan.c, causal_conv1d.c, runtime.c): the element type,
 * symbol naming and vectorisable exp / log1p. Each kernel file is compiled twice by kernels/build.py:
 *   -DSS_DOUBLE=0 (float32, functions *_f32)   and   -DSS_DOUBLE=1 (float64, functions *_f64)
 */
#ifndef SS_MATH_H
#define SS_MATH_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef SS_DOUBLE
#define SS_DOUBLE 0
#endif

#if SS_DOUBLE
typedef double real;
#define SS_FN(name) name##_f64
#else
typedef float real;
#define SS_FN(name) name##_f32
#endif

/* Scratch for a kernel task, 64-byte aligned (free with free()): the vector loops read and write
 * whole cache lines, and malloc's 16-byte alignment would make every 64-byte access of a scratch
 * row straddle two lines. */
static inline void *ss_alloc(size_t bytes) {
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

#define SS_LN2 ((real)0.69314718055994530942)
/* torch.nn.functional.softplus(beta=1, threshold=20): above it softplus(x) = x, derivative 1. */
#define SS_SOFTPLUS_THRESHOLD ((real)20)

/* exp(x), vectorisable. Round-to-nearest k = x / ln2 with the 1.5 * 2^mant trick (the same add also
 * leaves k in the low mantissa bits, used to build 2^k), Cody-Waite reduction r = x - k ln2 with a
 * two-part ln2, Taylor polynomial on |r| <= ln2 / 2. The argument is clamped so 2^k stays a normal
 * number: results below ~1e-38 (float) / ~1e-307 (double) are returned as that tiny value instead of
 * flushing to 0 (harmless for decays, and no denormal slow paths); overflow saturates. */
static inline real ss_exp(real x) {
#if SS_DOUBLE
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    x = x > -708.0 ? x : -708.0; /* maxpd: keeps 2^k normal; exp(-708) ~ 3e-308 stands in for 0 */
    x = x < 709.0 ? x : 709.0;   /* minpd */
    double m = x * 1.4426950408889634074 + magic;
    double kf = m - magic;
    double r = x - kf * 0.693147180369123816490;
    r = r - kf * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t bits;
    memcpy(&bits, &m, sizeof bits);
    int64_t e = (int64_t)((uint64_t)(bits + 1023) << 52);
    double s;
    memcpy(&s, &e, sizeof s);
    return p * s;
#else
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    x = x > -87.0f ? x : -87.0f; /* maxps: keeps 2^k normal; exp(-87) ~ 1.6e-38 stands in for 0 */
    x = x < 88.0f ? x : 88.0f;   /* minps */
    float m = x * 1.44269504088896340736f + magic;
    float kf = m - magic;
    float r = x - kf * 0.693145751953125f;
    r = r - kf * 1.428606765330187045e-06f;
    float p = (float)(1.0 / 5040.0);
    p = p * r + (float)(1.0 / 720.0);
    p = p * r + (float)(1.0 / 120.0);
    p = p * r + (float)(1.0 / 24.0);
    p = p * r + (float)(1.0 / 6.0);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    memcpy(&bits, &m, sizeof bits);
    int32_t e = (int32_t)((uint32_t)(bits + 127) << 23);
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
#endif
}

/* log(1 + e) for e in [0, 1], vectorisable: log(1 + e) = 2 atanh(s) with s = e / (2 + e), or
 * ln2 + 2 atanh((e - 1) / (e + 3)) for e > sqrt(2) - 1, so |s| <= 0.1716; odd series in s. */
static inline real ss_log1p_unit(real e) {
    int big = e > (real)0.41421356237309504880;
    real s = (big ? e - (real)1 : e) / (big ? e + (real)3 : e + (real)2); /* one division */
    real s2 = s * s;
#if SS_DOUBLE
    real p = 1.0 / 23;
    p = p * s2 + 1.0 / 21;
    p = p * s2 + 1.0 / 19;
    p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
#else
    real p = (real)(1.0 / 11);
#endif
    p = p * s2 + (real)(1.0 / 9);
    p = p * s2 + (real)(1.0 / 7);
    p = p * s2 + (real)(1.0 / 5);
    p = p * s2 + (real)(1.0 / 3);
    p = p * s2 + (real)1;
    return (big ? SS_LN2 : (real)0) + (real)2 * s * p;
}

/* The scan's decay exp(dt A) as 2^(dt A2) with A2 = A log2(e) folded into the per-block copy of A
 * (SS_DECAY_SCALE), so one multiply gives the base-2 exponent directly and the range reduction
 * r = x - round(x) is exact. 2^r on |r| <= 1/2 is a degree-5 minimax polynomial (relative error
 * 8e-8, about 2e-7 evaluated in float32): three operations fewer per state update than ss_exp,
 * which matters because this is the innermost operation of the scan. float64 keeps ss_exp. */
#if SS_DOUBLE
#define SS_DECAY_SCALE ((real)1)
static inline real ss_decay(real x) { return ss_exp(x); }
#else
#define SS_DECAY_SCALE ((real)1.44269504088896340736) /* log2(e) */
static inline real ss_decay(real x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    x = x > -126.0f ? x : -126.0f; /* keeps 2^k normal: 2^-126 ~ 1e-38 stands in for 0 */
    x = x < 127.0f ? x : 127.0f;
    float m = x + magic; /* k = round(x) in the low mantissa bits */
    float r = x - (m - magic); /* exact */
    float p = 1.32809e-3f;
    p = p * r + 9.67706e-3f;
    p = p * r + 5.550712e-2f;
    p = p * r + 0.24022087f;
    p = p * r + 0.69314696f;
    p = p * r + 1.00000008f;
    int32_t bits;
    memcpy(&bits, &m, sizeof bits);
    int32_t e = (int32_t)((uint32_t)(bits + 127) << 23);
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}
#endif

#endif /* SS_MATH_H */
