"""Process-wide set-up done by ``crmroute.service``."""

from __future__ import annotations

import gc
import sys

from crmroute.service import SWITCH_INTERVAL, tune_runtime


def test_runtime_is_tuned_for_the_call_path():
    interval = sys.getswitchinterval()
    try:
        tune_runtime()
        assert gc.get_freeze_count() > 10_000  # modules, models, the app: no full pass walks them again
        assert sys.getswitchinterval() == SWITCH_INTERVAL == 0.001
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)
