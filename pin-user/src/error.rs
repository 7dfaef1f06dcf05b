//! How pinwatch ends: the exit codes a caller (a script, a CI gate) can
//! tell apart, the usage error, and which error means which code. The
//! codes are named here and nowhere else; commands return one of them or
//! an error, and the command line turns the error into its code.

use crate::{probes::AttachError, workload::WorkloadError};

/// Exit code for any other failure; also `validate`'s disagreement and
/// `diff`'s regression.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage (also what clap uses).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the kernel does not allow tracing.
pub const EXIT_CANNOT_TRACE: u8 = 3;
/// Exit code when a `validate` scenario could not run on this host.
pub const EXIT_INCOMPLETE: u8 = 4;
/// Exit code when the process lacks the privileges attaching needs (or,
/// before Linux 5.11, the memlock limit its BPF maps are charged to).
pub const EXIT_PRIVILEGES: u8 = 5;

/// Bad input (exit code [`EXIT_USAGE`]), found by a command or by a value
/// parser while the command line is parsed; its text is the whole message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for a failed attach: missing privileges are told apart
/// from a kernel that cannot be traced.
pub fn attach_exit_code(err: &AttachError) -> u8 {
    match err {
        AttachError::Privileges(_) | AttachError::Memlock(_) => EXIT_PRIVILEGES,
        _ => EXIT_CANNOT_TRACE,
    }
}

/// The exit code for the error a command ended with.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(attach) = err.downcast_ref::<AttachError>() {
        attach_exit_code(attach)
    } else if err.downcast_ref::<UsageError>().is_some()
        || matches!(
            err.downcast_ref::<WorkloadError>(),
            Some(WorkloadError::Usage(_))
        )
    {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_codes() {
        let usage = anyhow::Error::from(UsageError("bad".into()));
        assert_eq!(exit_code(&usage), EXIT_USAGE);
        let other = anyhow::anyhow!("broken");
        assert_eq!(exit_code(&other), EXIT_FAILURE);
        let context = usage.context("while starting");
        assert_eq!(exit_code(&context), EXIT_USAGE);
    }
}
