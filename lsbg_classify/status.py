"""Per-row status values written to the ``lsbg_status`` column.

Every stage of the pipeline reports what happened to a row with one of
these strings, so a user can filter a scored catalog without parsing
messages.
"""

OK = "ok"
NO_COVERAGE = "no_coverage"
FETCH_FAILED = "fetch_failed"
BAD_IMAGE = "bad_image"
INVALID_POSITION = "invalid_position"

ALL_STATUSES = (OK, NO_COVERAGE, FETCH_FAILED, BAD_IMAGE, INVALID_POSITION)

# Longest value, used to size the string column so no status is truncated.
STATUS_WIDTH = max(len(s) for s in ALL_STATUSES)
