//! The smaller `LSB_DOCKER_*` grammars: booleans, `--add-host` entries, log levels, and the two
//! spellings of one override. An accepted host entry is one plain `HOST:IP` token.
#![no_main]
use jobdock::job::Env;
use jobdock::overrides::{Setting, parse_bool, parse_host_entry, parse_level_name, setting};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, Option<String>, Option<String>)| {
    let (value, canonical, alias) = input;
    let s = Setting {
        var: "LSB_DOCKER_RM".into(),
        value: value.clone(),
    };
    let _ = parse_bool(&s);
    let _ = parse_level_name(&value);
    if let Ok(entry) = parse_host_entry(&value) {
        assert!(
            entry.bytes().all(|b| b.is_ascii_graphic()) && entry.contains(':'),
            "{value:?} -> {entry:?}"
        );
    }

    let mut env = Env::new();
    if let Some(v) = &canonical {
        env.insert("LSB_DOCKER_NETWORK".into(), v.clone());
    }
    if let Some(v) = &alias {
        env.insert("LSF_DOCKER_NETWORK".into(), v.clone());
    }
    match setting(&env, "NETWORK") {
        Ok(None) => assert!(canonical.is_none() && alias.is_none()),
        Ok(Some(s)) => assert_eq!(Some(&s.value), canonical.as_ref().or(alias.as_ref())),
        Err(r) => assert_eq!(r.var, "LSB_DOCKER_NETWORK"),
    }
});
