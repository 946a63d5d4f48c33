//! `LSB_DOCKER_VOLUMES`: an accepted spec names only absolute paths, without a colon or
//! whitespace smuggled into either side, and at most 64 of them.
#![no_main]
use jobdock::overrides::{Setting, parse_volumes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: String| {
    let setting = Setting {
        var: "LSB_DOCKER_VOLUMES".into(),
        value,
    };
    match parse_volumes(&setting) {
        Ok(volumes) => {
            assert!(volumes.len() <= 64);
            for v in &volumes {
                for path in [&v.source, &v.target] {
                    let text = path.to_str().unwrap();
                    assert!(text.starts_with('/'), "{text:?}");
                    assert!(!text.contains(':'), "{text:?}");
                    assert!(!text.contains(char::is_whitespace), "{text:?}");
                }
            }
        }
        Err(refusal) => assert_eq!(refusal.var, "LSB_DOCKER_VOLUMES"),
    }
});
