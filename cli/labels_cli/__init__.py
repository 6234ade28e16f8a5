"""labels_cli: the `labels` command, a thin Typer layer over labelsd."""
