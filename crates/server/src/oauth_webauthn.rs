//! WebAuthn as the second factor on the OAuth sign-in page (AUTH-2, AUTH-6).
//!
//! After the password step the page embeds the `PublicKeyCredentialRequestOptionsJSON` whose
//! challenge the store issued for the sign-in's (server-held) second-factor ticket, exactly as
//! `/auth/login/second-factor` `{method: "webauthn"}` does. One small inline script — allowed by
//! its SHA-256 in the page's `script-src`, never `unsafe-inline` — calls
//! `navigator.credentials.get`, writes the assertion as `AuthenticationResponseJSON` (base64url
//! fields, the shape `/auth/login/second-factor` takes) into a hidden field and submits the
//! form. The server then verifies it with the same store step as the JSON API
//! (`Webauthn::webauthn_login_finish`). Without JavaScript the WebAuthn form stays hidden and the
//! TOTP and recovery-code forms work as before.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mamori_store::webauthn::{AssertionResponse, RequestOptions};
use sha2::{Digest, Sha256};

use crate::webauthn_api::{AssertionJson, request_json};

/// Largest assertion field accepted (real ones are well under 2 KiB; the form body limit is 16 KiB).
const MAX_ASSERTION: usize = 8 * 1024;

/// The page's only script. It touches nothing but the WebAuthn form; the options are read from
/// the non-executable JSON block before it.
pub(crate) const SCRIPT: &str = "(function(){\
var f=document.getElementById('webauthn-form'),o=document.getElementById('webauthn-options');\
if(!f||!o||!window.PublicKeyCredential||!navigator.credentials)return;\
var pk=JSON.parse(o.textContent).publicKey;\
function dec(s){s=s.replace(/-/g,'+').replace(/_/g,'/');while(s.length%4)s+='=';\
var b=atob(s),u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);return u.buffer;}\
function enc(a){var u=new Uint8Array(a),s='';for(var i=0;i<u.length;i++)s+=String.fromCharCode(u[i]);\
return btoa(s).replace(/\\+/g,'-').replace(/\\//g,'_').replace(/=+$/,'');}\
f.hidden=false;\
f.addEventListener('submit',function(ev){\
if(f.elements.assertion.value)return;ev.preventDefault();\
var req={challenge:dec(pk.challenge),rpId:pk.rpId,timeout:pk.timeout,userVerification:pk.userVerification,\
allowCredentials:pk.allowCredentials.map(function(c){return{type:c.type,id:dec(c.id)};})};\
navigator.credentials.get({publicKey:req}).then(function(c){var r=c.response;\
f.elements.assertion.value=JSON.stringify({id:c.id,rawId:enc(c.rawId),type:c.type,response:{\
clientDataJSON:enc(r.clientDataJSON),authenticatorData:enc(r.authenticatorData),signature:enc(r.signature),\
userHandle:r.userHandle?enc(r.userHandle):null}});f.submit();},\
function(){document.getElementById('webauthn-error').hidden=false;});});\
})();";

/// The `script-src` source that allows exactly [`SCRIPT`].
pub(crate) fn script_source() -> &'static str {
    static SOURCE: LazyLock<String> =
        LazyLock::new(|| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()))));
    &SOURCE
}

/// JSON made safe inside a `<script>` element (`<`, `>` and `&` only occur inside strings, where
/// their `\u` escapes mean the same).
fn script_json(v: &serde_json::Value) -> String {
    v.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// The WebAuthn form (hidden until the script shows it), the options and the script.
/// `ft` is the already escaped form token.
pub(crate) fn form(ft: &str, options: &RequestOptions) -> String {
    let pk = serde_json::json!({"publicKey": request_json(options)["publicKey"].clone()});
    format!(
        "<form method=\"post\" action=\"/oauth/authorize\" id=\"webauthn-form\" hidden>\n\
         <input type=\"hidden\" name=\"form_token\" value=\"{ft}\">\n\
         <input type=\"hidden\" name=\"step\" value=\"second-factor\">\n\
         <input type=\"hidden\" name=\"method\" value=\"webauthn\">\n\
         <input type=\"hidden\" name=\"assertion\" value=\"\">\n\
         <p>Use your security key or passkey.</p>\n\
         <button type=\"submit\">Use security key</button>\n\
         <p id=\"webauthn-error\" role=\"alert\" hidden>The security key did not answer; try again, or use a code below.</p>\n\
         </form>\n\
         <script type=\"application/json\" id=\"webauthn-options\">{json}</script>\n\
         <script>{SCRIPT}</script>\n",
        json = script_json(&pk),
    )
}

/// The `assertion` field (`AuthenticationResponseJSON`) decoded; `None` if it is not one.
pub(crate) fn assertion_of(field: &str) -> Option<AssertionResponse> {
    if field.is_empty() || field.len() > MAX_ASSERTION {
        return None;
    }
    serde_json::from_str::<AssertionJson>(field).ok()?.decode().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_needs_no_escaping_and_its_hash_is_stable() {
        assert!(!SCRIPT.contains("</"), "the script must not close its element");
        assert!(script_source().starts_with("'sha256-") && script_source().ends_with("='"));
        assert_eq!(script_source(), script_source());
    }

    #[test]
    fn json_cannot_break_out_of_its_script_element() {
        let v = serde_json::json!({"rpId": "</script><script>alert(1)</script>&"});
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'), "{s}");
        let back: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(back, v);
    }

    #[test]
    fn malformed_assertions_decode_to_nothing() {
        for bad in ["", "{}", "null", "{\"id\":\"AA\"}", &"x".repeat(MAX_ASSERTION + 1)] {
            assert!(assertion_of(bad).is_none(), "{bad}");
        }
        let ok = r#"{"id":"AQID","rawId":"AQID","type":"public-key","response":{"clientDataJSON":"e30",
            "authenticatorData":"AA","signature":"AA","userHandle":null},"clientExtensionResults":{}}"#;
        let a = assertion_of(ok).map(|a| a.credential_id);
        assert_eq!(a, Some(vec![1, 2, 3]));
    }
}
