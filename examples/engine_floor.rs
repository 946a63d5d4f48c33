//! The engine floor for scripts/bench.sh: the least a client can do to run one job through the
//! Engine API — create, attach, start, wait, remove — with the create body `jobdock plan --json`
//! printed, so the container is exactly jobdock's. No version negotiation, no image check, no
//! signals, no cleanup on failure: a yardstick, not a tool. Not part of jobdock.
//!
//!   engine_floor PLAN.json NAME [COMMAND...]     (PLAN.json: the output of `jobdock plan --json`)
//!
//! Runs COMMAND (else the plan's), copies the job's stdout and stderr to its own and exits with
//! the job's status.

use std::io::Write;

use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

type Error = Box<dyn std::error::Error>;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [plan, name, command @ ..] = args.as_slice() else {
        eprintln!("usage: engine_floor PLAN.json NAME [COMMAND...]");
        return std::process::ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match rt.block_on(run(plan, name, command)) {
        Ok(status) => std::process::ExitCode::from(u8::try_from(status & 0xff).unwrap_or(1)),
        Err(e) => {
            eprintln!("engine_floor: {e}");
            std::process::ExitCode::from(75)
        }
    }
}

async fn run(plan: &str, name: &str, command: &[String]) -> Result<i64, Error> {
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(plan)?)?;
    let mut body: ContainerCreateBody = serde_json::from_value(plan["create"].clone())?;
    if !command.is_empty() {
        body.cmd = Some(command.to_vec());
    }
    // dockerd 20.10 speaks API 1.41; jobdock negotiates, the floor states it.
    let version = bollard::ClientVersion {
        major_version: 1,
        minor_version: 41,
    };
    let docker = bollard::Docker::connect_with_unix("/var/run/docker.sock", 120, &version)?;

    let create = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let id = docker.create_container(Some(create), body).await?.id;
    let attach = AttachContainerOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        stream: true,
        logs: false,
        detach_keys: None,
    };
    let mut attached = docker.attach_container(&id, Some(attach)).await?;
    // The job's stdin ends at once, as jobdock's does when it reads /dev/null.
    attached.input.shutdown().await?;
    docker.start_container(&id, None).await?;

    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    while let Some(chunk) = attached.output.next().await {
        match chunk? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                stdout.write_all(&message)?
            }
            LogOutput::StdErr { message } => stderr.write_all(&message)?,
            LogOutput::StdIn { .. } => {}
        }
    }
    stdout.flush()?;

    let wait = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let status = match docker.wait_container(&id, Some(wait)).next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(e.into()),
        None => return Err("the wait ended without a status".into()),
    };
    let remove = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    docker.remove_container(&id, Some(remove)).await?;
    Ok(status)
}
