//! Sizes (`LSB_DOCKER_SHM_SIZE`, `limits.memory`), capability names (`security.cap_add`) and
//! cgroup memory-limit files: no input panics or overflows; capabilities print back to themselves.
#![no_main]
use jobdock::job::cgroup::parse_memory_limit;
use jobdock::units::{ByteSize, Capability};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(size) = text.parse::<ByteSize>() {
        let _ = size.to_string();
    }
    if let Ok(cap) = text.parse::<Capability>() {
        assert_eq!(cap.to_string().parse::<Capability>(), Ok(cap));
    }
    if let Some(limit) = parse_memory_limit(text) {
        assert!(limit < 1 << 62);
    }
});
