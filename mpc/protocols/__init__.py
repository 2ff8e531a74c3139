"""Protocols on replicated shares, each vectorised over whole columns.

Modules, in dependency order:

- ``arith``    local linear operations, multiplication, dot product, truncation, opening
- ``boolean``  XOR sharing of 64-bit words, AND in one round, bit-sliced packing
- ``bits``     A2B, MSB, bit injection, B2A, exact truncation, sums of shared bits
- ``shift``    exact right shift floor(x / 2^d) by bit decomposition (A2B, shift, injection),
               one shift or one per element
- ``linalg``   small fixed-point matrices: products (one round + exact truncation),
               the Newton-Schulz inverse of a symmetric positive definite matrix
- ``compare``  less-than, equality, select, min/max (arithmetic 0/1 results)
- independent of each other, above ``compare`` and ``shift``:

  - ``divide`` division by secret positive integers (normalisation by a secret power of
               two, Newton's reciprocal)
  - ``exp``    e^x of bounded fixed-point values (range reduction, an interpolant)
- ``shuffle``  oblivious 3-party shuffle of rows (three re-sharing passes)
- ``sort``     shuffle-then-sort, selection by rank, quantiles (R type 7), median
- ``scan``     segmented broadcast: each row gets its (secret) segment's first value
- ``groupby``  one-hot matrices of level codes (rotation of the local split, or zero test),
               frequency and contingency tables over declared levels
"""
