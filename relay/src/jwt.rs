//! Optional access control: with a JWT secret configured, an upgrade must
//! carry an HS256 token signed with it (in `Authorization: Bearer`, or the
//! `access_token` / `token` query parameter) whose `exp` has not passed;
//! otherwise the relay answers `401`. Enough to test a load generator's
//! token handling against a real check, not an identity provider.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// Longest token accepted; longer ones are refused before decoding.
const MAX_TOKEN: usize = 4096;

/// The HS256 secret tokens must be signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    /// A secret from its bytes (empty is refused by the caller).
    pub fn new(bytes: Vec<u8>) -> JwtSecret {
        JwtSecret(bytes)
    }

    /// The secret as an environment variable's value (to hand it to a
    /// relay process).
    pub fn as_os_str(&self) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(&self.0)
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// Why a token was refused (for the 401 body and debug logs).
pub(crate) fn verify(token: Option<&str>, secret: &JwtSecret, now_s: u64) -> Result<(), &'static str> {
    let token = token.ok_or("no token: send Authorization: Bearer <jwt> or ?access_token=<jwt>")?;
    if token.len() > MAX_TOKEN {
        return Err("token too long");
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three dot-separated parts)");
    };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| "not base64url");
    let header: serde_json::Value = serde_json::from_slice(&decode(header)?).map_err(|_| "bad header")?;
    if header["alg"] != "HS256" {
        return Err("only HS256 tokens are accepted");
    }
    let signed = &token[..token.len() - sig.len() - 1];
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.0);
    hmac::verify(&key, signed.as_bytes(), &decode(sig)?).map_err(|_| "bad signature")?;
    let claims: serde_json::Value = serde_json::from_slice(&decode(claims)?).map_err(|_| "bad claims")?;
    match claims["exp"].as_u64() {
        Some(exp) if exp > now_s => Ok(()),
        Some(_) => Err("token expired"),
        None => Err("token has no exp"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &[u8], claims: &str) -> String {
        let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let signed = format!("{head}.{}", URL_SAFE_NO_PAD.encode(claims));
        let sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn accepts_only_fresh_tokens_signed_with_the_secret() {
        let secret = JwtSecret::new(b"right".to_vec());
        let ok = token(b"right", r#"{"sub":"a","exp":2000}"#);
        assert_eq!(verify(Some(&ok), &secret, 1000), Ok(()));
        assert_eq!(verify(Some(&ok), &secret, 2000), Err("token expired"));
        assert_eq!(verify(Some(&token(b"wrong", r#"{"exp":2000}"#)), &secret, 1000), Err("bad signature"));
        assert_eq!(verify(Some(&token(b"right", r#"{"sub":"a"}"#)), &secret, 1000), Err("token has no exp"));
        assert!(verify(None, &secret, 1000).is_err());
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"x".repeat(10_000)] {
            assert!(verify(Some(junk), &secret, 1000).is_err(), "{junk:.20}");
        }
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"exp":2000}"#)
        );
        assert_eq!(verify(Some(&none_alg), &secret, 1000), Err("only HS256 tokens are accepted"));
        assert!(!format!("{secret:?}").contains("right"));
    }
}
