//! `jobdock authz`: a Docker authorization plugin that holds dockerd to the site policy, so that
//! a request that is not one of jobdock's own (or read-only inspection) never reaches a
//! container, whoever sends it. `policy` decides (pure), `body` decodes the API's bodies as
//! strictly as the policy needs, `server` speaks the plugin protocol on a unix socket.
//! Nothing here builds or runs a job.

pub mod body;
pub mod policy;
mod server;

pub use policy::{ApiRequest, Denial, Policy, Who};
pub use server::{AuthzError, DEFAULT_SOCKET, serve};

#[cfg(test)]
mod tests;
