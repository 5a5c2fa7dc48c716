"""The one exception type that means "the user asked for something we cannot do".

Entry points catch it and print a single line; anything else is a bug in the
project and keeps its traceback.
"""

import functools
import os
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
        _compact_hydra_errors_again()  # the config is composed: Hydra's own reports again
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


_HYDRA_RAISES = "HYDRA_FULL_ERROR"  # set: Hydra raises its errors instead of printing them
_raising_for_us = False


def run_hydra_app(main) -> None:
    """Call a @hydra.main function; a config Hydra cannot compose (an unknown key, group option
    or value type, an override it cannot parse) ends in one line naming it and exit code 2,
    as a UserError does, instead of Hydra's several. HYDRA_FULL_ERROR=1: Hydra's own report."""
    global _raising_for_us
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    if os.environ.get(_HYDRA_RAISES):
        return main()
    os.environ[_HYDRA_RAISES] = "1"  # only while composing; the task function takes it back
    _raising_for_us = True
    try:
        main()
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
        print(f"error: {composition_error(err)}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        _compact_hydra_errors_again()


def _compact_hydra_errors_again() -> None:
    global _raising_for_us
    if _raising_for_us:
        os.environ.pop(_HYDRA_RAISES, None)
        _raising_for_us = False


def composition_error(err: Exception) -> str:
    """Hydra's message for a config it could not compose, as one line that names the key."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = err.__cause__
    key = getattr(cause, "full_key", None) if isinstance(cause, OmegaConfBaseException) else None
    if key and isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return f"{key}: no such setting{_did_you_mean(cause)}"
    if key:
        return f"{key}: {str(cause.msg).strip().splitlines()[0]}"
    lines = [line.strip() for line in str(err).split("Config search path")[0].splitlines()
             if line.strip()]
    if getattr(err, "override", None):  # a word Hydra cannot parse
        lines.insert(0, f"'{err.override}'")
    options = next((i for i, line in enumerate(lines) if line.startswith("Available options")),
                   None)
    if options is not None:  # a group option that does not exist: list the ones that do
        lines = [*lines[:options], f"{lines[options]} {', '.join(lines[options + 1:])}"]
    return "; ".join(lines)


def _did_you_mean(cause) -> str:
    """'; did you mean model.hidden_size?' for a key a letter or two from one that exists."""
    import difflib

    parent, name = getattr(cause, "parent_node", None), getattr(cause, "key", None)
    if parent is None or not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [str(k) for k in parent.keys()], n=1, cutoff=0.75)
    if not close:
        return ""
    prefix = str(cause.full_key)[: -len(name)]
    return f"; did you mean {prefix}{close[0]}?"
