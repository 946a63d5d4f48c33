//! `LSB_DOCKER_PORTS` and the site's `ports.range`: accepted ranges are non-empty, start at 1 or
//! above, and host and container ranges have the same size.
#![no_main]
use jobdock::config::parse_port_range;
use jobdock::overrides::{Setting, parse_ports};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: String| {
    if let Some((a, b)) = parse_port_range(&value) {
        assert!(a >= 1 && a <= b, "{value:?} -> {a}-{b}");
    }
    let setting = Setting {
        var: "LSB_DOCKER_PORTS".into(),
        value,
    };
    if let Ok(ports) = parse_ports(&setting) {
        for p in &ports {
            assert!(p.host.0 >= 1 && p.host.0 <= p.host.1);
            assert!(p.container.0 >= 1 && p.container.0 <= p.container.1);
            assert_eq!(p.host.1 - p.host.0, p.container.1 - p.container.0);
            assert!(p.protocol == "tcp" || p.protocol == "udp");
        }
    }
});
