"""Noctis DIMSE gateway: Verification and Storage SCP over the shared archive pipeline."""
