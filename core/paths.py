"""Where the repository keeps its declarations and its dbt project (fixed paths, no environment)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PLATFORM_DIR = REPO_ROOT / "platform"  # declarations; not a Python package
ZONES_DIR = PLATFORM_DIR / "zones"
ENVIRONMENTS_DIR = PLATFORM_DIR / "environments"
DBT_DIR = REPO_ROOT / "dbt_project"
