"""What the hypervisor reports of its own failures and recovery actions (HV-3): the
host supervisor sees the agent die and restarts it; each is one line in the host's
report log (``host-reports.jsonl``) and one RFC 5424 syslog message to every
destination in ``host_report_destinations`` (``syslog://IP:PORT``). The VIM hears of
the same from the restarted agent (``agent.started``: how its predecessor ended) and
from its own liveness. Standard library only, like the host supervisor."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from nfvha.util.syslog import SyslogSender, format_message, parse_destination

APP = "nfvha-hostd"
REPORT_LOG = "host-reports.jsonl"


class HostReporter:
    def __init__(self, host: str, run_id: str, host_dir: Path,
                 destinations: list[str]) -> None:
        self.host = host
        self.run_id = run_id
        self.log_path = host_dir / REPORT_LOG
        self.sender = SyslogSender([parse_destination(d) for d in destinations])

    def report(self, msgid: str, severity: str, text: str, **fields: object) -> None:
        """``msgid``: what happened (``agent-failed``, ``agent-restarting``,
        ``agent-restarted``, ``hostd-started``); ``fields`` its details."""
        now = time.time()
        record = {"time": now, "host": self.host, "what": msgid, "severity": severity,
                  "text": text, **fields}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.sender.send(format_message(
            severity=severity, hostname=self.host, app=APP, procid=os.getpid(),
            msgid=msgid, fields={"run": self.run_id, **fields}, text=text, now=now))

    def close(self) -> None:
        self.sender.close()
