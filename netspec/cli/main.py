"""The ``netspec`` command: a click group whose commands are thin wrappers over ``netspec.api``.

Every ``NetspecError`` becomes its one-paragraph message on stderr and exit status 1, and so
does running out of memory (on the host or the GPU: a resource, not a bug); an
unexpected exception (a bug in netspec, not in the user's file) is reported in one paragraph
with exit status 2, and its traceback only with ``NETSPEC_DEBUG=1``.
"""

from __future__ import annotations

import io
import os
import sys

import click

from netspec import __version__
from netspec.errors import NetspecError

COMMAND_MODULES = ("netspec.cli.net", "netspec.cli.perf", "netspec.cli.data", "netspec.cli.train",
                   "netspec.cli.convert", "netspec.cli.zoo", "netspec.cli.export", "netspec.cli.probe",
                   "netspec.cli.predict", "netspec.cli.dashboard")


class Group(click.Group):
    """Loads command modules lazily-but-once and maps errors to clean exits."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NetspecError as e:
            click.echo(f"error: {e}" if "\n" not in str(e) else f"error:\n{e}", err=True)
            sys.exit(1)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # the reader went away (`netspec summary ... | head`): stop quietly, as Unix tools do;
            # stdout is pointed at devnull so the interpreter's final flush does not fail again
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
                pass  # stdout is not a real file (a test runner's buffer): nothing to flush
            sys.exit(1)
        except MemoryError as e:     # CuPy's OutOfMemoryError is one too: a resource, not a bug
            click.echo(f"error: {out_of_memory(e)}", err=True)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
            if os.environ.get("NETSPEC_DEBUG"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {e}. This is a bug in netspec, not in your "
                       f"files; run again with NETSPEC_DEBUG=1 to see where it happened.", err=True)
            sys.exit(2)


def out_of_memory(e: MemoryError) -> str:
    """The one paragraph for an allocation that failed: on the GPU (CuPy's OutOfMemoryError,
    which says how much it asked for) or on the host."""
    gpu = type(e).__module__.startswith("cupy")
    detail = " ".join(str(e).split()) or type(e).__name__
    fix = "lower batch_size in the net's data layers (and raise iter_size to keep the batch the solver sees)"
    if gpu:
        fix += ", or train with precision: float16 in the solver (float16 activation buffers take half the memory)"
    return (f"{'the GPU' if gpu else 'this machine'} ran out of memory ({detail}); {fix}; netspec summary "
            f"shows what each layer's blobs take")


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="netspec")
def cli():
    """netspec: describe a neural network in YAML, check it, and train it.

    \b
    Start with:  netspec check models/lenet/train_val.yaml
                 netspec summary models/lenet/train_val.yaml
                 netspec train models/lenet/train_val.yaml
    """


def _register_commands():
    import importlib

    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        for cmd in mod.COMMANDS:
            cli.add_command(cmd)


_register_commands()


def main():
    cli(prog_name="netspec")


if __name__ == "__main__":
    main()
