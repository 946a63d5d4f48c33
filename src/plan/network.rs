//! The container's network: its network and IPC modes, the ports it publishes and the
//! `/etc/hosts` entries it gets, each within the site's policy and the per-job totals.

use std::path::Path;

use crate::config::SiteConfig;
use crate::job::Env;
use crate::overrides::{self, PortRequest, Refusal, Setting};
use crate::probe::HostProbe;

use super::environment::{MAX_USER_FILE, user_files};
use super::{PlanError, PortPlan};

/// Most `/etc/hosts` entries one job may add (`LSB_DOCKER_ADD_HOST` and its files together).
pub const MAX_EXTRA_HOSTS: usize = 256;

/// The network part of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// `bridge`, `host` or `none` (`network.allowed`).
    pub network: String,
    /// `private`, `shareable`, ... (`ipc.allowed`).
    pub ipc: String,
    pub ports: Vec<PortPlan>,
    /// `HOST:IP` entries for the container's `/etc/hosts`.
    pub extra_hosts: Vec<String>,
}

/// The network part, from `LSB_DOCKER_NETWORK`, `_IPC`, `_PORTS`, `_ADD_HOST` and
/// `_ADD_HOST_FILE` (files read through `probe`, as the user).
pub(super) fn network(
    env: &Env,
    config: &SiteConfig,
    probe: &dyn HostProbe,
) -> Result<Network, PlanError> {
    let get = |suffix: &str| overrides::setting(env, suffix);
    let network = mode(get("NETWORK")?, &config.network, "network")?;
    let ipc = mode(get("IPC")?, &config.ipc, "ipc")?;

    let ports = match get("PORTS")? {
        Some(s) => ports(&s, config, &network)?,
        None => Vec::new(),
    };

    let mut extra_hosts = Vec::new();
    let too_many_hosts = |s: &Setting, n: usize| {
        s.refuse(format!(
            "more than the {MAX_EXTRA_HOSTS} /etc/hosts entries a job may add (MAX_EXTRA_HOSTS; \
             LSB_DOCKER_ADD_HOST and its files together): {n} so far"
        ))
    };
    if let Some(s) = get("ADD_HOST")? {
        for item in s.value.split_whitespace() {
            extra_hosts.push(overrides::parse_host_entry(item).map_err(|e| s.refuse(e))?);
            if extra_hosts.len() > MAX_EXTRA_HOSTS {
                return Err(too_many_hosts(&s, extra_hosts.len()).into());
            }
        }
    }
    if let Some(s) = get("ADD_HOST_FILE")? {
        for file in user_files(&s)? {
            let text = probe
                .read_file(Path::new(file), MAX_USER_FILE)
                .map_err(|e| s.refuse(e))?;
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            {
                let entry = overrides::parse_host_entry(line.trim())
                    .map_err(|e| s.refuse(format!("{file}:{}: {e}", n + 1)))?;
                extra_hosts.push(entry);
                if extra_hosts.len() > MAX_EXTRA_HOSTS {
                    return Err(too_many_hosts(&s, extra_hosts.len()).into());
                }
            }
        }
    }

    Ok(Network {
        network,
        ipc,
        ports,
        extra_hosts,
    })
}

fn mode(
    s: Option<Setting>,
    choice: &crate::config::ModeChoice,
    key: &str,
) -> Result<String, Refusal> {
    let Some(s) = s else {
        return Ok(choice.default.clone());
    };
    let v = s.value.trim();
    if v.starts_with("container:") {
        return Err(s.refuse("joining another container's namespace is never allowed"));
    }
    if choice.allowed.iter().any(|a| a == v) {
        Ok(v.to_string())
    } else {
        Err(s.refuse(format!(
            "must be one of {} ({key}.allowed)",
            choice.allowed.join(", ")
        )))
    }
}

fn ports(s: &Setting, config: &SiteConfig, network: &str) -> Result<Vec<PortPlan>, Refusal> {
    let Some((lo, hi)) = config.ports.range else {
        return Err(s.refuse("this site allows no published ports (ports.range is not set)"));
    };
    if network == "host" || network == "none" {
        return Err(s.refuse(format!("ports cannot be published with network {network}")));
    }
    overrides::parse_ports(s)?
        .into_iter()
        .map(
            |PortRequest {
                 host,
                 container,
                 protocol,
             }| {
                if host.0 < lo || host.1 > hi {
                    return Err(
                        s.refuse(format!("host ports must be within {lo}-{hi} (ports.range)"))
                    );
                }
                Ok(PortPlan {
                    host,
                    container,
                    protocol,
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::env_of;
    use crate::probe::fake::FakeProbe;

    fn site() -> SiteConfig {
        SiteConfig::parse(include_str!("../../wrapper.toml.example")).unwrap()
    }

    #[test]
    fn the_site_default_and_the_users_choices() {
        let probe =
            FakeProbe::default().file("/home/alice/hosts", "db:10.0.0.5\n# c\n\nlic:10.0.0.6\n");
        let n = network(&Env::new(), &site(), &probe).unwrap();
        assert_eq!((n.network.as_str(), n.ipc.as_str()), ("bridge", "private"));
        assert!(n.ports.is_empty() && n.extra_hosts.is_empty());
        let env = env_of(&[
            ("LSB_DOCKER_NETWORK", "none"),
            ("LSF_DOCKER_IPC", "shareable"),
            ("LSB_DOCKER_ADD_HOST", "a.example:10.0.0.1"),
            ("LSB_DOCKER_ADD_HOST_FILE", "/home/alice/hosts"),
        ]);
        let n = network(&env, &site(), &probe).unwrap();
        assert_eq!((n.network.as_str(), n.ipc.as_str()), ("none", "shareable"));
        assert_eq!(
            n.extra_hosts,
            ["a.example:10.0.0.1", "db:10.0.0.5", "lic:10.0.0.6"]
        );
    }

    #[test]
    fn refusals_name_the_variable_and_the_rule() {
        let probe = FakeProbe::default();
        let cases = [
            ("LSB_DOCKER_NETWORK", "container:x", "never allowed"),
            ("LSB_DOCKER_IPC", "host", "ipc.allowed"),
            ("LSB_DOCKER_PORTS", "22", "ports.range"),
            ("LSB_DOCKER_ADD_HOST", "db 10.0.0.5", "LSB_DOCKER_ADD_HOST"),
        ];
        for (var, value, want) in cases {
            let err = network(&env_of(&[(var, value)]), &site(), &probe)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(var) && err.contains(want),
                "{var}={value}: {err}"
            );
        }
    }
}
