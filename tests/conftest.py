"""Shared fixtures: real SQLite files in tmp_path, a real InceptionV3 with random weights."""

from __future__ import annotations
