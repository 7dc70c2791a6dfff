//! The fleet token: a secret the controller and its workers share. A
//! worker proves it knows the token in its Hello with an HMAC over its id
//! and send time, so the token itself never crosses the wire; the
//! controller refuses a Hello without a valid proof, or sent too long ago
//! or too far ahead (a captured Hello replays only within that window;
//! TLS on the control plane closes it).

use std::fmt;
use std::path::Path;

use ring::hmac;

/// How far a Hello's send time may be from the controller's clock (clock
/// differences between hosts included).
pub const HELLO_WINDOW_US: i64 = 5 * 60 * 1_000_000;

/// The environment variable holding the token's value.
pub const TOKEN_ENV: &str = "STAMPEDE_FLEET_TOKEN";
/// The environment variable naming a file that holds the token.
pub const TOKEN_FILE_ENV: &str = "STAMPEDE_FLEET_TOKEN_FILE";

/// Shortest token accepted, bytes: a guessable token is no lock.
pub const MIN_TOKEN: usize = 16;

/// A fleet token. Debug prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetToken(Vec<u8>);

impl fmt::Debug for FleetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetToken(<redacted>)")
    }
}

impl FleetToken {
    /// A token from its bytes; at least [`MIN_TOKEN`] of them.
    pub fn new(bytes: Vec<u8>) -> Result<FleetToken, String> {
        if bytes.len() < MIN_TOKEN {
            return Err(format!("the fleet token has {} bytes: give at least {MIN_TOKEN}", bytes.len()));
        }
        Ok(FleetToken(bytes))
    }

    /// A fresh random token (what a controller gives its local workers).
    pub fn random() -> FleetToken {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).expect("the OS random source works");
        FleetToken(hex(&bytes).into_bytes())
    }

    /// The token as an environment variable's value (to hand it to a
    /// child process: never its command line).
    pub fn as_env_value(&self) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(&self.0).to_os_string()
    }

    /// The token from `file` (a flag), else the file named by
    /// `STAMPEDE_FLEET_TOKEN_FILE`, else `STAMPEDE_FLEET_TOKEN`'s value;
    /// `None` when none is given. A trailing newline is not part of it.
    pub fn from_sources(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<FleetToken>, String> {
        let from_file = |path: &Path| {
            let mut bytes =
                std::fs::read(path).map_err(|e| format!("fleet token file {}: {e}", path.display()))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            FleetToken::new(bytes).map(Some).map_err(|e| format!("{}: {e}", path.display()))
        };
        if let Some(path) = file {
            return from_file(path);
        }
        if let Some(path) = env(TOKEN_FILE_ENV).filter(|p| !p.is_empty()) {
            return from_file(Path::new(&path));
        }
        match env(TOKEN_ENV).filter(|v| !v.is_empty()) {
            Some(value) => {
                FleetToken::new(value.into_bytes()).map(Some).map_err(|e| format!("{TOKEN_ENV}: {e}"))
            }
            None => Ok(None),
        }
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    fn message(worker_id: &str, sent_at_unix_us: i64) -> Vec<u8> {
        format!("stampede-fleet-hello-v1|{worker_id}|{sent_at_unix_us}").into_bytes()
    }

    /// The proof a Hello carries.
    pub fn prove(&self, worker_id: &str, sent_at_unix_us: i64) -> Vec<u8> {
        hmac::sign(&self.key(), &FleetToken::message(worker_id, sent_at_unix_us)).as_ref().to_vec()
    }

    /// Whether `presented` is this token (compared in constant time, through
    /// their HMACs of one message: a mismatch's position is not revealed).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let message = b"stampede-presented-token-v1";
        let theirs = hmac::sign(&FleetToken(presented.to_vec()).key(), message);
        hmac::verify(&self.key(), message, theirs.as_ref()).is_ok()
    }

    /// Checks a Hello's proof (in constant time) and its send time against
    /// `now_unix_us`; the error says why, for the refusal and the log.
    pub fn check(
        &self,
        worker_id: &str,
        sent_at_unix_us: i64,
        proof: &[u8],
        now_unix_us: i64,
    ) -> Result<(), String> {
        if proof.is_empty() {
            return Err("no fleet token: give the worker the controller's token (--token-file or STAMPEDE_FLEET_TOKEN)".into());
        }
        hmac::verify(&self.key(), &FleetToken::message(worker_id, sent_at_unix_us), proof)
            .map_err(|_| "wrong fleet token".to_string())?;
        if (now_unix_us - sent_at_unix_us).abs() > HELLO_WINDOW_US {
            return Err(
                "the Hello was sent more than 5 minutes from now (a replay, or clocks far apart)".into()
            );
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_proves_the_token_without_carrying_it() {
        let token = FleetToken::new(b"0123456789abcdef-shared".to_vec()).unwrap();
        let proof = token.prove("w1", 1_000_000);
        assert!(!proof.windows(16).any(|w| w == b"0123456789abcdef"), "the token is not in the proof");
        assert_eq!(token.check("w1", 1_000_000, &proof, 2_000_000), Ok(()));
        let other = FleetToken::new(b"another-token-of-16+".to_vec()).unwrap();
        assert_eq!(other.check("w1", 1_000_000, &proof, 2_000_000), Err("wrong fleet token".into()));
        assert!(token.check("w2", 1_000_000, &proof, 2_000_000).is_err(), "bound to the worker id");
        assert!(token.check("w1", 1_000_001, &proof, 2_000_000).is_err(), "bound to the send time");
        assert!(token.check("w1", 1_000_000, &[], 2_000_000).unwrap_err().contains("no fleet token"));
        let late = 1_000_000 + HELLO_WINDOW_US + 1;
        assert!(token.check("w1", 1_000_000, &proof, late).unwrap_err().contains("5 minutes"));
        assert!(!format!("{token:?}").contains("0123"));
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment_and_must_be_long() {
        let dir = std::env::temp_dir().join(format!("stampede-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-the-file-0123456789\n").unwrap();
        let env = |name: &str| (name == TOKEN_ENV).then(|| "from-the-env-0123456789".to_string());
        let t = FleetToken::from_sources(Some(&file), env).unwrap().unwrap();
        assert_eq!(t, FleetToken::new(b"from-the-file-0123456789".to_vec()).unwrap(), "the flag wins");
        let t = FleetToken::from_sources(None, env).unwrap().unwrap();
        assert_eq!(t, FleetToken::new(b"from-the-env-0123456789".to_vec()).unwrap());
        assert_eq!(FleetToken::from_sources(None, |_| None), Ok(None));
        let short = |name: &str| (name == TOKEN_ENV).then(|| "short".to_string());
        assert!(FleetToken::from_sources(None, short).unwrap_err().contains("at least 16"));
        assert!(FleetToken::from_sources(Some(&dir.join("missing")), |_| None).is_err());
        assert_ne!(FleetToken::random(), FleetToken::random());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
