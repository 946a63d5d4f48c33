//! Executes plans through the Docker Engine API. `body` is the only place that turns a plan into
//! bollard's models.

pub mod body;
