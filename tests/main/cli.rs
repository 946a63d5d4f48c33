//! The jobdock binary without a daemon: `plan` for realistic LSF and Slurm jobs with the host's
//! real NSS, identity as root and as an ordinary user, `check-config`, and the exit-code contract.

use crate::util;

use crate::util::{ALICE, BOB, TestConfig, TestJob, test_users_exist};

/// The environment LSF gives a job starter (research/lsf_observed.md), for alice's job 212.
fn lsf_job(run: TestJob) -> TestJob {
    run.env("LSB_JOBID", "212")
        .env("LSB_JOBINDEX", "0")
        .env("LSB_JOBFILENAME", "/home/jdalice/.lsbatch/1700000000.212")
        .env("LSB_MCPU_HOSTS", "node1 1 ")
        .env("LSB_DJOB_NUMPROC", "1")
        .env("LSB_QUEUE", "docker")
        .env("LS_SUBCWD", "/home/jdalice")
        .env("LSB_CONTAINER_IMAGE", "jobdock-test/busybox")
        .env("HOME", "/home/jdalice")
        .env("USER", "jdalice")
        .cwd("/home/jdalice")
}

#[test]
fn lsf_plan_as_root_for_alice() {
    if !test_users_exist() {
        return;
    }
    let cfg = TestConfig::new("");
    let spool = std::path::Path::new("/home/jdalice/.lsbatch");
    if !spool.exists() {
        std::fs::create_dir(spool).unwrap();
        nix::unistd::chown(
            spool,
            Some(nix::unistd::Uid::from_raw(ALICE.uid)),
            Some(nix::unistd::Gid::from_raw(ALICE.uid)),
        )
        .unwrap();
    }
    let out = lsf_job(TestJob::new(&[
        "plan",
        "--json",
        "--config",
        &cfg.arg(),
        "--user",
        ALICE.name,
    ]))
    .run();
    out.ok();
    let plan = out.json();
    let create = &plan["create"];
    assert_eq!(create["User"], "2001:2001", "{}", out.report);
    assert_eq!(
        create["HostConfig"]["GroupAdd"],
        serde_json::json!(["3001", "3002"]),
        "{}",
        out.report
    );
    // The job's output through the FIFOs (the default engine.output): the wrapper, then sh.
    assert_eq!(
        create["Entrypoint"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "exec >/dev/jobdock/stdout 2>/dev/jobdock/stderr && exec \"$@\"",
            "jobdock",
            "/bin/sh"
        ])
    );
    assert_eq!(
        create["Cmd"],
        serde_json::json!(["/home/jdalice/.lsbatch/1700000000.212"])
    );
    assert_eq!(create["WorkingDir"], "/home/jdalice");
    assert_eq!(create["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(create["HostConfig"]["Privileged"], false);
    assert_eq!(plan["image"], "jobdock-test/busybox:latest");
    assert_eq!(plan["pull"], "missing");
    assert_eq!(plan["labels"]["jobdock.job"], "212");
    assert_eq!(plan["labels"]["jobdock.uid"], "2001");
    assert!(
        plan["name"]
            .as_str()
            .unwrap()
            .starts_with("jobdock-lsf-212-")
    );
    assert!(
        plan["passwd"]
            .as_str()
            .unwrap()
            .contains("jdalice:x:2001:2001::/home/jdalice:/bin/sh\n")
    );
    let group = plan["group"].as_str().unwrap();
    assert!(
        group.contains("jdproj:x:3001:jdalice\n") && group.contains("jdshared:x:3002:jdalice\n"),
        "{group}"
    );
    assert!(!cfg.dir.path().join("state").exists(), "plan wrote files");
}

#[test]
fn slurm_prolog_style_root_caller_takes_slurm_job_uid() {
    if !test_users_exist() {
        return;
    }
    let cfg = TestConfig::new("");
    let out = TestJob::new(&[
        "plan",
        "--json",
        "--config",
        &cfg.arg(),
        "--image",
        "jobdock-test/busybox",
        "--",
        "hostname",
    ])
    .env("SLURM_JOB_ID", "4567")
    .env("SLURM_JOB_UID", "2002")
    .env("SLURM_JOB_WORK_DIR", "/home/jdbob")
    .env("SLURM_MEM_PER_NODE", "1024")
    .run();
    out.ok();
    let plan = out.json();
    assert_eq!(plan["create"]["User"], "2002:2002", "{}", out.report);
    assert_eq!(plan["create"]["HostConfig"]["Memory"], 1024 * 1024 * 1024);
    assert_eq!(plan["labels"]["jobdock.scheduler"], "slurm");
}

#[test]
fn an_ordinary_user_is_always_themselves() {
    if !test_users_exist() {
        return;
    }
    // Every variable that names someone else is ignored for a non-root caller.
    let out = TestJob::new(&[
        "plan",
        "--json",
        "--image",
        "jobdock-test/busybox",
        "--",
        "id",
    ])
    .env("SUDO_UID", "2002")
    .env("SLURM_JOB_ID", "4567")
    .env("SLURM_JOB_UID", "2002")
    .env("USER", BOB.name)
    .env("LOGNAME", BOB.name)
    .env("HOME", "/home/jdbob")
    .cwd("/home/jdalice")
    .user(ALICE)
    .run();
    out.ok();
    let plan = out.json();
    assert_eq!(plan["create"]["User"], "2001:2001", "{}", out.report);
    let env: Vec<&str> = plan["create"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"USER=jdalice") && env.contains(&"HOME=/home/jdalice"),
        "{env:?}"
    );

    for claim in [BOB.name, "2002", "root", "0"] {
        TestJob::new(&[
            "plan",
            "--user",
            claim,
            "--image",
            "jobdock-test/busybox",
            "--",
            "id",
        ])
        .cwd("/home/jdalice")
        .user(ALICE)
        .run()
        .code(64)
        .stderr_has("only root may run a job as another user");
    }
}

#[test]
fn an_ordinary_user_cannot_choose_the_config() {
    if !test_users_exist() {
        return;
    }
    let cfg = TestConfig::new("[mounts]\nallowed_roots = [\"/home\"]\n");
    TestJob::new(&["plan", "--config", &cfg.arg(), "--image", "x", "--", "id"])
        .cwd("/home/jdalice")
        .user(ALICE)
        .run()
        .code(64)
        .stderr_has("only root may choose the site config");
    // The variable is ignored (with a warning), not obeyed.
    let out = TestJob::new(&["plan", "--json", "--image", "x", "--", "id"])
        .env("JOBDOCK_CONFIG", &cfg.arg())
        .env("LSB_DOCKER_VOLUMES", "/home/jdalice:/h")
        .cwd("/home/jdalice")
        .user(ALICE)
        .run();
    // Whatever /etc/jobdock/wrapper.toml allows, it is not the test config's /home root. Each
    // of jobdock's lines says it is jobdock's (issue 18.1), warnings with their level.
    out.code(64)
        .stderr_has("jobdock: warning: JOBDOCK_CONFIG=")
        .stderr_has("LSB_DOCKER_VOLUMES=\"/home/jdalice:/h\"");
    for line in out.stderr.lines() {
        assert!(
            line.starts_with("jobdock: "),
            "{line:?} is not marked as jobdock's"
        );
    }
}

#[test]
fn an_ordinary_user_cannot_mount_what_they_cannot_read() {
    if !test_users_exist() {
        return;
    }
    let root_only = tempfile::Builder::new()
        .prefix("jobdock-secret")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::create_dir(root_only.path().join("inner")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root_only.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        root_only.path().join("inner"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let cfg = TestConfig::new("[mounts]\nallowed_roots = [\"/var/tmp\"]\n");
    let inner = root_only.path().join("inner");
    let plan = TestJob::new(&[
        "plan",
        "--config",
        &cfg.arg(),
        "--user",
        ALICE.name,
        "--image",
        "x",
        "--",
        "id",
    ])
    .cwd("/home/jdalice");
    // Root runs jobdock for alice: the volume is checked as alice, who cannot traverse the 0700 dir.
    plan.clone()
        .env("LSB_DOCKER_VOLUMES", &format!("{}:/data", inner.display()))
        .run()
        .code(64)
        .stderr_has("LSB_DOCKER_VOLUMES")
        .stderr_has("Permission denied");
    // An env file alice cannot read is refused, not read by root on her behalf.
    plan.env("LSB_DOCKER_ENV_FILE", "/etc/shadow")
        .run()
        .code(64)
        .stderr_has("LSB_DOCKER_ENV_FILE")
        .stderr_has("Permission denied");
}

#[test]
fn root_must_name_the_user_and_may_never_be_it() {
    let cfg = TestConfig::new("");
    TestJob::new(&["plan", "--config", &cfg.arg(), "--image", "x", "--", "id"])
        .run()
        .code(64)
        .stderr_has("name the job user");
    TestJob::new(&[
        "plan",
        "--config",
        &cfg.arg(),
        "--user",
        "root",
        "--image",
        "x",
        "--",
        "id",
    ])
    .run()
    .code(64)
    .stderr_has("uid 0");
    TestJob::new(&["plan", "--config", &cfg.arg(), "--image", "x", "--", "id"])
        .env("SUDO_UID", "0")
        .run()
        .code(64)
        .stderr_has("uid 0");
}

#[test]
fn no_image_is_a_clear_refusal() {
    let cfg = TestConfig::new("");
    TestJob::new(&[
        "plan",
        "--config",
        &cfg.arg(),
        "--user",
        "nobody",
        "--",
        "id",
    ])
    .cwd("/tmp")
    .run()
    .code(64)
    .stderr_has("no image")
    .stderr_has("LSB_CONTAINER_IMAGE");
}

#[test]
fn plan_text_is_a_commented_docker_run_line() {
    let cfg = TestConfig::new("");
    let out = TestJob::new(&[
        "plan",
        "--config",
        &cfg.arg(),
        "--user",
        "nobody",
        "--image",
        "jobdock-test/busybox",
        "--",
        "sh",
        "-c",
        "echo 'a b'",
    ])
    .cwd("/tmp")
    .run();
    out.ok()
        .stdout_has("docker run")
        .stdout_has("--cap-drop ALL")
        .stdout_has("# drop every capability");
    out.stdout_has("--user 65534:65534")
        .stdout_has("--security-opt no-new-privileges");
    out.stdout_has("jobdock-test/busybox:latest");
}

#[test]
fn check_config_reports_every_problem_with_its_key() {
    TestJob::new(&["check-config", "--draft", "wrapper.toml.example"])
        .cwd(env!("CARGO_MANIFEST_DIR"))
        .run()
        .ok()
        .stdout_has("OK");
    let cfg = TestConfig::new(
        "bogus = 1\n[security]\ncap_add = [\"SYS_ADMIN\"]\n[mounts]\nallowed_roots = [\"/\"]\n",
    );
    let out = TestJob::new(&["check-config", &cfg.arg()]).run();
    out.code(78)
        .stdout_has("engine.bogus: unknown key")
        .stdout_has("security.cap_add:")
        .stdout_has("mounts.allowed_roots:");
    TestJob::new(&["check-config", "/nonexistent/wrapper.toml"])
        .run()
        .code(78)
        .stdout_has("/nonexistent/wrapper.toml");
}

#[test]
fn a_broken_site_config_is_the_admins_exit_code() {
    let cfg = TestConfig::new("[limits]\nmemory = \"lots\"\n");
    TestJob::new(&[
        "plan",
        "--config",
        &cfg.arg(),
        "--user",
        "nobody",
        "--image",
        "x",
        "--",
        "id",
    ])
    .run()
    .code(78)
    .stderr_has("limits.memory: \"lots\" is not a size");
}

#[test]
fn the_readme_lists_every_exit_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (code, meaning) in jobdock::exit::TABLE {
        let row = format!("| {code} | {meaning} |");
        assert!(readme.contains(&row), "README.md lacks the row {row:?}");
    }
}

#[test]
fn a_config_others_could_have_written_is_refused() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let path = dir.path().join("wrapper.toml");
    std::fs::write(&path, "").unwrap();
    TestJob::new(&[
        "plan",
        "--config",
        &path.display().to_string(),
        "--user",
        "nobody",
        "--image",
        "x",
        "--",
        "id",
    ])
    .cwd("/tmp")
    .run()
    .code(78)
    .stderr_has("is not trustworthy")
    .stderr_has("/tmp is writable by group or others");
    // check-config fails for it too, saying why; as a --draft it is only validated.
    TestJob::new(&["check-config", &path.display().to_string()])
        .run()
        .code(78)
        .stdout_has("jobdock does not trust this file");
    TestJob::new(&["check-config", "--draft", &path.display().to_string()])
        .run()
        .ok()
        .stdout_has("OK");
}

/// Every problem at once: a key of the wrong type hides none of the others; a syntax error has
/// its line and column; the dangerous settings are refused by key.
#[test]
fn check_config_reports_type_errors_syntax_errors_and_dangerous_settings() {
    let cfg = TestConfig::new(
        "grace_period_secs = \"ten\"\nconnect_timeout_secs = 0\n\
         [limits]\npids = \"many\"\nmemory = \"1k\"\n\
         [devices]\npaths = [\"/dev/*\", \"/dev/sd?\", \"/dev/mem\", \"/dev/**\", \"/dev/infiniband/*\"]\n\
         [security]\nselinux_labels = [\"type:spc_t\"]\n\
         [overrides]\ncgroup_parents = [\"/\"]\n\
         [env.set]\nHOME = \"/root\"\nOK_VAR = \"1\"\n",
    );
    let out = TestJob::new(&["check-config", &cfg.arg()]).run();
    out.code(78);
    for want in [
        "engine.grace_period_secs: invalid type",
        "engine.connect_timeout_secs: must be at least 1",
        "limits.pids: invalid type",
        "limits.memory: 1.0 KiB is below",
        "devices.paths: \"/dev/*\" matches /dev/mem",
        "devices.paths: \"/dev/sd?\" matches /dev/sda",
        "devices.paths: \"/dev/mem\" matches /dev/mem",
        "devices.paths: \"/dev/**\"",
        "security.selinux_labels: \"type:spc_t\" is an unconfined domain",
        "overrides.cgroup_parents: \"/\" is the root cgroup",
        "env.set.HOME: is set by jobdock",
    ] {
        out.stdout_has(want);
    }
    assert!(
        !out.stdout.contains("\"/dev/infiniband/*\" matches"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("OK_VAR"), "{}", out.stdout);
    let syntax = TestConfig::new("[limits\nmemory = \"4g\"\n");
    TestJob::new(&["check-config", &syntax.arg()])
        .run()
        .code(78)
        .stdout_has("line ");
}

/// Usage errors are refusals (64), not clap's 2, which looks like a job's own exit code.
#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for (args, code) in [
        (&["run", "--no-such-flag"][..], 64),
        (&["no-such-command"][..], 64),
        (&["--help"][..], 0),
        (&["--version"][..], 0),
    ] {
        TestJob::new(args).run().code(code);
    }
}

/// Issue 18.4: the manual page renders with man(1) without a complaint and documents every
/// variable; the completion scripts are valid shell; `--version` names the commit.
#[test]
fn the_manual_page_completions_and_version_come_from_the_command_line() {
    let page = TestJob::new(&["man"]).run();
    page.code(0);
    let dir = tempfile::tempdir().unwrap();
    let roff = dir.path().join("jobdock.1");
    std::fs::write(&roff, &page.stdout).unwrap();
    let shown = TestJob::program(
        "/usr/bin/man",
        &["-l", "--warnings", roff.to_str().unwrap()],
    )
    .env("MANWIDTH", "100")
    .run();
    shown.code(0);
    assert_eq!(shown.stderr, "", "man warns about the page");
    for want in [
        "SUBCOMMANDS",
        "lsf-starter",
        "LSB_DOCKER_VOLUMES",
        "LSB_DOCKER_CGROUP",
    ] {
        assert!(shown.stdout.contains(want), "the page lacks {want}");
    }
    let bash = TestJob::new(&["completions", "bash"]).run();
    bash.code(0);
    let script = dir.path().join("jobdock.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    TestJob::program("/bin/bash", &["-n", script.to_str().unwrap()])
        .run()
        .code(0);
    assert!(bash.stdout.contains("lsf-starter") && bash.stdout.contains("--log-level"));
    let version = TestJob::new(&["--version"]).run();
    version.code(0);
    let text = version.stdout.trim();
    assert!(
        text.starts_with("jobdock 0.") && text.ends_with(')') && !text.contains("(unknown)"),
        "{text}"
    );
}

/// `plan --json` names every mount by its host source, with where a checked one is staged; the
/// create body names the staging mounts (issue 12.10).
#[test]
fn plan_json_lists_each_mount_by_its_host_source() {
    if !test_users_exist() {
        return;
    }
    let cfg = TestConfig::new("");
    let out = TestJob::new(&[
        "plan",
        "--config",
        &cfg.arg(),
        "--user",
        ALICE.name,
        "--image",
        "jobdock-test/busybox",
        "--json",
        "--",
        "true",
    ])
    .cwd("/home/jdalice")
    .run();
    out.ok();
    let v = out.json();
    let mounts = v["mounts"].as_array().unwrap();
    let home = mounts
        .iter()
        .find(|m| m["target"] == "/home/jdalice")
        .unwrap_or_else(|| panic!("no home mount: {mounts:?}"));
    assert_eq!(home["source"], "/home/jdalice");
    assert_eq!(home["readonly"], false);
    assert_eq!(home["why"], "the user's home directory");
    let staged = home["staged_at"].as_str().unwrap();
    let in_body = v["create"]["HostConfig"]["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Target"] == "/home/jdalice")
        .unwrap();
    assert_eq!(in_body["Source"], staged);
}

// ------------------------------------------------------------------------ contrib/install.sh --

/// Issue 12.11: install.sh with a non-default PREFIX, staged under a fake root (DESTDIR, so
/// nothing of the node's own /usr/local or /etc/jobdock is touched): the binary is setuid root,
/// the example config is installed once and never overwritten, the Slurm epilog and prolog and the
/// LSF esub call the binary where it was installed, and the next steps name the real paths.
/// CONFDIR (a config jobdock would never read) and a relative PREFIX are refused.
#[test]
fn install_sh_with_a_prefix_installs_hooks_that_call_the_installed_binary() {
    use std::os::unix::fs::MetadataExt;
    if !util::require(
        "root (install.sh installs setuid root)",
        nix::unistd::geteuid().is_root(),
    ) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/install.sh");
    let root = util::trusted_tempdir();
    let dest = root.path();
    for dir in ["etc/slurm", "opt/lsf/etc"] {
        std::fs::create_dir_all(dest.join(dir)).unwrap();
    }
    let install = || {
        TestJob::program(script, &[util::BIN])
            .env("DESTDIR", &dest.display().to_string())
            .env("PREFIX", "/opt/jobdock")
            .env("LSF_SERVERDIR", "/opt/lsf/etc")
            .run()
    };
    let out = install();
    out.ok();

    let bin = dest.join("opt/jobdock/bin/jobdock");
    let meta = std::fs::metadata(&bin).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o4755),
        "{}",
        out.report
    );
    let config = dest.join("etc/jobdock/wrapper.toml");
    let example = include_str!("../../wrapper.toml.example");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), example);
    assert_eq!(std::fs::metadata(&config).unwrap().mode() & 0o7777, 0o644);
    for hook in [
        "etc/slurm/jobdock-epilog",
        "etc/slurm/jobdock-prolog",
        "opt/lsf/etc/esub.docker",
    ] {
        let path = dest.join(hook);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{hook}: {e}{}", out.report));
        assert!(text.contains("/opt/jobdock/bin/jobdock"), "{hook}:\n{text}");
        assert!(!text.contains("/usr/local/bin/jobdock"), "{hook}:\n{text}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755), "{hook}");
    }
    // The manual page and the completion, written by the binary installed (issue 18.4).
    let page = std::fs::read_to_string(dest.join("opt/jobdock/share/man/man1/jobdock.1")).unwrap();
    assert!(
        page.starts_with(".ie") && page.contains("LSB_DOCKER_VOLUMES"),
        "{page}"
    );
    let completion =
        std::fs::read_to_string(dest.join("opt/jobdock/share/bash-completion/completions/jobdock"))
            .unwrap();
    assert!(completion.contains("_jobdock()"), "{completion}");
    // The systemd units, the files a site merges into its configuration and the documentation
    // (issue 18.5: the Debian package is this install with PREFIX=/usr), naming the PREFIX.
    for (file, want) in [
        (
            "opt/jobdock/lib/systemd/system/jobdock-authz.service",
            "ExecStart=/opt/jobdock/bin/jobdock authz ",
        ),
        (
            "opt/jobdock/lib/systemd/system/jobdock-authz.service",
            "file:///opt/jobdock/share/doc/jobdock/SECURITY.md",
        ),
        (
            "opt/jobdock/lib/systemd/system/jobdock-prune.service",
            "ExecStart=/opt/jobdock/bin/jobdock prune",
        ),
        (
            "opt/jobdock/lib/systemd/system/jobdock-prune.timer",
            "OnCalendar=",
        ),
        (
            "opt/jobdock/share/jobdock/slurm/plugstack.conf",
            "\nrequired /opt/jobdock/lib/jobdock/jobdock_spank.so jobdock=/opt/jobdock/bin/jobdock ",
        ),
        (
            "opt/jobdock/share/jobdock/lsf/lsb.applications",
            "JOB_STARTER  = exec /opt/jobdock/bin/jobdock lsf-starter;",
        ),
        (
            "opt/jobdock/share/jobdock/lsf/esub.docker",
            "exec /opt/jobdock/bin/jobdock esub",
        ),
        (
            "opt/jobdock/share/jobdock/systemd/docker.service.d/jobdock-authz.conf",
            "Requires=jobdock-authz.service",
        ),
        ("opt/jobdock/share/doc/jobdock/README.md", "# jobdock"),
        ("opt/jobdock/share/doc/jobdock/LICENSE", "MIT License"),
    ] {
        let text =
            std::fs::read_to_string(dest.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(want), "{file} lacks {want:?}:\n{text}");
        assert!(!text.contains("/usr/local/"), "{file}:\n{text}");
    }
    for want in [
        "Epilog=/etc/slurm/jobdock-epilog",
        "scontrol reconfigure",
        "JOB_STARTER  = exec /opt/jobdock/bin/jobdock lsf-starter;",
        "POST_EXEC    = /opt/jobdock/bin/jobdock cleanup",
        "/opt/jobdock/bin/jobdock doctor",
    ] {
        out.stdout_has(want);
    }
    // The staged epilog calls the binary at its real path, which is not on this node: it says
    // so and succeeds, as on a node before the rollout.
    TestJob::program(
        dest.join("etc/slurm/jobdock-epilog").display().to_string(),
        &[],
    )
    .env("SLURM_JOB_ID", "1")
    .run()
    .ok()
    .stderr_has("/opt/jobdock/bin/jobdock is not installed");

    // Again: the binary is replaced, a site's config is not.
    std::fs::write(&config, "# the site's own\n").unwrap();
    install()
        .ok()
        .stdout_has("wrapper.toml exists; left as it is");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# the site's own\n"
    );

    let elsewhere = util::trusted_tempdir();
    let refused = [
        (
            "CONFDIR",
            "/opt/jobdock/etc",
            "reads only /etc/jobdock/wrapper.toml",
        ),
        ("PREFIX", "opt/jobdock", "not an absolute path"),
    ];
    for (var, value, why) in refused {
        let out = TestJob::program(script, &[util::BIN])
            .env("DESTDIR", &elsewhere.path().display().to_string())
            .env(var, value)
            .run();
        assert_ne!(out.code, 0, "{var}={value}{}", out.report);
        out.stderr_has(why);
        assert_eq!(
            std::fs::read_dir(elsewhere.path()).unwrap().count(),
            0,
            "{var}={value} installed something{}",
            out.report
        );
    }
}
