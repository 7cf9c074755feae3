"""Entry module of the example model plugin: registers by "module:attr" string (no torch)."""

from deqbench import hookimpl


@hookimpl
def register_cells(register):
    register(
        "gated-conv",
        "deqbench_example_model.model:GatedConvCell",
        description="z' = GN(relu(conv(z) + x)), one resolution",
    )


@hookimpl
def register_models(register):
    register(
        "gated-conv-small",
        "deqbench_example_model.model:gated_conv_small",
        description="stem + gated-conv DEQ + the MDEQ classification head",
    )


@hookimpl
def register_heads(register):
    register(
        "pooled-linear",
        "deqbench_example_model.heads:PooledLinearHead",
        description="average-pool each resolution, concatenate, one linear layer",
    )
