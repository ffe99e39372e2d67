"""The REST API under /api/v1: one module per resource, gathered here."""

from fastapi import APIRouter

api_router = APIRouter(prefix="/api/v1")
