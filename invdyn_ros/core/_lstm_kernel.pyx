# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""One LSTM layer's recurrence for training, forward and backward, in C (built from this file
by setup.py with Cython; BLAS from scipy).

See :mod:`invdyn_ros.core.fused_lstm` for what it computes, the buffer layouts and why; that
module is the only user of this one. All buffers are float32, C-contiguous, time-major.
"""

from scipy.linalg.cython_blas cimport sgemm

cdef extern from "_rational_tanh.h":
    pass

cdef extern from *:
    """
    /* tanh as a rational function (_rational_tanh.h in float, on [-7.9053, 7.9053] as Eigen's
       float tanh, saturated beyond; a few ulp from libm's); sigmoid(x) = (1 + tanh(x / 2)) / 2.
       The clamps are written as selects, so NaN passes through and the loops vectorise
       (-fno-trapping-math). */
    static inline float kt_tanh(float x) {
        const float m = 7.90531110763549805f;
        x = x > m ? m : x;      /* false for NaN: NaN stays */
        x = x < -m ? -m : x;
        return invdyn_tanh_ratio_f(x);
    }
    static inline float kt_sigmoid(float x) { return 0.5f + 0.5f * kt_tanh(0.5f * x); }

    /* One time step forward for nb sequences: g (nb, 4H) holds the gate pre-activations
       (i, f, g, o, torch's order) and receives their activations; c0 the previous cell, c1, h1
       the new cell and output, tc tanh(c1) (kept for the backward pass). On x86-64 with GCC 11
       or later (which knows x86-64-v3) it is compiled twice, for the baseline and for AVX2 +
       FMA, and the loader picks what the CPU has. */
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
    __attribute__((target_clones("arch=x86-64-v3", "default")))
    #endif
    static void kt_cell_forward(int nb, int nh, float *g, const float *c0, float *c1,
                                float *h1, float *tc) {
        for (int b = 0; b < nb; ++b) {
            float *gi = g + (long)b * 4 * nh, *gf = gi + nh, *gg = gf + nh, *go = gg + nh;
            const float *cp = c0 + (long)b * nh;
            float *cn = c1 + (long)b * nh, *hn = h1 + (long)b * nh, *tn = tc + (long)b * nh;
            #pragma omp simd
            for (int j = 0; j < nh; ++j) {
                const float i = kt_sigmoid(gi[j]), f = kt_sigmoid(gf[j]);
                const float u = kt_tanh(gg[j]), o = kt_sigmoid(go[j]);
                const float c = f * cp[j] + i * u;
                const float t = kt_tanh(c);
                gi[j] = i; gf[j] = f; gg[j] = u; go[j] = o;
                cn[j] = c; tn[j] = t; hn[j] = o * t;
            }
        }
    }

    /* One time step backward: from the activations a (nb, 4H), the previous cell c0, tanh of
       the cell tc, the output's gradient dy and the carried dh, dc (nb, H) to the gate
       pre-activations' gradient dg (nb, 4H); dc becomes the previous cell's gradient (dh is
       left for the caller's dg W_hh). */
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
    __attribute__((target_clones("arch=x86-64-v3", "default")))
    #endif
    static void kt_cell_backward(int nb, int nh, const float *a, const float *c0,
                                 const float *tc, const float *dy, const float *dh, float *dc,
                                 float *dg) {
        for (int b = 0; b < nb; ++b) {
            const float *ai = a + (long)b * 4 * nh, *af = ai + nh, *ag = af + nh, *ao = ag + nh;
            float *di = dg + (long)b * 4 * nh, *df = di + nh, *du = df + nh, *dout = du + nh;
            const float *cp = c0 + (long)b * nh, *t = tc + (long)b * nh, *y = dy + (long)b * nh;
            const float *h = dh + (long)b * nh;
            float *c = dc + (long)b * nh;
            #pragma omp simd
            for (int j = 0; j < nh; ++j) {
                const float i = ai[j], f = af[j], u = ag[j], o = ao[j], th = t[j];
                const float dhj = y[j] + h[j];
                const float dcj = c[j] + dhj * o * (1.0f - th * th);
                di[j] = dcj * u * i * (1.0f - i);
                df[j] = dcj * cp[j] * f * (1.0f - f);
                du[j] = dcj * i * (1.0f - u * u);
                dout[j] = dhj * th * o * (1.0f - o);
                c[j] = dcj * f;
            }
        }
    }
    """
    float kt_tanh(float x) noexcept nogil
    void kt_cell_forward(int nb, int nh, float *g, const float *c0, float *c1, float *h1,
                         float *tc) noexcept nogil
    void kt_cell_backward(int nb, int nh, const float *a, const float *c0, const float *tc,
                          const float *dy, const float *dh, float *dc,
                          float *dg) noexcept nogil


def tanh_fast(float x):
    """The kernel's tanh, for tests."""
    return kt_tanh(x)


def forward(float[:, :, ::1] g, const float[:, ::1] w_hh_t, float[:, :, ::1] h,
            float[:, :, ::1] c, float[:, :, ::1] tc):
    """The recurrence over T steps of B sequences (H hidden units, G = 4H).

    Args:
        g: (T, B, G) the input's share of the gate pre-activations (W_ih x + biases); receives
            the activations (i, f, g, o).
        w_hh_t: (H, G) the recurrent weights, transposed.
        h, c: (T + 1, B, H): h[0], c[0] the initial state; receive the outputs and cells.
        tc: (T, B, H) receives tanh(c[1:]).
    """
    cdef int T = g.shape[0], B = g.shape[1], G = g.shape[2], H = w_hh_t.shape[0]
    if (G != 4 * H or w_hh_t.shape[1] != G or h.shape[0] != T + 1 or c.shape[0] != T + 1
            or tc.shape[0] != T or h.shape[1] != B or c.shape[1] != B or tc.shape[1] != B
            or h.shape[2] != H or c.shape[2] != H or tc.shape[2] != H):
        raise ValueError('LSTM kernel forward: buffer shapes do not match')
    cdef float one = 1.0
    cdef char nt = b'N'
    cdef int t
    with nogil:
        for t in range(T):
            # Row-major g[t] (B, G) += h[t] (B, H) @ w_hh_t (H, G), as column-major BLAS sees it.
            sgemm(&nt, &nt, &G, &B, &H, &one, <float *>&w_hh_t[0, 0], &G, &h[t, 0, 0], &H, &one,
                  &g[t, 0, 0], &G)
            kt_cell_forward(B, H, &g[t, 0, 0], &c[t, 0, 0], &c[t + 1, 0, 0], &h[t + 1, 0, 0],
                            &tc[t, 0, 0])


def backward(const float[:, :, ::1] dy, const float[:, :, ::1] a, const float[:, ::1] w_hh,
             const float[:, :, ::1] c, const float[:, :, ::1] tc, float[:, :, ::1] dg,
             float[:, ::1] dh, float[:, ::1] dc):
    """Back-propagation through the T steps of :func:`forward`.

    Args:
        dy: (T, B, H) the loss's gradient with respect to the outputs h[1:].
        a: (T, B, G) the activations :func:`forward` left in g.
        w_hh: (G, H) the recurrent weights.
        c, tc: (T + 1, B, H) and (T, B, H) from :func:`forward`.
        dg: (T, B, G) receives the gradient with respect to the gate pre-activations.
        dh, dc: (B, H) the gradient with respect to the final state; receive that with
            respect to the initial state.
    """
    cdef int T = a.shape[0], B = a.shape[1], G = a.shape[2], H = w_hh.shape[1]
    if (G != 4 * H or w_hh.shape[0] != G or dy.shape[0] != T or c.shape[0] != T + 1
            or tc.shape[0] != T or dg.shape[0] != T or dg.shape[1] != B or dg.shape[2] != G
            or dy.shape[1] != B or c.shape[1] != B or tc.shape[1] != B or dy.shape[2] != H
            or c.shape[2] != H or tc.shape[2] != H or dh.shape[0] != B or dh.shape[1] != H
            or dc.shape[0] != B or dc.shape[1] != H):
        raise ValueError('LSTM kernel backward: buffer shapes do not match')
    cdef float one = 1.0, zero = 0.0
    cdef char nt = b'N'
    cdef int t
    with nogil:
        for t in range(T - 1, -1, -1):
            kt_cell_backward(B, H, &a[t, 0, 0], &c[t, 0, 0], &tc[t, 0, 0], &dy[t, 0, 0],
                             &dh[0, 0], &dc[0, 0], &dg[t, 0, 0])
            # Row-major dh (B, H) = dg[t] (B, G) @ w_hh (G, H).
            sgemm(&nt, &nt, &H, &B, &G, &one, <float *>&w_hh[0, 0], &H, &dg[t, 0, 0], &G, &zero,
                  &dh[0, 0], &H)
