"""noctis_archive"""
