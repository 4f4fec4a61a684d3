"""Which task failures Prefect should retry: transient faults only, shared by every relance flow."""

from __future__ import annotations

from delivery import ledger, send

# Faults that a retry 2 s later cannot fix: a campaign, segment, rule or provider setting written wrong
# (SpecError, RuleError, SegmentError, SelectionError, ProviderConfigError and pydantic's errors are
# ValueErrors; a missing template is a LookupError) and a run that cannot start as asked (RunError).
CONFIG_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, ledger.RunError)


def worth_retrying(task, task_run, state) -> bool:
    """Retry transient faults only (database busy or locked, provider or network timeouts).

    Not a configuration error (the marketer must fix the file: retrying only delays the message),
    nor a paused run (an open breaker or an alert is not fixed by retrying now). Anything else is
    worth a retry: the ledger makes it safe.
    """
    try:
        state.result()
    except (send.RunPaused, *CONFIG_ERRORS):
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return True
    return True
