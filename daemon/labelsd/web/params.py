"""A search's URL parameters, as `labels search` takes them as options:
`q` (the query), `since`, `until`, `camera`, `tag` (repeatable), `min_score`
(0..1, or a percentage: `50%`), `exact`, and for the pages `page`, for the
API `limit`. Parsed once here into the keyword arguments of `query.find`;
what cannot be parsed is a message for the person, never an exception.
Likewise `labels duplicates`' (`threshold`, `include_missing`, and `page`) and
`labels similar`'s (`limit`, `include_missing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from labelsd.config import parse_score
from labelsd.serve.query import taken_window

PER_PAGE = 60  # thumbnails on one page of a search
MAX_PAGE = 1000
MAX_TEXT = 200  # characters of a query, a camera or a tag
MAX_TAGS = 10
TRUE = ("1", "true", "on", "yes")


@dataclass(frozen=True)
class SearchForm:
    q: str = ""
    since: str | None = None
    until: str | None = None
    camera: str | None = None
    tags: tuple[str, ...] = ()
    min_score: float | None = None
    min_score_text: str = ""
    exact: bool = False
    page: int = 1
    limit: int | None = None
    errors: list[str] = field(default_factory=list, compare=False)

    @property
    def text(self) -> str:
        """What is searched for: the query, or with none, the first tag asked for (a
        tag's own words find it, and `tag` keeps only the photos carrying it)."""
        return self.q.strip() or (self.tags[0] if self.tags else "")

    @property
    def empty(self) -> bool:
        return not self.text

    @property
    def narrowed(self) -> bool:
        """Whether a filter besides the words is set (the page then shows the filters open)."""
        return bool(self.since or self.until or self.camera or self.tags
                    or self.min_score is not None or self.exact)

    def find_options(self, floor: float) -> dict:
        """Keyword arguments of `query.find` (as `labels search`'s options give them):
        a min_score not given is the configured `floor` (search_min_score), as in
        `labels search`, so /api/search prints what `labels search --json` prints."""
        min_score = floor if self.min_score is None else self.min_score
        return {"exact": self.exact, "min_score": min_score, "tags": self.tags,
                "since": self.since, "until": self.until, "camera": self.camera}

    def pairs(self, **changes) -> list[tuple[str, str]]:
        """The URL parameters that give this search back (with `changes`)."""
        form = replace(self, **changes)
        pairs = [("q", form.q)] if form.q else []
        pairs += [(k, v) for k, v in (("since", form.since), ("until", form.until),
                                      ("camera", form.camera)) if v]
        pairs += [("tag", t) for t in form.tags]
        if form.min_score_text:
            pairs.append(("min_score", form.min_score_text))
        if form.exact:
            pairs.append(("exact", "1"))
        if form.page > 1:
            pairs.append(("page", str(form.page)))
        return pairs

    def link(self, **changes) -> str:
        return "/search?" + urlencode(self.pairs(**changes))


def parse_search(params) -> SearchForm:
    """A `SearchForm` from a request's query parameters (Starlette's QueryParams, or
    any mapping with `get` and `getlist`); its `errors` say what was not understood."""
    errors: list[str] = []

    def text(name: str) -> str | None:
        value = (params.get(name) or "").strip()
        if len(value) > MAX_TEXT:
            errors.append(f"{name} is longer than {MAX_TEXT} characters")
            return None
        return value or None

    q = text("q") or ""
    since, until, camera = text("since"), text("until"), text("camera")
    for name, value in (("since", since), ("until", until)):
        if value:
            try:
                taken_window(value, value)
            except ValueError as err:
                errors.append(f"{name}: {err}")
    tags = tuple(dict.fromkeys(t.strip() for t in params.getlist("tag") if t.strip()))
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TEXT for t in tags):
        errors.append(f"at most {MAX_TAGS} tags of at most {MAX_TEXT} characters")
        tags = ()
    score_text = (params.get("min_score") or "").strip()
    min_score = _score(score_text, errors) if score_text else None
    page = _whole(params.get("page"), "page", 1, MAX_PAGE, errors) or 1
    limit = _whole(params.get("limit"), "limit", 1, 10**9, errors)
    return SearchForm(q=q, since=since, until=until, camera=camera, tags=tags,
                      min_score=min_score, min_score_text=score_text if min_score is not None else "",
                      exact=(params.get("exact") or "").lower() in TRUE, page=page, limit=limit,
                      errors=errors)


def _score(text: str, errors: list[str]) -> float | None:
    """A score as `labels search --min-score` reads it (config.parse_score)."""
    try:
        return parse_score(text)
    except ValueError as err:
        errors.append(f"min_score: {err}")
        return None


@dataclass(frozen=True)
class DuplicatesForm:
    """/duplicates' parameters: `labels duplicates`' options, the page of groups, and
    `again` (compare again when the library changed since the kept result)."""

    threshold: float
    threshold_text: str = ""  # as given ("" for the default)
    include_missing: bool = False
    page: int = 1
    again: bool = False
    errors: list[str] = field(default_factory=list, compare=False)

    def link(self, **changes) -> str:
        form = replace(self, **changes)
        pairs = [("threshold", form.threshold_text)] if form.threshold_text else []
        pairs += [("include_missing", "1")] if form.include_missing else []
        pairs += [("page", str(form.page))] if form.page > 1 else []
        pairs += [("again", "1")] if form.again else []
        return "/duplicates" + ("?" + urlencode(pairs) if pairs else "")


def parse_duplicates(params, default_threshold: float) -> DuplicatesForm:
    """A `DuplicatesForm` from a request's query parameters; its `errors` say what was
    not understood (a threshold outside 0..1, as `labels duplicates` refuses one)."""
    errors: list[str] = []
    text = (params.get("threshold") or "").strip()
    threshold = default_threshold
    if text:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not 0.0 <= value <= 1.0:  # NaN too
            errors.append(f"threshold must be a number from 0 to 1 (0.86), not {text[:MAX_TEXT]!r}")
            text = ""
        else:
            threshold = value
    page = _whole(params.get("page"), "page", 1, MAX_PAGE, errors) or 1
    return DuplicatesForm(threshold=threshold, threshold_text=text, page=page,
                          include_missing=(params.get("include_missing") or "").lower() in TRUE,
                          again=(params.get("again") or "").lower() in TRUE, errors=errors)


def whole_param(params, name: str, default: int, high: int, errors: list[str]) -> int:
    """A whole-number parameter from 1 to `high` (`limit`); `default` when not given."""
    found = _whole(params.get(name), name, 1, high, errors)
    return default if found is None else found


def _whole(text: str | None, name: str, low: int, high: int, errors: list[str]) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        errors.append(f"{name} must be a whole number from {low} to {high}")
        return None
    return int(text)


__all__ = ["MAX_PAGE", "PER_PAGE", "DuplicatesForm", "SearchForm", "parse_duplicates", "parse_search",
           "whole_param"]
