"""`labels serve`: the library in a web browser (Starlette, Jinja2, uvicorn).

A thin stage over the same code the `labels` command runs, as the CLI is thin
over `labelsd`: a route parses its parameters, calls the function the matching
command calls (`labelsd.serve.query.find` for a search, `labelsd.store.tags`
to tag, `labelsd.store.workqueue.retry_failed` to retry), and renders a
template. No page has SQL of its own.

`site` holds what every view needs (settings, the read-only views of the
library, the store for changes, the templates); `app` builds the one ASGI
application; `guard` is its middleware (token, CSRF, security headers);
`views_*` are the pages; `thumbs` serves thumbnails by content hash; `server`
runs it under uvicorn until Ctrl-C or SIGTERM.

It may import `labelsd.serve`, `labelsd.store`, `labelsd.xmp.writer`,
`labelsd.fileio`, `labelsd.paths` and the model's taxonomy (data only); never
TensorFlow, the watcher or the pipeline, and nothing imports it but the
`labels serve` command, so no other command pays for Starlette.
"""
