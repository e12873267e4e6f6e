"""Named points where a test can park a real process to `kill -9` it there.

METAEMB_TEST_PAUSE_AT=<where> makes kill_point(<where>) write <where> to the file named by
METAEMB_TEST_PAUSE_MARKER and sleep; unset (always, outside tests) it returns at once.
The environment reaches Spark's Python workers, so a point may sit inside a UDF.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT_ENV = "METAEMB_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "METAEMB_TEST_PAUSE_MARKER"


def kill_point(where: str) -> None:
    if os.environ.get(PAUSE_AT_ENV) != where:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).write_text(where)
    time.sleep(3600)
