"""The side-by-side benchmark suite: Noctis against Orthanc and dcmtk's storescp.

``python -m bench`` (``make bench``) generates a corpus, starts every target on free
loopback ports, measures, writes the results as JSON into ``docs/benchmarks/`` and
renders the tables of ``docs/benchmarks.md`` from them.
"""
