"""Logging for rule scripts: everything goes to the rule's log; bad input also reaches the console."""

from __future__ import annotations

import logging
import sys
import traceback
from contextlib import contextmanager

from .errors import InputError


@contextmanager
def logged(smk):
    """Send stderr and logging to ``smk.log[0]``; report an :class:`InputError` on the console too,
    without a traceback, so the user sees what to fix without opening the log."""
    console = sys.stderr
    with open(smk.log[0], "w", buffering=1) as log_file:
        sys.stderr = log_file
        logging.basicConfig(stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
        try:
            yield
        except InputError as err:
            message = f"Error in rule {smk.rule}: {err}"
            print(message, file=log_file)
            print(message, file=console)
            raise SystemExit(1) from None
        except BaseException:
            traceback.print_exc(file=log_file)
            raise
        finally:
            sys.stderr = console
