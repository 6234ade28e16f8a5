"""Similar photos: each content's embedding in its compact stored form, the vector
file the scans read, and the scans (`labels similar`, `labels duplicates`).

- `codec`: the model's pooled features (1280 or 2048 floats) -> 256 int8 (a fixed
  projection, then int8): what the writer stores, and what every score compares.
- `matrix`: the vector file, a memory-mapped copy of one embedding space's stored
  vectors (beside a SQLite database, or in the user's cache), validated against
  the database on every open and brought up to date from it.
- `library`: which file, and bringing it in step with the database (plain SQL
  through any `run(sql, params)`, as serve/reader.py and the Store both give).
- `scan`: the exact scans: the nearest vectors to one, and every pair above a
  threshold (block by block, in flat memory).
- `keeper`: the service's thread that keeps the SQLite library's file current.

numpy only: no SQLAlchemy, no TensorFlow; the model's part is in labelsd.model.
"""
