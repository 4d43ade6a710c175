"""noctis_wado"""
