"""Polynomial coefficients of the non-linear approximations (monomial basis, ascending).

Each set is a minimax fit (linear program over 4000 Chebyshev-distributed points, in a
Chebyshev basis for conditioning, then converted to monomials) of the stated function, in the
stated variable and interval; the error is the fit's own maximum error, before fixed-point
effects. The fits are reproduced by ``docs/precision.md`` (section "Fits").
"""

# (sigmoid(8t) - 1/2) / t = q(w), w = 2t^2 - 1, |t| <= 1; odd degree 19; minimax abs error 1.99e-04
SIGMOID_W = (
    0.7024650767136488,
    -0.33721075537162426,
    0.2193416192056093,
    -0.1676445535186158,
    0.23963707936039164,
    -0.15574281268234416,
    -0.19792779605732524,
    0.10458204190611584,
    0.2839570232444309,
    -0.1916563266990345,
)

# exp(y), y in [-1, 0.7]; degree 6; minimax relative error 9.48e-07
EXP = (
    1.0000009488512738,
    0.9999979687906382,
    0.4999665464744916,
    0.16666525885298594,
    0.04184137496826068,
    0.008435515543850207,
    0.001169662632417166,
)

# 1/m, m = 2.5 + v in [1, 4]; degree 6; minimax relative error 9.14e-04
RECIP = (
    0.4000000013329968,
    -0.161707046224607,
    0.06468280601195034,
    -0.01980359502873659,
    0.007921442475339463,
    -0.008563719342045988,
    0.0034254881006307515,
)

# 1/sqrt(m), m = 2.5 + v in [1, 4]; degree 9; minimax relative error 6.25e-06
INV_SQRT = (
    0.6324593201212841,
    -0.12649937651645193,
    0.037866292478790475,
    -0.012577575797548077,
    0.004699186967014637,
    -0.0017629450389194945,
    0.0002766880868454474,
    -6.0541153362674646e-05,
    0.00021052587639898892,
    -8.787700956079836e-05,
)

# log(m), m = 2.5 + v in [1, 4]; degree 9; minimax absolute error 3.72e-06
LOG = (
    0.9162876378675247,
    0.40001355867306426,
    -0.07993371303231701,
    0.021235181591436336,
    -0.006623325560413014,
    0.0022484141814953285,
    -0.000428285251315367,
    7.035539481758093e-05,
    -0.00019028747744863857,
    8.277428564037926e-05,
)
