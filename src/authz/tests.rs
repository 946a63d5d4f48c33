//! Table-driven tests of the plugin's policy: jobdock's own requests pass (its plans' create
//! bodies as `engine::body` renders them, and the image-reading container's), and every shape
//! the site policy refuses, every bypass class of `research/authz.md`, is denied with the field
//! and rule that say why.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::body::{self, go_fold};
use super::policy::{ApiRequest, Denial, MIN_API, Policy, Route, TlsUser, UserIds, Who};
use crate::config::{AuthzAction, SiteConfig, SiteMount};

fn site() -> SiteConfig {
    crate::plan::tests::site()
}

/// jobdock's create body for alice's job 212 (with `env` over the usual variables), exactly as
/// the engine sends it: staged mounts and all.
fn jobdock_body(config: &SiteConfig, env: &[(&str, &str)]) -> Value {
    let plan = crate::plan::tests::plan_cfg(config, env, &[]).expect("the plan builds");
    crate::engine::body::create_json(&crate::engine::as_staged(&plan, &config.engine.state_dir))
}

fn req<'a>(method: &'a str, uri: &'a str, body: Option<&'a [u8]>) -> ApiRequest<'a> {
    ApiRequest {
        method,
        uri,
        headers: BTreeMap::new(),
        body,
    }
}

fn create(policy: &Policy, who: &Who, body: &[u8]) -> Result<(), Denial> {
    policy
        .decide(who, &req("POST", "/containers/create?name=x", Some(body)))
        .map(|_| ())
}

/// `v` with the value at JSON pointer `at` replaced (`Value::Null` removes it).
fn with(mut v: Value, at: &str, value: Value) -> Value {
    let (parent, key) = at.rsplit_once('/').unwrap();
    let obj = v
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent} in the body"))
        .as_object_mut()
        .unwrap();
    if value.is_null() {
        obj.remove(key);
    } else {
        obj.insert(key.to_string(), value);
    }
    v
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn alice_tls() -> Who {
    Who::Tls(TlsUser {
        name: "alice".into(),
        ids: Some(UserIds {
            uid: 2001,
            gid: 2001,
            groups: BTreeSet::from([2001, 3001, 3002]),
        }),
    })
}

/// Asserts `got` is a denial whose field contains `field` and whose rule contains `rule`.
fn assert_denied(name: &str, got: Result<(), Denial>, field: &str, rule: &str) {
    match got {
        Ok(()) => panic!("{name}: allowed, want denied ({field}: {rule})"),
        Err(d) => assert!(
            d.field.contains(field) && d.rule.contains(rule),
            "{name}: denied as `{d}`, want field {field:?} and rule {rule:?}"
        ),
    }
}

#[test]
fn jobdock_plans_pass_unchanged() {
    let config = site();
    let policy = Policy::new(&config);
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("a plain LSF job", &[]),
        (
            "with a user volume",
            &[("LSB_DOCKER_VOLUMES", "/gpfs/lab/data:/data:ro")],
        ),
        ("on the host network", &[("LSB_DOCKER_NETWORK", "host")]),
        ("with published ports", &[("LSB_DOCKER_PORTS", "8080:80")]),
        ("with a larger /dev/shm", &[("LSB_DOCKER_SHM_SIZE", "1g")]),
    ];
    for (name, env) in cases {
        let body = jobdock_body(&config, env);
        assert_eq!(
            create(&policy, &Who::Unnamed, &bytes(&body)),
            Ok(()),
            "{name}: {body:#}"
        );
        // As alice herself over TLS too, without the staged mounts (a TLS user gets none).
        let mut tls = config.clone();
        tls.authz.tls_users = true;
        let unmounted = with(body.clone(), "/HostConfig/Mounts", json!([]));
        assert_eq!(
            create(&Policy::new(&tls), &alice_tls(), &bytes(&unmounted)),
            Ok(()),
            "{name} as alice over TLS"
        );
        assert_denied(
            &format!("{name} as alice over TLS, with jobdock's staged mounts"),
            create(&Policy::new(&tls), &alice_tls(), &bytes(&body)),
            "HostConfig.Mounts[0]",
            "a TLS user's container gets no binds from jobdock's staging directory",
        );
    }
    // The staged mounts really are under the state directory, so the rule was exercised.
    let body = jobdock_body(
        &config,
        &[("LSB_DOCKER_VOLUMES", "/gpfs/lab/data:/data:ro")],
    );
    let sources: Vec<&str> = body["HostConfig"]["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Source"].as_str().unwrap())
        .collect();
    assert!(
        sources
            .iter()
            .any(|s| s.starts_with("/run/jobdock/mounts/")),
        "{sources:?}"
    );
}

/// With `engine.output = "fifo"` the body has exactly two more binds, the job's FIFOs from its
/// staging directory: they pass, as every staged file does, and a FIFO bind from anywhere else
/// (another path at the same target) does not.
#[test]
fn the_output_fifos_pass_and_nothing_else_with_them() {
    let mut config = site();
    let policy = Policy::new(&config);
    let attach = jobdock_body(&config, &[]);
    config.engine.output = crate::config::OutputPath::Fifo;
    let fifo = jobdock_body(&config, &[]);
    let mounts = |b: &Value| b["HostConfig"]["Mounts"].as_array().unwrap().clone();
    // (The staged copies of the user's directories are numbered in mount order: compare by
    // target.)
    let targets = |b: &Value| -> Vec<String> {
        mounts(b)
            .iter()
            .map(|m| m["Target"].as_str().unwrap().to_string())
            .collect()
    };
    let extra: Vec<String> = targets(&fifo)
        .into_iter()
        .filter(|t| !targets(&attach).contains(t))
        .collect();
    assert_eq!(extra, ["/dev/jobdock/stdout", "/dev/jobdock/stderr"]);
    for m in mounts(&fifo)
        .iter()
        .filter(|m| m["Target"].as_str().unwrap().starts_with("/dev/jobdock/"))
    {
        let source = m["Source"].as_str().unwrap();
        assert!(
            source.starts_with(&format!("{}/", config.engine.state_dir.display())),
            "{m}"
        );
    }
    assert_eq!(mounts(&fifo).len(), mounts(&attach).len() + 2);
    assert_eq!(
        create(&policy, &Who::Unnamed, &bytes(&fifo)),
        Ok(()),
        "{fifo:#}"
    );
    let i = mounts(&fifo)
        .iter()
        .position(|m| m["Target"] == "/dev/jobdock/stdout")
        .unwrap();
    let elsewhere = with(
        fifo,
        &format!("/HostConfig/Mounts/{i}/Source"),
        json!("/home/alice/fifo"),
    );
    assert_denied(
        "a FIFO bind from the user's home",
        create(&policy, &Who::Unnamed, &bytes(&elsewhere)),
        &format!("HostConfig.Mounts[{i}]"),
        "neither in jobdock's staging directory",
    );
}

#[test]
fn a_site_mount_passes_and_must_stay_read_only() {
    let mut config = site();
    config.mounts.site.push(SiteMount {
        source: "/opt/lsf".into(),
        target: None,
        readonly: true,
    });
    let policy = Policy::new(&config);
    let body = jobdock_body(&config, &[]);
    assert_eq!(create(&policy, &Who::Unnamed, &bytes(&body)), Ok(()));
    let mounts = body["HostConfig"]["Mounts"].as_array().unwrap();
    let i = mounts
        .iter()
        .position(|m| m["Source"] == "/opt/lsf")
        .unwrap();
    let writable = with(
        body.clone(),
        &format!("/HostConfig/Mounts/{i}/ReadOnly"),
        json!(false),
    );
    assert_denied(
        "a read-only site mount made writable",
        create(&policy, &Who::Unnamed, &bytes(&writable)),
        &format!("HostConfig.Mounts[{i}]"),
        "must be read-only",
    );
}

#[test]
fn the_image_reading_container_passes() {
    let labels = BTreeMap::from([("jobdock.job".to_string(), "212".to_string())]);
    let body =
        serde_json::to_value(crate::engine::body::inert_body("sha256:abc", &labels)).unwrap();
    assert_eq!(
        create(&Policy::new(&site()), &Who::Unnamed, &bytes(&body)),
        Ok(()),
        "{body:#}"
    );
}

#[test]
fn creates_outside_the_plan_invariants_are_denied() {
    let config = site();
    let policy = Policy::new(&config);
    let base = jobdock_body(&config, &[]);
    let mounts = base["HostConfig"]["Mounts"].clone();
    let mount = |m: Value| {
        let mut all = mounts.clone();
        all.as_array_mut().unwrap().push(m);
        all
    };
    let bind = |source: &str| {
        json!({"Type": "bind", "Source": source, "Target": "/x", "ReadOnly": false,
               "BindOptions": {"Propagation": "rprivate"}})
    };
    let n = mounts.as_array().unwrap().len();
    let nth = format!("HostConfig.Mounts[{n}]");
    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        (
            "privileged",
            "/HostConfig/Privileged",
            json!(true),
            "HostConfig.Privileged",
            "must be false",
        ),
        (
            "cap-add SYS_ADMIN",
            "/HostConfig/CapAdd",
            json!(["CAP_SYS_ADMIN"]),
            "HostConfig.CapAdd",
            "SYS_ADMIN is not in the site's allowlist",
        ),
        (
            "cap-add ALL",
            "/HostConfig/CapAdd",
            json!(["ALL"]),
            "HostConfig.CapAdd",
            "not a capability",
        ),
        (
            "cap-add as a string",
            "/HostConfig/CapAdd",
            json!("SYS_PTRACE"),
            "HostConfig.CapAdd",
            "SYS_PTRACE",
        ),
        (
            "no cap-drop",
            "/HostConfig/CapDrop",
            json!([]),
            "HostConfig.CapDrop",
            "must include \"ALL\"",
        ),
        (
            "no no-new-privileges",
            "/HostConfig/SecurityOpt",
            json!([]),
            "HostConfig.SecurityOpt",
            "must include no-new-privileges",
        ),
        (
            "no-new-privileges:false",
            "/HostConfig/SecurityOpt",
            json!(["no-new-privileges:false"]),
            "HostConfig.SecurityOpt",
            "is not no-new-privileges",
        ),
        (
            "seccomp unconfined",
            "/HostConfig/SecurityOpt",
            json!(["no-new-privileges", "seccomp=unconfined"]),
            "HostConfig.SecurityOpt",
            "seccomp=unconfined",
        ),
        (
            "apparmor unconfined",
            "/HostConfig/SecurityOpt",
            json!(["no-new-privileges", "apparmor=unconfined"]),
            "HostConfig.SecurityOpt",
            "apparmor",
        ),
        (
            "label disable",
            "/HostConfig/SecurityOpt",
            json!(["no-new-privileges", "label=disable"]),
            "HostConfig.SecurityOpt",
            "label=disable",
        ),
        ("-u 0", "/User", json!("0:0"), "User", "root"),
        (
            "-u root",
            "/User",
            json!("root:root"),
            "User",
            "not a numeric",
        ),
        (
            "a lone uid",
            "/User",
            json!("2001"),
            "User",
            "must be numeric uid:gid",
        ),
        (
            "no user",
            "/User",
            Value::Null,
            "User",
            "must be numeric uid:gid",
        ),
        ("gid 0", "/User", json!("2001:0"), "User", "root"),
        (
            "a signed uid",
            "/User",
            json!("+2001:2001"),
            "User",
            "not a numeric",
        ),
        (
            "a zero-padded root",
            "/User",
            json!("00:00"),
            "User",
            "not a numeric",
        ),
        (
            "group root",
            "/HostConfig/GroupAdd",
            json!(["0"]),
            "HostConfig.GroupAdd",
            "root",
        ),
        (
            "a group by name",
            "/HostConfig/GroupAdd",
            json!(["docker"]),
            "HostConfig.GroupAdd",
            "not a numeric",
        ),
        (
            "--pid host",
            "/HostConfig/PidMode",
            json!("host"),
            "HostConfig.PidMode",
            "must be empty",
        ),
        (
            "another container's pids",
            "/HostConfig/PidMode",
            json!("container:abc"),
            "HostConfig.PidMode",
            "must be empty",
        ),
        (
            "--userns host",
            "/HostConfig/UsernsMode",
            json!("host"),
            "HostConfig.UsernsMode",
            "must be empty",
        ),
        (
            "--uts host",
            "/HostConfig/UTSMode",
            json!("host"),
            "HostConfig.UTSMode",
            "must be empty",
        ),
        (
            "--cgroupns host",
            "/HostConfig/CgroupnsMode",
            json!("host"),
            "HostConfig.CgroupnsMode",
            "private",
        ),
        (
            "--ipc host",
            "/HostConfig/IpcMode",
            json!("host"),
            "HostConfig.IpcMode",
            "not in ipc.allowed",
        ),
        (
            "another container's network",
            "/HostConfig/NetworkMode",
            json!("container:abc"),
            "HostConfig.NetworkMode",
            "not in network.allowed",
        ),
        (
            "-v /:/host",
            "/HostConfig/Binds",
            json!(["/:/host"]),
            "HostConfig.Binds",
            "source \"/\"",
        ),
        (
            "a named volume bind",
            "/HostConfig/Binds",
            json!(["vol:/data"]),
            "HostConfig.Binds",
            "must be empty",
        ),
        (
            "--volumes-from",
            "/HostConfig/VolumesFrom",
            json!(["other"]),
            "HostConfig.VolumesFrom",
            "must be empty",
        ),
        (
            "a volume driver",
            "/HostConfig/VolumeDriver",
            json!("local-persist"),
            "HostConfig.VolumeDriver",
            "must be empty",
        ),
        (
            "a bind of /",
            "/HostConfig/Mounts",
            mount(bind("/")),
            &nth,
            "neither in jobdock's staging directory",
        ),
        (
            "a bind of /etc",
            "/HostConfig/Mounts",
            mount(bind("/etc")),
            &nth,
            "neither in jobdock's staging directory",
        ),
        (
            "a bind of the state dir itself",
            "/HostConfig/Mounts",
            mount(bind("/run/jobdock")),
            &nth,
            "neither",
        ),
        (
            "a bind of the staging root",
            "/HostConfig/Mounts",
            mount(bind("/run/jobdock/mounts")),
            &nth,
            "neither",
        ),
        (
            "a bind climbing out of the state dir",
            "/HostConfig/Mounts",
            mount(bind("/run/jobdock/x/../../../etc")),
            &nth,
            "not a plain absolute path",
        ),
        (
            "a bind with a doubled slash",
            "/HostConfig/Mounts",
            mount(bind("/run/jobdock//x/y")),
            &nth,
            "not a plain absolute path",
        ),
        (
            "a relative bind",
            "/HostConfig/Mounts",
            mount(bind("run/jobdock/x/y")),
            &nth,
            "not a plain absolute path",
        ),
        (
            "a shared bind",
            "/HostConfig/Mounts",
            mount(
                json!({"Type": "bind", "Source": "/run/jobdock/x/y", "Target": "/x", "BindOptions": {"Propagation": "rshared"}}),
            ),
            &nth,
            "must be private",
        ),
        (
            "a local volume binding the host",
            "/HostConfig/Mounts",
            mount(
                json!({"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}),
            ),
            &nth,
            "only binds",
        ),
        (
            "a tmpfs mount",
            "/HostConfig/Mounts",
            mount(json!({"Type": "tmpfs", "Target": "/x"})),
            &nth,
            "only binds",
        ),
        (
            "--tmpfs",
            "/HostConfig/Tmpfs",
            json!({"/x": "exec"}),
            "HostConfig.Tmpfs",
            "only jobdock's /tmp",
        ),
        (
            "a /tmp with setuid programs",
            "/HostConfig/Tmpfs",
            json!({"/tmp": "rw,exec,suid,dev,size=1024,mode=1777"}),
            "HostConfig.Tmpfs",
            "is not jobdock's",
        ),
        (
            "a /tmp beyond limits.tmp_size",
            "/HostConfig/Tmpfs",
            json!({"/tmp": "rw,exec,nosuid,nodev,size=1099511627776,mode=1777"}),
            "HostConfig.Tmpfs",
            "more than limits.tmp_size",
        ),
        (
            "--device /dev/sda",
            "/HostConfig/Devices",
            json!([{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]),
            "HostConfig.Devices",
            "not in devices.paths",
        ),
        (
            "a device climbing out of its glob",
            "/HostConfig/Devices",
            json!([{"PathOnHost": "/dev/infiniband/../sda", "PathInContainer": "/dev/x", "CgroupPermissions": "rwm"}]),
            "HostConfig.Devices",
            "not in devices.paths",
        ),
        (
            "an allowed device elsewhere",
            "/HostConfig/Devices",
            json!([{"PathOnHost": "/dev/infiniband/uverbs0", "PathInContainer": "/dev/mem", "CgroupPermissions": "rwm"}]),
            "HostConfig.Devices",
            "its own path",
        ),
        (
            "a device cgroup rule",
            "/HostConfig/DeviceCgroupRules",
            json!(["a *:* rwm"]),
            "HostConfig.DeviceCgroupRules",
            "must be empty",
        ),
        (
            "--gpus all",
            "/HostConfig/DeviceRequests",
            json!([{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]),
            "HostConfig.DeviceRequests",
            "only GPUs by id",
        ),
        (
            "json-file logging",
            "/HostConfig/LogConfig",
            json!({"Type": "json-file"}),
            "HostConfig.LogConfig.Type",
            "must be \"none\"",
        ),
        (
            "the daemon's default logging",
            "/HostConfig/LogConfig",
            Value::Null,
            "HostConfig.LogConfig.Type",
            "must be \"none\"",
        ),
        (
            "log options",
            "/HostConfig/LogConfig",
            json!({"Type": "none", "Config": {"max-size": "1g"}}),
            "HostConfig.LogConfig.Config",
            "must be empty",
        ),
        (
            "the image's healthcheck",
            "/Healthcheck",
            Value::Null,
            "Healthcheck.Test",
            "NONE",
        ),
        (
            "a healthcheck of one's own",
            "/Healthcheck",
            json!({"Test": ["CMD", "id"]}),
            "Healthcheck.Test",
            "NONE",
        ),
        (
            "a sysctl",
            "/HostConfig/Sysctls",
            json!({"net.ipv4.ip_forward": "1"}),
            "HostConfig.Sysctls",
            "must be empty",
        ),
        (
            "no masked paths",
            "/HostConfig/MaskedPaths",
            json!([]),
            "HostConfig.MaskedPaths",
            "must be absent",
        ),
        (
            "writable /proc/sys",
            "/HostConfig/ReadonlyPaths",
            json!([]),
            "HostConfig.ReadonlyPaths",
            "must be absent",
        ),
        (
            "a restart policy",
            "/HostConfig/RestartPolicy",
            json!({"Name": "always"}),
            "HostConfig.RestartPolicy.Name",
            "must be \"no\"",
        ),
        (
            "the root cgroup",
            "/HostConfig/CgroupParent",
            json!("/"),
            "HostConfig.CgroupParent",
            "root cgroup",
        ),
        (
            "a cgroup parent climbing",
            "/HostConfig/CgroupParent",
            json!("/lsf/../.."),
            "HostConfig.CgroupParent",
            "not a plain cgroup name",
        ),
        (
            "no OOM killer",
            "/HostConfig/OomKillDisable",
            json!(true),
            "HostConfig.OomKillDisable",
            "must be false",
        ),
        (
            "unkillable by the OOM killer",
            "/HostConfig/OomScoreAdj",
            json!(-1000),
            "HostConfig.OomScoreAdj",
            "negative",
        ),
        (
            "another runtime",
            "/HostConfig/Runtime",
            json!("runsc-privileged"),
            "HostConfig.Runtime",
            "runc",
        ),
        (
            "-P",
            "/HostConfig/PublishAllPorts",
            json!(true),
            "HostConfig.PublishAllPorts",
            "ports.range",
        ),
        (
            "a privileged host port",
            "/HostConfig/PortBindings",
            json!({"22/tcp": [{"HostPort": "22"}]}),
            "HostConfig.PortBindings",
            "outside ports.range",
        ),
        (
            "a random host port",
            "/HostConfig/PortBindings",
            json!({"80/tcp": [{"HostPort": ""}]}),
            "HostConfig.PortBindings",
            "outside ports.range",
        ),
        (
            "a huge /dev/shm",
            "/HostConfig/ShmSize",
            json!(1_i64 << 40),
            "HostConfig.ShmSize",
            "shm_size_max",
        ),
        (
            "links",
            "/HostConfig/Links",
            json!(["other:db"]),
            "HostConfig.Links",
            "must be empty",
        ),
        (
            "no HostConfig",
            "/HostConfig",
            Value::Null,
            "HostConfig",
            "missing",
        ),
        (
            "an endpoint config",
            "/NetworkingConfig",
            json!({"EndpointsConfig": {"bridge": {"IPAddress": "10.0.0.9"}}}),
            "NetworkingConfig.EndpointsConfig",
            "must be empty",
        ),
        (
            "a wrongly typed value",
            "/HostConfig/Privileged",
            json!("false"),
            "HostConfig.Privileged",
            "invalid type",
        ),
    ];
    for (name, at, value, field, rule) in cases {
        let body = with(base.clone(), at, value);
        assert_denied(
            name,
            create(&policy, &Who::Unnamed, &bytes(&body)),
            field,
            rule,
        );
    }
}

/// Bodies that Go's decoder reads differently from a naive parser (research/authz.md): each is
/// refused before any value is judged, with the key that makes it ambiguous.
#[test]
fn bodies_go_reads_differently_are_denied() {
    let config = site();
    let policy = Policy::new(&config);
    let good = String::from_utf8(bytes(&jobdock_body(&config, &[]))).unwrap();
    let without_last = &good[..good.len() - 1];
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "a lower-case HostConfig",
            format!(r#"{without_last},"hostconfig":{{"privileged":true}}}}"#),
            "hostconfig",
            "only in case",
        ),
        (
            "a lower-case key inside HostConfig",
            good.replacen(
                r#""HostConfig":{"#,
                r#""HostConfig":{"privileged":true,"#,
                1,
            ),
            "HostConfig.privileged",
            "only in case",
        ),
        (
            "a long s (Go folds it to s)",
            good.replacen(
                r#""HostConfig":{"#,
                "\"HostConfig\":{\"\u{17f}ecurityOpt\":[],",
                1,
            ),
            "HostConfig.\u{17f}ecurityOpt",
            "only in case",
        ),
        (
            "a Kelvin sign (Go folds it to k)",
            good.replacen(
                r#""HostConfig":{"#,
                "\"HostConfig\":{\"\u{212a}ernelMemory\":1,",
                1,
            ),
            "HostConfig.\u{212a}ernelMemory",
            "only in case",
        ),
        (
            "a duplicate User (Go keeps the last)",
            format!(r#"{without_last},"User":"0:0"}}"#),
            "User",
            "duplicate field",
        ),
        (
            "a duplicate Privileged",
            good.replacen(
                r#""HostConfig":{"#,
                r#""HostConfig":{"Privileged":true,"#,
                1,
            ),
            "HostConfig.Privileged",
            "duplicate field",
        ),
        (
            "a duplicate map key",
            good.replacen(
                r#""HostConfig":{"#,
                r#""HostConfig":{"Sysctls":{"a":"1","a":"2"},"#,
                1,
            ),
            "HostConfig.Sysctls",
            "duplicate key",
        ),
        (
            "a second object after the first (Go reads only the first)",
            format!(r#"{good}{{"HostConfig":{{"Privileged":true}}}}"#),
            "body",
            "data after the JSON object",
        ),
        (
            "garbage after the object",
            format!("{good} x"),
            "body",
            "data after the JSON object",
        ),
        (
            "the legacy top-level Privileged (no HostConfig key)",
            r#"{"Image":"busybox","User":"2001:2001","Privileged":true,"Binds":["/:/host"]}"#
                .into(),
            "Privileged",
            "unknown key",
        ),
        (
            "a legacy top-level CapAdd beside HostConfig",
            format!(r#"{without_last},"CapAdd":["SYS_ADMIN"]}}"#),
            "CapAdd",
            "unknown key",
        ),
        (
            "a key the API does not have",
            format!(r#"{without_last},"Annotations":{{}}}}"#),
            "Annotations",
            "unknown key",
        ),
        ("not JSON", "{".into(), "body", "EOF"),
        (
            "a raw control character",
            "{\"Image\":\"\u{0}\"}".into(),
            "Image",
            "control character",
        ),
    ];
    for (name, text, field, rule) in cases {
        assert_denied(
            name,
            create(&policy, &Who::Unnamed, text.as_bytes()),
            field,
            rule,
        );
    }
    // Go replaces invalid UTF-8 with U+FFFD; refused here.
    assert_denied(
        "invalid UTF-8",
        create(&policy, &Who::Unnamed, b"{\"Image\":\"\xff\"}"),
        "Image",
        "invalid unicode",
    );

    // Escapes in keys are read as Go reads them: this is HostConfig, and its Privileged is seen.
    let escaped = good.replacen(
        r#""HostConfig":{"#,
        r#""\u0048ostConfig":{"Privileged":true,"#,
        1,
    );
    assert_denied(
        "an escaped key",
        create(&policy, &Who::Unnamed, escaped.as_bytes()),
        "HostConfig",
        "duplicate field",
    );
    assert_eq!(go_fold("\u{17f}ecurity\u{212a}"), "securityk");
}

#[test]
fn a_body_bearing_request_without_its_body_is_denied() {
    let policy = Policy::new(&site());
    for body in [None, Some(&b""[..])] {
        let got = policy
            .decide(&Who::Unnamed, &req("POST", "/containers/create", body))
            .map(|_| ());
        assert_denied("create without a body", got, "body", "did not pass on");
    }
}

/// Route normalization: what dockerd's router would route, and what it could route elsewhere.
#[test]
fn routes_are_normalized_as_the_router_does() {
    let cases: &[(&str, Result<(&str, Option<(u32, u32)>), &str>)] = &[
        ("/containers/create", Ok(("/containers/create", None))),
        (
            "/v1.41/containers/create?name=x",
            Ok(("/containers/create", Some((1, 41)))),
        ),
        ("/v1.40/_ping", Ok(("/_ping", Some(MIN_API)))),
        ("/containers/%63reate", Ok(("/containers/create", None))),
        ("/containers%2Fcreate", Ok(("/containers/create", None))),
        (
            "/%761.41/containers/create",
            Ok(("/containers/create", Some((1, 41)))),
        ),
        ("/v1.39/containers/create", Err("older than 1.40")),
        ("/v1.23/containers/abc/start", Err("older than 1.40")),
        ("/v1/containers/create", Err("is not an API version")),
        ("/v1.41.1/containers/create", Err("is not an API version")),
        ("/v1.41", Err("names no route")),
        ("/containers/%2563reate", Err("percent-encoded twice")),
        ("/containers//create", Err("empty, . or .. segment")),
        ("/containers/./create", Err("empty, . or .. segment")),
        ("/v1.41/../containers/create", Err("empty, . or .. segment")),
        ("/containers/create/", Err("empty, . or .. segment")),
        ("/containers/%ff", Err("not UTF-8")),
        ("/containers/a%20b/json", Err("printable ASCII")),
        ("containers/create", Err("must start with /")),
        // The absolute form, which Go's server routes by its path.
        ("http://docker/containers/create", Err("must start with /")),
        ("/containers/create#x", Err("fragment")),
        (
            "/images/create?fromImage=a&fromImage=b",
            Err("occurs twice"),
        ),
        ("/images/create?fromImage=a;fromSrc=-", Err("';'")),
    ];
    for (uri, want) in cases {
        match (Route::parse("POST", uri), want) {
            (Ok(r), Ok((path, version))) => {
                assert_eq!((r.path.as_str(), r.version), (*path, *version), "{uri}")
            }
            (Err(d), Err(rule)) => {
                assert!(d.rule.contains(rule), "{uri}: {d}");
                assert_eq!(d.field, "RequestUri", "{uri}");
            }
            (got, want) => panic!("{uri}: got {got:?}, want {want:?}"),
        }
    }
    assert_denied(
        "an unknown method",
        Route::parse("PATCH", "/containers/x/json").map(|_| ()),
        "RequestMethod",
        "PATCH",
    );
}

#[test]
fn a_percent_encoded_create_is_checked_as_a_create() {
    let config = site();
    let policy = Policy::new(&config);
    let good = bytes(&jobdock_body(&config, &[]));
    let bad = bytes(&with(
        jobdock_body(&config, &[]),
        "/HostConfig/Privileged",
        json!(true),
    ));
    for uri in [
        "/containers/%63reate",
        "/v1.41/containers%2fcreate",
        "/%63ontainers/create?name=x",
    ] {
        assert!(
            policy
                .decide(&Who::Unnamed, &req("POST", uri, Some(&good)))
                .is_ok(),
            "{uri}"
        );
        assert_denied(
            uri,
            policy
                .decide(&Who::Unnamed, &req("POST", uri, Some(&bad)))
                .map(|_| ()),
            "HostConfig.Privileged",
            "must be false",
        );
    }
}

/// Every request jobdock makes for a job (research/authz.md), and read-only inspection, passes.
#[test]
fn jobdock_requests_and_inspection_pass() {
    let policy = Policy::new(&site());
    let cases = [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/version"),
        ("GET", "/v1.41/info"),
        ("GET", "/images/jobdock-test/busybox/json"),
        (
            "GET",
            "/images/127.0.0.1:5000/jobdock-test/busybox:latest/json",
        ),
        (
            "GET",
            "/distribution/127.0.0.1:5001/private/busybox:latest/json",
        ),
        (
            "POST",
            "/images/create?fromImage=127.0.0.1%3A5000%2Fjobdock-test%2Fbusybox&tag=latest",
        ),
        ("GET", "/containers/abc/json"),
        ("HEAD", "/containers/abc/archive?path=%2Fetc%2Fgroup"),
        ("GET", "/containers/abc/archive?path=%2Fetc%2Fgroup"),
        (
            "POST",
            "/containers/abc/attach?stream=true&stdin=true&stdout=true&stderr=true",
        ),
        ("POST", "/containers/abc/start"),
        ("POST", "/containers/abc/wait?condition=not-running"),
        ("POST", "/containers/abc/kill?signal=SIGTERM"),
        ("POST", "/containers/abc/resize?h=24&w=80"),
        ("POST", "/containers/abc/pause"),
        ("POST", "/containers/abc/unpause"),
        ("DELETE", "/containers/abc?force=true&v=true"),
        (
            "GET",
            "/containers/json?all=true&filters=%7B%22label%22%3A%5B%22jobdock.job%3D212%22%5D%7D",
        ),
        ("GET", "/containers/abc/logs?stdout=1"),
        ("GET", "/networks"),
        ("GET", "/volumes"),
        ("GET", "/events"),
    ];
    for (method, uri) in cases {
        assert!(
            policy
                .decide(&Who::Unnamed, &req(method, uri, None))
                .is_ok(),
            "{method} {uri}: {:?}",
            policy.decide(&Who::Unnamed, &req(method, uri, None))
        );
    }
    let got = policy
        .decide(&Who::Unnamed, &req("POST", "/containers/abc/start", None))
        .unwrap();
    assert_eq!(
        (got.action.as_str(), got.container.as_deref()),
        ("container_start", Some("abc"))
    );
}

/// Routes that must carry no body: a body, or a header announcing one dockerd did not pass on,
/// is refused (an old start's HostConfig replaces the checked one).
#[test]
fn bodiless_routes_with_a_body_are_denied() {
    let policy = Policy::new(&site());
    let host_config = br#"{"Privileged":true,"Binds":["/:/host"]}"#;
    assert_denied(
        "start with a HostConfig",
        policy
            .decide(
                &Who::Unnamed,
                &req("POST", "/v1.41/containers/abc/start", Some(host_config)),
            )
            .map(|_| ()),
        "body",
        "takes no body",
    );
    for (name, value) in [
        ("Content-Length", "2000000"),
        ("Transfer-Encoding", "chunked"),
    ] {
        let mut r = req("POST", "/containers/abc/start", None);
        r.headers.insert(name.into(), value.into());
        assert_denied(
            name,
            policy.decide(&Who::Unnamed, &r).map(|_| ()),
            "body",
            "takes no body",
        );
    }
    let mut r = req("POST", "/containers/abc/start", None);
    r.headers.insert("Content-Length".into(), "0".into());
    assert!(policy.decide(&Who::Unnamed, &r).is_ok());
}

/// Default deny: what jobdock never does is refused, naming what would allow it.
#[test]
fn other_actions_are_denied_unless_the_site_allows_them() {
    let policy = Policy::new(&site());
    let exec_root = br#"{"User":"0","Cmd":["sh"],"Privileged":false}"#;
    let cases: &[(&str, &str, Option<&[u8]>, &str, &str)] = &[
        (
            "POST",
            "/containers/abc/exec",
            Some(exec_root),
            "route",
            "\"exec\"",
        ),
        ("POST", "/exec/abc/start", None, "route", "\"exec\""),
        (
            "POST",
            "/containers/abc/update",
            Some(br#"{"Memory":1}"#),
            "route",
            "\"update\"",
        ),
        ("POST", "/build?t=x", None, "route", "\"build\""),
        ("POST", "/session", None, "route", "\"build\""),
        (
            "POST",
            "/plugins/pull?remote=evil",
            None,
            "route",
            "\"plugins\"",
        ),
        ("POST", "/swarm/init", None, "route", "\"swarm\""),
        ("POST", "/secrets/create", None, "route", "\"swarm\""),
        ("GET", "/services", None, "route", "\"swarm\""),
        (
            "POST",
            "/volumes/create",
            Some(br#"{"Name":"v"}"#),
            "route",
            "\"volume_create\"",
        ),
        (
            "POST",
            "/networks/create",
            Some(br#"{"Name":"n"}"#),
            "route",
            "\"network_create\"",
        ),
        ("POST", "/images/load", None, "route", "\"images\""),
        (
            "POST",
            "/images/create?fromSrc=-",
            None,
            "fromSrc",
            "not a pull",
        ),
        (
            "POST",
            "/images/create?fromImage=a&evil=1",
            None,
            "query \"evil\"",
            "not a parameter",
        ),
        (
            "PUT",
            "/containers/abc/archive?path=/",
            None,
            "PUT /containers/abc/archive",
            "default deny",
        ),
        (
            "POST",
            "/containers/abc/restart",
            None,
            "POST /containers/abc/restart",
            "default deny",
        ),
        (
            "POST",
            "/commit?container=abc",
            None,
            "POST /commit",
            "default deny",
        ),
        (
            "POST",
            "/containers/abc/start?checkpoint=x",
            None,
            "query \"checkpoint\"",
            "not a parameter",
        ),
        (
            "GET",
            "/containers/abc/attach/ws",
            None,
            "GET /containers/abc/attach/ws",
            "default deny",
        ),
    ];
    for (method, uri, body, field, rule) in cases {
        let got = policy
            .decide(&Who::Unnamed, &req(method, uri, *body))
            .map(|_| ());
        assert_denied(&format!("{method} {uri}"), got, field, rule);
    }
}

#[test]
fn allowed_actions_keep_their_own_checks() {
    let mut config = site();
    config.authz.allow = AuthzAction::ALL.to_vec();
    let policy = Policy::new(&config);
    let decide = |uri: &str, body: &[u8]| {
        policy
            .decide(&Who::Unnamed, &req("POST", uri, Some(body)))
            .map(|_| ())
    };
    assert_eq!(
        decide(
            "/containers/abc/exec",
            br#"{"User":"2001:2001","Cmd":["id"]}"#
        ),
        Ok(())
    );
    let cases: &[(&str, &[u8], &str, &str)] = &[
        ("/containers/abc/exec", br#"{"User":"0","Cmd":["sh"]}"#, "User", "must be numeric uid:gid"),
        ("/containers/abc/exec", br#"{"User":"0:0","Cmd":["sh"]}"#, "User", "root"),
        ("/containers/abc/exec", br#"{"Cmd":["sh"]}"#, "User", "must be numeric"),
        ("/containers/abc/exec", br#"{"User":"2001:2001","Privileged":true}"#, "Privileged", "must be false"),
        ("/containers/abc/exec", br#"{"User":"2001:2001","user":"0:0"}"#, "user", "only in case"),
        ("/containers/abc/update", br#"{"DeviceCgroupRules":["a *:* rwm"]}"#, "DeviceCgroupRules", "must be empty"),
        ("/containers/abc/update", br#"{"RestartPolicy":{"Name":"always"}}"#, "RestartPolicy", "must be \"no\""),
        ("/volumes/create", br#"{"Name":"v","Driver":"local","DriverOpts":{"type":"none","o":"bind","device":"/"}}"#, "DriverOpts", "host bind"),
        ("/volumes/create", br#"{"Name":"v","Driver":"sshfs"}"#, "Driver", "only the local driver"),
    ];
    for (uri, body, field, rule) in cases {
        assert_denied(uri, decide(uri, body), field, rule);
    }
    assert_eq!(decide("/volumes/create", br#"{"Name":"v"}"#), Ok(()));
}

/// The seed's per-user mode: dockerd names the TLS client certificate's CN; that user may only
/// run as themself, with their own groups, and act on their own containers.
#[test]
fn tls_users_are_held_to_their_own_ids() {
    let config = site();
    let body = jobdock_body(&config, &[]);
    assert_denied(
        "tls_users off",
        create(&Policy::new(&config), &alice_tls(), &bytes(&body)),
        "User",
        "authz.tls_users is off",
    );
    let mut on = config.clone();
    on.authz.tls_users = true;
    let policy = Policy::new(&on);
    // Anyone else may still create nothing but a hardened container.
    assert_eq!(create(&policy, &Who::Unnamed, &bytes(&body)), Ok(()));
    let body = with(body, "/HostConfig/Mounts", json!([]));
    assert_eq!(create(&policy, &alice_tls(), &bytes(&body)), Ok(()));
    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        (
            "bob's uid",
            "/User",
            json!("2002:2002"),
            "User",
            "not the TLS user \"alice\"'s",
        ),
        (
            "another's gid",
            "/User",
            json!("2001:2002"),
            "User",
            "gid 2002 is not a group",
        ),
        (
            "another group",
            "/HostConfig/GroupAdd",
            json!(["3001", "4000"]),
            "HostConfig.GroupAdd",
            "gid 4000",
        ),
    ];
    for (name, at, value, field, rule) in cases {
        let b = with(body.clone(), at, value);
        assert_denied(name, create(&policy, &alice_tls(), &bytes(&b)), field, rule);
    }
    let stranger = Who::Tls(TlsUser {
        name: "mallory".into(),
        ids: None,
    });
    assert_denied(
        "an unknown CN",
        create(&policy, &stranger, &bytes(&body)),
        "User",
        "not a user of this node",
    );
    let root = Who::Tls(TlsUser {
        name: "root".into(),
        ids: Some(UserIds {
            uid: 0,
            gid: 0,
            groups: BTreeSet::from([0]),
        }),
    });
    assert_denied(
        "root's CN",
        create(&policy, &root, &bytes(&body)),
        "User",
        "is root",
    );

    // Owners: the container's Config.User, as the server reads it from dockerd.
    assert_eq!(
        Policy::owns(&alice_tls(), "container_start", "2001:2001"),
        Ok(())
    );
    for user in ["2002:2002", "", "alice", "0:0"] {
        assert_denied(
            user,
            Policy::owns(&alice_tls(), "container_start", user),
            "container",
            "not as the TLS user",
        );
    }
    assert_eq!(
        Policy::owns(&Who::Unnamed, "container_start", "0:0"),
        Ok(())
    );
}

#[test]
fn denials_name_action_field_and_rule() {
    let policy = Policy::new(&site());
    let body = bytes(&with(
        jobdock_body(&site(), &[]),
        "/HostConfig/Privileged",
        json!(true),
    ));
    let d = create(&policy, &Who::Unnamed, &body).unwrap_err();
    assert_eq!(
        d.to_string(),
        "container_create: HostConfig.Privileged: must be false"
    );
}

#[test]
fn strict_maps_and_str_slices_decode() {
    let m: body::StrictMap<String> = body::decode(br#"{"a":"1","b":"2"}"#).unwrap();
    assert_eq!(m.0.len(), 2);
    let e = body::decode::<body::StrictMap<String>>(br#"{"a":"1","a":"2"}"#).unwrap_err();
    assert!(e.message.contains("duplicate key \"a\""), "{e}");
    let s: body::StrSlice = body::decode(br#""SYS_ADMIN""#).unwrap();
    assert_eq!(s.0, ["SYS_ADMIN"]);
}

/// The Docker CLI (28.2, speaking API 1.41 to dockerd 20.10) sends every key, most of them empty,
/// and newer endpoint keys (`GwPriority`, `DNSNames`): a hardened `docker run` passes, and each
/// escalation is refused for what it is.
#[test]
fn the_docker_clis_create_is_read_like_jobdocks() {
    let policy = Policy::new(&site());
    let run: Value = serde_json::from_str(include_str!("testdata/docker-cli-28-run.json")).unwrap();
    assert_eq!(
        create(&policy, &Who::Unnamed, &bytes(&run)),
        Ok(()),
        "{run:#}"
    );
    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        (
            "--privileged",
            "/HostConfig/Privileged",
            json!(true),
            "HostConfig.Privileged",
            "must be false",
        ),
        (
            "--cap-add SYS_ADMIN",
            "/HostConfig/CapAdd",
            json!(["SYS_ADMIN"]),
            "HostConfig.CapAdd",
            "SYS_ADMIN",
        ),
        (
            "-v /:/host",
            "/HostConfig/Binds",
            json!(["/:/host"]),
            "HostConfig.Binds",
            "source \"/\"",
        ),
        (
            "--pid host",
            "/HostConfig/PidMode",
            json!("host"),
            "HostConfig.PidMode",
            "must be empty",
        ),
        (
            "-u 0",
            "/User",
            json!("0"),
            "User",
            "must be numeric uid:gid",
        ),
        (
            "an alias",
            "/NetworkingConfig/EndpointsConfig/default/Aliases",
            json!(["db"]),
            "NetworkingConfig.EndpointsConfig",
            "nothing set",
        ),
    ];
    for (name, at, value, field, rule) in cases {
        assert_denied(
            name,
            create(
                &policy,
                &Who::Unnamed,
                &bytes(&with(run.clone(), at, value)),
            ),
            field,
            rule,
        );
    }
}

#[test]
fn images_come_from_the_allowed_registries() {
    let mut config = site();
    config.images.allowed_registries = vec!["127.0.0.1:5000".into()];
    let policy = Policy::new(&config);
    let body = jobdock_body(
        &config,
        &[("LSB_CONTAINER_IMAGE", "127.0.0.1:5000/lab/app:1")],
    );
    assert_eq!(create(&policy, &Who::Unnamed, &bytes(&body)), Ok(()));
    let id = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        create(
            &policy,
            &Who::Unnamed,
            &bytes(&with(body.clone(), "/Image", json!(id)))
        ),
        Ok(())
    );
    for image in ["alpine", "docker.io/library/alpine:3", "evil.example/x"] {
        assert_denied(
            image,
            create(
                &policy,
                &Who::Unnamed,
                &bytes(&with(body.clone(), "/Image", json!(image))),
            ),
            "Image",
            "images.allowed_registries",
        );
    }
    let pull = |q: &str| {
        policy
            .decide(&Who::Unnamed, &req("POST", q, None))
            .map(|_| ())
    };
    assert_eq!(
        pull("/images/create?fromImage=127.0.0.1%3A5000%2Flab%2Fapp&tag=1"),
        Ok(())
    );
    assert_denied(
        "a pull from docker.io",
        pull("/images/create?fromImage=alpine&tag=latest"),
        "fromImage",
        "images.allowed_registries",
    );
}
