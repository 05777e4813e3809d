"""The application layer behind :mod:`diffphys.cases` and :mod:`diffphys.cli`.

``schema`` (every case key and its check), ``expression`` (safe field expressions), ``registry``
(model kinds and solver methods by name), ``load`` (read and validate a case), ``build`` (a case made concrete),
``runner`` (the one runner of ``diffphys run``) with ``single`` and ``cycled`` (what each kind of case solves and writes) and ``demo`` (``diffphys demo``).
"""
