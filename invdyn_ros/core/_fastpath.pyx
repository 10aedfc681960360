# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The predictor's per-sample kernel in C (built from this file by setup.py with Cython).

See :mod:`invdyn_ros.core.compiled` for what it computes, the buffer layouts and why; that
module is the only user of this one.
"""

from libc.math cimport isfinite, fabs

# Status codes (the same numbers as invdyn_ros.core.compiled) and buffer slots.
cdef enum:
    OK = 0
    OK_RESET = 1
    DUPLICATE = 2
    OUT_OF_RANGE = 3
    NON_FINITE_INPUT = 4
    NON_FINITE_OUTPUT = 5
    CLAMPED = 256
    C_R_Q = 0
    C_R_QD = 1
    C_JERK = 2
    C_MAX_GAP = 3
    C_USE_QD = 4
    C_INIT_VAR = 5
    C_HAS_LIMITS = 6
    C_LIMITS = 7            # limits (d), then their reciprocals (d)
    S_T = 0
    S_STARTED = 1
    S_P = 2
    S_X = 8

cdef extern from "_rational_tanh.h":
    pass

cdef extern from *:
    """
    /* tanh as a rational function (_rational_tanh.h, on [-9, 9], saturated beyond): see
       invdyn_ros.core.compiled.TANH_MAX_ERROR. Comparisons are false for NaN, so NaN passes
       through. */
    static inline double invdyn_tanh(double x) {
        if (x > 9.0) x = 9.0;
        else if (x < -9.0) x = -9.0;
        return invdyn_tanh_ratio_d(x);
    }
    /* One LSTM layer's gates: g = tanh(W [inp; h; 1]), W row-major (rows, n_in + nh + 1).
       On x86-64 with GCC or Clang it is compiled twice, for the baseline and for AVX2 + FMA
       (x86-64-v3), and the loader picks what the CPU has (function multiversioning). */
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __attribute__((target_clones("arch=x86-64-v3", "default")))
    #endif
    static void invdyn_gates(const double *w, int rows, int n_in, int nh, const double *inp,
                             const double *h, double *g) {
        const int cols = n_in + nh + 1;
        for (int r = 0; r < rows; ++r) {
            const double *row = w + (long)r * cols;
            double acc = row[cols - 1];
            /* Only these two sums may be reordered (vectorised, -fopenmp-simd): everything
               else, the filter above all, keeps the numpy path's order of operations. */
            #pragma omp simd reduction(+:acc)
            for (int j = 0; j < n_in; ++j) acc += row[j] * inp[j];
            row += n_in;
            #pragma omp simd reduction(+:acc)
            for (int j = 0; j < nh; ++j) acc += row[j] * h[j];
            g[r] = invdyn_tanh(acc);
        }
    }
    """
    double invdyn_tanh(double x) noexcept nogil
    void invdyn_gates(const double *w, int rows, int n_in, int nh, const double *inp,
                      const double *h, double *g) noexcept nogil


cdef inline double _tanh(double x) noexcept nogil:
    return invdyn_tanh(x)


def tanh_fast(double x):
    """The kernel's tanh, for tests."""
    return _tanh(x)


cdef class Kernel:
    """Buffers and the compiled per-sample step of one OnlinePredictor (see compiled.py)."""

    cdef double[::1] model
    cdef double[::1] bounds
    cdef double[::1] consts
    cdef double[::1] state
    cdef int layers, hidden, dof
    cdef Py_ssize_t o_h, o_c, o_g, o_x, o_tau

    def __init__(self, double[::1] model, double[::1] bounds, double[::1] consts,
                 double[::1] state, int layers, int hidden, int dof):
        if dof < 1:
            raise ValueError(f'dof must be >= 1, got {dof}')
        needed = C_LIMITS + (2 * dof if consts.shape[0] > C_HAS_LIMITS and
                             consts[C_HAS_LIMITS] != 0.0 else 0)
        if consts.shape[0] < needed:
            raise ValueError(f'consts has {consts.shape[0]} values, needs {needed}')
        self.dof = dof
        self.consts = consts
        self.set_model(model, bounds, state, layers, hidden)

    def set_model(self, double[::1] model, double[::1] bounds, double[::1] state, int layers,
                  int hidden):
        """Use these weights, input bounds and state buffer from the next step on. Every size
        is checked before anything is replaced: the kernel indexes without bounds checks."""
        cdef Py_ssize_t d = self.dof, n_in = 3 * self.dof, size = 0
        if layers < 1 or hidden < 1:
            raise ValueError(f'layers and hidden must be >= 1, got {layers}, {hidden}')
        for _ in range(layers):
            size += 4 * hidden * (n_in + hidden + 1)
            n_in = hidden
        size += d * hidden + d
        if model.shape[0] != size:
            raise ValueError(f'model buffer has {model.shape[0]} values, a {layers} x {hidden} '
                             f'LSTM on {d} joints needs {size}')
        if bounds.shape[0] != 4 * d:
            raise ValueError(f'bounds has {bounds.shape[0]} values, needs {4 * d}')
        # The state layout (compiled.state_layout): filter, h, c, gates, x, tau.
        cdef Py_ssize_t o_h = S_X + 3 * d
        cdef Py_ssize_t o_c = o_h + layers * hidden
        cdef Py_ssize_t o_g = o_c + layers * hidden
        cdef Py_ssize_t o_x = o_g + 4 * hidden
        cdef Py_ssize_t o_tau = o_x + 3 * d
        if state.shape[0] < o_tau + d:
            raise ValueError(f'state buffer has {state.shape[0]} values, needs {o_tau + d}')
        self.model = model
        self.bounds = bounds
        self.state = state
        self.layers = layers
        self.hidden = hidden
        self.o_h, self.o_c, self.o_g, self.o_x, self.o_tau = o_h, o_c, o_g, o_x, o_tau

    cdef void _accel_start(self, double t, const double[::1] q, const double[::1] qd,
                           bint has_qd) noexcept nogil:
        cdef double[::1] s = self.state
        cdef double init_var = self.consts[C_INIT_VAR]
        cdef int d = self.dof
        cdef int j
        s[S_T] = t
        s[S_STARTED] = 1.0
        for j in range(d):
            s[S_X + j] = q[j]
            s[S_X + d + j] = qd[j] if has_qd else 0.0
            s[S_X + 2 * d + j] = 0.0
        s[S_P] = self.consts[C_R_Q]
        s[S_P + 1] = 0.0
        s[S_P + 2] = 0.0
        s[S_P + 3] = self.consts[C_R_QD] if has_qd else init_var
        s[S_P + 4] = 0.0
        s[S_P + 5] = init_var

    cdef int _accel_update(self, double t, const double[::1] q, const double[::1] qd,
                           bint has_qd) noexcept nogil:
        # AccelEstimator.update: the same arithmetic in the same order.
        cdef double[::1] s = self.state
        cdef int d = self.dof
        cdef int j
        cdef double dt, p00, p01, p02, p11, p12, p22, r_q, r_qd, sj, h, d2, d3
        cdef double a0, a1, a2, b1, b2, m00, m01, m02, m11, m12, m22
        cdef double inv, k0, k1, k2, s00, s01, s11, i00, i01, i11
        cdef double k00, k01, k10, k11, k20, k21, x0, x1, x2, z0, z1
        cdef double g00, g01, g02, g03, g04, g10, g11, g12, g13, g14
        cdef double g20, g21, g22, g23, g24
        if s[S_STARTED] == 0.0:
            self._accel_start(t, q, qd, has_qd)
            return OK_RESET
        dt = t - s[S_T]
        if dt == 0.0:
            return DUPLICATE
        if dt < 0.0 or dt > self.consts[C_MAX_GAP]:
            self._accel_start(t, q, qd, has_qd)
            return OK_RESET
        s[S_T] = t
        p00 = s[S_P]
        p01 = s[S_P + 1]
        p02 = s[S_P + 2]
        p11 = s[S_P + 3]
        p12 = s[S_P + 4]
        p22 = s[S_P + 5]
        r_q = self.consts[C_R_Q]
        r_qd = self.consts[C_R_QD]
        sj = self.consts[C_JERK]
        h = 0.5 * dt * dt
        d2 = dt * dt
        d3 = dt * dt * dt
        a0 = p00 + dt * p01 + h * p02
        a1 = p01 + dt * p11 + h * p12
        a2 = p02 + dt * p12 + h * p22
        b1 = p11 + dt * p12
        b2 = p12 + dt * p22
        m00 = a0 + dt * a1 + h * a2 + sj * d3 * d2 / 20.0
        m01 = a1 + dt * a2 + sj * d2 * d2 / 8.0
        m02 = a2 + sj * d3 / 6.0
        m11 = b1 + dt * b2 + sj * d3 / 3.0
        m12 = b2 + sj * d2 / 2.0
        m22 = p22 + sj * dt
        if not has_qd:
            inv = 1.0 / (m00 + r_q)
            k0 = m00 * inv
            k1 = m01 * inv
            k2 = m02 * inv
            s[S_P] = m00 - k0 * m00
            s[S_P + 1] = m01 - k0 * m01
            s[S_P + 2] = m02 - k0 * m02
            s[S_P + 3] = m11 - k1 * m01
            s[S_P + 4] = m12 - k1 * m02
            s[S_P + 5] = m22 - k2 * m02
            g00 = 1.0 - k0
            g01 = (1.0 - k0) * dt
            g02 = (1.0 - k0) * h
            g03 = k0
            g10 = -k1
            g11 = 1.0 - k1 * dt
            g12 = dt - k1 * h
            g13 = k1
            g20 = -k2
            g21 = -k2 * dt
            g22 = 1.0 - k2 * h
            g23 = k2
            for j in range(d):
                x0 = s[S_X + j]
                x1 = s[S_X + d + j]
                x2 = s[S_X + 2 * d + j]
                z0 = q[j]
                s[S_X + j] = g00 * x0 + g01 * x1 + g02 * x2 + g03 * z0
                s[S_X + d + j] = g10 * x0 + g11 * x1 + g12 * x2 + g13 * z0
                s[S_X + 2 * d + j] = g20 * x0 + g21 * x1 + g22 * x2 + g23 * z0
            return OK
        s00 = m00 + r_q
        s01 = m01
        s11 = m11 + r_qd
        inv = 1.0 / (s00 * s11 - s01 * s01)
        i00 = s11 * inv
        i01 = -s01 * inv
        i11 = s00 * inv
        k00 = m00 * i00 + m01 * i01
        k01 = m00 * i01 + m01 * i11
        k10 = m01 * i00 + m11 * i01
        k11 = m01 * i01 + m11 * i11
        k20 = m02 * i00 + m12 * i01
        k21 = m02 * i01 + m12 * i11
        s[S_P] = m00 - k00 * m00 - k01 * m01
        s[S_P + 1] = m01 - k00 * m01 - k01 * m11
        s[S_P + 2] = m02 - k00 * m02 - k01 * m12
        s[S_P + 3] = m11 - k10 * m01 - k11 * m11
        s[S_P + 4] = m12 - k10 * m02 - k11 * m12
        s[S_P + 5] = m22 - k20 * m02 - k21 * m12
        g00 = 1.0 - k00
        g01 = dt - k00 * dt - k01
        g02 = h - k00 * h - k01 * dt
        g03 = k00
        g04 = k01
        g10 = -k10
        g11 = 1.0 - k10 * dt - k11
        g12 = dt - k10 * h - k11 * dt
        g13 = k10
        g14 = k11
        g20 = -k20
        g21 = -k20 * dt - k21
        g22 = 1.0 - k20 * h - k21 * dt
        g23 = k20
        g24 = k21
        for j in range(d):
            x0 = s[S_X + j]
            x1 = s[S_X + d + j]
            x2 = s[S_X + 2 * d + j]
            z0 = q[j]
            z1 = qd[j]
            s[S_X + j] = g00 * x0 + g01 * x1 + g02 * x2 + g03 * z0 + g04 * z1
            s[S_X + d + j] = g10 * x0 + g11 * x1 + g12 * x2 + g13 * z0 + g14 * z1
            s[S_X + 2 * d + j] = g20 * x0 + g21 * x1 + g22 * x2 + g23 * z0 + g24 * z1
        return OK

    cdef void _reset_lstm(self) noexcept nogil:
        cdef Py_ssize_t k
        for k in range(self.o_h, self.o_g):
            self.state[k] = 0.0

    cpdef int finish_output(self):
        """Finiteness check and clamp of the output torque; OK (| CLAMPED), or
        NON_FINITE_OUTPUT after resetting the LSTM state and the filter. The same arithmetic
        as the numpy path: with limits, max |tau_j| / limit_j as a product with the stored
        reciprocal; without, the sum of the outputs (which overflows where numpy's does)."""
        cdef double[::1] s = self.state
        cdef double worst = 0.0, v, r, lim, total = 0.0
        cdef bint finite = True
        cdef bint has_limits = self.consts[C_HAS_LIMITS] != 0.0
        cdef int d = self.dof
        cdef int j
        for j in range(d):
            v = s[self.o_tau + j]
            if has_limits:
                r = fabs(v) * self.consts[C_LIMITS + d + j]
                if not isfinite(r):
                    finite = False
                elif r > worst:
                    worst = r
            else:
                total = total + v
        if not has_limits and not isfinite(total):
            finite = False
        if not finite:
            self._reset_lstm()
            s[S_STARTED] = 0.0
            return NON_FINITE_OUTPUT
        if worst > 1.0:
            for j in range(d):
                lim = self.consts[C_LIMITS + j]
                v = s[self.o_tau + j]
                s[self.o_tau + j] = -lim if v < -lim else (lim if v > lim else v)
            return CLAMPED
        return OK

    cpdef int step(self, double t, const double[::1] q, const double[::1] qd, bint has_qd,
                   bint finish):
        """One sample: range check, filter, LSTM and (with ``finish``) the output check.

        q [rad], qd [rad/s] (d,) (qd ignored unless ``has_qd``); returns a status code
        (| CLAMPED). The torque [Nm] is in the state's ``tau`` slice when the code is OK or
        OK_RESET.
        """
        cdef double[::1] s = self.state
        cdef double[::1] m = self.model
        cdef double[::1] b = self.bounds
        cdef int d = self.dof
        cdef int hid = self.hidden
        cdef int n_in, layer, r, j, k, rows, cols
        cdef Py_ssize_t off = 0, l_h, l_c, in_off
        cdef double v, acc, ig, fg, og, c
        cdef double* mp
        cdef double* sp
        cdef double* w
        cdef bint ok, finite, use_qd
        cdef int status, done
        if q.shape[0] != d or (has_qd and qd.shape[0] != d):
            raise ValueError(f'q and qd must have {d} values')
        # Inputs: finite and plausible, else refused before anything changes.
        use_qd = has_qd and self.consts[C_USE_QD] != 0.0
        finite = isfinite(t)
        ok = finite
        for j in range(d):
            v = q[j]
            if not isfinite(v):
                finite = False
            if not fabs(v * b[j] - b[2 * d + j]) <= 1.0:
                ok = False
            if has_qd:
                v = qd[j]
                if not isfinite(v):
                    finite = False
                if not fabs(v * b[d + j] - b[3 * d + j]) <= 1.0:
                    ok = False
        if not finite:
            return NON_FINITE_INPUT
        if not ok:
            return OUT_OF_RANGE
        status = self._accel_update(t, q, qd, use_qd)
        if status == DUPLICATE:
            return DUPLICATE
        if status == OK_RESET:
            self._reset_lstm()
        # x = [q, qd (measured, or the filter's when there is none), qdd estimate]
        for j in range(d):
            s[self.o_x + j] = q[j]
            s[self.o_x + d + j] = qd[j] if has_qd else s[S_X + d + j]
            s[self.o_x + 2 * d + j] = s[S_X + 2 * d + j]
        n_in = 3 * d
        in_off = self.o_x
        rows = 4 * hid
        mp = &m[0]
        sp = &s[0]
        for layer in range(self.layers):
            l_h = self.o_h + layer * hid
            l_c = self.o_c + layer * hid
            cols = n_in + hid + 1
            invdyn_gates(mp + off, rows, n_in, hid, sp + in_off, sp + l_h, sp + self.o_g)
            off += rows * cols
            for j in range(hid):
                ig = 0.5 * sp[self.o_g + j] + 0.5
                fg = 0.5 * sp[self.o_g + hid + j] + 0.5
                og = 0.5 * sp[self.o_g + 2 * hid + j] + 0.5
                c = fg * sp[l_c + j] + ig * sp[self.o_g + 3 * hid + j]
                sp[l_c + j] = c
                sp[l_h + j] = og * _tanh(c)
            in_off = l_h
            n_in = hid
        # Head: tau = W_out h + b_out (the output denormalisation is folded in).
        for k in range(d):
            acc = mp[off + d * hid + k]
            w = mp + off + k * hid
            for j in range(hid):
                acc = acc + w[j] * sp[in_off + j]
            sp[self.o_tau + k] = acc
        if not finish:
            return status
        done = self.finish_output()
        if done == NON_FINITE_OUTPUT:
            return NON_FINITE_OUTPUT
        return status | done
