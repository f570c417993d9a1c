"""How easily a trained net is fooled: adversarial perturbations and fooling images.

- The fast gradient sign method (Goodfellow et al. 2015) moves every input value by
  ``epsilon`` (in the units the net reads) in the direction that raises the cross-entropy of
  the net's own answer: ``x' = clip(x + epsilon * sign(grad))``; a targeted attack lowers the
  cross-entropy of the target class instead (``x - epsilon * sign(grad)``).
- The iterative form (Kurakin et al. 2017, "basic iterative method") takes ``steps`` such steps
  of ``step_size`` (default ``2.5 * epsilon / steps``), each projected back into the
  ``epsilon`` ball around ``x`` and into the data range.
- Fooling images (Nguyen et al. 2015, "Deep neural networks are easily fooled"): from uniform
  noise over the data range, gradient ascent on one class's log-probability until the net gives
  it at least ``confidence``, each image frozen as soon as it gets there.

The fooling rate of an untargeted attack is the fraction of images whose predicted class
changes (epsilon 0 fools none by construction); of a targeted attack, the fraction of the
images not already predicted as the target that the net then labels as the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netspec.errors import SpecError
from netspec.probe import pictures as P

METHODS = ("fgsm", "iterative")
BATCH = 100          # images per forward/backward: bounds the memory of large N


@dataclass
class Attack:
    """An attack's settings (the ``netspec adversarial`` flags of the same names)."""

    methods: tuple[str, ...] = METHODS
    epsilons: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2)
    steps: int = 10
    step_size: float | None = None   # default 2.5 * epsilon / steps
    target: str | None = None        # None (untargeted), a class number, or "next" ((prediction + 1) mod classes)

    def check(self, model) -> None:
        model.scores          # a net without class scores cannot be attacked: say so first
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise SpecError(f"--method {','.join(bad) or '(none)'}: give fgsm, iterative or both (fgsm,iterative)")
        if any(e < 0 for e in self.epsilons) or not self.epsilons:
            raise SpecError("--epsilon: give one or more values >= 0 (comma-separated), in the net's input units")
        if self.steps < 1:
            raise SpecError("--steps must be at least 1")
        if self.step_size is not None and self.step_size <= 0:
            raise SpecError("--step-size must be positive")
        if self.target is not None and self.target != "next":
            if not str(self.target).lstrip("-").isdigit():
                raise SpecError(f"--target '{self.target}': a class number or 'next'")
            model.check_class(int(self.target), "--target")


def ce_seed(labels: np.ndarray):
    """Gradient of the cross-entropy of ``labels`` with respect to the class scores."""
    def seed(out):
        g = out["prob"].copy()
        g[np.arange(len(labels)), labels] -= 1.0
        return g
    return seed


def perturb(model, x: np.ndarray, labels: np.ndarray, epsilon: float, method: str, steps: int = 10,
            step_size: float | None = None, targeted: bool = False) -> np.ndarray:
    """Adversarial versions of ``x``: away from ``labels`` (untargeted) or towards them (targeted)."""
    if epsilon == 0:
        return x.copy()
    sign = -1.0 if targeted else 1.0
    out = np.empty_like(x)
    for lo in range(0, len(x), BATCH):
        xb, yb = x[lo:lo + BATCH], labels[lo:lo + BATCH]
        seed = ce_seed(yb)
        if method == "fgsm":
            g, _ = model.gradient(xb, model.scores, seed)
            adv = model.clip(xb + np.float32(sign * epsilon) * np.sign(g))
        else:
            alpha = step_size if step_size is not None else 2.5 * epsilon / steps
            adv = xb.copy()
            for _ in range(steps):
                g, _ = model.gradient(adv, model.scores, seed)
                adv = adv + np.float32(sign * alpha) * np.sign(g)
                adv = model.clip(xb + np.clip(adv - xb, -epsilon, epsilon))
        out[lo:lo + BATCH] = adv
    return out.astype(np.float32)


def _predict(model, x: np.ndarray) -> np.ndarray:
    return np.concatenate([model.forward(x[lo:lo + BATCH])["prob"] for lo in range(0, len(x), BATCH)])


@dataclass
class Table:
    """Fooling rate (and accuracy) per method and epsilon, and the images of the picture."""

    epsilons: list[float]
    fooling_rate: dict[str, list[float]]
    accuracy: dict[str, list[float]]
    clean_accuracy: float | None
    eligible: int
    targets: np.ndarray | None
    clean_prob: np.ndarray
    shown: dict = field(default_factory=dict)      # (method) -> (epsilon, adversarial images, their probs)


def fooling_table(model, x: np.ndarray, labels: np.ndarray, attack: Attack, show_epsilon: float | None = None,
                  show: int = 8, progress=None) -> Table:
    """Attack every image at every epsilon with every method; fooling rates against epsilon."""
    attack.check(model)
    p0 = _predict(model, x)
    pred0 = p0.argmax(axis=1)
    has_labels = bool((labels >= 0).all())
    if attack.target is None:
        goal = pred0
        eligible = np.ones(len(x), bool)
        targets = None
    else:
        c = model.num_classes
        targets = (pred0 + 1) % c if attack.target == "next" else np.full(len(x), int(attack.target))
        goal = targets
        eligible = pred0 != targets
    eps_list = [float(e) for e in attack.epsilons]
    show_eps = max(eps_list) if show_epsilon is None else float(show_epsilon)
    rates: dict[str, list[float]] = {}
    accs: dict[str, list[float]] = {}
    shown = {}
    for m in attack.methods:
        rates[m], accs[m] = [], []
        for e in eps_list + ([show_eps] if show_eps not in eps_list else []):
            adv = perturb(model, x, goal, e, m, attack.steps, attack.step_size, targeted=targets is not None)
            p = _predict(model, adv)
            pred = p.argmax(axis=1)
            fooled = (pred != pred0) if targets is None else (pred == targets)
            if e in eps_list and len(rates[m]) < len(eps_list):
                rates[m].append(float(fooled[eligible].mean()) if eligible.any() else 0.0)
                accs[m].append(float((pred == labels).mean()) if has_labels else float("nan"))
            if e == show_eps:
                shown[m] = (e, adv[:show], p[:show])
            if progress is not None:
                progress()
    return Table(eps_list, rates, accs, float((pred0 == labels).mean()) if has_labels else None,
                 int(eligible.sum()), targets, p0, shown)


def table_lines(t: Table) -> list[str]:
    head = "epsilon  " + "  ".join(f"{m:>9}" for m in t.fooling_rate)
    lines = [head]
    for i, e in enumerate(t.epsilons):
        lines.append(f"{e:<7g}  " + "  ".join(f"{t.fooling_rate[m][i]:>9.3f}" for m in t.fooling_rate))
    return lines


def attack_picture(model, x: np.ndarray, labels: np.ndarray, t: Table, method: str, zoom: int = 3) -> P.Grid:
    """Rows: the originals (label, prediction), the perturbations (scaled to their own range, 0
    mid grey), the results (prediction and its probability)."""
    from netspec.probe.visualize import _show

    e, adv, p = t.shown[method]
    n = len(adv)
    shape = model.sample_shape
    kind = "untargeted" if t.targets is None else "targeted"
    grid = P.Grid(n, shape[-2], shape[-1], zoom, 2,
                  [f"{method} ({kind}), epsilon {e:g}",
                   f"rows: originals (label; prediction), perturbations (x{model.span / (2 * e) if e else 1:.3g}), "
                   f"results (* changed)"])
    for i in range(n):
        k = int(t.clean_prob[i].argmax())
        lab = model.class_name(int(labels[i])) if labels[i] >= 0 else "(no label)"
        grid.add(_show(model, x[i]), [lab, f"{t.clean_prob[i, k]:.2f} {model.class_name(k)}"])
    for i in range(n):
        d = adv[i] - x[i]
        grid.add(P.to_rgb(d, -e, e) if e else P.symmetric(d), f"max {np.abs(d).max():.3g}")
    for i in range(n):
        k = int(p[i].argmax())
        mark = "" if k == int(t.clean_prob[i].argmax()) else "*"
        lines = [f"{mark}{p[i, k]:.2f} {model.class_name(k)}"]
        if t.targets is not None:
            lines.append(f"target {model.class_name(int(t.targets[i]))}")
        grid.add(_show(model, adv[i]), lines)
    return grid


# ---- fooling images ------------------------------------------------------------------------

@dataclass
class Fooled:
    images: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray      # the probability of each image's class at the end
    steps: np.ndarray           # steps each image took to reach the confidence (-1: never)


def fooling_images(model, per_class: int = 1, confidence: float = 0.99, iterations: int = 500,
                   step: float = 0.01, seed: int = 0, classes: list[int] | None = None) -> Fooled:
    """Images of noise the net labels as each class with at least ``confidence``."""
    model.scores
    if not 0 < confidence < 1:
        raise SpecError(f"--confidence {confidence}: a probability between 0 and 1")
    if per_class < 1 or iterations < 1 or step <= 0:
        raise SpecError("--per-class and --iterations must be at least 1, --step positive")
    rng = np.random.default_rng(seed)
    ks = np.repeat(np.asarray(classes if classes is not None else range(model.num_classes), np.int64), per_class)
    shape = (len(ks),) + tuple(model.sample_shape)
    lo = model.lo if model.has_range else -0.5
    x = (lo + rng.random(shape) * model.span).astype(np.float32)
    steps = np.full(len(ks), -1, np.int64)
    objective = _logprob_seed(ks)
    for it in range(iterations + 1):
        g, out = model.gradient(x, model.scores, objective)
        p = out["prob"][np.arange(len(ks)), ks]
        reached = (p >= confidence) & (steps < 0)
        steps[reached] = it
        active = steps < 0
        if not active.any() or it == iterations:
            break
        flat = np.abs(g.reshape(len(g), -1)).mean(axis=1).reshape((-1,) + (1,) * (g.ndim - 1))
        upd = np.float32(step * model.span) * (g / (flat + 1e-20)).astype(np.float32)
        x[active] = model.clip(x[active] + upd[active])
    p = model.forward(x)["prob"][np.arange(len(ks)), ks]
    return Fooled(x, ks, p, steps)


def _logprob_seed(ks: np.ndarray):
    def seed(out):
        onehot = np.zeros_like(out["scores"])
        onehot[np.arange(len(ks)), ks] = 1.0
        return onehot - out["prob"]
    return seed


def fooling_picture(model, f: Fooled, confidence: float, zoom: int = 3, cols: int | None = None) -> P.Grid:
    from netspec.probe.visualize import _show

    shape = model.sample_shape
    n = len(f.classes)
    cols = cols or min(n, 10)
    grid = P.Grid(cols, shape[-2], shape[-1], zoom, 2,
                  [f"fooling images: noise the net labels with >= {confidence:g} confidence"])
    for i in range(n):
        k = int(f.classes[i])
        grid.add(_show(model, f.images[i]), [model.class_name(k), f"p={f.confidence[i]:.4f}"])
    return grid
