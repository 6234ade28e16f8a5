"""What serves the `labels` command: search and listings (`query`), the contact
sheet and HTML gallery (`gallery`), export. Read-only views over the store, and
`judging`, which turns `labels reject ... -l LABEL` into store.judgements' calls; it
may import `labelsd.store`, `labelsd.records` and `labelsd.model.taxonomy`
(data only), never TensorFlow, the watcher or the pipeline.
"""
