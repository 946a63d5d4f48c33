//! jobdock's SPANK plugin: `srun --container-image=IMAGE cmd` (and `#SBATCH --container-image`)
//! runs each task as `jobdock run --image IMAGE -- cmd`, as the job's user. It holds no policy:
//! every option becomes one of jobdock's own overrides, which jobdock checks as it checks them for
//! `srun jobdock run`; the job and the user are what jobdock reads from the kernel (the task's
//! cgroup, its real uid), never what the plugin or the environment says.
//!
//! Pure modules (plugstack arguments, option values, the task's command) are unit-tested; `ffi`
//! is the only place that touches Slurm, and is left out of test builds (the spank_* functions
//! exist only inside srun, sbatch and slurmstepd).

mod options;
mod site;
mod task;

/// The exported symbols (public so that they are the shared object's interface).
#[cfg(not(test))]
pub mod ffi;

// Every hook catches panics at the C boundary; with panic=abort a panic would take srun or
// slurmstepd down with it instead.
#[cfg(panic = "abort")]
compile_error!("jobdock-spank must be built with panic=unwind: its hooks catch panics");
