//! The plugin's face to Slurm 22.05: the symbols the loader reads, the hooks it calls, and the
//! few spank_* functions of the host process (srun, sbatch, slurmstepd) the plugin calls, declared
//! by hand after `slurm/spank.h` of 22.05 (a different Slurm refuses to load the plugin: see
//! `plugin_version`). Every hook runs inside a root process or the job's task: each one catches
//! panics at the boundary (a panic unwinding into C would abort slurmstepd), starts no thread,
//! and reports failures through Slurm and the task's stderr.

#![allow(non_upper_case_globals)]

use std::cell::UnsafeCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use crate::options::{self, Opt, Values};
use crate::site::{self, Site};
use crate::task;

// ---- what the loader reads ---------------------------------------------------------------------

#[cfg(not(feature = "test-hooks"))]
#[unsafe(no_mangle)]
pub static plugin_name: [u8; 8] = *b"jobdock\0";
#[cfg(feature = "test-hooks")]
#[unsafe(no_mangle)]
pub static plugin_name: [u8; 13] = *b"jobdock_test\0";
#[unsafe(no_mangle)]
pub static plugin_type: [u8; 6] = *b"spank\0";
/// SLURM_VERSION_NUM(22, 5, 0). The loader compares major and minor with its own and refuses a
/// mismatch: after an upgrade the `required` plugstack line fails every job until this plugin is
/// reviewed against the new spank.h and rebuilt, rather than letting them run uncontained.
#[unsafe(no_mangle)]
pub static plugin_version: u32 = (22 << 16) | (5 << 8);
#[unsafe(no_mangle)]
pub static spank_plugin_version: u32 = 1;

// ---- the host's API (spank.h, Slurm 22.05) -----------------------------------------------------

#[repr(C)]
/// Slurm's opaque `struct spank_handle`.
pub struct SpankHandle {
    _opaque: [u8; 0],
}
pub type Spank = *mut SpankHandle;
type OptionCallback = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;

/// `struct spank_option`.
#[repr(C)]
struct SpankOption {
    name: *const c_char,
    arginfo: *const c_char,
    usage: *const c_char,
    has_arg: c_int,
    val: c_int,
    cb: Option<OptionCallback>,
}

// enum spank_context
const S_CTX_LOCAL: c_int = 1;
const S_CTX_REMOTE: c_int = 2;
const S_CTX_ALLOCATOR: c_int = 3;
const S_CTX_JOB_SCRIPT: c_int = 5;
// enum spank_item
const S_JOB_ID: c_int = 2;
const S_JOB_STEPID: c_int = 3;
const S_JOB_ARGV: c_int = 9;
const S_JOB_ENV: c_int = 10;
const ESPANK_SUCCESS: c_int = 0;

unsafe extern "C" {
    safe fn spank_context() -> c_int;
    fn spank_option_register(sp: Spank, opt: *mut SpankOption) -> c_int;
    fn spank_get_item(sp: Spank, item: c_int, ...) -> c_int;
    fn slurm_error(format: *const c_char, ...);
    fn slurm_info(format: *const c_char, ...);
}

// ---- state ---------------------------------------------------------------------------------------

/// The site (from slurm_spank_init) and the options (from their callbacks). Every hook and
/// callback runs on the host's main thread, one after another, so the lock is never held across a
/// fork; a poisoned lock (a caught panic) is still read.
struct State {
    site: Option<Site>,
    values: Values,
    #[cfg(feature = "test-hooks")]
    panic_in: Option<String>,
}

static STATE: Mutex<State> = Mutex::new(State {
    site: None,
    values: Values {
        image: None,
        mounts: None,
        workdir: None,
        env: None,
        entrypoint: None,
        mount_home: None,
        name: None,
    },
    #[cfg(feature = "test-hooks")]
    panic_in: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- the boundary --------------------------------------------------------------------------------

/// Logs through Slurm (srun's stderr, slurmstepd's log) and, in a task, on its stderr too.
fn report(message: &str, on_stderr: bool) {
    let text = CString::new(format!("jobdock: {message}").replace('\0', " "))
        .unwrap_or_else(|_| c"jobdock: (unprintable error)".to_owned());
    // SAFETY: a printf-style call with the format "%s" and one NUL-terminated string.
    unsafe { slurm_error(c"%s".as_ptr(), text.as_ptr()) };
    if on_stderr {
        let _ = writeln!(std::io::stderr(), "{}", text.to_string_lossy());
    }
}

fn info(message: &str) {
    if let Ok(text) = CString::new(format!("jobdock: {message}")) {
        // SAFETY: as in `report`.
        unsafe { slurm_info(c"%s".as_ptr(), text.as_ptr()) };
    }
}

/// Runs a hook: its error or panic becomes -1 (which fails what a required plugin is part of:
/// the srun, the task, the epilog), never an unwind into the host.
fn guard(hook: &str, on_stderr: bool, f: impl FnOnce() -> Result<(), String>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            report(&message, on_stderr);
            -1
        }
        Err(_) => {
            report(
                &format!("{hook}: internal error (a panic, caught); failing it"),
                on_stderr,
            );
            -1
        }
    }
}

#[cfg(feature = "test-hooks")]
fn test_panic(hook: &str) {
    if state().panic_in.as_deref() == Some(hook) {
        panic!("--jobdock-test-panic={hook}");
    }
}
#[cfg(not(feature = "test-hooks"))]
fn test_panic(_hook: &str) {}

/// The words of a hook's (ac, av): the plugstack arguments.
///
/// # Safety
/// `av` points to `ac` NUL-terminated strings (or is null with `ac` 0), as Slurm passes them.
unsafe fn words(ac: c_int, av: *const *const c_char) -> Vec<String> {
    let n = usize::try_from(ac).unwrap_or(0);
    if av.is_null() {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            // SAFETY: i < ac, and each of the ac pointers is a C string (the caller's contract).
            let word = unsafe { CStr::from_ptr(*av.add(i)) };
            word.to_string_lossy().into_owned()
        })
        .collect()
}

/// A NULL-terminated array of C strings, as slurmstepd's argv and environment are.
///
/// # Safety
/// `array` is null or points to C strings up to a null pointer, alive while this runs.
unsafe fn strings(array: *const *const c_char, limit: Option<usize>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if array.is_null() {
        return out;
    }
    for i in 0.. {
        if limit.is_some_and(|n| i >= n) {
            break;
        }
        // SAFETY: the array is NULL-terminated (or `limit` long), so index i is in it.
        let p = unsafe { *array.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: a non-null entry is a C string.
        out.push(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec());
    }
    out
}

// ---- the options ---------------------------------------------------------------------------------

/// The option table Slurm keeps pointers into for the whole process: in writable memory, never
/// moved, never freed.
struct Table(UnsafeCell<Vec<SpankOption>>);
// SAFETY: only slurm_spank_init (on the host's main thread) builds it, before Slurm reads it.
unsafe impl Sync for Table {}
static TABLE: Table = Table(UnsafeCell::new(Vec::new()));

/// C strings that live as long as the process (the table points into them).
fn leak(s: &str) -> *const c_char {
    CString::new(s).map_or(std::ptr::null(), |c| c.into_raw())
}

#[cfg(not(feature = "test-hooks"))]
fn specs() -> Vec<(String, Option<String>, String, c_int)> {
    options::OPTIONS
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.arginfo.map(str::to_string),
                s.usage.to_string(),
                s.opt as c_int,
            )
        })
        .collect()
}

#[cfg(feature = "test-hooks")]
fn specs() -> Vec<(String, Option<String>, String, c_int)> {
    vec![(
        "jobdock-test-panic".into(),
        Some("HOOK".into()),
        "[jobdock test build] panic in HOOK: option, init_post_opt, user_init, task_init".into(),
        1000,
    )]
}

fn register(sp: Spank) -> Result<(), String> {
    // SAFETY: called once per process, from slurm_spank_init, before any callback can run.
    let table = unsafe { &mut *TABLE.0.get() };
    if table.is_empty() {
        for (name, arginfo, usage, val) in specs() {
            table.push(SpankOption {
                name: leak(&name),
                arginfo: arginfo.as_deref().map_or(std::ptr::null(), leak),
                usage: leak(&usage),
                has_arg: c_int::from(arginfo.is_some()),
                val,
                cb: Some(on_option),
            });
        }
    }
    for opt in table.iter_mut() {
        // SAFETY: `sp` is the handle Slurm passed to this hook; `opt` lives for the process.
        let rc = unsafe { spank_option_register(sp, opt) };
        if rc != ESPANK_SUCCESS {
            // SAFETY: the name is a C string made by `leak`.
            let name = unsafe { CStr::from_ptr(opt.name) }.to_string_lossy();
            return Err(format!("could not register --{name} (spank error {rc})"));
        }
    }
    Ok(())
}

/// An option's callback: srun/sbatch call it when parsing the command line (`remote` 0) and
/// slurmstepd with the value srun sent (`remote` 1).
unsafe extern "C" fn on_option(val: c_int, optarg: *const c_char, remote: c_int) -> c_int {
    let arg = if optarg.is_null() {
        None
    } else {
        // SAFETY: Slurm passes a C string or null.
        Some(
            unsafe { CStr::from_ptr(optarg) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    guard("option", remote != 0, || {
        test_panic("option");
        #[cfg(feature = "test-hooks")]
        if val == 1000 {
            state().panic_in = arg.clone();
            if arg.as_deref() == Some("option") {
                panic!("--jobdock-test-panic=option");
            }
            return Ok(());
        }
        let opt = Opt::from_val(val).ok_or_else(|| format!("unknown option value {val}"))?;
        options::set(&mut state().values, opt, arg.as_deref())
    })
}

// ---- the hooks -----------------------------------------------------------------------------------

/// Every context: the site's settings, and the options where users give them.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack arguments (ac, av).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_init(sp: Spank, ac: c_int, av: *const *const c_char) -> c_int {
    // SAFETY: Slurm's (ac, av).
    let args = unsafe { words(ac, av) };
    guard("init", false, || {
        let site = site::parse(&args)?;
        let wanted = match spank_context() {
            S_CTX_LOCAL | S_CTX_REMOTE => true,
            S_CTX_ALLOCATOR => site.sbatch || cfg!(feature = "test-hooks"),
            _ => false,
        };
        state().site = Some(site);
        if wanted { register(sp) } else { Ok(()) }
    })
}

/// srun/sbatch: options that cannot run (a container option but no image) fail the command,
/// before anything starts.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack arguments (ac, av).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_init_post_opt(
    _sp: Spank,
    _ac: c_int,
    _av: *const *const c_char,
) -> c_int {
    let remote = spank_context() == S_CTX_REMOTE;
    guard("init_post_opt", remote, || {
        test_panic("init_post_opt");
        if !matches!(spank_context(), S_CTX_LOCAL | S_CTX_ALLOCATOR) {
            return Ok(());
        }
        let st = state();
        let Some(site) = &st.site else {
            return Ok(());
        };
        // enforce without a default image is for the task to report: srun cannot know here
        // which step (an extern or interactive one) it starts.
        if st.values.any() {
            task::image(site, &st.values)?;
        }
        Ok(())
    })
}

/// slurmstepd, as root, before the tasks fork: only the test build does anything here.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack arguments (ac, av).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_user_init(
    _sp: Spank,
    _ac: c_int,
    _av: *const *const c_char,
) -> c_int {
    guard("user_init", false, || {
        test_panic("user_init");
        Ok(())
    })
}

/// slurmstepd, in the task (already the job's user, in the step's cgroup, its stdio connected):
/// exec `jobdock run ... -- argv`, which takes the job and the user from the kernel.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack arguments (ac, av).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_task_init(
    sp: Spank,
    _ac: c_int,
    _av: *const *const c_char,
) -> c_int {
    guard("task_init", true, || {
        test_panic("task_init");
        if spank_context() != S_CTX_REMOTE {
            return Ok(());
        }
        let (site, values) = {
            let st = state();
            (st.site.clone(), st.values.clone())
        };
        let site = site.ok_or("the plugin was not initialized")?;
        let mut step: u32 = 0;
        // SAFETY: S_JOB_STEPID takes a uint32_t *.
        let rc = unsafe { spank_get_item(sp, S_JOB_STEPID, &mut step as *mut u32) };
        if rc != ESPANK_SUCCESS {
            return Err(format!("task_init: no step id (spank error {rc})"));
        }
        let mut argc: c_int = 0;
        let mut argv: *const *const c_char = std::ptr::null();
        // SAFETY: S_JOB_ARGV takes an int * and a char ***; slurmstepd keeps the array.
        let rc = unsafe {
            spank_get_item(
                sp,
                S_JOB_ARGV,
                &mut argc as *mut c_int,
                &mut argv as *mut *const *const c_char,
            )
        };
        if rc != ESPANK_SUCCESS {
            return Err(format!("task_init: no argv (spank error {rc})"));
        }
        // SAFETY: slurmstepd's argv: argc C strings.
        let argv = unsafe { strings(argv, Some(usize::try_from(argc).unwrap_or(0))) };
        let mut envp: *const *const c_char = std::ptr::null();
        // SAFETY: S_JOB_ENV takes a char ***; slurmstepd keeps the NULL-terminated array.
        let rc = unsafe { spank_get_item(sp, S_JOB_ENV, &mut envp as *mut *const *const c_char) };
        if rc != ESPANK_SUCCESS {
            return Err(format!("task_init: no environment (spank error {rc})"));
        }
        // SAFETY: slurmstepd's environment array.
        let env = unsafe { strings(envp, None) };
        match task::command(&site, &values, step, &argv, &env)? {
            None => Ok(()),
            Some(exec) => Err(exec_task(&exec, &env)),
        }
    })
}

/// Sets the limits slurmstepd would have set after task_init, then execs; returns only on error.
fn exec_task(exec: &task::Exec, env: &[Vec<u8>]) -> String {
    for (resource, soft) in task::propagated_limits(env) {
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid resource number and a local struct. The
        // resource numbers are libc's RLIMIT_* constants; as the user, the hard limit caps it.
        unsafe {
            if libc::getrlimit(resource, &mut now) == 0 {
                now.rlim_cur = soft.min(now.rlim_max);
                libc::setrlimit(resource, &now);
            }
        }
    }
    let c = |w: &[u8]| CString::new(w.to_vec()).ok();
    let (Some(program), Some(argv), Some(envp)) = (
        c(exec.program.as_bytes()),
        exec.argv.iter().map(|w| c(w)).collect::<Option<Vec<_>>>(),
        exec.env.iter().map(|w| c(w)).collect::<Option<Vec<_>>>(),
    ) else {
        return "a word of the command contains a NUL byte".into();
    };
    let mut argv_p: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    format!(
        "cannot run {}: {}",
        exec.program,
        std::io::Error::last_os_error()
    )
}

/// slurmd's job epilog (root, once per job and node): remove the job's containers with jobdock's
/// own cleanup, as contrib/slurm/epilog does. A failure fails the epilog, which drains the node.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack arguments (ac, av).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_job_epilog(
    sp: Spank,
    ac: c_int,
    av: *const *const c_char,
) -> c_int {
    // SAFETY: Slurm's (ac, av).
    let args = unsafe { words(ac, av) };
    guard("job_epilog", false, || {
        if cfg!(feature = "test-hooks") || spank_context() != S_CTX_JOB_SCRIPT {
            return Ok(());
        }
        // slurmd runs the job epilog without slurm_spank_init: the plugstack line's own
        // arguments (jobdock=PATH) are this hook's.
        let jobdock = site::parse(&args)?.jobdock;
        let mut job: u32 = 0;
        // SAFETY: S_JOB_ID takes a uint32_t *.
        let rc = unsafe { spank_get_item(sp, S_JOB_ID, &mut job as *mut u32) };
        if rc != ESPANK_SUCCESS {
            return Err(format!("job_epilog: no job id (spank error {rc})"));
        }
        let out = std::process::Command::new(&jobdock)
            .args(["cleanup", "--job", &job.to_string()])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                info(&format!(
                    "job_epilog: {jobdock} is not installed on this node; job {job} left nothing to clean up"
                ));
                Ok(())
            }
            Err(e) => Err(format!("job_epilog: cannot run {jobdock}: {e}")),
            Ok(out) => {
                let said = [&out.stdout, &out.stderr]
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).trim().replace('\n', "; "))
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                if out.status.success() {
                    info(&format!(
                        "job_epilog: job {job}: {jobdock} cleanup --job {job} ok{}{said}",
                        if said.is_empty() { "" } else { ": " }
                    ));
                    Ok(())
                } else {
                    Err(format!(
                        "job_epilog: {jobdock} cleanup --job {job} failed ({}): {said}",
                        out.status
                    ))
                }
            }
        }
    })
}
