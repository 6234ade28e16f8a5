"""The state one `labels` invocation carries: the global options, the settings
they select, and the database, opened once per command.

Commands that only read ask for `reader()` (sqlite3 read-only on a SQLite
file: nothing is created, SQLAlchemy is not imported); commands that change
the library ask for `store()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from labelsd.config import Settings, apply_keras_home, default_db, load_settings


@dataclass
class CliState:
    db: str | None = None
    config: str | None = None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _store: object | None = field(default=None, repr=False)
    _reader: object | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, db=self.db)
            apply_keras_home(self._settings)  # the service's keras cache, where the config names it
        return self._settings

    def store(self):
        """The store named by the settings (created and migrated if needed)."""
        if self._store is None:
            from labelsd.store.engine import open_store

            self._store = open_store(self.settings.db)
        return self._store

    def reader(self):
        """A read-only view of the library; a missing SQLite file is an error."""
        if self._reader is None:
            from labelsd.serve.reader import open_reader

            self._reader = open_reader(self.settings.db, default_db())
        return self._reader

    def close(self) -> None:
        for opened in (self._reader, self._store):
            if opened is not None:
                opened.close()


def state(ctx: typer.Context) -> CliState:
    return ctx.find_object(CliState)
