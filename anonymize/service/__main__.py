"""``python -m anonymize.service ARGS`` is ``anonymize serve ARGS``."""
from .cli import main

main()
