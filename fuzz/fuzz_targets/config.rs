//! The site config (`wrapper.toml`): any text either loads or is refused with problems that
//! name a key; nothing panics.
#![no_main]
use jobdock::config::SiteConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(problems) = SiteConfig::parse(text) {
        assert!(!problems.is_empty());
    }
});
