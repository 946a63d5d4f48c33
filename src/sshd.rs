//! The seeds' virtual cluster (issue 14): a job's named container on each of its nodes runs an
//! sshd as the job user on a per-job port, so that `mpirun` in one of them starts its daemons in
//! the others over ssh, with a hostfile of the job's nodes.
//!
//! The job's keys (the user's, which the sshds accept, and the host key they all present) are
//! derived on every node from a secret only root reads (`mpi.sshd_secret`, the same file on every
//! node, as munge's key is), the job and the user's uid: nodes need not talk to each other, and a
//! key is good for one job of one user. Another user on the node cannot log in (no key), and an
//! sshd of anyone else's on the job's port is not trusted (no host key): ssh refuses it.
//!
//! Everything here is pure except [`read_secret`]: the files are rendered for the engine to write.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where the job's ssh files appear in its container (read-only).
pub const SSH_TARGET: &str = "/.jobdock/ssh";
/// Where sshd writes its log and pid file in the container: the agent's directory, the user's.
pub const SSHD_LOG: &str = "/.jobdock/run/sshd.log";
pub const SSHD_PID: &str = "/.jobdock/run/sshd.pid";
/// Where the image's sshd may be; the first that exists runs.
pub const SSHD_PATHS: &[&str] = &["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"];

/// The ssh files, by name in [`SSH_TARGET`].
pub const SSHD_CONFIG: &str = "sshd_config";
pub const SSH_CONFIG: &str = "config";
pub const HOSTFILE: &str = "hostfile";
pub const KNOWN_HOSTS: &str = "known_hosts";
pub const AUTHORIZED_KEYS: &str = "authorized_keys";
pub const USER_KEY: &str = "id_ed25519";
pub const HOST_KEY: &str = "host_ed25519";

/// The shortest secret: 32 bytes from a random source (`head -c 32 /dev/urandom`).
pub const MIN_SECRET: usize = 32;
const MAX_SECRET: u64 = 4096;

/// One node of the job: its name (as the scheduler and the hostfile call it), its slots and the
/// port its container's sshd listens on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    pub name: String,
    pub slots: u32,
    pub port: u16,
}

/// The job's two keys.
pub struct Keys {
    pub user: SigningKey,
    pub host: SigningKey,
}

impl Keys {
    /// The keys of the job `context` names (scheduler, cluster, job, uid): HMAC-SHA256 of it
    /// under the site secret, one label each, as the seeds of ed25519 keys.
    pub fn derive(secret: &[u8], context: &str) -> Keys {
        let seed = |label: &str| -> [u8; 32] {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
            mac.update(b"jobdock sshd v1\0");
            mac.update(label.as_bytes());
            mac.update(b"\0");
            mac.update(context.as_bytes());
            mac.finalize().into_bytes().into()
        };
        Keys {
            user: SigningKey::from_bytes(&seed("user")),
            host: SigningKey::from_bytes(&seed("host")),
        }
    }
}

/// Reads the site secret (`mpi.sshd_secret`) as root: a regular file of root's alone (as the
/// site config), readable by no one else, of at least [`MIN_SECRET`] bytes. The error is why not.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::MetadataExt;
    crate::trust::check(
        path,
        crate::trust::Expect::File,
        crate::trust::Above::Strict,
    )
    .map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "is readable by group or others (mode {:o}); it must be 0600 or 0400",
            meta.mode() & 0o7777
        ));
    }
    if meta.len() > MAX_SECRET {
        return Err(format!("is larger than {MAX_SECRET} bytes"));
    }
    let secret = std::fs::read(path).map_err(|e| e.to_string())?;
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "has {} bytes, fewer than {MIN_SECRET} (make one with: head -c 32 /dev/urandom)",
            secret.len()
        ));
    }
    Ok(secret)
}

/// The ports of the job's nodes in `range`: consecutive from a start the job decides, so every
/// node computes every other's, and two nodes on one host (several slurmd) differ.
pub fn ports(range: (u16, u16), job: &str, nodes: usize) -> Result<Vec<u16>, String> {
    let span = u32::from(range.1 - range.0) + 1;
    let count = u32::try_from(nodes).unwrap_or(u32::MAX);
    if count > span {
        return Err(format!(
            "the job has {nodes} nodes and mpi.sshd_ports only {span} ports"
        ));
    }
    let digest = <Sha256 as sha2::Digest>::digest(job.as_bytes());
    let start = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % span;
    Ok((0..count)
        .map(|i| range.0 + u16::try_from((start + i) % span).expect("below the span"))
        .collect())
}

/// Set in a virtual cluster's container unless the job sets them: OpenMPI's mpirun starts its
/// daemons over ssh with the job's configuration, on the job's nodes, and not through Slurm
/// (there is no srun in the container). Other MPIs find the files at `JOBDOCK_HOSTFILE` and
/// `JOBDOCK_SSH_CONFIG`.
pub fn mpi_env() -> [(&'static str, String); 8] {
    let (config, hostfile) = (
        format!("{SSH_TARGET}/{SSH_CONFIG}"),
        format!("{SSH_TARGET}/{HOSTFILE}"),
    );
    [
        ("OMPI_MCA_plm", "rsh".into()),
        ("OMPI_MCA_plm_rsh_agent", "ssh".into()),
        ("OMPI_MCA_plm_rsh_args", format!("-F {config}")),
        ("OMPI_MCA_plm_rsh_no_tree_spawn", "1".into()),
        ("OMPI_MCA_ras", "^slurm".into()),
        ("OMPI_MCA_orte_default_hostfile", hostfile.clone()),
        ("JOBDOCK_HOSTFILE", hostfile),
        ("JOBDOCK_SSH_CONFIG", config),
    ]
}

/// OpenMPI's hostfile: `NAME slots=N` per node.
pub fn hostfile(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{} slots={}\n", n.name, n.slots))
        .collect()
}

/// The ssh client's configuration in the container (`ssh -F`): each node's port, the job's key,
/// and the job's host key as the only one trusted (under one alias for all nodes).
pub fn ssh_config(nodes: &[Node], user: &str, alias: &str) -> String {
    let mut text = String::from(
        "# jobdock: the job's virtual cluster (ssh -F this file). Its nodes, each with its port:\n",
    );
    for n in nodes {
        let _ = writeln!(text, "Host {}\n  Port {}", n.name, n.port);
    }
    let _ = write!(
        text,
        "Host *\n  User {user}\n  IdentityFile {SSH_TARGET}/{USER_KEY}\n  IdentitiesOnly yes\n  \
         HostKeyAlias {alias}\n  UserKnownHostsFile {SSH_TARGET}/{KNOWN_HOSTS}\n  \
         GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n  \
         BatchMode yes\n  PasswordAuthentication no\n  ForwardAgent no\n  ForwardX11 no\n  \
         LogLevel ERROR\n"
    );
    text
}

/// The sshd's configuration: the job user alone, by the job's key alone, nothing forwarded (the
/// options every OpenSSH from 7.4 knows).
pub fn sshd_config(port: u16, user: &str) -> String {
    format!(
        "# jobdock: the job's sshd, run as {user} in the job's container.\n\
         Port {port}\n\
         HostKey {SSH_TARGET}/{HOST_KEY}\n\
         AuthorizedKeysFile {SSH_TARGET}/{AUTHORIZED_KEYS}\n\
         AllowUsers {user}\n\
         PidFile {SSHD_PID}\n\
         StrictModes yes\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         ChallengeResponseAuthentication no\n\
         HostbasedAuthentication no\n\
         PermitRootLogin no\n\
         PermitUserEnvironment no\n\
         AllowTcpForwarding no\n\
         AllowStreamLocalForwarding no\n\
         AllowAgentForwarding no\n\
         X11Forwarding no\n\
         PermitTunnel no\n\
         GatewayPorts no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         LogLevel INFO\n"
    )
}

/// `ssh-ed25519 BASE64 COMMENT`: a line of authorized_keys, or after a host pattern of
/// known_hosts.
pub fn public_line(key: &SigningKey, comment: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("ssh-ed25519 {} {comment}\n", b64.encode(public_blob(key)))
}

/// The key in OpenSSH's own private key format, unencrypted (as `ssh-keygen -N ''` writes it).
pub fn private_file(key: &SigningKey, comment: &str) -> String {
    let public = key.verifying_key().to_bytes();
    let check = u32::from_be_bytes(public[..4].try_into().expect("4 bytes"));
    let mut private = Vec::new();
    private.extend(check.to_be_bytes());
    private.extend(check.to_be_bytes());
    put_string(&mut private, b"ssh-ed25519");
    put_string(&mut private, &public);
    let mut pair = key.to_bytes().to_vec();
    pair.extend(public);
    put_string(&mut private, &pair);
    put_string(&mut private, comment.as_bytes());
    // Padded to the cipher's block size ("none": 8) with 1, 2, 3, ...
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut blob = b"openssh-key-v1\0".to_vec();
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"");
    blob.extend(1u32.to_be_bytes());
    put_string(&mut blob, &public_blob(key));
    put_string(&mut blob, &private);
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(70) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    text
}

fn public_blob(key: &SigningKey) -> Vec<u8> {
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-ed25519");
    put_string(&mut blob, &key.verifying_key().to_bytes());
    blob
}

/// SSH's `string`: a u32 length (big endian) and the bytes.
fn put_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend(u32::try_from(data.len()).expect("short").to_be_bytes());
    out.extend(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A key context as the plan makes it: scheduler, cluster, job and uid.
    fn ctx(job: u32, uid: u32) -> String {
        format!("slurm\0c\0{job}\0{uid}")
    }

    #[test]
    fn keys_are_the_jobs_and_the_users_and_differ_from_each_other() {
        let a = Keys::derive(SECRET, &ctx(42, 2001));
        let again = Keys::derive(SECRET, &ctx(42, 2001));
        assert_eq!(a.user.to_bytes(), again.user.to_bytes());
        assert_eq!(a.host.to_bytes(), again.host.to_bytes());
        assert_ne!(a.user.to_bytes(), a.host.to_bytes());
        for other in [
            Keys::derive(SECRET, &ctx(43, 2001)),
            Keys::derive(SECRET, &ctx(42, 2002)),
            Keys::derive(b"another secret of thirty-two byte", &ctx(42, 2001)),
        ] {
            assert_ne!(a.user.to_bytes(), other.user.to_bytes());
            assert_ne!(a.host.to_bytes(), other.host.to_bytes());
        }
    }

    /// OpenSSH itself reads the private key and derives the same public key from it.
    #[test]
    fn ssh_keygen_reads_the_private_key_and_agrees_on_its_public_half() {
        let Some(keygen) = ["/usr/bin/ssh-keygen", "/bin/ssh-keygen"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "ssh-keygen is missing (openssh-client), and CI must run this test"
            );
            eprintln!("SKIPPED: no ssh-keygen here (install openssh-client)");
            return;
        };
        let keys = Keys::derive(SECRET, &ctx(42, 2001));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, private_file(&keys.user, "job 42")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let out = std::process::Command::new(keygen)
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = String::from_utf8(out.stdout).unwrap();
        let ours = public_line(&keys.user, "job 42");
        let words = |s: &str| {
            s.split_whitespace()
                .take(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(words(&theirs), words(&ours));
    }

    #[test]
    fn ports_are_consecutive_in_the_range_from_a_start_the_job_decides() {
        let p = ports((22000, 22999), "jobdock/42", 3).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|&x| (22000..=22999).contains(&x)));
        assert_eq!(ports((22000, 22999), "jobdock/42", 3).unwrap(), p);
        // Wrapping around the top of the range, never outside it.
        let all = ports((30000, 30003), "jobdock/42", 4).unwrap();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [30000, 30001, 30002, 30003]);
        let other: Vec<Vec<u16>> = (0..20)
            .map(|j| ports((22000, 22999), &format!("jobdock/{j}"), 1).unwrap())
            .collect();
        assert!(
            other.iter().any(|o| o != &other[0]),
            "every job got the same port"
        );
        let e = ports((30000, 30001), "jobdock/42", 3).unwrap_err();
        assert!(e.contains("mpi.sshd_ports"), "{e}");
    }

    #[test]
    fn the_files_name_each_node_and_trust_only_the_jobs_keys() {
        let nodes = [
            Node {
                name: "n1".into(),
                slots: 2,
                port: 22001,
            },
            Node {
                name: "n2".into(),
                slots: 4,
                port: 22002,
            },
        ];
        assert_eq!(hostfile(&nodes), "n1 slots=2\nn2 slots=4\n");
        let c = ssh_config(&nodes, "alice", "jobdock-c-42");
        assert!(
            c.contains("Host n1\n  Port 22001\nHost n2\n  Port 22002\n"),
            "{c}"
        );
        for line in [
            "User alice",
            "HostKeyAlias jobdock-c-42",
            "StrictHostKeyChecking yes",
            "GlobalKnownHostsFile /dev/null",
            "IdentitiesOnly yes",
            "BatchMode yes",
        ] {
            assert!(c.contains(line), "{line}: {c}");
        }
        let s = sshd_config(22001, "alice");
        for line in [
            "Port 22001",
            "AllowUsers alice",
            "PasswordAuthentication no",
            "PermitRootLogin no",
            "AllowTcpForwarding no",
            "PermitUserEnvironment no",
        ] {
            assert!(s.lines().any(|l| l == line), "{line}: {s}");
        }
    }

    #[test]
    fn the_secret_must_be_roots_alone_unreadable_by_others_and_long_enough() {
        let root = nix::unistd::geteuid().is_root();
        // Root's tests need a directory of root's alone (not below the sticky /tmp).
        let dir = if root {
            tempfile::tempdir_in("/run").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let path = dir.path().join("secret");
        std::fs::write(&path, SECRET).unwrap();
        let mode = |m| {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(m))
                .unwrap()
        };
        mode(0o600);
        if !root {
            let e = read_secret(&path).unwrap_err();
            assert!(e.contains("not root"), "{e}");
            return;
        }
        assert_eq!(read_secret(&path).unwrap(), SECRET);
        mode(0o640);
        let e = read_secret(&path).unwrap_err();
        assert!(e.contains("readable by group"), "{e}");
        mode(0o600);
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(1)), None).unwrap();
        assert!(read_secret(&path).unwrap_err().contains("not root"));
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        std::fs::write(&path, b"short").unwrap();
        assert!(read_secret(&path).unwrap_err().contains("fewer than 32"));
    }
}
