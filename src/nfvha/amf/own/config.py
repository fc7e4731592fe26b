"""What a VNF's own AM process is told at start (``nfvha vnf-am --config``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from nfvha.amf.config import AmfConfig
from nfvha.model.settings import Strict


class VnfAmConfig(Strict):
    vnf: str
    vim_url: str  # the VIM's API, http://ip:port
    token_file: Path  # an API token of the operator role (repairs are writes)
    topology_file: Path
    db_path: Path  # the VNF's own assignment records (SQLite)
    db_fsync: bool = False
    amf: AmfConfig  # where its components connect, and their endpoints
    request_timeout_s: float = Field(10.0, gt=0, le=600)
    poll_wait_s: float = Field(10.0, gt=0, le=60)  # one long poll of the VIM's events
    repair_timeout_s: float = Field(120.0, gt=0, le=3600)  # one VM repair by the VIM

    @classmethod
    def load(cls, path: Path) -> VnfAmConfig:
        return cls.model_validate_json(path.read_bytes())
