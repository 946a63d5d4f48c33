//! `LSB_DOCKER_ENV_FILE` contents: whatever the user writes, a parsed file holds only valid
//! names, none jobdock owns, and single-line values without NUL or CR.
#![no_main]
use jobdock::overrides::env::{OWNED, parse_env_file, valid_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(vars) = parse_env_file(text, "env.list") {
        for (name, value) in &vars {
            assert!(valid_name(name), "{name:?}");
            assert!(!OWNED.contains(&name.as_str()), "{name:?}");
            assert!(!value.contains(['\0', '\r', '\n']), "{value:?}");
        }
    }
});
