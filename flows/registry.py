"""Every flow by its runbook name, as `tfops run NAME` and the deployments know it."""

from __future__ import annotations

from typing import Any

from flows.backup import full_system_backup_flow, verify_backup_flow
from flows.emergency import emergency_shutdown_flow, financial_emergency_flow
from flows.evening import evening_checklist_flow
from flows.maintenance import dependency_updates_flow, security_patches_flow
from flows.metrics import metrics_review_flow
from flows.morning import morning_checklist_flow
from flows.reviews import api_usage_flow, error_logs_flow, security_scan_flow
from flows.system_health import system_health_flow
from flows.wallets import wallet_balances_flow

FLOWS: dict[str, Any] = {
    "system-health": system_health_flow,
    "wallet-balances": wallet_balances_flow,
    "api-usage": api_usage_flow,
    "error-logs": error_logs_flow,
    "morning-checklist": morning_checklist_flow,
    "metrics-review": metrics_review_flow,
    "security-scan": security_scan_flow,
    "evening-checklist": evening_checklist_flow,
    "full-system-backup": full_system_backup_flow,
    "verify-backup": verify_backup_flow,
    "dependency-updates": dependency_updates_flow,
    "security-patches": security_patches_flow,
    "emergency-shutdown": emergency_shutdown_flow,
    "financial-emergency": financial_emergency_flow,
}
