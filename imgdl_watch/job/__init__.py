"""A job: one list of URLs, downloaded into one folder.

    job        the job's run, and how it ends (`JobEnd`)
    crew       the worker tasks: each item to its outcome, two per download slot
    feed       the list read, classified and handed to the workers, one by one
    listformat a list's format by its name: reading (and decompressing) it, and
               writing its failures back in the same format
    listparse  a list's lines: URLs, invalid lines, comments (pure)
    rows       a csv, tsv or jsonl list's rows, their URL and data (pure)
    dedupe     each URL seen, and each name given out, in little memory
    namestore  the names a long list gave out, once memory no longer holds
               them: a filter in memory, the names on disk
    outcomes   what became of each line: counted, logged, reported
    report     the report and the list of failures, written as they come
    progress   the job's counters, rates, ETA and `job_progress` events
    folder     the job folder: opened safely, swept, and watched for free space
    archive    --archive: each downloaded URL remembered across lists, and reused

It knows no inbox: whoever runs a job says what becomes of its list.
"""

from .job import Job, JobEnd, JobOptions, NoInbox

__all__ = ["Job", "JobEnd", "JobOptions", "NoInbox"]
