"""ICD §2 topic names, with an optional deployment prefix."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.icd.models import Site


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    def _t(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def telemetry_console(self) -> str:
        return self._t("telesafe.telemetry.console")

    @property
    def telemetry_robot(self) -> str:
        return self._t("telesafe.telemetry.robot")

    @property
    def operator(self) -> str:
        return self._t("telesafe.operator")

    @property
    def commands(self) -> str:
        return self._t("telesafe.safety.commands")

    @property
    def audit(self) -> str:
        return self._t("telesafe.audit")

    @property
    def deadletter(self) -> str:
        return self._t("telesafe.deadletter")

    @property
    def state(self) -> str:
        """telesafe's own compacted latch-state topic (not in the ICD): failover restores
        latched safe-stops from it. Co-partitioned with telemetry, keyed by procedure_id."""
        return self._t("telesafe.state")

    def telemetry(self, site: Site) -> str:
        return self.telemetry_console if site == "console" else self.telemetry_robot

    def site_of(self, topic: str) -> Site | None:
        if topic == self.telemetry_console:
            return "console"
        if topic == self.telemetry_robot:
            return "robot"
        return None

    def all(self) -> list[str]:
        return [
            self.telemetry_console,
            self.telemetry_robot,
            self.operator,
            self.commands,
            self.audit,
            self.deadletter,
            self.state,
        ]
