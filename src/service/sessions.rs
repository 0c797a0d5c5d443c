//! Single sign-on sessions: a person the identity provider vouched for gets a registered kca
//! token (the same model as every API token: listed, revocable, short-lived), audited with who
//! the provider said they are.

use super::Actor;
use crate::app::App;
use crate::error::ApiError;
use crate::store::TokenRecord;
use crate::token::{ALL_CLUSTERS, Person, Scope, TokenError, TokenRequest};

/// What a session token may do: issue kubeconfigs for its person, and read the clusters whose
/// access rules admit them (the guard and the handlers narrow both to those clusters).
pub const SESSION_SCOPES: [Scope; 1] = [Scope::KubeconfigsIssue];

/// Above this many bytes of provider groups, a session keeps only the groups some cluster's access
/// rules name: a browser drops a cookie beyond 4 KiB, and people in hundreds of groups exist.
const MAX_GROUP_BYTES: usize = 1500;

/// The person, with their provider groups narrowed to those the access rules use when they are
/// many. A rule added later then applies to them at their next sign-in.
fn keep_token_small(app: &App, mut person: Person) -> Person {
    if person.idp_groups.iter().map(|g| g.len() + 3).sum::<usize>() <= MAX_GROUP_BYTES {
        return person;
    }
    let named: std::collections::HashSet<String> = app
        .published
        .snapshots()
        .iter()
        .flat_map(|s| s.cluster.policy.access_rules.iter().map(|r| r.idp_group.clone()))
        .collect();
    person.idp_groups.retain(|g| named.contains(g));
    person
}

/// Mint the session of `person`; answers the token and its record.
pub async fn sign_in(
    app: &App,
    person: Person,
    lifetime: std::time::Duration,
    remote_addr: Option<String>,
    how: &'static str,
) -> Result<(String, TokenRecord), ApiError> {
    let person = keep_token_small(app, person);
    let actor = Actor { subject: person.user.clone(), remote_addr, token_id: "sign-in".into() };
    let ttl = time::Duration::try_from(lifetime).map_err(ApiError::internal)?.min(app.tokens.max_lifetime());
    let request = TokenRequest {
        subject: person.user.clone(),
        scopes: SESSION_SCOPES.to_vec(),
        clusters: vec![ALL_CLUSTERS.to_string()],
        groups: None,
        max_ttl: None,
        ttl,
        person: Some(person.clone()),
    };
    let (token, record) = app
        .mint_token(&request, &person.user, |record| {
            actor.audit(
                record.created_at,
                "session.create",
                "token",
                record.id.to_string(),
                None,
                serde_json::json!({
                    "via": how,
                    "idp_issuer": person.iss,
                    "idp_subject": person.sub,
                    "idp_groups": person.idp_groups,
                    "user": person.user,
                    "expires_at": record.expires_at.unix_timestamp(),
                }),
            )
        })
        .await
        .map_err(|e| match e {
            TokenError::Invalid(detail) => ApiError::invalid("session", detail),
            other => other.into(),
        })?;
    tracing::info!(token.id = %record.id, user = %person.user, oidc.via = how, "signed in through single sign-on");
    Ok((token, record))
}
