"""Sweeps: YAML grids expanded into runs (:mod:`.config`), executed locally or on Dask
(:mod:`.runner`) and written to a resumable results folder (:mod:`.results`); segment
statistics hook in through :mod:`.segments`, and the faithfulness of the maps
(``evaluate:``) through :mod:`.evaluate`.
"""
