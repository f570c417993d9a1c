"""End to end with a shipped solver: XOR (solvers/xor.yaml) learns its truth table."""

from __future__ import annotations

from pathlib import Path

from netspec.solvers import run

ROOT = Path(__file__).resolve().parent.parent


def test_xor_solver_learns_the_truth_table(tmp_path):
    lines: list[str] = []
    assert run.train(ROOT / "solvers" / "xor.yaml", run_dir=tmp_path, progress=False, echo=lines.append) == 0
    assert lines[-1] == "Optimization Done."
    result = run.evaluate(ROOT / "models" / "xor" / "train_val.yaml", str(tmp_path / "XOR_iter_2000.safetensors"),
                          progress=False)
    # Euclidean loss = sum of squared errors / (2 * 4): below 1e-3 every output is within 0.09 of its label
    assert result["loss"][0] < 1e-3
