"""The application layer behind :mod:`diffphys.cases` and :mod:`diffphys.cli`.

``schema`` (every case key and its check), ``expression`` (safe field expressions), ``registry``
(model kinds by name), ``load`` (read and validate a case), ``build`` (a case made concrete),
``runner`` / ``cycled_runner`` (what ``diffphys run`` writes) and ``demo`` (``diffphys demo``).
"""
