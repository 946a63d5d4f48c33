//! jobdock's own messages and its audit record.
//!
//! Every line jobdock writes to stderr starts with `jobdock:` (or, in the site's `long` format,
//! a UTC time and `jobdock[pid]:`), so a job's output shows which lines are the wrapper's. The
//! level comes from the user (`--log-level`, `LSB_DOCKER_RUN_LOGLEVEL`), else the site
//! (`[logging] level`), else `warn`; the site's part is known only once its config is read, so
//! the level and format are set twice: at start, then by [`configure`].
//!
//! The audit record is one line per job (or per refusal) that [`audit`] sends to syslog (or
//! stderr): who ran what, with which mounts and devices, and how it ended.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{AuditTarget, LogFormat, Logging};

/// The level names both `--log-level` and `LSB_DOCKER_RUN_LOGLEVEL` accept, for their errors.
pub const LEVEL_NAMES: &str = "critical, error, warning (or warn), info, debug or trace";

/// The most verbose level shown (`level_rank`), and whether the user chose it.
static LEVEL: AtomicU8 = AtomicU8::new(level_rank(Level::WARN));
static USER_CHOSE: AtomicBool = AtomicBool::new(false);
static LONG: AtomicBool = AtomicBool::new(false);
/// The site's `[logging]`, once its config is read; before, the built-in defaults.
static SITE: Mutex<Option<Logging>> = Mutex::new(None);

const fn level_rank(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Starts logging to stderr; `user` is the level the user asked for, if any.
pub fn init(user: Option<Level>) {
    if let Some(level) = user {
        LEVEL.store(level_rank(level), Ordering::Relaxed);
        USER_CHOSE.store(true, Ordering::Relaxed);
    }
    let filter = tracing_subscriber::filter::filter_fn(|meta| {
        level_rank(*meta.level()) <= LEVEL.load(Ordering::Relaxed)
    });
    let layer = tracing_subscriber::fmt::layer()
        .event_format(Lines)
        // Plain text: jobdock's lines go to job logs, syslog files and the plugin's log.
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    // A second init (a test that calls `app::main` twice) keeps the first.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Applies the site's `[logging]`: its level unless the user chose one, and its format.
pub fn configure(site: &Logging) {
    if !USER_CHOSE.load(Ordering::Relaxed) {
        LEVEL.store(level_rank(site.level), Ordering::Relaxed);
    }
    LONG.store(site.format == LogFormat::Long, Ordering::Relaxed);
    *SITE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(site.clone());
}

/// The start of each of jobdock's lines: `jobdock: ` or, long, `TIME jobdock[PID]: `.
pub fn prefix() -> String {
    if LONG.load(Ordering::Relaxed) {
        format!(
            "{} jobdock[{}]: ",
            utc_time(SystemTime::now()),
            std::process::id()
        )
    } else {
        "jobdock: ".to_string()
    }
}

/// One message for the user, on stderr, with jobdock's prefix.
pub fn say(message: &str) {
    eprintln!("{}{message}", prefix());
}

/// Something the user should see at the default level that is not a warning (a pull starting
/// and ending): shown unless the level is `error`.
pub fn notice(message: &str) {
    if LEVEL.load(Ordering::Relaxed) >= level_rank(Level::WARN) {
        say(message);
    }
}

struct Lines;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "{}{level}: ", prefix())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// `2026-12-01T22:52:01.123Z`: UTC, from the civil calendar (no time zone database needed).
pub fn utc_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month and day of the `days`th day after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// What the audit record says of one job: filled in as jobdock learns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// `run`, `lsf-starter`, `cleanup`...
    pub action: String,
    pub user: String,
    pub uid: u32,
    pub job: String,
    pub image: String,
    /// The image id that ran (`sha256:...`), once the container exists.
    pub digest: String,
    /// `source:target:ro|rw`, in the plan's order.
    pub mounts: Vec<String>,
    pub devices: Vec<String>,
    /// The exit code jobdock returns.
    pub exit: u8,
    /// Why jobdock refused or failed, with the rule its message names; empty when the job ran.
    pub error: String,
    pub duration: Duration,
}

impl AuditRecord {
    /// A record of `action` by the caller, in the job its environment names (until the plan has
    /// confirmed the job from the caller's cgroup, the job is only what the environment says).
    /// The user's name comes from the plan, or for a request refused before one, from `named`.
    pub fn start(action: &str, env: &crate::job::Env) -> AuditRecord {
        AuditRecord {
            action: action.into(),
            uid: crate::identity::Caller::current().real_uid,
            job: crate::job::from_env(env, None)
                .ok()
                .and_then(|c| c.job_id)
                .unwrap_or_default(),
            ..AuditRecord::default()
        }
    }

    /// Names the user by their uid when nothing did (a request refused before its plan): the one
    /// NSS lookup a record may cost, off the path of a job that runs.
    pub fn named(&mut self) {
        if self.user.is_empty() {
            self.user = nix::unistd::User::from_uid(self.uid.into())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_default();
        }
    }

    /// One line of `key=value` fields, values quoted when they hold a space, quote or `=`.
    pub fn line(&self) -> String {
        let mut out = String::new();
        let mut field = |key: &str, value: &str| {
            if !out.is_empty() {
                out.push(' ');
            }
            let plain = !value.is_empty()
                && !value
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'));
            if plain {
                let _ = write!(out, "{key}={value}");
            } else {
                let _ = write!(out, "{key}={}", quote(value));
            }
        };
        field("action", &self.action);
        field("user", &self.user);
        field("uid", &self.uid.to_string());
        field("job", &self.job);
        field("image", &self.image);
        field("digest", &self.digest);
        field("mounts", &self.mounts.join(","));
        field("devices", &self.devices.join(","));
        field("exit", &self.exit.to_string());
        field("duration", &format!("{:.3}s", self.duration.as_secs_f64()));
        if !self.error.is_empty() {
            field("error", &self.error);
        }
        out
    }
}

/// `"..."` with `"` and `\` escaped and control characters as `\u{..}` (one line, always).
fn quote(value: &str) -> String {
    let mut q = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{{{:x}}}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Syslog's authpriv facility (10) at info (6): what `sudo` uses for its own records.
const AUTHPRIV_INFO: u8 = 10 * 8 + 6;

/// The largest record sent: syslog daemons truncate or drop longer datagrams.
const MAX_RECORD: usize = 8 * 1024;

/// Sends the record where the site wants it (`[logging] audit`; syslog when the config could not
/// be read). A syslog that is not listening loses the record with a note at info level
/// (`jobdock doctor` checks the socket); the job is never failed for it.
pub fn audit(record: &AuditRecord) {
    let site = SITE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .unwrap_or_else(|| crate::config::SiteConfig::default().logging);
    let line = record.line();
    match site.audit {
        AuditTarget::None => {}
        AuditTarget::Stderr => eprintln!("{}audit: {line}", prefix()),
        AuditTarget::Syslog => {
            if let Err(e) = send_syslog(&site.syslog_socket, &line) {
                tracing::info!(
                    "audit record not sent to {} (logging.syslog_socket): {e}",
                    site.syslog_socket.display()
                );
            }
        }
    }
}

/// One RFC 3164 datagram, as glibc's syslog(3) writes it (the receiver adds the time).
fn send_syslog(socket: &Path, line: &str) -> std::io::Result<()> {
    let mut message = format!("<{AUTHPRIV_INFO}>jobdock[{}]: {line}", std::process::id());
    if message.len() > MAX_RECORD {
        let mut cut = MAX_RECORD - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let sock = UnixDatagram::unbound()?;
    sock.send_to(message.as_bytes(), socket).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        let at = |secs: u64, ms: u64| {
            utc_time(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_165_521, 123), "2026-12-01T22:52:01.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn a_record_is_one_line_of_fields_a_user_cannot_forge() {
        let r = AuditRecord {
            action: "run".into(),
            user: "alice".into(),
            uid: 2001,
            job: "212[3]".into(),
            image: "busybox:latest".into(),
            digest: "sha256:ab".into(),
            mounts: vec!["/home/alice:/home/alice:rw".into()],
            devices: vec![],
            exit: 64,
            error: "LSB_DOCKER_VOLUMES: /x is \"bad\"\nexit=0 user=root".into(),
            duration: Duration::from_millis(1500),
        };
        assert_eq!(
            r.line(),
            "action=run user=alice uid=2001 job=212[3] image=busybox:latest digest=sha256:ab \
             mounts=/home/alice:/home/alice:rw devices=\"\" exit=64 duration=1.500s \
             error=\"LSB_DOCKER_VOLUMES: /x is \\\"bad\\\"\\u{a}exit=0 user=root\""
        );
        assert!(!r.line().contains('\n'));
    }

    #[test]
    fn records_reach_a_syslog_socket_whole_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_syslog(&path, "action=run user=alice").unwrap();
        let mut buf = vec![0; 64 * 1024];
        let n = listener.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            got,
            format!("<86>jobdock[{}]: action=run user=alice", std::process::id())
        );
        send_syslog(&path, &"é".repeat(10_000)).unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert!(n <= MAX_RECORD, "{n}");
        assert!(std::str::from_utf8(&buf[..n]).unwrap().ends_with("..."));
    }
}
