//! A bpffs mounted from the test's (the root) mount namespace, for directors whose data plane
//! must outlive them: `ip netns exec`, which runs drlb, gives /sys a private mount, and pins
//! under /sys there vanish with the daemon.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::netns::run_bounded;

/// A bpffs mounted at a path of the test's; unmounted (lazily) on drop, with whatever is still
/// pinned in it.
pub struct Bpffs {
    path: PathBuf,
}

impl Bpffs {
    #[track_caller]
    #[must_use]
    pub fn mount(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).expect("bpffs mount point");
        let ran = run_bounded(
            Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path),
            Duration::from_secs(10),
        );
        assert!(ran.success(), "mounting a bpffs: {}", ran.describe());
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
