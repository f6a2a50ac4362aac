"""The errors a user can cause, and the exit code of each: the one definition the CLI and the
Prefect flow share (the flow never retries a permanent one)."""

from __future__ import annotations

CONFIG_ERROR = 2    # params.yaml, a flag or an argument is wrong: fix it and rerun
DATA_CONTRACT = 3   # the dataset broke its contract: fix the data and rerun
PERMANENT_EXIT_CODES = frozenset({CONFIG_ERROR, DATA_CONTRACT})


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key, the rule and the fix."""


class DataContractError(RuntimeError):
    """The dataset broke the data contract; the message is the report."""


def exit_code(exc: BaseException) -> int:
    """The exit code for an error a user caused; 1 for anything else."""
    if isinstance(exc, DataContractError):
        return DATA_CONTRACT
    if isinstance(exc, ConfigError):
        return CONFIG_ERROR
    return 1
