//! The policy in force and the secrets it names, swapped whole on reload.
//!
//! A connection takes one snapshot and decides every request of that connection with it,
//! so a reload never mixes two policies inside one exchange.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use bottleneck_policy::Policy;
use http::HeaderValue;

/// A policy with the secret of every `token_ref` it names.
pub struct Snapshot {
    /// The validated policy.
    pub policy: Policy,
    /// Secrets by `token_ref`. Invariant: one entry for every `token_ref` in `policy`.
    secrets: HashMap<String, Secret>,
}

/// A credential value. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a policy cannot be put in force.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `token_ref` variables missing from the gateway's environment.
    #[error("the policy needs the environment variable(s) {}, which the gateway does not have; set them in the gateway's environment (never the agent's)", .0.join(", "))]
    Missing(Vec<String>),
    /// A secret that cannot be sent in a header (line breaks, control characters).
    #[error("the environment variable {0} holds characters that cannot be sent in an HTTP header")]
    Unusable(String),
}

impl Snapshot {
    /// Pair a policy with its secrets, looked up with `env` (the process environment in
    /// production). Every missing variable is named; a policy is never half-armed.
    pub fn new(
        policy: Policy,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Snapshot, SecretError> {
        let mut secrets = HashMap::new();
        let mut missing = Vec::new();
        for auth in policy.routes().iter().filter_map(|r| r.auth()) {
            if secrets.contains_key(&auth.token_ref) || missing.contains(&auth.token_ref) {
                continue;
            }
            match env(&auth.token_ref) {
                Some(value) if !value.is_empty() => {
                    if HeaderValue::from_str(&value).is_err() {
                        return Err(SecretError::Unusable(auth.token_ref.clone()));
                    }
                    secrets.insert(auth.token_ref.clone(), Secret(value));
                }
                _ => missing.push(auth.token_ref.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(SecretError::Missing(missing));
        }
        Ok(Snapshot { policy, secrets })
    }

    /// The `Authorization` value for an auth rule, marked sensitive so hyper's h2 encoder
    /// never indexes it.
    pub fn authorization(&self, auth: &bottleneck_policy::Auth) -> Option<HeaderValue> {
        let secret = self.secrets.get(&auth.token_ref)?;
        let mut value =
            HeaderValue::from_str(&format!("{} {}", auth.scheme.as_str(), secret.0)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// The snapshot in force, shared by every listener.
#[derive(Clone)]
pub struct PolicyHandle(Arc<RwLock<Arc<Snapshot>>>);

impl PolicyHandle {
    /// Start with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        PolicyHandle(Arc::new(RwLock::new(Arc::new(snapshot))))
    }

    /// The snapshot in force now.
    pub fn current(&self) -> Arc<Snapshot> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Put a new snapshot in force; connections already open keep theirs.
    pub fn replace(&self, snapshot: Snapshot) {
        let mut guard = match self.0.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_yaml(
            "version: 1\nroutes:\n  - host: a.example\n    auth: {scheme: Bearer, token_ref: A_TOKEN}\n  - host: b.example\n    auth: {scheme: token, token_ref: B_TOKEN}\n",
            "p.yaml",
        )
        .unwrap()
    }

    #[test]
    fn every_missing_secret_is_named_and_the_policy_is_refused() {
        let err = Snapshot::new(policy(), |_| None).err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("A_TOKEN") && text.contains("B_TOKEN"),
            "{text}"
        );
    }

    #[test]
    fn a_secret_with_a_line_break_is_refused_without_showing_it() {
        let err = Snapshot::new(policy(), |_| Some("abc\r\nX-Evil: 1".into()))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("X-Evil"));
    }

    #[test]
    fn authorization_uses_the_scheme_and_is_sensitive() {
        let snap = Snapshot::new(policy(), |name| Some(format!("secret-of-{name}"))).unwrap();
        let auth = snap.policy.routes()[1].auth().unwrap();
        let value = snap.authorization(auth).unwrap();
        assert_eq!(value.to_str().unwrap(), "token secret-of-B_TOKEN");
        assert!(value.is_sensitive());
        assert!(!format!("{:?}", snap.secrets).contains("secret-of"));
    }
}
