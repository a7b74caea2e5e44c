"""Time for meters: a clock, sleeping, and periodic background work.

Meters never call ``time`` or ``threading`` directly. The real timebase reads
``time.perf_counter`` and runs samplers in daemon threads; a simulated one (the
synthetic GPU in the project's tests) runs the same meters in virtual time, so
their arithmetic is judged against a known truth without waiting for it.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

Clock = Callable[[], float]

# After a sampler error, wait this long before the next try, doubling up to the cap.
RETRY_FIRST_S = 0.05
RETRY_CAP_S = 2.0


class Timebase:
    """Wall-clock time. ``clock`` may be replaced (the unit-test fakes do)."""

    def __init__(self, clock: Optional[Clock] = None) -> None:
        self.now: Clock = clock or time.perf_counter

    def epoch_offset(self) -> float:
        """Seconds to add to :meth:`now` for Unix time (sensor timestamps are Unix µs)."""
        return time.time() - self.now()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))

    def every(self, period_s: float, work: Callable[[], None], name: str) -> Callable[[], None]:
        """Run ``work`` every ``period_s`` in the background; return a function that stops it.

        An exception from ``work`` is not the end of sampling: the next try
        comes after a pause that doubles up to two seconds, and a success
        resets it.
        """
        stop = threading.Event()

        def loop() -> None:
            pause = period_s
            while not stop.wait(pause):
                try:
                    work()
                    pause = period_s
                except Exception:  # noqa: BLE001 - a sensor hiccup must not end sampling
                    pause = min(max(pause * 2, RETRY_FIRST_S), RETRY_CAP_S)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=1.0)

        return halt
