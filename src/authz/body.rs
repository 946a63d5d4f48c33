//! The request bodies the policy reads, as Engine API 1.41 spells them, decoded strictly: every
//! key must be one the API defines, spelled exactly so, once; nothing may follow the object.
//! Decodes only; judging the values is `policy`'s.
//!
//! Why these are not bollard's models (which `engine::body` sends): dockerd decodes with Go's
//! `encoding/json`, which matches keys case-insensitively (`"hostconfig"`, even `"ſecurityOpt"`
//! with a long s), keeps the last of duplicate keys, ignores unknown keys and whatever follows
//! the first value. bollard's models (like any lenient decoder, or a generic map) ignore
//! unknown keys and would read such a body differently from the daemon. Refusing everything
//! that is not exactly the API's spelling leaves one reading, which is the daemon's.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};

/// Decodes `bytes` as `T` strictly (see the module documentation). The error names the key
/// path (`HostConfig.CapAdd[0]`) and the rule.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." || path == "?" {
            path.clear();
        }
        let message = e.into_inner().to_string();
        // serde names a duplicate field in the message, not the path: the path is its parent.
        if let Some(key) = message
            .strip_prefix("duplicate field `")
            .and_then(|r| r.split('`').next())
        {
            return BodyError {
                path: if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                },
                message: "duplicate field (Go's decoder keeps the last; refused)".into(),
            };
        }
        BodyError {
            path,
            message: explain(&message),
        }
    })?;
    de.end().map_err(|_| BodyError {
        path: String::new(),
        message: "data after the JSON object (Go's decoder would ignore it; refused)".into(),
    })?;
    Ok(value)
}

/// A body the policy cannot read the way dockerd would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError {
    /// The key path, e.g. `HostConfig.CapAdd`; empty: the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// serde's message, with what an unknown key means for dockerd when it is a known one in
/// another case (Go's decoder would read it as that key).
fn explain(message: &str) -> String {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((key, expected)) = rest.split_once('`') else {
        return message;
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match known.iter().find(|k| go_fold(k) == go_fold(key)) {
        Some(k) => format!(
            "key {key:?} differs from {k:?} only in case: Go's decoder would read it as {k}; \
             refused (keys must be spelled exactly as the API does)"
        ),
        None => format!("unknown key {key:?} (not in Engine API 1.41 here; refused)"),
    }
}

/// A key as Go's `encoding/json` compares keys: Unicode simple case folding, in which the long s
/// (U+017F) is `s` and the Kelvin sign (U+212A) is `k`.
pub fn go_fold(key: &str) -> String {
    key.chars()
        .flat_map(|c| match c {
            '\u{17f}' => "s".chars().collect::<Vec<_>>(),
            '\u{212a}' => "k".chars().collect(),
            c => c.to_lowercase().collect(),
        })
        .collect()
}

/// A JSON object decoded as a list of entries, refusing a key that occurs twice (Go's decoder
/// keeps the last; a policy that kept the first would see another value than the daemon).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StrictMap<V>(pub Vec<(String, V)>);

impl<V> StrictMap<V> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for StrictMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = StrictMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!(
                            "duplicate key {key:?} (Go's decoder keeps the last; refused)"
                        )));
                    }
                    out.push((key, map.next_value()?));
                }
                Ok(StrictMap(out))
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

/// `{}`, as the values of `Volumes` and `ExposedPorts` are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Go's `strslice.StrSlice`: a string or an array of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrSlice(pub Vec<String>);

impl<'de> Deserialize<'de> for StrSlice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => StrSlice(vec![s]),
            Raw::Many(v) => StrSlice(v),
        })
    }
}

/// `POST /containers/create`: `container.Config` with `HostConfig` and `NetworkingConfig`. No
/// legacy top-level host keys (`Privileged`, `Binds` beside `Config`, which dockerd 20.10 still
/// reads when `HostConfig` is absent): they are unknown here, so refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct CreateBody {
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub user: Option<String>,
    pub attach_stdin: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub attach_stderr: Option<bool>,
    pub exposed_ports: Option<StrictMap<Empty>>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    pub stdin_once: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StrSlice>,
    pub healthcheck: Option<HealthConfig>,
    pub args_escaped: Option<bool>,
    pub image: Option<String>,
    pub volumes: Option<StrictMap<Empty>>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<StrSlice>,
    pub network_disabled: Option<bool>,
    pub mac_address: Option<String>,
    pub on_build: Option<Vec<String>>,
    pub labels: Option<StrictMap<String>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub shell: Option<StrSlice>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct HealthConfig {
    pub test: Option<Vec<String>>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct NetworkingConfig {
    pub endpoints_config: Option<StrictMap<EndpointSettings>>,
}

/// `network.EndpointSettings`; the policy allows only an empty one.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct EndpointSettings {
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<serde_json::Value>,
    pub links: Option<Vec<String>>,
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "NetworkID")]
    pub network_id: Option<String>,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: Option<String>,
    pub gateway: Option<String>,
    #[serde(rename = "IPAddress")]
    pub ip_address: Option<String>,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: Option<i64>,
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: Option<String>,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: Option<String>,
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: Option<i64>,
    pub mac_address: Option<String>,
    pub driver_opts: Option<StrictMap<String>>,
    /// API 1.48 and 1.44 keys the Docker CLI sends whatever the API version; dockerd 20.10
    /// ignores them, and the policy allows only their zero values.
    pub gw_priority: Option<i64>,
    #[serde(rename = "DNSNames")]
    pub dns_names: Option<Vec<String>>,
}

impl EndpointSettings {
    /// Nothing set: what the Docker CLI sends for a container on one network and no options.
    pub fn is_empty(&self) -> bool {
        let EndpointSettings {
            ipam_config,
            links,
            aliases,
            network_id,
            endpoint_id,
            gateway,
            ip_address,
            ip_prefix_len,
            ipv6_gateway,
            global_ipv6_address,
            global_ipv6_prefix_len,
            mac_address,
            driver_opts,
            gw_priority,
            dns_names,
        } = self;
        let none = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
        let zero = |n: &Option<i64>| n.is_none_or(|n| n == 0);
        let list = |l: &Option<Vec<String>>| l.as_ref().is_none_or(Vec::is_empty);
        ipam_config.as_ref().is_none_or(serde_json::Value::is_null)
            && list(links)
            && list(aliases)
            && list(dns_names)
            && [
                network_id,
                endpoint_id,
                gateway,
                ip_address,
                ipv6_gateway,
                global_ipv6_address,
                mac_address,
            ]
            .into_iter()
            .all(none)
            && [ip_prefix_len, global_ipv6_prefix_len, gw_priority]
                .into_iter()
                .all(zero)
            && driver_opts.as_ref().is_none_or(StrictMap::is_empty)
    }
}

/// `container.HostConfig` of API 1.41, `Resources` inline (not `flatten`, which would lose the
/// unknown- and duplicate-key checks).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    #[serde(rename = "ContainerIDFile")]
    pub container_id_file: Option<String>,
    pub log_config: Option<LogConfig>,
    pub network_mode: Option<String>,
    pub port_bindings: Option<StrictMap<Option<Vec<PortBinding>>>>,
    pub restart_policy: Option<RestartPolicy>,
    pub auto_remove: Option<bool>,
    pub volume_driver: Option<String>,
    pub volumes_from: Option<Vec<String>>,
    pub cap_add: Option<StrSlice>,
    pub cap_drop: Option<StrSlice>,
    pub cgroupns_mode: Option<String>,
    pub dns: Option<Vec<String>>,
    pub dns_options: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub group_add: Option<Vec<String>>,
    pub ipc_mode: Option<String>,
    pub cgroup: Option<String>,
    pub links: Option<Vec<String>>,
    pub oom_score_adj: Option<i64>,
    pub pid_mode: Option<String>,
    pub privileged: Option<bool>,
    pub publish_all_ports: Option<bool>,
    pub readonly_rootfs: Option<bool>,
    pub security_opt: Option<Vec<String>>,
    pub storage_opt: Option<StrictMap<String>>,
    pub tmpfs: Option<StrictMap<String>>,
    #[serde(rename = "UTSMode")]
    pub uts_mode: Option<String>,
    pub userns_mode: Option<String>,
    pub shm_size: Option<i64>,
    pub sysctls: Option<StrictMap<String>>,
    pub runtime: Option<String>,
    pub console_size: Option<Vec<u64>>,
    pub isolation: Option<String>,
    // Resources.
    pub cpu_shares: Option<i64>,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cgroup_parent: Option<String>,
    pub blkio_weight: Option<u16>,
    pub blkio_weight_device: Option<Vec<WeightDevice>>,
    pub blkio_device_read_bps: Option<Vec<ThrottleDevice>>,
    pub blkio_device_write_bps: Option<Vec<ThrottleDevice>>,
    #[serde(rename = "BlkioDeviceReadIOps")]
    pub blkio_device_read_iops: Option<Vec<ThrottleDevice>>,
    #[serde(rename = "BlkioDeviceWriteIOps")]
    pub blkio_device_write_iops: Option<Vec<ThrottleDevice>>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_realtime_period: Option<i64>,
    pub cpu_realtime_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub devices: Option<Vec<DeviceMapping>>,
    pub device_cgroup_rules: Option<Vec<String>>,
    pub device_requests: Option<Vec<DeviceRequest>>,
    pub kernel_memory: Option<i64>,
    #[serde(rename = "KernelMemoryTCP")]
    pub kernel_memory_tcp: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_swappiness: Option<i64>,
    pub oom_kill_disable: Option<bool>,
    pub pids_limit: Option<i64>,
    pub ulimits: Option<Vec<Ulimit>>,
    pub cpu_count: Option<i64>,
    pub cpu_percent: Option<i64>,
    #[serde(rename = "IOMaximumIOps")]
    pub io_maximum_iops: Option<u64>,
    #[serde(rename = "IOMaximumBandwidth")]
    pub io_maximum_bandwidth: Option<u64>,
    // End of Resources.
    pub mounts: Option<Vec<Mount>>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub init: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub typ: Option<String>,
    pub config: Option<StrictMap<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: Option<String>,
    pub host_port: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct RestartPolicy {
    pub name: Option<String>,
    pub maximum_retry_count: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct WeightDevice {
    pub path: Option<String>,
    pub weight: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ThrottleDevice {
    pub path: Option<String>,
    pub rate: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct DeviceMapping {
    pub path_on_host: Option<String>,
    pub path_in_container: Option<String>,
    pub cgroup_permissions: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct DeviceRequest {
    pub driver: Option<String>,
    pub count: Option<i64>,
    #[serde(rename = "DeviceIDs")]
    pub device_ids: Option<Vec<String>>,
    pub capabilities: Option<Vec<Vec<String>>>,
    pub options: Option<StrictMap<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: Option<String>,
    pub soft: Option<i64>,
    pub hard: Option<i64>,
}

/// `mount.Mount`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Mount {
    #[serde(rename = "Type")]
    pub typ: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<bool>,
    pub consistency: Option<String>,
    pub bind_options: Option<BindOptions>,
    /// Present at all: refused (the policy allows binds only); typed loosely for that reason.
    pub volume_options: Option<serde_json::Value>,
    pub tmpfs_options: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct BindOptions {
    pub propagation: Option<String>,
    pub non_recursive: Option<bool>,
}

/// `POST /containers/{id}/exec` (`types.ExecConfig`, API 1.41).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ExecBody {
    pub user: Option<String>,
    pub privileged: Option<bool>,
    pub tty: Option<bool>,
    pub attach_stdin: Option<bool>,
    pub attach_stderr: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub detach: Option<bool>,
    pub detach_keys: Option<String>,
    pub env: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub cmd: Option<StrSlice>,
}

/// `POST /containers/{id}/update` (`container.UpdateConfig`: Resources and RestartPolicy).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct UpdateBody {
    pub cpu_shares: Option<i64>,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cgroup_parent: Option<String>,
    pub blkio_weight: Option<u16>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_realtime_period: Option<i64>,
    pub cpu_realtime_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub devices: Option<Vec<DeviceMapping>>,
    pub device_cgroup_rules: Option<Vec<String>>,
    pub device_requests: Option<Vec<DeviceRequest>>,
    pub kernel_memory: Option<i64>,
    #[serde(rename = "KernelMemoryTCP")]
    pub kernel_memory_tcp: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_swappiness: Option<i64>,
    pub oom_kill_disable: Option<bool>,
    pub pids_limit: Option<i64>,
    pub ulimits: Option<Vec<Ulimit>>,
    pub restart_policy: Option<RestartPolicy>,
}

/// `POST /volumes/create` (`volume.VolumeCreateBody`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct VolumeBody {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: Option<StrictMap<String>>,
    pub labels: Option<StrictMap<String>>,
}
