/* tanh as a rational function: Eigen's float tanh, [13/6] (odd numerator of degree 13, even
   denominator of degree 6), for the two compiled kernels: the predictor's
   (invdyn_ros/core/_fastpath.pyx, double) and the training kernel's (_lstm_kernel.pyx, float).
   Each kernel clamps x first (its own bound and NaN handling) and then takes this ratio. The
   coefficients are cast to the function's type at compile time, so the float one computes in
   float throughout (and vectorises at float width). */
#ifndef INVDYN_RATIONAL_TANH_H
#define INVDYN_RATIONAL_TANH_H

#define INVDYN_DEFINE_TANH_RATIO(NAME, T)                                                   \
    static inline T NAME(T x) {                                                             \
        const T x2 = x * x;                                                                 \
        const T p = x * ((T)4.89352455891786e-03 + x2 * ((T)6.37261928875436e-04            \
            + x2 * ((T)1.48572235717979e-05 + x2 * ((T)5.12229709037114e-08                 \
            + x2 * ((T)-8.60467152213735e-11 + x2 * ((T)2.00018790482477e-13                \
            + x2 * (T)-2.76076847742355e-16))))));                                          \
        return p / ((T)4.89352518554385e-03 + x2 * ((T)2.26843463243900e-03                 \
            + x2 * ((T)1.18534705686654e-04 + x2 * (T)1.19825839466702e-06)));              \
    }

INVDYN_DEFINE_TANH_RATIO(invdyn_tanh_ratio_d, double)
INVDYN_DEFINE_TANH_RATIO(invdyn_tanh_ratio_f, float)

#endif
