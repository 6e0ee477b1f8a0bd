"""The overview dashboard's pieces: shared builders, one module per row, the variables.

`board.build()` composes them; `dashboards/generate.py` is the command line that writes or
checks the committed JSON. A new row is a new module with a `panels()` generator, listed
in `board.ROWS`.
"""
