"""noctis_stow"""
