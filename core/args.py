"""Command lines that refuse a bad argument as every other user mistake is refused
(docs/reliability.md): one line ``<program>: error: ...`` on stderr and exit status 2, not
argparse's usage screen. ``--help`` still prints the whole usage."""
import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, with ``error()`` printing one line named ``short`` (the name the program's other
    errors carry, core.cli.guarded)."""

    def __init__(self, *args, short, **kwargs):
        super().__init__(*args, **kwargs)
        self.short = short

    def error(self, message):
        print(f"{self.short}: error: {message}", file=sys.stderr)
        sys.exit(2)


def command_line(module, description, short=None, **kwargs):
    """The parser of ``python -m <module>``; ``short`` names it in its errors (default: the
    module's last part)."""
    return OneLineParser(prog=f"python -m {module}", description=description,
                         short=short or module.rsplit(".", 1)[-1], **kwargs)
