"""The pacing contract between the scheduler's release and the workers' token bucket: how far ahead of an
account's rate work may be released, so the bucket's burst can cover exactly that much."""

from __future__ import annotations

from datetime import timedelta

# Released-but-unapplied work of one job, in seconds of its account's rate.
IN_FLIGHT_SECONDS = 2.0
# How far an account's release schedule may lag behind the clock: enough to absorb a late dispatcher pass
# without losing rate, little enough that an idle account's first burst stays near half a second's worth.
PACING_SLACK = timedelta(seconds=0.5)
