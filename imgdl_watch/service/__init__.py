"""The daemon as a service: the parts put together, and what it shows.

    daemon        the task tree: intake, jobs, signals, reload
    statusreport  the status file, the metrics gauges, systemd's STATUS= and watchdog
    status        the status file's format, and what `imgdl-watch status` prints
    sdnotify      the systemd notify protocol
    logs          JSON lines to stdout and a file, that never stop the work
    openfiles     the open-file limit, raised as far as the settings need

Nothing is re-exported here: `status` and `fetch` import what they need only.
"""
