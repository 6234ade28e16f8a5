"""The state one `labels` invocation carries: the global options, the settings
they select, and the database, opened once per command.

Commands that only read ask for `reader()` (sqlite3 read-only on a SQLite
file: nothing is created, SQLAlchemy is not imported); commands that change
the library ask for `store()`, which opens an existing library and refuses a
missing one just as `reader()` does (a mistyped --db must not leave a new empty
library behind). Only a command whose job is to fill a library may create it:
`store(create=True)` (`labels scan`; `labels db copy` creates its target).
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

    def store(self, *, create: bool = False):
        """The library named by the settings, for changing it (migrated if older).
        A SQLite file that is not there, or a database holding no library, is an
        error naming the default database, unless `create`."""
        if self._store is None:
            from labelsd.store.engine import open_store

            self._store = open_store(self.settings.db, create=create, default_db=default_db())
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
