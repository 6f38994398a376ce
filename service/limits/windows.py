"""Budget windows: the UTC calendar day and month an instant falls in, and when they end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True, slots=True)
class UtcWindows:
    """The day and month windows around one instant (epoch seconds)."""

    day: date
    day_ends_at: datetime
    month_ends_at: datetime
    now: datetime

    @classmethod
    def at(cls, epoch_s: float) -> UtcWindows:
        now = datetime.fromtimestamp(epoch_s, UTC)
        day = now.date()
        day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return cls(day, day_end, datetime(year, month, 1, tzinfo=UTC), now)

    def seconds_to_day_end(self) -> float:
        return (self.day_ends_at - self.now).total_seconds()

    def seconds_to_month_end(self) -> float:
        return (self.month_ends_at - self.now).total_seconds()
