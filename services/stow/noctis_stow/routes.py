"""STOW-RS routes (placeholder until the service is implemented)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
