"""Attaching a name, a description, a version and tags to flows and tasks."""

import os

from headwater import flow, task


@task(name="Fetch readings", description="Reads the latest sensor values.", tags=["sensors", "demo"])
def fetch_readings(station: str) -> list[float]:
    return [12.5, 13.1, 12.9] if station == "north" else [8.0, 8.4]


@flow(
    name="Weather Report",
    description="Summarises one station's readings.\n\n* averages\n* extremes",
    version=os.getenv("GIT_COMMIT_SHA"),  # None → a hash of this file
    tags=["reports"],
)
def weather_report(station: str = "north") -> float:
    readings = fetch_readings(station)
    return round(sum(readings) / len(readings), 2)


if __name__ == "__main__":
    print(f"flow name: {weather_report.name!r}, version: {weather_report.version}")
    print(f"task name: {fetch_readings.name!r}, tags: {sorted(fetch_readings.tags)}")
    print("average:", weather_report("north"))
