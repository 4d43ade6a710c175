"""noctis_events"""
