//! The Debian package (scripts/build-deb.sh), built from the source under test and checked by
//! lintian, then installed, upgraded, removed and purged in a Debian 12 container of the test
//! bed's (`jobdock-test/debian12`, scripts/testbed.sh): never on this machine's own /usr.

use crate::util::{self, Out, TestJob};

const IMAGE: &str = "jobdock-test/debian12:latest";

/// The container the package is tried in; removed when the test ends, however it ends.
struct Node(String);

impl Node {
    fn start(debs: &std::path::Path) -> Node {
        let name = format!("jobdock-package-test-{}", std::process::id());
        let volume = format!("{}:/debs:ro", debs.display());
        let out = util::docker(&[
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "--name",
            &name,
            "-v",
            &volume,
            IMAGE,
            "sleep",
            "infinity",
        ]);
        assert!(
            out.status.success(),
            "docker run {IMAGE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Node(name)
    }

    /// `sh -c SCRIPT` as root in the container.
    fn sh(&self, script: &str) -> Out {
        TestJob::program("docker", &["exec", &self.0, "sh", "-c", script]).run()
    }

    /// Every path of the container's file system but dpkg's own records (its database and log,
    /// which remember the package was there) and the kernel's, with its type, mode and owner.
    fn listing(&self) -> String {
        let out = self.sh(
            "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /debs \
             -o -path /var/lib/dpkg -o -path /var/log/dpkg.log \\) -prune \
             -o -printf '%p %M %u:%g\\n' | LC_ALL=C sort",
        );
        out.ok();
        out.stdout.clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        util::docker(&["rm", "-f", &self.0]);
    }
}

/// Issue 18.5: the package lintian finds nothing in (each override in contrib/debian/lintian-
/// overrides says why); installed on a Debian 12 node it is the setuid jobdock in /usr/bin, whose
/// manual page renders, whose config is a conffile that checks, and whose hooks, plugstack line
/// and units name /usr/bin/jobdock. An upgrade keeps an admin's dpkg-statoverride (the setuid
/// bit dropped) and the site's edited config; remove keeps the config; purge leaves the node as
/// it was before the install, file for file, also when the package took over a config that no
/// package owned (a node installed from source), which dpkg then keeps without asking.
#[test]
fn the_debian_package_installs_upgrades_and_purges_to_nothing() {
    if !util::require(
        "root (the package's files are staged setuid root)",
        nix::unistd::geteuid().is_root(),
    ) || !util::bed_is_up(&[IMAGE])
        || !util::require(
            "lintian (scripts/testbed.sh up installs it)",
            std::path::Path::new("/usr/bin/lintian").exists(),
        )
    {
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    let upgrade = format!("{version}+test1");
    let debs = util::trusted_tempdir();
    let deb = util::build_deb(debs.path(), version);
    util::build_deb(debs.path(), &upgrade);
    // A site's own config, as contrib/install.sh or an admin leaves it: valid, not the example.
    std::fs::write(
        debs.path().join("site.toml"),
        "# the site's own\n[engine]\npull = \"never\"\n",
    )
    .unwrap();

    let lintian = TestJob::program(
        "lintian",
        &[
            "-EIL",
            "+pedantic",
            "--tag-display-limit",
            "0",
            &deb.display().to_string(),
        ],
    )
    .run();
    lintian.ok();
    assert_eq!(lintian.stdout, "", "lintian reports tags{}", lintian.report);

    let node = Node::start(debs.path());
    let before = node.listing();
    let name = deb.file_name().unwrap().to_str().unwrap();
    node.sh(&format!("dpkg -i /debs/{name}"))
        .ok()
        .stdout_has("Setting up jobdock");

    node.sh("command -v jobdock; stat -c '%a %U:%G' /usr/bin/jobdock")
        .ok()
        .stdout_has("/usr/bin/jobdock\n4755 root:root\n");
    node.sh("jobdock --version")
        .ok()
        .stdout_has(&format!("jobdock {version}"));
    node.sh("jobdock check-config").ok().stdout_has("OK");
    node.sh("cat /var/lib/dpkg/info/jobdock.conffiles")
        .ok()
        .stdout_has("/etc/jobdock/wrapper.toml");
    // At 100 columns: man-db keeps a page it formatted at 80 in /var/cache/man, which would be
    // the test's leftover, not the package's.
    for page in ["man -l /usr/share/man/man1/jobdock.1.gz", "man jobdock"] {
        node.sh(&format!("MANPAGER=cat MANWIDTH=100 {page}"))
            .ok()
            .stdout_has("LSB_DOCKER_VOLUMES");
    }
    let hooks = node.sh(
        "grep -H /usr/bin/jobdock /usr/libexec/jobdock/jobdock-epilog \
         /usr/libexec/jobdock/jobdock-prolog /usr/share/jobdock/lsf/esub.docker \
         /usr/share/jobdock/lsf/lsb.applications /usr/share/jobdock/slurm/plugstack.conf \
         /usr/lib/systemd/system/jobdock-authz.service /usr/lib/systemd/system/jobdock-prune.service",
    );
    hooks.ok();
    for want in [
        "jobdock-epilog:JOBDOCK=${JOBDOCK:-/usr/bin/jobdock}",
        "esub.docker:exec /usr/bin/jobdock esub",
        "lsb.applications:JOB_STARTER  = exec /usr/bin/jobdock lsf-starter;",
        "plugstack.conf:required /usr/lib/jobdock/jobdock_spank.so jobdock=/usr/bin/jobdock ",
        "jobdock-authz.service:ExecStart=/usr/bin/jobdock authz ",
        "jobdock-prune.service:ExecStart=/usr/bin/jobdock prune",
    ] {
        hooks.stdout_has(want);
    }
    // No text file of the package, the manual page among them, names the /usr/local of a
    // source install.
    let local = node.sh(
        "dpkg -L jobdock | while read -r f; do \
         [ ! -f \"$f\" ] || grep -lIE '/usr/local/(bin|lib|share/doc)/jobdock' \"$f\" || [ $? = 1 ]; \
         done",
    );
    assert_eq!(
        (local.ok().stdout.as_str(), local.stderr.as_str()),
        ("", ""),
        "files naming /usr/local{}",
        local.report
    );
    assert_eq!(
        node.sh("dpkg -L jobdock | grep -c /usr/lib/jobdock/jobdock_spank.so")
            .ok()
            .stdout,
        "1\n"
    );

    // The admin drops the setuid bit and edits the config; the upgrade keeps both, unasked.
    node.sh(
        "dpkg-statoverride --update --add root root 0755 /usr/bin/jobdock && \
         echo '# the site edit' >>/etc/jobdock/wrapper.toml",
    )
    .ok();
    node.sh(&format!(
        "dpkg -i /debs/{}",
        name.replace(version, &upgrade)
    ))
    .ok();
    node.sh("dpkg-query -W -f '${Version} ${Status}' jobdock; echo; stat -c '%a' /usr/bin/jobdock; tail -1 /etc/jobdock/wrapper.toml")
        .ok()
        .stdout_has(&format!("{upgrade} install ok installed\n755\n# the site edit\n"));

    // jobdock's state, as a job leaves it; remove keeps the config, not the program.
    node.sh("mkdir -p /run/jobdock/images && touch /run/jobdock/images/sha256-x")
        .ok();
    node.sh("dpkg -r jobdock").ok();
    node.sh("dpkg-query -W -f '${Status}' jobdock; echo; ls /usr/bin/jobdock 2>&1; tail -1 /etc/jobdock/wrapper.toml")
        .ok()
        .stdout_has("deinstall ok config-files\n")
        .stdout_has("No such file or directory")
        .stdout_has("# the site edit\n");

    // The statoverride is the admin's to remove (dpkg keeps it through a purge, as it should).
    node.sh("dpkg-statoverride --remove /usr/bin/jobdock && dpkg --purge jobdock")
        .ok();
    node.sh("dpkg-query -W jobdock").code(1);

    // A node that had a source install: its /etc/jobdock/wrapper.toml belongs to no package.
    // Installed without a terminal to answer dpkg's conffile question, the site's file is kept;
    // from then on it is the package's conffile, and a purge deletes it too.
    node.sh(&format!(
        "mkdir -p /etc/jobdock && cp /debs/site.toml /etc/jobdock/wrapper.toml && \
         dpkg -i --force-confdef --force-confold /debs/{name} </dev/null && \
         cmp /debs/site.toml /etc/jobdock/wrapper.toml && dpkg --purge jobdock"
    ))
    .ok()
    .stdout_has("Setting up jobdock");
    let after = node.listing();
    if before != after {
        let (b, a): (Vec<_>, Vec<_>) = (before.lines().collect(), after.lines().collect());
        let gone: Vec<_> = b.iter().filter(|l| !a.contains(l)).collect();
        let left: Vec<_> = a.iter().filter(|l| !b.contains(l)).collect();
        panic!("the purge left the node changed: left behind {left:#?}, gone {gone:#?}");
    }
}
