"""Root solvers: the interface and the built-ins (registered in `deqbench.builtins`)."""

from deqbench.solvers.anderson import Anderson
from deqbench.solvers.base import Monitor, Solver, SolverResult, Status
from deqbench.solvers.broyden import Broyden
from deqbench.solvers.fixed_point import FixedPoint
from deqbench.solvers.gmres import GMRES
from deqbench.solvers.workspace import Workspace

#: (name, factory, description) of the solvers the core registers through its own hooks.
BUILTIN = (
    ("fixed-point", FixedPoint, "naive fixed-point iteration, optional damping"),
    ("anderson", Anderson, "Anderson acceleration, window m, scale-free ridge"),
    ("broyden", Broyden, "limited-memory good Broyden, fixed m pairs, optional line search"),
    ("gmres", GMRES, "restarted GMRES(m), affine maps only (the implicit backward)"),
)

__all__ = [
    "BUILTIN",
    "GMRES",
    "Anderson",
    "Broyden",
    "FixedPoint",
    "Monitor",
    "Solver",
    "SolverResult",
    "Status",
    "Workspace",
]
