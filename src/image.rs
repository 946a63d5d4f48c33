//! Image references, parsed by the distribution reference grammar and nothing looser: an image
//! name reaches dockerd's URL query and the registry, so anything outside the grammar (spaces,
//! `&`, `://`, a leading `-`, uppercase) is refused rather than passed on. Pure.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host[:port], if the reference names one.
    pub domain: Option<String>,
    /// Repository path, e.g. `library/alpine` or `alpine`.
    pub path: String,
    /// The tag; `latest` when neither a tag nor a digest was given (never "all tags").
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if pinned.
    pub digest: Option<String>,
}

/// Why a text is not an image reference, as Docker's grammar has it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a valid image reference: {why}")]
pub struct ImageRefError {
    pub text: String,
    /// The rule it breaks.
    pub why: &'static str,
}

impl From<ImageRefError> for String {
    fn from(e: ImageRefError) -> String {
        e.to_string()
    }
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, ImageRefError> {
        let fail = |why: &'static str| {
            Err(ImageRefError {
                text: text.to_string(),
                why,
            })
        };
        if text.is_empty() {
            return fail("empty");
        }
        if text.len() > 512 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return fail("contains whitespace or control characters");
        }
        if text.starts_with('-') {
            return fail("starts with '-'");
        }
        let (name_tag, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (text, None),
        };
        if let Some(d) = digest {
            let ok = match d.split_once(':') {
                Some(("sha256", hex)) => {
                    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                }
                Some(("sha512", hex)) => {
                    hex.len() == 128 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                }
                _ => false,
            };
            if !ok {
                return fail("digest must be sha256:<64 lowercase hex>");
            }
        }
        // A ':' after the last '/' starts the tag; before it, it is a registry port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return fail("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
            }
        }
        if name.len() > 255 {
            return fail("name longer than 255 characters");
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let domain =
            if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
                let d = parts.remove(0);
                if !valid_domain(d) {
                    return fail("registry must be host[:port]");
                }
                Some(d.to_string())
            } else {
                None
            };
        if parts.iter().any(|p| !valid_path_component(p)) {
            return fail("repository must be lowercase letters, digits and separators (. _ __ -)");
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(ImageRef {
            domain,
            path: parts.join("/"),
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// The registry the image comes from (`docker.io` when none is named).
    pub fn registry(&self) -> &str {
        self.domain.as_deref().unwrap_or("docker.io")
    }

    /// Whether `other` names the same repository: the same registry and path, Docker Hub's
    /// `library/` of official images optional (`alpine` is `docker.io/library/alpine`).
    pub fn same_repository(&self, other: &ImageRef) -> bool {
        let path = |r: &ImageRef| -> String {
            match r.registry() {
                "docker.io" => r
                    .path
                    .strip_prefix("library/")
                    .unwrap_or(&r.path)
                    .to_string(),
                _ => r.path.clone(),
            }
        };
        self.registry() == other.registry() && path(self) == path(other)
    }

    /// `[domain/]path`, as `fromImage` in the Engine API's pull.
    pub fn repository(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port_ok && !host.is_empty() && host.split('.').all(label_ok)
}

fn valid_path_component(p: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = p.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_normalized() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("alpine", "alpine:latest", "docker.io"),
            ("alpine:3.19", "alpine:3.19", "docker.io"),
            ("library/alpine", "library/alpine:latest", "docker.io"),
            (
                "127.0.0.1:5000/jobdock-test/busybox",
                "127.0.0.1:5000/jobdock-test/busybox:latest",
                "127.0.0.1:5000",
            ),
            ("localhost/x:1", "localhost/x:1", "localhost"),
            (
                "nvcr.io/nvidia/pytorch:24.01-py3",
                "nvcr.io/nvidia/pytorch:24.01-py3",
                "nvcr.io",
            ),
            (
                "my_org/my__img--x.y",
                "my_org/my__img--x.y:latest",
                "docker.io",
            ),
        ];
        for (text, want, registry) in cases {
            let r = ImageRef::parse(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.to_string(), want);
            assert_eq!(r.registry(), registry);
        }
        let pinned = ImageRef::parse(&format!("alpine@{d}")).unwrap();
        assert_eq!(pinned.tag, None, "a digest alone is not given a tag");
        assert_eq!(pinned.to_string(), format!("alpine@{d}"));
    }

    #[test]
    fn refused() {
        let cases = [
            "",
            "Alpine",
            "-privileged",
            "--privileged=true",
            "alpine latest",
            "alpine\n",
            "alpine&fromSrc=http://evil/x.tar",
            "http://evil/x",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:abc",
            "alpine@md5:00",
            "a//b",
            "/alpine",
            "alpine/",
            "a..b",
            "evil.com:99999/x",
            "-h.example/x",
            "alpine:3.19;id",
            "../alpine",
        ];
        for text in cases {
            assert!(ImageRef::parse(text).is_err(), "{text:?} accepted");
        }
        assert!(ImageRef::parse(&"a".repeat(256)).is_err());
        assert!(ImageRef::parse(&format!("alpine:{}", "t".repeat(129))).is_err());
    }
}
