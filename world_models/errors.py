"""The one exception type that means "the user asked for something we cannot do".

Entry points catch it and print a single line; anything else is a bug in the
project and keeps its traceback.
"""

import functools
import sys


class UserError(Exception):
    """A mistake in the user's input: a config key, a file, a directory."""


class Interrupted(Exception):
    """The user pressed Ctrl-C; the message says what is kept and how to continue."""


def exit_on_user_error(fn):
    """Turn a UserError raised by `fn` into one line on stderr and exit code 2, and Ctrl-C
    into one line and exit code 130 (the shell's code for SIGINT).

    In a job of a sweeper that records failed jobs and goes on (make tune: the Optuna
    sweeper with max_failure_rate > 0), the line is printed and the error raised to it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            _end_progress_bars()
            print(f"error: {err}", file=sys.stderr, flush=True)
            if sweeper_records_failures():
                raise
            sys.exit(2)
        except Interrupted as err:
            _end_progress_bars()
            print(f"interrupted: {err}", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper


def _end_progress_bars() -> None:
    """Close the open tqdm bars (Lightning's among them) so the message gets its own line."""
    tqdm_std = sys.modules.get("tqdm.std")  # never imported: no bar is open
    if tqdm_std is not None:
        for bar in list(tqdm_std.tqdm._instances):
            bar.close()
    sys.stdout.flush()


def sweeper_records_failures() -> bool:
    """True inside a job of a Hydra multirun whose sweeper tolerates failed jobs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    return hydra.mode == RunMode.MULTIRUN and (hydra.sweeper.get("max_failure_rate") or 0) > 0
