"""The pipeline: claim → read and decode → batch → classify → write.

`runner.Pipeline` runs the threads (claim loop, decode pool, batcher, writer)
for both the service and `labels scan`; `reader` reads, hashes and decodes one
claimed path, `batcher` runs one forward per batch, `writer` stores a batch in
one transaction, `timeline` records what the model thread did. It may import
`labelsd.records`, `labelsd.store` and the model boundary (`labelsd.model`),
never the watcher or the CLI.
"""
