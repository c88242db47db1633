"""The two consoles: humans read stderr, machines read stdout."""

from rich.console import Console

err = Console(stderr=True)
out = Console(soft_wrap=True, highlight=False)
