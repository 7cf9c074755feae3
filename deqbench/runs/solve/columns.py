"""The report columns of a solve run, in file order, with their meaning (units in the names).

``reports/README.md`` documents the same list, and a test keeps the two in step.
"""

from __future__ import annotations

#: Result columns, in file order, with their meaning (units are in the names).
COLUMNS: dict[str, str] = {
    "run": "index of the run in the suite's matrix",
    "suite": "suite name",
    "problem": "problem name from the suite",
    "cell": "registered cell of the problem",
    "batch_size": "samples per solve",
    "state_dim": "flat state size D per sample",
    "solver": "registered forward solver",
    "solver_options": "forward solver options (JSON)",
    "max_iter": "forward cap on evaluations of f, as the suite declares it",
    "smoke_max_iter": "smoke cap the run actually used (--limit), when below max_iter; else empty",
    "smoke": "the --limit of a smoke run, whose timings come from one unwarmed repeat (they "
    "show only that the run works); empty for a full run",
    "tol": "forward tolerance",
    "stop_mode": "abs (‖f(z)−z‖) or rel (‖f(z)−z‖/‖f(z)‖)",
    "gradient": "gradient estimator (empty for forward-only runs)",
    "gradient_options": "gradient estimator options (JSON)",
    "device": "device the run used",
    "dtype": "floating-point type",
    "status": "converged | max_iter | diverged | oom | error | timeout | interrupted",
    "error": "why the run did not converge or failed (empty when it converged)",
    "nfe": "evaluations of f by the forward solver (batched calls)",
    "nstep_median": "median over samples of iterations before each sample stopped",
    "converged_frac": "fraction of samples whose recomputed residual is within tol",
    "rel_residual_median": "median over samples of ‖f(z)−z‖/‖f(z)‖, recomputed on the returned z",
    "rel_residual_max": "max over samples of the recomputed relative residual",
    "abs_residual_max": "max over samples of the recomputed ‖f(z)−z‖",
    "solve_ms_median": "median wall time of one solve, ms, after warm-up",
    "solve_ms_iqr": "interquartile range of the solve time, ms",
    "bare_ms_median": "median wall time of a bare z = f(z) loop with the same NFE, ms",
    "bare_ms_iqr": "interquartile range of the bare loop's time, ms",
    "overhead_per_nfe": "solve time ÷ time of a bare loop with the same NFE: the median over "
    "repeats of the ratio of a solve and the bare loop timed right after it",
    "overhead_iqr": "interquartile range of those per-repeat ratios",
    "solve_cost_f_evals": "solve time in units of one bare evaluation of f timed beside it "
    "(= nfe × overhead_per_nfe): comparable across runs when the machine's speed drifts",
    "solver_mem_mb": "peak live memory of the solver's own tensors (f's excluded), MB",
    "spectral_radius_median": "median over samples of the spectral radius of ∂f/∂z at the "
    "returned z (Arnoldi, correct for complex eigenvalues)",
    "forward_ms_median": "median wall time of the DEQ forward (solve + estimator set-up), ms",
    "backward_ms_median": "median wall time of the backward to the parameters, ms",
    "backward_ms_iqr": "interquartile range of the backward time, ms",
    "step_ms_median": "median wall time of forward + backward (a training step), ms",
    "b_nfe": "evaluations (vector-Jacobian products) of the backward solve; empty if none",
    "b_status": "status of the backward solve; empty for estimators that solve none",
    "b_rel_residual_max": "max over samples of the backward solve's relative residual",
    "grad_cosine": "cosine between the estimator's parameter gradient and the exact one",
    "grad_rel_error": "‖estimate − exact‖ / ‖exact‖ over all parameter gradients",
    "saved_mb": "bytes autograd saved for the backward (parameters excluded, storage counted "
    "once), MB",
    "peak_mem_mb": "CUDA only: peak allocated memory of forward + backward above the start, MB",
    "rss_peak_mb": "CPU: the process's peak resident memory up to the end of this run, MB",
    "notes": "caveats of the measurement, e.g. a reference gradient that did not converge",
    "noisy": "figures too spread to trust: their IQR is over 10 % of their median "
    "(space-separated column names; empty when none)",
    "repeats": "timed repeats behind the medians",
    "wall_s": "wall time of the whole run, seconds",
}
