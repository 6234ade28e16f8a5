"""Parameter parsers more than one command shares."""

import typer


def score(value: str) -> float:
    """A score as `labels` prints them: 0.5 or 50% (a bare 50 is refused, saying what to write)."""
    from labelsd.config import parse_score

    try:
        return parse_score(value)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
