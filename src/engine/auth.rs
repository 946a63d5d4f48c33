//! Registry credentials for a pull: the job user's own `~/.docker/config.json`, read as that user
//! (through the `HostProbe` seam, before any thread starts) and reduced to the one entry for the
//! image's registry. Credentials for other registries are never sent; they are never logged.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::probe::HostProbe;

/// Largest `config.json` jobdock reads.
const MAX_CONFIG: u64 = 1024 * 1024;

/// What dockerd needs in `X-Registry-Auth` for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry as `config.json` names it (`https://index.docker.io/v1/` for Docker Hub).
    pub server: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity_token: Option<String>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The job user's credentials, one entry per registry their `config.json` has a usable plain
/// entry for. Each registry only ever gets its own entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    entries: Vec<RegistryAuth>,
}

impl Credentials {
    pub fn new(entries: Vec<RegistryAuth>) -> Credentials {
        Credentials { entries }
    }

    /// The entry for `registry` (as `ImageRef::registry` gives it), if any.
    pub fn for_registry(&self, registry: &str) -> Option<&RegistryAuth> {
        self.entries
            .iter()
            .find(|a| same_registry(&a.server, registry))
    }
}

/// The user's credentials from their `config.json`. Problems are logged, never fatal: a pull
/// then goes without credentials, as `docker pull` would for a registry the user never logged in
/// to.
pub fn read(probe: &dyn HostProbe, home: &Path) -> Credentials {
    let path = home.join(".docker/config.json");
    let text = match probe.read_file(&path, MAX_CONFIG) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => return Credentials::default(),
        Err(e) => {
            tracing::warn!("registry credentials not read: {e}");
            return Credentials::default();
        }
    };
    let config: ConfigFile = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!("registry credentials not read: {}: {e}", path.display());
            return Credentials::default();
        }
    };
    if config.creds_store.is_some() || !config.cred_helpers.is_empty() {
        tracing::warn!(
            "credential helpers (credsStore, credHelpers) are not supported: only plain `auths` \
             entries of {} are used",
            path.display()
        );
    }
    let entries = config
        .auths
        .iter()
        .filter_map(|(key, entry)| match from_entry(key, entry) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("registry credentials not read: {}: {e}", path.display());
                None
            }
        })
        .collect();
    Credentials { entries }
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ConfigFile {
    auths: std::collections::BTreeMap<String, AuthEntry>,
    creds_store: Option<String>,
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Why a `config.json` gave no credentials: the file is not JSON, or one `auths` entry is broken.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    NotJson(#[from] serde_json::Error),
    #[error("auths.{key:?}.auth is not base64")]
    NotBase64 { key: String },
    #[error("auths.{key:?}.auth is not UTF-8")]
    NotUtf8 { key: String },
    #[error("auths.{key:?}.auth is not base64(user:password)")]
    NoColon { key: String },
}

/// Finds `registry`'s entry in the text of a `config.json`. Only plain `auths` entries are
/// supported: credential helpers (`credsStore`, `credHelpers`) would mean running a helper
/// program as the user, which jobdock does not do; it says so instead.
pub fn lookup(text: &str, registry: &str) -> Result<Option<RegistryAuth>, AuthError> {
    let config: ConfigFile = serde_json::from_str(text)?;
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| same_registry(key, registry));
    let Some((key, entry)) = entry else {
        if config.cred_helpers.contains_key(registry) || config.creds_store.is_some() {
            tracing::warn!(
                "credential helpers (credsStore, credHelpers) are not supported: pulling from {registry} without credentials"
            );
        }
        return Ok(None);
    };
    from_entry(key, entry)
}

/// One `auths` entry as credentials; `None` for an empty one (`docker login` with a helper
/// leaves one behind).
fn from_entry(key: &str, entry: &AuthEntry) -> Result<Option<RegistryAuth>, AuthError> {
    let key_of = || key.to_string();
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| AuthError::NotBase64 { key: key_of() })?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| AuthError::NotUtf8 { key: key_of() })?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| AuthError::NoColon { key: key_of() })?;
        username = Some(user.to_string());
        password = Some(pass.to_string());
    }
    let identity_token = entry.identitytoken.clone().filter(|t| !t.is_empty());
    if username.is_none() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth {
        server: key.to_string(),
        username,
        password,
        identity_token,
    }))
}

/// Whether a `config.json` key (`https://index.docker.io/v1/`, `registry.example.org:5000`,
/// `http://host/v2/`) names `registry` (as `ImageRef::registry` gives it).
fn same_registry(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host == registry || (hub(host) && hub(registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn finds_the_entry_for_the_images_registry_only() {
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.example.org:5000": {{"auth": "{}"}},
                "http://other.example/v2/": {{"username": "u", "password": "p"}},
                "token.example": {{"identitytoken": "tok"}}
            }}}}"#,
            b64("hubuser:hub:pass"),
            b64("site:secret")
        );
        let cases = [
            ("docker.io", Some(("hubuser", "hub:pass"))),
            ("registry.example.org:5000", Some(("site", "secret"))),
            ("other.example", Some(("u", "p"))),
            ("registry.example.org", None),
            ("example.org:5000", None),
            ("127.0.0.1:5000", None),
        ];
        for (registry, want) in cases {
            let got = lookup(&text, registry).unwrap();
            let got = got.as_ref().map(|a| {
                (
                    a.username.as_deref().unwrap(),
                    a.password.as_deref().unwrap(),
                )
            });
            assert_eq!(got, want, "{registry}");
        }
        let token = lookup(&text, "token.example").unwrap().unwrap();
        assert_eq!(token.identity_token.as_deref(), Some("tok"));
        assert_eq!(token.username, None);
    }

    #[test]
    fn helpers_and_empty_entries_give_no_credentials() {
        let cases = [
            ("empty file", "{}"),
            (
                "creds store",
                r#"{"credsStore": "desktop", "auths": {"docker.io": {}}}"#,
            ),
            ("helper", r#"{"credHelpers": {"docker.io": "ecr-login"}}"#),
        ];
        for (name, text) in cases {
            assert_eq!(lookup(text, "docker.io").unwrap(), None, "{name}");
        }
    }

    #[test]
    fn broken_files_are_errors_naming_the_entry() {
        let no_colon = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("x")
        );
        let not_utf8 = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode([0xff, b':', b'p'])
        );
        let cases: [(&str, &str, fn(&AuthError) -> bool, &str); 4] = [
            (
                "not json",
                "{",
                |e| matches!(e, AuthError::NotJson(_)),
                "EOF",
            ),
            (
                "not base64",
                r#"{"auths": {"r.example": {"auth": "%%%"}}}"#,
                |e| matches!(e, AuthError::NotBase64 { key } if key == "r.example"),
                "base64",
            ),
            (
                "not utf-8",
                &not_utf8,
                |e| matches!(e, AuthError::NotUtf8 { key } if key == "r.example"),
                "UTF-8",
            ),
            (
                "no colon",
                &no_colon,
                |e| matches!(e, AuthError::NoColon { key } if key == "r.example"),
                "user:password",
            ),
        ];
        for (name, text, is, want) in cases {
            let e = lookup(text, "r.example").unwrap_err();
            assert!(is(&e), "{name}: {e:?}");
            assert!(e.to_string().contains(want), "{name}: {e}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let auth = RegistryAuth {
            server: "r".into(),
            username: Some("u".into()),
            password: Some("hunter2".into()),
            identity_token: Some("tok-secret".into()),
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-secret"),
            "{shown}"
        );
    }
}
