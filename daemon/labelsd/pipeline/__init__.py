"""The pipeline: claim → read and decode → batch → classify → write.

`runner.Pipeline` runs the threads (claim loop, decode pool, batcher, writer)
for both the service and `labels scan`; `claimer` takes queued paths, holds and
renews the claims and sleeps until woken; `reader` reads, hashes and decodes one
claimed path, `batcher` gathers a batch and runs one forward over it, `writer` stores a batch in
one transaction, `timeline` records what the model thread did. It may import
`labelsd.records`, `labelsd.store` and the model boundary (`labelsd.model`),
never the watcher or the CLI.
"""
