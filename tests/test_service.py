"""Process-wide set-up done by ``crmroute.service``."""

from __future__ import annotations

import gc

from crmroute.service import freeze_startup_objects


def test_startup_objects_are_frozen_out_of_full_collections():
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000  # modules, models, the app: none walked by a full pass again
    finally:
        gc.unfreeze()
