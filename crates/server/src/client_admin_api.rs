//! The OAuth client registry over HTTP (AUTH-6): what `mamori client add|list|remove` does,
//! through the same store operation and the same registration rules
//! (`mamori_store::oauth::ClientRegistration`).
//!
//! ```text
//! GET    /admin/clients                               administrators, auditors
//! POST   /admin/clients {id, name, scope, redirect_uris}          an app used by people
//! POST   /admin/clients {id, name, scope, jwks, role}             a backend service
//! DELETE /admin/clients/{id}                          administrators; its tokens stop working
//! ```

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use mamori_access::Operation;
use mamori_store::Action;
use mamori_store::clock::fhir_instant;
use mamori_store::oauth::{Client, ClientKind, ClientRegistration};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::lifecycle_api::{bad, body_within, json_response};

type Result<T> = std::result::Result<T, ApiError>;

const CLIENT: Option<&str> = Some("oauth-client");

/// A registration carries a JWK Set of up to 64 KiB (`ClientKeys::parse`), plus the rest.
const MAX_CLIENT_BODY: usize = 72 * 1024;

fn client_json(c: &Client) -> Value {
    let mut v = json!({
        "id": c.client_id,
        "name": c.name,
        "kind": c.kind.as_str(),
        "scope": c.scope.to_string(),
        "created": fhir_instant(c.created_us),
    });
    match &c.kind {
        ClientKind::Public { redirect_uris } => v["redirect_uris"] = json!(redirect_uris),
        ClientKind::System { jwks, role } => {
            v["role"] = json!(role.as_str());
            // Public keys only (private key material is refused at registration).
            v["jwks"] = serde_json::from_str(jwks).unwrap_or(Value::Null);
        }
    }
    v
}

pub async fn list(State(s): State<Arc<Shared>>, Extension(auth): Extension<Authenticated>) -> Result<Response> {
    auth.permit(&s, Operation::AccountReview, Action::OAuthClientList, CLIENT).await?;
    let clients = s.store.oauth_clients(auth.ctx.clone()).await?;
    Ok(json_response(StatusCode::OK, &json!({"clients": clients.iter().map(client_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    id: String,
    name: String,
    scope: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    /// A JWK Set (`{"keys": […]}`) or one JWK, as JSON (or as a string holding it).
    #[serde(default)]
    jwks: Option<Value>,
    #[serde(default)]
    role: Option<String>,
}

/// Registers a SMART app (redirect URIs) or a backend service (public keys and a staff job type).
pub async fn register(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    raw: Body,
) -> Result<Response> {
    const SHAPE: &str = "{\"id\": …, \"name\": …, \"scope\": …, \"redirect_uris\": […]} or {\"id\": …, \"name\": …, \"scope\": …, \"jwks\": {\"keys\": […]}, \"role\": …}";
    auth.permit(&s, Operation::AccountManage, Action::OAuthClientRegister, CLIENT).await?;
    let req: NewClient = body_within(&s, &auth, raw, SHAPE, MAX_CLIENT_BODY, CLIENT).await?;
    let jwks = match req.jwks {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(v @ Value::Object(_)) => Some(v.to_string()),
        Some(_) => return Err(auth.refuse(&s, bad("jwks must be a JWK Set or a JWK (a JSON object)"), CLIENT).await),
    };
    let registration = ClientRegistration {
        client_id: req.id,
        name: req.name,
        scope: req.scope,
        redirect_uris: req.redirect_uris,
        jwks,
        role: req.role,
    };
    let client = s.store.register_oauth_client(auth.ctx.clone(), registration).await?;
    Ok(json_response(StatusCode::CREATED, &client_json(&client)))
}

/// Removes a client; every token it holds stops working at once.
pub async fn remove(
    State(s): State<Arc<Shared>>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<String>,
) -> Result<Response> {
    auth.permit(&s, Operation::AccountManage, Action::OAuthClientRemove, CLIENT).await?;
    let revoked = s.store.remove_oauth_client(auth.ctx.clone(), id.clone()).await?;
    Ok(json_response(StatusCode::OK, &json!({"id": id, "status": "removed", "token_families_revoked": revoked})))
}
