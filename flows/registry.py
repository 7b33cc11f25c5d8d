"""Every flow by its runbook name, as `tfops run NAME` and the deployments know it."""

from __future__ import annotations

from typing import Any

from flows.backup import full_system_backup_flow, verify_backup_flow
from flows.contracts import fee_review_flow, gas_strategy_flow
from flows.database import database_optimization_flow
from flows.emergency import emergency_shutdown_flow, financial_emergency_flow
from flows.evening import evening_checklist_flow
from flows.incidents import declare_incident_flow, resolve_incident_flow
from flows.maintenance import dependency_updates_flow, security_patches_flow
from flows.maintenance_schedule import monthly_maintenance_flow, weekly_maintenance_flow
from flows.metrics import metrics_review_flow
from flows.morning import morning_checklist_flow
from flows.performance import performance_review_flow
from flows.rate_limit import api_rate_limit_flow
from flows.recovery import (
    backend_recovery_flow,
    data_loss_recovery_flow,
    database_recovery_flow,
    frontend_recovery_flow,
    full_system_recovery_flow,
    recovery_checklist_flow,
)
from flows.remediation import (
    convex_redeploy_flow,
    frontend_rollback_flow,
    rpc_failover_flow,
    rpc_switch_back_flow,
)
from flows.reviews import api_usage_flow, error_logs_flow, security_scan_flow
from flows.security_audit import security_audit_flow
from flows.system_health import system_health_flow
from flows.triage import triage_flow
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
    "database-optimization": database_optimization_flow,
    "performance-review": performance_review_flow,
    "weekly-maintenance": weekly_maintenance_flow,
    "monthly-maintenance": monthly_maintenance_flow,
    "emergency-shutdown": emergency_shutdown_flow,
    "financial-emergency": financial_emergency_flow,
    "declare-incident": declare_incident_flow,
    "resolve-incident": resolve_incident_flow,
    "gas-strategy": gas_strategy_flow,
    "fee-review": fee_review_flow,
    "security-audit": security_audit_flow,
    "api-rate-limit": api_rate_limit_flow,
    "frontend-recovery": frontend_recovery_flow,
    "backend-recovery": backend_recovery_flow,
    "full-system-recovery": full_system_recovery_flow,
    "data-loss-recovery": data_loss_recovery_flow,
    "database-recovery": database_recovery_flow,
    "recovery-checklist": recovery_checklist_flow,
    "triage": triage_flow,
    "frontend-rollback": frontend_rollback_flow,
    "convex-redeploy": convex_redeploy_flow,
    "rpc-failover": rpc_failover_flow,
    "rpc-switch-back": rpc_switch_back_flow,
}
