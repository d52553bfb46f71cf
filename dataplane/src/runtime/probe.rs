//! Whether io_uring works in this process, asked once before any worker starts.

use std::io;

/// Why io_uring cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum UringUnavailable {
    /// `io_uring_setup` failed while the kernel's `io_uring_disabled` switch is on.
    #[error("io_uring_setup failed ({source}); kernel.io_uring_disabled = {setting}")]
    Disabled {
        /// The value of `/proc/sys/kernel/io_uring_disabled`.
        setting: String,
        /// The error `io_uring_setup` returned.
        source: io::Error,
    },
    /// `io_uring_setup` failed (no io_uring in the kernel, seccomp, resource limits).
    #[error("io_uring_setup failed ({0})")]
    Setup(#[source] io::Error),
    /// A ring was created but monoio's opcode probe failed, or monoio was told to avoid it.
    #[error("the kernel lacks io_uring opcodes monoio needs, or MONOIO_FORCE_LEGACY_DRIVER is set")]
    Opcodes,
}

/// Whether io_uring can be used in this process, and if not, why.
///
/// Tries `io_uring_setup` (which fails with `EPERM` under `kernel.io_uring_disabled = 2`, or
/// under `= 1` for an unprivileged process outside the io_uring group, and with `ENOSYS` on
/// kernels without it or under seccomp), then monoio's probe of the opcodes it uses.
pub fn probe_io_uring() -> Result<(), UringUnavailable> {
    if let Err(source) = io_uring::IoUring::new(2) {
        let setting = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .map(|s| s.trim().to_owned());
        return Err(match setting {
            Some(setting) if setting != "0" => UringUnavailable::Disabled { setting, source },
            _ => UringUnavailable::Setup(source),
        });
    }
    if !monoio::utils::detect_uring() {
        return Err(UringUnavailable::Opcodes);
    }
    Ok(())
}
