"""Small files written whole or not at all: readers never see half a file, and a crash mid-write
leaves the previous version in place."""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import IO, Any


def write_atomic(path: str, write: Callable[[IO], Any], mode: str = 'wb') -> None:
  """`write(f)` into a temporary file beside `path` (its folder created), then renamed over it."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # per process and host: concurrent writers, on one machine or sharing a folder, never meet
  tmp = f'{path}.{socket.gethostname()}.{os.getpid()}.tmp'
  try:
    with open(tmp, mode) as f:
      write(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  write_atomic(path, lambda f: f.write(text), 'w')


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=2))
