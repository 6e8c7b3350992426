"""Logging for rule scripts: everything goes to the rule's log; bad input and notices also reach
the console; every job leaves a status record beside its log (:mod:`job_status`)."""

from __future__ import annotations

import logging
import sys
import traceback
from contextlib import contextmanager

from . import job_status
from .errors import InputError

# ``extra`` of a log message that the user must see without opening the log (e.g. the sha256 of
# an unverified download): it also goes to the console and into the job's status record.
NOTICE = {"notice": True}


class _Notices(logging.Handler):
    """Copies messages logged with :data:`NOTICE` to the console and keeps them for the record."""

    def __init__(self, console, rule: str):
        super().__init__(logging.INFO)
        self.console, self.rule, self.messages = console, rule, []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "notice", False):
            message = record.getMessage()
            self.messages.append(message)
            print(f"Notice from rule {self.rule}: {message}", file=self.console)


@contextmanager
def logged(smk):
    """Send stderr and logging to ``smk.log[0]``; report an :class:`InputError` on the console too,
    without a traceback, so the user sees what to fix without opening the log. Messages logged
    with :data:`NOTICE` reach the console as well. Whatever happens, the job's outcome is recorded
    beside its log (:func:`job_status.write`) for the preflight summary.

    A job that computes with torch (imported by its script before this) uses the rule's threads:
    torch's default, every core of the node, oversubscribes a node shared by several jobs."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(int(smk.threads), 1))
    console = sys.stderr
    error = None
    with open(smk.log[0], "w", buffering=1) as log_file:
        sys.stderr = log_file
        logging.basicConfig(stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
        notices = _Notices(console, smk.rule)
        logging.getLogger().addHandler(notices)
        try:
            yield
        except InputError as err:
            error = str(err)
            message = f"Error in rule {smk.rule}: {err}"
            print(message, file=log_file)
            print(message, file=console)
            raise SystemExit(1) from None
        except SystemExit as err:
            if err.code not in (0, None):
                error = f"exited with status {err.code} (see {smk.log[0]})"
            raise
        except BaseException as err:
            error = f"{type(err).__name__}: {err} (traceback in {smk.log[0]})"
            traceback.print_exc(file=log_file)
            raise
        finally:
            sys.stderr = console
            logging.getLogger().removeHandler(notices)
            job_status.write(smk, error, notices.messages)
