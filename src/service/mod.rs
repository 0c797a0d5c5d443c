//! The domain operations of kca: each one owns its transaction, its audit entry and what it
//! publishes afterwards (signers, snapshots, CRLs), and answers a domain error. HTTP handlers
//! parse, authorize, call one operation and render its result.

pub mod authorities;
pub mod clusters;
pub mod issuance;
pub mod publish;
pub mod revocation;
pub mod service_account;
pub mod sessions;
pub mod tokens;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::AuditEntry;

/// Who asks for an operation: recorded in the audit trail and on what it issues.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The token's subject (`anonymous` without one).
    pub subject: String,
    pub remote_addr: Option<String>,
    /// What issuance rate limits count against: the token's id.
    pub token_id: String,
}

impl Actor {
    /// An audit entry for an action of this actor.
    pub fn audit(
        &self,
        at: OffsetDateTime,
        action: &str,
        object_type: &str,
        object_id: impl Into<String>,
        cluster_id: Option<Uuid>,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            at,
            actor: self.subject.clone(),
            action: action.to_string(),
            object_type: object_type.to_string(),
            object_id: object_id.into(),
            cluster_id,
            remote_addr: self.remote_addr.clone(),
            details,
        }
    }
}
