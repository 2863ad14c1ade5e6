//! The audit log: who did what, to which package or user, when and from where.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::PageRequest;
use crate::closed_set::closed_set;

closed_set!(
    /// What happened.
    AuditAction, "action", {
    Publish => "publish",
    Yank => "yank",
    Restore => "restore",
    Describe => "describe",
    Delete => "delete",
    UploadRefused => "upload_refused",
    UploadOpen => "upload_open",
    UploadCancel => "upload_cancel",
    Login => "login",
    LoginFailed => "login_failed",
    Logout => "logout",
    UserCreate => "user_create",
    UserDelete => "user_delete",
    RoleChange => "role_change",
    PasswordChange => "password_change",
    TokenCreate => "token_create",
    TokenRevoke => "token_revoke",
    OwnerAdd => "owner_add",
    OwnerRemove => "owner_remove",
    TeamCreate => "team_create",
    MemberAdd => "member_add",
    MemberRemove => "member_remove",
    KeyAdd => "key_add",
    KeyRemove => "key_remove",
    SigstoreIdentityAdd => "sigstore_identity_add",
    SigstoreIdentityRemove => "sigstore_identity_remove",
    MirrorPublish => "mirror_publish",
    MirrorFailure => "mirror_failure",
    SignatureAttach => "signature_attach",
    AgentRefused => "agent_refused",
    AgentForget => "agent_forget",
    AssignmentCreate => "assignment_create",
    AssignmentChange => "assignment_change",
    AssignmentDelete => "assignment_delete",
    RolloutPause => "rollout_pause",
    RolloutCreate => "rollout_create",
    RolloutApprove => "rollout_approve",
    RolloutResume => "rollout_resume",
    RolloutAbort => "rollout_abort",
    RolloutStep => "rollout_step",
    RetentionRun => "retention_run",
    AccessDenied => "access_denied",
    }
);

closed_set!(
    /// Whether what an event records was done, or refused by the gate (a role, a name scope,
    /// ownership): refusals are recorded as well as changes.
    #[derive(Default)]
    AuditOutcome, "outcome", {
        #[default]
        Done => "done",
        Refused => "refused",
    }
);

/// One event to record. Never holds a secret: no password, no token secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    pub token_name: Option<String>,
    pub action: AuditAction,
    pub package: Option<String>,
    pub package_id: Option<i64>,
    pub subject: Option<String>,
    pub address: Option<String>,
    pub request_id: Option<String>,
    pub detail: String,
    pub outcome: AuditOutcome,
}

impl NewAuditEvent {
    pub fn new(action: AuditAction) -> Self {
        Self {
            actor_id: None,
            actor: None,
            token_name: None,
            action,
            package: None,
            package_id: None,
            subject: None,
            address: None,
            request_id: None,
            detail: String::new(),
            outcome: action.outcome(),
        }
    }

    /// The same event, as refused, for `reason`.
    pub fn refused(mut self, reason: impl Into<String>) -> Self {
        self.outcome = AuditOutcome::Refused;
        self.detail = reason.into();
        self
    }
}

impl AuditAction {
    /// The outcome an event of this action has unless said otherwise: the actions that
    /// name a refusal are refused.
    pub fn outcome(self) -> AuditOutcome {
        match self {
            AuditAction::UploadRefused
            | AuditAction::LoginFailed
            | AuditAction::AgentRefused
            | AuditAction::AccessDenied => AuditOutcome::Refused,
            _ => AuditOutcome::Done,
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The user who acted, when known (a failed login names the username tried).
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    /// The API token used, by name.
    pub token_name: Option<String>,
    pub action: AuditAction,
    pub package: Option<String>,
    pub package_id: Option<i64>,
    /// The user acted upon.
    pub subject: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    pub request_id: Option<String>,
    pub detail: String,
    /// Done, or refused by the gate.
    pub outcome: AuditOutcome,
}

/// Filters of the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<AuditAction>,
    pub outcome: Option<AuditOutcome>,
    pub package: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page: PageRequest,
}
