//! The synthesized `/etc/passwd` and `/etc/group`: root, nobody and the user; root, nogroup and
//! every group of the user by name, listing the user. Pure text, golden-tested. passwd(5) has no
//! escaping, so anything that could add a field or a line is refused upstream, never escaped.

use std::path::Path;

use super::Identity;

/// A field value that cannot add a field or a line, or start a NIS `+`/`-` entry.
fn safe_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && !s.starts_with(['+', '-'])
        && !s.chars().any(|c| c == ':' || c == ',' || c.is_control())
}

pub(super) fn safe_user_name(s: &str) -> bool {
    safe_field(s) && !s.contains(char::is_whitespace)
}

pub(super) fn safe_group_name(s: &str) -> bool {
    safe_field(s) && !s.starts_with(char::is_whitespace) && !s.ends_with(char::is_whitespace)
}

pub(super) fn safe_home(p: &Path) -> bool {
    let s = p.to_string_lossy();
    p.is_absolute() && s.len() <= 4096 && !s.chars().any(|c| c == ':' || c.is_control())
}

/// `/etc/passwd` for the container. The shell is `/bin/sh`, which every runnable image has; the
/// GECOS field is left empty (it is free text from the directory).
pub fn passwd_file(id: &Identity) -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
         {}:x:{}:{}::{}:/bin/sh\n",
        id.name,
        id.uid,
        id.gid,
        id.home.display()
    )
}

/// `/etc/group` for the container. Groups without a safe name keep their gid (in `GroupAdd`) but
/// get no line.
pub fn group_file(id: &Identity) -> String {
    let mut out = String::from("root:x:0:\nnogroup:x:65534:\n");
    let primary = id.group.as_ref().map(|n| (id.gid, n));
    for (gid, name) in primary.into_iter().chain(
        id.groups
            .iter()
            .filter_map(|(g, n)| n.as_ref().map(|n| (*g, n))),
    ) {
        if gid == 65534 || name == "root" || name == "nogroup" {
            continue;
        }
        out.push_str(&format!("{name}:x:{gid}:{}\n", id.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            uid: 2001,
            gid: 2001,
            name: "alice".into(),
            home: "/home/alice".into(),
            group: Some("alice".into()),
            groups: vec![
                (3001, Some("jdproj".into())),
                (3002, Some("domain users".into())),
                (3003, None),
            ],
        }
    }

    #[test]
    fn golden_passwd() {
        assert_eq!(
            passwd_file(&alice()),
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
             alice:x:2001:2001::/home/alice:/bin/sh\n"
        );
    }

    #[test]
    fn golden_group() {
        assert_eq!(
            group_file(&alice()),
            "root:x:0:\nnogroup:x:65534:\nalice:x:2001:alice\njdproj:x:3001:alice\ndomain users:x:3002:alice\n"
        );
    }

    #[test]
    fn a_group_named_like_a_system_group_gets_no_second_line() {
        let mut id = alice();
        id.groups = vec![(4000, Some("root".into())), (65534, Some("nogroup".into()))];
        assert_eq!(
            group_file(&id),
            "root:x:0:\nnogroup:x:65534:\nalice:x:2001:alice\n"
        );
    }

    #[test]
    fn unsafe_fields() {
        for bad in [
            "",
            "a:b",
            "a\nb",
            "a,b",
            "+nis",
            "-x",
            "a\u{85}b",
            "a\rb",
            "a\0b",
            &"x".repeat(257),
        ] {
            assert!(!safe_user_name(bad), "{bad:?}");
            assert!(!safe_group_name(bad), "{bad:?}");
        }
        assert!(!safe_user_name("a b"));
        assert!(safe_group_name("domain users"));
        assert!(!safe_group_name(" padded"));
        assert!(safe_user_name("alice@EXAMPLE.ORG"));
        assert!(!safe_home(Path::new("relative")));
        assert!(!safe_home(Path::new("/home/a:b")));
        assert!(safe_home(Path::new("/home/alice")));
    }
}
