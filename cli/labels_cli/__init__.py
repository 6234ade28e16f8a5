"""labels_cli: the `labels` command, a thin Typer layer over labelsd.

The modules that declare commands or their options do not use `from __future__
import annotations`: Typer reads every command's signature at each start, and
string annotations cost it a compile and an eval per parameter (~6 ms of
`labels search`, whose whole budget is ~200 ms)."""
