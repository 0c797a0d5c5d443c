//! Minting, revoking and re-keying API tokens, each audited.

use uuid::Uuid;

use super::Actor;
use crate::app::App;
use crate::error::ApiError;
use crate::store::{StoreError, TokenRecord};
use crate::token::{TokenError, TokenRequest};

/// Mint a token and register it; answers the token (shown once) and its record.
pub async fn mint(
    app: &App,
    actor: &Actor,
    request: &TokenRequest,
) -> Result<(String, TokenRecord), ApiError> {
    let (token, record) = app
        .mint_token(request, &actor.subject, |record| {
            actor.audit(
                record.created_at,
                "token.create",
                "token",
                record.id.to_string(),
                None,
                serde_json::json!({
                    "subject": record.subject,
                    "scopes": record.scopes,
                    "clusters": record.clusters,
                    "groups": record.groups,
                    "max_ttl_seconds": record.max_ttl,
                    "expires_at": record.expires_at.unix_timestamp(),
                }),
            )
        })
        .await
        .map_err(|e| match e {
            TokenError::Invalid(detail) => ApiError::invalid("token", detail),
            other => other.into(),
        })?;
    tracing::info!(token.id = %record.id, token.subject = %record.subject, actor = %actor.subject, "token minted");
    Ok((token, record))
}

/// Revoke a token, if `may_revoke` allows it (else, as for an unknown id, 404): refused on its
/// next request here, and by every replica once they hear of it.
pub async fn revoke(
    app: &App,
    actor: &Actor,
    id: Uuid,
    may_revoke: impl FnOnce(&TokenRecord) -> bool,
) -> Result<(), ApiError> {
    let not_found = || ApiError::not_found(format!("no token {id}"));
    let record = match app.store.get_token(id).await {
        Ok(record) if may_revoke(&record) => record,
        Ok(_) | Err(StoreError::NotFound) => return Err(not_found()),
        Err(other) => return Err(other.into()),
    };
    let now = app.now();
    let audit = actor.audit(
        now,
        "token.revoke",
        "token",
        id.to_string(),
        None,
        serde_json::json!({ "subject": record.subject }),
    );
    let revoked = app.store.revoke_token(id, now, &audit).await.map_err(|e| match e {
        StoreError::NotFound => not_found(),
        other => other.into(),
    })?;
    app.tokens.remember(&revoked);
    tracing::info!(token.id = %id, actor = %actor.subject, "token revoked");
    Ok(())
}

/// Sign new tokens with a new key; answers its id.
pub async fn rotate_signing_key(app: &App, actor: &Actor) -> Result<i32, ApiError> {
    let now = app.now();
    let audit = |key_id: i32| {
        actor.audit(now, "token_key.rotate", "token_key", key_id.to_string(), None, serde_json::json!({}))
    };
    let key_id = app.tokens.rotate_key(app.store.as_ref(), app.keyring.master(), audit).await.map_err(
        |e| match e {
            TokenError::Store(StoreError::Conflict(_)) => {
                ApiError::conflict("the signing key was rotated concurrently; retry")
            }
            TokenError::Store(store) => store.into(),
            other => ApiError::internal(other),
        },
    )?;
    tracing::info!(key_id, actor = %actor.subject, "token signing key rotated");
    Ok(key_id)
}
