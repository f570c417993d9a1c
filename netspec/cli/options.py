"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

net_file = click.argument("file", type=click.Path(dir_okay=False))

phase = click.option("--phase", type=click.Choice(["TRAIN", "TEST", "DEPLOY"], case_sensitive=False),
                     default="TRAIN", show_default=True, callback=lambda c, p, v: v.upper() if v else v,
                     help="which net to build from the file")

stage = click.option("--stage", "stages", multiple=True, metavar="NAME",
                     help="a NetState stage (repeat for several)")

level = click.option("--level", type=int, default=None, help="the NetState level")

precision = click.option("--precision", type=click.Choice(("float32", "float16", "bfloat16")), default="float32",
                         show_default=True, help="of the activations and their gradients, as the solver's "
                         "field (float16 on a GPU: float16 buffers, half the memory)")

device = click.option("--device", metavar="DEV", default=None,
                      help="cpu, cuda or cuda:N (a GPU needs the [cuda] extra) [default: the solver's "
                           "solver_mode/device_id, or $NETSPEC_DEVICE, else cpu]")
