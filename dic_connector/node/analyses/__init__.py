"""The analyses catalogue: named, versioned MPC programs with disclosure control (DESIGN.md §5).

Each analysis runs on the three nodes' replicated shares (Araki et al. CCS 2016; ABY3) through
the protocols of :mod:`mpc.protocols`, checks every count against the deployment's
``min_cell_count`` under MPC and opens only what its ``discloses`` text states.

Modules, in dependency order:

- ``manifest``    ColumnInfo (a manifest entry), parse_manifest, the matrix columns of a
                  typed column (its ``__present`` flag, its one-hot levels)
- ``ledger``      sums over contributors that releases together make derivable (exact
                  rational span), with shares from the node's release ledger
- ``lineage``     version differencing: releases of a column on two versions of one
                  dataset that differ in 1..m-1 rows (as the connector declared) are refused
- ``ptable``      cell-key perturbation tables for counts: parameters D, V, js, the
                  maximum-entropy rows, the plaintext lookup
- ``disclosure``  the one way to open: gates checked under MPC (per-contributor query-set
                  size, thresholds, complements, ranges), gated openings, the transcript;
                  the rules (k, m, max_levels, ledger, perturbation) and the strictest of two
- ``perturbation`` cell-key perturbation under MPC (a deployment setting or an owner's
                  policy, off by default):
                  record keys from the nodes' pairwise secrets, cell keys, the oblivious
                  noise lookup, opening c + v; sums (magnitude tables) as S + v x_max / 16
- ``filters``     the ``"filter"`` parameter: a JSON AST predicate over typed columns,
                  validated against the manifest, computed as a 0/1 share per row
- ``base``        Inputs (pooled share vectors), Analysis (the template validate -> levels
                  (max_levels) -> gate -> compute -> open; the query set: present AND filter)
- ``groups``      groups of a request (``by``, ``groups``), each gated as a query set;
                  the overlap check of two filters
- ``count``       count v1: rows, or rows where a column is present
- ``mean``        mean v1: n, exact sum and mean of a numeric/date column (overflow-checked;
                  perturbed n and sum under cell-key perturbation)
- ``frequency``   frequency v1: counts per level of a categorical, each cell checked,
                  secondary suppression of what a total would reveal
- ``histogram``   histogram v1: counts of a numeric/date column over breaks (numpy's
                  bins), below/above cells, n opened, secondary suppression against it
- ``median``      median v1: R type 7 median by shuffle-then-quickselect
- ``summary``     summary v1: n, mean, sample variance and sd (sum of squares, one
                  multiplication and one dot product; perturbed like mean's, and the squares)
- ``quantiles``   quantiles v1: exact R type 7 quantiles at given probabilities; minima,
                  maxima and what they fix only on request with the owners' explicit consent
- ``time_to_event`` what survival and logrank share: time and event, the query set
                  with its groups, the sort by time, events first
- ``survival``    survival v1: Kaplan-Meier S(t) at given times and the median survival
                  per group (per-row log factors with public denominators)
- ``km_band``     the median's confidence interval under MPC: first crossing of 1/2 by each
                  exponential Greenwood band (a fixed-point logarithm, exact truncation)
- ``survival_ci`` survival v2: v1 with Greenwood intervals of S(t), numbers at risk (gated
                  0 or >= k) and the median's confidence interval
- ``logrank``     logrank v1: O - E and V between two groups under MPC (ties by a
                  segmented broadcast), chi2 and p in plaintext
- ``twoway``      two-way tables under MPC: variables (columns, filter-derived binaries),
                  cell counts, line-wise secondary suppression
- ``contingency`` contingency v1: a two-way r x c table of categorical, boolean or
                  filter-derived binary variables, each cell checked, secondary
                  suppression along rows and columns
- ``fisher``      fisher v1 (2 x 2, exact) and chi_square v1 (r x c): tests on a
                  contingency table opened only when every cell may open
- ``ttest``       t_test v1: Welch's two-sample t-test between two groups (per group n,
                  sum and sum of squares opened, as two summaries; t, df, p in plaintext)
- ``correlation`` correlation v1: Pearson's r (or Spearman's rho: mid-ranks by two sorts)
                  of two columns (only n and the centred co-moment and variances C, A, B
                  opened; r, t, p in plaintext)
- ``regression``  linear_regression v1: OLS solved under MPC (centred co-moments scaled
                  to correlations by public constants, Newton-Schulz inverse, one step
                  of iterative refinement); boolean and categorical covariates' rows
                  gated as count v2; opens n, the variances, a convergence bit, the
                  coefficients, their SE^2 and sigma^2, not X'X, X'y or the means
- ``logistic``    logistic_regression v1: IRLS under MPC on standardised covariates (a
                  piecewise-linear sigmoid, Newton-Schulz inverses, clamped
                  coefficients); opens the coefficients and their SE^2 and three check
                  bits, not X'WX or X'y
- ``cox``         cox_regression v1: Cox proportional hazards (Breslow ties) on a public
                  time grid by Newton-Raphson under MPC (risk-set sums, secret divisions,
                  a bounded exponential, the information scaled by its trace); opens the
                  coefficients, their SE^2 and four check bits, not the risk sets
- ``prevalence``  prevalence v1: a case definition (boolean or filter) over a population,
                  per cell of up to three categorical/boolean columns (packed weighted
                  group-by on level codes); d, x and d - x checked, secondary suppression
                  along every line; Wilson intervals in plaintext
- ``catalog``     catalog() and get_analysis(name, version)
"""
