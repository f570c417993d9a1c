"""The solver-file schema, as the training code sees it.

The format itself (every field, its type, default and description, and the committed
``solver.schema.json``) lives in ``netspec/spec/solver_schema.py``: net files carry inline
solvers, so the net schema needs it, and ``netspec/spec/`` must not import training code.
Add or change solver fields there.  What only training needs stays here.
"""

from __future__ import annotations

from netspec.spec.solver_schema import (  # noqa: F401  (the names the training code uses)
    LEGACY_TYPES, NET_KEYS, NO_MOMENTUM, PATH_KEYS, POLICIES, POLICY_FIELDS, POLICY_OPTIONAL, PROPERTIES,
    REQUIRED, RULES, SOLVER_VERSION, build_solver_schema, committed_path, dump, write_committed,
)

#: keys whose value may differ when a run is resumed (they do not change the trajectory)
RESUMABLE_CHANGES = ("max_iter", "display", "snapshot", "test_interval", "snapshot_prefix",
                     "snapshot_after_train", "debug_info", "weights", "init_from", "snapshot_keep",
                     "snapshot_failure")
