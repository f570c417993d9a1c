"""``python -m netspec ...``: the same as the ``netspec`` command (for machines where the
package is on PYTHONPATH rather than installed)."""

from netspec.cli.main import main

main()
