//! The authorization plugin's decision (`authz::Policy::decide`): any method, URI and body is
//! allowed or denied without a panic, and an allowed create is, read as Go reads it (the last of
//! duplicate keys, here through a generic map), never privileged and always drops every
//! capability.
#![no_main]
use jobdock::authz::{ApiRequest, Policy, Who};
use jobdock::config::SiteConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // METHOD \n URI \n BODY
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(method), Some(uri)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (std::str::from_utf8(method), std::str::from_utf8(uri)) else {
        return;
    };
    let body = parts.next();
    let policy = Policy::new(&SiteConfig::default());
    let req = ApiRequest {
        method,
        uri,
        headers: Default::default(),
        body,
    };
    let Ok(allowed) = policy.decide(&Who::Unnamed, &req) else {
        return;
    };
    if allowed.action == "container_create" {
        let v: serde_json::Value = serde_json::from_slice(body.unwrap()).unwrap();
        let hc = &v["HostConfig"];
        assert_ne!(hc["Privileged"], serde_json::Value::Bool(true), "{v}");
        let all = |c: &serde_json::Value| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case("ALL"));
        let drop = &hc["CapDrop"];
        assert!(
            all(drop) || drop.as_array().is_some_and(|d| d.iter().any(all)),
            "{v}"
        );
    }
});
