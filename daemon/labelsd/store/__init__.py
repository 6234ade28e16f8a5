"""The store: everything that lives in the database, on SQLite or PostgreSQL.

`engine` holds one database (`connect` opens it: one connect hook for the busy
timeout, WAL switched on once per file, driver errors turned into advice) and
runs migrations (`migrations`, over the tables in `schema`);
`workqueue` is the durable queue; `contents` changes which content a path has;
`tags`, `judgements` (rejected and confirmed labels), `nodes`, `copy` (`labels db
copy`) and `dbfile` (the SQLite file a service holds) do one job each. For a fleet on one PostgreSQL: `wakeups`
(LISTEN/NOTIFY), `walks` (one walker per shared root), `counters` (status
without full counts). It may import
`labelsd.records`, `labelsd.errors`, `labelsd.paths` and the leaf helpers
`labelsd.hostproc` and `labelsd.loopthread`, nothing above it: the
watcher, the pipeline and the CLI depend on the store, never the reverse.
"""
