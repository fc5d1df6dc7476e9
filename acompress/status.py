"""How a trained network ended: one set of names for corpus children, refinement children and finalists."""

OK, FAILED, DIVERGED = "ok", "failed", "diverged"
STATUSES = (OK, FAILED, DIVERGED)
