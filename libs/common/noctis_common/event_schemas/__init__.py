"""JSON schemas of the published events: the envelope and one file per type and version.

:func:`noctis_common.event_envelope.load_event_schema` reads them.
"""
