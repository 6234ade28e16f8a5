"""Watching: turning what happens in the watched folders into queue rows.

The watcher (watchdog observers, one intake thread), the per-root watches and
their inotify limit, the settle rule for files still being written, the folder
walk and the start-up reconciliation, and the backlog of what it saw while the
database did not answer. It may import `labelsd.records`, `labelsd.paths`,
`labelsd.errors`, `labelsd.backoff` and `labelsd.store`; never the pipeline or the
model: it only records what it saw, and wakes whoever listens.
"""
