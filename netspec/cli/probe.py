"""Commands that ask a trained net about its input: ``visualize`` and ``adversarial``."""

from __future__ import annotations

import json
import math
import sys

import click

from netspec.cli import options as opt

WHAT = ("filters", "features", "class", "neuron", "saliency")

net_arg = click.argument("net", metavar="NET")
weights_opt = click.option("--weights", metavar="W", default=None,
                           help="a .safetensors weights file or zoo:<name> [default: the entry's own weights when "
                                "NET is zoo:<name>]")
def output_opt(default: str):
    return click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
                        help=f"the PNG to write [default: {default}]")


json_opt = click.option("--json", "as_json", is_flag=True, help="print the figures as JSON on stdout")
zoom_opt = click.option("--zoom", type=click.IntRange(1, 32), default=None,
                        help="pixels per input pixel in the picture [default: by picture]")


def _emit(figures: dict, path, as_json: bool, lines: list[str]) -> None:
    figures = dict(figures, picture=str(path))
    if as_json:
        click.echo(json.dumps(_plain(figures), indent=2))
        return
    for line in lines:
        click.echo(line)
    click.echo(f"wrote {path}")


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _position(text: str | None):
    if text is None:
        return None
    from netspec.errors import SpecError

    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise SpecError(f"--position '{text}': give Y,X (two integers)") from None
    return y, x


def _channels(text: str | None):
    if text is None or text.strip().lower() == "all":
        return None
    from netspec.errors import SpecError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"--channel '{text}': give channel numbers (3 or 0,1,2) or 'all'") from None


@click.command()
@net_arg
@weights_opt
@click.option("--what", type=click.Choice(WHAT), default="filters", show_default=True,
              help="filters: a layer's weights; features: the feature maps of an input; class: inputs "
                   "maximizing classes; neuron: inputs maximizing a blob's channels; saliency: the class "
                   "score's gradient for an input")
@click.option("--layer", metavar="NAME", help="filters: the layer [default: the first with weights]")
@click.option("--input", "input_", metavar="IN",
              help="features, saliency: an image file, SOURCE:INDEX (fashion-mnist:test:7) or test:INDEX")
@click.option("--blobs", metavar="B1,B2", help="features: the blobs [default: every feature map]")
@click.option("--class", "class_", metavar="K", default=None,
              help="class: K, K1,K2,... or all [default: all]; saliency: the class [default: the prediction]")
@click.option("--blob", metavar="B", help="neuron: the blob whose channels are maximized")
@click.option("--channel", metavar="C", default=None, help="neuron: C, C1,C2,... or all [default: all]")
@click.option("--position", metavar="Y,X", default=None,
              help="neuron: maximize the unit at Y,X [default: the channel's mean over positions]")
@click.option("--iterations", type=click.IntRange(0), default=200, show_default=True, help="ascent steps")
@click.option("--step", type=float, default=0.01, show_default=True,
              help="step along the normalized gradient, in units of the data range")
@click.option("--decay", type=float, default=0.005, show_default=True, help="L2 decay per step (towards 0)")
@click.option("--jitter", type=click.IntRange(0), default=1, show_default=True,
              help="random shift (pixels) before each gradient")
@click.option("--blur-every", type=click.IntRange(0), default=4, show_default=True,
              help="Gaussian blur every N steps (0: never)")
@click.option("--blur-sigma", type=float, default=0.6, show_default=True, help="the blur's sigma in pixels")
@click.option("--tv", type=float, default=0.0, show_default=True, help="weight of the total-variation penalty")
@click.option("--clip/--no-clip", default=True, show_default=True, help="keep the input inside the data range")
@click.option("--start", type=click.Choice(["mean", "noise", "zeros"]), default="mean", show_default=True,
              help="where the ascent starts: the data's mean image, uniform noise, or zeros")
@click.option("--objective", type=click.Choice(["logprob", "logit"]), default=None,
              help="the class objective [default: logprob for class, logit for saliency]")
@click.option("--seed", type=int, default=0, show_default=True)
@zoom_opt
@opt.device
@output_opt("<what>.png, e.g. class.png")
@json_opt
def visualize(net, weights, what, layer, input_, blobs, class_, blob, channel, position, iterations, step, decay,
              jitter, blur_every, blur_sigma, tv, clip, start, objective, seed, zoom, device, output, as_json):
    """Pictures of what a trained net computes: NET is a net file (with --weights) or zoo:<name>.

    \b
    netspec visualize zoo:lenet-fashion-mnist --what filters -o filters.png
    netspec visualize zoo:lenet-fashion-mnist --what features --input fashion-mnist:test:0
    netspec visualize zoo:lenet-fashion-mnist --what class            # every class, p reported
    netspec visualize zoo:lenet-fashion-mnist --what neuron --blob conv2 --channel 0,1,2
    netspec visualize zoo:lenet-fashion-mnist --what saliency --input test:12

    Class and neuron pictures are made by gradient ascent on the input (through the net's own
    backward) with L2 decay, jitter, blur, total variation and clipping to the data range.
    """
    from netspec.errors import SpecError
    from netspec.probe import visualize as V
    from netspec.probe.inputs import load_input
    from netspec.probe.model import open_model
    from netspec.probe.pictures import save_png

    model = open_model(net, weights, device)
    try:
        ascent = V.Ascent(iterations, step, decay, jitter, blur_every, blur_sigma, tv, clip, start,
                          objective or "logprob", seed)
        lines: list[str] = []
        if what in ("features", "saliency") and not input_:
            raise SpecError(f"--what {what} needs --input (an image file, SOURCE:INDEX or test:INDEX)")
        if what == "filters":
            pic = V.filters(model, layer, zoom or 8)
            f = pic.figures
            lines.append(f"{f['layer']}: weights {'x'.join(map(str, f['shape']))}, range {f['min']:.4g} .. "
                         f"{f['max']:.4g}")
        elif what == "features":
            inp = load_input(model, input_)
            pic = V.features(model, inp.x, inp.names[0], V.parse_blobs(model, blobs), zoom or 2)
            f = pic.figures
            if f["predicted"] is not None:
                lines.append(f"{f['input']}: predicted {f['predicted']} {f['name']} (p={f['probability']:.4f})")
            lines += [f"  {b}: {'x'.join(map(str, s['shape']))}, mean {s['mean']:.4g}, max {s['max']:.4g}, "
                      f"{100 * s['active']:.0f}% > 0" for b, s in f["blobs"].items()]
        elif what == "class":
            pic = V.class_images(model, V.parse_classes(model, class_), ascent, zoom or 3)
            f = pic.figures
            probs = f["probability"] if isinstance(f["probability"], list) else [f["probability"]]
            lines += [f"class {k} {n}: probability {p:.6f} (1 - p = {1 - p:.1e})" for k, n, p in zip(f["classes"], f["names"], probs)]
        elif what == "neuron":
            if not blob:
                raise SpecError("--what neuron needs --blob (and --channel)")
            pic = V.neuron_images(model, blob, _channels(channel), ascent, _position(position), zoom or 3)
            f = pic.figures
            lines += [f"{blob}[{c}]: activation {a0:.4g} -> {a:.4g}"
                      for c, a0, a in zip(f["channels"], f["start_activation"], f["activation"])]
        else:
            inp = load_input(model, input_)
            k = None
            if class_ is not None:
                ks = V.parse_classes(model, class_)
                if len(ks) != 1:
                    raise SpecError("--what saliency takes one --class")
                k = ks[0]
            pic = V.saliency(model, inp.x, inp.names[0], k, objective or "logit", zoom or 6)
            f = pic.figures
            lines.append(f"{f['input']}: saliency of class {f['class']} {f['name']} (p={f['probability']:.4f}, "
                         f"predicted {f['predicted']}); largest |gradient| {f['max_gradient']:.4g} at "
                         f"{f['argmax'][0]},{f['argmax'][1]}")
        path = save_png(pic.image, output or f"{what}.png")
        figures = dict(pic.figures, grid=list(pic.grid), size=list(pic.image.size))
        _emit(figures, path, as_json, lines)
    finally:
        model.close()


def _floats(text: str, option: str) -> list[float]:
    from netspec.errors import SpecError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{option} '{text}': give numbers, comma-separated") from None


@click.command()
@net_arg
@weights_opt
@click.option("--images", metavar="SRC[:N]", default=None,
              help="the images attacked: a dataset split and a count (fashion-mnist:test:200), or test:N "
                   "(the net's TEST data) [default: test:200]")
@click.option("--epsilon", "epsilons", metavar="E1,E2", default="0,0.02,0.05,0.1,0.2", show_default=True,
              help="perturbation sizes (max per input value), in the units the net reads")
@click.option("--method", "methods", metavar="M", default="fgsm,iterative", show_default=True,
              help="fgsm (one signed-gradient step), iterative (projected steps), or both")
@click.option("--steps", type=click.IntRange(1), default=10, show_default=True, help="iterative: steps")
@click.option("--step-size", type=float, default=None, help="iterative: per step [default: 2.5 * epsilon / steps]")
@click.option("--target", metavar="K", default=None,
              help="targeted: make the net answer class K, or 'next' (its prediction + 1) [default: untargeted]")
@click.option("--show", type=click.IntRange(1, 64), default=8, show_default=True, help="images in the picture")
@click.option("--show-epsilon", type=float, default=None, help="the epsilon pictured [default: the largest]")
@click.option("--fool", is_flag=True, help="instead: images from noise the net labels as each class with "
              ">= --confidence")
@click.option("--confidence", type=float, default=0.99, show_default=True, help="--fool: the confidence to reach")
@click.option("--per-class", type=click.IntRange(1), default=1, show_default=True, help="--fool: images per class")
@click.option("--iterations", type=click.IntRange(1), default=500, show_default=True, help="--fool: at most")
@click.option("--step", type=float, default=0.01, show_default=True,
              help="--fool: step along the normalized gradient, in units of the data range")
@click.option("--seed", type=int, default=0, show_default=True)
@zoom_opt
@opt.device
@output_opt("adversarial.png, or fooling.png with --fool")
@json_opt
def adversarial(net, weights, images, epsilons, methods, steps, step_size, target, show, show_epsilon, fool,
                confidence, per_class, iterations, step, seed, zoom, device, output, as_json):
    """How easily a trained net is fooled: NET is a net file (with --weights) or zoo:<name>.

    \b
    netspec adversarial zoo:lenet-fashion-mnist --images fashion-mnist:test:200
    netspec adversarial zoo:lenet-fashion-mnist --images test:200 --target next
    netspec adversarial zoo:lenet-fashion-mnist --fool

    Prints the fooling rate against epsilon (untargeted: the share of images whose prediction
    changes; targeted: the share labelled as the target) and draws originals, perturbations
    and results at one epsilon.  --fool draws noise images the net is sure about instead.
    """
    from netspec.probe import adversarial as A
    from netspec.probe.inputs import load_set
    from netspec.probe.model import open_model
    from netspec.probe.pictures import save_png

    model = open_model(net, weights, device)
    try:
        if fool:
            f = A.fooling_images(model, per_class, confidence, iterations, step, seed)
            grid = A.fooling_picture(model, f, confidence, zoom or 3)
            image = grid.image()
            path = save_png(image, output or "fooling.png")
            figures = {"what": "fool", "confidence": confidence, "classes": [int(k) for k in f.classes],
                       "names": [model.class_name(int(k)) for k in f.classes],
                       "probability": [float(p) for p in f.confidence], "steps": [int(s) for s in f.steps],
                       "reached": bool((f.steps >= 0).all()), "grid": [grid.rows, grid.cols],
                       "size": list(image.size)}
            lines = [f"class {k} {model.class_name(int(k))}: p={p:.4f} after "
                     + (f"{s} steps" if s >= 0 else f"{iterations} steps (not reached)")
                     for k, p, s in zip(f.classes, f.confidence, f.steps)]
            _emit(figures, path, as_json, lines)
            return
        attack = A.Attack(tuple(m.strip() for m in methods.split(",") if m.strip()),
                          tuple(_floats(epsilons, "--epsilon")), steps, step_size, target)
        attack.check(model)
        inp = load_set(model, images or "test:200", 200)
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            extra = show_epsilon is not None and show_epsilon not in attack.epsilons
            bar = tqdm(total=len(attack.methods) * (len(attack.epsilons) + extra), desc="attacks", unit="eps",
                       leave=False)
        try:
            t = A.fooling_table(model, inp.x, inp.labels, attack, show_epsilon, show,
                                progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        shown_method = attack.methods[-1]
        grid = A.attack_picture(model, inp.x[:show], inp.labels[:show], t, shown_method, zoom or 3)
        image = grid.image()
        path = save_png(image, output or "adversarial.png")
        kind = "untargeted" if target is None else f"targeted ({target})"
        figures = {"what": "adversarial", "images": len(inp.x), "source": images or "test:200", "attack": kind,
                   "epsilon": t.epsilons, "fooling_rate": t.fooling_rate, "accuracy": t.accuracy,
                   "clean_accuracy": t.clean_accuracy, "eligible": t.eligible, "steps": steps,
                   "data_range": [model.lo, model.hi], "shown": {"method": shown_method,
                                                                 "epsilon": t.shown[shown_method][0]},
                   "grid": [grid.rows, grid.cols], "size": list(image.size)}
        acc = f", clean accuracy {t.clean_accuracy:.3f}" if t.clean_accuracy is not None else ""
        lines = [f"{kind} attacks on {len(inp.x)} images of {images or 'test:200'}{acc}; fooling rate:"]
        lines += ["  " + line for line in A.table_lines(t)]
        _emit(figures, path, as_json, lines)
    finally:
        model.close()


COMMANDS = [visualize, adversarial]
