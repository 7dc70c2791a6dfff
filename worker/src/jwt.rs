//! JSON Web Tokens (RFC 7519) minted for each connection attempt, so every
//! connection carries its own subject and a fresh `exp`, and a reconnect
//! gets a new token. The key is parsed once per run ([`Minter::new`]); a
//! token costs one signature. Signing is ring's (the same crypto the TLS
//! provider uses), so no second crypto stack is built.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use ring::{hmac, rand::SystemRandom};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use stampede_model::spec::{ClaimValue, JwtAlg, JwtSpec};
use stampede_model::template::Var;

enum Signer {
    Hs256(hmac::Key),
    Rs256(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

/// Mints the tokens of one run.
pub struct Minter {
    signer: Signer,
    rng: SystemRandom,
    /// The encoded header, the same for every token.
    header: String,
    spec: JwtSpec,
}

/// A token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("JWT: {0}")]
pub struct JwtError(String);

impl Minter {
    /// Parses the key of `spec`: the secret's bytes for HS256, a PEM private
    /// key (PKCS#8, or PKCS#1 for RSA) for RS256 and ES256.
    pub fn new(spec: &JwtSpec) -> Result<Minter, JwtError> {
        let rng = SystemRandom::new();
        let key = spec.key.expose().as_bytes();
        let pem = || {
            PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| JwtError(format!("{:?} needs a PEM private key: {e}", spec.alg)))
        };
        let signer = match spec.alg {
            JwtAlg::HS256 => {
                if key.is_empty() {
                    return Err(JwtError("the HS256 secret is empty".into()));
                }
                Signer::Hs256(hmac::Key::new(hmac::HMAC_SHA256, key))
            }
            JwtAlg::RS256 => {
                let pair = match pem()? {
                    PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
                    PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
                    _ => return Err(JwtError("RS256 needs an RSA key (PKCS#8 or PKCS#1 PEM)".into())),
                };
                Signer::Rs256(pair.map_err(|e| JwtError(format!("not a usable RSA key: {e}")))?)
            }
            JwtAlg::ES256 => {
                let PrivateKeyDer::Pkcs8(der) = pem()? else {
                    return Err(JwtError(
                        "ES256 needs a P-256 key in PKCS#8 PEM (convert: openssl pkcs8 -topk8 -nocrypt)"
                            .into(),
                    ));
                };
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng)
                        .map_err(|e| JwtError(format!("not a usable P-256 key: {e}")))?;
                Signer::Es256(pair)
            }
        };
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{:?}","typ":"JWT"}}"#, spec.alg));
        Ok(Minter { signer, rng, header, spec: spec.clone() })
    }

    /// A token for one connection attempt; `var` renders the claims'
    /// template variables (`{{conn}}`, `{{worker}}`, ...).
    pub fn mint(&self, mut var: impl FnMut(&Var, &mut String)) -> Result<String, JwtError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut claims = String::from("{");
        let mut text = String::new();
        for (name, value) in &self.spec.claims {
            push_json_string(&mut claims, name);
            claims.push(':');
            match value {
                ClaimValue::Text(t) => {
                    text.clear();
                    t.render_into(&mut text, &mut var);
                    push_json_string(&mut claims, &text);
                }
                ClaimValue::Json(json) => claims.push_str(json),
            }
            claims.push(',');
        }
        claims.push_str(&format!(r#""iat":{now},"exp":{}}}"#, now + self.spec.expires_in_s));

        let mut token = self.header.clone();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = match &self.signer {
            Signer::Hs256(key) => hmac::sign(key, token.as_bytes()).as_ref().to_vec(),
            Signer::Rs256(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, token.as_bytes(), &mut sig)
                    .map_err(|_| JwtError("RSA signing failed".into()))?;
                sig
            }
            Signer::Es256(pair) => pair
                .sign(&self.rng, token.as_bytes())
                .map_err(|_| JwtError("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec(),
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a str always serializes"));
}

#[cfg(test)]
mod tests {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};
    use stampede_model::Template;
    use stampede_model::spec::{JwtPlacement, Secret};

    use super::*;

    fn spec(alg: JwtAlg, key: &str) -> JwtSpec {
        JwtSpec {
            alg,
            key: Secret::new(key),
            claims: vec![
                ("sub".into(), ClaimValue::Text(Template::parse("user-{{conn}}").unwrap())),
                ("admin".into(), ClaimValue::Json("false".into())),
            ],
            expires_in_s: 300,
            send_as: JwtPlacement::Bearer,
        }
    }

    fn parts(token: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>) {
        let p: Vec<&str> = token.split('.').collect();
        assert_eq!(p.len(), 3, "{token}");
        let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (json(p[0]), json(p[1]), URL_SAFE_NO_PAD.decode(p[2]).unwrap())
    }

    fn conn7(v: &Var, out: &mut String) {
        assert_eq!(*v, Var::Conn);
        out.push('7');
    }

    #[test]
    fn hs256_matches_an_independent_hmac() {
        let m = Minter::new(&spec(JwtAlg::HS256, "s3cret")).unwrap();
        let token = m.mint(conn7).unwrap();
        let (header, claims, sig) = parts(&token);
        assert_eq!(header["alg"], "HS256");
        assert_eq!(claims["sub"], "user-7");
        assert_eq!(claims["admin"], false);
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
        let signed = &token[..token.rfind('.').unwrap()];
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"s3cret");
        hmac::verify(&key, signed.as_bytes(), &sig).expect("signature verifies");
        assert!(hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, b"other"), signed.as_bytes(), &sig).is_err());
    }

    #[test]
    fn es256_signatures_verify_with_the_public_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let m = Minter::new(&spec(JwtAlg::ES256, &pem)).unwrap();
        let token = m.mint(conn7).unwrap();
        let (header, _, sig) = parts(&token);
        assert_eq!(header["alg"], "ES256");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref());
        public.verify(&token.as_bytes()[..token.rfind('.').unwrap()], &sig).expect("verifies");
    }

    #[test]
    fn bad_keys_are_clear_errors() {
        assert!(Minter::new(&spec(JwtAlg::HS256, "")).is_err());
        let e = Minter::new(&spec(JwtAlg::RS256, "not a pem")).err().unwrap();
        assert!(e.to_string().contains("PEM"), "{e}");
        let e = Minter::new(&spec(
            JwtAlg::ES256,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ))
        .err()
        .unwrap();
        assert!(e.to_string().contains("P-256"), "{e}");
    }
}
