"""``python -m voicehub_async.cli``: the same as the ``voicehub`` console script."""

from __future__ import annotations

import sys

from voicehub_async.cli import main

if __name__ == "__main__":
    sys.exit(main())
