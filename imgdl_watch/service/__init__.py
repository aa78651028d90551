"""The daemon as a service: the parts put together, and what it shows.

    daemon        the task tree: intake, jobs, signals, reload
    jobs          each claimed list run as a job, to its end in the inbox
    statusreport  the status file, the metrics gauges, systemd's STATUS= and watchdog
    status        the status file's format, and what `imgdl-watch status` prints
    statuspage    the metrics server: the status page, /status.json, /metrics, reports
    statushtml    the status page itself, rendered from the status document (pure)
    events        what a job's end tells the world: job_finished, job_failed, disk_full
    hooks         the operator's commands run for those events
    notify        the same events through Apprise (--notify)
    sdnotify      the systemd notify protocol
    logs          JSON lines to stdout and a file, that never stop the work
    openfiles     the open-file limit, raised as far as the settings need

Nothing is re-exported here: `status` and `fetch` import what they need only.
"""
