//! OpenID Connect for SMART apps (AUTH-6: `openid fhirUser`): the ID token in the token
//! response, the key set it verifies against, and OpenID Provider discovery.
//!
//! ```text
//! GET /.well-known/openid-configuration   OpenID Provider metadata (issuer = the OAuth issuer)
//! GET /oauth/jwks                          the public signing key (JWK Set)
//! ```
//!
//! The ID token is signed ES256 by the server's key (`mamori_access::oidc`, generated at the first
//! start and kept sealed in the database). Claims: `iss` (the issuer of the discovery documents),
//! `sub` (the account name), `aud` (the client id), `iat`, `exp` (as the access token), `nonce`
//! (if the app sent one) and, with `fhirUser`, the absolute URL of the account's Practitioner
//! (staff, linked by the operator) or Patient (patient accounts), when it has one.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use mamori_access::oidc::{self, IdClaims};
use mamori_store::oauth::Tokens;
use serde_json::json;

use crate::Shared;
use crate::listener::ConnInfo;
use crate::oauth_api::{root, token_error, token_json};

/// Whether ID tokens are offered (the server has its signing key).
pub(crate) fn enabled(s: &Shared) -> bool {
    s.oauth.id_token_key.is_some()
}

/// The ID token for tokens just issued by a code exchange, if `openid` was granted; `Err` when it
/// could not be made (the token response fails rather than silently lacking it).
pub(crate) async fn id_token(s: &Shared, t: &Tokens, client_id: &str, root: &str) -> Result<Option<String>, ()> {
    let (Some(key), Some(account)) = (&s.oauth.id_token_key, &t.account) else { return Ok(None) };
    if !t.scope.openid {
        return Ok(None);
    }
    let fhir_user = if t.scope.fhir_user {
        s.store.fhir_user_of(account.clone()).await.map_err(|_| ())?.map(|r| format!("{root}/fhir/{r}"))
    } else {
        None
    };
    let iat = s.now_us().div_euclid(1_000_000);
    let claims = IdClaims {
        iss: root.to_string(),
        sub: account.clone(),
        aud: client_id.to_string(),
        iat,
        exp: iat + t.expires_in,
        nonce: t.nonce.clone(),
        fhir_user,
    };
    key.sign(&claims).map(Some).map_err(|_| ())
}

fn not_offered() -> Response {
    token_error(StatusCode::NOT_FOUND, "not_found", "OpenID Connect is not enabled on this server")
}

fn cacheable(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /oauth/jwks`.
pub(crate) async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    match &s.oauth.id_token_key {
        Some(key) => cacheable(token_json(StatusCode::OK, key.jwks())),
        None => not_offered(),
    }
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3).
pub(crate) async fn configuration(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if !enabled(&s) {
        return not_offered();
    }
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let root = root(&s, req.headers(), conn.as_ref());
    let smart = crate::oauth_api::smart_document(&s, &root);
    let doc = json!({
        "issuer": root,
        "authorization_endpoint": smart["authorization_endpoint"],
        "token_endpoint": smart["token_endpoint"],
        "revocation_endpoint": smart["revocation_endpoint"],
        "jwks_uri": format!("{root}/oauth/jwks"),
        "scopes_supported": smart["scopes_supported"],
        "response_types_supported": ["code"],
        "grant_types_supported": smart["grant_types_supported"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [oidc::ALGORITHM],
        "token_endpoint_auth_methods_supported": smart["token_endpoint_auth_methods_supported"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
    });
    cacheable(token_json(StatusCode::OK, doc))
}

/// The longest `nonce` accepted (it comes back in the ID token).
pub(crate) const MAX_NONCE: usize = 512;

/// A request's `nonce`, if acceptable: printable ASCII, at most [`MAX_NONCE`] characters.
pub(crate) fn nonce_ok(n: &str) -> bool {
    n.len() <= MAX_NONCE && n.bytes().all(|b| (0x20..0x7f).contains(&b))
}
