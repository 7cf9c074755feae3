"""Root solvers: the interface and the built-ins (registered in `deqbench.builtins`)."""

from deqbench.builtins import SOLVERS, resolved
from deqbench.solvers.anderson import Anderson
from deqbench.solvers.base import Monitor, Solver, SolverResult, Status
from deqbench.solvers.broyden import Broyden
from deqbench.solvers.fixed_point import FixedPoint
from deqbench.solvers.gmres import GMRES
from deqbench.solvers.inverse import InverseJacobian, LowRankInverse
from deqbench.solvers.monitor import MonitorMisuse
from deqbench.solvers.workspace import Workspace

#: (name, class, description) of the solvers the core registers through its own hooks; the
#: names and descriptions come from `deqbench.builtins.SOLVERS`, which is torch-free.
BUILTIN = resolved(SOLVERS)

__all__ = [
    "BUILTIN",
    "GMRES",
    "Anderson",
    "Broyden",
    "FixedPoint",
    "InverseJacobian",
    "LowRankInverse",
    "Monitor",
    "MonitorMisuse",
    "Solver",
    "SolverResult",
    "Status",
    "Workspace",
]
