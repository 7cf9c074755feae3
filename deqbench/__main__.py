"""``python -m deqbench``: the command line, as torchrun launches it (``-m deqbench run ...``)."""

from deqbench.cli import main

if __name__ == "__main__":
    main(prog_name="deqbench")
