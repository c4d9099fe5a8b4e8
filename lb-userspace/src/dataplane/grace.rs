//! Waiting until every program run that started before now has finished (an RCU grace
//! period): XDP programs run inside RCU read-side sections, and `membarrier(2)` with
//! MEMBARRIER_CMD_GLOBAL returns after `synchronize_rcu()`. Userspace waits for one before it
//! reuses memory the program may still be reading (see lb-common's consistency rules).

use std::{sync::Once, time::Duration};

use tracing::warn;

/// membarrier(2) command that waits for an RCU grace period (`MEMBARRIER_CMD_GLOBAL`).
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
/// Without membarrier (e.g. kernels with nohz_full refuse it), a wait this long: XDP programs
/// run for microseconds, so any run that started before it has long finished.
const FALLBACK_WAIT: Duration = Duration::from_millis(20);

/// Blocks until every program run that started before the call has ended.
pub fn wait() {
    // SAFETY: membarrier with MEMBARRIER_CMD_GLOBAL takes no pointers; flags and cpu_id are 0.
    let result = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if result != 0 {
        static WARNED: Once = Once::new();
        let error = std::io::Error::last_os_error();
        WARNED.call_once(|| {
            warn!("membarrier(MEMBARRIER_CMD_GLOBAL) failed ({error}); waiting {FALLBACK_WAIT:?} instead of an RCU grace period before reusing map memory");
        });
        std::thread::sleep(FALLBACK_WAIT);
    }
}
