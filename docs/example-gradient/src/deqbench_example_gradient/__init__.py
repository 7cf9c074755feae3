"""Entry module of the example gradient plugin: registers by "module:attr" string (no torch)."""

from deqbench import hookimpl


@hookimpl
def register_gradients(register):
    register(
        "damped-ift",
        "deqbench_example_gradient.estimator:DampedIFT",
        description="implicit gradient of the damped backward g = tau·Jᵀg + v",
    )
