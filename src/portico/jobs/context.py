"""What background runners share: settings, the database, the control plane and the generation service."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from portico.constants import new_id
from portico.services.control_plane import ControlPlane
from portico.services.generation.pipeline import Pipeline
from portico.settings import Settings
from portico.storage.database import Database


def worker_identity() -> str:
    """Names this worker in leases: host, process and a random part (a restarted process is a new owner)."""
    return new_id(f"{socket.gethostname()[:24]}:{os.getpid()}:")


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    database: Database
    control: ControlPlane  # principal_for(key_id), the meter (limits, usage)
    generation: Pipeline  # request body in, the sync endpoint's response body out
    owner: str = field(default_factory=worker_identity)
