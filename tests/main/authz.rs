//! `jobdock authz` in front of a real dockerd: the second daemon of scripts/authz-testbed.sh,
//! with the plugin served by the jobdock under test. jobdock's jobs pass through it unchanged;
//! the docker CLI's escalations and every bypass class of research/authz.md (sent raw with curl)
//! are refused, and no container results; each denial is logged; over the TLS listener a user
//! may only run as themself and touch their own containers.
//!
//! Without the test bed these tests fail when CI=true and skip loudly otherwise.

use std::path::Path;
use std::sync::OnceLock;

use crate::util;
use crate::util::{Out as Output, TestJob, require};

use crate::util::BIN;
const BED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/authz-testbed.sh");
const SOCK: &str = "/run/jobdock-authz-test/docker.sock";
const CONFIG: &str = "/etc/jobdock-authz-test/wrapper.toml";
const PLUGIN_LOG: &str = "/var/log/jobdock-testbed/authz-plugin.log";
const TLS: &str = "/etc/jobdock-authz-test/tls";
const TCP: &str = "tcp://127.0.0.1:23760";
const IMAGE: &str = "127.0.0.1:5000/jobdock-test/busybox:latest";
const DENIED: &str = "authorization denied by plugin jobdock-authz-test";
/// `docker run` options of a container the policy allows (for the TLS user jdalice too).
const HARDENED: &[&str] = &[
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--log-driver",
    "none",
    "--no-healthcheck",
    "--network",
    "none",
];

// ----------------------------------------------------------------------------------- helpers --

/// Whether the bed is up; once per test binary, the plugin is restarted from the jobdock under
/// test, so what is tested is this build's policy.
fn bed_is_up() -> bool {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("root (the plugin and the second dockerd are root's)".into());
        }
        if !Path::new(SOCK).exists() {
            return Err(format!(
                "the second dockerd on {SOCK} (scripts/authz-testbed.sh up)"
            ));
        }
        // One test binary at a time uses the bed (another worktree's would serve the plugin from
        // its own build): held until this process exits.
        static HELD: OnceLock<nix::fcntl::Flock<std::fs::File>> = OnceLock::new();
        let file = std::fs::File::create("/run/jobdock-authz-test/tests.lock")
            .map_err(|e| format!("the bed's lock file: {e}"))?;
        let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("the bed's lock: {e}"))?;
        let _ = HELD.set(held);
        let out = TestJob::program("bash", &[BED, "plugin", BIN]).run();
        if out.code != 0 {
            return Err(format!("the plugin from {BIN}:\n{}", out.report));
        }
        let ping = curl("GET", "/_ping", None, &[]);
        if ping.body != "OK" {
            return Err(format!("the second dockerd answering on {SOCK}: {ping:?}"));
        }
        Ok(())
    });
    match up {
        Ok(()) => true,
        Err(what) => require(what, false),
    }
}

/// Tests hold this shared; the break-glass test, which takes the plugin away, holds it alone.
static PLUGIN_IN_PLACE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn plugin_in_place() -> std::sync::RwLockReadGuard<'static, ()> {
    PLUGIN_IN_PLACE.read().unwrap_or_else(|e| e.into_inner())
}

/// The docker CLI against the second daemon.
fn dk(args: &[&str]) -> Output {
    TestJob::program("docker", args)
        .env("DOCKER_HOST", &format!("unix://{SOCK}"))
        .run()
}

/// The docker CLI over the TLS listener, as `user` (their client certificate).
fn dk_as(user: &str, args: &[&str]) -> Output {
    TestJob::program("docker", args)
        .env("DOCKER_HOST", TCP)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &format!("{TLS}/users/{user}"))
        .run()
}

#[derive(Debug)]
struct Http {
    status: u16,
    body: String,
}

/// One raw request to the second dockerd (curl --unix-socket): what a client other than the
/// docker CLI can send.
fn curl(method: &str, path: &str, body: Option<&[u8]>, headers: &[&str]) -> Http {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("body");
    let url = format!("http://docker{path}");
    let mut args = vec![
        "-sS",
        "--max-time",
        "60",
        "--unix-socket",
        SOCK,
        "-X",
        method,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--path-as-is",
        "-g",
    ];
    let data_arg = format!("@{}", data.display());
    if let Some(b) = body {
        std::fs::write(&data, b).unwrap();
        args.extend(["--data-binary", &data_arg]);
    }
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let out = TestJob::program("curl", &args).run();
    out.ok();
    let (body, status) = out.stdout.rsplit_once('\n').unwrap();
    Http {
        status: status.trim().parse().unwrap(),
        body: body.to_string(),
    }
}

const JSON: &[&str] = &["Content-Type: application/json"];

/// Containers (any state) with label `jobdock.authztest=<tag>`, removed on drop.
struct Tag(String);

impl Tag {
    fn new() -> Tag {
        Tag(format!("t{}", util::job_id()))
    }
    fn label(&self) -> String {
        format!("jobdock.authztest={}", self.0)
    }
    fn containers(&self) -> Vec<String> {
        let out = dk(&["ps", "-aq", "--filter", &format!("label={}", self.label())]);
        out.ok();
        out.stdout.split_whitespace().map(str::to_string).collect()
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let ids = self.containers();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            dk(&args);
        }
    }
}

/// A create body the policy allows: the hardening the plugin requires and nothing else.
fn hardened_body(tag: &Tag) -> serde_json::Value {
    serde_json::json!({
        "Image": IMAGE,
        "User": "2001:2001",
        "Cmd": ["true"],
        "Labels": {"jobdock.authztest": tag.0},
        "Healthcheck": {"Test": ["NONE"]},
        "HostConfig": {
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "LogConfig": {"Type": "none"},
            "NetworkMode": "none"
        }
    })
}

/// `resp` is the plugin's denial, with these words in its reason.
fn assert_denied(name: &str, resp: &Http, words: &str) {
    assert_eq!(resp.status, 403, "{name}: {resp:?}");
    assert!(
        resp.body.contains(DENIED) && resp.body.contains(words),
        "{name}: want a denial mentioning {words:?}: {resp:?}"
    );
}

fn log_size() -> u64 {
    std::fs::metadata(PLUGIN_LOG).map_or(0, |m| m.len())
}

/// What the plugin logged since `offset`.
fn log_since(offset: u64) -> String {
    let text = std::fs::read(PLUGIN_LOG).unwrap_or_default();
    String::from_utf8_lossy(&text[usize::try_from(offset).unwrap().min(text.len())..]).into_owned()
}

// ------------------------------------------------------------------------------------- tests --

/// jobdock's real jobs, run as root for jdalice with the daemon behind the plugin, behave as
/// without it: identity, exit code, stdin and stdout, cleanup; and the plugin denied nothing.
#[test]
fn jobdock_jobs_pass_through_unchanged() {
    if !(bed_is_up() && util::test_users_exist()) {
        return;
    }
    let _plugin = plugin_in_place();
    let before = log_size();
    let job = util::job_id();
    // Without a kept verdict on the image's files, the first job reads them through an inert
    // container of its own, whose create must pass the plugin too (the event log shows it made).
    let _ = std::fs::remove_dir_all("/run/jobdock-authz-test/state/image-checks");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let run = |command: &[&str], stdin: &[u8]| {
        let mut args = vec![
            "run", "--config", CONFIG, "--user", "jdalice", "--image", IMAGE, "--",
        ];
        args.extend(command);
        let out = TestJob::new(&args)
            .env("LSB_JOBID", &job)
            .cwd("/home/jdalice")
            .stdin(stdin)
            .run();
        // Nothing jobdock asked was refused, not even what it tolerates (it would warn).
        assert!(!out.stderr.contains(DENIED), "{}", out.report);
        out
    };
    run(&["id"], b"").ok().stdout_has(
        "uid=2001(jdalice) gid=2001(jdalice) groups=2001(jdalice),3001(jdproj),3002(jdshared)",
    );
    run(&["sh", "-c", "cat; exit 3"], b"through the plugin\n")
        .code(3)
        .stdout_has("through the plugin");
    run(
        &[
            "sh",
            "-c",
            "grep Cap /proc/self/status; cat /proc/self/status | grep NoNewPrivs",
        ],
        b"",
    )
    .ok()
    .stdout_has("NoNewPrivs:\t1");
    TestJob::new(&["cleanup", "--config", CONFIG, "--job", &job])
        .run()
        .ok()
        .stdout_has("removed 0 container(s)");
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = std::process::Command::new("docker")
        .args(["-H", &format!("unix://{SOCK}"), "events", "--since", &since])
        .args(["--until", &until, "--filter", "event=create", "--filter"])
        .arg(format!("label=jobdock.job={job}"))
        .args(["--format", "{{.Actor.Attributes.name}}"])
        .output()
        .unwrap();
    let created = String::from_utf8_lossy(&events.stdout);
    assert!(
        created.lines().filter(|n| n.ends_with("-image")).count() == 1,
        "one image-reading container through the plugin, the later jobs none: {created:?}"
    );
    // Its creates name the job (the other requests, by id, the stderr check covers).
    let log = log_since(before);
    assert!(
        !log.lines().any(|l| l.contains(&format!("-{job}-"))),
        "the plugin denied one of jobdock's requests:\n{log}"
    );
}

/// The docker CLI's escalations are refused, each for its own reason, and create nothing; the
/// same container without the escalation runs (so each refusal is the escalation's).
#[test]
fn docker_cli_escalations_are_refused() {
    if !bed_is_up() {
        return;
    }
    let _plugin = plugin_in_place();
    let tag = Tag::new();
    let label = tag.label();
    let run = |extra: &[&str], user: &str| {
        let mut args = vec!["run", "--rm", "--label", &label, "-u", user];
        args.extend(HARDENED);
        args.extend(extra);
        args.extend([IMAGE, "id", "-u"]);
        dk(&args)
    };
    run(&[], "2001:2001").ok().stdout_has("2001");
    let cases: &[(&str, &[&str], &str, &str)] = &[
        (
            "--privileged",
            &["--privileged"],
            "2001:2001",
            "HostConfig.Privileged: must be false",
        ),
        (
            "--cap-add SYS_ADMIN",
            &["--cap-add", "SYS_ADMIN"],
            "2001:2001",
            "HostConfig.CapAdd: SYS_ADMIN",
        ),
        (
            "-v /:/host",
            &["-v", "/:/host"],
            "2001:2001",
            "HostConfig.Binds",
        ),
        (
            "--mount of /",
            &["--mount", "type=bind,source=/,target=/host"],
            "2001:2001",
            "HostConfig.Mounts[0]",
        ),
        (
            "--pid host",
            &["--pid", "host"],
            "2001:2001",
            "HostConfig.PidMode",
        ),
        (
            "--userns host",
            &["--userns", "host"],
            "2001:2001",
            "HostConfig.UsernsMode",
        ),
        ("-u 0", &[], "0", "User"),
        ("-u 0:0", &[], "0:0", "id 0 is root's"),
        ("-u root", &[], "root", "must be numeric uid:gid"),
        (
            "--device /dev/sda",
            &["--device", "/dev/mem"],
            "2001:2001",
            "HostConfig.Devices",
        ),
        (
            "--security-opt seccomp=unconfined",
            &["--security-opt", "seccomp=unconfined"],
            "2001:2001",
            "seccomp=unconfined",
        ),
        (
            "--sysctl",
            &["--sysctl", "kernel.msgmax=1"],
            "2001:2001",
            "HostConfig.Sysctls",
        ),
        (
            "--log-driver json-file",
            &["--log-driver", "json-file"],
            "2001:2001",
            "HostConfig.LogConfig.Type",
        ),
        (
            "--restart always",
            &["--rm=false", "--restart", "always"],
            "2001:2001",
            "RestartPolicy",
        ),
    ];
    for (name, extra, user, words) in cases {
        let out = run(extra, user);
        assert_ne!(out.code, 0, "{name} ran:\n{}", out.report);
        out.stderr_has(DENIED).stderr_has(words);
    }
    // Without the hardening at all: the plain `docker run` of any other client.
    dk(&["run", "--rm", "--label", &label, IMAGE, "true"])
        .stderr_has(DENIED)
        .stderr_has("User");
    let left = tag.containers();
    assert!(left.is_empty(), "refused creates left containers: {left:?}");
}

/// exec is refused (as root or not), and so are build, update and the other routes jobdock never
/// uses; the container they aim at is untouched.
#[test]
fn exec_build_and_other_actions_are_refused() {
    if !bed_is_up() {
        return;
    }
    let _plugin = plugin_in_place();
    let tag = Tag::new();
    let label = tag.label();
    let mut args = vec!["run", "-d", "--label", &label, "-u", "2001:2001"];
    args.extend(HARDENED);
    args.extend([IMAGE, "sleep", "60"]);
    let id = dk(&args).ok().stdout.trim().to_string();
    for user in ["0", "root", "2001:2001"] {
        dk(&["exec", "-u", user, &id, "id"])
            .stderr_has(DENIED)
            .stderr_has("container_exec: route: refused unless the site allows it");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN id\n"),
    )
    .unwrap();
    let build = TestJob::program("docker", &["build", "-t", "jobdock-authz-test/built", "."])
        .env("DOCKER_HOST", &format!("unix://{SOCK}"))
        .env("DOCKER_BUILDKIT", "0")
        .cwd(dir.path())
        .run();
    build.stderr_has(DENIED).stderr_has("build: route");
    dk(&["update", "--memory", "1g", &id])
        .stderr_has(DENIED)
        .stderr_has("container_update");
    dk(&[
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        "device=/",
        "hostroot",
    ])
    .stderr_has(DENIED)
    .stderr_has("volume_create");
    dk(&["network", "create", "jdauthz-net"])
        .stderr_has(DENIED)
        .stderr_has("network");
    dk(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "vieux/sshfs",
    ])
    .stderr_has(DENIED);
    dk(&["swarm", "init"])
        .stderr_has(DENIED)
        .stderr_has("swarm");
    dk(&["commit", &id, "jobdock-authz-test/committed"]).stderr_has(DENIED);
    dk(&["cp", "/etc/hostname", &format!("{id}:/tmp/x")]).stderr_has(DENIED);
    // Inspection is allowed, and the container still runs as it was made.
    let user = dk(&["inspect", "-f", "{{.Config.User}} {{.State.Running}}", &id]);
    user.ok().stdout_has("2001:2001 true");
}

/// Each bypass class of research/authz.md, sent raw: refused by the plugin, nothing created.
/// The hardened body itself is created (through the same paths where they route), so each
/// refusal is the bypass's.
#[test]
fn bypass_classes_are_refused() {
    if !bed_is_up() {
        return;
    }
    let _plugin = plugin_in_place();
    let tag = Tag::new();
    let good = hardened_body(&tag);
    let good_text = good.to_string();
    let open = &good_text[..good_text.len() - 1];
    let hc = r#""HostConfig":{"#;

    // The control: the hardened body is created, also by a percent-encoded and versioned path.
    for path in [
        "/containers/create",
        "/v1.41/containers/%63reate",
        "/%63ontainers%2Fcreate",
    ] {
        let r = curl("POST", path, Some(good_text.as_bytes()), JSON);
        assert_eq!(r.status, 201, "{path}: {r:?}");
    }
    assert_eq!(tag.containers().len(), 3);
    let created = tag.containers();
    let existing = &created[0];

    let big = format!(r#"{open},"Env":["PAD={}"]}}"#, "x".repeat(1 << 20)).replacen(
        hc,
        r#""HostConfig":{"Privileged":true,"#,
        1,
    );
    let start_old = format!("/v1.23/containers/{existing}/start");
    let start = format!("/v1.41/containers/{existing}/start");
    let update = format!("/containers/{existing}/update");
    let exec = format!("/containers/{existing}/exec");
    let cases: Vec<(&str, &str, String, &[&str], &str)> = vec![
        (
            "a case-folded HostConfig",
            "/containers/create",
            format!(r#"{open},"hostconfig":{{"Privileged":true}}}}"#),
            JSON,
            "only in case",
        ),
        (
            "case-folded keys inside HostConfig",
            "/containers/create",
            good_text.replacen(hc, r#""HostConfig":{"privileged":true,"binds":["/:/host"],"#, 1),
            JSON,
            "only in case",
        ),
        (
            "a long s: Go reads \u{17f}ecurityOpt as SecurityOpt, the last one",
            "/containers/create",
            good_text.replacen(
                r#""SecurityOpt":["no-new-privileges"]"#,
                "\"SecurityOpt\":[\"no-new-privileges\"],\"\u{17f}ecurityOpt\":[\"no-new-privileges:false\"]",
                1,
            ),
            JSON,
            "only in case",
        ),
        (
            "a duplicate HostConfig (Go keeps the last)",
            "/containers/create",
            format!(r#"{open},"HostConfig":{{"Privileged":true,"Binds":["/:/host"]}}}}"#),
            JSON,
            "duplicate field",
        ),
        (
            "a duplicate User",
            "/containers/create",
            format!(r#"{open},"User":"0:0"}}"#),
            JSON,
            "duplicate field",
        ),
        (
            "a second object after the first",
            "/containers/create",
            format!(r#"{good_text}{{"HostConfig":{{"Privileged":true}}}}"#),
            JSON,
            "data after the JSON object",
        ),
        (
            "the legacy body: Privileged and Binds at the top, no HostConfig",
            "/containers/create",
            format!(
                r#"{{"Image":"{IMAGE}","User":"2001:2001","Cmd":["true"],"Labels":{{"jobdock.authztest":"{}"}},"Healthcheck":{{"Test":["NONE"]}},"Privileged":true,"Binds":["/:/host"]}}"#,
                tag.0
            ),
            JSON,
            "container_create: Privileged: unknown key",
        ),
        (
            "a body of 1 MiB or more (dockerd passes none on)",
            "/containers/create",
            big,
            JSON,
            "did not pass on",
        ),
        (
            "a body that is not application/json (dockerd passes none on)",
            "/containers/create",
            good_text.replacen(hc, r#""HostConfig":{"Privileged":true,"#, 1),
            &["Content-Type: text/plain"],
            "did not pass on",
        ),
        (
            "a percent-encoded create, privileged",
            "/containers/%63reate",
            good_text.replacen(hc, r#""HostConfig":{"Privileged":true,"#, 1),
            JSON,
            "HostConfig.Privileged: must be false",
        ),
        (
            "an old API version",
            "/v1.23/containers/create",
            good_text.clone(),
            JSON,
            "older than 1.40",
        ),
        (
            "a local volume that binds the host (as a mount)",
            "/containers/create",
            good_text.replacen(
                hc,
                r#""HostConfig":{"Mounts":[{"Type":"volume","Source":"hostroot","Target":"/host","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/"}}}}],"#,
                1,
            ),
            JSON,
            "only binds",
        ),
        (
            "a local volume that binds the host (/volumes/create)",
            "/volumes/create",
            r#"{"Name":"hostroot","Driver":"local","DriverOpts":{"type":"none","o":"bind","device":"/"}}"#.into(),
            JSON,
            "volume_create",
        ),
        (
            "a start of API 1.23 with a HostConfig",
            &start_old,
            r#"{"Privileged":true,"Binds":["/:/host"]}"#.into(),
            JSON,
            "older than 1.40",
        ),
        (
            "a start with a HostConfig",
            &start,
            r#"{"Privileged":true,"Binds":["/:/host"]}"#.into(),
            JSON,
            "takes no body",
        ),
        (
            "update",
            &update,
            r#"{"RestartPolicy":{"Name":"always"}}"#.into(),
            JSON,
            "container_update",
        ),
        (
            "exec, privileged, as root",
            &exec,
            r#"{"User":"0","Privileged":true,"Cmd":["id"]}"#.into(),
            JSON,
            "container_exec",
        ),
        (
            "a plugin pull sent as text/plain",
            "/plugins/pull?remote=vieux/sshfs",
            r#"[{"Name":"mount","Value":["/"]}]"#.into(),
            &["Content-Type: text/plain"],
            "plugin",
        ),
        ("an image load", "/images/load", "x".into(), &["Content-Type: application/x-tar"], "image"),
        ("swarm init", "/swarm/init", r#"{"ListenAddr":"127.0.0.1"}"#.into(), JSON, "swarm"),
        ("a secret", "/secrets/create", r#"{"Name":"s","Data":"eA=="}"#.into(), JSON, "swarm"),
        (
            "an image import from a URL",
            "/images/create?fromSrc=http://127.0.0.1:1/x.tar&repo=x",
            String::new(),
            &[],
            "fromSrc",
        ),
    ];
    for (name, path, body, headers, words) in &cases {
        let r = curl("POST", path, Some(body.as_bytes()), headers);
        assert_denied(name, &r, words);
    }
    // The absolute form of the request target (Go routes it by its path; a plugin matching the
    // RequestUri's prefix would not see a create).
    let out = TestJob::program(
        "curl",
        &[
            "-sS",
            "--unix-socket",
            SOCK,
            "-X",
            "POST",
            "-H",
            JSON[0],
            "--data-binary",
            &good_text.replacen(hc, r#""HostConfig":{"Privileged":true,"#, 1),
            "--request-target",
            "http://docker/containers/create",
            "http://docker/",
        ],
    )
    .run();
    out.ok().stdout_has(DENIED).stdout_has("must start with /");
    // Decoded twice it would be a create; dockerd's router decodes once, finds no route and
    // answers itself (the plugin, which would refuse it too, is not asked).
    let r = curl(
        "POST",
        "/containers/%2563reate",
        Some(good_text.as_bytes()),
        JSON,
    );
    assert!(matches!(r.status, 403 | 404), "{r:?}");
    assert_eq!(
        tag.containers(),
        created,
        "a refused request created a container"
    );
    // The containers the bypasses aimed at are as they were made.
    let inspect = dk(&[
        "inspect",
        "-f",
        "{{.HostConfig.Privileged}} {{.HostConfig.Binds}} {{.State.Status}}",
        existing,
    ]);
    inspect.ok().stdout_has("false [] created");
}

/// Every denial is logged: who, what (method and URI), why (action, field, rule).
#[test]
fn denials_are_logged_with_who_what_and_why() {
    if !bed_is_up() {
        return;
    }
    let _plugin = plugin_in_place();
    let tag = Tag::new();
    let before = log_size();
    let marker = format!("logged-{}", tag.0);
    let body = hardened_body(&tag).to_string().replacen(
        r#""HostConfig":{"#,
        r#""HostConfig":{"Privileged":true,"#,
        1,
    );
    let r = curl(
        "POST",
        &format!("/containers/create?name={marker}"),
        Some(body.as_bytes()),
        JSON,
    );
    assert_denied("privileged", &r, "Privileged");
    let log = log_since(before);
    let line = log
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("no log line for {marker}:\n{log}"));
    for want in [
        "authz: denied",
        "who=(unix socket, no user)",
        "method=POST",
        &format!("uri=/containers/create?name={marker}"),
        "action=container_create",
        "field=HostConfig.Privileged",
        "rule=must be false",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }
}

/// The seed's per-user mode: over TLS dockerd names the certificate's CN; jdalice may run as
/// herself only, and jdbob may not touch her container.
#[test]
fn tls_users_run_as_themselves_only() {
    if !(bed_is_up() && util::test_users_exist()) {
        return;
    }
    let _plugin = plugin_in_place();
    let tag = Tag::new();
    let label = tag.label();
    let run = |who: &str, user: &str, extra: &[&str]| {
        let mut args = vec!["run", "-d", "--label", &label, "-u", user];
        args.extend(HARDENED);
        args.extend(extra);
        args.extend([IMAGE, "sleep", "60"]);
        dk_as(who, &args)
    };
    let id = run("jdalice", "2001:2001", &["--group-add", "3001"])
        .ok()
        .stdout
        .trim()
        .to_string();
    dk_as("jdalice", &["inspect", "-f", "{{.Config.User}}", &id])
        .ok()
        .stdout_has("2001:2001");
    run("jdalice", "2002:2002", &[])
        .stderr_has(DENIED)
        .stderr_has("uid 2002 is not the TLS user \"jdalice\"'s (2001)");
    run("jdalice", "2001:2002", &[])
        .stderr_has(DENIED)
        .stderr_has("gid 2002 is not a group of the TLS user \"jdalice\"");
    run("jdalice", "2001:2001", &["--group-add", "0"])
        .stderr_has(DENIED)
        .stderr_has("id 0 is root's");
    run("jdalice", "2001:2001", &["--privileged"])
        .stderr_has(DENIED)
        .stderr_has("Privileged");
    // jobdock's staging directory holds other jobs' checked directories: never for a TLS user.
    run(
        "jdalice",
        "2001:2001",
        &[
            "--mount",
            "type=bind,source=/run/jobdock-authz-test/state/x/m0,target=/x",
        ],
    )
    .stderr_has(DENIED)
    .stderr_has("a TLS user's container gets no binds from jobdock's staging directory");
    for args in [
        vec!["kill", id.as_str()],
        vec!["rm", "-f", id.as_str()],
        vec!["inspect", id.as_str()],
        vec!["logs", id.as_str()],
    ] {
        dk_as("jdbob", &args)
            .stderr_has(DENIED)
            .stderr_has("not as the TLS user \"jdbob\"");
    }
    dk_as("jdalice", &["rm", "-f", &id]).ok();
    // A certificate whose CN is no user of the node.
    assert!(tag.containers().is_empty(), "{:?}", tag.containers());
}

/// The break-glass of contrib/authz/README.md: the plugin taken out of daemon.json and dockerd
/// SIGHUPed, dockerd stops asking it (a privileged create is accepted); put back and SIGHUPed,
/// it asks again (refused). The privileged container is created only, never started.
#[test]
fn break_glass_is_daemon_json_and_sighup() {
    if !bed_is_up() {
        return;
    }
    let _alone = PLUGIN_IN_PLACE.write().unwrap_or_else(|e| e.into_inner());
    let daemon_json = "/etc/jobdock-authz-test/daemon.json";
    let with_plugin = std::fs::read_to_string(daemon_json).unwrap();
    assert!(with_plugin.contains("jobdock-authz-test"), "{with_plugin}");
    let pid: i32 = std::fs::read_to_string("/run/jobdock-authz-test/docker.pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let hup = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGHUP).unwrap()
    };
    // Whether dockerd asks the plugin: it refuses a restart (403), which dockerd alone answers
    // with 404 for a container that does not exist. (`docker info` still lists a plugin taken
    // out by a reload.)
    let asks = || {
        curl(
            "POST",
            "/containers/jobdock-authz-no-such/restart",
            None,
            &[],
        )
        .status
            == 403
    };
    struct Restore<'a>(&'a str, &'a str, i32);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            std::fs::write(self.0, self.1).unwrap();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.2),
                nix::sys::signal::SIGHUP,
            );
        }
    }
    let tag = Tag::new();
    let label = tag.label();
    let privileged = || dk(&["create", "--label", &label, "--privileged", IMAGE, "true"]);
    {
        let _restore = Restore(daemon_json, &with_plugin, pid);
        std::fs::write(daemon_json, "{}\n").unwrap();
        hup();
        util::wait_until(
            "dockerd to drop the plugin",
            std::time::Duration::from_secs(10),
            || !asks(),
        );
        privileged().ok();
        assert_eq!(tag.containers().len(), 1);
    }
    util::wait_until(
        "dockerd to take the plugin back",
        std::time::Duration::from_secs(10),
        asks,
    );
    privileged()
        .stderr_has(DENIED)
        .stderr_has("container_create");
    assert_eq!(tag.containers().len(), 1);
}

/// SIGHUP makes the plugin read its config again: a broken config is logged and the policy it
/// had kept; a changed one takes effect (here `authz.allow = ["images"]` lets a tag through).
#[test]
fn sighup_reloads_the_plugins_config() {
    if !bed_is_up() {
        return;
    }
    let _alone = PLUGIN_IN_PLACE.write().unwrap_or_else(|e| e.into_inner());
    let original = std::fs::read_to_string(CONFIG).unwrap();
    let pid: i32 = std::fs::read_to_string("/run/jobdock-authz-test/plugin.pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    struct Restore<'a>(&'a str, i32);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            std::fs::write(CONFIG, self.0).unwrap();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.1),
                nix::sys::signal::SIGHUP,
            );
        }
    }
    let reload = |text: &str, want: &str| {
        let before = log_size();
        std::fs::write(CONFIG, text).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGHUP).unwrap();
        util::wait_until(want, std::time::Duration::from_secs(10), || {
            log_since(before).contains(want)
        });
    };
    let tag = "jobdock-authz-test/tagged:reload";
    let tag_it = || dk(&["tag", IMAGE, tag]);
    {
        let _restore = Restore(&original, pid);
        reload(
            &format!("{original}\n[bogus]\nx = 1\n"),
            "SIGHUP: keeping the previous policy",
        );
        tag_it().stderr_has(DENIED).stderr_has("image");
        let allowing = original.replace("[authz]\n", "[authz]\nallow = [\"images\"]\n");
        assert_ne!(allowing, original);
        reload(&allowing, "SIGHUP: config reloaded");
        tag_it().ok();
        dk(&["rmi", tag]).ok();
    }
    util::wait_until(
        "the original policy back",
        std::time::Duration::from_secs(10),
        || tag_it().stderr.contains(DENIED),
    );
}
