"""noctis_qido"""
