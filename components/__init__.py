"""cvops components: plain, testable Python for every pipeline stage (no Prefect here)."""

import os

# No network here or on an air-gapped cluster: turn every tool's telemetry off before any of
# them is imported. setdefault keeps a user's explicit choice.
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "False",
    "DVC_NO_ANALYTICS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_key, _value)
