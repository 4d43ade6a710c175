"""noctis_ingest_scp"""
