"""The report columns of a training run, of its steps (``<report>.steps.csv``) and of its
evaluation sweep (``<report>.evals.csv``), in file order, with their meaning (units in the
names).

``reports/README.md`` documents the same lists, and a test keeps them in step.
"""

from __future__ import annotations

#: Result columns of training suites (``kind = "train"``), in file order. Explicit models leave
#: the solver, gradient and ``f_*``/``b_*`` columns empty.
TRAIN_COLUMNS: dict[str, str] = {
    "run": "index of the run in the suite's expansion (matrix, then includes, × repeats)",
    "suite": "suite name",
    "kind": "train",
    "model": "registered model",
    "head": "registered head (empty: the model's own)",
    "dataset": "registered dataset",
    "image_size": "input size the dataset was asked for, pixels",
    "batch_size": "training samples per step",
    "solver": "forward solver of the DEQ (empty for explicit models)",
    "solver_options": "forward solver options (JSON)",
    "gradient": "gradient estimator (empty for explicit models)",
    "gradient_options": "gradient estimator options (JSON)",
    "f_max_iter": "forward iteration cap (empty: the model variant's own)",
    "f_tol": "forward tolerance",
    "b_max_iter": "backward iteration cap (empty: the model variant's own)",
    "model_options": "model options (JSON)",
    "weights": "the weights file the run started from ([model] weights; deqbench eval); empty: "
    "the model's initialisation",
    "options": "the matrix/include keys that define this run and their values (JSON)",
    "seed": "seed of the run (suite seed + repeat)",
    "precision": "fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler)",
    "max_steps": "smoke cap on training steps (--max-steps); empty when none",
    "status": "completed | diverged | oom | error | timeout | interrupted | crashed",
    "error": "why the run failed or diverged (empty when it completed)",
    "device": "device the run used",
    "world_size": "processes (ranks) the run trained on under torch.distributed; batch_size is "
    "the global batch, batch_size / world_size per rank",
    "resumed_from_step": "the checkpointed step the run was resumed from (--resume); empty when "
    "it ran from the start",
    "params": "trainable parameters",
    "epochs_done": "passes over the training split done (fractional)",
    "steps_done": "optimizer steps done",
    "unrolled_steps": "steps done in the unrolled warm-up mode",
    "equilibrium_steps": "steps done in equilibrium mode (all steps of explicit models)",
    "train_loss_final": "training loss of the last step (Jacobian penalty included, as in loss)",
    "train_s": "wall time of the training loop, evaluations excluded, seconds",
    "images_per_s": "training images per second over the whole loop",
    "step_ms_median": "median wall time of a training step, ms, after warm-up: equilibrium "
    "steps only, without the first and the memory-metered step",
    "step_ms_iqr": "interquartile range of those step times, ms",
    "f_nfe_mean": "mean forward NFE over equilibrium-mode training steps",
    "f_rel_residual_final": "worst relative residual of the last training step's forward",
    "f_rel_residual_median_final": "median over samples of the last training step's forward "
    "relative residual (above ~0.05 the solve did not find an equilibrium)",
    "f_converged_frac": "fraction of training forwards in which every sample reached f_tol",
    "b_nfe_mean": "mean backward-solve NFE per step (empty for estimators that solve none)",
    "backward_ms_median": "median wall time of a training step's backward (the whole autograd "
    "backward: head, estimator, stem; CUDA events on a GPU), ms, over the steps of "
    "step_ms_median",
    "grad_checks": "training steps whose gradient was checked against the exact implicit "
    "gradient ([eval] grad_check, grad_check_every; implicit models in equilibrium mode)",
    "grad_cosine_median": "median over the checks of the cosine between the run's parameter "
    "gradient of the task loss and the exact implicit one (same batch, weights, dropout masks)",
    "grad_cosine_worst": "lowest of those cosines",
    "grad_rel_error_median": "median over the checks of ‖run's − exact‖ / ‖exact‖",
    "grad_rel_error_worst": "largest of those relative errors",
    "grad_check_s": "wall time of the gradient checks, seconds (excluded from train_s)",
    "saved_mb": "bytes autograd saved for the backward on one training step (the first in "
    "equilibrium mode; parameters excluded, storage counted once), MB",
    "peak_mem_mb": "CUDA only: peak allocated memory of the run, MB",
    "rss_peak_mb": "CPU: the process's peak resident memory during this run (reset at its "
    "start on Linux), MB; under torch.distributed, the largest over the ranks (as peak_mem_mb)",
    "eval_top1": "top-1 accuracy on the eval split, percent (classification)",
    "eval_top1_ci_low": "lower end of the 95 % Wilson score interval of eval_top1 over "
    "eval_count images, percent",
    "eval_top1_ci_high": "upper end of that interval, percent",
    "eval_top5": "top-5 accuracy on the eval split, percent (classification)",
    "eval_top5_ci_low": "lower end of the 95 % Wilson score interval of eval_top5, percent",
    "eval_top5_ci_high": "upper end of that interval, percent",
    "eval_miou": "mean intersection over union, percent (segmentation; ignore label skipped); "
    "no interval: a mean of per-class ratios is not a binomial proportion",
    "eval_pixel_acc": "pixel accuracy over labelled pixels, percent (segmentation); no "
    "interval: the pixels of an image are not independent trials",
    "eval_count": "images evaluated (every rank's share), the n of the intervals",
    "eval_loss": "mean task loss on the eval split",
    "eval_nfe_mean": "mean forward NFE per eval batch",
    "eval_f_rel_residual_median": "median over the evaluated samples of the forward relative "
    "residual (under torch.distributed, the largest of the ranks' medians)",
    "eval_pi_agreement_noise": "[eval] path_independence: fraction of the final evaluation's "
    "predictions (samples; pixels for segmentation) that stay the same when each solve starts "
    "from Gaussian noise of the default equilibrium's per-sample scale instead of init_state",
    "eval_pi_agreement_swap": "as eval_pi_agreement_noise, each solve starting from another "
    "input's equilibrium (the batch's default z* rolled by one sample)",
    "eval_pi_distance_noise": "median over samples of ‖z*_noise − z*‖ / ‖z*‖ between the "
    "equilibria from the noise start and the default one (under torch.distributed, the largest "
    "of the ranks' medians)",
    "eval_pi_distance_swap": "median over samples of ‖z*_swap − z*‖ / ‖z*‖, as "
    "eval_pi_distance_noise",
    "eval_s": "wall time of the run's evaluations (interim and final; not the sweep), seconds",
    "target_metric": "the eval column of the suite's target ([eval] target_top1: eval_top1, "
    "target_miou: eval_miou); empty when the suite sets none",
    "target_value": "the target, percent: reached when an evaluation's target_metric is at "
    "least this",
    "target_reached": "whether an evaluation (every [eval] every_epochs epochs, and the final "
    "one) reached the target; False: time_to_target_s and steps_to_target are empty",
    "time_to_target_s": "training wall time until the first evaluation that reached the "
    "target, on train_s's clock (evaluations and gradient checks excluded), seconds",
    "steps_to_target": "optimizer steps done at that evaluation",
    "target_eval_s": "wall time of the evaluations up to and including that one, seconds "
    "(not in time_to_target_s)",
    "reproduced": "yes | no | n/a: whether the final evaluation's reference_metric is within "
    "reference_band points of the published reference_value (|measured − published| ≤ band); "
    "no when the run failed; n/a without a [reference] figure",
    "reference_metric": "the eval column the published figure is checked on ([reference] top1: "
    "eval_top1, top5: eval_top5, miou: eval_miou); empty without one",
    "reference_value": "the published figure, percent",
    "reference_band": "the acceptance band, points either side of reference_value",
    "reference_source": "where the figure is published ([reference] source)",
    "wall_s": "wall time of the whole run (build, train, evaluate), seconds; of this attempt "
    "alone when it was resumed (train_s covers every attempt)",
}


#: Training-step columns (``<name>.steps.csv``): one row per training step of each run.
STEP_COLUMNS: dict[str, str] = {
    "run": "index of the run (joins the result CSV)",
    "step": "optimizer step, from 0",
    "epoch": "passes over the training split completed before this step",
    "mode": "unrolled | equilibrium",
    "loss": "training loss of the step (with the weighted Jacobian penalty when the suite sets "
    "[deq] jac_reg_weight)",
    "lr": "learning rate of the step",
    "f_nfe": "forward NFE of the step (empty in unrolled mode and for explicit models)",
    "f_rel_residual": "worst relative residual of the step's forward",
    "f_rel_residual_median": "median over samples of the relative residual of the step's forward",
    "b_nfe": "backward-solve NFE of the step (empty when none)",
    "backward_ms": "wall time of the step's backward (the whole autograd backward), ms",
    "images_per_s": "images per second of this step",
    "grad_cosine": "checked steps only: cosine between the step's parameter gradient of the "
    "task loss and the exact implicit gradient on the same batch (deqbench.runs.train.grad_check)",
    "grad_rel_error": "checked steps only: ‖step's − exact‖ / ‖exact‖",
    "grad_exact_f_residual": "checked steps only: worst relative residual of the exact "
    "gradient's forward solve (Anderson, tol 1e-6)",
    "grad_exact_b_residual": "checked steps only: worst relative residual of the exact "
    "gradient's backward solve (GMRES, tol 1e-7)",
}


#: Evaluation-sweep columns (``<name>.evals.csv``): one row per ``[eval] sweep`` setting of each
#: completed run of an implicit model, evaluated after its final evaluation.
EVAL_COLUMNS: dict[str, str] = {
    "run": "index of the run (joins the result CSV)",
    "setting": "the swept values of this row (JSON), applied over the [eval] solver settings",
    "f_max_iter": "forward iteration cap of this evaluation",
    "f_tol": "forward tolerance of this evaluation",
    "eval_top1": "top-1 accuracy on the eval split at this setting, percent (classification)",
    "eval_top1_ci_low": "lower end of the 95 % Wilson score interval of eval_top1, percent",
    "eval_top1_ci_high": "upper end of that interval, percent",
    "eval_top5": "top-5 accuracy at this setting, percent (classification)",
    "eval_miou": "mean intersection over union at this setting, percent (segmentation)",
    "eval_pixel_acc": "pixel accuracy at this setting, percent (segmentation)",
    "eval_loss": "mean task loss on the eval split at this setting",
    "eval_count": "images evaluated (every rank's share)",
    "eval_nfe_mean": "mean forward NFE per eval batch at this setting",
    "eval_f_rel_residual_median": "median over the evaluated samples of the forward relative "
    "residual at this setting (under torch.distributed, the largest of the ranks' medians)",
    "eval_s": "wall time of this evaluation, seconds (not in the row's train_s)",
}
